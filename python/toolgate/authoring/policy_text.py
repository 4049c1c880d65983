"""Policies written as text for people to read and edit: JSON as PolicyLayer writes it, or
block YAML with comments, and the policy key that names exactly one tool."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from toolgate._core import is_mcp_tool_name

_GLOB_CHARS = re.compile(r"([*?\[])")
#: Characters a one-character class holds as themselves (``[!...]`` negates a class).
_PLAIN_IN_CLASS = re.compile(r"[^!^]")


def policy_key(name: str) -> str:
    """The policy key that matches exactly the tool ``name``: the name itself; or, if it holds
    glob characters, a glob with each of them in a one-character class (``a*b`` → ``a[*]b``);
    or, for any other name MCP does not allow (a policy refuses it as a key, as a typo), a
    glob with its first character in a class (``my tool`` → ``[m]y tool``)."""
    if _GLOB_CHARS.search(name):
        return _GLOB_CHARS.sub(r"[\1]", name)
    plain = _PLAIN_IN_CLASS.search(name)
    if is_mcp_tool_name(name) or plain is None:
        return name
    i = plain.start()
    return f"{name[:i]}[{name[i]}]{name[i + 1 :]}"


def has_policy_key(name: str) -> bool:
    """Whether some key matches exactly the tool ``name`` (not a name made only of ``!`` and
    ``^``, which MCP does not allow and no one-character class holds)."""
    return is_mcp_tool_name(name) or _PLAIN_IN_CLASS.search(name) is not None


def to_json(policy: Mapping[str, Any]) -> str:
    """The policy as PolicyLayer writes it: two-space indented JSON."""
    return json.dumps(policy, indent=2, ensure_ascii=False) + "\n"


def _flow(value: Any) -> str:
    # JSON is YAML's flow style: a double-quoted JSON string, number, list or object is valid YAML.
    return json.dumps(value, ensure_ascii=False)


def _emit(lines: list[str], head: str, value: Any, indent: int, notes: Mapping[str, str]) -> None:
    """``head`` (``key:`` or ``-``) and ``value`` as block YAML at ``indent`` spaces; a key or
    list item found in ``notes`` gets its note as a comment line above it."""
    pad = " " * indent
    if isinstance(value, Mapping) and value and head != "-":
        lines.append(f"{pad}{head}")
        for key, item in value.items():
            if key in notes:
                lines.append(f"{pad}  # {notes[key]}")
            _emit(lines, f"{_flow(str(key))}:", item, indent + 2, {})
    elif isinstance(value, list) and value:
        lines.append(f"{pad}{head}")
        for item in value:
            if isinstance(item, str) and item in notes:
                lines.append(f"{pad}  # {notes[item]}")
            _emit(lines, "-", item, indent + 2, {})
    else:
        lines.append(f"{pad}{head} {_flow(value)}")


def to_yaml(policy: Mapping[str, Any], notes: Mapping[str, str] | None = None) -> str:
    """The policy as block YAML, every string quoted; a key of ``tools`` or an entry of
    ``hide`` found in ``notes`` gets its note as a comment line above it."""
    lines: list[str] = []
    for key, value in policy.items():
        _emit(lines, f"{key}:", value, 0, (notes or {}) if key in ("tools", "hide") else {})
    return "\n".join(lines) + "\n"
