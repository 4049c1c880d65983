"""``toolgate import intercept``: convert a policy of PolicyLayer's Intercept to policy v1.

Intercept's YAML policy (``version``, ``description``, ``default``, ``hide``, ``tools`` of
``rules``: ``action: evaluate|deny``, ``conditions`` on ``args.*`` and ``state.*``,
``on_deny``, ``rate_limit: N/window``, ``state`` counters with ``increment`` or
``increment_from``, the ``"*"`` wildcard) maps onto policy v1 so:

- ``hide`` → ``hide`` (names are exact: a glob character is written in a class, ``a[*]b``);
  ``default`` → ``default`` (Intercept's default is ``allow``);
- ``tools.<name>`` → ``tools.<name>``, ``tools."*"`` → ``all_tools``;
- an ``action: deny`` rule → ``action: deny`` with its ``on_deny`` as ``reason``;
- an ``evaluate`` rule's ``args.*`` conditions → one ``require`` group, with the rule's
  ``on_deny``;
- a ``state`` counter with an ``lt``/``lte`` condition on itself (and ``rate_limit``) → a limit
  counting per sidecar (``scope: global``, as one Intercept process counts), ``cost:`` the
  ``increment_from`` path, named ``<tool>.<counter>`` (``_global.<counter>`` for ``"*"``).

Whatever cannot be said exactly is reported as a :class:`Note`: calendar windows become
sliding ones, values of another type than the operand deny instead of being compared as
text, a limit's denial carries toolgate's reason rather than ``on_deny``, and so on. A
condition on a counter that toolgate cannot express makes the rule deny every call (fail
closed) and is reported as not expressible.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from toolgate import Policy, PolicyError
from toolgate._core import MAX_MAX, read_document
from toolgate.authoring.suggest import policy_key, to_yaml

WINDOWS = ("minute", "hour", "day")
OPERATORS = ("eq", "neq", "in", "not_in", "lt", "lte", "gt", "gte", "regex", "contains", "exists")
#: Policy v1 counts costs in thousandths.
COST_STEP = 0.001

NoteKind = Literal["approximated", "not expressible", "ignored"]

_RULE_KEYS = {"name", "action", "rate_limit", "conditions", "on_deny", "state"}
_TOP_KEYS = {"version", "description", "default", "hide", "tools"}
_STATE_KEYS = {"counter", "window", "increment", "increment_from"}
_CONDITION_KEYS = {"path", "op", "value"}
_PLAIN_SEGMENT = re.compile(r"[^.\[\]\"']+")


@dataclass(frozen=True)
class Note:
    """Something in the source that the converted policy does not say exactly."""

    where: str
    kind: NoteKind
    text: str

    def __str__(self) -> str:
        return f"{self.where}: {self.kind}: {self.text}"


@dataclass
class Conversion:
    """The converted policy (a dict for ``Policy.from_dict``) and what was not exact."""

    policy: dict[str, Any]
    notes: list[Note] = field(default_factory=list)
    description: str | None = None

    @property
    def exact(self) -> bool:
        return not any(n.kind != "ignored" for n in self.notes)


class InterceptError(ValueError):
    """An Intercept policy that is not valid in its own format: every problem, each with its
    place (and line, from text)."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


# --- reading and checking ------------------------------------------------------------------------


@dataclass
class _State:
    counter: str
    window: str
    increment: int = 1
    increment_from: str | None = None


@dataclass
class _Rule:
    index: int
    name: str
    action: str
    on_deny: str | None
    conditions: list[dict[str, Any]]
    state: _State | None
    rate_limit: tuple[int, str] | None


@dataclass
class _Tool:
    name: str
    rules: list[_Rule]


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


class _Checker:
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

    def state(self, value: Any, pointer: str, where: str) -> _State | None:
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
        return _State(counter, str(window), increment, increment_from)

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

    def rule(self, value: Any, index: int, pointer: str, tool: str) -> _Rule | None:
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
        return _Rule(index, name, action, on_deny, conditions, state, rate_limit)

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


