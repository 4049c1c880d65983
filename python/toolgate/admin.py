"""The admin listener (``toolgate serve --admin-listen``): the ``toolgate.v1.Approvals``
service, for approvers, apart from the decision API.

Every call carries ``authorization: Bearer <token>``; ``--admin-tokens FILE`` holds lines of
``NAME TOKEN``, and the name is who approved or denied. A rule that lists ``approvers``
accepts a decision from those names only. Rare calls on a separate port: grpcio is enough.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from toolgate._core import Approvals
from toolgate.approvals import ApprovalError, ApprovalStore, Row
from toolgate.v1 import approvals_pb2, approvals_pb2_grpc

log = logging.getLogger("toolgate.admin")

#: How often Watch looks for changes.
WATCH_POLL_SECONDS = 0.2


def load_tokens(path: Path) -> dict[str, str]:
    """``NAME TOKEN`` per line (``#`` comments, blank lines ignored) → token: name.
    ValueError for a malformed file: a name or token given twice, a line that is not two
    words, a token shorter than 16 characters."""
    tokens: dict[str, str] = {}
    names: set[str] = set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{number}: expected NAME TOKEN")
        name, token = parts
        if len(token) < 16:
            raise ValueError(f"{path}:{number}: a token has at least 16 characters")
        if token in tokens or name in names:
            raise ValueError(f"{path}:{number}: {name} or its token is given twice")
        tokens[token] = name
        names.add(name)
    if not tokens:
        raise ValueError(f"{path}: no tokens")
    return tokens


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
    )


_STATUS = {
    "not_found": grpc.StatusCode.NOT_FOUND,
    "not_pending": grpc.StatusCode.FAILED_PRECONDITION,
    "not_allowed": grpc.StatusCode.PERMISSION_DENIED,
}


class ApprovalsService(approvals_pb2_grpc.ApprovalsServicer):
    def __init__(self, approvals: Approvals, store: ApprovalStore, tokens: dict[str, str]) -> None:
        self._approvals = approvals
        self._store = store
        self._tokens = tokens

    def _caller(self, context: grpc.ServicerContext) -> str:
        """The admin token's name, or abort UNAUTHENTICATED."""
        sent = dict(context.invocation_metadata()).get("authorization", "")
        scheme, _, token = sent.partition(" ")
        if scheme.lower() == "bearer":
            for known, name in self._tokens.items():
                if hmac.compare_digest(known.encode(), token.strip().encode()):
                    return name
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid admin token is required")
        raise AssertionError("abort raises")

    def _now(self) -> int:
        return self._approvals.now_ms()

    def List(self, request, context):
        self._caller(context)
        state = request.state or None
        rows = self._store.list(state, self._now(), request.limit or 100)
        now = self._now()
        return approvals_pb2.ListApprovalsResponse(
            approvals=[approval_message(r, now) for r in rows]
        )

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
            f": {request.reason}" if request.reason else "",
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
            for row in self._store.list("PENDING", self._now(), limit=1 << 20):
                yield approval_message(row, self._now())
        while context.is_active():
            for change, id, _ in self._store.changes_after(seq):
                seq = change
                row = self._store.get(id)
                if row is not None:
                    yield approval_message(row, self._now())
            time.sleep(WATCH_POLL_SECONDS)


class AdminServer:
    """The admin listener, serving the Approvals service."""

    def __init__(self, listen: str, service: ApprovalsService) -> None:
        # Each Watch holds a thread while it streams; beyond the bound, calls are refused
        # (RESOURCE_EXHAUSTED) rather than queued behind them.
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=16, thread_name_prefix="admin"),
            options=[("grpc.so_reuseport", 0)],
            maximum_concurrent_rpcs=16,
        )
        approvals_pb2_grpc.add_ApprovalsServicer_to_server(service, self._server)
        try:
            port = self._server.add_insecure_port(listen)
        except RuntimeError as err:
            raise OSError(f"cannot listen on {listen} (admin): {err}") from err
        if port == 0:
            raise OSError(f"cannot listen on {listen} (admin)")
        self.address = listen
        self._server.start()

    def stop(self, grace: float) -> None:
        self._server.stop(grace).wait()
