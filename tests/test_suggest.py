"""Starter policies from classified tools: PolicyLayer's format, loading for every scanned set,
and deciding as the categories say on a real engine."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import toolgate
from conftest import POLICYLAYER_EXAMPLES, make_engine
from hypothesis import given, settings
from hypothesis import strategies as st
from test_classify import POLICYLAYER_EXAMPLE_TOOLS, labelled
from toolgate._core import is_mcp_tool_name
from toolgate.authoring.policy_text import has_policy_key, policy_key, to_json
from toolgate.authoring.suggest import Options, suggest, to_yaml
from toolgate.cli import exits
from toolgate.cli.main import main
from toolgate.scanner.classify import classify, classify_all

GRANT = {"grant": "alice"}

#: The code each category's tools get under the default starter policy.
DEFAULT_DECISION = {
    "Read": "ALLOWED",
    "Write": "ALLOWED",
    "Execute": "ALLOWED",
    "Destructive": "HIDDEN",
    "Financial": "APPROVAL_REQUIRED",
}


@pytest.mark.parametrize(
    ("text", "tool", "counter", "per_minute"), POLICYLAYER_EXAMPLES, ids=lambda x: str(x)[:20]
)
def test_policylayer_example_tools_get_its_policy(
    text: str, tool: str, counter: str, per_minute: int
) -> None:
    """Each PolicyLayer example's tool, scanned alone, gives exactly the policy the example
    recommends: Write 30 per minute, Execute (vm_create_image) 10."""
    (definition,) = [t for t, _, _ in POLICYLAYER_EXAMPLE_TOOLS if t["name"] == tool]
    policy = suggest([classify(definition)])
    assert policy == json.loads(text)
    assert policy["tools"][tool]["limits"][0] == {
        "counter": counter,
        "window": "minute",
        "max": per_minute,
        "scope": "grant",
    }


def _by_source() -> dict[str, list[dict[str, Any]]]:
    sources: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in labelled():
        sources[t["source"]].append(t)
    return sources


@pytest.mark.parametrize("source", sorted(_by_source()))
def test_policy_for_every_scanned_set_loads(source: str) -> None:
    """Every labelled server's tools give a policy that loads as JSON and YAML and decides as
    each tool's category says."""
    tools = _by_source()[source]
    classifications = classify_all(tools)
    policy = suggest(classifications)
    toolgate.Policy.from_dict(policy)
    from_json = toolgate.Policy.from_str(to_json(policy), format="json")
    from_yaml = toolgate.Policy.from_str(to_yaml(policy, classifications), format="yaml")
    assert from_json.revision == toolgate.Policy.from_dict(policy).revision
    engine = make_engine(from_yaml)
    for c in classifications:
        # A sensitive read (its answer holds secrets) waits for a person's approval.
        want = "APPROVAL_REQUIRED" if c.sensitive else DEFAULT_DECISION[c.category]
        # Each by a caller of its own: a read may mark its caller (flow rules).
        assert engine.decide(c.name, grant=f"{GRANT['grant']}-{c.name}").code == want, c


def _tool(name: str, category: str) -> dict[str, Any]:
    """A tool that classifies as ``category``."""
    return {
        "Read": {"name": name, "annotations": {"readOnlyHint": True}},
        "Write": {"name": name, "annotations": {"readOnlyHint": False, "destructiveHint": False}},
        "Execute": {"name": name, "inputSchema": {"properties": {"command": {}}}},
        "Destructive": {"name": name, "annotations": {"destructiveHint": True}},
        "Financial": {"name": name, "inputSchema": {"properties": {"amount": {}, "currency": {}}}},
    }[category]


def test_decisions_on_the_default_policy(clock: toolgate.ManualClock) -> None:
    tools = [
        _tool("read_thing", "Read"),
        _tool("write_thing", "Write"),
        _tool("exec_thing", "Execute"),
        _tool("drop_thing", "Destructive"),
        _tool("pay_thing", "Financial"),
    ]
    classifications = classify_all(tools)
    assert [c.category for c in classifications] == [
        "Read",
        "Write",
        "Execute",
        "Destructive",
        "Financial",
    ]
    engine = make_engine(suggest(classifications), clock)
    assert engine.decide("read_thing", **GRANT).verdict == "ALLOW"
    hidden = engine.decide("drop_thing", **GRANT)
    assert (hidden.verdict, hidden.code) == ("DENY", "HIDDEN")
    pay = engine.decide("pay_thing", **GRANT)
    assert (pay.verdict, pay.code) == ("REQUIRE_APPROVAL", "APPROVAL_REQUIRED")
    assert engine.decide("unknown_tool", **GRANT).code == "DEFAULT_DENY"

    writes = [engine.decide("write_thing", **GRANT) for _ in range(31)]
    assert [d.code for d in writes[:30]] == ["ALLOWED"] * 30
    assert writes[30].code == "RATE_LIMITED" and writes[30].retry_after_ms
    assert writes[30].limits[0].counter == "write_thing_rate"
    # Per grant: bob has his own 30.
    assert engine.decide("write_thing", grant="bob").code == "ALLOWED"
    execs = [engine.decide("exec_thing", **GRANT).code for _ in range(11)]
    assert execs == ["ALLOWED"] * 10 + ["RATE_LIMITED"]
    # Once the window has slid past the first calls (retry-after says when), writes run again.
    clock.advance(writes[30].retry_after_ms / 1000)
    assert engine.decide("write_thing", **GRANT).code == "ALLOWED"


