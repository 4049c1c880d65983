"""``toolgate explain`` and ``Engine.explain``: the steps of one decision, from the code that
decides it."""

from __future__ import annotations

import json

import toolgate
from conftest import EXAMPLES, START, cond, limit, make_engine, policy
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cli import toolgate as run_toolgate
from toolgate.authoring.explain import render

EXAMPLE_JSON = EXAMPLES / "policy.json"

# --- explain decides as decide does, for generated policies and calls ---------------------------

TOOLS = ["read_a", "read_b", "pay", "run", "other"]
PATTERNS = ["read_a", "read_*", "*", "pay", "p?y", "run", "r*"]

compare = st.one_of(
    st.builds(lambda n: cond("args.n", "lt", n), st.integers(0, 5)),
    st.builds(lambda v: cond("args.s", "eq", v), st.sampled_from(["a", "b", 1])),
    st.builds(lambda v: cond("args.s", "in", v), st.lists(st.sampled_from(["a", "b"]), max_size=2)),
    st.builds(lambda v: cond("args.s", "regex", v), st.sampled_from(["^a", "b$"])),
    st.builds(lambda b: cond("args.n", "exists", b), st.booleans()),
    st.builds(lambda v: cond("subject.attributes.team", "eq", v), st.sampled_from(["red", "blue"])),
    st.builds(lambda v: cond("server", "eq", v), st.sampled_from(["s1", "s2"])),
)
condition = st.recursive(
    compare,
    lambda inner: st.one_of(
        st.builds(lambda c: {"all": c}, st.lists(inner, max_size=2)),
        st.builds(lambda c: {"any": c}, st.lists(inner, max_size=2)),
        st.builds(lambda c: {"not": c}, inner),
    ),
    max_leaves=4,
)
LIMITS = [
    limit("c1", 2, window="10s"),
    limit("c2", 3, window="minute", scope="session"),
    limit("c3", 10, window="1m", scope="agent", cost="args.n"),
]
rule = st.builds(
    lambda action, mode, require, deny_if, limits: {
        "action": action,
        **({"mode": mode} if mode else {}),
        **({"require": require} if require else {}),
        **({"deny_if": deny_if} if deny_if else {}),
        **({"limits": [LIMITS[i] for i in sorted(limits)]} if limits else {}),
    },
    st.sampled_from(["allow", "allow", "deny", "require_approval"]),
    st.sampled_from([None, None, "shadow", "enforce"]),
    st.lists(condition, max_size=2),
    st.lists(condition, max_size=2),
    st.sets(st.integers(0, 2), max_size=2),
)
documents = st.builds(
    lambda default, hide, tools, all_tools, server: policy(
        tools,
        default=default,
        hide=hide,
        **({"all_tools": all_tools} if all_tools else {}),
        **({"servers": {"s1": server}} if server else {}),
    ),
    st.sampled_from(["allow", "deny"]),
    st.lists(st.sampled_from(PATTERNS), max_size=2, unique=True),
    st.dictionaries(st.sampled_from(PATTERNS), rule, max_size=4),
    st.one_of(st.none(), rule),
    st.one_of(
        st.none(),
        st.builds(
            lambda t: {"tools": t}, st.dictionaries(st.sampled_from(PATTERNS), rule, max_size=2)
        ),
    ),
)
calls = st.fixed_dictionaries(
    {
        "tool": st.sampled_from(TOOLS),
        "server": st.sampled_from([None, "s1", "s2"]),
        "grant": st.sampled_from([None, "g"]),
        "session": st.sampled_from([None, "s"]),
        "agent": st.sampled_from([None, "a"]),
        "attributes": st.sampled_from([None, {"team": "red"}]),
        "arguments": st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {},
                optional={
                    "n": st.sampled_from([0, 2, 7, -1, "3"]),
                    "s": st.sampled_from(["a", "ab", "b", 1]),
                },
            ),
        ),
        "dry_run": st.booleans(),
    }
)


def same(a: toolgate.Decision, b: toolgate.Decision) -> None:
    x, y = a.to_dict(), b.to_dict()
    for d in (x, y):
        d["reservation"] = d["reservation"] is not None
    assert x == y


