"""``toolgate serve``'s options: the sidecar's own (``SidecarSettings``, whose names, types,
defaults and checks the extension owns) and those of the control plane around it, whose
defaults are written here once (the command line reads them here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from toolgate._core import RELOAD_INTERVAL, RELOAD_SETTLE, SidecarSettings
from toolgate.sidecar.approvals.options import ApprovalOptions


@dataclass
class ServeOptions:
    policy: Path | None = None
    #: The engine, where it counts, its decision log, approvals' bounds, how Envoy's
    #: requests are read, and the gRPC listener (checked when made).
    sidecar: SidecarSettings = field(default_factory=SidecarSettings)
    metrics_listen: str | None = "127.0.0.1:9464"
    reload_interval: float = RELOAD_INTERVAL
    #: An in-place edit of the policy file is loaded once unchanged for this long (it may be
    #: half-written before); 0 loads it at once. Renames and SIGHUP load at once.
    reload_settle: float = RELOAD_SETTLE
    drain: float = 1.0
    grace: float = 10.0
    log_format: str = "text"
    log_level: str = "info"
    #: Human approvals: the state directory, the admin listener, the webhook.
    approvals: ApprovalOptions = field(default_factory=ApprovalOptions)
    #: Serve on a Redis whose maxmemory-policy can evict counter keys (refused otherwise),
    #: and how often that policy is read again (toolgate.sidecar.store_eviction).
    store_accept_eviction: bool = False
    store_eviction_check_interval: float = 10.0
