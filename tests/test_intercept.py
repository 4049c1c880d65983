"""``toolgate import intercept``: Intercept policies (tests/data/intercept/) decided by a
reference evaluator of Intercept's documented semantics and, converted, by toolgate.

The reference evaluator follows Intercept's policy reference: ``hide`` first (a name, or
``"*"`` for all), then ``default: deny`` for unlisted tools, then the tool's rules and the
``"*"`` rules in order (``deny`` denies; ``evaluate`` needs every condition), then the state
counters are reserved together: a counter's value is the sum of its increments in the current
UTC calendar window, and a reservation is refused when the value after the increment would
break a bound the rule puts on its own counter.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import toolgate
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cli import toolgate as run_toolgate
from toolgate._core import read_document
from toolgate.authoring.intercept.convert import convert, convert_file, convert_text
from toolgate.authoring.intercept.read import InterceptError
from toolgate.cli import exits

DATA = Path(__file__).resolve().parent / "data" / "intercept"
WINDOW_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
#: A UTC midnight: every calendar window (minute, hour, day) starts here.
T0 = 1_700_006_400
assert T0 % 86400 == 0


def load(name: str) -> dict[str, Any]:
    document, _ = read_document((DATA / name).read_text())
    return document


# --- the reference evaluator ---------------------------------------------------------------------


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _text(v: Any) -> str:
    """A value printed as Intercept compares non-numbers: by their text."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "<nil>"
    return str(v)


def _equal(a: Any, b: Any) -> bool:
    if _number(a) and _number(b):
        return float(a) == float(b)
    return _text(a) == _text(b)


def _holds(op: str, actual: Any, expected: Any) -> bool:
    if op == "eq":
        return _equal(actual, expected)
    if op == "neq":
        return not _equal(actual, expected)
    if op == "in":
        return any(_equal(actual, e) for e in expected)
    if op == "not_in":
        return not any(_equal(actual, e) for e in expected)
    if op in ("lt", "lte", "gt", "gte"):
        if not (_number(actual) and _number(expected)):
            return False
        return {
            "lt": actual < expected,
            "lte": actual <= expected,
            "gt": actual > expected,
            "gte": actual >= expected,
        }[op]
    if op == "regex":
        return isinstance(actual, str) and re.search(expected, actual) is not None
    if op == "contains":
        if isinstance(actual, str):
            return isinstance(expected, str) and expected in actual
        if isinstance(actual, list):
            return any(_equal(item, expected) for item in actual)
        return False
    raise AssertionError(op)


def _resolve(args: dict[str, Any], path: str) -> tuple[Any, bool]:
    current: Any = args
    for part in path.split("."):
        if not isinstance(current, dict) or part not in current:
            return None, False
        current = current[part]
    return current, True


@dataclass
class _Rule:
    name: str
    action: str
    conditions: list[dict[str, Any]]
    on_deny: str
    state: dict[str, Any] | None
    scope: str


def _rules(doc: dict[str, Any], tool: str) -> list[_Rule]:
    """The tool's rules then the wildcard's, with ``rate_limit`` written out in full."""
    out = []
    for key in (tool, "*") if tool != "*" else ("*",):
        definition = (doc.get("tools") or {}).get(key) or {}
        scope = "_global" if key == "*" else key
        for r in definition.get("rules") or []:
            conditions, state = list(r.get("conditions") or []), r.get("state")
            on_deny = r.get("on_deny") or ""
            if r.get("rate_limit"):
                count, window = r["rate_limit"].split("/")
                state = {"counter": f"_rate_{window}", "window": window}
                conditions = [
                    {"path": f"state.{scope}._rate_{window}", "op": "lte", "value": int(count)}
                ]
                on_deny = on_deny or f"Rate limit of {count} per {window} reached. Try again later."
            out.append(
                _Rule(
                    r["name"],
                    r.get("action") or "evaluate",
                    conditions,
                    on_deny or f"Denied by rule {r['name']!r}",
                    state,
                    scope,
                )
            )
    return out


