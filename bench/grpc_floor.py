"""The gRPC transport floor: a grpcio server that answers ``toolgate.v1.Decider/Decide`` with a
constant, for comparison with ``toolgate serve`` under the same load (DESIGN.md §7).

It is set up like the sidecar (python/toolgate/serve.py): a ``ThreadPoolExecutor`` of the same
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

    python bench/grpc_floor.py --listen 127.0.0.1:50061 [--threads 8] [--response FILE]
                               [--work none|hash-gil-held|hash-gil-released]
"""

from __future__ import annotations

import argparse
import hashlib
import signal
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:50061", help="HOST:PORT")
    parser.add_argument("--threads", type=int, default=8, help="handler threads (sidecar: 8)")
    parser.add_argument("--response", type=Path, help="file holding the serialized response")
    parser.add_argument("--work", choices=list(WORK), default="none", help="extra work per call")
    args = parser.parse_args()

    response = args.response.read_bytes() if args.response else default_response()
    server = grpc.server(
        ThreadPoolExecutor(max_workers=args.threads, thread_name_prefix="grpc"),
        options=[("grpc.so_reuseport", 0)],
    )
    server.add_generic_rpc_handlers((floor_handler(response, WORK[args.work]),))
    if server.add_insecure_port(args.listen) == 0:
        print(f"grpc_floor: cannot listen on {args.listen}", flush=True)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    print(f"grpc_floor: serving {SERVICE}/Decide on {args.listen}", flush=True)
    while not stop.wait(1.0):
        pass
    server.stop(0).wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