def test_options_change_the_defaults() -> None:
    classifications = classify_all(
        [_tool("w", "Write"), _tool("d", "Destructive"), _tool("f", "Financial")]
    )
    options = Options(default="allow", window="1h", scope="session")
    options.treatment["Destructive"] = "deny"
    options.treatment["Financial"] = "hide"
    options.max_calls["Write"] = 5
    policy = suggest(classifications, options)
    assert policy["default"] == "allow"
    assert policy["hide"] == ["f"]
    assert policy["tools"]["w"] == {
        "limits": [{"counter": "w_rate", "window": "1h", "max": 5, "scope": "session"}]
    }
    assert policy["tools"]["d"]["action"] == "deny"
    assert policy["tools"]["d"]["reason"].startswith("Destructive tool")
    engine = make_engine(policy)
    assert engine.decide("d", session="s").code == "RULE_DENY"
    assert engine.decide("f", session="s").code == "HIDDEN"
    assert engine.decide("other", session="s").code == "ALLOWED"
    with pytest.raises(ValueError):
        Options(scope="nobody")
    with pytest.raises(ValueError):
        Options(max_calls={"Write": 0})


def test_glob_characters_in_names_match_only_themselves() -> None:
    names = ["a*b", "a?c", "x[1]", "[!y]", "aXb", "axc"]
    categories = ["Read", "Write", "Destructive", "Financial", "Write", "Read"]
    classifications = classify_all([_tool(n, c) for n, c in zip(names, categories, strict=True)])
    policy = suggest(classifications)
    assert policy["tools"]["a[*]b"] == {}
    assert policy["hide"] == ["x[[]1]"]
    engine = make_engine(policy)
    assert engine.decide("a*b", **GRANT).code == "ALLOWED"
    assert engine.decide("aZb", **GRANT).code == "DEFAULT_DENY"
    assert engine.decide("a?c", **GRANT).limits[0].counter == "a?c_rate"
    assert engine.decide("abc", **GRANT).code == "DEFAULT_DENY"
    assert engine.decide("x[1]", **GRANT).code == "HIDDEN"
    assert engine.decide("x1", **GRANT).code == "DEFAULT_DENY"
    # Its approval-gated rule matches it, but no approval opens for a name MCP does not allow.
    assert engine.decide("[!y]", **GRANT).code == "INVALID_REQUEST"
    assert engine.decide("z", **GRANT).code == "DEFAULT_DENY"
    assert engine.decide("aXb", **GRANT).limits[0].counter == "aXb_rate"


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=20).filter(lambda s: "\x00" not in s),
            st.sampled_from(["Read", "Write", "Execute", "Destructive", "Financial"]),
        ),
        min_size=1,
        max_size=6,
        unique_by=lambda t: t[0],
    )
)
def test_any_tool_names_give_a_loading_policy(tools: list[tuple[str, str]]) -> None:
    """Whatever names a server uses (quotes, globs, unicode, newlines), the policy loads as JSON
    and YAML and each tool gets its category's decision, and only its own rule."""
    classifications = classify_all([_tool(name, category) for name, category in tools])
    policy = suggest(classifications)
    yaml_policy = toolgate.Policy.from_str(to_yaml(policy, classifications), format="yaml")
    assert yaml_policy.revision == toolgate.Policy.from_dict(policy).revision
    engine = make_engine(policy)
    # Each tool gets its classification's decision. (The classification may be riskier than
    # the annotations alone say: a name such as "RM" reads as a destructive verb.)
    for c in classifications:
        decision = engine.decide(c.name, **GRANT)
        expected = DEFAULT_DECISION[c.category]
        # No approval is opened for a name MCP does not allow: a person would read it.
        if expected == "APPROVAL_REQUIRED" and not is_mcp_tool_name(c.name):
            expected = "INVALID_REQUEST"
        # A name no key matches alone ("!", "^^") is left to the default.
        if not has_policy_key(c.name):
            expected = "DEFAULT_DENY"
        assert decision.code == expected, c
        if c.category in ("Write", "Execute") and has_policy_key(c.name):
            assert [s.counter for s in decision.limits] == [f"{c.name}_rate"]