def _read(document: Any, lines: Mapping[str, int]) -> tuple[Any, list[_Tool], _Checker]:
    c = _Checker(lines)
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
    tools: list[_Tool] = []
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
        tools.append(_Tool(name, rules))
    if c.errors:
        raise InterceptError(c.errors)
    return document, tools, c


def _scope(tool: str) -> str:
    return "_global" if tool == "*" else tool


def _counter_of(rule: _Rule) -> str | None:
    if rule.rate_limit is not None:
        return f"_rate_{rule.rate_limit[1]}"
    return rule.state.counter if rule.state else None


def _check_counters(c: _Checker, tool: str, rules: list[_Rule], pointer: str) -> None:
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
            if not any(path == f"state.{_scope(tool)}.{k}" for k in defined):
                c.error(
                    f"{pointer}/rules/{r.index}",
                    f"tools.{tool}.rules[{r.index}]",
                    f"condition references {path} but no matching state block found",
                )


# --- converting ----------------------------------------------------------------------------------


def args_path(path: str) -> str:
    """An Intercept ``args.a.b`` path in policy v1's syntax: each dot descends one key."""
    out = "args"
    for segment in path[len("args.") :].split("."):
        if _PLAIN_SEGMENT.fullmatch(segment):
            out += "." + segment
        else:
            escaped = segment.replace("\\", "\\\\").replace('"', '\\"')
            out += f'["{escaped}"]'
    return out


