"""Policy validation: every kind of error raises PolicyError listing every problem, each with
its exact JSON pointer and, for text and files, its line."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest
import toolgate
from conftest import EXAMPLES, POLICYLAYER_EXAMPLES, cond, errors_of, limit, policy


def rule_doc(rule: dict[str, Any]) -> dict[str, Any]:
    return policy({"t": rule})


def limit_doc(**fields: Any) -> dict[str, Any]:
    return rule_doc({"limits": [fields]})


def condition_doc(condition: Any, place: str = "require") -> dict[str, Any]:
    return rule_doc({place: [condition]})


# (id, document, pointer, a fragment of the message)
CASES: list[tuple[str, Any, str, str]] = [
    # unknown keys, at every level
    ("unknown-top-key", policy({}, bogus=1), "/bogus", 'unknown key "bogus"'),
    ("unknown-rule-key", rule_doc({"actoin": "deny"}), "/tools/t/actoin", 'unknown key "actoin"'),
    (
        "unknown-limit-key",
        limit_doc(counter="c", window="minute", max=1, per="x"),
        "/tools/t/limits/0/per",
        'unknown key "per"',
    ),
    (
        "unknown-condition-key",
        condition_doc({"path": "args.a", "op": "eq", "value": 1, "extra": 2}),
        "/tools/t/require/0/extra",
        'unknown key "extra"',
    ),
    (
        "unknown-group-key",
        condition_doc({"conditions": [], "on_deny": "x", "why": 1}, "deny_if"),
        "/tools/t/deny_if/0/why",
        'unknown key "why"',
    ),
    (
        "unknown-server-section-key",
        policy({}, servers={"s": {"tols": {}}}),
        "/servers/s/tols",
        'unknown key "tols"',
    ),
    (
        "unknown-approval-key",
        rule_doc({"action": "require_approval", "approval": {"who": "x"}}),
        "/tools/t/approval/who",
        'unknown key "who"',
    ),
    (
        "nested-condition-unknown-key",
        condition_doc({"all": [{"any": [{"path": "args.a", "op": "exists", "x": 1}]}]}),
        "/tools/t/require/0/all/0/any/0/x",
        'unknown key "x"',
    ),
    # wrong types
    (
        "tools-not-object",
        {"version": "1", "tools": []},
        "/tools",
        "expected an object, found an array",
    ),
    ("hide-not-array", policy({}, hide="x"), "/hide", "expected an array, found a string"),
    ("hide-item-not-string", policy({}, hide=[1]), "/hide/0", "expected a string, found a number"),
    ("hide-empty-name", policy({}, hide=[""]), "/hide/0", "must not be empty"),
    ("rule-not-object", rule_doc([]), "/tools/t", "expected an object, found an array"),
    ("action-not-string", rule_doc({"action": 5}), "/tools/t/action", "expected a string"),
    ("reason-not-string", rule_doc({"reason": 5}), "/tools/t/reason", "expected a string"),
    ("limits-not-array", rule_doc({"limits": {}}), "/tools/t/limits", "expected an array"),
    ("require-not-array", rule_doc({"require": {}}), "/tools/t/require", "expected an array"),
    ("condition-not-object", condition_doc("args.a"), "/tools/t/require/0", "expected an object"),
    (
        "max-string",
        limit_doc(counter="c", window="minute", max="10"),
        "/tools/t/limits/0/max",
        "expected a number",
    ),
    (
        "counter-number",
        limit_doc(counter=5, window="minute", max=1),
        "/tools/t/limits/0/counter",
        "expected a string",
    ),
    (
        "counter-empty",
        limit_doc(counter="", window="minute", max=1),
        "/tools/t/limits/0/counter",
        "must not be empty",
    ),
    (
        "path-number",
        condition_doc({"path": 5, "op": "exists"}),
        "/tools/t/require/0/path",
        "expected a string",
    ),
    (
        "lt-string",
        condition_doc(cond("args.a", "lt", "5")),
        "/tools/t/require/0/value",
        'op "lt" expects a number',
    ),
    (
        "in-not-array",
        condition_doc(cond("args.a", "in", "5")),
        "/tools/t/require/0/value",
        'op "in" expects a non-empty array',
    ),
    (
        "in-empty",
        condition_doc(cond("args.a", "not_in", [])),
        "/tools/t/require/0/value",
        'op "not_in" expects a non-empty array',
    ),
    (
        "regex-number",
        condition_doc(cond("args.a", "regex", 5)),
        "/tools/t/require/0/value",
        'op "regex" expects a string',
    ),
    (
        "exists-string",
        condition_doc(cond("args.a", "exists", "yes")),
        "/tools/t/require/0/value",
        "expects a boolean",
    ),
    (
        "contains-object",
        condition_doc(cond("args.a", "contains", {"a": 1})),
        "/tools/t/require/0/value",
        'op "contains" expects',
    ),
    (
        "missing-value",
        condition_doc({"path": "args.a", "op": "eq"}),
        "/tools/t/require/0",
        'missing required key "value"',
    ),
    (
        "missing-op",
        condition_doc({"path": "args.a"}),
        "/tools/t/require/0",
        'missing required key "op"',
    ),
    (
        "path-and-combinator",
        condition_doc({"all": [], "path": "args.a"}),
        "/tools/t/require/0",
        "exactly one of all, any, not",
    ),
    (
        "two-combinators",
        condition_doc({"all": [], "any": []}),
        "/tools/t/require/0",
        "exactly one of all, any, not",
    ),
    # choices
    ("default-unknown", policy({}, default="maybe"), "/default", 'unknown default "maybe"'),
    ("mode-unknown", policy({}, mode="loud"), "/mode", 'unknown mode "loud"'),
    ("rule-mode-unknown", rule_doc({"mode": "dry"}), "/tools/t/mode", 'unknown mode "dry"'),
    ("action-unknown", rule_doc({"action": "nope"}), "/tools/t/action", 'unknown action "nope"'),
    (
        "scope-unknown",
        limit_doc(counter="c", window="minute", max=1, scope="team"),
        "/tools/t/limits/0/scope",
        'unknown scope "team"',
    ),
    # regexes and globs
    (
        "bad-regex",
        condition_doc(cond("args.a", "regex", "(ab")),
        "/tools/t/require/0/value",
        'invalid regex "(ab"',
    ),
    (
        "bad-not-regex",
        condition_doc(cond("args.a", "not_regex", "[z-a]")),
        "/tools/t/require/0/value",
        "invalid regex",
    ),
    (
        "bad-glob-operand",
        condition_doc(cond("args.a", "glob", "a[")),
        "/tools/t/require/0/value",
        "unclosed '['",
    ),
    ("bad-tool-glob", policy({"a[": {}}), "/tools/a[", "unclosed '['"),
    ("bad-hide-glob", policy({}, hide=["x", "b["]), "/hide/1", "unclosed '['"),
    ("empty-tool-name", policy({"": {}}), "/tools/", "tool name must not be empty"),
    # windows
    (
        "window-fortnight",
        limit_doc(counter="c", window="fortnight", max=1),
        "/tools/t/limits/0/window",
        'invalid window "fortnight"',
    ),
    (
        "window-zero",
        limit_doc(counter="c", window=0, max=1),
        "/tools/t/limits/0/window",
        "window must be positive, found 0",
    ),
    (
        "window-negative",
        limit_doc(counter="c", window=-5, max=1),
        "/tools/t/limits/0/window",
        "window must be positive, found -5",
    ),
    (
        "window-10x",
        limit_doc(counter="c", window="10x", max=1),
        "/tools/t/limits/0/window",
        'invalid window "10x"',
    ),
    (
        "window-0s",
        limit_doc(counter="c", window="0s", max=1),
        "/tools/t/limits/0/window",
        "window must be positive",
    ),
    (
        "window-bool",
        limit_doc(counter="c", window=True, max=1),
        "/tools/t/limits/0/window",
        "found a boolean",
    ),
    (
        "window-tiny",
        limit_doc(counter="c", window=0.0001, max=1),
        "/tools/t/limits/0/window",
        "at least 1 ms",
    ),
    # maxima
    (
        "max-zero",
        limit_doc(counter="c", window="minute", max=0),
        "/tools/t/limits/0/max",
        "max must be greater than 0, found 0",
    ),
    (
        "max-negative",
        limit_doc(counter="c", window="minute", max=-3),
        "/tools/t/limits/0/max",
        "greater than 0, found -3",
    ),
    (
        "max-fractional-without-cost",
        limit_doc(counter="c", window="minute", max=2.5),
        "/tools/t/limits/0/max",
        "whole number of calls",
    ),
    (
        "max-too-large",
        limit_doc(counter="c", window="minute", max=2e9),
        "/tools/t/limits/0/max",
        "at most 1000000000",
    ),
    (
        "max-missing",
        limit_doc(counter="c", window="minute"),
        "/tools/t/limits/0",
        'missing required key "max"',
    ),
    (
        "counter-missing",
        limit_doc(window="minute", max=1),
        "/tools/t/limits/0",
        'missing required key "counter"',
    ),
    (
        "window-missing",
        limit_doc(counter="c", max=1),
        "/tools/t/limits/0",
        'missing required key "window"',
    ),
    # cost
    (
        "cost-not-args",
        limit_doc(counter="c", window="day", max=5, cost="subject.agent"),
        "/tools/t/limits/0/cost",
        "cost must be an argument path",
    ),
    (
        "cost-bad-path",
        limit_doc(counter="c", window="day", max=5, cost="args..x"),
        "/tools/t/limits/0/cost",
        "invalid path",
    ),
    # counters defined twice
    (
        "counter-window-conflict",
        policy({"a": {"limits": [limit("c", 1)]}, "b": {"limits": [limit("c", 1, window="hour")]}}),
        "/tools/b/limits/0/counter",
        'counter "c" conflicts with its first definition at /tools/a/limits/0: window 3600000 ms',
    ),
    (
        "counter-max-conflict",
        policy({"a": {"limits": [limit("c", 1)]}, "b": {"limits": [limit("c", 2)]}}),
        "/tools/b/limits/0/counter",
        "max 2 instead of 1",
    ),
    (
        "counter-scope-conflict",
        policy({"a": {"limits": [limit("c", 1)]}, "b": {"limits": [limit("c", 1, scope="agent")]}}),
        "/tools/b/limits/0/counter",
        "scope agent instead of grant",
    ),
    (
        "counter-conflict-in-one-rule",
        rule_doc({"limits": [limit("c", 1), limit("c", 1, window="second")]}),
        "/tools/t/limits/1/counter",
        "conflicts with its first definition at /tools/t/limits/0",
    ),
    (
        "counter-conflict-across-all-tools",
        policy({"a": {"limits": [limit("c", 1)]}}, all_tools={"limits": [limit("c", 9)]}),
        "/tools/a/limits/0/counter",
        "conflicts with its first definition at /all_tools/limits/0",
    ),
    (
        "counter-conflict-across-servers",
        policy(
            {},
            servers={
                "s1": {"tools": {"a": {"limits": [limit("c", 1)]}}},
                "s2": {"tools": {"a": {"limits": [limit("c", 2)]}}},
            },
        ),
        "/servers/s2/tools/a/limits/0/counter",
        "max 2 instead of 1",
    ),
    # paths
    (
        "path-env",
        condition_doc(cond("env.x", "eq", 1)),
        "/tools/t/require/0/path",
        "path must start with args., subject., server, tool or marks",
    ),
    (
        "path-bare-args",
        condition_doc(cond("args", "eq", 1)),
        "/tools/t/require/0/path",
        "args needs at least one segment",
    ),
    (
        "path-subject-field",
        condition_doc(cond("subject.foo", "eq", 1)),
        "/tools/t/require/0/path",
        'unknown subject field "foo"',
    ),
    (
        "path-attributes-deep",
        condition_doc(cond("subject.attributes.a.b", "eq", 1)),
        "/tools/t/require/0/path",
        "exactly one key",
    ),
    (
        "path-server-segment",
        condition_doc(cond("server.id", "eq", 1)),
        "/tools/t/require/0/path",
        "server takes no further segments",
    ),
    (
        "path-negative-index",
        condition_doc(cond("args.a[-1]", "eq", 1)),
        "/tools/t/require/0/path",
        "bad index",
    ),
    (
        "path-in-group",
        condition_doc(
            {"conditions": [cond("args.a", "exists"), cond("os.x", "exists")]}, "deny_if"
        ),
        "/tools/t/deny_if/0/conditions/1/path",
        "path must start with",
    ),
    (
        "path-under-not",
        condition_doc({"not": cond("x", "exists")}),
        "/tools/t/require/0/not/path",
        "path must start with",
    ),
    # ops
    (
        "unknown-op",
        condition_doc(cond("args.a", "like", 1)),
        "/tools/t/require/0/op",
        'unknown op "like"',
    ),
    ("op-case", condition_doc(cond("args.a", "EQ", 1)), "/tools/t/require/0/op", 'unknown op "EQ"'),
    # versions
    ("version-2", {"version": "2"}, "/version", 'unsupported version "2"'),
    ("version-number", {"version": 1}, "/version", 'expected the string "1", found a number'),
    ("version-missing", {"default": "deny"}, "", 'missing required key "version"'),
    ("document-not-object", [], "", "expected an object, found an array"),
    # structure
    (
        "nested-servers",
        policy({}, servers={"s": {"servers": {}}}),
        "/servers/s/servers",
        "cannot be nested",
    ),
    ("empty-server-id", policy({}, servers={"": {}}), "/servers/", "server id must not be empty"),
    (
        "approval-without-require-approval",
        rule_doc({"approval": {"timeout": "1m"}}),
        "/tools/t/approval",
        '"approval" is only valid with action "require_approval"',
    ),
    (
        "approval-bad-timeout",
        rule_doc({"action": "require_approval", "approval": {"timeout": "soon"}}),
        "/tools/t/approval/timeout",
        'invalid window "soon"',
    ),
    (
        "too-many-limits",
        rule_doc({"limits": [limit(f"c{i}", 1) for i in range(9)]}),
        "/tools/t/limits",
        "at most 8 limits",
    ),
    (
        "too-many-limits-with-all-tools",
        policy(
            {"t": {"limits": [limit(f"c{i}", 1) for i in range(5)]}},
            all_tools={"limits": [limit(f"g{i}", 1) for i in range(4)]},
        ),
        "/tools/t/limits",
        "at most 8 limits and marks may apply to one call",
    ),
]


@pytest.mark.parametrize(
    ("document", "pointer", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_validation_error(document, pointer, fragment):
    errors = errors_of(toolgate.Policy.from_dict, document)
    assert len(errors) == 1, errors
    ((got_pointer, line, message),) = errors
    assert got_pointer == pointer
    assert fragment in message
    assert line is None  # a dict has no lines
    assert "\n" not in message


@pytest.mark.parametrize(
    ("document", "pointer", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_engine_and_text_report_the_same_error(document, pointer, fragment):
    load = toolgate.Engine if isinstance(document, dict) else toolgate.Policy.from_dict
    with pytest.raises(toolgate.PolicyError) as info:
        load(document)
    assert [e.pointer for e in info.value.errors] == [pointer]
    text_errors = errors_of(toolgate.Policy.from_str, json.dumps(document), "json")
    assert [(p, m) for p, _, m in text_errors] == [(pointer, info.value.errors[0].message)]
    assert all(line is not None and line >= 1 for _, line, _ in text_errors)


def test_policy_error_is_a_value_error_with_a_readable_message():
    with pytest.raises(ValueError, match=r"/tools/t/limits/0/window: invalid window") as info:
        toolgate.Policy.from_dict(limit_doc(counter="c", window="fortnight", max=1))
    assert isinstance(info.value, toolgate.PolicyError)
    (error,) = info.value.errors
    assert isinstance(error, toolgate.ValidationError)
    assert str(error).startswith("/tools/t/limits/0/window: invalid window")


def test_valid_variants_load():
    ok = [
        limit_doc(counter="c", window="minute", max=2.5, cost="args.x"),  # fractional with cost
        limit_doc(counter="c", window=90, max=1),
        limit_doc(counter="c", window=1.5, max=1),
        limit_doc(counter="c", window="1h30m", max=1),
        limit_doc(counter="c", window="500ms", max=1),
        limit_doc(counter="c", window="second", max=1e9),
        limit_doc(counter="c", window="minute", max=30.0),  # a whole float is a whole number
        policy({"a": {"limits": [limit("c", 1)]}, "b": {"limits": [limit("c", 1)]}}),
        condition_doc(cond("args.a", "exists")),
        condition_doc({"conditions": [], "on_deny": "always"}, "deny_if"),
        condition_doc(cond('args["key.with.dots"][0]', "eq", None)),
        rule_doc(
            {"action": "require_approval", "approval": {"timeout": 600, "approvers": ["ops"]}}
        ),
        policy(
            {"t": {"limits": [limit(f"c{i}", 1) for i in range(4)]}},
            all_tools={"limits": [limit(f"g{i}", 1) for i in range(4)]},
        ),
    ]
    for document in ok:
        toolgate.Policy.from_dict(document)


# --- many errors at once -----------------------------------------------------------------------

MANY = {
    "version": "2",
    "default": "sometimes",
    "extra": True,
    "tools": {
        "a": {
            "action": "explode",
            "limits": [{"counter": "c", "window": "fortnight", "max": 0, "scope": "team"}],
            "require": [
                {"path": "env.HOME", "op": "eq", "value": 1},
                {"path": "args.x", "op": "matches", "value": "y"},
                {"path": "args.x", "op": "regex", "value": "(("},
            ],
        },
        "b": {"limits": [limit("d", 1)], "unknown": 1},
        "c": {"limits": [limit("d", 2)]},
    },
}

MANY_POINTERS = {
    "/version",
    "/default",
    "/extra",
    "/tools/a/action",
    "/tools/a/limits/0/window",
    "/tools/a/limits/0/max",
    "/tools/a/limits/0/scope",
    "/tools/a/require/0/path",
    "/tools/a/require/1/op",
    "/tools/a/require/2/value",
    "/tools/b/unknown",
    "/tools/c/limits/0/counter",
}


def test_every_error_of_a_document_is_reported():
    errors = errors_of(toolgate.Policy.from_dict, MANY)
    pointers = [p for p, _, _ in errors]
    assert sorted(pointers) == sorted(MANY_POINTERS)
    assert len(pointers) == len(set(pointers))


def test_every_error_of_a_text_document_has_its_line():
    errors = errors_of(toolgate.Policy.from_str, json.dumps(MANY, indent=2))
    assert {p: line for p, line, _ in errors} == {
        "/version": 2,
        "/default": 3,
        "/extra": 4,
        "/tools/a/action": 7,
        "/tools/a/limits/0/window": 11,
        "/tools/a/limits/0/max": 12,
        "/tools/a/limits/0/scope": 13,
        "/tools/a/require/0/path": 18,
        "/tools/a/require/1/op": 24,
        "/tools/a/require/2/value": 30,
        "/tools/b/unknown": 43,
        "/tools/c/limits/0/counter": 48,
    }
    assert len(errors) == len(MANY_POINTERS)


# --- line numbers ------------------------------------------------------------------------------

BROKEN_JSON = """\
{
  "version": "1",
  "bogus": true,
  "tools": {
    "create-ami": {
      "limits": [
        {"counter": "c", "window": "fortnight",
         "max": 0, "scope": "team"}
      ]
    },
    "x": {"require": [{"path": "env.x", "op": "eq", "value": 1}]}
  }
}
"""

BROKEN_YAML = """\
# a broken policy
version: "1"
bogus: true
tools:
  create-ami:
    limits:
      - counter: c
        window: fortnight
        max: 0
        scope: team
  x:
    require:
      - path: env.x
        op: eq
        value: 1
      - {path: args.a, op: regex, value: "(ab"}
