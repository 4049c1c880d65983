"""Approvals as the store holds them (``Row``), their states as approvers see them, and pages
of them with the token of the page after."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: States as approvers see them. USED: the approved call ran. EXPIRED: PENDING or APPROVED
#: past its deadline (computed when read, never stored).
STATES = ("PENDING", "APPROVED", "DENIED", "USED", "EXPIRED")


@dataclass(frozen=True)
class Row:
    """One approval as the store holds it."""

    id: str
    key: str
    server: str | None
    tool: str
    grant: str | None
    session: str | None
    agent: str | None
    arguments: str
    arguments_digest: str
    rule: str
    revision: str
    approvers: list[str]
    created_ms: int
    timeout_ms: int
    deadline_ms: int
    stored_state: str
    decided_by: str | None
    decided_ms: int | None
    reason: str | None
    used_ms: int | None
    #: ``arguments`` is a preview of at most the store's preview size: whether the call's
    #: arguments were longer, and their whole size in bytes.
    arguments_cut: bool
    arguments_bytes: int
    #: Whom it counts against for the pending caps (32 hex digits; None: not known).
    owner: str | None

    def state(self, now_ms: int) -> str:
        live = self.deadline_ms > now_ms
        if self.stored_state in ("PENDING", "APPROVED") and not live:
            return "EXPIRED"
        return self.stored_state

    def to_dict(self, now_ms: int) -> dict[str, Any]:
        """The approval as approvers see it: never its key or owner (digests of the call,
        for the engine's table only)."""
        d = {k: v for k, v in vars(self).items() if k not in _INTERNAL}
        d["state"] = self.state(now_ms)
        return d


#: Row fields that are the engine's, not the approvers'.
_INTERNAL = ("stored_state", "key", "owner")


@dataclass(frozen=True)
class Page:
    """Approvals, newest first, and the token of the page after them (None: the last)."""

    rows: list[Row]
    next_token: str | None


def page_token(last: Row) -> str:
    """The token of the page that starts after ``last``."""
    return f"{last.created_ms}.{last.id}"


def read_page_token(token: str) -> tuple[int, str]:
    """A page token's creation time and id; ValueError if it is not one."""
    created_ms, _, id = token.partition(".")
    if not created_ms.isdigit() or not id.startswith("apr_"):
        raise ValueError(f"not a page token: {token[:64]!r}")
    return int(created_ms), id
