"""``toolgate serve``'s options: the one place their defaults are written (the command line
reads them here; the engine's, the counter store's, approvals' and Envoy's come from the
extension, which defines them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from toolgate._core import (
    DEFAULT_CAPACITY,
    DEFAULT_MAX_ARGUMENT_BYTES,
    DEFAULT_RESERVATIONS,
    DEFAULT_STORE_FLUSH_MS,
    DEFAULT_STORE_PREFIX,
    DEFAULT_STORE_TIMEOUT_MS,
)
from toolgate.sidecar.approvals.options import ApprovalOptions
from toolgate.sidecar.envoy_authz import CheckSettings


@dataclass
class ServeOptions:
    policy: Path | None = None
    listen: str = "127.0.0.1:50051"
    metrics_listen: str | None = "127.0.0.1:9464"
    #: Serving threads; None: one per CPU this process may use.
    threads: int | None = None
    capacity: int = DEFAULT_CAPACITY
    reservations: int = DEFAULT_RESERVATIONS
    max_argument_bytes: int = DEFAULT_MAX_ARGUMENT_BYTES
    reload_interval: float = 1.0
    #: An in-place edit of the policy file is loaded once unchanged for this long (it may be
    #: half-written before); 0 loads it at once. Renames and SIGHUP load at once.
    reload_settle: float = 0.5
    drain: float = 1.0
    grace: float = 10.0
    log_format: str = "text"
    log_level: str = "info"
    metrics_per_tool: bool = False
    #: How ext_authz Check requests are read (subject headers, JWT claims, body limit).
    check: CheckSettings = field(default_factory=CheckSettings)
    #: A grant whose list request an MCP server answered is trusted with the counter
    #: table's and approvals' room (docs/counters.md): only where the server checks the
    #: credential the client sent.
    grant_vouched_by_server: bool = False
    #: Human approvals: the state directory, the admin listener, the webhook.
    approvals: ApprovalOptions = field(default_factory=ApprovalOptions)
    #: The decision log: a file, ``-`` for stdout, None for none; which decisions; the size
    #: at which a file rotates (0: never).
    decision_log: str | None = None
    decision_log_filter: str = "all"
    decision_log_rotate_bytes: int = 100 << 20
    #: Where limits are counted: ``local`` (this process's table) or ``redis://...``
    #: (docs/redis.md), with its key prefix, the time a decision waits for it, and what
    #: happens past that (``deny`` or ``local``).
    store: str = "local"
    store_prefix: str = DEFAULT_STORE_PREFIX
    store_timeout_ms: int = DEFAULT_STORE_TIMEOUT_MS
    store_unavailable: str = "deny"
    #: ``exact`` (a script per decision) or ``cached`` (merged every ``store_flush_ms``).
    store_mode: str = "exact"
    store_flush_ms: int = DEFAULT_STORE_FLUSH_MS
    #: Serve on a Redis whose maxmemory-policy can evict counter keys (refused otherwise),
    #: and how often that policy is read again (toolgate.sidecar.store_eviction).
    store_accept_eviction: bool = False
    store_eviction_check_interval: float = 10.0
