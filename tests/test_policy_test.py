"""``toolgate test``: policy test files, their cases on a driven clock, the report and exit
status; the example policies' own tests."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import toolgate
from conftest import EXAMPLES, limit, policy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli import toolgate as run_toolgate
from toolgate.authoring.policy_tests.cases import BadTestFile, parse_duration, read_test_file
from toolgate.authoring.policy_tests.run import CLOCK_START, run

#: The example policies, named policy.* or *-policy.* (invalid-policy.json is there to show a
#: refusal; beside a policy may be its pins and saved tool lists).
EXAMPLE_POLICIES = sorted(
    p
    for p in EXAMPLES.rglob("*")
    if p.suffix in (".json", ".yaml")
    and (p.stem == "policy" or p.stem.endswith("-policy"))
    and p.name != "invalid-policy.json"
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- the examples --------------------------------------------------------------------------------


def test_every_example_policy_has_tests_and_they_pass():
    assert EXAMPLE_POLICIES, "no example policies found"
    test_files = []
    for p in EXAMPLE_POLICIES:
        tests = p.with_name(p.name + ".tests.yaml")
        assert tests.exists(), f"{p.name} has no {tests.name}"
        assert read_test_file(tests).policies == [tests.parent / p.name]
        test_files.append(tests)
    result = run_toolgate("test", *test_files)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert not [line for line in lines if "FAIL" in line]
    passed = [line for line in lines if line.startswith("  PASS  ")]
    cases = sum(len(read_test_file(t).cases) for t in test_files)
    assert len(passed) == cases >= 15
    assert lines[-1].startswith(f"{cases} passed, 0 failed")


# --- failures and the report ---------------------------------------------------------------------

LIMITED = policy({"t": {"limits": [limit("c", 2, window="10s")]}, "x": {"action": "deny"}})

FAILING = """\
policy: limited.json
cases:
  - name: passes
    call: {tool: t, subject: {grant: g}}
    repeat: 2
    expect: {verdict: ALLOW}
  - name: the third is allowed, says this wrong case
    steps:
      - call: {tool: t, subject: {grant: g}}
        repeat: 2
      - name: third
        call: {tool: t, subject: {grant: g}}
        expect: {verdict: ALLOW, code: ALLOWED}
  - name: deny is denied
    call: {tool: x}
    expect: {verdict: DENY, code: RULE_DENY, rule: /tools/x}
