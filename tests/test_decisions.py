"""Decisions through the Python API: precedence, conditions, limits, shadow mode, approval,
reload, servers and malformed requests (docs/policy.md, docs/decisions.md, docs/counters.md)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import toolgate
from conftest import (
    EXAMPLES,
    POLICYLAYER_EXAMPLES,
    POLICYLAYER_TOOLS,
    START,
    codes,
    cond,
    limit,
    make_engine,
    policy,
)

# --- defaults ----------------------------------------------------------------------------------


def test_default_deny_denies_an_unlisted_tool():
    d = make_engine(policy({"listed": {}})).decide("other")
    assert (d.verdict, d.code, d.rule) == ("DENY", "DEFAULT_DENY", "/default")
    assert not d.allowed
    assert d.reason
    assert d.reservation is None and d.retry_after_ms is None and d.limits == []
    assert d.shadow is False


def test_default_is_deny_when_not_written():
    d = make_engine({"version": "1", "tools": {"listed": {}}}).decide("other")
    assert (d.verdict, d.code) == ("DENY", "DEFAULT_DENY")


def test_default_allow_allows_an_unlisted_tool():
    d = make_engine(policy({}, default="allow")).decide("anything")
    assert (d.verdict, d.code, d.rule) == ("ALLOW", "ALLOWED", "/default")
    assert d.allowed


def test_listed_tool_without_action_is_allowed_by_its_rule():
    d = make_engine(policy({"read_file": {}})).decide("read_file")
    assert (d.verdict, d.code, d.rule) == ("ALLOW", "ALLOWED", "/tools/read_file")


def test_tool_named_with_slash_and_tilde_gets_an_escaped_pointer():
    d = make_engine(policy({"a/b~c*": {}})).decide("a/b~c")
    assert (d.code, d.rule) == ("ALLOWED", "/tools/a~1b~0c*")


# --- hide --------------------------------------------------------------------------------------

HIDE_POLICY = policy(
    {"delete_user": {}, "secret_*": {}, "read": {}},
    default="allow",
    hide=["delete_*", "internal", "*_destroy", "rm?"],
)


@pytest.mark.parametrize(
    ("tool", "code", "rule"),
    [
        ("delete_user", "HIDDEN", "/hide/0"),  # hide beats an exact tool rule
        ("delete_", "HIDDEN", "/hide/0"),
        ("internal", "HIDDEN", "/hide/1"),
        ("vm_destroy", "HIDDEN", "/hide/2"),
        ("rm1", "HIDDEN", "/hide/3"),
        ("rm12", "ALLOWED", "/default"),  # ? is exactly one character
        ("internals", "ALLOWED", "/default"),  # exact hide names are not prefixes
        ("read", "ALLOWED", "/tools/read"),
        ("secret_x", "ALLOWED", "/tools/secret_*"),
        ("undelete_x", "ALLOWED", "/default"),  # globs are anchored
    ],
)
def test_hide(tool, code, rule):
    d = make_engine(HIDE_POLICY).decide(tool)
    assert (d.code, d.rule) == (code, rule)
    assert d.verdict == ("DENY" if code == "HIDDEN" else "ALLOW")


def test_hidden_reason_names_the_tool():
    d = make_engine(HIDE_POLICY).decide("internal")
    assert "internal" in d.reason


def test_hide_beats_all_tools_and_limits_and_consumes_nothing(clock):
    doc = policy(
        {"x_*": {"limits": [limit("c", 1)]}},
        hide=["x_hidden"],
    )
    engine = make_engine(doc, clock)
    for _ in range(3):
        assert engine.decide("x_hidden", grant="g").code == "HIDDEN"
    assert engine.decide("x_other", grant="g").limits[0].remaining == 0


# --- matching precedence -----------------------------------------------------------------------

MATCH_POLICY = policy(
    {
        "*": {"reason": "star"},
        "delete_*": {},
        "delete_user*": {},
        "delete_user": {},
        "d?lete_*": {},
        "a*z": {},
        "a*": {},
        "a*y": {},
        "a?y": {},
    }
)


@pytest.mark.parametrize(
    ("tool", "rule"),
    [
        ("delete_user", "/tools/delete_user"),  # exact beats every glob
        ("delete_users", "/tools/delete_user*"),  # longest literal prefix
        ("delete_repo", "/tools/delete_*"),
        ("dalete_x", "/tools/d?lete_*"),
        ("abz", "/tools/a*z"),  # same prefix: more literal characters
        ("abc", "/tools/a*"),
        ("aby", "/tools/a*y"),  # a*y and a?y tie: the one written first
        ("zzz", "/tools/*"),
    ],
)
def test_rule_precedence(tool, rule):
    d = make_engine(MATCH_POLICY).decide(tool)
    assert (d.code, d.rule) == ("ALLOWED", rule)


def test_glob_tie_keeps_document_order_in_json_text():
    text = json.dumps({"version": "1", "tools": {"a?y": {}, "a*y": {}}})
    d = make_engine(toolgate.Policy.from_str(text)).decide("aby")
    assert d.rule == "/tools/a?y"


def test_glob_tie_keeps_document_order_in_a_dict():
    """A Python dict keeps insertion order, as json.loads keeps document order: a policy given
    as a dict must break glob ties the same way as the same policy given as text."""
    doc = {"version": "1", "tools": {"a?y": {}, "a*y": {}}}
    d = make_engine(doc).decide("aby")
    assert d.rule == "/tools/a?y"


def test_dict_and_text_of_one_document_have_one_revision():
    doc = {"version": "1", "tools": {"b": {}, "a": {}}}
    assert (
        toolgate.Policy.from_dict(doc).revision
        == toolgate.Policy.from_str(json.dumps(doc)).revision
    )


# --- action deny -------------------------------------------------------------------------------


def test_action_deny_with_reason():
    doc = policy({"drop_table": {"action": "deny", "reason": "Never drop tables."}})
    d = make_engine(doc).decide("drop_table")
    assert (d.verdict, d.code, d.rule, d.reason) == (
        "DENY",
        "RULE_DENY",
        "/tools/drop_table",
        "Never drop tables.",
    )


def test_action_deny_without_reason_names_the_tool():
    d = make_engine(policy({"drop_table": {"action": "deny"}})).decide("drop_table")
    assert d.code == "RULE_DENY"
    assert "drop_table" in d.reason


def test_action_deny_by_glob_and_exact_allow_beside_it():
    doc = policy({"delete_*": {"action": "deny", "reason": "no deletes"}, "delete_tmp": {}})
    engine = make_engine(doc)
    assert engine.decide("delete_db").code == "RULE_DENY"
    assert engine.decide("delete_db").rule == "/tools/delete_*"
    assert engine.decide("delete_tmp").code == "ALLOWED"


def test_all_tools_deny_applies_to_every_listed_tool():
    doc = policy({"a": {}}, default="allow", all_tools={"action": "deny", "reason": "frozen"})
    engine = make_engine(doc)
    for tool in ["a", "unlisted"]:
        d = engine.decide(tool)
        assert (d.code, d.rule, d.reason) == ("RULE_DENY", "/all_tools", "frozen")


def test_action_deny_beats_conditions_and_limits():
    doc = policy(
        {
            "t": {
                "action": "deny",
                "require": [cond("args.missing", "eq", 1)],
                "limits": [limit("c", 1)],
            }
        }
    )
    d = make_engine(doc).decide("t")  # no grant either: still RULE_DENY
    assert d.code == "RULE_DENY"


# --- conditions: every operator ----------------------------------------------------------------

# (op, operand, a value that holds, a value that fails, a value of the wrong type)
OPERATORS = [
    ("eq", 5, 5, 6, "5"),
    ("eq", "prod", "prod", "dev", 1),
    ("eq", True, True, False, "true"),
    ("neq", "a", "b", "a", 1),
    ("neq", 5, 6, 5, "6"),
    ("in", ["a", "b"], "a", "c", 1),
    ("not_in", ["a", "b"], "c", "a", 1),
    ("in", [1, 2], 2.0, 3, "1"),
    ("lt", 10, 9, 10, "9"),
    ("lte", 10, 10, 11, "9"),
    ("gt", 10, 11, 10, True),
    ("gte", 10, 10, 9.5, None),
    ("regex", "^ab+c$", "abbc", "ac", 5),
    ("not_regex", "^rm", "ls", "rm -rf", ["rm"]),
    ("contains", "foo", "xfooy", "bar", 5),
    ("contains", "x", ["x", "y"], ["y"], {"x": 1}),
    ("not_contains", "foo", "bar", "foo!", {"a": 1}),
    ("starts_with", "prod/", "prod/x", "dev/x", 1),
    ("ends_with", ".txt", "a.txt", "a.md", 1),
    ("glob", "*.txt", "a.txt", "a.md", 1),
    ("glob", "f?o", "fao", "fo", False),
]
OP_IDS = [f"{op}-{operand!r}" for op, operand, *_ in OPERATORS]


def require_policy(condition: dict[str, Any]) -> dict[str, Any]:
    return policy({"t": {"require": [condition]}})


def deny_if_policy(condition: dict[str, Any]) -> dict[str, Any]:
    return policy({"t": {"deny_if": [condition]}})


ALL_OPS = {
    *("eq", "neq", "in", "not_in", "lt", "lte", "gt", "gte"),
    *("regex", "not_regex", "contains", "not_contains", "starts_with", "ends_with", "glob"),
    "exists",
}


def test_every_operator_is_covered():
    assert {op for op, *_ in OPERATORS} | {"exists"} == ALL_OPS


@pytest.mark.parametrize(("op", "operand", "holds", "fails", "wrong"), OPERATORS, ids=OP_IDS)
def test_operator_under_require(op, operand, holds, fails, wrong):
    engine = make_engine(require_policy(cond("args.v", op, operand)))

    ok = engine.decide("t", arguments={"v": holds})
    assert (ok.verdict, ok.code, ok.rule) == ("ALLOW", "ALLOWED", "/tools/t")

    no = engine.decide("t", arguments={"v": fails})
    assert (no.verdict, no.code, no.rule) == ("DENY", "CONDITION_FAILED", "/tools/t/require/0")
    assert "does not hold" in no.reason

    missing = engine.decide("t", arguments={"other": holds})
    assert (missing.verdict, missing.code) == ("DENY", "CONDITION_FAILED")
    assert missing.rule == "/tools/t/require/0"
    assert "args.v is missing" in missing.reason

    no_arguments = engine.decide("t")
    assert (no_arguments.verdict, no_arguments.code) == ("DENY", "CONDITION_FAILED")

    mismatch = engine.decide("t", arguments={"v": wrong})
    assert (mismatch.verdict, mismatch.code) == ("DENY", "CONDITION_FAILED")
    assert "cannot" in mismatch.reason and "args.v" in mismatch.reason


@pytest.mark.parametrize(("op", "operand", "holds", "fails", "wrong"), OPERATORS, ids=OP_IDS)
def test_operator_under_deny_if(op, operand, holds, fails, wrong):
    engine = make_engine(deny_if_policy(cond("args.v", op, operand)))

    fired = engine.decide("t", arguments={"v": holds})
    assert (fired.verdict, fired.code, fired.rule) == (
        "DENY",
        "CONDITION_FAILED",
        "/tools/t/deny_if/0",
    )

    assert engine.decide("t", arguments={"v": fails}).code == "ALLOWED"

    # Fail closed: a missing path or a wrong type denies even where "holds" means deny.
    missing = engine.decide("t", arguments={})
    assert (missing.verdict, missing.code, missing.rule) == (
        "DENY",
        "CONDITION_FAILED",
        "/tools/t/deny_if/0",
    )
    assert "is missing" in missing.reason
    mismatch = engine.decide("t", arguments={"v": wrong})
    assert (mismatch.verdict, mismatch.code) == ("DENY", "CONDITION_FAILED")


@pytest.mark.parametrize(("op", "operand", "holds", "fails", "wrong"), OPERATORS, ids=OP_IDS)
def test_not_inverts_but_never_rescues_a_missing_path(op, operand, holds, fails, wrong):
    for place in ["require", "deny_if"]:
        doc = policy({"t": {place: [{"not": cond("args.v", op, operand)}]}})
        engine = make_engine(doc)
        inverted = engine.decide("t", arguments={"v": fails})
        assert inverted.code == ("ALLOWED" if place == "require" else "CONDITION_FAILED")
        assert engine.decide("t", arguments={"v": holds}).code == (
            "CONDITION_FAILED" if place == "require" else "ALLOWED"
        )
        for args in [{}, {"v": wrong}]:
            d = engine.decide("t", arguments=args)
            assert (d.verdict, d.code) == ("DENY", "CONDITION_FAILED"), (place, args)
            assert "cannot be evaluated" in d.reason


def test_exists_never_fails_closed():
    engine = make_engine(require_policy(cond("args.v", "exists")))
    assert engine.decide("t", arguments={"v": None}).code == "ALLOWED"
    assert engine.decide("t", arguments={"v": {"deep": [1]}}).code == "ALLOWED"
    missing = engine.decide("t", arguments={})
    assert missing.code == "CONDITION_FAILED"
    assert "cannot be evaluated" not in missing.reason

    # Under deny_if a missing field simply does not fire.
    guard = make_engine(deny_if_policy(cond("args.v", "exists")))
    assert guard.decide("t", arguments={}).code == "ALLOWED"
    assert guard.decide("t").code == "ALLOWED"
    assert guard.decide("t", arguments={"v": 0}).code == "CONDITION_FAILED"


def test_exists_false_requires_absence():
    engine = make_engine(require_policy(cond("args.debug", "exists", False)))
    assert engine.decide("t", arguments={}).code == "ALLOWED"
    assert engine.decide("t", arguments={"debug": False}).code == "CONDITION_FAILED"


@pytest.mark.parametrize(
    ("operand", "value", "code"),
    [
        (1, 1.0, "ALLOWED"),
        (1.0, 1, "ALLOWED"),
        (0.5, 0.5, "ALLOWED"),
        (10, 10.000001, "CONDITION_FAILED"),
        (5, "5", "CONDITION_FAILED"),  # strings are never coerced
        ("5", 5, "CONDITION_FAILED"),
        (1, True, "CONDITION_FAILED"),  # booleans are not numbers
        (True, 1, "CONDITION_FAILED"),
        (None, None, "ALLOWED"),
        (None, 0, "CONDITION_FAILED"),
        ([1, 2], [1.0, 2], "ALLOWED"),
        ({"a": 1}, {"a": 1.0}, "ALLOWED"),
        ({"a": 1}, [1], "CONDITION_FAILED"),
        (2**53 - 1, 2**53 - 1, "ALLOWED"),  # integers compare exactly
        (2**53 - 1, 2**53 - 2, "CONDITION_FAILED"),
    ],
)
def test_eq_compares_numbers_by_value_and_never_coerces(operand, value, code):
    engine = make_engine(require_policy(cond("args.v", "eq", operand)))
    assert engine.decide("t", arguments={"v": value}).code == code
    # The same through JSON text, which takes the other argument reader.
    assert engine.decide("t", arguments=json.dumps({"v": value})).code == code


@pytest.mark.parametrize("big", [2**53, 2**53 + 1, -(2**53) - 1, 2**64])
@pytest.mark.parametrize(
    ("op", "operand", "value"),
    [
        ("eq", 2**53, lambda n: n),
        ("neq", 2**53, lambda n: n),
        ("lt", 2**53, lambda n: n),
        ("gte", 2**53, lambda n: n),
        ("in", [1, 2**53], lambda n: n),
        ("contains", 1, lambda n: [1, n]),
        ("eq", [2**53], lambda n: [n]),
        ("neq", {"a": 1}, lambda n: {"a": n}),
    ],
    ids=["eq", "neq", "lt", "gte", "in", "contains", "eq-array", "neq-object"],
)
def test_integers_beyond_2_53_are_never_compared(big, op, operand, value):
    """JavaScript, and Go decoding into ``any``, read an integer beyond 2^53 rounded, Python
    exactly: a condition reading one, alone or inside an array or object, cannot be
    evaluated, and JSON text holding one is refused."""
    value = value(big)
    engine = make_engine(require_policy(cond("args.v", op, operand)))
    d = engine.decide("t", arguments={"v": value})
    assert d.code == "CONDITION_FAILED"
    assert "could be read two ways" in d.reason
    with pytest.raises(ValueError, match="beyond 2\\^53"):
        engine.decide("t", arguments=json.dumps({"v": value}))


def test_numeric_comparison_mixes_int_and_float():
    engine = make_engine(require_policy(cond("args.v", "lt", 1000)))
    assert engine.decide("t", arguments={"v": 999.99}).code == "ALLOWED"
    assert engine.decide("t", arguments={"v": 1000.0}).code == "CONDITION_FAILED"
    engine = make_engine(require_policy(cond("args.v", "gte", 0.5)))
    assert engine.decide("t", arguments={"v": 1}).code == "ALLOWED"
    assert engine.decide("t", arguments={"v": 0}).code == "CONDITION_FAILED"


def test_in_with_mixed_types_compares_within_the_type():
    engine = make_engine(require_policy(cond("args.v", "in", ["a", 1])))
    assert engine.decide("t", arguments={"v": "a"}).code == "ALLOWED"
    assert engine.decide("t", arguments={"v": 1.0}).code == "ALLOWED"
    assert engine.decide("t", arguments={"v": "b"}).code == "CONDITION_FAILED"
    mismatch = engine.decide("t", arguments={"v": True})
    assert "cannot be evaluated" in mismatch.reason


def test_regex_is_unanchored_search_and_glob_is_anchored():
    engine = make_engine(require_policy(cond("args.v", "regex", "rm")))
    assert engine.decide("t", arguments={"v": "sudo rm x"}).code == "ALLOWED"
    engine = make_engine(require_policy(cond("args.v", "glob", "rm*")))
    assert engine.decide("t", arguments={"v": "sudo rm x"}).code == "CONDITION_FAILED"


def test_string_ops_on_subject_fields():
    doc = require_policy(cond("subject.agent", "starts_with", "bot-"))
    engine = make_engine(doc)
    assert engine.decide("t", agent="bot-1").code == "ALLOWED"
    assert engine.decide("t", agent="human").code == "CONDITION_FAILED"
    missing = engine.decide("t")
    assert missing.code == "CONDITION_FAILED" and "subject.agent is missing" in missing.reason


def test_numeric_op_on_a_request_string_is_a_type_mismatch():
    engine = make_engine(deny_if_policy(cond("subject.grant", "gt", 5)))
    d = engine.decide("t", grant="7")
    assert (d.verdict, d.code) == ("DENY", "CONDITION_FAILED")
    assert "cannot" in d.reason


# --- combinators -------------------------------------------------------------------------------

FORCE = {"all": [cond("args.force", "exists"), cond("args.force", "eq", True)]}


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        ({}, "ALLOWED"),  # exists fails first: eq is never evaluated
        ({"force": False}, "ALLOWED"),
        ({"force": True}, "CONDITION_FAILED"),
        ({"force": "yes"}, "CONDITION_FAILED"),  # wrong type: fail closed
    ],
)
def test_optional_field_idiom_under_deny_if(arguments, code):
    d = make_engine(deny_if_policy(FORCE)).decide("t", arguments=arguments)
    assert d.code == code
    if code == "CONDITION_FAILED" and arguments["force"] is True:
        assert d.rule == "/tools/t/deny_if/0"


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        ({}, "CONDITION_FAILED"),  # all fails because exists fails
        ({"force": False}, "CONDITION_FAILED"),
        ({"force": True}, "ALLOWED"),
    ],
)
def test_optional_field_idiom_under_require(arguments, code):
    d = make_engine(require_policy(FORCE)).decide("t", arguments=arguments)
    assert d.code == code
    if code == "CONDITION_FAILED":
        assert d.rule == "/tools/t/require/0"
        assert "cannot be evaluated" not in d.reason


def test_any_short_circuits_on_the_first_holding_item():
    doc = require_policy({"any": [cond("args.a", "eq", 1), cond("args.missing", "eq", 2)]})
    engine = make_engine(doc)
    assert engine.decide("t", arguments={"a": 1}).code == "ALLOWED"
    d = engine.decide("t", arguments={"a": 2})  # reaches the missing path
    assert d.code == "CONDITION_FAILED"
    assert d.rule == "/tools/t/require/0/any/1"
    assert "args.missing is missing" in d.reason


def test_all_short_circuits_on_the_first_failing_item():
    doc = deny_if_policy({"all": [cond("args.a", "eq", 1), cond("args.missing", "eq", 2)]})
    engine = make_engine(doc)
    assert engine.decide("t", arguments={"a": 2}).code == "ALLOWED"
    d = engine.decide("t", arguments={"a": 1})
    assert (d.code, d.rule) == ("CONDITION_FAILED", "/tools/t/deny_if/0/all/1")


def test_empty_all_holds_and_empty_any_fails():
    assert make_engine(require_policy({"all": []})).decide("t").code == "ALLOWED"
    assert make_engine(require_policy({"any": []})).decide("t").code == "CONDITION_FAILED"


def test_nested_combinators():
    # deny when env is prod and not (user is admin or the change is a dry run)
    guard = {
        "all": [
            cond("args.env", "eq", "prod"),
            {"not": {"any": [cond("subject.attributes.role", "eq", "admin"), FORCE]}},
        ]
    }
    engine = make_engine(deny_if_policy(guard))
    assert engine.decide("t", arguments={"env": "dev"}).code == "ALLOWED"
    assert engine.decide("t", arguments={"env": "prod"}, attributes={}).code == "CONDITION_FAILED"
    d = engine.decide("t", arguments={"env": "prod"}, attributes={"role": "admin"})
    assert d.code == "ALLOWED"
    d = engine.decide("t", arguments={"env": "prod", "force": True}, attributes={"role": "dev"})
    assert d.code == "ALLOWED"
    d = engine.decide("t", arguments={"env": "prod"}, attributes={"role": "dev"})
    assert (d.code, d.rule) == ("CONDITION_FAILED", "/tools/t/deny_if/0")


# --- conditions: items, groups, reasons --------------------------------------------------------


def test_deny_if_any_item_holding_denies_and_require_all_must_hold():
    doc = policy(
        {
            "t": {
                "deny_if": [cond("args.a", "eq", 1), cond("args.b", "eq", 1)],
                "require": [cond("args.c", "eq", 1), cond("args.d", "eq", 1)],
            }
        }
    )
    engine = make_engine(doc)
    base = {"a": 0, "b": 0, "c": 1, "d": 1}
    assert engine.decide("t", arguments=base).code == "ALLOWED"
    assert engine.decide("t", arguments={**base, "b": 1}).rule == "/tools/t/deny_if/1"
    assert engine.decide("t", arguments={**base, "d": 0}).rule == "/tools/t/require/1"
    # deny_if is checked before require
    assert engine.decide("t", arguments={**base, "a": 1, "c": 0}).rule == "/tools/t/deny_if/0"


def test_rule_reason_is_the_reason_of_a_condition_denial():
    doc = policy({"t": {"reason": "Only USD.", "require": [cond("args.currency", "eq", "USD")]}})
    engine = make_engine(doc)
    assert engine.decide("t", arguments={"currency": "EUR"}).reason == "Only USD."
    missing = engine.decide("t", arguments={})
    assert missing.reason.startswith("Only USD. (")
    assert "args.currency is missing" in missing.reason


def test_deny_if_group_fires_when_all_hold_and_gives_on_deny():
    group = {
        "conditions": [cond("args.env", "eq", "prod"), cond("args.size", "gt", 10)],
        "on_deny": "Big prod changes need a ticket.",
    }
    engine = make_engine(policy({"t": {"reason": "rule reason", "deny_if": [group]}}))
    d = engine.decide("t", arguments={"env": "prod", "size": 11})
    assert (d.code, d.rule, d.reason) == (
        "CONDITION_FAILED",
        "/tools/t/deny_if/0",
        "Big prod changes need a ticket.",
    )
    assert engine.decide("t", arguments={"env": "prod", "size": 10}).code == "ALLOWED"
    # Short-circuit inside the group: size is never read when env differs.
    assert engine.decide("t", arguments={"env": "dev"}).code == "ALLOWED"
    # But a missing value the group reaches fails closed, at the condition's pointer.
    d = engine.decide("t", arguments={"env": "prod"})
    assert (d.code, d.rule) == ("CONDITION_FAILED", "/tools/t/deny_if/0/conditions/1")


def test_empty_deny_if_group_always_fires():
    group = {"conditions": [], "on_deny": "Requires human approval."}
    d = make_engine(policy({"t": {"deny_if": [group]}})).decide("t")
    assert (d.verdict, d.code, d.rule, d.reason) == (
        "DENY",
        "CONDITION_FAILED",
        "/tools/t/deny_if/0",
        "Requires human approval.",
    )


def test_require_group_fails_when_any_condition_fails():
    group = {
        "conditions": [cond("args.a", "eq", 1), cond("args.b", "eq", 1)],
        "on_deny": "a and b must be 1",
    }
    engine = make_engine(policy({"t": {"require": [group]}}))
    assert engine.decide("t", arguments={"a": 1, "b": 1}).code == "ALLOWED"
    d = engine.decide("t", arguments={"a": 1, "b": 2})
    assert (d.code, d.rule, d.reason) == (
        "CONDITION_FAILED",
        "/tools/t/require/0",
        "a and b must be 1",
    )


def test_condition_denials_without_any_reason_say_which_condition():
    group = {"conditions": [cond("args.a", "eq", 1)]}
    doc = policy({"t": {"require": [cond("args.b", "eq", 2)], "deny_if": [group]}})
    engine = make_engine(doc)
    d = engine.decide("t", arguments={"a": 1, "b": 2})
    assert (d.code, d.rule, d.reason) == (
        "CONDITION_FAILED",
        "/tools/t/deny_if/0",
        "denied: conditions of /tools/t/deny_if/0 hold",
    )
    d = engine.decide("t", arguments={"a": 0, "b": 3})
    assert (d.code, d.rule, d.reason) == (
        "CONDITION_FAILED",
        "/tools/t/require/0",
        "denied: condition /tools/t/require/0 does not hold (required)",
    )
    assert engine.decide("t", arguments={"a": 0, "b": 2}).code == "ALLOWED"


def test_group_without_on_deny_uses_the_rule_reason():
    group = {"conditions": [cond("args.a", "eq", 1)]}
    doc = policy({"t": {"reason": "rule says no", "deny_if": [group]}})
    assert make_engine(doc).decide("t", arguments={"a": 1}).reason == "rule says no"


def test_all_tools_conditions_apply_to_every_call():
    doc = policy(
        {"a": {}},
        default="allow",
        all_tools={"deny_if": [cond("subject.attributes.suspended", "eq", "yes")]},
    )
    engine = make_engine(doc)
    for tool in ["a", "b"]:
        assert engine.decide(tool, attributes={"suspended": "no"}).code == "ALLOWED"
        d = engine.decide(tool, attributes={"suspended": "yes"})
        assert (d.code, d.rule) == ("CONDITION_FAILED", "/all_tools/deny_if/0")
        # fail closed: no such attribute at all
        assert engine.decide(tool).code == "CONDITION_FAILED"


# --- paths -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "request_", "code"),
    [
        ("args.a.b", 1, {"arguments": {"a": {"b": 1}}}, "ALLOWED"),
        ("args.a.b", 1, {"arguments": {"a": {"c": 1}}}, "CONDITION_FAILED"),
        ("args.a.b", 1, {"arguments": {"a": 5}}, "CONDITION_FAILED"),  # not an object
        ("args.items[0].name", "x", {"arguments": {"items": [{"name": "x"}]}}, "ALLOWED"),
        ("args.items[1].name", "x", {"arguments": {"items": [{"name": "x"}]}}, "CONDITION_FAILED"),
        ("args.items[0]", 7, {"arguments": {"items": (7, 8)}}, "ALLOWED"),  # tuples are arrays
        ("args.items[0]", 7, {"arguments": {"items": {"0": 7}}}, "CONDITION_FAILED"),
        ('args["key.with.dots"]', 1, {"arguments": {"key.with.dots": 1}}, "ALLOWED"),
        ("args.m[1][0]", 3, {"arguments": {"m": [[1], [3]]}}, "ALLOWED"),
        ("subject.grant", "g1", {"grant": "g1"}, "ALLOWED"),
        ("subject.grant", "g1", {"grant": "g2"}, "CONDITION_FAILED"),
        ("subject.session", "s1", {"session": "s1"}, "ALLOWED"),
        ("subject.agent", "bot", {"agent": "bot"}, "ALLOWED"),
        ("subject.agent", "bot", {"grant": "bot"}, "CONDITION_FAILED"),
        ("subject.attributes.team", "infra", {"attributes": {"team": "infra"}}, "ALLOWED"),
        ("subject.attributes.team", "infra", {"attributes": {"org": "infra"}}, "CONDITION_FAILED"),
        ("server", "github", {"server": "github"}, "ALLOWED"),
        ("server", "github", {}, "CONDITION_FAILED"),
        ("tool", "t", {}, "ALLOWED"),
    ],
)
def test_condition_paths(path, value, request_, code):
    engine = make_engine(require_policy(cond(path, "eq", value)))
    assert engine.decide("t", **request_).code == code


def test_argument_keys_stay_right_across_many_keys_and_policies():
    """The binding remembers argument keys as Python strings per thread (32 of them, by the
    address of the policy's key text). More keys than that, and new policies whose texts
    may reuse freed addresses, must still look up exactly the key the policy names."""
    n = 40

    def doc(shift: int) -> dict[str, Any]:
        return policy(
            {f"t{i}": {"require": [cond(f"args.k{(i + shift) % n}", "eq", i)]} for i in range(n)}
        )

    engine = make_engine(doc(0))
    for shift in (0, 1, 7):
        if shift:
            engine.reload(doc(shift))
        for _ in range(2):
            for i in range(n):
                key = f"k{(i + shift) % n}"
                assert engine.decide(f"t{i}", arguments={key: i}).code == "ALLOWED", (shift, i)
                other = f"k{(i + shift + 1) % n}"
                assert engine.decide(f"t{i}", arguments={other: i}).code == "CONDITION_FAILED"
                assert engine.decide(f"t{i}", arguments={key: i + 1}).code == "CONDITION_FAILED"


def test_tool_path_under_a_glob_rule():
    doc = policy({"db_*": {"deny_if": [cond("tool", "ends_with", "_drop")]}})
    engine = make_engine(doc)
    assert engine.decide("db_read").code == "ALLOWED"
    assert engine.decide("db_table_drop").code == "CONDITION_FAILED"


# --- limits: PolicyLayer's create-ami example --------------------------------------------------


def test_create_ami_thirty_per_minute_per_grant(clock):
    engine = make_engine(toolgate.Policy.from_str(POLICYLAYER_EXAMPLES[0][0]), clock)
    allowed = [engine.decide("create-ami", grant="alice") for _ in range(30)]
    assert all(d.verdict == "ALLOW" and d.code == "ALLOWED" for d in allowed)
    assert [d.limits[0].remaining for d in allowed] == [float(29 - i) for i in range(30)]

    denied = engine.decide("create-ami", grant="alice")
    assert (denied.verdict, denied.code, denied.rule) == (
        "DENY",
        "RATE_LIMITED",
        "/tools/create-ami/limits/0",
    )
    # A minute plus at most one sub-bucket of 5 s.
    assert denied.retry_after_ms is not None
    assert 0 < denied.retry_after_ms <= 65_000
    assert denied.reservation is None
    assert "create-ami_rate" in denied.reason
    (state,) = denied.limits
    assert (state.counter, state.remaining, state.max) == ("create-ami_rate", 0.0, 30.0)

    # Another grant has its own counter.
    assert engine.decide("create-ami", grant="bob").code == "ALLOWED"

    # Still full just before the retry-after, free again at it.
    clock.advance((denied.retry_after_ms - 1) / 1000)
    assert engine.decide("create-ami", grant="alice").code == "RATE_LIMITED"
    clock.advance(0.001)
    assert engine.decide("create-ami", grant="alice").code == "ALLOWED"


def test_limit_state_entries(clock):
    doc = policy({"t": {"limits": [limit("per_min", 3), limit("per_hour", 5, window="hour")]}})
    engine = make_engine(doc, clock)
    d = engine.decide("t", grant="g")
    assert [s.counter for s in d.limits] == ["per_min", "per_hour"]
    assert [s.rule for s in d.limits] == ["/tools/t/limits/0", "/tools/t/limits/1"]
    assert [s.scope for s in d.limits] == ["grant", "grant"]
    assert [s.max for s in d.limits] == [3.0, 5.0]
    assert [s.remaining for s in d.limits] == [2.0, 4.0]
    assert 60_000 <= d.limits[0].reset_in_ms <= 65_000
    assert 3_600_000 <= d.limits[1].reset_in_ms <= 3_900_000
    assert d.limits[0].to_dict() == {
        "counter": "per_min",
        "rule": "/tools/t/limits/0",
        "scope": "grant",
        "max": 3.0,
        "window_ms": 60_000,
        "remaining": 2.0,
        "reset_in_ms": d.limits[0].reset_in_ms,
    }
    clock.advance(10)
    probe = engine.decide("t", grant="g", dry_run=True)
    assert [s.remaining for s in probe.limits] == [1.0, 3.0]
    # the one call counted leaves the window 60 s (plus at most a 5 s sub-bucket) after it
    assert 50_000 <= probe.limits[0].reset_in_ms <= 55_000
    d = engine.decide("t", grant="g")
    assert [s.remaining for s in d.limits] == [1.0, 3.0]


def test_window_slides_rather_than_resetting(clock):
    engine = make_engine(policy({"t": {"limits": [limit("c", 4)]}}), clock)
    for _ in range(2):
        assert engine.decide("t", grant="g").allowed
    clock.advance(30)
    for _ in range(2):
        assert engine.decide("t", grant="g").allowed
    clock.advance(30)
    # 60 s after the first two they may still count (for up to one 5 s sub-bucket) ...
    assert engine.decide("t", grant="g", dry_run=True).code == "RATE_LIMITED"
    clock.advance(5)
    # ... 65 s after, they have left; the later two still count.
    d = engine.decide("t", grant="g")
    assert d.allowed and d.limits[0].remaining == 1.0
    assert engine.decide("t", grant="g").allowed
    assert engine.decide("t", grant="g").code == "RATE_LIMITED"


@pytest.mark.parametrize(
    ("scope", "request_", "other"),
    [
        ("grant", {"grant": "a"}, {"grant": "b"}),
        ("session", {"session": "a"}, {"session": "b"}),
        ("agent", {"agent": "a"}, {"agent": "b"}),
        ("server", {"server": "a"}, {"server": "b"}),
        ("global", {"grant": "a"}, None),
    ],
)
def test_scopes_key_the_counter(scope, request_, other):
    engine = make_engine(policy({"t": {"limits": [limit("c", 2, scope=scope)]}}))
    assert codes([engine.decide("t", **request_) for _ in range(3)]) == [
        "ALLOWED",
        "ALLOWED",
        "RATE_LIMITED",
    ]
    if other is None:  # global: everyone shares it
        assert engine.decide("t", grant="zzz").code == "RATE_LIMITED"
    else:
        assert engine.decide("t", **other).code == "ALLOWED"


def test_server_scope_without_a_server_counts_on_one_key():
    engine = make_engine(policy({"t": {"limits": [limit("c", 1, scope="server")]}}))
    assert engine.decide("t").code == "ALLOWED"
    assert engine.decide("t").code == "RATE_LIMITED"


def test_two_tools_sharing_a_counter():
    shared = limit("writes", 5)
    engine = make_engine(policy({"a": {"limits": [shared]}, "b": {"limits": [dict(shared)]}}))
    assert codes([engine.decide("a", grant="g") for _ in range(3)]) == ["ALLOWED"] * 3
    assert codes([engine.decide("b", grant="g") for _ in range(3)]) == [
        "ALLOWED",
        "ALLOWED",
        "RATE_LIMITED",
    ]
    assert engine.decide("a", grant="g").code == "RATE_LIMITED"


def test_limit_by_grant_without_grant_is_an_invalid_request():
    engine = make_engine(policy({"t": {"limits": [limit("c", 5)]}}))
    for request_ in [{}, {"grant": ""}, {"agent": "a", "session": "s"}]:
        d = engine.decide("t", **request_)
        assert (d.verdict, d.code, d.rule) == ("DENY", "INVALID_REQUEST", "/tools/t/limits/0")
        assert "grant" in d.reason
    assert engine.decide("t", grant="g").limits[0].remaining == 4.0


def test_limits_of_a_default_allowed_tool_come_from_all_tools():
    doc = policy({}, default="allow", all_tools={"limits": [limit("all", 2, scope="session")]})
    engine = make_engine(doc)
    assert codes([engine.decide(t, session="s") for t in ["x", "y", "z"]]) == [
        "ALLOWED",
        "ALLOWED",
        "RATE_LIMITED",
    ]


def test_full_counter_table_fails_closed():
    engine = make_engine(policy({"t": {"limits": [limit("c", 5)]}}), capacity=1)
    assert engine.decide("t", grant="a").code == "ALLOWED"
    d = engine.decide("t", grant="b")
    assert (d.verdict, d.code) == ("DENY", "RATE_LIMITED")
    assert "table is full" in d.reason
    assert engine.stats()["table_full"] == 1


# --- spend limits ------------------------------------------------------------------------------

SPEND = policy(
    {"pay": {"limits": [limit("spend", 500, window="day", scope="agent", cost="args.amount")]}}
)


def test_spend_limit_counts_the_cost():
    engine = make_engine(SPEND)
    d = engine.decide("pay", agent="a", arguments={"amount": 300})
    assert (d.code, d.limits[0].remaining) == ("ALLOWED", 200.0)
    d = engine.decide("pay", agent="a", arguments={"amount": 200})
    assert (d.code, d.limits[0].remaining) == ("ALLOWED", 0.0)
    d = engine.decide("pay", agent="a", arguments={"amount": 1})
    assert (d.verdict, d.code) == ("DENY", "RATE_LIMITED")
    assert d.retry_after_ms is not None and d.retry_after_ms > 0
    assert "calls" not in d.reason  # a budget, not a number of calls
    # a zero cost still fits
    assert engine.decide("pay", agent="a", arguments={"amount": 0}).code == "ALLOWED"


def test_a_cost_the_servers_could_read_otherwise_spends_nothing():
    """A cost path into a value that is not JSON (the SDK writes a dataclass out as an
    object), beside a case variant, or beyond 2^53 denies without counting."""
    import dataclasses

    @dataclasses.dataclass
    class Order:
        amount: int

    doc = policy(
        {"pay": {"limits": [limit("s", 500, window="day", scope="agent", cost="args.o.amount")]}}
    )
    engine = make_engine(doc)
    for arguments, why in (
        ({"o": Order(amount=900)}, "runs into a value that is not JSON"),
        ({"o": {"amount": 1, "Amount": 900}}, "cannot be read one way"),
        ({"o": {"amount": 2**64 + 1}}, "too large"),
    ):
        d = engine.decide("pay", agent="a", arguments=arguments)
        assert (d.verdict, d.code) == ("DENY", "INVALID_REQUEST"), arguments
        assert why in d.reason, d.reason
    d = engine.decide("pay", agent="a", arguments={"o": {"amount": 500}})
    assert (d.code, d.limits[0].remaining) == ("ALLOWED", 0.0)


def test_spend_limit_fractional_amounts():
    engine = make_engine(SPEND)
    d = engine.decide("pay", agent="a", arguments={"amount": 0.5})
    assert d.limits[0].remaining == 499.5
    d = engine.decide("pay", agent="a", arguments={"amount": 499.25})
    assert d.limits[0].remaining == 0.25
    assert engine.decide("pay", agent="a", arguments={"amount": 0.5}).code == "RATE_LIMITED"
    assert engine.decide("pay", agent="a", arguments={"amount": 0.25}).code == "ALLOWED"


def test_spend_amounts_are_exact_to_a_thousandth():
    """Costs are fixed-point thousandths (docs/counters.md): 2.007 counts 2007, not the 2008
    that ceil(2.007 * 1000.0) gives in floating point."""
    engine = make_engine(SPEND)
    d = engine.decide("pay", agent="a", arguments={"amount": 497.993})
    assert (d.code, d.limits[0].remaining) == ("ALLOWED", 2.007)
    d = engine.decide("pay", agent="a", arguments={"amount": 2.007})
    assert (d.code, d.limits[0].remaining) == ("ALLOWED", 0.0)


def test_fractional_budget_is_never_exceeded():
    """A budget of 2.007 must not admit a cost of 2.008."""
    doc = policy(
        {"pay": {"limits": [limit("s", 2.007, window="day", scope="agent", cost="args.amount")]}}
    )
    d = make_engine(doc).decide("pay", agent="a", arguments={"amount": 2.008})
    assert (d.verdict, d.code) == ("DENY", "RATE_LIMITED")


def test_cost_larger_than_the_limit_is_never_allowed():
    d = make_engine(SPEND).decide("pay", agent="a", arguments={"amount": 501})
    assert (d.code, d.retry_after_ms) == ("RATE_LIMITED", None)


@pytest.mark.parametrize(
    "arguments",
    [
        {"amount": -1},
        {"amount": -0.01},
        {},
        {"amount": "10"},
        {"amount": True},
        {"amount": None},
        {"amount": float("nan")},
        {"amount": float("inf")},
        {"amount": [1]},
        None,
    ],
    ids=[
        "negative",
        "negative-fraction",
        "missing",
        "string",
        "bool",
        "null",
        "nan",
        "infinite",
        "array",
        "no-arguments",
    ],
)
def test_bad_cost_is_an_invalid_request_and_consumes_nothing(arguments):
    engine = make_engine(SPEND)
    d = engine.decide("pay", agent="a", arguments=arguments)
    assert (d.verdict, d.code, d.rule) == ("DENY", "INVALID_REQUEST", "/tools/pay/limits/0/cost")
    assert d.reservation is None
    assert "args.amount" in d.reason
    check = engine.decide("pay", agent="a", arguments={"amount": 500})
    assert (check.code, check.limits[0].remaining) == ("ALLOWED", 0.0)


def test_spend_limit_in_the_example_policy():
    engine = make_engine(EXAMPLES / "policy.json")
    d = engine.decide("transfer_funds", grant="bot-1", arguments={"amount": 250, "currency": "USD"})
    assert (d.verdict, d.code, d.rule) == ("ALLOW", "ALLOWED", "/tools/transfer_funds")
    assert d.limits[0].remaining == 4750.0
    assert engine.release(d.reservation) is True
    d = engine.decide(
        "transfer_funds", grant="bot-1", arguments={"amount": 1000, "currency": "USD"}
    )
    assert (d.code, d.rule) == ("CONDITION_FAILED", "/tools/transfer_funds/require/1")


# --- all or nothing ----------------------------------------------------------------------------


def all_or_nothing_policy(tool_max: int, all_max: int) -> dict[str, Any]:
    return policy(
        {"t": {"limits": [limit("tool_c", tool_max)]}, "u": {}},
        all_tools={"limits": [limit("all_c", all_max, scope="global")]},
    )


def test_full_tool_limit_does_not_consume_all_tools():
    engine = make_engine(all_or_nothing_policy(tool_max=2, all_max=5))
    assert codes([engine.decide("t", grant="g") for _ in range(3)]) == [
        "ALLOWED",
        "ALLOWED",
        "RATE_LIMITED",
    ]
    denied = engine.decide("t", grant="g")
    assert denied.rule == "/tools/t/limits/0"
    assert {s.counter: s.remaining for s in denied.limits} == {"tool_c": 0.0, "all_c": 3.0}
    probe = engine.decide("u", dry_run=True)
    assert probe.limits[0].remaining == 2.0  # 5 - 2 used - this call
    assert codes([engine.decide("u") for _ in range(4)]) == ["ALLOWED"] * 3 + ["RATE_LIMITED"]


def test_full_all_tools_limit_gives_back_the_tool_limit():
    engine = make_engine(all_or_nothing_policy(tool_max=10, all_max=3))
    reservations = [engine.decide("u").reservation for _ in range(3)]
    for _ in range(4):
        d = engine.decide("t", grant="g")
        assert (d.code, d.rule) == ("RATE_LIMITED", "/all_tools/limits/0")
    for r in reservations:
        assert engine.release(r)
    d = engine.decide("t", grant="g")
    assert d.code == "ALLOWED"
    assert {s.counter: s.remaining for s in d.limits} == {"tool_c": 9.0, "all_c": 2.0}


def test_retry_after_is_the_longest_wait_among_full_limits(clock):
    doc = policy({"t": {"limits": [limit("m", 1, window="minute"), limit("h", 1, window="hour")]}})
    engine = make_engine(doc, clock)
    assert engine.decide("t", grant="g").allowed
    d = engine.decide("t", grant="g")
    assert d.code == "RATE_LIMITED"
    assert 3_600_000 <= d.retry_after_ms <= 3_900_000


# --- reservations and release ------------------------------------------------------------------


def test_release_gives_counts_back_once():
    engine = make_engine(policy({"t": {"limits": [limit("c", 2)]}}))
    first = engine.decide("t", grant="g")
    second = engine.decide("t", grant="g")
    assert first.reservation is not None and second.reservation is not None
    assert first.reservation != second.reservation
    assert engine.decide("t", grant="g").code == "RATE_LIMITED"

    assert engine.release(first.reservation) is True
    assert engine.release(first.reservation) is False
    d = engine.decide("t", grant="g")
    assert (d.code, d.limits[0].remaining) == ("ALLOWED", 0.0)
    assert engine.decide("t", grant="g").code == "RATE_LIMITED"


def test_release_of_a_spend_gives_the_amount_back():
    engine = make_engine(SPEND)
    d = engine.decide("pay", agent="a", arguments={"amount": 450})
    assert engine.release(d.reservation)
    d = engine.decide("pay", agent="a", arguments={"amount": 500})
    assert (d.code, d.limits[0].remaining) == ("ALLOWED", 0.0)


def test_release_of_unknown_ids_is_false():
    engine = make_engine(policy({"t": {"limits": [limit("c", 2)]}}))
    assert engine.release(0) is False
    assert engine.release(123_456_789) is False
    d = engine.decide("t", grant="g")
    assert engine.release(d.reservation + 1) is False
    assert engine.release(d.reservation) is True


def test_decisions_without_limits_reserve_nothing():
    engine = make_engine(policy({"t": {}}))
    assert engine.decide("t").reservation is None


def test_old_reservations_are_refused_once_the_log_wraps():
    engine = make_engine(policy({"t": {"limits": [limit("c", 100)]}}), reservations=2)
    old = engine.decide("t", grant="g").reservation
    for _ in range(3):
        engine.decide("t", grant="g")
    assert engine.release(old) is False


# --- dry run -----------------------------------------------------------------------------------


def test_dry_run_does_not_consume():
    engine = make_engine(policy({"t": {"limits": [limit("c", 2)]}}))
    for _ in range(5):
        d = engine.decide("t", grant="g", dry_run=True)
        assert (d.code, d.reservation, d.limits[0].remaining) == ("ALLOWED", None, 1.0)
    assert codes([engine.decide("t", grant="g") for _ in range(3)]) == [
        "ALLOWED",
        "ALLOWED",
        "RATE_LIMITED",
    ]
    d = engine.decide("t", grant="g", dry_run=True)
    assert (d.code, d.limits[0].remaining) == ("RATE_LIMITED", 0.0)
    assert d.retry_after_ms is not None and d.retry_after_ms > 0


def test_dry_run_still_evaluates_conditions():
    engine = make_engine(require_policy(cond("args.x", "eq", 1)))
    assert engine.decide("t", arguments={"x": 2}, dry_run=True).code == "CONDITION_FAILED"


# --- shadow mode -------------------------------------------------------------------------------


def test_top_level_shadow_reports_what_enforce_would_do():
    doc = policy({"t": {"limits": [limit("c", 1)]}, "x": {"action": "deny"}}, mode="shadow")
    engine = make_engine(doc)
    cases = {
        "unknown": "DEFAULT_DENY",
        "x": "RULE_DENY",
    }
    for tool, code in cases.items():
        d = engine.decide(tool, grant="g")
        assert (d.verdict, d.code, d.shadow) == ("ALLOW", code, True)
        assert d.allowed
    first = engine.decide("t", grant="g")
    assert (first.verdict, first.code, first.shadow) == ("ALLOW", "ALLOWED", True)
    second = engine.decide("t", grant="g")
    assert (second.verdict, second.code, second.shadow) == ("ALLOW", "RATE_LIMITED", True)
    assert second.retry_after_ms is not None


def test_shadow_hidden_and_condition_failed():
    doc = policy({"t": {"require": [cond("args.ok", "eq", True)]}}, mode="shadow", hide=["h*"])
    engine = make_engine(doc)
    d = engine.decide("hidden")
    assert (d.verdict, d.code, d.shadow, d.rule) == ("ALLOW", "HIDDEN", True, "/hide/0")
    d = engine.decide("t", arguments={})
    assert (d.verdict, d.code, d.shadow) == ("ALLOW", "CONDITION_FAILED", True)


def test_per_rule_shadow_in_an_enforcing_policy():
    doc = policy(
        {
            "new_rule": {"mode": "shadow", "action": "deny", "reason": "trying it out"},
            "limited": {"mode": "shadow", "limits": [limit("c", 1)]},
            "enforced": {"action": "deny"},
        }
    )
    engine = make_engine(doc)
    d = engine.decide("new_rule")
    assert (d.verdict, d.code, d.shadow, d.reason) == ("ALLOW", "RULE_DENY", True, "trying it out")
    engine.decide("limited", grant="g")
    d = engine.decide("limited", grant="g")
    assert (d.verdict, d.code, d.shadow) == ("ALLOW", "RATE_LIMITED", True)
    d = engine.decide("enforced")
    assert (d.verdict, d.code, d.shadow) == ("DENY", "RULE_DENY", False)
    d = engine.decide("unknown")
    assert (d.verdict, d.code, d.shadow) == ("DENY", "DEFAULT_DENY", False)


def test_per_rule_enforce_inside_a_shadow_policy():
    doc = policy({"strict": {"mode": "enforce", "action": "deny"}}, mode="shadow")
    d = make_engine(doc).decide("strict")
    assert (d.verdict, d.code, d.shadow) == ("DENY", "RULE_DENY", False)


def test_shadow_require_approval_runs_and_consumes():
    doc = policy({"t": {"action": "require_approval", "limits": [limit("c", 1)]}}, mode="shadow")
    engine = make_engine(doc)
    d = engine.decide("t", grant="g")
    assert (d.verdict, d.code, d.shadow) == ("ALLOW", "APPROVAL_REQUIRED", True)
    assert d.reservation is not None  # the call runs now, so it counts now
    d = engine.decide("t", grant="g")
    assert (d.verdict, d.code, d.shadow) == ("ALLOW", "RATE_LIMITED", True)


# A rule in shadow mode reports what it would do; it must not switch off the rules beside it
# that enforce. Each case: policy, request, calls made, how many of them the enforcing rule
# allows, and the enforcing rule that must deny the rest.
SHADOW_BESIDE_ENFORCE = {
    "shadow-tool-deny-vs-enforced-all-tools-deny": (
        policy({"t": {"mode": "shadow", "action": "deny"}}, all_tools={"action": "deny"}),
        {},
        1,
        0,
        "/all_tools",
    ),
    "shadow-tool-condition-vs-enforced-all-tools-condition": (
        policy(
            {"t": {"mode": "shadow", "require": [cond("args.x", "eq", 1)]}},
            all_tools={"require": [cond("args.y", "eq", 1)]},
        ),
        {"arguments": {"x": 0, "y": 0}},
        1,
        0,
        "/all_tools/require/0",
    ),
    "shadow-tool-condition-vs-enforced-all-tools-limit": (
        policy(
            {"t": {"mode": "shadow", "deny_if": [{"conditions": []}]}},
            all_tools={"limits": [limit("all", 1, scope="global")]},
        ),
        {},
        3,
        1,
        "/all_tools/limits/0",
    ),
    "shadow-tool-limit-vs-enforced-all-tools-limit": (
        policy(
            {"t": {"mode": "shadow", "limits": [limit("own", 1)]}},
            all_tools={"limits": [limit("all", 3, scope="global")]},
        ),
        {"grant": "g"},
        5,
        3,
        "/all_tools/limits/0",
    ),
    "shadow-all-tools-limit-vs-enforced-tool-limit": (
        policy(
            {"t": {"limits": [limit("own", 2)]}},
            all_tools={"mode": "shadow", "limits": [limit("all", 1, scope="global")]},
        ),
        {"grant": "g"},
        4,
        2,
        "/tools/t/limits/0",
    ),
}


@pytest.mark.parametrize(
    ("doc", "request_", "calls", "allowed", "rule"),
    SHADOW_BESIDE_ENFORCE.values(),
    ids=SHADOW_BESIDE_ENFORCE.keys(),
)
def test_a_shadow_rule_does_not_bypass_an_enforcing_rule(doc, request_, calls, allowed, rule):
    engine = make_engine(doc)
    decisions = [engine.decide("t", **request_) for _ in range(calls)]
    summary = [(d.verdict, d.code, d.rule, d.shadow) for d in decisions]
    assert [d.verdict for d in decisions] == ["ALLOW"] * allowed + ["DENY"] * (calls - allowed), (
        summary
    )
    for d in decisions[allowed:]:
        assert (d.rule, d.shadow) == (rule, False), summary


def test_invalid_requests_are_refused_even_in_shadow_mode():
    doc = policy({"t": {"limits": [limit("c", 1)]}}, mode="shadow")
    d = make_engine(doc).decide("t")  # no grant
    assert (d.verdict, d.code, d.shadow) == ("DENY", "INVALID_REQUEST", False)


def test_shadow_decisions_are_counted():
    engine = make_engine(policy({}, mode="shadow"))
    engine.decide("a")
    engine.decide("b")
    stats = engine.stats()
    assert stats["shadow"] == 2
    assert stats["decisions"]["DEFAULT_DENY"] == 2


# --- require approval --------------------------------------------------------------------------


def test_require_approval():
    doc = policy({"terminate": {"action": "require_approval", "reason": "A human must approve."}})
    d = make_engine(doc).decide("terminate")
    assert (d.verdict, d.code, d.rule, d.reason) == (
        "REQUIRE_APPROVAL",
        "APPROVAL_REQUIRED",
        "/tools/terminate",
        "A human must approve.",
    )
    assert not d.allowed and d.reservation is None


def test_require_approval_does_not_consume_counters():
    shared = limit("ops", 2)
    doc = policy(
        {
            "terminate": {"action": "require_approval", "limits": [shared]},
            "reboot": {"limits": [dict(shared)]},
        }
    )
    engine = make_engine(doc)
    for _ in range(5):
        d = engine.decide("terminate", grant="g")
        assert (d.code, d.reservation) == ("APPROVAL_REQUIRED", None)
        assert d.limits[0].remaining == 1.0  # what it would leave; nothing taken
    d = engine.decide("reboot", grant="g")
    assert (d.code, d.limits[0].remaining) == ("ALLOWED", 1.0)


def test_require_approval_of_a_full_limit_is_rate_limited():
    doc = policy(
        {
            "t": {"action": "require_approval", "limits": [limit("c", 1)]},
            "u": {"limits": [limit("c", 1)]},
        }
    )
    engine = make_engine(doc)
    assert engine.decide("u", grant="g").code == "ALLOWED"
    assert engine.decide("t", grant="g").code == "RATE_LIMITED"


def test_conditions_are_checked_before_approval():
    doc = policy({"t": {"action": "require_approval", "deny_if": [cond("args.x", "eq", 1)]}})
    engine = make_engine(doc)
    assert engine.decide("t", arguments={"x": 1}).code == "CONDITION_FAILED"
    assert engine.decide("t", arguments={"x": 2}).code == "APPROVAL_REQUIRED"


def test_all_tools_require_approval_applies_to_every_call():
    doc = policy({"a": {}}, all_tools={"action": "require_approval"})
    d = make_engine(doc).decide("a")
    assert (d.code, d.rule) == ("APPROVAL_REQUIRED", "/all_tools")


def test_approval_section_is_accepted():
    doc = policy(
        {"t": {"action": "require_approval", "approval": {"timeout": "10m", "approvers": ["ops"]}}}
    )
    assert make_engine(doc).decide("t").code == "APPROVAL_REQUIRED"


# --- reload ------------------------------------------------------------------------------------


def test_reload_keeps_counters(clock):
    engine = make_engine(policy({"t": {"limits": [limit("c", 10)]}}), clock)
    before = engine.revision
    assert codes([engine.decide("t", grant="g") for _ in range(10)]) == ["ALLOWED"] * 10

    new_doc = policy({"t": {"limits": [limit("c", 15)]}, "other": {}})
    revision = engine.reload(new_doc)
    assert revision == engine.revision != before
    assert revision == toolgate.Policy.from_dict(new_doc).revision

    d = engine.decide("t", grant="g")
    assert (d.code, d.limits[0].remaining, d.revision) == ("ALLOWED", 4.0, revision)
    assert codes([engine.decide("t", grant="g") for _ in range(5)]) == ["ALLOWED"] * 4 + [
        "RATE_LIMITED"
    ]
    assert engine.decide("other").code == "ALLOWED"


def test_reload_with_a_different_window_starts_a_new_counter():
    engine = make_engine(policy({"t": {"limits": [limit("c", 2)]}}))
    engine.decide("t", grant="g")
    engine.decide("t", grant="g")
    engine.reload(policy({"t": {"limits": [limit("c", 2, window="hour")]}}))
    assert engine.decide("t", grant="g").limits[0].remaining == 1.0


def test_reload_of_an_invalid_policy_keeps_the_old_one():
    engine = make_engine(policy({"t": {"limits": [limit("c", 3)]}}))
    engine.decide("t", grant="g")
    revision = engine.revision
    bad = policy({"t": {"limits": [limit("c", 3, window="fortnight")]}}, default="allow")
    with pytest.raises(toolgate.PolicyError) as info:
        engine.reload(bad)
    assert [e.pointer for e in info.value.errors] == ["/tools/t/limits/0/window"]
    assert engine.revision == revision
    assert engine.policy.revision == revision
    d = engine.decide("t", grant="g")
    assert (d.code, d.limits[0].remaining, d.revision) == ("ALLOWED", 1.0, revision)
    assert engine.decide("unknown").code == "DEFAULT_DENY"


def test_reload_from_a_policy_object_and_a_path(tmp_path):
    engine = make_engine(policy({}))
    p = toolgate.Policy.from_dict(policy({"a": {}}))
    assert engine.reload(p) == p.revision
    assert engine.decide("a").code == "ALLOWED"
    path = tmp_path / "p.yaml"
    path.write_text('version: "1"\ndefault: allow\n')
    engine.reload(path)
    assert engine.decide("zzz").code == "ALLOWED"
    engine.reload(str(path))
    assert engine.revision == toolgate.Policy.from_file(path).revision


def test_reload_of_a_missing_file_keeps_the_old_policy(tmp_path):
    engine = make_engine(policy({"a": {}}))
    revision = engine.revision
    with pytest.raises(toolgate.PolicyError):
        engine.reload(tmp_path / "missing.json")
    assert engine.revision == revision
    assert engine.decide("a").code == "ALLOWED"


# --- servers -----------------------------------------------------------------------------------

SERVERS = policy(
    {"shared": {}},
    servers={
        "github": {"default": "allow", "tools": {"github.delete_*": {"action": "deny"}}},
        "sandbox": {"mode": "shadow"},
        "locked": {"default": "deny", "hide": ["shared"]},
    },
)


@pytest.mark.parametrize(
    ("server", "tool", "verdict", "code", "rule"),
    [
        ("github", "github.create_issue", "ALLOW", "ALLOWED", "/servers/github/default"),
        (
            "github",
            "github.delete_repo",
            "DENY",
            "RULE_DENY",
            "/servers/github/tools/github.delete_*",
        ),
        ("github", "shared", "ALLOW", "ALLOWED", "/servers/github/default"),  # top level not used
        ("sandbox", "anything", "ALLOW", "DEFAULT_DENY", "/servers/sandbox/default"),
        ("locked", "shared", "DENY", "HIDDEN", "/servers/locked/hide/0"),
        ("elsewhere", "shared", "ALLOW", "ALLOWED", "/tools/shared"),  # no section: top level
        ("elsewhere", "github.create_issue", "DENY", "DEFAULT_DENY", "/default"),
        (None, "shared", "ALLOW", "ALLOWED", "/tools/shared"),
    ],
)
def test_server_sections(server, tool, verdict, code, rule):
    d = make_engine(SERVERS).decide(tool, server=server)
    assert (d.verdict, d.code, d.rule) == (verdict, code, rule)


def test_server_list_of_a_policy():
    assert toolgate.Policy.from_dict(SERVERS).servers == ["github", "sandbox", "locked"]


def test_the_example_yaml_policy_servers_share_a_counter():
    engine = make_engine(EXAMPLES / "policy.yaml")
    d = engine.decide("github.create_pr", server="github", grant="g")
    assert (d.code, d.rule, d.limits[0].counter) == (
        "ALLOWED",
        "/servers/github/tools/github.*",
        "github_writes",
    )
    d = engine.decide("create_issue", grant="g", session="s", arguments={"repo": "dev/x"})
    assert d.code == "ALLOWED"
    assert {s.counter: s.remaining for s in d.limits} == {"github_writes": 48.0, "all_calls": 99.0}
    d = engine.decide("anything", server="sandbox")
    assert (d.verdict, d.code, d.shadow) == ("ALLOW", "DEFAULT_DENY", True)


# --- malformed requests and arguments ----------------------------------------------------------


def test_empty_tool_name_is_an_invalid_request():
    d = make_engine(policy({}, default="allow")).decide("")
    assert (d.verdict, d.code, d.rule) == ("DENY", "INVALID_REQUEST", "")


@pytest.mark.parametrize(
    "arguments",
    ['{"amount": 300, "currency": "USD"}', b'{"amount": 300, "currency": "USD"}'],
    ids=["str", "bytes"],
)
def test_arguments_as_json_text(arguments):
    doc = policy(
        {
            "pay": {
                "require": [cond("args.currency", "eq", "USD")],
                "limits": [limit("spend", 500, scope="agent", cost="args.amount")],
            }
        }
    )
    engine = make_engine(doc)
    d = engine.decide("pay", agent="a", arguments=arguments)
    assert (d.code, d.limits[0].remaining) == ("ALLOWED", 200.0)
    d = engine.decide("pay", agent="a", arguments=arguments)
    assert d.code == "RATE_LIMITED"


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ("not json", ValueError),
        (b"{", ValueError),
        ("[1, 2]", ValueError),
        ('"text"', ValueError),
        ("null", ValueError),
        (5, TypeError),
        ([("a", 1)], TypeError),
        (object(), TypeError),
    ],
)
def test_arguments_that_are_not_a_json_object_raise(arguments, error):
    engine = make_engine(policy({"t": {}}))
    with pytest.raises(error):
        engine.decide("t", arguments=arguments)


def test_attributes_must_map_strings_to_strings():
    engine = make_engine(policy({"t": {}}))
    with pytest.raises(TypeError):
        engine.decide("t", attributes={"team": 5})
    with pytest.raises(TypeError):
        engine.decide("t", attributes={1: "x"})


def test_decision_to_dict_matches_its_attributes():
    engine = make_engine(policy({"t": {"limits": [limit("c", 3)]}}))
    d = engine.decide("t", grant="g")
    assert d.to_dict() == {
        "verdict": "ALLOW",
        "code": "ALLOWED",
        "reason": d.reason,
        "rule": "/tools/t",
        "retry_after_ms": None,
        "limits": [d.limits[0].to_dict()],
        "revision": engine.revision,
        "shadow": False,
        "reservation": d.reservation,
        "approval_id": None,
        "marks": None,
    }
    assert json.loads(json.dumps(d.to_dict())) == d.to_dict()


# --- revisions ---------------------------------------------------------------------------------


def test_revision_is_stable_for_the_same_document_and_changes_with_it():
    doc = policy({"t": {"limits": [limit("c", 3)]}})
    a = toolgate.Policy.from_dict(doc)
    b = toolgate.Policy.from_dict(json.loads(json.dumps(doc)))
    assert a.revision == b.revision == make_engine(doc).revision
    assert len(a.revision) == 16 and int(a.revision, 16) >= 0
    changed = policy({"t": {"limits": [limit("c", 4)]}})
    assert toolgate.Policy.from_dict(changed).revision != a.revision
    d = make_engine(doc).decide("t", grant="g")
    assert d.revision == a.revision


def test_revision_ignores_whitespace_and_comments():
    a = toolgate.Policy.from_str('{"version": "1", "tools": {"x": {}}}')
    b = toolgate.Policy.from_str('{\n  "version":"1",\n  "tools":{"x":{}}\n}\n')
    c = toolgate.Policy.from_str("# a comment\nversion: '1'\ntools:\n  x: {}\n")
    assert a.revision == b.revision == c.revision


# --- PolicyLayer's example policies ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tool", "counter", "max_"), POLICYLAYER_EXAMPLES, ids=POLICYLAYER_TOOLS
)
def test_policylayer_example_policy_decisions(clock, text, tool, counter, max_):
    engine = make_engine(toolgate.Policy.from_str(text), clock)
    decisions = [engine.decide(tool, grant="g1") for _ in range(max_ + 1)]
    assert codes(decisions) == ["ALLOWED"] * max_ + ["RATE_LIMITED"]
    assert decisions[0].rule == f"/tools/{tool}"
    last = decisions[-1]
    assert (last.verdict, last.rule) == ("DENY", f"/tools/{tool}/limits/0")
    assert last.limits[0].counter == counter
    assert 0 < last.retry_after_ms <= 65_000
    assert engine.decide(tool, grant="g2").code == "ALLOWED"
    assert engine.decide(tool).code == "INVALID_REQUEST"  # scope grant: a grant is needed
    for other in [
        *[t for t in POLICYLAYER_TOOLS if t != tool],
        "list_buckets",
        "delete_everything",
    ]:
        d = engine.decide(other, grant="g1")
        assert (d.verdict, d.code, d.rule) == ("DENY", "DEFAULT_DENY", "/default")
    clock.advance(last.retry_after_ms / 1000)
    assert engine.decide(tool, grant="g1").code == "ALLOWED"


def test_policylayer_example_policies_from_a_dict_and_yaml_decide_alike():
    for text, tool, counter, max_ in POLICYLAYER_EXAMPLES:
        yaml_text = (
            f'version: "1"\ndefault: deny\ntools:\n  {tool}:\n    limits:\n'
            f"      - {{counter: {counter}, window: minute, max: {max_}, scope: grant}}\n"
        )
        for source in [json.loads(text), toolgate.Policy.from_str(yaml_text)]:
            engine = make_engine(source)
            got = codes([engine.decide(tool, grant="g") for _ in range(max_ + 1)])
            assert got == ["ALLOWED"] * max_ + ["RATE_LIMITED"]


# --- concurrency -------------------------------------------------------------------------------


def test_threads_on_one_key_get_exactly_max():
    engine = make_engine(policy({"t": {"limits": [limit("c", 100)]}}))
    barrier = threading.Barrier(8)
    allowed = [0] * 8

    def hammer(i: int) -> None:
        barrier.wait()
        for _ in range(50):
            if engine.decide("t", grant="shared").allowed:
                allowed[i] += 1

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 100
    assert engine.stats()["decisions"]["RATE_LIMITED"] == 300


def test_manual_clock():
    clock = toolgate.ManualClock(START)
    assert clock.now == START
    clock.advance(1.5)
    assert clock.now == START + 1.5
    with pytest.raises(ValueError):
        clock.advance(-1)
