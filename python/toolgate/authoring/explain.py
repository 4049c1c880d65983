"""``toolgate explain``: how one call is decided, step by step.

The steps come from the engine deciding the call (``Engine.explain``), not from a second
evaluator: the section and why it applies, ``hide``, the rule that won and what the other
matching entries lost on, each condition with the value it saw, each limit with its count and
room, and the decision. A dry run unless ``--consume``. :func:`render` turns the steps into
text; ``--json`` prints them as they are.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from toolgate._core import format_seconds, format_window

_INDENT = "   "


def _value(value: Any, limit: int = 80) -> str:
    """A JSON value for a line of text, long ones cut."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(n: Any) -> str:
    if isinstance(n, float) and n.is_integer():
        return str(int(n))
    return str(n)


def _condition_lines(node: Mapping[str, Any], depth: int) -> list[str]:
    pad = _INDENT * depth
    result = node.get("result", "?")
    if node.get("kind") == "compare":
        seen = f"saw {_value(node['seen'])}" if node.get("present") else "saw nothing (missing)"
        operand = "" if node["op"] == "exists" else f" {_value(node['value'])}"
        if node["op"] == "exists" and node.get("value") is False:
            operand = " false"
        line = f"{pad}{node['path']} {node['op']}{operand}: {seen} → {result}"
        if "problem" in node:
            line += f" ({node['problem']})"
        return [line]
    lines = [f"{pad}{node.get('kind', '?')} → {result}"]
    for child in node.get("items", []):
        lines.extend(_condition_lines(child, depth + 1))
    return lines


def _limit_line(limit: Mapping[str, Any]) -> str:
    whose = f"per {limit['scope']}"
    if limit.get("scope_value") is not None:
        whose += f" {_value(limit['scope_value'])}"
    unit = f" of {limit['cost']}" if limit.get("cost") else ""
    text = (
        f"{limit['counter']} ({limit['rule']}): at most {_number(limit['max'])}{unit} "
        f"{whose} in {format_window(limit['window_ms'])}"
    )
    if "used" in limit:
        text += (
            f"; counted {_number(limit['used'])}, room {_number(limit['room'])}; "
            f"this call {_number(limit['amount'])} → "
            + ("fits" if limit["fits"] else "does not fit")
        )
    else:
        text += f"; this call {_number(limit['amount'])}"
    if "remaining" in limit:
        text += f"; {_number(limit['remaining'])} left after"
    return text


def _step_lines(step: Mapping[str, Any]) -> list[str]:
    kind = step.get("step")
    if kind == "section":
        where = f"servers section {step['pointer']}" if step["pointer"] else "top level"
        return [f"section: {where} ({step['why']}); default {step['default']}, mode {step['mode']}"]
    if kind == "hide":
        if step.get("matched") is None:
            return ["hide: no entry matches"]
        m = step["matched"]
        return [f"hide: {_value(m['pattern'])} ({m['pointer']}) matches: the tool is hidden"]
    if kind == "rule":
        if step.get("matched") is None:
            return [f"rule: none for {_value(step['tool'])}: {step['why']}"]
        m = step["matched"]
        lines = [f"rule: {m['pointer']}, {m['kind']} {_value(m['pattern'])}: {step['why']}"]
        for other in step.get("others", []):
            lines.append(
                f"{_INDENT}also matches {_value(other['pattern'])} ({other['pointer']}): "
                f"loses, {other['lost_because']}"
            )
        return lines
    if kind == "rules":
        parts = []
        for r in step["rules"]:
            mode = "" if r["mode"] == "section" else f", {r['mode']}"
            parts.append(
                f"{r['pointer']} (action {r['action']}{mode}; {r['deny_if']} deny_if, "
                f"{r['require']} require, {r['limits']} limits)"
            )
        return ["rules that apply: " + ("; ".join(parts) if parts else "none")]
    if kind == "action":
        effect = "would deny (shadow mode)" if step["shadow"] else "denies the call (RULE_DENY)"
        return [f"action: {step['rule']} is action deny: {effect}"]
    if kind == "condition":
        effect = "denies" if step["denies"] else "passes"
        head = f"{step['list']} {step['pointer']}"
        if "on_deny" in step:
            head += f", on_deny {_value(step['on_deny'])}"
        lines = [f"{head}: {step['result']} → {effect}"]
        children = [step["condition"]] if "condition" in step else step.get("conditions", [])
        for child in children:
            lines.extend(_condition_lines(child, 1))
        return lines
    if kind == "limits":
        group = "shadow limits" if step["shadow"] else "limits"
        lines = [f"{group}: {step['outcome']}"]
        if step.get("retry_after_ms") is not None:
            lines[0] += f"; retry in {format_seconds(step['retry_after_ms'])}"
        lines.extend(_INDENT + _limit_line(limit) for limit in step["limits"])
        return lines
    if kind == "approval":
        return [f"approval: {step['rule']}: {step['why']}"]
    if kind == "confirmation":
        return [f"confirmation: {step['rule']}: {step['why']}"]
    if kind == "shadow":
        return [
            f"shadow: would be {step['code']} by {step['rule']} ({step['reason']}); {step['why']}"
        ]
    if kind == "decision":
        line = f"decision: {step['verdict']} {step['code']}"
        if step.get("rule"):
            line += f" by {step['rule']}"
        line += f": {step['reason']}"
        if step.get("shadow"):
            line += " (shadow: enforcing would not allow it)" if step["verdict"] == "ALLOW" else ""
        if step.get("retry_after_ms") is not None and "retry" not in step["reason"]:
            line += f"; retry after {step['retry_after_ms']} ms"
        return [line]
    return [json.dumps(step)]


def marks_line(marks: Mapping[str, Any] | None, *, dry_run: bool) -> str | None:
    """The session marks a decision read (and what each was) and set, or None if it used
    none."""
    if not marks:
        return None
    parts = []
    if marks["read"]:
        read = ", ".join(f"{name} ({state})" for name, state in sorted(marks["read"].items()))
        parts.append(f"read {read}")
    if marks["set"]:
        parts.append(("would set " if dry_run else "set ") + ", ".join(marks["set"]))
    return "marks: " + "; ".join(parts) if parts else None


def render(steps: Iterable[Mapping[str, Any]]) -> str:
    """The steps as numbered lines of text."""
    out: list[str] = []
    for i, step in enumerate(steps, 1):
        lines = _step_lines(step)
        number = f"{i}. "
        out.append(number + lines[0])
        out.extend(" " * len(number) + line for line in lines[1:])
    return "\n".join(out) + "\n"