"""


@pytest.fixture
def failing_file(tmp_path: Path) -> Path:
    write(tmp_path, "limited.json", json.dumps(LIMITED))
    return write(tmp_path, "failing.tests.yaml", FAILING)


def test_a_failing_case_exits_1_and_says_what_and_how(failing_file: Path, tmp_path: Path):
    junit = tmp_path / "junit.xml"
    result = run_toolgate("test", failing_file, "--junit", junit)
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "  PASS  passes\n" in out
    assert "  FAIL  the third is allowed, says this wrong case\n" in out
    assert "at /cases/1/steps/1 (third), call 1 of 1 (t):" in out
    assert "verdict: expected 'ALLOW', got 'DENY'" in out
    assert "code: expected 'ALLOWED', got 'RATE_LIMITED'" in out
    # How it was decided: the limit's count at the time.
    assert "how it was decided:" in out
    assert 'c (/tools/t/limits/0): at most 2 per grant "g" in 10s; counted 2, room 0' in out
    assert out.splitlines()[-1].startswith("2 passed, 1 failed")

    suites = ET.parse(junit).getroot()
    suite = suites.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures")) == ("3", "1")
    failed = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["the third is allowed, says this wrong case"]


def test_json_report(failing_file: Path):
    result = run_toolgate("test", failing_file, "--format", "json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert (report["passed"], report["failed"]) == (2, 1)
    (one,) = report["runs"]
    failure = one["cases"][1]["failure"]
    assert failure["decision"]["code"] == "RATE_LIMITED"
    assert failure["explain"][-1]["step"] == "decision"
    assert one["cases"][0] == {"name": "passes", "passed": True}


def test_quiet_prints_only_failures(failing_file: Path):
    result = run_toolgate("test", "-q", "--no-explain", failing_file)
    assert result.returncode == 1
    assert "PASS" not in result.stdout
    assert "how it was decided" not in result.stdout
    assert "FAIL  the third" in result.stdout


def test_policy_option_runs_every_case_against_each_policy(failing_file: Path, tmp_path: Path):
    roomy = write(
        tmp_path,
        "roomy.yaml",
        "version: '1'\ntools:\n  t: {limits: [{counter: c, window: 10s, max: 5, scope: grant}]}\n"
        "  x: {action: deny}\n",
    )
    result = run_toolgate(
        "test", failing_file, "--policy", roomy, "--policy", tmp_path / "limited.json"
    )
    assert result.returncode == 1
    assert f"{failing_file} on {roomy}" in result.stdout
    # On the roomy policy the third call is allowed: the "wrong" case passes there.
    roomy_part = result.stdout.split(f"on {tmp_path / 'limited.json'}")[0]
    assert "FAIL" not in roomy_part
    assert result.stdout.splitlines()[-1] == "5 passed, 1 failed (2 file-policy runs)"
    result = run_toolgate("test", failing_file, "--policy", roomy)
    assert result.returncode == 0, result.stdout


# --- malformed files: exit 2, every problem with its line ----------------------------------------

MALFORMED = """\
policy: limited.json
cases:
  - name: typo
    call: {tool: t, subjcet: {grant: g}}
    expect: {verdict: ALOW}
  - name: no tool
    call: {server: s}
  - name: typo
    steps:
      - advance: soon
      - call: {tool: t}
        repeat: 0
        expect: {remaining: lots, retry_after_ms: {least: 1}}
  - name: both
    call: {tool: t}
    steps: [{call: {tool: t}}]