@dataclass
class Reference:
    """Intercept's documented semantics, as the oracle."""

    doc: dict[str, Any]
    #: counter key → list of (time, amount) reserved and not rolled back.
    log: dict[str, list[tuple[float, Fraction]]] = field(default_factory=dict)

    def value(self, key: str, window: str, now: float) -> Fraction:
        w = WINDOW_SECONDS[window]
        start = now - now % w
        return sum((a for t, a in self.log.get(key, []) if start <= t), Fraction(0))

    def decide(self, tool: str, args: dict[str, Any] | None, now: float) -> tuple[bool, str]:
        args = args or {}
        hide = self.doc.get("hide") or []
        if tool in hide or "*" in hide:
            return False, f"Tool {tool!r} is hidden by policy"
        tools = self.doc.get("tools") or {}
        if (self.doc.get("default") or "allow") == "deny" and tool not in tools:
            return False, f"Tool {tool!r} is not permitted by policy"
        rules = _rules(self.doc, tool)
        windows = {f"{r.scope}.{r.state['counter']}": r.state["window"] for r in rules if r.state}
        for r in rules:
            if r.action == "deny":
                return False, r.on_deny
            for c in r.conditions:
                path, op, expected = c["path"], c["op"], c["value"]
                if path.startswith("state."):
                    key = path[len("state.") :]
                    actual, present = float(self.value(key, windows[key], now)), True
                else:
                    actual, present = _resolve(args, path[len("args.") :])
                if op == "exists":
                    ok = (present and actual is not None) == expected
                else:
                    ok = present and _holds(op, actual, expected)
                if not ok:
                    return False, r.on_deny
        # Reserve every counter together: refused if a bound on it breaks after the increment.
        reserved = []
        for r in rules:
            if not r.state:
                continue
            key = f"{r.scope}.{r.state['counter']}"
            if r.state.get("increment_from"):
                amount, present = _resolve(args, r.state["increment_from"][len("args.") :])
                if not present or not _number(amount):
                    return False, "Internal policy error"
            else:
                amount = r.state.get("increment") or 1
            # Decimal amounts summed exactly, as the documentation's arithmetic means.
            amount = Fraction(str(amount))
            after = self.value(key, r.state["window"], now) + amount
            bounds = [
                c for c in r.conditions if c["path"] == f"state.{key}" and c["op"] in ("lt", "lte")
            ]
            limits = [(c["op"], Fraction(str(c["value"]))) for c in bounds]
            if not all(after < n if op == "lt" else after <= n for op, n in limits):
                return False, r.on_deny
            reserved.append((key, amount))
        for key, amount in reserved:
            self.log.setdefault(key, []).append((now, amount))
        return True, ""


# --- calls to decide ------------------------------------------------------------------------------

# For each fixture: the tools to call and arguments of the operands' types (missing keys too).
ARGUMENTS: dict[str, Any] = {
    "repository.yaml": {
        "tools": [
            "open_issue",
            "open_pull_request",
            "remove_repository",
            "transfer_repository",
            "list_deploy_keys",
            "read_file",
        ],
        "args": st.just({}),
    },
    "payments.yaml": {
        "tools": ["charge_card", "issue_refund", "erase_customer", "list_charges"],
        "args": st.fixed_dictionaries(
            {},
            optional={
                "amount": st.sampled_from([0, 100, 4999, 5000, 12000, 20000, 20001, 150.5]),
                "currency": st.sampled_from(["usd", "gbp", "eur"]),
            },
        ),
    },
    "allowlist.yaml": {
        "tools": ["read_page", "search_pages", "edit_page", "read_secrets", "delete_page"],
        "args": st.just({}),
    },
    "operators.yaml": {
        "tools": ["deploy", "tag_release", "other"],
        "args": st.fixed_dictionaries(
            {},
            optional={
                "target": st.fixed_dictionaries(
                    {},
                    optional={
                        "env": st.sampled_from(["staging", "production"]),
                        "region": st.sampled_from(["eu-west-1", "cn-north-1"]),
                    },
                ),
                "replicas": st.sampled_from([0, 1, 5, 6, 2.5]),
                "image": st.sampled_from(
                    [
                        "registry.example.com/api:v12",
                        "registry.example.com/api:latest",
                        "docker.io/api:v1",
                        "registry.example.com/Api:v1",
                    ]
                ),
                "team": st.sampled_from(["core", "intern", "guest"]),
                "ticket": st.sampled_from(["OPS-1", ""]),
                "force": st.just(True),
                "major": st.sampled_from([0, 1, 9, 10]),
                "labels": st.sampled_from([["approved"], ["draft", "approved"], [], ["approve"]]),
                "channel": st.sampled_from([2, 3, 2.0]),
            },
        ),
    },
    "hide_all.yaml": {"tools": ["anything", "other"], "args": st.just({})},
    "unexpressible.yaml": {"tools": ["warm_up", "publish", "read_only"], "args": st.just({})},
}
FIXTURES = sorted(ARGUMENTS)


