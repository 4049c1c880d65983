"""The engine's approvals table and the store, kept together: a thread of each serving process
records the engine's news of approvals into the store (so a decision never waits on SQLite),
and ``reconcile`` brings them together again after a crash between the two.

The engine decides on its approvals table (a file every worker maps): a call opens a pending
approval there, and an approved call uses it there, without waiting on anything else.
"""

from __future__ import annotations

import logging
from typing import Any

from toolgate._core import Approvals
from toolgate.sidecar.approvals.grant_labels import GrantLabels
from toolgate.sidecar.approvals.store import ApprovalStore
from toolgate.sidecar.background import Background

log = logging.getLogger("toolgate.approvals")

#: The table's name for USED.
_TABLE_STATE = {
    "PENDING": "PENDING",
    "APPROVED": "APPROVED",
    "DENIED": "DENIED",
    "USED": "CONSUMED",
}


def reconcile(approvals: Approvals, store: ApprovalStore) -> None:
    """Bring the engine's table and the store together after a restart: the table is right
    about use (an approved call ran even if its news was lost), the store about decisions
    (recorded before the table heard of them), and an approval the store never heard of
    (its news lost) is dropped from the table, so its call opens one approvers can see."""
    now = approvals.now_ms()
    held = {s["id"]: s for s in approvals.slots()}
    for id, slot in held.items():
        row = store.get(id)
        if row is None:
            if slot["state"] == "PENDING" and approvals.forget(id):
                log.warning("dropped approval %s: its details were lost in a crash", id)
        elif slot["state"] == "CONSUMED" and row.stored_state != "USED":
            store.record_used(id, None)
        elif slot["state"] in ("APPROVED", "DENIED") and row.stored_state == "PENDING":
            # A decision the table took but the store never committed (a crash inside
            # decide): nobody knows who took it, so it is undone and asked again.
            approvals.forget(id)
            approvals.apply(id, row.key, "PENDING", row.created_ms, row.deadline_ms, row.owner)
            log.warning("approval %s: its decision was lost in a crash; pending again", id)
    for row in store.open_rows(now):
        table_state = _TABLE_STATE[row.stored_state]
        put_back = approvals.apply(
            row.id, row.key, table_state, row.created_ms, row.deadline_ms, row.owner
        )
        if put_back:
            log.info("approval %s: the table now holds it as %s", row.id, table_state)


class ApprovalRecorder:
    """A thread that records an engine's news of approvals into the store: each serving
    process runs one, so a decision never waits on SQLite."""

    def __init__(self, approvals: Approvals, store: ApprovalStore, labels: GrantLabels) -> None:
        self._approvals = approvals
        self._store = store
        self._labels = labels
        self._loop = Background(
            "approval-recorder",
            lambda: self.record(self._approvals.next_events(0.2)),
            0,
            log,
            "cannot record approvals",
        )

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()
        # What came in meanwhile is recorded too.
        self.record(self._approvals.next_events(0.0, limit=1 << 20))

    def record(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            if event["event"] == "opened":
                self._store.record_opened(event, self._labels)
            else:
                self._store.record_used(event["id"], event["at_ms"])
