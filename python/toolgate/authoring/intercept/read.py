"""Intercept's policy format, read and checked as its documentation describes it: every error
with its place (and line, from text), and the keys Intercept would silently ignore as notes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from toolgate import Policy, PolicyError

WINDOWS = ("minute", "hour", "day")
OPERATORS = ("eq", "neq", "in", "not_in", "lt", "lte", "gt", "gte", "regex", "contains", "exists")

#: ``stricter``: policy v1 refuses where Intercept would decide (an input two readers could
#: read two ways), and otherwise decides alike: exact for ``import --strict``.
NoteKind = Literal["approximated", "not expressible", "stricter", "ignored"]

_RULE_KEYS = {"name", "action", "rate_limit", "conditions", "on_deny", "state"}
_TOP_KEYS = {"version", "description", "default", "hide", "tools"}
_STATE_KEYS = {"counter", "window", "increment", "increment_from"}
_CONDITION_KEYS = {"path", "op", "value"}


@dataclass(frozen=True)
class Note:
    """Something in the source that the converted policy does not say exactly."""

    where: str
    kind: NoteKind
    text: str

    def __str__(self) -> str:
        return f"{self.where}: {self.kind}: {self.text}"


class InterceptError(ValueError):
    """An Intercept policy that is not valid in its own format: every problem, each with its
    place (and line, from text)."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass
class State:
    """A rule's ``state`` counter: what it counts and over which calendar window."""

    counter: str
    window: str
    increment: int = 1
    increment_from: str | None = None


@dataclass
class Rule:
    """One of a tool's rules, as checked."""

    index: int
    name: str
    action: str
    on_deny: str | None
    conditions: list[dict[str, Any]]
    state: State | None
    rate_limit: tuple[int, str] | None


@dataclass
class Tool:
    """A tool's name (``*``: every tool) and its rules."""

    name: str
    rules: list[Rule]


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


