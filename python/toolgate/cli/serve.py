"""``toolgate serve``: the sidecar's options on the command line, and running it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from toolgate import PolicyError
from toolgate._core import SidecarSettings
from toolgate.cli import exits
from toolgate.cli.parser import (
    non_negative_float,
    positive_float,
    positive_int,
    ratio,
    wait_seconds,
)
from toolgate.cli.serve_config import ConfigError, layered
from toolgate.sidecar.addresses import listen_address, metrics_address
from toolgate.sidecar.approvals.options import ApprovalOptions
from toolgate.sidecar.approvals.webhook import FORMATS
from toolgate.sidecar.options import ServeOptions

#: The sidecar's settings as they are by default; their names, types, choices and checks are
#: the extension's.
SIDECAR = SidecarSettings()
CHOICES = SidecarSettings.CHOICES


def options(args: argparse.Namespace) -> ServeOptions:
    """The options the command line gives; ValueError for a bad one. The sidecar's own are
    passed through by name to ``SidecarSettings``, which checks them."""
    given = {name: getattr(args, name) for name in SIDECAR.as_dict() if hasattr(args, name)}
    return ServeOptions(
        policy=Path(args.policy) if args.policy else None,
        sidecar=SidecarSettings(**given),
        metrics_listen=None if args.metrics_listen == "off" else args.metrics_listen,
        reload_interval=args.reload_interval,
        reload_settle=args.reload_settle,
        drain=args.drain,
        grace=args.grace,
        log_format=args.log_format,
        log_level=args.log_level,
        store_accept_eviction=args.store_accept_eviction,
        store_eviction_check_interval=args.store_eviction_check_interval,
        approvals=ApprovalOptions(
            state_dir=Path(args.state_dir) if args.state_dir else None,
            admin_listen=args.admin_listen,
            admin_tokens=Path(args.admin_tokens) if args.admin_tokens else None,
            webhook=args.approval_webhook,
            webhook_secret=Path(args.approval_webhook_secret)
            if args.approval_webhook_secret
            else None,
            webhook_format=args.approval_webhook_format,
            webhook_workers=args.approval_webhook_workers,
            webhook_timeout=args.approval_webhook_timeout,
            retention_s=args.approval_retention,
        ),
    )


def _run(args: argparse.Namespace) -> int:
    # The sidecar's modules only for serving: other commands never load them.
    from toolgate.sidecar.serve import serve

    words = args.words[args.words.index("serve") + 1 :]
    try:
        args, warnings = layered(args.serve_parser, args, words)
    except ConfigError as err:
        print(f"toolgate serve: {err}", file=sys.stderr)
        return exits.UNUSABLE
    for warning in warnings:
        print(f"toolgate serve: warning: {warning}", file=sys.stderr)
    try:
        return serve(options(args))
    except PolicyError as err:
        for e in err.errors:
            where = f" (line {e.line})" if e.line is not None else ""
            print(f"{args.policy}: {e.pointer or '/'}: {e.message}{where}", file=sys.stderr)
        return exits.UNUSABLE
    except (ValueError, OverflowError) as err:
        # A bad option value (--capacity 0, --threads 0, --metrics-listen without a port or
        # with one out of range): a message, not a traceback.
        print(f"toolgate serve: {err}", file=sys.stderr)
        return exits.UNUSABLE


def add_command(sub: Any) -> None:
    """Register ``toolgate serve`` on the CLI's subparsers; every default is ServeOptions' or
    the sidecar's settings'."""
    defaults = ServeOptions()
    serve = sub.add_parser(
        "serve",
        help="run the decision sidecar (gRPC + /metrics)",
        description="Run the decision sidecar. Every option can also be set in a --config file "
        "(its name without the dashes: 'metrics-listen: off') or by a variable "
        "(TOOLGATE_METRICS_LISTEN=off); a flag wins over its variable, which wins over the file.",
    )
    serve.add_argument(
        "--config",
        metavar="FILE",
        help="a YAML file of options, each as 'name: value' (docs/serve-options.md)",
    )
    serve.add_argument(
        "--policy", metavar="FILE", help="default: a built-in deny-everything policy"
    )
    serve.add_argument(
        "--listen",
        # Read here too, for a message that says what is wrong with the text.
        type=listen_address,
        default=SIDECAR.listen,
        metavar="HOST:PORT",
        help="gRPC: HOST:PORT ([IPv6]:PORT; port 0 for any free one) or unix:PATH",
    )
    serve.add_argument(
        "--metrics-listen",
        type=metrics_address,
        default=defaults.metrics_listen,
        metavar="HOST:PORT",
        help="Prometheus /metrics over HTTP, or 'off'",
    )
    serve.add_argument(
        "--threads",
        type=int,
        default=SIDECAR.threads,
        metavar="N",
        help="serving threads, each serving the connections dealt to it (default: the CPUs "
        "this process may use, counting its affinity and cgroup quota)",
    )
    serve.add_argument(
        "--capacity", type=int, default=SIDECAR.capacity, metavar="N", help="counter-table slots"
    )
    store = serve.add_argument_group(
        "counter store", "where limits are counted: this pod's table, or Redis shared by all"
    )
    store.add_argument(
        "--store",
        default=SIDECAR.store,
        metavar="local|redis://[USER:PASSWORD@]HOST:PORT/DB",
        help="local: this pod's table (default); redis://...: one count for every replica "
        "on that Redis, rediss://... over TLS, redis+sentinel://HOST:PORT[,...]/SERVICE/DB "
        "through Sentinel (docs/redis.md)",
    )
    store.add_argument(
        "--store-prefix",
        default=SIDECAR.store_prefix,
        metavar="PREFIX",
        help="put before every Redis key, so deployments can share one Redis",
    )
    store.add_argument(
        "--store-timeout-ms",
        type=int,
        default=SIDECAR.store_timeout_ms,
        metavar="MS",
        help="how long a decision waits for Redis (default: %(default)s)",
    )
    store.add_argument(
        "--store-mode",
        choices=CHOICES["store_mode"],
        default=SIDECAR.store_mode,
        help="exact: one Redis script per decision, never over a limit (default); cached: "
        "decide on a local copy merged with Redis every --store-flush-ms (faster; may "
        "overshoot, docs/redis.md)",
    )
    store.add_argument(
        "--store-flush-ms",
        type=int,
        default=SIDECAR.store_flush_ms,
        metavar="MS",
        help="cached mode: how often counts are merged with Redis (default: %(default)s)",
    )
    store.add_argument(
        "--store-unavailable",
        choices=CHOICES["store_unavailable"],
        default=SIDECAR.store_unavailable,
        help="when Redis does not answer in time: deny (STORE_UNAVAILABLE, the default) or "
        "count in this pod's own table",
    )
    store.add_argument(
        "--store-accept-eviction",
        action="store_true",
        help="serve even on a Redis whose maxmemory-policy can evict counter keys (any but "
        "noeviction, or one Redis will not tell), which is refused otherwise: a full Redis "
        "then forgets counts and spent limits allow calls again; logged, and reported in "
        "toolgate_store_counters_evictable (docs/redis.md)",
    )
    store.add_argument(
        "--store-eviction-check-interval",
        type=float,
        default=defaults.store_eviction_check_interval,
        metavar="SECONDS",
        help="how often Redis's maxmemory-policy is read again, to report a change (or a "
        "failover to a primary that can evict counter keys)",
    )
    serve.add_argument(
        "--reservations",
        type=int,
        default=SIDECAR.reservations,
        metavar="N",
        help="reservation log lines (64 bytes each; a call with up to two limits takes one)",
    )
    serve.add_argument(
        "--max-argument-bytes",
        type=int,
        default=SIDECAR.max_argument_bytes,
        metavar="N",
        help="larger arguments are refused",
    )
    serve.add_argument(
        "--reload-interval",
        type=float,
        default=defaults.reload_interval,
        metavar="SECONDS",
        help="how often the policy file is looked at for changes",
    )
    serve.add_argument(
        "--reload-settle",
        type=float,
        default=defaults.reload_settle,
        metavar="SECONDS",
        help="load a policy file edited in place only once it has been unchanged this long, "
        "as it may be half-written before; a file renamed into place, and SIGHUP, load at "
        "once; 0 loads in-place edits at once (default: %(default)s)",
    )
    serve.add_argument(
        "--drain",
        type=wait_seconds,
        default=defaults.drain,
        metavar="SECONDS",
        help="on SIGTERM, report NOT_SERVING for this long while still answering",
    )
    serve.add_argument(
        "--grace",
        type=wait_seconds,
        default=defaults.grace,
        metavar="SECONDS",
        help="how long in-flight calls may take on SIGTERM",
    )
    serve.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=defaults.log_format,
        help="the sidecar's own logs",
    )
    serve.add_argument(
        "--log-level",
        type=str.lower,
        choices=["debug", "info", "warning", "error", "critical"],
        default=defaults.log_level,
        help="the least severe level logged",
    )
    serve.add_argument(
        "--metrics-per-tool",
        action="store_true",
        help="export decisions per tool (bounded to 1000 tool names)",
    )
    headers = serve.add_argument_group(
        "Envoy ext_authz", "which request header carries what (lower-case names)"
    )
    headers.add_argument(
        "--grant-header",
        default=SIDECAR.grant_header,
        metavar="NAME",
        help="the grant (credential); for authorization, the Bearer token (default: %(default)s)",
    )
    headers.add_argument(
        "--session-header",
        default=SIDECAR.session_header,
        metavar="NAME",
        help="the session",
    )
    headers.add_argument(
        "--agent-header", default=SIDECAR.agent_header, metavar="NAME", help="the agent"
    )
    headers.add_argument(
        "--server-header",
        default=SIDECAR.server_header,
        metavar="NAME",
        help="the MCP server id, when the route sets no 'server' context extension",
    )
    headers.add_argument(
        "--grant-from",
        default=SIDECAR.grant_from,
        metavar="SOURCE",
        help="'header' (--grant-header) or 'jwt:CLAIM': a claim of the JWT that Envoy's "
        "jwt_authn filter verified (default: %(default)s)",
    )
    headers.add_argument(
        "--grant-vouched-by-server",
        action="store_true",
        default=SIDECAR.grant_vouched_by_server,
        help="trust a grant once an MCP server answered its list request (made-up tokens "
        "then cannot take a real caller's room in the counter table or approvals); only "
        "where the server checks the credential the client sent",
    )
    headers.add_argument(
        "--session-from",
        default=SIDECAR.session_from,
        metavar="SOURCE",
        help="'header' (--session-header) or 'jwt:CLAIM', e.g. jwt:sid: MCP 2026-07-28 "
        "clients send no session header (default: %(default)s)",
    )
    headers.add_argument(
        "--agent-from",
        default=SIDECAR.agent_from,
        metavar="SOURCE",
        help="'header' (--agent-header) or 'jwt:CLAIM' (default: %(default)s)",
    )
    headers.add_argument(
        "--jwt-payload-key",
        default=SIDECAR.jwt_payload_key,
        metavar="KEY",
        help="jwt_authn's payload_in_metadata, where the claims are read (default: %(default)s)",
    )
    headers.add_argument(
        "--max-request-bytes",
        type=int,
        default=SIDECAR.max_request_bytes,
        metavar="N",
        help="Envoy's with_request_body.max_request_bytes: a body of this size without "
        "content-length may have been cut, and is refused (default: %(default)s)",
    )
    approvals = serve.add_argument_group(
        "approvals", "human approval of calls whose rule says require_approval"
    )
    approvals.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where approvals live (a table file, a SQLite store, the key credentials are "
        "hashed with); default: a temporary directory, gone when the sidecar stops",
    )
    approvals.add_argument(
        "--admin-listen",
        type=listen_address,
        default=defaults.approvals.admin_listen,
        metavar="HOST:PORT",
        help="the admin listener: the toolgate.v1.Approvals service (default: %(default)s)",
    )
    approvals.add_argument(
        "--admin-tokens",
        metavar="FILE",
        help="lines of 'NAME TOKEN' for the admin listener; without it, approvals are opened "
        "but nobody can decide them",
    )
    approvals.add_argument(
        "--approval-webhook", metavar="URL", help="POST each new pending approval here"
    )
    approvals.add_argument(
        "--approval-webhook-secret",
        metavar="FILE",
        help="sign each webhook with HMAC-SHA256 under the secret in this file",
    )
    approvals.add_argument(
        "--approval-webhook-format",
        choices=FORMATS,
        default=defaults.approvals.webhook_format,
        help="the webhook's body: toolgate's JSON, or Slack-compatible text (default: %(default)s)",
    )
    approvals.add_argument(
        "--approval-webhook-workers",
        type=positive_int,
        default=defaults.approvals.webhook_workers,
        metavar="N",
        help="webhook deliveries under way at once, first attempts before retries, one grant's "
        "at a time in turn (default: %(default)s)",
    )
    approvals.add_argument(
        "--approval-webhook-timeout",
        type=positive_float,
        default=defaults.approvals.webhook_timeout,
        metavar="SECONDS",
        help="how long the receiver has to answer one delivery (default: %(default)s)",
    )
    approvals.add_argument(
        "--approval-pending-per-grant",
        type=int,
        default=SIDECAR.approval_pending_per_grant,
        metavar="N",
        help="pending approvals one grant may have at once; past it a call needing approval is "
        "refused without opening one (default: %(default)s)",
    )
    approvals.add_argument(
        "--approval-pending-per-rule",
        type=int,
        default=SIDECAR.approval_pending_per_rule,
        metavar="N",
        help="pending approvals one rule may have at once, all grants together "
        "(default: %(default)s)",
    )
    approvals.add_argument(
        "--approval-preview-bytes",
        type=int,
        default=SIDECAR.approval_preview_bytes,
        metavar="BYTES",
        help="bytes of a call's arguments kept and shown to approvers; the store keeps their "
        "SHA-256 and size, never more (default: %(default)s)",
    )
    approvals.add_argument(
        "--approval-retention",
        type=non_negative_float,
        default=defaults.approvals.retention_s,
        metavar="SECONDS",
        help="how long used, denied and expired approvals are kept, then deleted "
        "(default: %(default)s, 7 days)",
    )
    decisions = serve.add_argument_group(
        "decision log", "one JSON line per decision, hash-chained (toolgate log verify)"
    )
    decisions.add_argument(
        "--decision-log",
        metavar="FILE",
        help="append each decision to FILE ('-': stdout)",
    )
    decisions.add_argument(
        "--decision-log-filter",
        choices=CHOICES["decision_log_filter"],
        default=SIDECAR.decision_log_filter,
        help="all decisions, or only those that are not a plain ALLOW (denials, approvals "
        "asked for, refused or used) (default: %(default)s)",
    )
    decisions.add_argument(
        "--decision-log-rotate-mib",
        type=float,
        default=SIDECAR.decision_log_rotate_mib,
        metavar="MIB",
        help="start FILE anew past this size, the old one kept as FILE.N, the chain going on "
        "(0: never; default %(default)s)",
    )
    tracing = serve.add_argument_group(
        "tracing", "one OpenTelemetry span per decision, in the request's trace (docs/sidecar.md)"
    )
    tracing.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="export each decision's span to this OpenTelemetry collector over OTLP/gRPC "
        "(http://HOST:4317); the decision log's lines then carry trace_id and span_id",
    )
    tracing.add_argument(
        "--otlp-sample-ratio",
        type=ratio,
        default=SIDECAR.otlp_sample_ratio,
        metavar="RATIO",
        help="the share of new traces sampled, from 0 to 1; a request whose trace context "
        "says whether it is sampled follows it (default: %(default)s)",
    )
    authzen = serve.add_argument_group(
        "AuthZEN",
        "the OpenID AuthZEN Authorization API over HTTP, for enforcement points that speak it "
        "(docs/authzen.md)",
    )
    authzen.add_argument(
        "--authzen-listen",
        metavar="ADDR",
        help="serve /access/v1/evaluation(s) on this HOST:PORT or unix:PATH (off by default); "
        "any address but a loopback one needs --authzen-tokens",
    )
    authzen.add_argument(
        "--authzen-tokens",
        metavar="FILE",
        help="NAME TOKEN per line (as --admin-tokens): a caller presents one as "
        "'Authorization: Bearer TOKEN'",
    )
    serve.set_defaults(run=_run, serve_parser=serve)
