"""The ``toolgate.v1.Decider`` gRPC service, and what every deciding handler shares.

Decider requests are not deserialized in Python: each RPC's bytes go to the Rust core, which
decodes, decides and encodes the response, so a decision costs the Python layer one call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from toolgate._core import Engine

# grpcio is imported where a grpcio server is built: the native transport never loads it
# (it is ~11 MiB of the sidecar's memory).
if TYPE_CHECKING:
    import grpc

SERVICE_NAME = "toolgate.v1.Decider"
#: Its ``api`` label in the metrics.
API = "decider"


#: grpcio keeps deadlines to the millisecond (a 1 ns timeout becomes up to a millisecond or
#: two): a call with less than this left is taken as already given up. The answer could not
#: reach the caller in time anyway, and refusing it errs towards not counting.
DEADLINE_SLACK_S = 0.005


def deadline_passed(context: grpc.ServicerContext) -> bool:
    """The caller's deadline passed (or as good as) while the request waited for a handler
    thread: the caller has given up, so deciding now would count a call that never runs."""
    remaining = context.time_remaining()
    return remaining is not None and remaining < DEADLINE_SLACK_S


def unary_bytes_handler(
    call: Callable[[bytes], bytes], engine: Engine, api: str
) -> grpc.RpcMethodHandler:
    """A unary handler that passes the request's bytes to ``call`` (the Rust core decodes,
    decides and encodes) and returns its bytes: DEADLINE_EXCEEDED if the caller has already
    given up (a proxy that answered 503 after its timeout), so no call is counted that will
    never run; INVALID_ARGUMENT if the bytes are not the method's request message. Errors
    are counted in ``engine``'s statistics under ``api``."""
    import grpc

    def abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> None:
        engine.count_error(api, code.value[0])
        context.abort(code, message)

    def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
        if deadline_passed(context):
            abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, "the caller's deadline has passed")
        try:
            return call(request)
        except ValueError as err:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(err))

    # No (de)serializers: the handler sees and returns raw message bytes.
    return grpc.unary_unary_rpc_method_handler(handle)


def decider_handler(engine: Engine) -> grpc.GenericRpcHandler:
    """Handlers for Decide, DecideBatch and Release, answered by ``engine``."""
    import grpc

    return grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "Decide": unary_bytes_handler(engine.decide_wire, engine, API),
            "DecideBatch": unary_bytes_handler(engine.decide_batch_wire, engine, API),
            "Release": unary_bytes_handler(engine.release_wire, engine, API),
        },
    )
