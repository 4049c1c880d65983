"""Pins files: the tool definitions a person reviewed, per server, that a policy's ``pins``
holds servers to. Recording them from a server's ``tools/list``, and saying readably what
changed since (the description's text, the schema's fields, the annotations, every other
member's values).

The digest is the engine's (``toolgate._core.tool_digest``), so a pin written here matches
what the sidecar computes from the same listing, byte for byte.

    {"version": "1",
     "tools": {"echo": {"digest": "sha256:…", "definition": {…}}},
     "servers": {"crm": {"tools": {"read_contact": {"digest": "sha256:…", "definition": {…}}}}}}
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolgate._core import inert, tool_digest
from toolgate.files import check_regular, read_regular


class PinsError(Exception):
    """A pins file or a listing that cannot be pinned: the message says which and why."""


def digest(tool: Mapping[str, Any]) -> str:
    """A tool's pin digest (``sha256:`` and 64 hex digits)."""
    try:
        return tool_digest(json.dumps(tool, ensure_ascii=False))
    except ValueError as err:
        raise PinsError(f"tool {inert(str(tool.get('name')))}: {err}") from err


def kept(tool: Mapping[str, Any]) -> dict[str, Any]:
    """What a pin keeps of ``tool``: all of it, as the digest covers all of it (members
    sorted, so that a pins file reads the same whatever order a server lists them in)."""
    return dict(sorted(tool.items()))


