"""An engine the test holds, served by the native data plane in this process on 127.0.0.1
(the server ``toolgate serve`` runs): for tests that drive gRPC messages at an engine they
set up themselves, without a subprocess."""

from __future__ import annotations

import grpc
from toolgate._core import Engine
from toolgate.sidecar import transport
from toolgate.sidecar.envoy_authz import CheckSettings

DECIDE = "/toolgate.v1.Decider/Decide"
RELEASE = "/toolgate.v1.Decider/Release"
CHECK = "/envoy.service.auth.v3.Authorization/Check"

# One server per engine, kept for the session (an engine lives as long as its test module).
_served: dict[int, tuple[Engine, object, grpc.Channel]] = {}


def call(engine: Engine, method: str, request: bytes) -> bytes:
    """Send ``request`` (a serialized message) to ``method`` of ``engine``'s server and return
    the serialized answer; grpc.RpcError for an error status."""
    if id(engine) not in _served:
        server = transport.start(engine, CheckSettings(), "127.0.0.1:0", threads=1)
        _served[id(engine)] = (engine, server, grpc.insecure_channel(server.address))
    channel = _served[id(engine)][2]
    return channel.unary_unary(method)(request, timeout=30)
