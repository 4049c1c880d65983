"""toolgate: decide whether an AI agent's MCP tool call may run.

The decisions are made by a Rust core (``toolgate._core``); this package adds the CLI, the
gRPC sidecar (``toolgate serve``) and its clients (``Client``, ``AsyncClient``).

    >>> engine = Engine.from_file("examples/policy.json")
    >>> engine.decide("create-ami", grant="alice").verdict
    'ALLOW'
"""

import os
from typing import TYPE_CHECKING

# The extension allocates with mimalloc, which by default commits each arena it reserves up
# front: ~3 MiB of resident memory per serving thread that stays unused. Committed as used
# instead, an idle sidecar holds ~16 MiB less, at no measured cost per call (bench/RESULTS.md).
# Read once, when the extension loads; an operator's own setting wins.
os.environ.setdefault("MIMALLOC_ARENA_EAGER_COMMIT", "0")

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

if TYPE_CHECKING:
    from toolgate.client import AsyncClient, Client

__all__ = [
    "AsyncClient",
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


def __getattr__(name: str) -> object:
    # The client loads grpcio (~11 MiB): imported when first asked for, so the sidecar never
    # loads it.
    if name in ("Client", "AsyncClient"):
        from toolgate import client

        return getattr(client, name)
    raise AttributeError(f"module 'toolgate' has no attribute {name!r}")
