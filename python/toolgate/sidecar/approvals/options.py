"""How the sidecar runs approvals (``toolgate serve``'s approvals options): where they live,
the admin listener, the webhook, and how long they are kept (the bounds on what
pending approvals hold are the sidecar's settings). The one place their
defaults are written; the command line reads them here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
    #: Seconds finished approvals (used, denied, expired) are kept: 7 days.
    retention_s: float = 7 * 24 * 3600