def calls(name: str, max_advance: float) -> st.SearchStrategy[list[tuple[str, dict, float]]]:
    spec = ARGUMENTS[name]
    call = st.tuples(
        st.sampled_from(spec["tools"]),
        spec["args"],
        st.floats(0, max_advance, allow_nan=False, allow_infinity=False),
    )
    return st.lists(call, min_size=1, max_size=30)


def converted_engine(name: str) -> tuple[toolgate.Engine, toolgate.ManualClock]:
    clock = toolgate.ManualClock(1_000_000.0)
    return toolgate.Engine(convert(load(name)).policy, clock=clock), clock


# --- the same decisions --------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURES)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_within_one_calendar_window_decisions_are_the_same(name, data):
    """Calls within the first minute of a calendar day (every window starts at T0 for both):
    the converted policy allows exactly what Intercept allows, call after call."""
    sequence = data.draw(calls(name, max_advance=2.0))
    reference = Reference(load(name))
    engine, clock = converted_engine(name)
    elapsed = 0.0
    for tool, args, advance in sequence:
        if elapsed + advance >= 60:
            break
        elapsed += advance
        clock.advance(advance)
        want, message = reference.decide(tool, args, T0 + elapsed)
        d = engine.decide(tool, arguments=args)
        if name == "unexpressible.yaml" and tool != "read_only":
            # Not expressible: the converted tool denies every call (fail closed).
            assert d.code == "RULE_DENY", d
            continue
        assert d.allowed == want, (tool, args, elapsed, d, message)
        if not want and d.code == "CONDITION_FAILED":
            # A condition's denial carries the rule's on_deny; one that cannot be evaluated
            # (a missing argument) says which, as the conversion notes.
            unevaluable = d.reason.startswith("condition cannot be evaluated: ")
            assert d.reason == message or unevaluable, (d.reason, message)


@pytest.mark.parametrize(
    "name", ["repository.yaml", "payments.yaml", "allowlist.yaml", "operators.yaml"]
)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_across_calendar_windows_the_converted_policy_allows_no_more(name, data):
    """Over hours and days, the calls the converted policy allows are calls Intercept would
    allow too: replayed into the reference evaluator at the same times, every one passes (a
    sliding window never holds fewer calls than the calendar window inside it)."""
    sequence = data.draw(calls(name, max_advance=4000.0))
    replay = Reference(load(name))
    engine, clock = converted_engine(name)
    now = float(T0)
    allowed = 0
    for tool, args, advance in sequence:
        now += advance
        clock.advance(advance)
        if engine.decide(tool, arguments=args).allowed:
            allowed += 1
            ok, message = replay.decide(tool, args, now)
            assert ok, (tool, args, now - T0, message)