def test_policy_key() -> None:
    assert policy_key("create-ami") == "create-ami"
    assert policy_key("a*b?c[d]") == "a[*]b[?]c[[]d]"
    # A name MCP does not allow is no key a policy takes: a glob matching only it is.
    assert policy_key("my tool") == "[m]y tool"
    assert policy_key(": x") == "[:] x"


def test_json_is_policylayers_style() -> None:
    (definition,) = [t for t, _, _ in POLICYLAYER_EXAMPLE_TOOLS if t["name"] == "vm_create_image"]
    text = to_json(suggest([classify(definition)]))
    assert text.startswith('{\n  "version": "1",\n  "default": "deny",\n  "tools": {\n')


# --- the command line -----------------------------------------------------------------------------


def _tools_file(tmp_path: Path) -> Path:
    path = tmp_path / "tools.json"
    tools = [_tool("read_x", "Read"), _tool("write_x", "Write"), _tool("drop_x", "Destructive")]
    path.write_text(json.dumps({"tools": tools}))
    return path


def test_cli_suggest_from_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tools = _tools_file(tmp_path)
    assert main(["suggest", "--file", str(tools)]) == 0
    out, err = capsys.readouterr()
    policy = json.loads(out)
    assert policy["hide"] == ["drop_x"] and set(policy["tools"]) == {"read_x", "write_x"}
    assert "TOOL" in err and "Destructive" in err  # the table goes to stderr
    (tmp_path / "policy.json").write_text(out)
    assert main(["validate", str(tmp_path / "policy.json")]) == 0
    capsys.readouterr()
    yaml_path = str(tmp_path / "p.yaml")

    assert main(["suggest", "--file", str(tools), "--format", "yaml", "-q", "-o", yaml_path]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    assert (
        toolgate.Policy.from_file(tmp_path / "p.yaml").revision
        == toolgate.Policy.from_dict(policy).revision
    )


def test_cli_suggest_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tools = _tools_file(tmp_path)
    argv = ["suggest", "-q", "--file", str(tools), "--treat", "destructive=require_approval"]
    argv += ["--max", "Write=7", "--set", "read_x=Financial", "--default", "allow"]
    assert main(argv) == 0
    policy = json.loads(capsys.readouterr().out)
    assert policy["default"] == "allow"
    assert policy["tools"]["drop_x"] == {"action": "require_approval"}
    assert policy["tools"]["read_x"] == {"action": "require_approval"}
    assert policy["tools"]["write_x"]["limits"][0]["max"] == 7

    for bad in (["--treat", "Write=maybe"], ["--max", "Write=x"], ["--set", "nope=Read"]):
        assert main(["suggest", "-q", "--file", str(tools), *bad]) == exits.UNUSABLE
        assert capsys.readouterr().err
    assert (
        main(["suggest", "-q", "--file", str(tools), "--window", "5 fortnights"]) == exits.UNUSABLE
    )
    assert "/window" in capsys.readouterr().err


def test_sensitive_reads_get_a_stricter_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Read that returns secrets waits for approval by default; --treat and --max sensitive=
    change that; --set to another category makes it that category's."""
    path = tmp_path / "tools.json"
    secret = {"name": "read_secret", "description": "Read a secret from a KV mount."}
    plain = {"name": "read_note", "description": "Read a note."}
    path.write_text(json.dumps({"tools": [secret, plain]}))

    assert main(["suggest", "--file", str(path)]) == 0
    out, err = capsys.readouterr()
    policy = json.loads(out)
    assert policy["tools"] == {"read_secret": {"action": "require_approval"}, "read_note": {}}
    assert "read_secret  Read      high" in err
    assert "Read 2 (1 sensitive read)" in err

    argv = ["suggest", "-q", "--file", str(path), "--treat", "sensitive=limit"]
    assert main([*argv, "--max", "sensitive=3"]) == 0
    limit = json.loads(capsys.readouterr().out)["tools"]["read_secret"]["limits"][0]
    assert (limit["max"], limit["counter"]) == (3, "read_secret_rate")

    assert main(["suggest", "-q", "--file", str(path), "--treat", "sensitive=deny"]) == 0
    reason = json.loads(capsys.readouterr().out)["tools"]["read_secret"]["reason"]
    assert reason.startswith("Read (sensitive) tool, denied by the starter policy")

    assert main(["suggest", "-q", "--file", str(path), "--set", "read_secret=Write"]) == 0
    assert "limits" in json.loads(capsys.readouterr().out)["tools"]["read_secret"]
    yaml_text = to_yaml(suggest(classify_all([secret])), classify_all([secret]))
    assert "# Read (sensitive read) (high risk" in yaml_text
    assert main(["suggest", "-q", "--file", str(path), "--max", "sensitive=0"]) == exits.UNUSABLE
    assert "sensitive=0" in capsys.readouterr().err


# --- flow rules ----------------------------------------------------------------------------------

CRM_TOOLS = json.loads((Path(__file__).parent.parent / "examples/crm/tools.json").read_text())


def _annotations(tools: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t.get("annotations", {}) for t in tools}


def test_readers_of_private_data_mark_the_caller_and_open_world_writers_stay_out() -> None:
    tools = CRM_TOOLS["tools"]
    policy = suggest(classify_all(tools), annotations=_annotations(tools))
    rules = policy["tools"]
    assert rules["crm_read"]["marks"] == [{"name": "private_data", "scope": "grant", "ttl": "8h"}]
    for writer in ("send_email", "deploy", "run_tests"):
        assert "marks" not in rules[writer]
    engine = make_engine(policy)
    assert engine.decide("send_email", grant="g", session="s").code == "ALLOWED"
    assert engine.decide("crm_read", grant="g", session="s").code == "ALLOWED"
    # The caller is marked, whatever session id it sends, or none.
    for session in ("s", "other", None):
        denied = engine.decide("send_email", grant="g", session=session)
        assert denied.code == "CONDITION_FAILED"
        assert "read private data" in denied.reason
    assert engine.decide("send_email", grant="h", session="s").code == "ALLOWED"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Read", "Write", "Execute", "Destructive", "Financial"]),
            st.sampled_from([None, True, False]),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_flow_rules_mark_only_closed_world_reads_and_guard_only_open_world_writers(
    kinds: list[tuple[str, bool | None]],
) -> None:
    tools = []
    for i, (category, open_world) in enumerate(kinds):
        tool = _tool(f"t{i}", category)
        if open_world is not None:
            tool = {
                **tool,
                "annotations": {**tool.get("annotations", {}), "openWorldHint": open_world},
            }
        tools.append(tool)
    classifications = classify_all(tools)
    policy = suggest(classifications, annotations=_annotations(tools))
    toolgate.Policy.from_dict(policy)
    rules = policy["tools"]
    runs = {k for k, r in rules.items() if r.get("action") != "deny"}
    readers = {
        c.name
        for c, t in zip(classifications, tools, strict=True)
        if c.name in runs
        and c.category == "Read"
        and (c.sensitive or t.get("annotations", {}).get("openWorldHint") is False)
    }
    writers = {
        c.name
        for c, t in zip(classifications, tools, strict=True)
        if c.name in runs
        and c.category != "Read"
        and t.get("annotations", {}).get("openWorldHint") is not False
    }
    marked = {k for k, r in rules.items() if "marks" in r}
    guarded = {k for k, r in rules.items() if "deny_if" in r}
    if readers and writers:
        assert (marked, guarded) == (readers, writers)
    else:
        assert marked == guarded == set()
    assert suggest(classifications, Options(flow_rules=False), _annotations(tools)) == suggest(
        classifications, Options(flow_rules=False)
    )
    assert not any(
        "marks" in r for r in suggest(classifications, Options(flow_rules=False))["tools"].values()
    )


def test_a_read_only_claim_lowers_neither_the_limit_nor_the_flow_rule(
    clock: toolgate.ManualClock,
) -> None:
    """A tool that sends any text to an external URL and declares itself read-only keeps its
    words' category: limited as a Write, and denied to a caller who read private data."""
    sender = {
        "name": "send_text",
        "description": "Sends any text to an external URL.",
        "annotations": {"readOnlyHint": True},
    }
    reader = {"name": "read_notes", "annotations": {"readOnlyHint": True, "openWorldHint": False}}
    classifications = classify_all([sender, reader])
    assert [c.category for c in classifications] == ["Write", "Read"]
    hints = {t["name"]: t["annotations"] for t in (sender, reader)}
    policy = suggest(classifications, annotations=hints)
    assert policy["tools"]["send_text"].get("limits"), policy["tools"]["send_text"]
    engine = make_engine(policy, clock)
    assert engine.decide("send_text", grant="fresh").verdict == "ALLOW"
    assert engine.decide("read_notes", grant="reader").verdict == "ALLOW"
    refused = engine.decide("send_text", grant="reader")
    assert refused.verdict == "DENY", refused
