"""Envoy's rate limit service API (``envoy.service.ratelimit.v3.RateLimitService``), so
toolgate drops in where Limitador or envoyproxy/ratelimit run.

The request bytes go to the Rust core, which reads and checks every descriptor before any
counter is touched, decides each as one call, and answers OK or OVER_LIMIT (never UNKNOWN).
The mapping (domain, entries, ``hits_addend``) is described in docs/envoy.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolgate._core import Engine, EnvoyRateLimit
from toolgate.service import unary_bytes_handler

if TYPE_CHECKING:
    import grpc

SERVICE_NAME = "envoy.service.ratelimit.v3.RateLimitService"


def rate_limit_handler(engine: Engine) -> grpc.GenericRpcHandler:
    """The ``ShouldRateLimit`` handler, answered by ``engine``."""
    import grpc

    service = EnvoyRateLimit(engine)
    return grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "ShouldRateLimit": unary_bytes_handler(
                service.should_rate_limit_wire, engine, "ratelimit"
            )
        },
    )