def test_a_burst_across_a_calendar_boundary_is_where_they_differ():
    """4 issues an hour: Intercept allows 4 at 10:59 and 4 more at 11:00; the converted policy
    allows the first 4 and refuses the next 4, as its note says."""
    reference = Reference(load("repository.yaml"))
    engine, clock = converted_engine("repository.yaml")
    conv = convert(load("repository.yaml"))
    assert any("calendar windows" in n.text and "hour" in n.text for n in conv.notes)
    before = T0 + 3600 - 1
    clock.advance(3600 - 1)
    assert [reference.decide("open_issue", {}, before)[0] for _ in range(4)] == [True] * 4
    assert [engine.decide("open_issue").allowed for _ in range(4)] == [True] * 4
    clock.advance(1)
    assert [reference.decide("open_issue", {}, before + 1)[0] for _ in range(4)] == [True] * 4
    assert [engine.decide("open_issue").code for _ in range(4)] == ["RATE_LIMITED"] * 4


def test_spend_counters_count_the_amount():
    engine, _ = converted_engine("payments.yaml")
    charges = [20000, 20000, 10000]
    assert [
        engine.decide("charge_card", arguments={"amount": a, "currency": "usd"}).allowed
        for a in charges
    ] == [
        True,
        True,
        True,
    ]
    d = engine.decide("charge_card", arguments={"amount": 1, "currency": "usd"})
    assert (d.code, d.rule) == ("RATE_LIMITED", "/tools/charge_card/limits/0")
    assert d.limits[0].counter == "charge_card.spent_today"
    assert d.limits[0].remaining == 0


# --- where the semantics differ, and the notes that say so ---------------------------------------


def test_values_of_another_type_are_denied_and_the_note_says_so():
    # tag_release wants channel eq 2: Intercept compares "2" and 2 by their text.
    args = {"major": 1, "labels": ["approved"], "channel": "2"}
    assert Reference(load("operators.yaml")).decide("tag_release", args, T0)[0] is True
    engine, _ = converted_engine("operators.yaml")
    assert engine.decide("tag_release", arguments=args).code == "CONDITION_FAILED"
    notes = convert(load("operators.yaml")).notes
    assert any("never coerces" in n.text and n.kind == "stricter" for n in notes)


def test_a_null_argument_exists_for_toolgate_and_the_note_says_so():
    doc = {
        "version": "1",
        "tools": {
            "t": {
                "rules": [
                    {"name": "n", "conditions": [{"path": "args.x", "op": "exists", "value": True}]}
                ]
            }
        },
    }
    assert Reference(doc).decide("t", {"x": None}, T0)[0] is False
    conv = convert(doc)
    assert toolgate.Engine(conv.policy).decide("t", arguments={"x": None}).allowed
    assert any("null" in n.text for n in conv.notes)


def test_fixed_increments_and_lt_bounds():
    """increment 5 with lt 20: Intercept allows 3 (5, 10, 15; 20 is not < 20)."""
    reference = Reference(load("operators.yaml"))
    engine, _ = converted_engine("operators.yaml")
    args = {
        "target": {"env": "staging", "region": "eu-west-1"},
        "replicas": 2,
        "image": "registry.example.com/api:v3",
        "team": "core",
        "ticket": "OPS-9",
    }
    assert [reference.decide("deploy", args, T0)[0] for _ in range(4)] == [True, True, True, False]
    assert [engine.decide("deploy", arguments=args).allowed for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]


def test_unexpressible_rules_deny_and_are_reported():
    conv = convert(load("unexpressible.yaml"))
    assert conv.policy["tools"]["warm_up"]["action"] == "deny"
    assert conv.policy["tools"]["publish"]["action"] == "deny"
    assert conv.policy["tools"]["read_only"] == {}
    kinds = {(n.where.split(" ")[0], n.kind) for n in conv.notes}
    assert kinds == {
        ("tools.warm_up.rules[0]", "not expressible"),
        ("tools.publish.rules[1]", "not expressible"),
    }
    assert not conv.exact


