"""``toolgate serve``'s options as the extension's ``Sidecar`` takes them: the sidecar is
assembled in Rust, in one step (engine, counter store, decision log, approvals, and the
server for ``toolgate.v1.Decider``, Envoy's ``Authorization``, ``ExternalProcessor`` and
``RateLimitService``, ``grpc.health.v1.Health`` and server reflection on one address); no
Python runs on the request path.
"""

from __future__ import annotations

from pathlib import Path

from toolgate._core import SERVICES, EnvoyAuthz, Policy, Sidecar
from toolgate.sidecar.envoy_authz import CheckSettings
from toolgate.sidecar.options import ServeOptions

__all__ = ["SERVICES", "assemble", "envoy_authz"]


def assemble(
    policy: Policy, opts: ServeOptions, *, threads: int, key: bytes, approvals_table: Path
) -> Sidecar:
    """The sidecar ``opts`` describe, on ``policy``, with ``threads`` serving threads; ``key``
    keys every digest of a credential (the decision log's grants and the approvals'
    calls). ValueError for wrong options, OSError for a file that cannot be opened."""
    a = opts.approvals
    return Sidecar(
        policy,
        capacity=opts.capacity,
        reservations=opts.reservations,
        max_argument_bytes=opts.max_argument_bytes,
        per_tool_metrics=opts.metrics_per_tool,
        store=opts.store,
        store_prefix=opts.store_prefix,
        store_timeout_ms=opts.store_timeout_ms,
        store_unavailable=opts.store_unavailable,
        store_mode=opts.store_mode,
        store_flush_ms=opts.store_flush_ms,
        decision_log=opts.decision_log,
        grant_key=key,
        decision_log_filter=opts.decision_log_filter,
        decision_log_rotate_bytes=opts.decision_log_rotate_bytes,
        approvals_table=approvals_table,
        approvals_key=key,
        pending_per_grant=a.pending_per_grant,
        pending_per_rule=a.pending_per_rule,
        preview_bytes=a.preview_bytes,
        listen=opts.listen,
        threads=threads,
        authz=envoy_authz(opts.check),
        trust_server_answers=opts.grant_vouched_by_server,
    )


def envoy_authz(check: CheckSettings) -> EnvoyAuthz:
    """How the server reads ext_authz ``Check`` requests."""
    h = check.headers
    return EnvoyAuthz(
        grant_header=h.grant,
        session_header=h.session,
        agent_header=h.agent,
        server_header=h.server,
        grant_claim=check.grant_claim,
        session_claim=check.session_claim,
        agent_claim=check.agent_claim,
        jwt_payload_key=check.jwt_payload_key,
        max_request_bytes=check.max_request_bytes,
    )