"""


def test_a_malformed_file_lists_every_problem_and_exits_2(tmp_path: Path):
    write(tmp_path, "limited.json", json.dumps(LIMITED))
    path = write(tmp_path, "bad.tests.yaml", MALFORMED)
    with pytest.raises(BadTestFile) as info:
        read_test_file(path)
    problems = info.value.problems
    expected = [
        ("line 4: /cases/0/call/subjcet:", "unknown key 'subjcet'"),
        ("line 5: /cases/0/expect/verdict:", "must be one of ALLOW, DENY, REQUIRE_APPROVAL"),
        ("/cases/1/call/tool:", "must be a non-empty string"),
        ("line 10: /cases/2/steps/0/advance:", "a duration is"),
        ("/cases/2/steps/1/repeat:", "from 1 to 100000"),
        ("line 13: /cases/2/steps/1/expect/remaining:", "must be a number"),
        ("/cases/2/steps/1/expect/retry_after_ms:", "{min, max}"),
        ("line 8: /cases/2/name:", "repeats the name of /cases/0"),
        ("/cases/3:", "has steps, so call belong in a step"),
    ]
    for where, what in expected:
        assert any(where in p and what in p for p in problems), (where, problems)
    result = run_toolgate("test", path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"{path}: line 4: /cases/0/call/subjcet" in result.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cases: [\n", "line"),
        ("- just a list\n", "/: must be a mapping"),
        ("policy: p.json\ncases: []\n", "/cases: must be a non-empty list"),
        (
            "policy: p.json\ncases:\n"
            "  - {name: a, call: {tool: t}}\n  - {name: a, call: {tool: t}}\n",
            "repeats",
        ),
        ("policy: p.json\npolicy: q.json\ncases: []\n", "duplicate"),
    ],
)
def test_unreadable_files(tmp_path: Path, text: str, message: str):
    path = write(tmp_path, "x.tests.yaml", text)
    with pytest.raises(BadTestFile) as info:
        read_test_file(path)
    assert message in str(info.value)


def test_a_missing_or_broken_policy_exits_2(tmp_path: Path):
    no_policy = write(tmp_path, "a.tests.yaml", "cases: [{name: a, call: {tool: t}}]\n")
    result = run_toolgate("test", no_policy)
    assert result.returncode == 2
    assert "names no policy" in result.stderr
    broken = write(tmp_path, "broken.json", '{"version": "1", "tools": {"t": {"actoin": 1}}}')
    result = run_toolgate("test", no_policy, "--policy", broken)
    assert result.returncode == 2
    assert "/tools/t/actoin" in result.stderr
    result = run_toolgate("test", no_policy, "--policy", tmp_path / "nowhere.json")
    assert result.returncode == 2


# --- durations -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (0, 0.0),
        (1.5, 1.5),
        ("90s", 90.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("2.5s", 2.5),
        ("1d", 86400.0),
        ("1h", 3600.0),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "soon", "1x", "s", "-1s", -1, True, None, "1 m", float("nan")])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


# --- the runner drives the engine as the Python API does ----------------------------------------

# A policy with a few limits of different windows, scopes and a cost, and a condition.
DRIVEN = policy(
    {
        "t": {
            "limits": [limit("a", 3, window="10s"), limit("b", 5, window="minute", scope="global")]
        },
        "spend": {
            "require": [{"path": "args.n", "op": "lt", "value": 50}],
            "limits": [limit("s", 100, window="1m", scope="agent", cost="args.n")],
        },
    }
)

steps = st.lists(
    st.fixed_dictionaries(
        {
            "call": st.sampled_from(
                [
                    {"tool": "t", "subject": {"grant": "g1"}},
                    {"tool": "t", "subject": {"grant": "g2"}},
                    {"tool": "spend", "subject": {"agent": "a"}, "arguments": {"n": 30}},
                    {"tool": "spend", "subject": {"agent": "a"}, "arguments": {"n": 60}},
                    {"tool": "other"},
                ]
            ),
            "repeat": st.integers(1, 4),
            "advance": st.sampled_from([0, 0.5, 3, 11, 61]),
            "every": st.sampled_from([0, 0.25, 2]),
            "release": st.booleans(),
            "dry_run": st.booleans(),
        }
    ),
    min_size=1,
    max_size=8,
)


def expected_decisions(case_steps: list[dict]) -> list[list[dict]]:
    """Each step's decisions, made through the Python API on a manual clock."""
    clock = toolgate.ManualClock(CLOCK_START)
    engine = toolgate.Engine(DRIVEN, clock=clock)
    out = []
    for s in case_steps:
        clock.advance(s["advance"])
        c = s["call"]
        subject = c.get("subject", {})
        decisions = []
        for i in range(s["repeat"]):
            if i:
                clock.advance(s["every"])
            d = engine.decide(
                c["tool"], arguments=c.get("arguments"), dry_run=s["dry_run"], **subject
            )
            if s["release"] and d.reservation is not None:
                engine.release(d.reservation)
            decisions.append(d.to_dict())
        out.append(decisions)
    return out