def test_exact_conversions_have_no_notes():
    assert convert(load("hide_all.yaml")).notes == []
    doc = {
        "version": "1",
        "default": "deny",
        "tools": {"a": {"rules": []}, "b*": {"rules": [{"name": "x", "action": "deny"}]}},
    }
    conv = convert(doc)
    assert conv.exact
    # A tool named with a glob character is that one name, not a glob.
    assert conv.policy["tools"] == {
        "a": {},
        "b[*]": {"action": "deny", "reason": "Denied by rule 'x'"},
    }
    engine = toolgate.Engine(conv.policy)
    assert engine.decide("b*").code == "RULE_DENY"
    assert engine.decide("bx").code == "DEFAULT_DENY"


def test_argument_paths():
    from toolgate.authoring.intercept.convert import args_path

    assert args_path("args.a.b") == "args.a.b"
    assert args_path("args.key with space") == "args.key with space"
    assert args_path('args.a[0]."q"') == 'args["a[0]"]["\\"q\\""]'
    engine = toolgate.Engine(
        convert(
            {
                "version": "1",
                "tools": {
                    "t": {
                        "rules": [
                            {
                                "name": "n",
                                "conditions": [{"path": 'args.a[0]."q"', "op": "eq", "value": 1}],
                            }
                        ]
                    }
                },
            }
        ).policy
    )
    assert engine.decide("t", arguments={"a[0]": {'"q"': 1}}).allowed
    assert not engine.decide("t", arguments={"a": [{"q": 1}]}).allowed


# --- every documented construct is covered -------------------------------------------------------


def constructs(doc: dict[str, Any]) -> set[str]:
    used = {f"top:{k}" for k in doc}
    used.add(f"default:{doc.get('default', 'omitted')}")
    used |= {"hide:*" if h == "*" else "hide:name" for h in doc.get("hide") or []}
    for tool, definition in (doc.get("tools") or {}).items():
        used.add("tools:*" if tool == "*" else "tools:name")
        rules = (definition or {}).get("rules")
        if rules == []:
            used.add("rules:empty")
        for r in rules or []:
            used |= {f"rule:{k}" for k in r}
            used.add(f"action:{r.get('action', 'omitted')}")
            if "rate_limit" in r:
                used.add("rate_limit:" + r["rate_limit"].split("/")[1])
            for c in r.get("conditions") or []:
                used.add(f"op:{c['op']}")
                if c["path"].startswith("state._global."):
                    used.add("path:state._global")
                elif c["path"].startswith("state."):
                    used.add("path:state.tool")
                elif c["path"].count(".") > 1:
                    used.add("path:args.nested")
                else:
                    used.add("path:args")
            for k, v in (r.get("state") or {}).items():
                used.add(f"state:{k}")
                if k == "window":
                    used.add(f"window:{v}")
    return used


TOP_KEYS = ("version", "description", "default", "hide", "tools")
RULE_KEYS = ("name", "action", "rate_limit", "conditions", "on_deny", "state")
OPS = ("eq", "neq", "in", "not_in", "lt", "lte", "gt", "gte", "regex", "contains", "exists")
STATE_KEYS = ("counter", "window", "increment", "increment_from")
DOCUMENTED = {
    *(f"top:{k}" for k in TOP_KEYS),
    *(f"default:{d}" for d in ("allow", "deny", "omitted")),
    *("hide:name", "hide:*", "tools:name", "tools:*", "rules:empty"),
    *(f"rule:{k}" for k in RULE_KEYS),
    *(f"action:{a}" for a in ("evaluate", "deny", "omitted")),
    *(f"rate_limit:{w}" for w in WINDOW_SECONDS),
    *(f"op:{op}" for op in OPS),
    *("path:args", "path:args.nested", "path:state.tool", "path:state._global"),
    *(f"state:{k}" for k in STATE_KEYS),
    *(f"window:{w}" for w in WINDOW_SECONDS),
}


def test_the_fixtures_use_every_documented_construct():
    used = set().union(*(constructs(load(name)) for name in FIXTURES))
    assert DOCUMENTED - used == set()


# --- invalid Intercept policies ------------------------------------------------------------------

