"""Human approvals, the control plane's side: the durable store (SQLite in ``--state-dir``) of
what approvers see and what auditors ask about (the call, who approved it, when it ran),
written first when an approver decides.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from toolgate._core import SidecarSettings
from toolgate.sidecar.approvals.grant_labels import GrantLabels
from toolgate.sidecar.approvals.rows import STATES, Page, Row, page_token, read_page_token

log = logging.getLogger("toolgate.approvals")

#: Longest reason an approver may give, in characters.
MAX_REASON = 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    server TEXT,
    tool TEXT NOT NULL,
    grant_label TEXT,
    session TEXT,
    agent TEXT,
    arguments TEXT NOT NULL,
    arguments_digest TEXT NOT NULL,
    rule TEXT NOT NULL,
    revision TEXT NOT NULL,
    approvers TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    timeout_ms INTEGER NOT NULL,
    deadline_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    decided_by TEXT,
    decided_ms INTEGER,
    reason TEXT,
    used_ms INTEGER,
    arguments_cut INTEGER NOT NULL DEFAULT 0,
    arguments_bytes INTEGER NOT NULL DEFAULT 0,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS approvals_newest ON approvals (created_ms DESC, id);
-- Every change to an approval, in order: what watchers and notifiers follow.
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    kind TEXT NOT NULL
);
"""


#: Columns added since the first schema, for stores made before them.
_ADDED = {
    "arguments_cut": "INTEGER NOT NULL DEFAULT 0",
    "arguments_bytes": "INTEGER NOT NULL DEFAULT 0",
    "owner": "TEXT",
}