@settings(max_examples=150, deadline=None)
@given(
    doc=documents,
    sequence=st.lists(calls, min_size=1, max_size=12),
    advance=st.sampled_from([0, 1, 11]),
)
def test_explain_decides_as_decide(doc, sequence, advance):
    """Two engines, one explaining every call (counting as decide does when not a dry run):
    the same decisions, call after call, and the explanation ends in that decision."""
    try:
        plain_clock, traced_clock = toolgate.ManualClock(START), toolgate.ManualClock(START)
        plain = toolgate.Engine(doc, clock=plain_clock)
        traced = toolgate.Engine(doc, clock=traced_clock)
    except toolgate.PolicyError:
        return
    for call in sequence:
        plain_clock.advance(advance)
        traced_clock.advance(advance)
        want = plain.decide(**call)
        explanation = traced.explain(**call)
        same(explanation.decision, want)
        assert explanation.dry_run == call["dry_run"]
        last = explanation.steps[-1]
        assert last["step"] == "decision"
        assert (last["verdict"], last["code"], last["rule"], last["reason"]) == (
            want.verdict,
            want.code,
            want.rule,
            want.reason,
        )
        render(explanation.steps)  # every step renders


@settings(max_examples=60, deadline=None)
@given(doc=documents, call=calls, times=st.integers(1, 5))
def test_explain_is_a_dry_run_by_default(doc, call, times):
    """Explaining a call any number of times counts nothing: a decision afterwards is the one
    a fresh engine makes."""
    call = {k: v for k, v in call.items() if k != "dry_run"}
    try:
        explained, fresh = make_engine(doc), make_engine(doc)
    except toolgate.PolicyError:
        return
    for _ in range(times):
        e = explained.explain(**call)
        assert e.dry_run
        same(e.decision, fresh.decide(**call, dry_run=True))
    same(explained.decide(**call), fresh.decide(**call))


# --- what the steps say --------------------------------------------------------------------------


def steps_of(doc, tool, **call):
    return make_engine(doc).explain(tool, **call).steps


def test_the_winning_rule_and_why():
    doc = policy({"*": {}, "read_*": {}, "read_file": {}, "r?ad_*": {}})
    rule = next(s for s in steps_of(doc, "read_file") if s["step"] == "rule")
    assert rule["matched"] == {
        "pattern": "read_file",
        "pointer": "/tools/read_file",
        "kind": "exact",
    }
    assert {o["pattern"]: o["lost_because"] for o in rule["others"]} == {
        "read_*": "an exact name beats any glob",
        "r?ad_*": "an exact name beats any glob",
        "*": "an exact name beats any glob",
    }
    rule = next(s for s in steps_of(doc, "read_dir") if s["step"] == "rule")
    assert rule["matched"]["pattern"] == "read_*"
    assert rule["why"].startswith(
        "no exact name; of the globs that match, the longest literal prefix"
    )
    assert [o["pattern"] for o in rule["others"]] == ["r?ad_*", "*"]


def test_conditions_and_limits_in_the_text():
    doc = policy(
        {
            "pay": {
                "require": [cond("args.currency", "eq", "USD")],
                "deny_if": [
                    {
                        "any": [
                            cond("args.amount", "gt", 500),
                            cond("subject.attributes.team", "eq", "red"),
                        ]
                    }
                ],
                "limits": [limit("spend", 1000, window="day", scope="agent", cost="args.amount")],
            }
        }
    )
    engine = make_engine(doc)
    first = engine.decide(
        "pay",
        agent="bot",
        attributes={"team": "blue"},
        arguments={"amount": 400, "currency": "USD"},
    )
    assert first.code == "ALLOWED"
    e = engine.explain(
        "pay",
        agent="bot",
        attributes={"team": "blue"},
        arguments={"amount": 300, "currency": "USD"},
    )
    assert e.decision.code == "ALLOWED"
    text = render(e.steps)
    assert "args.amount gt 500: saw 300 → fails" in text
    assert 'subject.attributes.team eq "red": saw "blue" → fails' in text
    assert 'args.currency eq "USD": saw "USD" → holds' in text
    assert (
        'spend (/tools/pay/limits/0): at most 1000 of args.amount per agent "bot" in 1d; '
        "counted 400, room 600; this call 300 → fits; 300 left after" in text
    )
    assert "would fit (not counted)" in text
    # Missing: said so, and fail closed.
    e = engine.explain("pay", agent="bot", attributes={"team": "blue"}, arguments={"amount": 1})
    assert e.decision.code == "CONDITION_FAILED"
    assert (
        'args.currency eq "USD": saw nothing (missing) → unevaluable (args.currency is missing)'
        in render(e.steps)
    )