RULE = {"name": "r", "conditions": [{"path": "args.a", "op": "eq", "value": 1}]}


def with_condition(path: str, op: str, value: Any) -> dict[str, Any]:
    return {"name": "r", "conditions": [{"path": path, "op": op, "value": value}]}


def with_state(**state: Any) -> dict[str, Any]:
    return dict(RULE, state=state)


TWO_HOURLY = [{"name": "a", "rate_limit": "1/hour"}, {"name": "b", "rate_limit": "2/hour"}]


def doc_with(rule: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"version": "1", "tools": {"t": {"rules": [rule]}}, **top}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (doc_with(RULE, version="2"), 'version must be "1"'),
        (doc_with(RULE, default="maybe"), 'default must be "allow" or "deny"'),
        (doc_with(RULE, hide=["a", "a"]), "duplicate entry"),
        (doc_with(RULE, hide=[""]), "entry must not be empty"),
        (doc_with({"conditions": RULE["conditions"]}), "rule must have a name"),
        (doc_with(dict(RULE, action="allow")), 'action must be "evaluate" or "deny"'),
        (doc_with(dict(RULE, action="deny")), "deny rules must not have conditions"),
        (doc_with({"name": "r"}), "evaluate rules must have at least one condition"),
        (doc_with(with_condition("env.X", "eq", 1)), 'path must start with "args." or "state."'),
        (doc_with(with_condition("args.a", "like", 1)), "unknown operator"),
        (doc_with(with_condition("args.a", "in", 1)), "requires a list value"),
        (doc_with(with_condition("args.a", "lt", "1")), "requires a numeric value"),
        (doc_with(with_condition("args.a", "exists", 1)), "requires a boolean value"),
        (doc_with(with_condition("args.a", "regex", 1)), "regex value must be a string"),
        (doc_with(with_condition("args.a", "regex", "(")), "invalid regex"),
        (doc_with(with_state(counter="", window="day")), "counter must not be empty"),
        (
            doc_with(with_state(counter="c", window="week")),
            'window must be "minute", "hour", or "day"',
        ),
        (
            doc_with(with_state(counter="c", window="day", increment_from="amount")),
            'increment_from must start with "args."',
        ),
        (doc_with(with_condition("state.t.c", "lte", 1)), "no matching state block"),
        (
            doc_with({"name": "r", "rate_limit": "0/hour"}),
            "rate_limit count must be a positive integer",
        ),
        (
            doc_with({"name": "r", "rate_limit": "5/week"}),
            'rate_limit window must be "minute", "hour", or "day"',
        ),
        (doc_with({"name": "r", "rate_limit": "5"}), 'format "N/window"'),
        (
            doc_with(dict(RULE, rate_limit="5/hour")),
            "rate_limit cannot be combined with conditions or state",
        ),
        (
            doc_with({"name": "r", "action": "deny", "rate_limit": "5/hour"}),
            'rate_limit cannot be used with action "deny"',
        ),
        (
            {"version": "1", "tools": {"t": {"rules": TWO_HOURLY}}},
            "duplicate state counter '_rate_hour' (also used by rules[0])",
        ),
        ({"version": "1"}, "tools must be a mapping"),
        ([1], "must be a mapping"),
    ],
)
def test_invalid_policies_are_refused_with_the_documented_error(doc, message):
    with pytest.raises(InterceptError) as info:
        convert(doc)
    assert any(message in e for e in info.value.errors), info.value.errors


def test_errors_carry_lines_and_unknown_keys_are_noted():
    text = 'version: "1"\ntools:\n  t:\n    rules:\n      - name: r\n        conditons: []\n'
    with pytest.raises(InterceptError) as info:
        convert_text(text)
    assert info.value.errors == [
        'line 5: tools.t.rules[0] ("r"): evaluate rules must have at least one condition'
    ]
    conv = convert_text(text.replace("conditons: []", "rate_limit: 1/day\n        priority: 3"))
    assert [(n.kind, "'priority'" in n.text) for n in conv.notes if n.kind == "ignored"] == [
        ("ignored", True)
    ]
    with pytest.raises(InterceptError) as info:
        convert_text("tools: [\n")
    assert info.value.errors[0].startswith("line ")


