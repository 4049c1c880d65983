"""Shared helpers for the toolgate tests: policy builders, an engine factory on a manual clock,
and PolicyLayer's example policies copied literally from its documentation."""

from __future__ import annotations

import os
import signal

# A run started in the background of a shell without job control (`cmd &` in a script) has
# SIGINT ignored, and every child would inherit that: the tests send SIGINT as a terminal
# does, to processes that take it as a terminal's job would. Handled here, it is the default
# again in each program the tests start.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# The tests start many subprocesses from a process with gRPC threads; gRPC's fork handlers
# only matter to processes that fork and keep using gRPC, which these never do. Set before
# anything imports grpc.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import toolgate
from go_oracle import GoOracle, build_go_oracle

#: The repository's example policies.
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

#: Where every manual clock starts, in seconds: far from zero, so windows never reach back
#: before the clock's origin, and a multiple of every sub-bucket the tests use.
START = 1000.0


def policy(tools: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    """A version-1 policy document: ``default: deny`` unless given, the ``tools`` map, and any
    other top-level keys."""
    doc: dict[str, Any] = {"version": "1", "default": "deny"}
    doc.update(top)
    if tools is not None:
        doc["tools"] = tools
    return doc


def limit(
    counter: str, max: float, window: Any = "minute", scope: str = "grant", **extra: Any
) -> dict[str, Any]:
    """One entry of a rule's ``limits``."""
    return {"counter": counter, "window": window, "max": max, "scope": scope, **extra}


def cond(path: str, op: str, *value: Any) -> dict[str, Any]:
    """A ``{path, op, value}`` condition; ``value`` may be left out (for ``exists``)."""
    c: dict[str, Any] = {"path": path, "op": op}
    if value:
        (c["value"],) = value
    return c


def make_engine(
    document: Any, clock: toolgate.ManualClock | None = None, **kwargs: Any
) -> toolgate.Engine:
    """An engine on a manual clock (a fresh one at START unless given)."""
    return toolgate.Engine(document, clock=clock or toolgate.ManualClock(START), **kwargs)


def make_sidecar(
    document: Any,
    clock: toolgate.ManualClock | None = None,
    *,
    key: bytes = b"",
    approvals_table: Path | None = None,
    **settings: Any,
) -> toolgate._core.Sidecar:
    """A sidecar (not serving) on a manual clock (a fresh one at START unless given), keyed
    with ``key``, with approvals in ``approvals_table`` and ``settings``
    (``SidecarSettings``')."""
    return toolgate._core.Sidecar(
        document,
        toolgate._core.SidecarSettings(**settings),
        key=key,
        approvals_table=approvals_table,
        clock=clock or toolgate.ManualClock(START),
    )


def errors_of(load: Any, *args: Any) -> list[tuple[str, int | None, str]]:
    """Call ``load(*args)``, which must raise PolicyError, and return its errors as
    ``(pointer, line, message)`` tuples."""
    with pytest.raises(toolgate.PolicyError) as info:
        load(*args)
    return [(e.pointer, e.line, e.message) for e in info.value.errors]


def codes(decisions: list[toolgate.Decision]) -> list[str]:
    return [d.code for d in decisions]


@pytest.fixture(scope="session")
def go_oracle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GoOracle]:
    """How a Go MCP server reads JSON (tests/go_oracle), built once per session and kept
    running."""
    binary = build_go_oracle(tmp_path_factory.mktemp("go-oracle"))
    with GoOracle(binary) as oracle:
        yield oracle


@pytest.fixture
def clock() -> toolgate.ManualClock:
    return toolgate.ManualClock(START)


@pytest.fixture
def engine_for(clock: toolgate.ManualClock):
    """``engine_for(document)``: an engine on this test's ``clock``."""

    def build(document: Any, **kwargs: Any) -> toolgate.Engine:
        return toolgate.Engine(document, clock=clock, **kwargs)

    return build


# --- PolicyLayer's example policies ------------------------------------------------------------
# The policy JSON of each example in PolicyLayer's documentation, copied literally into
# examples/policylayer/ (the Rust tests read the same files), with the tool it names, its
# counter and its per-minute, per-grant maximum, as the document says them.


def _policylayer(tool: str) -> tuple[str, str, str, int]:
    text = (EXAMPLES / "policylayer" / f"{tool}.json").read_text()
    (limit,) = json.loads(text)["tools"][tool]["limits"]
    return text, tool, limit["counter"], limit["max"]


#: (policy text, tool, counter, max per minute per grant)
POLICYLAYER_EXAMPLES: list[tuple[str, str, str, int]] = [
    _policylayer(tool)
    for tool in (
        "create-ami",
        "create_access_key",
        "vm_create_image",
        "update_image_set_metadata",
        "stream_group_create",
    )
]
POLICYLAYER_CREATE_AMI = POLICYLAYER_EXAMPLES[0][0]

POLICYLAYER_TOOLS = [tool for _, tool, _, _ in POLICYLAYER_EXAMPLES]