class _Converter:
    def __init__(self) -> None:
        self.notes: list[Note] = []
        self._once: set[str] = set()

    def note(self, where: str, kind: NoteKind, text: str) -> None:
        self.notes.append(Note(where, kind, text))

    def note_once(self, key: str, where: str, kind: NoteKind, text: str) -> None:
        if key not in self._once:
            self._once.add(key)
            self.note(where, kind, text)

    def condition(self, c: dict[str, Any], where: str) -> dict[str, Any]:
        op = c["op"]
        if op in ("eq", "neq", "in", "not_in", "contains"):
            self.note_once(
                "types",
                where,
                "approximated",
                'Intercept compares numbers by value and anything else by its text ("5" '
                "equals 5); policy v1 never coerces: an argument whose type differs from the "
                "operand's cannot be evaluated, and the call is denied (CONDITION_FAILED). "
                "Calls whose arguments have the operand's type are decided alike.",
            )
        if op == "exists":
            self.note_once(
                "null",
                where,
                "approximated",
                "Intercept counts an argument that is null as absent; policy v1 counts it as "
                "present (exists holds).",
            )
        self.note_once(
            "case",
            where,
            "approximated",
            "policy v1 cannot evaluate an argument path while a key differing from it only "
            "by case is present (an MCP server decoding case-insensitively could read that "
            "one), and denies; Intercept reads the exact key, or treats it as missing.",
        )
        return {"path": args_path(c["path"]), "op": op, "value": c["value"]}

    def limit(
        self, tool: str, rule: _Rule, bounds: list[tuple[str, float]], where: str
    ) -> dict[str, Any] | None:
        """The limit for a rule's counter under its ``lt``/``lte`` bounds; None when no call
        can ever fit (the caller denies the tool)."""
        state = rule.state
        assert state is not None
        counter = f"{_scope(tool)}.{state.counter}"
        limit: dict[str, Any] = {"counter": counter, "window": state.window, "scope": "global"}
        if state.increment_from is not None:
            limit["cost"] = args_path(state.increment_from)
            maxes = []
            for op, n in bounds:
                if op == "lt":
                    maxes.append(n - COST_STEP)
                    self.note(
                        where,
                        "approximated",
                        f"lt {n:g} on an amount: converted to at most {n - COST_STEP:g}, exact for "
                        "amounts in thousandths (policy v1 counts costs rounded up to 0.001).",
                    )
                else:
                    maxes.append(n)
            top = min(maxes)
            self.note(
                where,
                "approximated",
                "policy v1 refuses a negative or non-numeric amount (INVALID_REQUEST); Intercept "
                "would add it as it is.",
            )
        else:
            k = state.increment
            maxes = [math.ceil(n / k) - 1 if op == "lt" else math.floor(n / k) for op, n in bounds]
            top = min(maxes)
            if k != 1:
                self.note(
                    where,
                    "approximated",
                    f"increment {k}: counted as one call each, at most {top} calls "
                    f"(the same calls as {k} each up to the bound)",
                )
        if top <= 0:
            self.note(
                where,
                "approximated",
                "no call can ever fit this counter's bound: the tool is denied (RULE_DENY)",
            )
            return None
        if top > MAX_MAX:
            self.note(where, "approximated", f"bound {top:g} is above policy v1's 10^9: capped")
            top = MAX_MAX
        limit["max"] = top if state.increment_from is not None else int(top)
        self.note_once(
            f"window:{state.window}",
            where,
            "approximated",
            f"Intercept's {state.window} windows are calendar windows (UTC, reset at the start "
            f"of each {state.window}); policy v1's are sliding: at most the bound in any "
            f"{state.window}, so never more than Intercept allows in a calendar {state.window}, "
            "but a burst at the end of one and the start of the next is refused.",
        )
        self.note_once(
            "rollback",
            where,
            "approximated",
            "Intercept gives a counter back when the upstream call fails; with toolgate the "
            "proxy releases the decision's reservation (Release) for that.",
        )
        if rule.on_deny:
            self.note(
                where,
                "approximated",
                "a limit's denial is RATE_LIMITED with toolgate's own reason (with a "
                "retry-after), not this rule's on_deny",
            )
        return limit

    def tool(self, tool: _Tool) -> dict[str, Any]:
        """The policy v1 rule for one Intercept tool entry (or ``"*"``)."""
        base = f"tools.{tool.name}"
        # An unconditional deny decides the tool whatever its other rules say.
        for r in tool.rules:
            if r.action == "deny":
                return {"action": "deny", "reason": r.on_deny or f"Denied by rule {r.name!r}"}
        # Notes made before the tool turns out to be denied outright are not kept.
        notes_before, once_before = len(self.notes), set(self._once)
        requires: list[dict[str, Any]] = []
        limits: list[dict[str, Any]] = []
        fail_closed: list[str] = []
        counters = {r.state.counter: r for r in tool.rules if r.state is not None}
        for r in tool.rules:
            where = f'{base}.rules[{r.index}] ("{r.name}")'
            message = r.on_deny or f"Denied by rule {r.name!r}"
            if r.rate_limit is not None:
                count, window = r.rate_limit
                r.state = _State(f"_rate_{window}", window)
                r.conditions = [
                    {
                        "path": f"state.{_scope(tool.name)}._rate_{window}",
                        "op": "lte",
                        "value": count,
                    }
                ]
                counters[r.state.counter] = r
            args_conditions = []
            bounds: list[tuple[str, float]] = []
            own = f"state.{_scope(tool.name)}.{r.state.counter}" if r.state else None
            for c in r.conditions:
                if c["path"].startswith("args."):
                    args_conditions.append(self.condition(c, where))
                elif c["path"] == own and c["op"] in ("lt", "lte"):
                    bounds.append((c["op"], float(c["value"])))
                else:
                    fail_closed.append(where)
                    self.note(
                        where,
                        "not expressible",
                        f"{c['path']} {c['op']} {json.dumps(c['value'])}: policy v1 limits a "
                        "counter only by an upper bound on the counter the rule itself counts; "
                        "the converted tool denies every call (fail closed): rewrite it by hand",
                    )
            if args_conditions:
                requires.append({"conditions": args_conditions, "on_deny": message})
            if r.state is not None:
                if bounds:
                    limit = self.limit(tool.name, r, bounds, where)
                    if limit is None:
                        fail_closed.append(where)
                    else:
                        limits.append(limit)
                elif not any(c["path"] == own for other in tool.rules for c in other.conditions):
                    self.note(
                        where,
                        "ignored",
                        f"counter {r.state.counter!r} has no lt/lte bound on it: it limits "
                        "nothing, and is not converted",
                    )
        if fail_closed:
            self.notes[notes_before:] = [
                n for n in self.notes[notes_before:] if n.kind == "not expressible"
            ]
            self._once = once_before
            return {
                "action": "deny",
                "reason": "denied: this rule, converted from Intercept, holds a condition "
                "policy v1 cannot express (" + "; ".join(dict.fromkeys(fail_closed)) + ")",
            }
        rule: dict[str, Any] = {}
        if requires:
            rule["require"] = requires
        if limits:
            rule["limits"] = limits
        return rule