# --- the command ---------------------------------------------------------------------------------


def test_import_command_writes_a_policy_that_loads(tmp_path: Path):
    result = run_toolgate("import", "intercept", DATA / "payments.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# Converted from Intercept's policy")
    policy = toolgate.Policy.from_str(result.stdout, "yaml")
    assert toolgate.Engine(policy).decide("erase_customer").code == "RULE_DENY"
    assert "approximated: Intercept's day windows are calendar windows" in result.stderr
    assert result.stderr.splitlines()[-1].endswith("converted with the approximations above")

    out = tmp_path / "p.json"
    result = run_toolgate(
        "import", "intercept", DATA / "payments.yaml", "--format", "json", "-o", out, "-q"
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert json.loads(out.read_text()) == convert_file(DATA / "payments.yaml").policy
    assert run_toolgate("validate", out).returncode == 0

    assert run_toolgate("import", "intercept", DATA / "payments.yaml", "--strict").returncode == 1
    assert run_toolgate("import", "intercept", DATA / "hide_all.yaml", "--strict").returncode == 0


def test_import_command_refuses_an_invalid_policy(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    rule = "      - name: r\n        action: deny\n        rate_limit: 2/hour\n"
    bad.write_text('version: "1"\ntools:\n  t:\n    rules:\n' + rule)
    result = run_toolgate("import", "intercept", bad)
    assert result.returncode == exits.UNUSABLE
    assert result.stdout == ""
    assert (
        f'{bad}: line 7: tools.t.rules[0] ("r"): rate_limit cannot be used with action "deny"'
        in result.stderr
    )
    result = run_toolgate("import", "intercept", tmp_path / "missing.yaml")
    assert result.returncode == exits.UNUSABLE and "cannot read" in result.stderr


@settings(max_examples=25, deadline=None)
@given(
    conditions=st.lists(
        st.tuples(
            st.from_regex(r"args\.[a-z]{1,6}(\.[a-z]{1,6})?", fullmatch=True),
            st.sampled_from(["eq", "neq", "contains"]),
            st.text(alphabet="abcxyz", min_size=1, max_size=5),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_strict_passes_argument_conditions_it_converts_exactly(conditions, tmp_path_factory):
    """``import --strict`` can gate CI on a policy whose rules test arguments: the only note
    such conditions get, that toolgate refuses a key spelt twice by case, is ``stricter``."""
    rule = {
        "name": "r",
        "conditions": [{"path": path, "op": op, "value": value} for path, op, value in conditions],
    }
    source = tmp_path_factory.mktemp("strict") / "policy.yaml"
    source.write_text(json.dumps({"version": "1", "tools": {"t": {"rules": [rule]}}}))
    conv = convert_file(source)
    assert {n.kind for n in conv.notes} <= {"stricter"}, conv.notes
    assert run_toolgate("import", "intercept", source, "--strict", "-q").returncode == exits.OK


def test_amounts_with_fractions_under_lt():
    doc = {
        "version": "1",
        "tools": {
            "pay": {
                "rules": [
                    {
                        "name": "budget",
                        "conditions": [{"path": "state.pay.spent", "op": "lt", "value": 10}],
                        "state": {
                            "counter": "spent",
                            "window": "day",
                            "increment_from": "args.amount",
                        },
                    }
                ]
            }
        },
    }
    conv = convert(doc)
    assert math.isclose(conv.policy["tools"]["pay"]["limits"][0]["max"], 9.999)
    reference = Reference(doc)
    engine = toolgate.Engine(conv.policy, clock=toolgate.ManualClock(1_000_000.0))
    for amount in [4.5, 5.499, 0.001, 0.001]:
        want, _ = reference.decide("pay", {"amount": amount}, T0)
        assert engine.decide("pay", arguments={"amount": amount}).allowed == want, amount
