"""How the sidecar runs approvals (``toolgate serve``'s approvals options): where they live,
the admin listener, the webhook, and the bounds on what they keep. The one place their
defaults are written; the command line reads them here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from toolgate._core import (
    DEFAULT_PENDING_PER_GRANT,
    DEFAULT_PENDING_PER_RULE,
    DEFAULT_PREVIEW_BYTES,
)


@dataclass
class ApprovalOptions:
    #: Where approvals live (the table file, the SQLite store, the credential-hashing key);
    #: None: a private temporary directory, gone when the sidecar stops.
    state_dir: Path | None = None
    admin_listen: str = "127.0.0.1:50052"
    #: ``NAME TOKEN`` lines; without it there is no admin listener (nobody can approve).
    admin_tokens: Path | None = None
    webhook: str | None = None
    webhook_secret: Path | None = None
    #: ``json`` or ``slack`` (toolgate.sidecar.approvals.webhook.FORMATS).
    webhook_format: str = "json"
    #: Deliveries under way at once, and the seconds a receiver has to answer one.
    webhook_workers: int = 4
    webhook_timeout: float = 5.0
    #: Pending approvals one grant, and one rule, may have at once.
    pending_per_grant: int = DEFAULT_PENDING_PER_GRANT
    pending_per_rule: int = DEFAULT_PENDING_PER_RULE
    #: Bytes of a call's arguments kept and shown.
    preview_bytes: int = DEFAULT_PREVIEW_BYTES
    #: Seconds finished approvals (used, denied, expired) are kept: 7 days.
    retention_s: float = 7 * 24 * 3600
