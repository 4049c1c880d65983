"""Turn classified tools into a starter policy in PolicyLayer's policy format.

By default: ``default: deny``; Read tools allowed; Write tools limited to 30 calls per minute per
grant and Execute tools to 10 (counter ``<tool>_rate``, as PolicyLayer's examples name theirs);
Destructive tools hidden; Financial tools require approval. :class:`Options` changes any of these.

Flow rules, where the tools hold both sides of the "lethal trifecta": a reader of private
data (a sensitive read, or a read the server says stays in its own world,
``openWorldHint: false``) marks its caller (its grant: a client cannot shed the mark by
sending another session id, nor sending none, as MCP 2026-07-28 clients do), and every tool
that writes to the outside world (not Read, and not ``openWorldHint: false``) is denied to a
marked caller.

    >>> policy = suggest(classify_all(tools))
    >>> toolgate.Policy.from_dict(policy)       # always loads

Tool names are policy keys, and a key with ``*``, ``?`` or ``[`` is a glob: such names are written
with each of those characters in a class (``[*]``), which matches exactly the name and nothing
else; a name MCP does not allow otherwise (a space), which a policy refuses as a key, with its
first character in a class (``[m]y tool``). Counter names may be any non-empty string;
``<tool>_rate`` is unique per tool.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from toolgate.authoring import policy_text
from toolgate.authoring.policy_text import has_policy_key, policy_key
from toolgate.scanner.categories import CATEGORIES, Category
from toolgate.scanner.classify import Classification

#: What a category's tools get. ``limit``: allowed up to the category's maximum per window.
Treatment = Literal["allow", "limit", "require_approval", "deny", "hide"]
TREATMENTS: tuple[Treatment, ...] = ("allow", "limit", "require_approval", "deny", "hide")
SCOPES = ("grant", "session", "agent", "server", "global")


@dataclass
class Options:
    """The choices behind a starter policy; the defaults are PolicyLayer's recommendations."""

    default: Literal["allow", "deny"] = "deny"
    treatment: dict[Category, Treatment] = field(
        default_factory=lambda: {
            "Read": "allow",
            "Write": "limit",
            "Execute": "limit",
            "Destructive": "hide",
            "Financial": "require_approval",
        }
    )
    #: Calls per window for tools whose treatment is ``limit``.
    max_calls: dict[Category, int] = field(
        default_factory=lambda: {
            "Read": 60,
            "Write": 30,
            "Execute": 10,
            "Destructive": 5,
            "Financial": 5,
        }
    )
    #: What a sensitive read (a Read whose answer holds secrets) gets instead of its
    #: category's treatment: a person sees each secret an agent asks for.
    sensitive_read: Treatment = "require_approval"
    #: Calls per window for sensitive reads if their treatment is ``limit``.
    sensitive_max: int = 5
    window: str = "minute"
    scope: str = "grant"
    #: Text shown to the agent when a tool is denied, with ``{category}`` and ``{reason}``.
    deny_reason: str = "{category} tool, denied by the starter policy ({reason})"
    #: Mark callers that read private data, and keep open-world writers from them.
    flow_rules: bool = True
    #: How long a caller stays marked after it read private data.
    mark_ttl: str = "8h"

    def __post_init__(self) -> None:
        for category, treatment in self.treatment.items():
            if category not in CATEGORIES or treatment not in TREATMENTS:
                raise ValueError(f"no such treatment: {category}={treatment}")
        for category, n in self.max_calls.items():
            if category not in CATEGORIES or n < 1:
                raise ValueError(f"a maximum must be at least 1: {category}={n}")
        if self.sensitive_read not in TREATMENTS:
            raise ValueError(f"no such treatment: sensitive={self.sensitive_read}")
        if self.sensitive_max < 1:
            raise ValueError(f"a maximum must be at least 1: sensitive={self.sensitive_max}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {self.scope!r}")


def counter_name(name: str) -> str:
    """The rate counter of a tool: ``<tool>_rate``, as in PolicyLayer's examples."""
    return f"{name}_rate"


#: The mark a caller gets from reading private data.
PRIVATE_DATA = "private_data"

