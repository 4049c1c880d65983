"""Envoy's external processing API (``envoy.service.ext_proc.v3.ExternalProcessor``) on MCP
servers' answers, for the grpcio transport.

Envoy opens one stream per HTTP exchange on the routes that ask for it; each message goes to
the Rust core whole, which filters a ``tools/list`` answer for its caller or gives a failed
``tools/call``'s reservation back (docs/envoy.md, "Answers: tool lists and failed calls").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from toolgate._core import Engine, EnvoyExchange

if TYPE_CHECKING:
    import grpc

SERVICE_NAME = "envoy.service.ext_proc.v3.ExternalProcessor"


def external_processor_handler(engine: Engine) -> grpc.GenericRpcHandler:
    """The ``Process`` handler (a bidirectional stream), answered by ``engine``."""
    import grpc

    def process(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        exchange = EnvoyExchange(engine)
        for request in requests:
            try:
                answer = exchange.process_wire(request)
            except ValueError as err:
                engine.count_error("ext_proc", grpc.StatusCode.INVALID_ARGUMENT.value[0])
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
            if answer is not None:
                yield answer

    # No (de)serializers: the handler sees and returns raw message bytes.
    return grpc.method_handlers_generic_handler(
        SERVICE_NAME, {"Process": grpc.stream_stream_rpc_method_handler(process)}
    )
