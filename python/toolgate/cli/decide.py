"""``toolgate decide``: decide tool calls on a policy file or by a running sidecar, one
JSON object per decision."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from toolgate import Engine, PolicyError
from toolgate.cli import exits
from toolgate.cli.call_options import add_call_options, parse_arguments, parse_attributes
from toolgate.cli.parser import add_wait
from toolgate.sidecar.addresses import target_address


def _local_decider(policy: str) -> Callable[..., dict[str, Any]] | None:
    try:
        engine = Engine.from_file(policy)
    except PolicyError as err:
        for e in err.errors:
            print(f"{policy}: {e.pointer or '/'}: {e.message}", file=sys.stderr)
        return None
    return lambda tool, **fields: engine.decide(tool, **fields).to_dict()


def _remote_decider(target: str, wait: float) -> Callable[..., dict[str, Any]]:
    from toolgate.client import Client

    client = Client(target)
    client.wait_until_listening(wait)
    return lambda tool, **fields: client.decide(tool, **fields).to_dict()


def _run(args: argparse.Namespace) -> int:
    if (args.policy is None) == (args.target is None):
        print(
            "toolgate decide: give exactly one of --policy FILE or --target HOST:PORT",
            file=sys.stderr,
        )
        return exits.UNUSABLE
    decide = _remote_decider(args.target, args.wait) if args.target else _local_decider(args.policy)
    # grpcio only for a remote decision: a local one (and `toolgate serve`) never loads it.
    rpc_error: tuple[type[Exception], ...] = ()
    if args.target:
        import grpc

        rpc_error = (grpc.RpcError,)
    if decide is None:
        return exits.UNUSABLE
    try:
        arguments = parse_arguments(args.args)
    except ValueError as err:
        print(f"toolgate decide: {err}", file=sys.stderr)
        return exits.UNUSABLE
    if args.repeat < 1:
        print("toolgate decide: --repeat must be at least 1", file=sys.stderr)
        return exits.UNUSABLE
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
            return exits.for_rpc(err.code().name)
        print(json.dumps(decision), flush=True)
    return 0


def add_command(sub: Any) -> None:
    """Register ``toolgate decide`` on the CLI's subparsers."""
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
    add_wait(decide)
    decide.add_argument("--repeat", type=int, default=1, metavar="N", help="decide N times")
    decide.add_argument(
        "--dry-run", action="store_true", help="evaluate without consuming counters"
    )
    decide.set_defaults(run=_run)
