"""A sidecar the test assembles (the one ``toolgate serve`` runs), served in this process on
127.0.0.1: for tests that drive gRPC messages at a policy, clock and decision log they set
up themselves, without a subprocess."""

from __future__ import annotations

from typing import Any

import grpc
from toolgate._core import Engine, ManualClock, Sidecar, SidecarSettings

DECIDE = "/toolgate.v1.Decider/Decide"
RELEASE = "/toolgate.v1.Decider/Release"
CHECK = "/envoy.service.auth.v3.Authorization/Check"

# Each served sidecar and a channel to it, by its engine (kept for the session: a sidecar
# lives as long as its test or module).
_served: dict[int, tuple[Sidecar, grpc.Channel]] = {}


def served(
    policy: Any, *, key: bytes = b"", clock: ManualClock | None = None, **settings: Any
) -> Sidecar:
    """A sidecar on ``policy`` keyed with ``key``, on ``clock``, with ``settings``
    (``SidecarSettings``'), answering on 127.0.0.1."""
    settings = SidecarSettings(listen="127.0.0.1:0", **settings)
    sidecar = Sidecar(policy, settings, key=key, clock=clock)
    _served[id(sidecar.engine)] = (sidecar, grpc.insecure_channel(sidecar.serve()))
    return sidecar


def call(engine: Engine, method: str, request: bytes) -> bytes:
    """Send ``request`` (a serialized message) to ``method`` of the served sidecar whose
    engine is ``engine``, and return the serialized answer; grpc.RpcError for an error
    status."""
    return _served[id(engine)][1].unary_unary(method)(request, timeout=30)