class Checker:
    """Checks a parsed Intercept document against its documented format, collecting every
    error and the keys Intercept would silently ignore."""

    def __init__(self, lines: Mapping[str, int]) -> None:
        self.lines = lines
        self.errors: list[str] = []
        self.notes: list[Note] = []

    def error(self, pointer: str, where: str, message: str) -> None:
        line = self.lines.get(pointer)
        at = f"line {line}: " if line is not None else ""
        self.errors.append(f"{at}{where}: {message}")

    def unknown_keys(self, value: Mapping[str, Any], known: set[str], where: str) -> None:
        for key in value:
            if key not in known:
                self.notes.append(
                    Note(
                        where,
                        "ignored",
                        f"unknown key {key!r}: Intercept ignores it, and so does the conversion",
                    )
                )

    def state(self, value: Any, pointer: str, where: str) -> State | None:
        if not isinstance(value, dict):
            self.error(pointer, where, "state must be a mapping")
            return None
        self.unknown_keys(value, _STATE_KEYS, f"{where}.state")
        counter = value.get("counter")
        if not isinstance(counter, str) or not counter.strip():
            self.error(f"{pointer}/counter", where, "counter must not be empty")
            counter = ""
        window = value.get("window")
        if window not in WINDOWS:
            self.error(
                f"{pointer}/window",
                where,
                f'window must be "minute", "hour", or "day", got {window!r}',
            )
        increment = value.get("increment", 1)
        if increment in (None, 0):
            increment = 1
        if isinstance(increment, bool) or not isinstance(increment, int) or increment < 1:
            self.error(
                f"{pointer}/increment",
                where,
                f"increment must be a positive integer, got {increment!r}",
            )
            increment = 1
        increment_from = value.get("increment_from")
        if increment_from in (None, ""):
            increment_from = None
        elif not isinstance(increment_from, str) or not increment_from.startswith("args."):
            self.error(
                f"{pointer}/increment_from",
                where,
                f'increment_from must start with "args.", got {increment_from!r}',
            )
            increment_from = None
        return State(counter, str(window), increment, increment_from)

    def condition(self, value: Any, pointer: str, where: str) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.error(pointer, where, "a condition must be a mapping of path, op and value")
            return None
        self.unknown_keys(value, _CONDITION_KEYS, where)
        path, op, operand = value.get("path"), value.get("op"), value.get("value")
        ok = True
        if not isinstance(path, str) or not (path.startswith("args.") or path.startswith("state.")):
            self.error(
                f"{pointer}/path", where, f'path must start with "args." or "state.", got {path!r}'
            )
            ok = False
        if op not in OPERATORS:
            self.error(f"{pointer}/op", where, f"unknown operator {op!r}")
            return None
        if op in ("in", "not_in") and not isinstance(operand, list):
            self.error(f"{pointer}/value", where, f'operator "{op}" requires a list value')
            ok = False
        if op in ("lt", "lte", "gt", "gte") and not _is_number(operand):
            self.error(f"{pointer}/value", where, f'operator "{op}" requires a numeric value')
            ok = False
        if op == "exists" and not isinstance(operand, bool):
            self.error(f"{pointer}/value", where, 'operator "exists" requires a boolean value')
            ok = False
        if op == "regex":
            if not isinstance(operand, str):
                self.error(f"{pointer}/value", where, "regex value must be a string")
                ok = False
            else:
                try:
                    Policy.from_dict(_probe({"path": "args.x", "op": "regex", "value": operand}))
                except PolicyError as err:
                    message = err.errors[0].message if err.errors else str(err)
                    self.error(f"{pointer}/value", where, f"invalid regex {operand!r}: {message}")
                    ok = False
        return {"path": path, "op": op, "value": operand} if ok else None

    def rule(self, value: Any, index: int, pointer: str, tool: str) -> Rule | None:
        where = f"tools.{tool}.rules[{index}]"
        if not isinstance(value, dict):
            self.error(pointer, where, "a rule must be a mapping")
            return None
        name = value.get("name")
        if not isinstance(name, str) or not name:
            self.error(pointer, where, "rule must have a name")
            name = f"rules[{index}]"
        where = f'{where} ("{name}")'
        self.unknown_keys(value, _RULE_KEYS, where)
        action = value.get("action") or "evaluate"
        if action not in ("evaluate", "deny"):
            self.error(
                f"{pointer}/action", where, f'action must be "evaluate" or "deny", got {action!r}'
            )
        on_deny = value.get("on_deny")
        if on_deny is not None and not isinstance(on_deny, str):
            self.error(f"{pointer}/on_deny", where, "on_deny must be a string")
            on_deny = None
        raw_conditions = value.get("conditions") or []
        if not isinstance(raw_conditions, list):
            self.error(f"{pointer}/conditions", where, "conditions must be a list")
            raw_conditions = []
        state = None
        if value.get("state") is not None:
            state = self.state(value["state"], f"{pointer}/state", where)
        rate_limit = None
        if value.get("rate_limit") not in (None, ""):
            rate_limit = self._rate_limit(value["rate_limit"], f"{pointer}/rate_limit", where)
            if raw_conditions or value.get("state") is not None:
                self.error(
                    f"{pointer}/rate_limit",
                    where,
                    "rate_limit cannot be combined with conditions or state",
                )
            if action == "deny":
                self.error(
                    f"{pointer}/rate_limit", where, 'rate_limit cannot be used with action "deny"'
                )
        conditions = []
        for i, c in enumerate(raw_conditions):
            checked = self.condition(c, f"{pointer}/conditions/{i}", where)
            if checked is not None:
                conditions.append(checked)
        if action == "deny" and raw_conditions:
            self.error(f"{pointer}/conditions", where, "deny rules must not have conditions")
        if action == "evaluate" and not raw_conditions and rate_limit is None:
            self.error(pointer, where, "evaluate rules must have at least one condition")
        return Rule(index, name, action, on_deny, conditions, state, rate_limit)

    def _rate_limit(self, value: Any, pointer: str, where: str) -> tuple[int, str] | None:
        text = str(value)
        count, sep, window = text.partition("/")
        if not sep:
            self.error(
                pointer,
                where,
                f'rate_limit must be in the format "N/window" (e.g. "5/hour"), got {text!r}',
            )
            return None
        if not count.isdigit() or int(count) <= 0:
            self.error(
                pointer, where, f"rate_limit count must be a positive integer, got {count!r}"
            )
            return None
        if window not in WINDOWS:
            self.error(
                pointer,
                where,
                f'rate_limit window must be "minute", "hour", or "day", got {window!r}',
            )
            return None
        return int(count), window