"""

JSON_ERRORS = [
    ("/bogus", 3),
    ("/tools/create-ami/limits/0/window", 7),
    ("/tools/create-ami/limits/0/max", 8),
    ("/tools/create-ami/limits/0/scope", 8),
    ("/tools/x/require/0/path", 11),
]

YAML_ERRORS = [
    ("/bogus", 3),
    ("/tools/create-ami/limits/0/window", 8),
    ("/tools/create-ami/limits/0/max", 9),
    ("/tools/create-ami/limits/0/scope", 10),
    ("/tools/x/require/0/path", 13),
    ("/tools/x/require/1/value", 16),
]


@pytest.mark.parametrize("name", ["policy.json", "policy.JSON", "no_extension"])
def test_json_file_errors_have_lines(tmp_path, name):
    path = tmp_path / name
    path.write_text(BROKEN_JSON)
    errors = errors_of(toolgate.Policy.from_file, path)
    assert [(p, line) for p, line, _ in errors] == JSON_ERRORS
    # Engine.from_file and Engine(path) report the same
    assert errors_of(toolgate.Engine.from_file, path) == errors
    assert errors_of(toolgate.Engine, str(path)) == errors


@pytest.mark.parametrize("name", ["policy.yaml", "policy.yml", "no_extension"])
def test_yaml_file_errors_have_lines(tmp_path, name):
    path = tmp_path / name
    path.write_text(BROKEN_YAML)
    errors = errors_of(toolgate.Policy.from_file, path)
    assert [(p, line) for p, line, _ in errors] == YAML_ERRORS


def test_text_errors_have_lines():
    assert [(p, n) for p, n, _ in errors_of(toolgate.Policy.from_str, BROKEN_JSON)] == JSON_ERRORS
    assert [
        (p, n) for p, n, _ in errors_of(toolgate.Policy.from_str, BROKEN_YAML, "yaml")
    ] == YAML_ERRORS


def test_dict_errors_have_no_lines():
    errors = errors_of(toolgate.Policy.from_dict, json.loads(BROKEN_JSON))
    assert {p for p, _, _ in errors} == {p for p, _ in JSON_ERRORS}
    assert all(line is None for _, line, _ in errors)


def test_unquoted_yaml_version_is_explained():
    ((pointer, line, message),) = errors_of(
        toolgate.Policy.from_str, "default: deny\nversion: 1\n", "yaml"
    )
    assert (pointer, line) == ("/version", 2)
    assert "quote it" in message


@pytest.mark.parametrize(
    ("text", "fmt", "line"),
    [
        ('{"version": "1",\n "tools": {\n', "json", 3),
        ('{"version": "1",\n "version": "1"}', "json", 2),
        ('version: "1"\ntools: [\n', "yaml", 3),
        ('version: "1"\nversion: "1"\n', "yaml", 2),
    ],
    ids=["json-truncated", "json-duplicate-key", "yaml-truncated", "yaml-duplicate-key"],
)
def test_syntax_errors_have_lines(text, fmt, line):
    errors = errors_of(toolgate.Policy.from_str, text, fmt)
    assert len(errors) == 1
    assert errors[0][1] == line


def test_duplicate_keys_are_rejected():
    ((pointer, _, message),) = errors_of(
        toolgate.Policy.from_str, '{"version": "1", "tools": {"a": {}, "a": {"action": "deny"}}}'
    )
    assert pointer == "/tools/a"
    assert 'duplicate key "a"' in message


def test_missing_file(tmp_path):
    ((pointer, line, message),) = errors_of(toolgate.Policy.from_file, tmp_path / "nope.json")
    assert (pointer, line) == ("", None)
    assert "cannot read" in message


def test_from_dict_rejects_values_that_are_not_json():
    with pytest.raises(ValueError):
        toolgate.Policy.from_dict({"version": "1", "tools": {"a": {"reason": object()}}})


def test_engine_rejects_what_is_not_a_policy():
    with pytest.raises(TypeError):
        toolgate.Engine(42)


def test_from_str_rejects_an_unknown_format():
    with pytest.raises(ValueError):
        toolgate.Policy.from_str("{}", "toml")


# --- PolicyLayer's examples and ours load ------------------------------------------------------


@pytest.mark.parametrize(
    "text", [s[0] for s in POLICYLAYER_EXAMPLES], ids=[s[1] for s in POLICYLAYER_EXAMPLES]
)
def test_policylayer_example_policies_load_unchanged(text):
    p = toolgate.Policy.from_str(text)
    assert len(p.revision) == 16
    assert p.servers == []


@pytest.mark.parametrize("name", ["policy.json", "policy.yaml"])
def test_example_policies_load(name):
    p = toolgate.Policy.from_file(EXAMPLES / name)
    assert len(p.revision) == 16


def test_yaml_example_lists_its_servers():
    assert toolgate.Policy.from_file(EXAMPLES / "policy.yaml").servers == ["github", "sandbox"]


def test_yaml_and_json_of_one_document_load_alike():
    doc = textwrap.dedent(
        """\
        version: "1"
        default: deny
        tools:
          create-ami:
            limits:
              - {counter: create-ami_rate, window: minute, max: 30, scope: grant}
        """
    )
    assert (
        toolgate.Policy.from_str(doc).revision
        == toolgate.Policy.from_str(
            '{"version": "1", "default": "deny", "tools": {"create-ami": {"limits": '
            '[{"counter": "create-ami_rate", "window": "minute", "max": 30, "scope": "grant"}]}}}'
        ).revision
    )