class ApprovalError(Exception):
    """An approver's decision that cannot be taken: ``kind`` is ``not_found``,
    ``not_pending``, ``not_allowed`` or ``invalid``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def preview(text: str, max_bytes: int) -> tuple[str, bool]:
    """``text`` cut to at most ``max_bytes`` of UTF-8 at a character boundary, and whether
    it was cut (as the engine cuts the arguments it reports)."""
    raw = text.encode()
    if len(raw) <= max_bytes:
        return text, False
    return raw[:max_bytes].decode(errors="ignore"), True


def state_condition(state: str) -> str:
    """SQL that holds for the rows in ``state`` as approvers see it at ``:now``."""
    if state == "EXPIRED":
        return "(state IN ('PENDING', 'APPROVED') AND deadline_ms <= :now)"
    if state in ("PENDING", "APPROVED"):
        return f"(state = '{state}' AND deadline_ms > :now)"
    if state in ("DENIED", "USED"):
        return f"(state = '{state}')"
    raise ValueError(f"not an approval state: {state!r}")


class ApprovalStore:
    """Approvals in SQLite. One connection per thread (``count_by_state`` aside); every write
    is its own transaction, synced to disk before it returns (``synchronous=FULL``)."""

    def __init__(self, path: Path, *, preview_bytes: int | None = None) -> None:
        """``preview_bytes``: of a call's arguments kept (the sidecar's default if None)."""
        self.path = path
        self.preview_bytes = preview_bytes or SidecarSettings().approval_preview_bytes
        self._local = threading.local()
        # count_by_state's connection, shared by its callers in turn (see there).
        self._counting = threading.Lock()
        self._counting_db: sqlite3.Connection | None = None
        # executescript commits on its own; each statement is idempotent.
        self._db().executescript(_SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """A store made before the columns ``_ADDED`` gets them, and its arguments, kept in
        full then, are cut to the preview."""
        db = self._db()
        have = {name for _, name, *_ in db.execute("PRAGMA table_info(approvals)")}
        missing = [column for column in _ADDED if column not in have]
        if not missing:
            return
        with self._write() as db:
            for column in missing:
                db.execute(f"ALTER TABLE approvals ADD COLUMN {column} {_ADDED[column]}")
            rows = db.execute("SELECT id, arguments FROM approvals").fetchall()
            for id, arguments in rows:
                shown, cut = preview(arguments, self.preview_bytes)
                db.execute(
                    "UPDATE approvals SET arguments = ?, arguments_cut = ?, arguments_bytes = ?"
                    " WHERE id = ?",
                    (shown, int(cut), len(arguments.encode()), id),
                )
        log.info("approvals store %s: added %s", self.path, ", ".join(missing))

    def _connect(self, *, check_same_thread: bool = True) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path, timeout=30, isolation_level=None, check_same_thread=check_same_thread
        )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        return db

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._connect()
            self._local.db = db
        return db

    class _Transaction:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, kind: object, *_: object) -> None:
            self.db.execute("ROLLBACK" if kind else "COMMIT")

    def _write(self) -> ApprovalStore._Transaction:
        return ApprovalStore._Transaction(self._db())

    def record_opened(self, event: dict[str, Any], labels: GrantLabels) -> None:
        """A pending approval the engine opened (its news)."""
        with self._write() as db:
            inserted = db.execute(
                "INSERT OR IGNORE INTO approvals (id, key, server, tool, grant_label, session,"
                " agent, arguments, arguments_digest, rule, revision, approvers, created_ms,"
                " timeout_ms, deadline_ms, state, arguments_cut, arguments_bytes, owner) VALUES"
                " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'PENDING', ?, ?, ?)",
                (
                    event["id"],
                    event["key"],
                    event["server"],
                    event["tool"],
                    labels.label(event["grant"], event["grant_verified"]),
                    event["session"],
                    event["agent"],
                    event["arguments"],
                    event["arguments_digest"],
                    event["rule"],
                    event["revision"],
                    json.dumps(event["approvers"]),
                    event["created_ms"],
                    event["expires_ms"] - event["created_ms"],
                    event["expires_ms"],
                    int(event["arguments_cut"]),
                    event["arguments_bytes"],
                    event["owner"],
                ),
            ).rowcount
            if inserted:
                db.execute("INSERT INTO changes (id, kind) VALUES (?, 'opened')", (event["id"],))

    def record_used(self, id: str, at_ms: int | None) -> None:
        """The approved call ran (``at_ms`` None: found used after a restart)."""
        with self._write() as db:
            changed = db.execute(
                "UPDATE approvals SET state = 'USED', used_ms = ? WHERE id = ? AND state != 'USED'",
                (at_ms, id),
            ).rowcount
            if changed:
                db.execute("INSERT INTO changes (id, kind) VALUES (?, 'used')", (id,))

    def decide(
        self,
        id: str,
        approve: bool,
        by: str,
        reason: str,
        now_ms: int,
        apply: Any,
    ) -> Row:
        """An approver's decision: recorded, then ``apply(id, approve)`` puts it into the
        engine's table (returning its new deadline), all in one transaction: if the table
        refuses, nothing is recorded. ApprovalError if it cannot be taken."""
        if len(reason) > MAX_REASON:
            raise ApprovalError("invalid", f"a reason has at most {MAX_REASON} characters")
        with self._write() as db:
            row = self._get(db, id)
            if row is None:
                raise ApprovalError("not_found", f"no approval {id}")
            state = row.state(now_ms)
            if state != "PENDING":
                raise ApprovalError("not_pending", f"approval {id} is {state.lower()}")
            if row.approvers and by not in row.approvers:
                raise ApprovalError(
                    "not_allowed", f"{by} may not decide {id}: its approvers are {row.approvers}"
                )
            new_state = "APPROVED" if approve else "DENIED"
            db.execute(
                "UPDATE approvals SET state = ?, decided_by = ?, decided_ms = ?, reason = ?"
                " WHERE id = ?",
                (new_state, by, now_ms, reason or None, id),
            )
            try:
                deadline_ms = apply(id, approve)
            except ValueError as err:
                raise ApprovalError("not_pending", str(err)) from err
            db.execute("UPDATE approvals SET deadline_ms = ? WHERE id = ?", (deadline_ms, id))
            db.execute("INSERT INTO changes (id, kind) VALUES (?, ?)", (id, new_state.lower()))
        decided = self.get(id)
        assert decided is not None
        return decided

    def _get(self, db: sqlite3.Connection, id: str) -> Row | None:
        found = db.execute(f"SELECT {_SELECT} FROM approvals WHERE id = ?", (id,)).fetchone()
        return _row(found) if found else None

    def get(self, id: str) -> Row | None:
        return self._get(self._db(), id)

    def list(self, state: str | None, now_ms: int, limit: int = 100) -> list[Row]:
        """Newest first; ``state`` as approvers see it (EXPIRED included)."""
        return self.page(state, now_ms, limit).rows

    def page(self, state: str | None, now_ms: int, limit: int, after: str | None = None) -> Page:
        """At most ``limit`` approvals, newest first, from after the page whose
        ``next_token`` is ``after``; ``state`` as approvers see it. The token names the last
        row given (its creation time and id), so rows opened meanwhile never shift a page."""
        where = [state_condition(state)] if state else []
        params: dict[str, Any] = {"now": now_ms, "limit": limit + 1}
        if after is not None:
            params["after_ms"], params["after_id"] = read_page_token(after)
            where.append("(created_ms < :after_ms OR (created_ms = :after_ms AND id > :after_id))")
        sql = f"SELECT {_SELECT} FROM approvals"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_ms DESC, id LIMIT :limit"
        rows = [_row(raw) for raw in self._db().execute(sql, params)]
        if len(rows) <= limit:
            return Page(rows, None)
        rows = rows[:limit]
        return Page(rows, page_token(rows[-1]))

    def count_by_state(self, now_ms: int) -> dict[str, int]:
        """How many approvals are in each state as approvers see it, counted by SQLite
        (EXPIRED from the deadlines) without reading any row into Python.

        On one connection its callers take in turn, not the calling thread's own: /metrics
        asks from a new thread at every scrape, and a connection per thread was one more per
        scrape (two open files and a page cache) that outlived its thread: the soak
        (bench/soak.py) saw the sidecar's open files grow by two a scrape."""
        counts = dict.fromkeys(STATES, 0)
        with self._counting:
            if self._counting_db is None:
                self._counting_db = self._connect(check_same_thread=False)
            found = self._counting_db.execute(
                "SELECT CASE WHEN state IN ('PENDING', 'APPROVED') AND deadline_ms <= ?"
                " THEN 'EXPIRED' ELSE state END AS shown, COUNT(*) FROM approvals GROUP BY shown",
                (now_ms,),
            ).fetchall()
        for state, n in found:
            counts[state] = n
        return counts

    def purge(self, now_ms: int, retention_ms: int) -> int:
        """Forget approvals finished (used, denied, expired) more than ``retention_ms``
        ago, and their changes: how many approvals were forgotten."""
        cutoff = now_ms - retention_ms
        with self._write() as db:
            purged = db.execute(
                "DELETE FROM approvals WHERE CASE state"
                " WHEN 'USED' THEN COALESCE(used_ms, deadline_ms) ELSE deadline_ms END < ?"
                " AND (state IN ('USED', 'DENIED') OR deadline_ms <= ?)",
                (cutoff, now_ms),
            ).rowcount
            if purged:
                db.execute("DELETE FROM changes WHERE id NOT IN (SELECT id FROM approvals)")
        return purged

    def changes_after(self, seq: int, limit: int = 1000) -> list[tuple[int, str, str]]:
        """``(seq, id, kind)`` of the first ``limit`` changes after ``seq``, oldest first."""
        return list(
            self._db().execute(
                "SELECT seq, id, kind FROM changes WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            )
        )

    def last_change(self) -> int:
        (seq,) = self._db().execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()
        return int(seq)

    def open_rows(self, now_ms: int) -> Iterator[Row]:
        """Approvals not yet used, denied ones and pending or approved ones before their
        deadline: those the engine's table must hold."""
        rows = self._db().execute(
            f"SELECT {_SELECT} FROM approvals WHERE state != 'USED' AND deadline_ms > ?",
            (now_ms,),
        )
        for raw in rows:
            yield _row(raw)


_COLUMNS = [
    "id",
    "key",
    "server",
    "tool",
    "grant",
    "session",
    "agent",
    "arguments",
    "arguments_digest",
    "rule",
    "revision",
    "approvers",
    "created_ms",
    "timeout_ms",
    "deadline_ms",
    "stored_state",
    "decided_by",
    "decided_ms",
    "reason",
    "used_ms",
    "arguments_cut",
    "arguments_bytes",
    "owner",
]

#: The store's names of ``Row``'s fields, in ``_COLUMNS``' order.
_STORED_AS = {"grant": "grant_label", "stored_state": "state"}
_SELECT = ", ".join(_STORED_AS.get(c, c) for c in _COLUMNS)


def _row(raw: tuple[Any, ...]) -> Row:
    fields = dict(zip(_COLUMNS, raw, strict=True))
    fields["approvers"] = json.loads(fields["approvers"])
    fields["arguments_cut"] = bool(fields["arguments_cut"])
    return Row(**fields)