def as_expect(d: dict, with_remaining: bool) -> dict:
    e = {"verdict": d["verdict"], "code": d["code"], "rule": d["rule"], "reason": d["reason"]}
    e["retry_after_ms"] = d["retry_after_ms"]
    if with_remaining and d["limits"]:
        e["remaining"] = {limit["counter"]: limit["remaining"] for limit in d["limits"]}
    return e


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case_steps=steps, with_remaining=st.booleans(), wrong=st.integers(0, 1000))
def test_a_case_runs_as_the_api_decides(tmp_path_factory, case_steps, with_remaining, wrong):
    """Expectations taken from the engine's own decisions pass; change one and that case
    fails at that step: the runner repeats, spaces, advances, releases and dry-runs exactly as
    the API calls it."""
    decisions = expected_decisions(case_steps)
    # Steps whose decisions were all the same can carry one `expect` for every repeat.
    file_steps = []
    for s, ds in zip(case_steps, decisions, strict=True):
        expects = [as_expect(d, with_remaining) for d in ds]
        step = dict(s, advance=s["advance"], every=s["every"])
        if all(e == expects[0] for e in expects):
            file_steps.append(dict(step, expect=expects[0]))
        else:
            # Otherwise one step per call, without repeat or every.
            for i, e in enumerate(expects):
                one = dict(step, repeat=1, every=0, expect=e)
                if i:
                    one["advance"] = s["every"]
                file_steps.append(one)
    tmp = tmp_path_factory.mktemp("driven")
    (tmp / "p.json").write_text(json.dumps(DRIVEN))
    doc = {"policy": "p.json", "cases": [{"name": "driven", "steps": file_steps}]}
    good = tmp / "good.tests.json"
    good.write_text(json.dumps(doc))
    (result,) = run([read_test_file(good)])
    assert [c.passed for c in result.cases] == [True], result.cases[0].failure

    # One expectation changed: the case fails, at that step.
    target = wrong % len(file_steps)
    verdict = file_steps[target]["expect"]["verdict"]
    file_steps[target]["expect"]["verdict"] = "DENY" if verdict != "DENY" else "ALLOW"
    bad = tmp / "bad.tests.json"
    bad.write_text(json.dumps(doc))
    (result,) = run([read_test_file(bad)])
    failure = result.cases[0].failure
    assert failure is not None
    assert failure.step.startswith(f"/cases/0/steps/{target}")
    assert failure.mismatches[0].startswith("verdict: expected")


# --- list steps and marks ------------------------------------------------------------------------

PINNED_LIST = """\
policy: ../../examples/crm/policy.yaml
cases:
  - name: a wrong expectation of a list fails, naming what differs
    steps:
      - list: {server: crm, tools: [{name: crm_read}, {name: mystery}]}
        expect: {shown: [crm_read], removed: {mystery: TOOL_CHANGED}}
  - name: marks expected wrongly fail too
    call: {tool: crm_read, server: crm, subject: {grant: g}, arguments: {contact_id: c-1}}
    expect: {marks_set: [tests_passed]}
"""


def test_list_steps_and_marks_report_what_differs(tmp_path: Path):
    crm = tmp_path / "a" / "b"
    crm.mkdir(parents=True)
    # The test file names the example policy relative to itself.
    tests = write(crm, "pinned.tests.yaml", PINNED_LIST.replace("../../examples", str(EXAMPLES)))
    result = run_toolgate("test", tests)
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "shown: expected ['crm_read'], got []" in out
    got = "{'crm_read': 'TOOL_CHANGED', 'mystery': 'DEFAULT_DENY'}"
    assert f"removed: expected {{'mystery': 'TOOL_CHANGED'}}, got {got}" in out
    assert "marks_set: expected ['tests_passed'], got ['private_data']" in out
    assert out.splitlines()[-1].startswith("0 passed, 2 failed")


@pytest.mark.parametrize(
    ("step", "problem"),
    [
        (
            "{list: {tools: [{name: a}], file: x.json}}",
            "needs tools (a list of tool objects) or file",
        ),
        ("{list: {tools: [{title: a}]}}", "must be a list of tool objects, each with a name"),
        ("{list: {file: none.json}}", "none.json"),
        ("{list: {tools: []}, expect: {removed: {a: NOPE}}}", "must map tool names to codes"),
        ("{list: {tools: []}, expect: {verdict: ALLOW}}", "unknown key 'verdict'"),
        ("{list: {tools: []}, call: {tool: a}}", "a list step has no call"),
        ("{call: {tool: a}, expect: {marks_read: {m: maybe}}}", "must map mark names to one of"),
        ("{call: {tool: a}, expect: {marks_set: m}}", "must be a list of mark names"),
    ],
)
def test_bad_list_and_marks_steps_are_refused(tmp_path: Path, step: str, problem: str):
    write(tmp_path, "p.json", json.dumps(policy({"a": {}})))
    path = write(
        tmp_path,
        "t.tests.yaml",
        f"policy: p.json\ncases:\n  - name: c\n    steps:\n      - {step}\n",
    )
    with pytest.raises(BadTestFile) as err:
        read_test_file(path)
    assert problem in str(err.value)
