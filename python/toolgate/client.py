"""A Python client for a running sidecar: ``toolgate.Client("127.0.0.1:50051")``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import grpc

from toolgate.v1 import decider_pb2, decider_pb2_grpc


def _request(
    tool: str,
    *,
    server: str | None = None,
    grant: str | None = None,
    session: str | None = None,
    agent: str | None = None,
    attributes: Mapping[str, str] | None = None,
    arguments: Mapping[str, Any] | str | bytes | None = None,
    dry_run: bool = False,
) -> decider_pb2.DecideRequest:
    if arguments is None:
        arguments_json = b""
    elif isinstance(arguments, bytes):
        arguments_json = arguments
    elif isinstance(arguments, str):
        arguments_json = arguments.encode()
    else:
        arguments_json = json.dumps(arguments).encode()
    return decider_pb2.DecideRequest(
        server=server or "",
        tool=tool,
        subject=decider_pb2.Subject(
            grant=grant or "",
            session=session or "",
            agent=agent or "",
            attributes=dict(attributes or {}),
        ),
        arguments_json=arguments_json,
        dry_run=dry_run,
    )


def decision_dict(response: decider_pb2.DecideResponse) -> dict[str, Any]:
    """A response in the same shape as ``Decision.to_dict()``."""
    return {
        "verdict": decider_pb2.Verdict.Name(response.verdict),
        "code": decider_pb2.Code.Name(response.code),
        "reason": response.reason,
        "rule": response.rule,
        "retry_after_ms": response.retry_after_ms if response.HasField("retry_after_ms") else None,
        "limits": [
            {
                "counter": limit.counter,
                "rule": limit.rule,
                "scope": limit.scope,
                "max": limit.max,
                "window_ms": limit.window_ms,
                "remaining": limit.remaining,
                "reset_in_ms": limit.reset_in_ms,
            }
            for limit in response.limits
        ],
        "revision": response.revision,
        "shadow": response.shadow,
        "reservation": response.reservation or None,
        "approval_id": response.approval_id or None,
    }


def channel(target: str) -> grpc.Channel:
    """A plaintext channel to a sidecar at ``HOST:PORT`` or ``unix:PATH``. For a unix socket
    the HTTP/2 authority is ``localhost``: gRPC's C core would send the socket's path, which
    is no valid authority, and HTTP/2 servers that check (the native transport's) refuse it."""
    options = [("grpc.default_authority", "localhost")] if target.startswith("unix:") else []
    return grpc.insecure_channel(target, options=options)


class Client:
    """Asks a toolgate sidecar for decisions over gRPC."""

    def __init__(self, target: str, *, timeout: float = 5.0) -> None:
        self._channel = channel(target)
        self._stub = decider_pb2_grpc.DeciderStub(self._channel)
        self._timeout = timeout

    def decide(self, tool: str, **fields: Any) -> decider_pb2.DecideResponse:
        """Decide one call; keywords as for ``Engine.decide``."""
        return self._stub.Decide(_request(tool, **fields), timeout=self._timeout)

    def decide_batch(self, calls: Iterable[Mapping[str, Any]]) -> list[decider_pb2.DecideResponse]:
        """Decide several calls in one round trip; each mapping has ``tool`` and keywords."""
        requests = [_request(**dict(call)) for call in calls]
        batch = decider_pb2.DecideBatchRequest(requests=requests)
        return list(self._stub.DecideBatch(batch, timeout=self._timeout).responses)

    def release(self, reservation: int) -> bool:
        """Give back a reservation's counters; True if it was held."""
        request = decider_pb2.ReleaseRequest(reservation=reservation)
        return self._stub.Release(request, timeout=self._timeout).released

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
