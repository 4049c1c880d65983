"""Approvals below the sidecar: an engine on a manual clock with its approvals table in a
file, the control plane's SQLite store, the recorder that fills it, and reconciling the two
after a crash. (The sidecar, the CLI, webhooks and Envoy: test_approvals.py.)
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
import toolgate
from conftest import limit, make_engine, policy
from hypothesis import given, settings
from hypothesis import strategies as st
from toolgate.approvals import (
    ApprovalError,
    ApprovalRecorder,
    ApprovalStore,
    GrantLabels,
    load_key,
    reconcile,
)

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
        self.engine = make_engine(DOC, clock=self.clock)
        self.labels = GrantLabels(load_key(dir / "grant.key"))
        self.approvals = self.engine.enable_approvals(dir / "approvals.table", key=self.labels.key)
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
    assert len(row.arguments_digest) == 64 and row.approvers == ["alice"]
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
    """As --workers processes do: one engine opens, the other runs it, once."""
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
