"""The ``toolgate`` command line: serve decisions, try them, validate policies."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from toolgate import Engine, Policy, PolicyError, __version__
from toolgate.cli.call_options import add_call_options, parse_arguments, parse_attributes
from toolgate.sidecar.addresses import listen_address, metrics_address, target_address


def _number(kind: Callable[[str], Any], least: float, what: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value >= least:
            raise argparse.ArgumentTypeError(f"must be {what}: {text!r}")
        return value

    return parse


positive_int = _number(int, 1, "at least 1")
positive_float = _number(float, 1e-9, "more than 0")
non_negative_float = _number(float, 0, "0 or more")


def _validate(args: argparse.Namespace) -> int:
    from toolgate.sidecar.envoy_authz import parse_subject_source

    try:
        agent_verified = parse_subject_source(args.agent_from) is not None
    except ValueError as err:
        print(f"toolgate validate: --agent-from: {err}", file=sys.stderr)
        return 2
    failed = False
    for path in args.files:
        try:
            policy = Policy.from_file(path)
        except PolicyError as err:
            failed = True
            for e in err.errors:
                pointer = e.pointer or "/"
                where = f" (line {e.line})" if e.line is not None else ""
                print(f"{path}: {pointer}: {e.message}{where}")
        else:
            if not args.quiet:
                # Not errors: limits and conditions a client can dodge by what it says.
                for note in policy.self_asserted(agent_verified):
                    print(f"{path}: {note.pointer}: note: {note.message}", file=sys.stderr)
                print(f"{path}: ok", file=sys.stderr)
    return 1 if failed else 0


def _local_decider(policy: str) -> Callable[..., dict[str, Any]] | None:
    try:
        engine = Engine.from_file(policy)
    except PolicyError as err:
        for e in err.errors:
            print(f"{policy}: {e.pointer or '/'}: {e.message}", file=sys.stderr)
        return None
    return lambda tool, **fields: engine.decide(tool, **fields).to_dict()


def _remote_decider(target: str) -> Callable[..., dict[str, Any]]:
    from toolgate.client import Client

    client = Client(target)
    return lambda tool, **fields: client.decide(tool, **fields).to_dict()


def _decide(args: argparse.Namespace) -> int:
    if (args.policy is None) == (args.target is None):
        print(
            "toolgate decide: give exactly one of --policy FILE or --target HOST:PORT",
            file=sys.stderr,
        )
        return 1
    decide = _remote_decider(args.target) if args.target else _local_decider(args.policy)
    # grpcio only for a remote decision: a local one (and `toolgate serve`) never loads it.
    rpc_error: tuple[type[Exception], ...] = ()
    if args.target:
        import grpc

        rpc_error = (grpc.RpcError,)
    if decide is None:
        return 1
    try:
        arguments = parse_arguments(args.args)
    except ValueError as err:
        print(f"toolgate decide: {err}", file=sys.stderr)
        return 1
    if args.repeat < 1:
        print("toolgate decide: --repeat must be at least 1", file=sys.stderr)
        return 1
    for _ in range(args.repeat):
        try:
            decision = decide(
                args.tool,
                server=args.server,
                grant=args.grant,
                session=args.session,
                agent=args.agent,
                attributes=parse_attributes(args.attr, "decide"),
                arguments=arguments,
                dry_run=args.dry_run,
            )
        except rpc_error as err:
            print(f"toolgate decide: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
        print(json.dumps(decision), flush=True)
    return 0


def _health(args: argparse.Namespace) -> int:
    """Exit 0 if the sidecar reports SERVING for the service, 1 otherwise: a probe for
    containers whose sidecar listens on loopback, where the kubelet's gRPC probe cannot reach."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from toolgate.client import channel

    request = health_pb2.HealthCheckRequest(service=args.service)
    label = f"{args.target} {args.service or '(server)'}"
    try:
        with channel(args.target) as health_channel:
            stub = health_pb2_grpc.HealthStub(health_channel)
            reply = stub.Check(request, timeout=args.timeout)
    except grpc.RpcError as err:
        print(f"{label}: {err.code().name}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    print(f"{label}: {status}", file=sys.stdout if serving else sys.stderr)
    return 0 if serving else 1


def _serve(args: argparse.Namespace) -> int:
    from toolgate.sidecar.approvals.runtime import ApprovalOptions
    from toolgate.sidecar.envoy_authz import CheckSettings, SubjectHeaders, parse_subject_source
    from toolgate.sidecar.serve import ServeOptions, serve

    options = ServeOptions(
        policy=Path(args.policy) if args.policy else None,
        listen=args.listen,
        metrics_listen=None if args.metrics_listen == "off" else args.metrics_listen,
        threads=args.threads,
        capacity=args.capacity,
        reservations=args.reservations,
        max_argument_bytes=args.max_argument_bytes,
        reload_interval=args.reload_interval,
        reload_settle=args.reload_settle,
        drain=args.drain,
        grace=args.grace,
        log_format=args.log_format,
        log_level=args.log_level,
        metrics_per_tool=args.metrics_per_tool,
        store=args.store,
        store_prefix=args.store_prefix,
        store_timeout_ms=args.store_timeout_ms,
        store_unavailable=args.store_unavailable,
        store_mode=args.store_mode,
        store_flush_ms=args.store_flush_ms,
        store_accept_eviction=args.store_accept_eviction,
        store_eviction_check_interval=args.store_eviction_check_interval,
        decision_log=args.decision_log,
        decision_log_filter=args.decision_log_filter,
        decision_log_rotate_bytes=int(args.decision_log_rotate_mib * (1 << 20)),
    )
    try:
        options.check = CheckSettings(
            headers=SubjectHeaders(
                grant=args.grant_header,
                session=args.session_header,
                agent=args.agent_header,
                server=args.server_header,
            ),
            grant_claim=parse_subject_source(args.grant_from),
            agent_claim=parse_subject_source(args.agent_from),
            jwt_payload_key=args.jwt_payload_key,
            max_request_bytes=args.max_request_bytes,
        )
        options.approvals = ApprovalOptions(
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
            pending_per_grant=args.approval_pending_per_grant,
            pending_per_rule=args.approval_pending_per_rule,
            preview_bytes=args.approval_preview_bytes,
            retention_s=args.approval_retention,
        )
        return serve(options)
    except PolicyError as err:
        for e in err.errors:
            where = f" (line {e.line})" if e.line is not None else ""
            print(f"{args.policy}: {e.pointer or '/'}: {e.message}{where}", file=sys.stderr)
        return 1
    except (ValueError, OverflowError) as err:
        # A bad option value (--capacity 0, --threads 0, --metrics-listen without a port or
        # with one out of range): a message, not a traceback.
        print(f"toolgate serve: {err}", file=sys.stderr)
        return 2


def version() -> str:
    """``toolgate 0.1.0``, and the source revision it was built from when known."""
    from toolgate._core import __revision__

    return f"toolgate {__version__}" + (f" ({__revision__[:12]})" if __revision__ else "")


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already speaks of it
    (argparse's ArgumentDefaultsHelpFormatter, without "default: None" for options that have
    none)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if default is None or default is False or default == [] or default == argparse.SUPPRESS:
            return text
        if "default" in text.lower() or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help, and every subcommand's, shows the defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def subject_source(claim: str | None) -> str:
    """``--grant-from``/``--agent-from``'s text for a claim (None: the header)."""
    return "header" if claim is None else f"jwt:{claim}"


def build_parser() -> argparse.ArgumentParser:
    from toolgate.sidecar.serve import ServeOptions

    # Every serve option's default is ServeOptions'.
    defaults = ServeOptions()
    parser = Parser(
        prog="toolgate",
        description="Decide whether an AI agent's MCP tool calls may run: serve decisions to a "
        "proxy, try them, check policies. 'toolgate COMMAND --help' lists a command's options.",
    )
    parser.add_argument("--version", action="version", version=version())
    # Not required: a bare `toolgate` prints this help (main()).
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    validate = sub.add_parser(
        "validate",
        help="check policy files; one line per error: FILE: /pointer: message (and notes of "
        "limits a client can dodge by the session or agent id it sends)",
    )
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.add_argument(
        "-q", "--quiet", action="store_true", help="print nothing for valid files"
    )
    validate.add_argument(
        "--agent-from",
        default="header",
        metavar="SOURCE",
        help="where the sidecar takes the agent from, as `toolgate serve --agent-from`: with "
        "'jwt:CLAIM' (a verified token), limits and conditions on the agent are not pointed "
        "out as ones a client can dodge (default: %(default)s)",
    )
    validate.set_defaults(run=_validate)

    decide = sub.add_parser(
        "decide", help="decide tool calls locally; one JSON object per decision"
    )
    where = decide.add_mutually_exclusive_group(required=True)
    where.add_argument("--policy", metavar="FILE", help="decide locally on this policy")
    where.add_argument(
        "--target",
        type=target_address,
        metavar="HOST:PORT",
        help="ask a running sidecar (HOST:PORT or unix:PATH)",
    )
    add_call_options(decide)
    decide.add_argument("--repeat", type=int, default=1, metavar="N", help="decide N times")
    decide.add_argument(
        "--dry-run", action="store_true", help="evaluate without consuming counters"
    )
    decide.set_defaults(run=_decide)

    health = sub.add_parser(
        "health", help="ask a sidecar's grpc.health.v1: exit 0 if SERVING (for exec probes)"
    )
    health.add_argument(
        "--target",
        type=target_address,
        default=defaults.listen,
        metavar="HOST:PORT",
        help="the sidecar's --listen (HOST:PORT or unix:PATH)",
    )
    health.add_argument(
        "--service", default="", help='"" for the whole server (default), or a service name'
    )
    health.add_argument(
        "--timeout", type=float, default=3.0, metavar="SECONDS", help="give up after this long"
    )
    health.set_defaults(run=_health)

    serve = sub.add_parser("serve", help="run the decision sidecar (gRPC + /metrics)")
    serve.add_argument(
        "--policy", metavar="FILE", help="default: a built-in deny-everything policy"
    )
    serve.add_argument(
        "--listen",
        type=listen_address,
        default=defaults.listen,
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
        default=defaults.threads,
        metavar="N",
        help="serving threads, each serving the connections dealt to it (default: the CPUs "
        "this process may use, counting its affinity and cgroup quota)",
    )
    serve.add_argument(
        "--capacity", type=int, default=defaults.capacity, metavar="N", help="counter-table slots"
    )
    store = serve.add_argument_group(
        "counter store", "where limits are counted: this pod's table, or Redis shared by all"
    )
    store.add_argument(
        "--store",
        default=defaults.store,
        metavar="local|redis://[USER:PASSWORD@]HOST:PORT/DB",
        help="local: this pod's table (default); redis://...: one count for every replica "
        "on that Redis, rediss://... over TLS, redis+sentinel://HOST:PORT[,...]/SERVICE/DB "
        "through Sentinel (docs/redis.md)",
    )
    store.add_argument(
        "--store-prefix",
        default=defaults.store_prefix,
        metavar="PREFIX",
        help="put before every Redis key, so deployments can share one Redis",
    )
    store.add_argument(
        "--store-timeout-ms",
        type=int,
        default=defaults.store_timeout_ms,
        metavar="MS",
        help="how long a decision waits for Redis (default: %(default)s)",
    )
    store.add_argument(
        "--store-mode",
        choices=["exact", "cached"],
        default=defaults.store_mode,
        help="exact: one Redis script per decision, never over a limit (default); cached: "
        "decide on a local copy merged with Redis every --store-flush-ms (faster; may "
        "overshoot, docs/redis.md)",
    )
    store.add_argument(
        "--store-flush-ms",
        type=int,
        default=defaults.store_flush_ms,
        metavar="MS",
        help="cached mode: how often counts are merged with Redis (default: %(default)s)",
    )
    store.add_argument(
        "--store-unavailable",
        choices=["deny", "local"],
        default=defaults.store_unavailable,
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
        default=defaults.reservations,
        metavar="N",
        help="reservation log lines (64 bytes each; a call with up to two limits takes one)",
    )
    serve.add_argument(
        "--max-argument-bytes",
        type=int,
        default=defaults.max_argument_bytes,
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
        type=float,
        default=defaults.drain,
        metavar="SECONDS",
        help="on SIGTERM, report NOT_SERVING for this long while still answering",
    )
    serve.add_argument(
        "--grace",
        type=float,
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
        default=defaults.check.headers.grant,
        metavar="NAME",
        help="the grant (credential); for authorization, the Bearer token (default: %(default)s)",
    )
    headers.add_argument(
        "--session-header",
        default=defaults.check.headers.session,
        metavar="NAME",
        help="the session",
    )
    headers.add_argument(
        "--agent-header", default=defaults.check.headers.agent, metavar="NAME", help="the agent"
    )
    headers.add_argument(
        "--server-header",
        default=defaults.check.headers.server,
        metavar="NAME",
        help="the MCP server id, when the route sets no 'server' context extension",
    )
    headers.add_argument(
        "--grant-from",
        default=subject_source(defaults.check.grant_claim),
        metavar="SOURCE",
        help="'header' (--grant-header) or 'jwt:CLAIM': a claim of the JWT that Envoy's "
        "jwt_authn filter verified (default: %(default)s)",
    )
    headers.add_argument(
        "--agent-from",
        default=subject_source(defaults.check.agent_claim),
        metavar="SOURCE",
        help="'header' (--agent-header) or 'jwt:CLAIM' (default: %(default)s)",
    )
    headers.add_argument(
        "--jwt-payload-key",
        default=defaults.check.jwt_payload_key,
        metavar="KEY",
        help="jwt_authn's payload_in_metadata, where the claims are read (default: %(default)s)",
    )
    headers.add_argument(
        "--max-request-bytes",
        type=int,
        default=defaults.check.max_request_bytes,
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
        choices=["json", "slack"],
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
        type=positive_int,
        default=defaults.approvals.pending_per_grant,
        metavar="N",
        help="pending approvals one grant may have at once; past it a call needing approval is "
        "refused without opening one (default: %(default)s)",
    )
    approvals.add_argument(
        "--approval-pending-per-rule",
        type=positive_int,
        default=defaults.approvals.pending_per_rule,
        metavar="N",
        help="pending approvals one rule may have at once, all grants together "
        "(default: %(default)s)",
    )
    approvals.add_argument(
        "--approval-preview-bytes",
        type=positive_int,
        default=defaults.approvals.preview_bytes,
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
        choices=["all", "denials"],
        default=defaults.decision_log_filter,
        help="all decisions, or only those that are not a plain ALLOW (denials, approvals "
        "asked for, refused or used) (default: %(default)s)",
    )
    decisions.add_argument(
        "--decision-log-rotate-mib",
        type=float,
        default=defaults.decision_log_rotate_bytes / (1 << 20),
        metavar="MIB",
        help="start FILE anew past this size, the old one kept as FILE.N, the chain going on "
        "(0: never; default %(default)s)",
    )
    serve.set_defaults(run=_serve)

    # scan and suggest: reading a server's tools, classifying them, a starter policy.
    from toolgate.cli.scan import add_commands

    add_commands(sub)

    from toolgate.cli.approvals import add_command as add_approvals

    add_approvals(sub)

    from toolgate.sidecar.decision_log import add_command as add_log

    add_log(sub)

    # Writing policies: test files of cases, the trace of one decision, importing Intercept's.
    from toolgate.authoring.explain import add_command as add_explain
    from toolgate.authoring.intercept.convert import add_command as add_import
    from toolgate.authoring.policy_tests.cases import add_command as add_test

    add_test(sub)
    add_explain(sub)
    add_import(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return int(args.run(args))
