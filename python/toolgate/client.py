"""Python clients for a running sidecar, answering with the same ``Decision`` as ``Engine``:

    with toolgate.Client("127.0.0.1:50051") as client:
        client.decide("create-ami", grant="alice").verdict    # 'ALLOW'

``AsyncClient`` is the same on ``grpc.aio``. Both take ``HOST:PORT`` or ``unix:PATH``
targets, plaintext or TLS (``tls=True`` with the system's roots, or ``root_certificates``;
``certificate_chain`` and ``private_key`` for a client certificate; ``server_name``, the name
the server's certificate carries when the target does not say it). PEM arguments are bytes,
or the path of a file.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypedDict, Unpack

import grpc
import grpc.aio

from toolgate._core import DECIDER, Decision
from toolgate.v1 import decider_pb2

#: A PEM document: its bytes, or the path of a file holding it.
Pem = bytes | str | os.PathLike[str]

_DECIDE = f"/{DECIDER}/Decide"
_DECIDE_BATCH = f"/{DECIDER}/DecideBatch"
_RELEASE = f"/{DECIDER}/Release"


class CallOptions(TypedDict, total=False):
    """The keywords of ``decide``, as for ``Engine.decide``; and ``peer_address``, the
    network address the agent's request came from, by which the counter table's room for
    unverified credentials is shared out once it runs short (docs/counters.md)."""

    server: str | None
    grant: str | None
    session: str | None
    agent: str | None
    attributes: Mapping[str, str] | None
    arguments: Mapping[str, Any] | str | bytes | None
    dry_run: bool
    peer_address: str | None


class Call(CallOptions, total=False):
    """One call of ``decide_batch``: ``tool`` and the keywords of ``decide``."""

    tool: str


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
    peer_address: str | None = None,
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
            peer_address=peer_address or "",
        ),
        arguments_json=arguments_json,
        dry_run=dry_run,
    )


def _batch(calls: Iterable[Mapping[str, Any]]) -> bytes:
    requests = [_request(**dict(call)) for call in calls]
    return decider_pb2.DecideBatchRequest(requests=requests).SerializeToString()


def _release(reservation: int) -> bytes:
    return decider_pb2.ReleaseRequest(reservation=reservation).SerializeToString()


def _released(response: bytes) -> bool:
    return decider_pb2.ReleaseResponse.FromString(response).released


def _pem(value: Pem | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


class Security:
    """How a channel is secured: plaintext, or TLS with the given roots and client identity."""

    def __init__(
        self,
        *,
        tls: bool = False,
        root_certificates: Pem | None = None,
        certificate_chain: Pem | None = None,
        private_key: Pem | None = None,
        server_name: str | None = None,
    ) -> None:
        if (certificate_chain is None) != (private_key is None):
            raise ValueError("a client certificate needs both certificate_chain and private_key")
        self.tls = tls or root_certificates is not None or certificate_chain is not None
        self.roots = _pem(root_certificates)
        self.chain = _pem(certificate_chain)
        self.key = _pem(private_key)
        self.server_name = server_name

    def options(self, target: str) -> list[tuple[str, Any]]:
        options: list[tuple[str, Any]] = []
        if target.startswith("unix:"):
            # gRPC's C core would send the socket's path as the HTTP/2 authority, which is no
            # valid authority: HTTP/2 servers that check (the native transport's) refuse it.
            options.append(("grpc.default_authority", self.server_name or "localhost"))
        if self.server_name is not None:
            # The name the server's certificate must carry, when the target does not say it
            # (an IP address, a unix socket, a name that differs from the certificate's).
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return options

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.roots, self.key, self.chain)


def channel(target: str, security: Security | None = None) -> grpc.Channel:
    """A channel to a sidecar at ``HOST:PORT`` or ``unix:PATH``, plaintext unless
    ``security`` says TLS."""
    security = security or Security()
    options = security.options(target)
    if security.tls:
        return grpc.secure_channel(target, security.credentials(), options=options)
    return grpc.insecure_channel(target, options=options)


def aio_channel(target: str, security: Security | None = None) -> grpc.aio.Channel:
    """``channel`` for asyncio."""
    security = security or Security()
    options = security.options(target)
    if security.tls:
        return grpc.aio.secure_channel(target, security.credentials(), options=options)
    return grpc.aio.insecure_channel(target, options=options)


class NotListening(ConnectionError):
    """No sidecar answered at an address within the time given."""


#: Waits longer than this are waits without end (gRPC's deadlines overflow far beyond).
_ENDLESS = 1e6


def _wait_timeout(seconds: float) -> float | None:
    """How long to wait for ``seconds`` (None: without end); ValueError for no duration."""
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"a wait is 0 or more seconds, got {seconds!r}")
    return None if seconds >= _ENDLESS else seconds


def wait_until_listening(ch: grpc.Channel, target: str, seconds: float) -> None:
    """Return once ``ch`` has connected to ``target``, waiting up to ``seconds`` for a sidecar
    that is starting; else raise ``NotListening``. 0 does not wait: the first call fails."""
    timeout = _wait_timeout(seconds)
    if seconds == 0:
        return
    ready = grpc.channel_ready_future(ch)
    try:
        ready.result(timeout=timeout)
    except grpc.FutureTimeoutError:
        raise not_listening(target, seconds) from None
    finally:
        # Stops gRPC's thread that watches the channel for it.
        ready.cancel()


def not_listening(target: str, seconds: float) -> NotListening:
    return NotListening(
        f"nothing answered at {target} within {seconds:g}s: is the sidecar running, "
        "and listening there?"
    )


class _Decider:
    """toolgate.v1.Decider's methods on a channel (grpcio's or grpc.aio's), sending and
    receiving message bytes."""

    _open: ClassVar[Any]  # makes the channel: grpcio's or grpc.aio's

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 5.0,
        tls: bool = False,
        root_certificates: Pem | None = None,
        certificate_chain: Pem | None = None,
        private_key: Pem | None = None,
        server_name: str | None = None,
    ) -> None:
        security = Security(
            tls=tls,
            root_certificates=root_certificates,
            certificate_chain=certificate_chain,
            private_key=private_key,
            server_name=server_name,
        )
        self._target = target
        self._channel = channel = type(self)._open(target, security)
        self._decide = channel.unary_unary(_DECIDE)
        self._decide_batch = channel.unary_unary(_DECIDE_BATCH)
        self._release = channel.unary_unary(_RELEASE)
        self._timeout = timeout


class Client(_Decider):
    """Asks a toolgate sidecar for decisions over gRPC. A call the sidecar does not answer
    raises ``grpc.RpcError``; an answer this version cannot read raises ``ValueError``."""

    _open = staticmethod(channel)

    def decide(
        self,
        tool: str,
        **options: Unpack[CallOptions],
    ) -> Decision:
        """Decide one call; keywords as for ``Engine.decide``."""
        request = _request(tool, **options)
        response = self._decide(request.SerializeToString(), timeout=self._timeout)
        return Decision.from_wire(response)

    def decide_batch(self, calls: Iterable[Call | Mapping[str, Any]]) -> list[Decision]:
        """Decide several calls in one round trip; each mapping has ``tool`` and keywords."""
        response = self._decide_batch(_batch(calls), timeout=self._timeout)
        return Decision.from_batch_wire(response)

    def release(self, reservation: int) -> bool:
        """Give back a reservation's counters; True if it was held."""
        return _released(self._release(_release(reservation), timeout=self._timeout))

    def wait_until_listening(self, seconds: float) -> None:
        """Wait up to ``seconds`` for the sidecar to answer (one that is starting); raises
        ``NotListening`` if it does not."""
        wait_until_listening(self._channel, self._target, seconds)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Decider):
    """``Client`` for asyncio (grpc.aio): the same keywords, coroutines that answer with the
    same ``Decision``. Make it in the event loop that uses it."""

    _open = staticmethod(aio_channel)

    async def decide(
        self,
        tool: str,
        **options: Unpack[CallOptions],
    ) -> Decision:
        """Decide one call; keywords as for ``Engine.decide``."""
        request = _request(tool, **options)
        response = await self._decide(request.SerializeToString(), timeout=self._timeout)
        return Decision.from_wire(response)

    async def decide_batch(self, calls: Iterable[Call | Mapping[str, Any]]) -> list[Decision]:
        """Decide several calls in one round trip; each mapping has ``tool`` and keywords."""
        response = await self._decide_batch(_batch(calls), timeout=self._timeout)
        return Decision.from_batch_wire(response)

    async def release(self, reservation: int) -> bool:
        """Give back a reservation's counters; True if it was held."""
        return _released(await self._release(_release(reservation), timeout=self._timeout))

    async def wait_until_listening(self, seconds: float) -> None:
        """Wait up to ``seconds`` for the sidecar to answer (one that is starting); raises
        ``NotListening`` if it does not."""
        timeout = _wait_timeout(seconds)
        if seconds == 0:
            return
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout)
        except TimeoutError:
            raise not_listening(self._target, seconds) from None

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