def convert(document: Any, lines: Mapping[str, int] | None = None) -> Conversion:
    """Convert a parsed Intercept policy (as ``yaml.safe_load`` or ``read_document`` gives
    it). Raises :class:`InterceptError` when it is not a valid Intercept policy."""
    document, tools, checker = _read(document, lines or {})
    conv = _Converter()
    conv.notes.extend(checker.notes)
    policy: dict[str, Any] = {"version": "1", "default": document.get("default") or "allow"}
    hide = [policy_key(h) if h != "*" else "*" for h in document.get("hide") or []]
    if hide:
        policy["hide"] = hide
    converted_tools: dict[str, Any] = {}
    for tool in tools:
        rule = conv.tool(tool)
        if tool.name == "*":
            if rule:
                policy["all_tools"] = rule
        else:
            converted_tools[policy_key(tool.name)] = rule
    policy["tools"] = converted_tools
    try:
        Policy.from_dict(policy)
    except PolicyError as err:
        raise InterceptError(
            [
                f"the converted policy does not load: {e.pointer or '/'}: {e.message}"
                for e in err.errors
            ]
        ) from None
    description = document.get("description")
    return Conversion(policy, conv.notes, description if isinstance(description, str) else None)


def convert_text(text: str) -> Conversion:
    """Convert Intercept YAML (or JSON) text."""
    try:
        document, lines = read_document(text)
    except ValueError as err:
        raise InterceptError([str(err)]) from None
    return convert(document, lines)


def convert_file(path: str | Path) -> Conversion:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InterceptError([f"cannot read: {err}"]) from None
    return convert_text(text)


def to_yaml_with_notes(conv: Conversion, source: str) -> str:
    """The policy as YAML, headed by comments saying where it came from and what is not exact."""
    head = [f"# Converted from Intercept's policy {source} by `toolgate import intercept`."]
    if conv.description:
        head.append(f"# Description: {' '.join(conv.description.split())}")
    if conv.notes:
        head.append("# Not exact:" if not conv.exact else "# Notes:")
        for n in conv.notes:
            head.append(f"# - {' '.join(str(n).split())}")
    return "\n".join(head) + "\n" + to_yaml(conv.policy)


# --- the command ---------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    try:
        conv = convert_file(args.file)
    except InterceptError as err:
        for e in err.errors:
            print(f"{args.file}: {e}", file=sys.stderr)
        return 1
    if args.format == "json":
        text = json.dumps(conv.policy, indent=2, ensure_ascii=False) + "\n"
    else:
        text = to_yaml_with_notes(conv, args.file)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    if not args.quiet:
        for n in conv.notes:
            print(f"{args.file}: {n}", file=sys.stderr)
        exact = "exactly" if conv.exact else "with the approximations above"
        print(f"{args.file}: converted {exact}", file=sys.stderr)
    return 1 if args.strict and not conv.exact else 0


def add_command(sub: Any) -> None:
    """Register ``toolgate import intercept`` on the CLI's subparsers."""
    imp = sub.add_parser("import", help="convert another tool's policy to policy v1")
    formats = imp.add_subparsers(dest="source", required=True)
    intercept = formats.add_parser(
        "intercept",
        help="a policy of PolicyLayer's Intercept (YAML); what cannot be said exactly is "
        "reported on stderr and as comments",
    )
    intercept.add_argument("file", metavar="FILE")
    intercept.add_argument("-o", "--output", metavar="OUT", help="write the policy here")
    intercept.add_argument(
        "--format", choices=["yaml", "json"], default="yaml", help="the converted policy's format"
    )
    intercept.add_argument("-q", "--quiet", action="store_true", help="do not list the notes")
    intercept.add_argument(
        "--strict", action="store_true", help="exit 1 when anything was approximated"
    )
    intercept.set_defaults(run=_run)