#: The reason an open-world writer is denied to a marked caller.
FLOW_REASON = (
    "This caller has read private data; tools that reach the outside world may not run for it."
)


def _open_world(annotations: Mapping[str, Any]) -> bool:
    """MCP's default: a tool reaches the outside world unless it says it does not."""
    return annotations.get("openWorldHint") is not False


def reads_private_data(c: Classification, annotations: Mapping[str, Any]) -> bool:
    """A sensitive read, or a read that stays within its server's own (private) world."""
    return c.category == "Read" and (c.sensitive or not _open_world(annotations))


def writes_outside(c: Classification, annotations: Mapping[str, Any]) -> bool:
    """A tool that changes something and may reach the outside world."""
    return c.category != "Read" and _open_world(annotations)


def suggest(
    classifications: Iterable[Classification],
    options: Options | None = None,
    annotations: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """A policy document (a dict, in PolicyLayer's key order) for the classified tools;
    ``annotations`` (each tool's, by name) decide the flow rules."""
    options = options or Options()
    annotations = annotations or {}
    # A tool no key can name alone (its name only '!' and '^') is left to the default.
    classifications = [c for c in classifications if has_policy_key(c.name)]
    tools: dict[str, Any] = {}
    hide: list[str] = []
    for c in classifications:
        key = policy_key(c.name)
        if key in tools or key in hide:
            continue
        treatment = options.sensitive_read if c.sensitive else options.treatment[c.category]
        if treatment == "hide":
            hide.append(key)
        elif treatment == "allow":
            tools[key] = {}
        elif treatment == "limit":
            limit = {
                "counter": counter_name(c.name),
                "window": options.window,
                "max": options.sensitive_max if c.sensitive else options.max_calls[c.category],
                "scope": options.scope,
            }
            tools[key] = {"limits": [limit]}
        elif treatment == "require_approval":
            tools[key] = {"action": "require_approval"}
        else:
            category = f"{c.category} (sensitive)" if c.sensitive else c.category
            reason = options.deny_reason.format(category=category, reason=c.reason)
            tools[key] = {"action": "deny", "reason": reason}
    if options.flow_rules:
        _add_flow_rules(tools, classifications, annotations, options)
    policy: dict[str, Any] = {"version": "1", "default": options.default}
    if hide:
        policy["hide"] = hide
    policy["tools"] = tools
    return policy


def _add_flow_rules(
    tools: dict[str, Any],
    classifications: Sequence[Classification],
    annotations: Mapping[str, Mapping[str, Any]],
    options: Options,
) -> None:
    """Readers of private data mark their caller; open-world writers require no such mark.
    Only where both kinds are among the tools the policy lets run."""
    runs = {k for k, rule in tools.items() if rule.get("action") != "deny"}
    hints = {c.name: annotations.get(c.name, {}) for c in classifications}
    readers = [
        policy_key(c.name)
        for c in classifications
        if policy_key(c.name) in runs and reads_private_data(c, hints[c.name])
    ]
    writers = [
        policy_key(c.name)
        for c in classifications
        if policy_key(c.name) in runs and writes_outside(c, hints[c.name])
    ]
    if not readers or not writers:
        return
    mark = {"name": PRIVATE_DATA, "scope": "grant", "ttl": options.mark_ttl}
    for key in readers:
        tools[key]["marks"] = [dict(mark)]
    marked = {"path": f"marks.{PRIVATE_DATA}", "op": "exists"}
    for key in writers:
        # A group, so that its reason is this rule's alone (not the limits').
        tools[key]["deny_if"] = [{"conditions": [marked], "on_deny": FLOW_REASON}]


def to_yaml(
    policy: Mapping[str, Any], classifications: Sequence[Classification] | None = None
) -> str:
    """The policy as block YAML, every string quoted; with ``classifications``, a comment above
    each tool says what it was classified as and why."""
    notes = {
        policy_key(c.name): " ".join(
            f"{c.category}{' (sensitive read)' if c.sensitive else ''} ({c.risk} risk, "
            f"{c.confidence} confidence): {c.reason}".split()
        )
        for c in classifications or ()
    }
    return policy_text.to_yaml(policy, notes)
