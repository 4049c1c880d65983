"""``toolgate health``: ask a sidecar's grpc.health.v1 whether it is serving."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from toolgate._core import SidecarSettings
from toolgate.cli import exits
from toolgate.cli.parser import add_wait, seconds
from toolgate.sidecar.addresses import target_address


def _run(args: argparse.Namespace) -> int:
    """Exit 0 if the sidecar reports SERVING for the service, 1 if it answers otherwise, 3 if
    it does not answer: a probe for containers whose sidecar listens on loopback, where the
    kubelet's gRPC probe cannot reach."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from toolgate.client import channel, wait_until_listening

    request = health_pb2.HealthCheckRequest(service=args.service)
    label = f"{args.target} {args.service or '(server)'}"
    try:
        with channel(args.target) as health_channel:
            wait_until_listening(health_channel, args.target, args.wait)
            stub = health_pb2_grpc.HealthStub(health_channel)
            reply = stub.Check(request, timeout=args.timeout)
    except grpc.RpcError as err:
        print(f"{label}: {err.code().name}", file=sys.stderr)
        # A service the sidecar does not know is one it does not serve: its answer is no.
        code = err.code().name
        return exits.FAILED if code == "NOT_FOUND" else exits.for_rpc(code)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    print(f"{label}: {status}", file=sys.stdout if serving else sys.stderr)
    return 0 if serving else 1


def add_command(sub: Any) -> None:
    """Register ``toolgate health`` on the CLI's subparsers."""
    health = sub.add_parser(
        "health", help="ask a sidecar's grpc.health.v1: exit 0 if SERVING (for exec probes)"
    )
    health.add_argument(
        "--target",
        type=target_address,
        default=SidecarSettings().listen,
        metavar="HOST:PORT",
        help="the sidecar's --listen (HOST:PORT or unix:PATH)",
    )
    health.add_argument(
        "--service", default="", help='"" for the whole server (default), or a service name'
    )
    health.add_argument(
        "--timeout", type=seconds, default=3.0, metavar="SECONDS", help="give up after this long"
    )
    # A probe answers at once (the kubelet's timeout is its own); --wait N waits for a start.
    add_wait(health, default=0.0)
    health.set_defaults(run=_run)