def read(path: Path) -> dict[str, Any]:
    """A pins file's document, or an empty one when there is no file yet."""
    try:
        text = read_regular(path).decode("utf-8")
    except FileNotFoundError:
        return {"version": "1", "tools": {}, "servers": {}}
    except OSError as err:
        raise PinsError(f"{path}: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise PinsError(f"{path}: not UTF-8: {err}") from err
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise PinsError(f"{path}: not JSON: {err}") from err
    if not isinstance(document, dict) or document.get("version") != "1":
        raise PinsError(f'{path}: not a pins file (expected {{"version": "1", ...}})')
    for key in ("tools", "servers"):
        if not isinstance(document.setdefault(key, {}), dict):
            raise PinsError(f"{path}: {key} is not an object")
    return document


def section(document: Mapping[str, Any], server: str | None) -> dict[str, Any]:
    """The pins of ``server`` (of calls naming no server, with None): name -> pin."""
    if server is None:
        return dict(document.get("tools", {}))
    entry = document.get("servers", {}).get(server, {})
    return dict(entry.get("tools", {})) if isinstance(entry, Mapping) else {}


def by_name(listed: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The listed tools by name; a name listed twice cannot be pinned (which one is meant?)."""
    tools: dict[str, Mapping[str, Any]] = {}
    for tool in listed:
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise PinsError("a listed tool has no name: nothing can be pinned for it")
        if name in tools:
            raise PinsError(f"tool {inert(name)} is listed twice: which one to pin is unclear")
        tools[name] = tool
    return tools


@dataclass
class Change:
    """How one tool stands against its pin."""

    name: str
    #: "same", "changed", "new" (listed, no pin) or "gone" (pinned, no longer listed).
    kind: str
    pinned: Mapping[str, Any] | None = None
    listed: Mapping[str, Any] | None = None
    lines: list[str] = field(default_factory=list)


def compare(pins: Mapping[str, Any], listed: Mapping[str, Mapping[str, Any]]) -> list[Change]:
    """Every tool pinned or listed, by name, and what differs."""
    changes = []
    for name in sorted(set(pins) | set(listed)):
        pin, tool = pins.get(name), listed.get(name)
        if tool is None:
            changes.append(Change(name, "gone", pinned=(pin or {}).get("definition")))
        elif pin is None:
            changes.append(Change(name, "new", listed=tool))
        elif pin.get("digest") == digest(tool):
            changes.append(Change(name, "same", pin.get("definition"), tool))
        else:
            before = pin.get("definition")
            lines = describe(before, tool) if isinstance(before, Mapping) else []
            if not lines:
                lines = ["  the definition differs from the pin (the pins file keeps no copy)"]
            changes.append(Change(name, "changed", before, tool, lines))
    return changes


def describe(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """What differs between two definitions of a tool, for a person: every string the
    server sent made inert."""
    lines: list[str] = []
    for key in ("title", "description"):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        lines.append(f"  {key}:")
        diff = difflib.unified_diff(
            _text(old).splitlines(), _text(new).splitlines(), lineterm="", n=1
        )
        lines.extend(f"    {inert(line)}" for line in list(diff)[2:])
    for key in ("inputSchema", "outputSchema"):
        old, new = _fields(before.get(key)), _fields(after.get(key))
        if before.get(key) == after.get(key):
            continue
        added = sorted(set(new) - set(old))
        removed = sorted(set(old) - set(new))
        retyped = sorted(f for f in set(old) & set(new) if old[f] != new[f])
        parts = [
            f"{label} {', '.join(inert(f) for f in names)}"
            for label, names in (("added", added), ("removed", removed), ("changed", retyped))
            if names
        ]
        if not parts:
            a, b = before.get(key), after.get(key)
            a, b = (x if isinstance(x, Mapping) else {} for x in (a, b))
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            parts = [f"changed {', '.join(inert(k) for k in keys) or 'its type'}"]
        lines.append(f"  {key}: " + "; ".join(parts))
    old_hints, new_hints = before.get("annotations") or {}, after.get("annotations") or {}
    if old_hints != new_hints and isinstance(old_hints, Mapping) and isinstance(new_hints, Mapping):
        moved = [
            f"{inert(k)} {_shown(old_hints.get(k, _UNSET))} -> {_shown(new_hints.get(k, _UNSET))}"
            for k in sorted(set(old_hints) | set(new_hints))
            if old_hints.get(k) != new_hints.get(k)
        ]
        lines.append("  annotations: " + ", ".join(moved))
    elif old_hints != new_hints:
        lines.append("  annotations: changed")
    for key in sorted((set(before) | set(after)) - _DESCRIBED):
        if key in before and key in after:
            leaves = _changed_leaves(before[key], after[key])
            if leaves:
                lines.append(f"  {inert(key)}: " + "; ".join(leaves))
        elif key in before or key in after:
            verb = "added" if key in after else "removed"
            value = after[key] if key in after else before[key]
            lines.append(f"  {inert(key)}: {verb} {_shown(value, 120)}")
    return lines


#: Members described above in their own terms; every other member is described by its values.
_DESCRIBED = {"name", "title", "description", "inputSchema", "outputSchema", "annotations"}


def _changed_leaves(old: Any, new: Any, path: str = "") -> list[str]:
    """Where two values differ, by dotted path (``ui.resourceUri "a" -> "b"``), objects
    walked into and anything else compared as the digest does."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[str] = []
        for k in sorted(set(old) | set(new), key=str):
            out.extend(_changed_leaves(old.get(k, _UNSET), new.get(k, _UNSET), f"{path}{k}."))
        return out
    if _canonical(old) == _canonical(new):
        return []
    where = inert(path.rstrip(".")) + " " if path else ""
    return [f"{where}{_shown(old, 120)} -> {_shown(new, 120)}"]


_UNSET = object()


def _canonical(value: Any) -> str:
    """As the digest reads a value: keys sorted, a whole float as its integer."""
    if value is _UNSET:
        return ""

    def whole(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, Mapping):
            return {k: whole(x) for k, x in v.items()}
        if isinstance(v, list):
            return [whole(x) for x in v]
        return v

    return json.dumps(whole(value), sort_keys=True, ensure_ascii=False)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else json.dumps(value)


def _shown(value: Any, limit: int | None = None) -> str:
    if value is _UNSET:
        return "(unset)"
    text = json.dumps(value, ensure_ascii=False)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    return inert(text)


def _fields(schema: Any) -> dict[str, Any]:
    """A schema's fields by dotted path (``to``, ``address.city``), with what each says, and
    whether each is required."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if not isinstance(node, Mapping):
            return
        required = node.get("required")
        required = set(required) if isinstance(required, list) else set()
        properties = node.get("properties")
        if not isinstance(properties, Mapping):
            return
        for name, sub in properties.items():
            path = f"{prefix}{name}"
            out[path] = (
                {k: v for k, v in sub.items() if k != "properties"}
                if isinstance(sub, Mapping)
                else sub,
                name in required,
            )
            walk(sub, f"{path}.")

    walk(schema, "")
    return out


def pinned(
    document: dict[str, Any],
    server: str | None,
    listed: Mapping[str, Mapping[str, Any]],
    only: Iterable[str] = (),
) -> dict[str, Any]:
    """``document`` with ``server``'s pins made the listing's: every listed tool pinned and
    every unlisted one dropped, or, with ``only``, just those tools (pinned or dropped)."""
    pins = section(document, server)
    names = set(only)
    unknown = sorted(names - set(listed) - set(pins))
    if unknown:
        raise PinsError(f"not listed and not pinned: {', '.join(inert(n) for n in unknown)}")
    for name in names or set(pins) | set(listed):
        if name in listed:
            pins[name] = {"digest": digest(listed[name]), "definition": kept(listed[name])}
        else:
            pins.pop(name, None)
    out = dict(document)
    pins = dict(sorted(pins.items()))
    if server is None:
        out["tools"] = pins
    else:
        out["servers"] = {**out.get("servers", {}), server: {"tools": pins}}
    return out


def write(path: Path, document: Mapping[str, Any]) -> None:
    """Write the pins file whole or not at all (a reload never reads half of it); a file
    that already holds exactly this is left alone (nor reloaded by a sidecar watching it)."""
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    with contextlib.suppress(OSError, UnicodeDecodeError):
        if path.read_text(encoding="utf-8") == text:
            return
    try:
        check_regular(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = 0o644
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as err:
        raise PinsError(f"{path}: cannot write it: {err.strerror or err}") from err
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