def test_shadow_findings_are_steps():
    doc = policy(
        {"t": {"action": "deny", "mode": "shadow"}, "u": {}}, all_tools={"limits": [limit("c", 1)]}
    )
    e = make_engine(doc).explain("t", grant="g")
    kinds = [s["step"] for s in e.steps]
    assert kinds == ["section", "hide", "rule", "rules", "action", "shadow", "limits", "decision"]
    assert e.decision.verdict == "ALLOW" and e.decision.shadow
    assert e.steps[4]["shadow"] is True


# --- the command ---------------------------------------------------------------------------------


def test_explain_command_text_and_json():
    args = ["--policy", EXAMPLE_JSON, "--tool", "transfer_funds", "--grant", "bot-1"]
    args += ["--args", '{"amount": 250, "currency": "USD"}']
    result = run_toolgate("explain", *args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "a dry run: nothing counted" in lines[0]
    assert lines[1].startswith("1. section: top level")
    assert any('rule: /tools/transfer_funds, exact "transfer_funds"' in line for line in lines)
    assert (
        lines[-1]
        == "8. decision: ALLOW ALLOWED by /tools/transfer_funds: allowed by /tools/transfer_funds"
    )

    result = run_toolgate("explain", *args, "--json")
    explained = json.loads(result.stdout)
    decided = json.loads(run_toolgate("decide", *args, "--dry-run").stdout)
    assert explained["decision"] == decided
    assert explained["dry_run"] is True
    assert [s["step"] for s in explained["steps"]][-1] == "decision"


def test_explain_after_n_calls_shows_the_limit_denying():
    result = run_toolgate(
        "explain", "--policy", EXAMPLE_JSON, "--tool", "create-ami", "--grant", "a", "--after", "30"
    )
    assert result.returncode == 0
    assert "counted 30, room 0; this call 1 → does not fit" in result.stdout
    assert "decision: DENY RATE_LIMITED by /tools/create-ami/limits/0" in result.stdout


def test_explain_command_errors():
    result = run_toolgate("explain", "--policy", EXAMPLE_JSON, "--tool", "t", "--args", "[1]")
    assert result.returncode == 2 and "must be a JSON object" in result.stderr
    result = run_toolgate("explain", "--policy", "/nonexistent.json", "--tool", "t")
    assert result.returncode == 2 and "/nonexistent.json" in result.stderr


def test_explain_shows_the_marks_a_decision_read_and_set():
    crm = ["--policy", EXAMPLES / "crm" / "policy.yaml", "--server", "crm", "--grant", "alice"]
    fresh = run_toolgate("explain", *crm, "--tool", "send_email")
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.splitlines()[-1] == "marks: read private_data (unset)"
    after_read = run_toolgate("explain", *crm, "--tool", "send_email", "--before", "crm_read")
    lines = after_read.stdout.splitlines()
    assert lines[-1] == "marks: read private_data (set)"
    assert "decision: DENY CONDITION_FAILED" in lines[-2]
    reader = run_toolgate("explain", *crm, "--tool", "crm_read")
    assert reader.stdout.splitlines()[-1] == "marks: would set private_data"
    counted = run_toolgate("explain", *crm, "--tool", "crm_read", "--consume")
    assert counted.stdout.splitlines()[-1] == "marks: set private_data"
    no_marks = run_toolgate("explain", "--policy", EXAMPLE_JSON, "--tool", "create-ami")
    assert not any(line.startswith("marks:") for line in no_marks.stdout.splitlines())


def test_a_confirmation_shows_its_fallback_or_its_question():
    confirm = str(EXAMPLES / "confirm-policy.yaml")
    call = ("explain", "--policy", confirm, "--tool", "delete_image", "--args", '{"id": "a"}')
    fallback = run_toolgate(*call)
    assert fallback.returncode == 0, fallback.stderr
    assert "confirmation: /tools/delete_image: " in fallback.stdout
    assert "decision: DENY CONFIRMATION_UNAVAILABLE" in fallback.stdout
    asked = run_toolgate(*call, "--client-confirms")
    assert "decision: DENY CONFIRMATION_REQUIRED" in asked.stdout
    approval = run_toolgate(*call[:4], "terminate_instances", "--client-confirms", "--json")
    steps = json.loads(approval.stdout)["steps"]
    assert [s["can_ask"] for s in steps if s["step"] == "confirmation"] == [True]
