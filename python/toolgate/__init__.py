"""toolgate: decide whether an AI agent's MCP tool call may run.

The decisions are made by a Rust core (``toolgate._core``); this package adds the CLI and,
later, the gRPC sidecar around it.

    >>> engine = Engine.from_file("examples/policy.json")
    >>> engine.decide("create-ami", grant="alice").verdict
    'ALLOW'
"""

from toolgate._core import (
    Decision,
    Engine,
    LimitState,
    ManualClock,
    Policy,
    PolicyError,
    ValidationError,
    __version__,
)

__all__ = [
    "Decision",
    "Engine",
    "LimitState",
    "ManualClock",
    "Policy",
    "PolicyError",
    "ValidationError",
    "__version__",
]
