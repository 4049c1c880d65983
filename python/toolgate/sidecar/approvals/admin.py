"""The admin listener (``toolgate serve --admin-listen``): the ``toolgate.v1.Approvals``
service, for approvers, apart from the decision API.

Every call carries ``authorization: Bearer <token>``; ``--admin-tokens FILE`` holds lines of
``NAME TOKEN``, and the name is who approved or denied. A rule that lists ``approvers``
accepts a decision from those names only. Rare calls on a separate port: grpcio is enough.

No caller can hold the listener for others. grpcio runs a server's interceptors on its
event thread, from the call's headers, before it gives the call a thread and before that
thread waits for the request message; so the token is checked there, and a call without a
valid one is refused at once. A call with one holds a share of its own token's (``capacity``:
a few calls and Watch streams per token, a call over it waiting briefly), and must send its
message within ``MESSAGE_WAIT_S`` or is cancelled; the threads are as many as every token's
share needs, so one token's holder never keeps another's approver waiting.
"""

from __future__ import annotations

import hmac
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from toolgate import _core
from toolgate._core import Approvals, inert
from toolgate.sidecar.addresses import bound_address, parse_host_port
from toolgate.sidecar.approvals.capacity import Exhausted, TokenCapacity, threads_for
from toolgate.sidecar.approvals.rows import STATES, Row, page_token
from toolgate.sidecar.approvals.store import ApprovalError, ApprovalStore
from toolgate.v1 import approvals_pb2, approvals_pb2_grpc

log = logging.getLogger("toolgate.admin")

#: How often Watch looks for changes.
WATCH_POLL_SECONDS = 0.2

#: Seconds an authenticated call has to send its request message before it is cancelled.
MESSAGE_WAIT_S = 5.0
#: A List page holds at most this many approvals and bytes: well within gRPC's 4 MiB.
PAGE_MAX = 1000
PAGE_BYTES = 1 << 20

_UNAUTHENTICATED = "a valid admin token is required"


def load_tokens(path: Path) -> dict[str, str]:
    """``NAME TOKEN`` per line (``#`` comments, blank lines ignored) → token: name.
    ValueError for a malformed file: a name or token given twice, a line that is not two
    words, a token shorter than 16 characters (the reader is the extension's, which the
    AuthZEN listener's ``--authzen-tokens`` shares)."""
    return {token: name for name, token in _core.load_tokens(str(path))}


def approval_message(row: Row, now_ms: int) -> approvals_pb2.Approval:
    return approvals_pb2.Approval(
        id=row.id,
        state=row.state(now_ms),
        server=row.server or "",
        tool=row.tool,
        arguments_json=row.arguments,
        arguments_digest=row.arguments_digest,
        grant=row.grant or "",
        session=row.session or "",
        agent=row.agent or "",
        rule=row.rule,
        revision=row.revision,
        approvers=row.approvers,
        created_ms=row.created_ms,
        deadline_ms=row.deadline_ms,
        decided_by=row.decided_by or "",
        decided_ms=row.decided_ms or 0,
        reason=row.reason or "",
        used_ms=row.used_ms or 0,
        arguments_cut=row.arguments_cut,
        arguments_bytes=row.arguments_bytes,
    )


_STATUS = {
    "not_found": grpc.StatusCode.NOT_FOUND,
    "not_pending": grpc.StatusCode.FAILED_PRECONDITION,
    "not_allowed": grpc.StatusCode.PERMISSION_DENIED,
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
}


def caller(tokens: dict[str, str], metadata: Any) -> str | None:
    """The name of the admin token a call's metadata carries, or None."""
    sent = next((v for k, v in metadata or () if k == "authorization"), "")
    scheme, _, token = (sent if isinstance(sent, str) else "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    found = None
    for known, name in tokens.items():
        # Every token compared, each in constant time.
        if hmac.compare_digest(known.encode(), token.strip().encode()):
            found = name
    return found


class ApprovalsService(approvals_pb2_grpc.ApprovalsServicer):
    def __init__(self, approvals: Approvals, store: ApprovalStore, tokens: dict[str, str]) -> None:
        self._approvals = approvals
        self._store = store
        self.tokens = tokens

    def _caller(self, context: grpc.ServicerContext) -> str:
        """The admin token's name, or abort UNAUTHENTICATED (the interceptor checked it
        already; a service mounted without it stays closed)."""
        name = caller(self.tokens, context.invocation_metadata())
        if name is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, _UNAUTHENTICATED)
        assert name is not None
        return name

    def _now(self) -> int:
        return self._approvals.now_ms()

    def List(self, request, context):
        self._caller(context)
        state = request.state or None
        if state is not None and state not in STATES:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not a state: {state[:32]!r}")
        limit = min(request.limit or 100, PAGE_MAX)
        now = self._now()
        try:
            page = self._store.page(state, now, limit, request.page_token or None)
        except ValueError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        response = approvals_pb2.ListApprovalsResponse(next_page_token=page.next_token or "")
        size = 0
        for row in page.rows:
            message = approval_message(row, now)
            size += message.ByteSize()
            if size > PAGE_BYTES and response.approvals:
                # The page is full: the next one starts after the last row it holds.
                response.next_page_token = page_token(page.rows[len(response.approvals) - 1])
                break
            response.approvals.append(message)
        return response

    def Get(self, request, context):
        self._caller(context)
        row = self._store.get(request.id)
        if row is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no approval {request.id}")
        return approval_message(row, self._now())

    def _decide(self, request, context, approve: bool):
        who = self._caller(context)
        try:
            row = self._store.decide(
                request.id,
                approve,
                who,
                request.reason,
                self._now(),
                lambda id, ok: self._approvals.decide(id, ok)["deadline_ms"],
            )
        except ApprovalError as err:
            context.abort(_STATUS[err.kind], str(err))
        log.info(
            "approval %s %s by %s%s",
            request.id,
            "approved" if approve else "denied",
            who,
            # One log line, whatever the reason holds.
            f": {inert(request.reason)}" if request.reason else "",
        )
        return approval_message(row, self._now())

    def Approve(self, request, context):
        return self._decide(request, context, True)

    def Deny(self, request, context):
        return self._decide(request, context, False)

    def Watch(self, request, context) -> Iterator[approvals_pb2.Approval]:
        self._caller(context)
        seq = self._store.last_change()
        if request.include_pending:
            # A page at a time: however many are pending, only one page is held here.
            after = None
            while True:
                page = self._store.page("PENDING", self._now(), 100, after)
                for row in page.rows:
                    yield approval_message(row, self._now())
                if page.next_token is None:
                    break
                after = page.next_token
        while context.is_active():
            for change, id, _ in self._store.changes_after(seq):
                seq = change
                row = self._store.get(id)
                if row is not None:
                    yield approval_message(row, self._now())
            time.sleep(WATCH_POLL_SECONDS)