def _probe(condition: dict[str, Any]) -> dict[str, Any]:
    """A one-rule policy holding ``condition``, to let the policy loader judge a pattern."""
    return {"version": "1", "tools": {"t": {"require": [condition]}}}


def read_policy(document: Any, lines: Mapping[str, int]) -> tuple[Any, list[Tool], Checker]:
    """The document and its tools, checked; InterceptError listing every problem."""
    c = Checker(lines)
    if not isinstance(document, dict):
        c.error("", "policy", "must be a mapping with version and tools")
        raise InterceptError(c.errors)
    c.unknown_keys(document, _TOP_KEYS, "policy")
    version = document.get("version")
    if str(version) != "1" or isinstance(version, bool):
        c.error("/version", "version", f'version must be "1", got {version!r}')
    default = document.get("default") or "allow"
    if default not in ("allow", "deny"):
        c.error("/default", "default", f'default must be "allow" or "deny", got {default!r}')
    hide = document.get("hide") or []
    if not isinstance(hide, list):
        c.error("/hide", "hide", "hide must be a list of tool names")
        hide = []
    seen: set[str] = set()
    for i, name in enumerate(hide):
        if not isinstance(name, str) or not name.strip():
            c.error(f"/hide/{i}", f"hide[{i}]", "entry must not be empty")
        elif name in seen:
            c.error(f"/hide/{i}", "hide", f"duplicate entry {name!r}")
        else:
            seen.add(name)
    tools_value = document.get("tools")
    tools: list[Tool] = []
    if not isinstance(tools_value, dict):
        c.error("/tools", "tools", "tools must be a mapping of tool names to rules")
        tools_value = {}
    for name, definition in tools_value.items():
        pointer = "/tools/" + name.replace("~", "~0").replace("/", "~1")
        if definition is None:
            definition = {}
        if not isinstance(definition, dict):
            c.error(pointer, f"tools.{name}", "a tool must be a mapping with rules")
            continue
        c.unknown_keys(definition, {"rules"}, f"tools.{name}")
        rules_value = definition.get("rules") or []
        if not isinstance(rules_value, list):
            c.error(f"{pointer}/rules", f"tools.{name}", "rules must be a list")
            continue
        rules = []
        for i, r in enumerate(rules_value):
            rule = c.rule(r, i, f"{pointer}/rules/{i}", name)
            if rule is not None:
                rules.append(rule)
        _check_counters(c, name, rules, pointer)
        tools.append(Tool(name, rules))
    if c.errors:
        raise InterceptError(c.errors)
    return document, tools, c


def counter_scope(tool: str) -> str:
    """The name ``state.`` paths give a tool's counters under (``_global`` for ``*``)."""
    return "_global" if tool == "*" else tool


def _counter_of(rule: Rule) -> str | None:
    if rule.rate_limit is not None:
        return f"_rate_{rule.rate_limit[1]}"
    return rule.state.counter if rule.state else None


def _check_counters(c: Checker, tool: str, rules: list[Rule], pointer: str) -> None:
    defined: dict[str, int] = {}
    for r in rules:
        counter = _counter_of(r)
        if counter is None:
            continue
        if counter in defined:
            c.error(
                f"{pointer}/rules/{r.index}",
                f"tools.{tool}.rules[{r.index}]",
                f"duplicate state counter {counter!r} (also used by rules[{defined[counter]}])",
            )
        defined.setdefault(counter, r.index)
    for r in rules:
        for cond in r.conditions:
            path = cond["path"]
            if not path.startswith("state."):
                continue
            if not any(path == f"state.{counter_scope(tool)}.{k}" for k in defined):
                c.error(
                    f"{pointer}/rules/{r.index}",
                    f"tools.{tool}.rules[{r.index}]",
                    f"condition references {path} but no matching state block found",
                )
