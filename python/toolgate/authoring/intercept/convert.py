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

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolgate import Policy, PolicyError
from toolgate._core import MAX_MAX, read_document
from toolgate.authoring.intercept.read import (
    InterceptError,
    Note,
    NoteKind,
    Rule,
    State,
    Tool,
    counter_scope,
    read_policy,
)
from toolgate.authoring.policy_text import policy_key, to_yaml

#: Policy v1 counts costs in thousandths.
COST_STEP = 0.001
_PLAIN_SEGMENT = re.compile(r"[^.\[\]\"']+")


@dataclass
class Conversion:
    """The converted policy (a dict for ``Policy.from_dict``) and what was not exact."""

    policy: dict[str, Any]
    notes: list[Note] = field(default_factory=list)
    description: str | None = None

    @property
    def exact(self) -> bool:
        return all(n.kind in ("ignored", "stricter") for n in self.notes)


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
                "stricter",
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
            "stricter",
            "policy v1 cannot evaluate an argument path while a key differing from it only "
            "by case is present (an MCP server decoding case-insensitively could read that "
            "one), and denies; Intercept reads the exact key, or treats it as missing.",
        )
        return {"path": args_path(c["path"]), "op": op, "value": c["value"]}

    def limit(
        self, tool: str, rule: Rule, bounds: list[tuple[str, float]], where: str
    ) -> dict[str, Any] | None:
        """The limit for a rule's counter under its ``lt``/``lte`` bounds; None when no call
        can ever fit (the caller denies the tool)."""
        state = rule.state
        assert state is not None
        counter = f"{counter_scope(tool)}.{state.counter}"
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

    def tool(self, tool: Tool) -> dict[str, Any]:
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
                r.state = State(f"_rate_{window}", window)
                r.conditions = [
                    {
                        "path": f"state.{counter_scope(tool.name)}._rate_{window}",
                        "op": "lte",
                        "value": count,
                    }
                ]
                counters[r.state.counter] = r
            args_conditions = []
            bounds: list[tuple[str, float]] = []
            own = f"state.{counter_scope(tool.name)}.{r.state.counter}" if r.state else None
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
    document, tools, checker = read_policy(document, lines or {})
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
