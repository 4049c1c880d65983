"""The gRPC transport floor: a grpcio server that answers ``toolgate.v1.Decider/Decide`` with a
constant, for comparison with ``toolgate serve`` under the same load (bench/README.md).

It is set up as the sidecar's former grpcio transport was: a ``ThreadPoolExecutor`` of the same
size, the same server options (``grpc.so_reuseport`` 0), and a generic handler without
(de)serializers, so the handler sees raw request bytes and returns raw response bytes. The only
difference is the handler's body: a constant instead of ``engine.decide_wire(request)``.

The constant is a realistic serialized ``DecideResponse`` (an ALLOW with one limit state, as
the sidecar answers the bench's request), so the bytes on the wire match. ``--response FILE``
uses the bytes in FILE instead (grpc_bench.py passes the sidecar's own answer).

``--work`` adds about as much work per call as ``decide_wire`` does (~1-2 µs: SHA-256 of 2000
or 2048 bytes), with the GIL held (``hash-gil-held``: hashlib keeps it under 2048 bytes) or
released around it (``hash-gil-released``: 2048 bytes and more), to see what releasing the GIL
for a short call costs under load, apart from the work itself.

``--workers N`` runs it the way ``toolgate serve --workers N`` runs the sidecar: a parent
process (which creates no gRPC object) starts N fresh processes (fork and exec) that share the
port with ``grpc.so_reuseport`` 1, so the floor of N sidecar workers is N floors. The kernel
spreads connections, not requests, over them: a client needs at least N connections.

    python bench/grpc_floor.py --listen 127.0.0.1:50061 [--threads 8] [--response FILE]
                               [--work none|hash-gil-held|hash-gil-released] [--workers N]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

SERVICE = "toolgate.v1.Decider"


def default_response() -> bytes:
    """An ALLOW with one limit state, shaped like the sidecar's answer to the bench request."""
    from toolgate.v1 import decider_pb2 as pb

    return pb.DecideResponse(
        verdict=pb.ALLOW,
        code=pb.ALLOWED,
        reason="allowed by /tools/run_command",
        rule="/tools/run_command",
        limits=[
            pb.LimitState(
                counter="run_command_rate",
                rule="/tools/run_command/limits/0",
                scope="grant",
                max=1e9,
                remaining=999_999_000,
                reset_in_ms=89_000_000,
            )
        ],
        revision="dc41c86f58b9a1ea",
        reservation=1_000,
    ).SerializeToString()


#: --work: bytes to hash per call (hashlib releases the GIL from 2048 bytes on).
WORK = {"none": None, "hash-gil-held": b"x" * 2000, "hash-gil-released": b"x" * 2048}


def floor_handler(response: bytes, work: bytes | None = None) -> grpc.GenericRpcHandler:
    if work is None:

        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            return response

    else:

        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            hashlib.sha256(work).digest()
            return response

    # No (de)serializers, as in toolgate.service: raw bytes in, raw bytes out.
    return grpc.method_handlers_generic_handler(
        SERVICE, {"Decide": grpc.unary_unary_rpc_method_handler(handle)}
    )


def supervise(args: argparse.Namespace) -> int:
    """Start ``args.workers`` floor processes on one port (SO_REUSEPORT) and wait: SIGTERM or
    SIGINT stops them all; if one dies, stop the rest and fail (a benchmark wants no silent
    restarts). Like toolgate's supervisor, this process creates no gRPC object."""
    host, _, port = args.listen.rpartition(":")
    with socket.socket() as probe:  # fail now if the port is taken
        probe.bind((host.strip("[]"), int(port)))
    cmd = [sys.executable, __file__, "--listen", args.listen, "--threads", str(args.threads)]
    cmd += ["--work", args.work, "--reuseport"]
    if args.response:
        cmd += ["--response", str(args.response)]
    procs = [subprocess.Popen([*cmd, "--worker-index", str(i)]) for i in range(args.workers)]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    failed = False
    while not stop.wait(0.1):
        if any(p.poll() is not None for p in procs):
            failed = True
            break
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return 1 if failed else 0


def die_with_parent() -> None:
    """A worker gets SIGTERM when its parent dies (Linux), so none outlives the bench."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:50061", help="HOST:PORT")
    parser.add_argument("--threads", type=int, default=8, help="handler threads (sidecar: 8)")
    parser.add_argument("--response", type=Path, help="file holding the serialized response")
    parser.add_argument("--work", choices=list(WORK), default="none", help="extra work per call")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)"
    )
    parser.add_argument("--reuseport", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.workers > 1:
        return supervise(args)
    if args.reuseport:
        die_with_parent()

    response = args.response.read_bytes() if args.response else default_response()
    # Like the sidecar: no SO_REUSEPORT for a lone server; the workers share the port.
    server = grpc.server(
        ThreadPoolExecutor(max_workers=args.threads, thread_name_prefix="grpc"),
        options=[("grpc.so_reuseport", 1 if args.reuseport else 0)],
    )
    server.add_generic_rpc_handlers((floor_handler(response, WORK[args.work]),))
    if server.add_insecure_port(args.listen) == 0:
        print(f"grpc_floor: cannot listen on {args.listen}", flush=True)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    worker = "" if args.worker_index is None else f" (worker {args.worker_index})"
    print(f"grpc_floor: serving {SERVICE}/Decide on {args.listen}{worker}", flush=True)
    while not stop.wait(1.0):
        pass
    server.stop(0).wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
