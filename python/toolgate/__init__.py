"""toolgate: decide whether an AI agent's MCP tool call may run.

The decisions are made by a Rust core (``toolgate._core``); this package adds the CLI, the
gRPC sidecar (``toolgate serve``) and its client.

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
from toolgate.client import Client

__all__ = [
    "Client",
    "Decision",
    "Engine",
    "LimitState",
    "ManualClock",
    "Policy",
    "PolicyError",
    "ValidationError",
    "__version__",
]