class Gatekeeper(grpc.ServerInterceptor):
    """Refuses a call without a valid admin token from its headers, before grpcio gives it
    a thread (which would wait for its request message), and a call whose token's share is
    taken; holds the share of the calls it lets through, and bounds how long one may wait
    for its message."""

    def __init__(self, tokens: dict[str, str], capacity: TokenCapacity | None = None) -> None:
        self._tokens = tokens
        self.capacity = capacity or TokenCapacity()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None:
            return None
        name = caller(self._tokens, details.invocation_metadata)
        if name is None:
            return _refused(handler, grpc.StatusCode.UNAUTHENTICATED, _UNAUTHENTICATED)
        if not self.capacity.admits(name):
            return _refused(
                handler,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"admin token {name} has every call of its share open or waiting",
            )
        if handler.response_streaming:
            assert handler.unary_stream is not None
            return grpc.stream_stream_rpc_method_handler(
                self._watch(name, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        assert handler.unary_unary is not None
        return grpc.stream_unary_rpc_method_handler(
            self._unary(name, handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _watch(
        self, name: str, behavior: Callable[..., Iterator[Any]]
    ) -> Callable[..., Iterator[Any]]:
        def bounded(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                with self.capacity.hold(name, watch=True):
                    yield from behavior(_message(requests, context), context)
            except Exhausted as err:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(err))

        return bounded

    def _unary(self, name: str, behavior: Callable[[Any, grpc.ServicerContext], Any]) -> Any:
        def bounded(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            try:
                with self.capacity.hold(name, watch=False):
                    return behavior(_message(requests, context), context)
            except Exhausted as err:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(err))

        return bounded


def _refused(
    handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler:
    """A handler that answers ``code`` without reading the request: served as a streaming
    request, its thread never waits for a message."""

    def refuse(_requests: Iterator[Any], context: grpc.ServicerContext) -> None:
        context.abort(code, message)

    if handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    return grpc.stream_unary_rpc_method_handler(refuse)


def _message(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
    """The call's one request message, the call cancelled if it is not sent within
    MESSAGE_WAIT_S (grpcio's own wait for it has no bound)."""
    timer = threading.Timer(MESSAGE_WAIT_S, context.cancel)
    timer.daemon = True
    timer.start()
    try:
        return next(requests)
    except StopIteration:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a request message is required")
    finally:
        timer.cancel()


def _check_free(listen: str) -> None:
    """OSError saying why ``listen`` cannot be bound (in use, not this machine's), found by
    binding it first: grpcio's own failure says only that it failed."""
    if listen.startswith("unix:"):
        return
    host, port = parse_host_port(listen, allow_port_zero=True)
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise OSError(f"cannot listen on {listen} (admin): {err.strerror or err}") from None


class AdminServer:
    """The admin listener, serving the Approvals service."""

    def __init__(self, listen: str, service: ApprovalsService) -> None:
        # A thread for every call of every token's share (made as calls come); a call past
        # them all is refused (RESOURCE_EXHAUSTED) rather than queued.
        threads = threads_for(len(service.tokens))
        self.gatekeeper = Gatekeeper(service.tokens)
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="admin"),
            interceptors=[self.gatekeeper],
            options=[("grpc.so_reuseport", 0)],
            maximum_concurrent_rpcs=threads,
        )
        approvals_pb2_grpc.add_ApprovalsServicer_to_server(service, self._server)
        _check_free(listen)
        try:
            port = self._server.add_insecure_port(listen)
        except RuntimeError as err:
            raise OSError(f"cannot listen on {listen} (admin): {err}") from err
        if port == 0:
            raise OSError(f"cannot listen on {listen} (admin)")
        #: Where it listens: ``listen`` with the port it got (port 0: the one chosen).
        self.address = bound_address(listen, port)
        self._server.start()

    def stop(self, grace: float) -> None:
        self._server.stop(grace).wait()
