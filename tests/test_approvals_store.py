"""Approvals below the sidecar: an engine on a manual clock with its approvals table in a
file, the control plane's SQLite store, the recorder that fills it, and reconciling the two
after a crash. (The sidecar, the CLI, webhooks and Envoy: test_approvals.py.)
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
import toolgate
from conftest import limit, make_sidecar, policy
from hypothesis import given, settings
from hypothesis import strategies as st
from toolgate.sidecar.approvals.grant_labels import GrantLabels, load_key
from toolgate.sidecar.approvals.recorder import ApprovalRecorder, reconcile
from toolgate.sidecar.approvals.store import ApprovalError, ApprovalStore

MIN = 60_000

DOC = policy(
    {
        "terminate": {
            "action": "require_approval",
            "reason": "Terminating needs a human.",
            "approval": {"timeout": "10m", "approvers": ["alice"]},
            "limits": [limit("t", 2, "hour", "grant")],
        },
        "restart": {"action": "require_approval"},
    }
)


class Setup:
    """An engine, its approvals table in ``dir``, and the store beside it."""

    def __init__(self, dir: Path, clock: toolgate.ManualClock | None = None) -> None:
        self.dir = dir
        self.clock = clock or toolgate.ManualClock(1000.0)
        self.labels = GrantLabels(load_key(dir / "grant.key"))
        self.sidecar = make_sidecar(
            DOC,
            clock=self.clock,
            approvals_table=dir / "approvals.table",
            key=self.labels.key,
        )
        self.engine = self.sidecar.engine
        approvals = self.sidecar.take_approvals()
        assert approvals is not None
        self.approvals = approvals
        self.store = ApprovalStore(dir / "approvals.db")

    def call(self, tool: str = "terminate", grant: str = "g", **args: Any) -> toolgate.Decision:
        return self.engine.decide(tool, grant=grant, arguments=args or {"ids": ["i-1"]})

    def record(self) -> None:
        ApprovalRecorder(self.approvals, self.store, self.labels).record(
            self.approvals.next_events(0.0, limit=1 << 20)
        )

    def approve(self, id: str, by: str = "alice", approve: bool = True) -> Any:
        return self.store.decide(
            id,
            approve,
            by,
            "",
            self.approvals.now_ms(),
            lambda i, ok: self.approvals.decide(i, ok)["deadline_ms"],
        )


def test_a_pending_approval_is_stored_with_everything_an_approver_needs(tmp_path):
    s = Setup(tmp_path)
    d = s.call(ids=["i-1", "i-2"])
    assert (d.verdict, d.code) == ("REQUIRE_APPROVAL", "APPROVAL_REQUIRED")
    assert d.approval_id and d.approval_id.startswith("apr_") and len(d.approval_id) == 36
    assert d.approval_id in d.reason and d.reason.startswith("Terminating needs a human. ")
    s.record()
    row = s.store.get(d.approval_id)
    assert row is not None
    assert (row.tool, row.rule, row.revision) == ("terminate", "/tools/terminate", d.revision)
    assert json.loads(row.arguments) == {"ids": ["i-1", "i-2"]}
    assert row.arguments_digest.startswith("hmac-sha256:") and row.approvers == ["alice"]
    assert len(row.arguments_digest) == len("hmac-sha256:") + 64
    assert row.deadline_ms - row.created_ms == 10 * MIN
    # The grant is a credential: only its keyed hash is stored.
    assert row.grant.startswith("hmac-sha256:") and row.grant != "g"
    assert row.state(s.approvals.now_ms()) == "PENDING"


def test_the_same_call_waits_on_one_approval_and_other_arguments_get_their_own(tmp_path):
    s = Setup(tmp_path)
    first = s.call().approval_id
    assert s.call().approval_id == first
    assert s.call(ids=["i-2"]).approval_id != first
    assert s.call(grant="other").approval_id != first
    s.record()
    assert len(s.store.list(None, s.approvals.now_ms())) == 3


@pytest.mark.parametrize("value", [{1, 2}, float("nan"), {"a": {1: 2}}, object()])
def test_arguments_json_cannot_hold_are_refused_not_approved_as_null(tmp_path, value):
    """An approval is for the arguments its approver saw: ones JSON cannot show would all be
    shown (and bound) as null, so one approval would let any such call run."""
    s = Setup(tmp_path)
    d = s.engine.decide("terminate", grant="g", arguments={"ids": value})
    assert (d.verdict, d.code, d.approval_id) == ("DENY", "INVALID_REQUEST", None)
    assert "cannot be shown to an approver as JSON" in d.reason
    s.record()
    assert s.store.list(None, s.approvals.now_ms()) == []


def test_an_approved_call_runs_once_and_consumes_its_limits(tmp_path):
    s = Setup(tmp_path)
    id = s.call().approval_id
    s.record()
    row = s.approve(id)
    assert row.state(s.approvals.now_ms()) == "APPROVED" and row.decided_by == "alice"
    ran = s.call()
    assert (ran.verdict, ran.approval_id) == ("ALLOW", id)
    assert ran.limits[0].remaining == 1, "the limit is consumed when the call runs"
    again = s.call()
    assert again.verdict == "REQUIRE_APPROVAL" and again.approval_id != id
    s.record()
    assert s.store.get(id).state(s.approvals.now_ms()) == "USED"


def test_only_the_rules_approvers_may_decide_and_only_once(tmp_path):
    s = Setup(tmp_path)
    id = s.call().approval_id
    s.record()
    with pytest.raises(ApprovalError) as info:
        s.approve(id, by="mallory")
    assert info.value.kind == "not_allowed"
    assert s.call().verdict == "REQUIRE_APPROVAL", "a refused approver changed nothing"
    s.approve(id, by="alice", approve=False)
    with pytest.raises(ApprovalError) as info:
        s.approve(id)
    assert info.value.kind == "not_pending"
    denied = s.call()
    assert (denied.code, denied.approval_id) == ("APPROVAL_DENIED", id)
    with pytest.raises(ApprovalError) as info:
        s.approve("apr_" + "0" * 32)
    assert info.value.kind == "not_found"


def test_a_rule_without_approvers_accepts_any_admin(tmp_path):
    s = Setup(tmp_path)
    id = s.call("restart").approval_id
    s.record()
    s.approve(id, by="whoever")
    assert s.call("restart").verdict == "ALLOW"


def test_expired_approvals_never_allow(tmp_path):
    s = Setup(tmp_path)
    pending = s.call().approval_id
    approved = s.call(ids=["i-2"]).approval_id
    s.record()
    s.approve(approved)
    s.clock.advance(10 * 60 + 1)
    now = s.approvals.now_ms()
    assert s.store.get(pending).state(now) == "EXPIRED"
    assert s.store.get(approved).state(now) == "EXPIRED"
    with pytest.raises(ApprovalError):
        s.approve(pending)
    late = s.call(ids=["i-2"])
    assert late.verdict == "REQUIRE_APPROVAL" and late.approval_id not in (pending, approved)


def test_an_approved_call_racing_on_threads_runs_once(tmp_path):
    s = Setup(tmp_path)
    id = s.call().approval_id
    s.record()
    s.approve(id)
    barrier = threading.Barrier(8)
    verdicts: list[str] = []

    def race() -> None:
        barrier.wait()
        verdicts.append(s.call().verdict)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(verdicts) == ["ALLOW"] + ["REQUIRE_APPROVAL"] * 7


def test_two_engines_on_one_table_file_share_approvals(tmp_path):
    """Two engines on one table file (a restarted sidecar while the old one finishes): one
    opens an approval, the other runs it, once."""
    a, b = Setup(tmp_path), Setup(tmp_path)
    id = a.call().approval_id
    assert b.call().approval_id == id, "the second engine sees the pending approval"
    a.record()
    a.approve(id)
    assert [b.call().verdict, a.call().verdict][0] == "ALLOW"
    assert a.call().approval_id != id


def test_reconcile_drops_approvals_the_store_never_heard_of(tmp_path):
    s = Setup(tmp_path)
    lost = s.call().approval_id
    s.approvals.next_events(0.0)  # its news, lost in a crash
    reconcile(s.approvals, s.store)
    assert s.approvals.get(lost) is None
    fresh = s.call()
    assert fresh.approval_id != lost, "the call opens one an approver can see"


def test_reconcile_undoes_a_decision_the_store_never_committed(tmp_path):
    s = Setup(tmp_path)
    id = s.call().approval_id
    s.record()
    s.approvals.decide(id, True)  # the table took it; the crash came before the commit
    reconcile(s.approvals, s.store)
    assert s.approvals.get(id)["state"] == "PENDING"
    assert s.call().verdict == "REQUIRE_APPROVAL"
    s.approve(id)
    assert s.call().verdict == "ALLOW"


def test_reconcile_puts_back_what_a_lost_table_file_held(tmp_path):
    s = Setup(tmp_path)
    approved = s.call().approval_id
    denied = s.call(ids=["i-2"]).approval_id
    s.record()
    s.approve(approved)
    s.approve(denied, approve=False)
    (tmp_path / "approvals.table").unlink()
    restarted = Setup(tmp_path, s.clock)
    reconcile(restarted.approvals, restarted.store)
    assert restarted.call().verdict == "ALLOW"
    assert restarted.call(ids=["i-2"]).code == "APPROVAL_DENIED"


def test_reconcile_records_a_use_whose_news_was_lost(tmp_path):
    s = Setup(tmp_path)
    id = s.call().approval_id
    s.record()
    s.approve(id)
    assert s.call().verdict == "ALLOW"
    s.approvals.next_events(0.0)  # the news of its use, lost
    reconcile(s.approvals, s.store)
    assert s.store.get(id).stored_state == "USED"


def test_a_store_write_is_on_disk_when_it_returns(tmp_path):
    """Another connection (another process, after a crash) reads the decision at once."""
    s = Setup(tmp_path)
    id = s.call().approval_id
    s.record()
    s.approve(id)
    with sqlite3.connect(tmp_path / "approvals.db") as db:
        ((state, by),) = db.execute(
            "SELECT state, decided_by FROM approvals WHERE id = ?", (id,)
        ).fetchall()
    assert (state, by) == ("APPROVED", "alice")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["call", "approve", "deny", "tick"]),
            st.integers(0, 2),
        ),
        max_size=30,
    )
)
def test_a_call_runs_only_as_often_as_it_was_approved(tmp_path_factory, steps):
    """Any interleaving of calls (three argument sets), decisions and time: each ALLOW is
    of an approval that was approved, unexpired, and not used before."""
    s = Setup(tmp_path_factory.mktemp("approvals"))
    approved: dict[str, int] = {}
    used: set[str] = set()
    for action, which in steps:
        args = {"ids": [f"i-{which}"]}
        if action == "call":
            d = s.engine.decide("restart", grant="g", arguments=args)
            if d.verdict == "ALLOW":
                assert d.approval_id in approved and d.approval_id not in used
                assert approved[d.approval_id] > s.approvals.now_ms()
                used.add(d.approval_id)
            else:
                assert d.approval_id is not None
        elif action == "tick":
            s.clock.advance(4 * 60)
        else:
            s.record()
            pending = [r for r in s.store.list("PENDING", s.approvals.now_ms())]
            if pending:
                row = pending[which % len(pending)]
                decided = s.approve(row.id, approve=action == "approve")
                if action == "approve":
                    approved[row.id] = decided.deadline_ms


def test_metrics_count_by_state_in_sql_without_reading_a_row(tmp_path, monkeypatch):
    s = Setup(tmp_path)
    pending = s.call().approval_id
    approved = s.call(ids=["i-2"]).approval_id
    s.call(ids=["i-3"])
    s.record()
    s.approve(approved)
    s.approve(s.call(ids=["i-3"]).approval_id, approve=False)
    assert s.call(ids=["i-2"]).verdict == "ALLOW"
    s.record()
    s.call(ids=["i-4"])
    s.record()
    s.clock.advance(10 * 60 + 1)  # i-4's approval lapses; so does the pending one
    import toolgate.sidecar.approvals.store as approvals

    def no_rows(raw: Any) -> Any:
        raise AssertionError("a row was read into Python")

    monkeypatch.setattr(approvals, "_row", no_rows)
    counts = s.store.count_by_state(s.approvals.now_ms())
    assert counts == {"PENDING": 0, "APPROVED": 0, "DENIED": 1, "USED": 1, "EXPIRED": 2}
    assert pending


def test_counting_from_a_new_thread_at_each_scrape_holds_no_more_files_open(tmp_path):
    # /metrics counts the approvals from a new thread at every scrape: a connection per
    # thread would keep two more files open each time, past the thread's end.
    s = Setup(tmp_path)
    s.call()
    s.record()

    def scrape() -> None:
        thread = threading.Thread(target=lambda: counted.append(s.store.count_by_state(0)))
        thread.start()
        thread.join()

    def open_files() -> list[str]:
        """This store's files the process holds open (others' come and go meanwhile)."""
        found = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:  # closed since it was listed
                continue
            if target.startswith(str(tmp_path)):
                found.append(target)
        return sorted(found)

    counted: list[dict[str, int]] = []
    scrape()
    before = open_files()
    for _ in range(50):
        scrape()
    assert open_files() == before
    assert [c["PENDING"] for c in counted] == [1] * 51


def test_finished_approvals_are_purged_after_the_retention_and_live_ones_kept(tmp_path):
    s = Setup(tmp_path)
    used = s.call().approval_id
    denied = s.call(ids=["i-2"]).approval_id
    s.record()
    s.approve(used)
    s.approve(denied, approve=False)
    assert s.call().verdict == "ALLOW"
    s.record()
    waiting = s.call(ids=["i-3"]).approval_id
    s.record()
    hour = 3600 * 1000
    assert s.store.purge(s.approvals.now_ms(), hour) == 0, "nothing finished an hour ago"
    s.clock.advance(9 * 60)
    # Used more than an hour ago, it goes; the denial is in force until its deadline.
    assert s.store.purge(s.approvals.now_ms() + hour, hour) == 1
    assert s.store.get(used) is None and s.store.get(denied) is not None
    s.clock.advance(3 * 3600)
    assert s.store.purge(s.approvals.now_ms(), hour) == 2
    assert s.store.list(None, s.approvals.now_ms()) == []
    assert s.store.changes_after(0) == [], "their changes went with them"
    assert waiting


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 40), st.integers(1, 12), st.sampled_from([None, "PENDING", "EXPIRED"]))
def test_pages_give_every_approval_once_newest_first(tmp_path_factory, count, size, state):
    s = Setup(tmp_path_factory.mktemp("pages"))
    for n in range(count):
        s.call("restart", grant=f"g-{n % 3}", ids=[f"i-{n}"])
        s.clock.advance(n % 2)  # some share a creation time
    s.record()
    now = s.approvals.now_ms()
    whole = s.store.list(state, now, limit=1000)
    paged: list[str] = []
    token = None
    while True:
        page = s.store.page(state, now, size, token)
        assert len(page.rows) <= size
        paged += [r.id for r in page.rows]
        if page.next_token is None:
            break
        token = page.next_token
    assert paged == [r.id for r in whole]
    assert len(whole) == (0 if state == "EXPIRED" else count)


def test_a_store_of_the_first_schema_is_migrated_and_its_arguments_cut(tmp_path):
    with sqlite3.connect(tmp_path / "approvals.db") as db:
        db.executescript(
            "CREATE TABLE approvals (id TEXT PRIMARY KEY, key TEXT NOT NULL, server TEXT,"
            " tool TEXT NOT NULL, grant_label TEXT, session TEXT, agent TEXT,"
            " arguments TEXT NOT NULL, arguments_digest TEXT NOT NULL, rule TEXT NOT NULL,"
            " revision TEXT NOT NULL, approvers TEXT NOT NULL, created_ms INTEGER NOT NULL,"
            " timeout_ms INTEGER NOT NULL, deadline_ms INTEGER NOT NULL, state TEXT NOT NULL,"
            " decided_by TEXT, decided_ms INTEGER, reason TEXT, used_ms INTEGER);"
        )
        big = json.dumps({"blob": "é" * 600_000}, ensure_ascii=False)
        db.execute(
            "INSERT INTO approvals VALUES (?, ?, NULL, 't', NULL, NULL, NULL, ?, 'd', '/r', 'r',"
            " '[]', 0, 1, 1, 'USED', NULL, NULL, NULL, 1)",
            ("apr_" + "1" * 32, "0" * 32, big),
        )
    store = ApprovalStore(tmp_path / "approvals.db", preview_bytes=101)
    (row,) = store.list(None, 0)
    assert row.arguments_cut and row.arguments_bytes == len(big.encode())
    assert len(row.arguments.encode()) <= 101 and big.startswith(row.arguments)
    assert ApprovalStore(tmp_path / "approvals.db").get(row.id) == row, "migrated once"


def test_an_approvers_reason_is_bounded(tmp_path):
    s = Setup(tmp_path)
    id = s.call().approval_id
    s.record()
    with pytest.raises(ApprovalError) as info:
        s.store.decide(id, True, "alice", "x" * 1025, s.approvals.now_ms(), lambda *_: 0)
    assert info.value.kind == "invalid"
