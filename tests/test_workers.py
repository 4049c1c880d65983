"""``toolgate serve --workers N``: worker processes on one port over one shared counter table.

Against a real supervisor and its real workers: a limit is exact across workers with many
client connections; a worker killed with SIGKILL under load is restarted and loses no count;
reload reaches every worker; ``/metrics`` is served once, summing every worker.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import limit, policy
from sidecar import Sidecar, toolgate_cli, wait_for, write_atomically
from toolgate.v1 import decider_pb2, decider_pb2_grpc

# Every test here runs once per transport (native, grpcio).
pytestmark = pytest.mark.usefixtures("transport")

WORKERS = 2
#: Connections the load opens: with SO_REUSEPORT the kernel spreads connections (not
#: requests) over the workers, so there must be enough of them to reach every worker.
CONNECTIONS = 16


def started(sc: Sidecar) -> Sidecar:
    """Wait until every worker has logged that it serves (the supervisor's health answers as
    soon as one does)."""
    wait_for(lambda: sc.stderr.count("serving toolgate.v1.Decider") >= WORKERS or None)
    return sc


def limited(max_calls: int) -> dict[str, Any]:
    return policy({"create-ami": {"limits": [limit("ami", max_calls, window="day")]}})


def stub(target: str) -> tuple[grpc.Channel, decider_pb2_grpc.DeciderStub]:
    """A channel with its own connection (no subchannel shared with other channels)."""
    channel = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
    return channel, decider_pb2_grpc.DeciderStub(channel)


def decide(s: decider_pb2_grpc.DeciderStub, grant: str, dry_run: bool = False) -> Any:
    subject = decider_pb2.Subject(grant=grant)
    request = decider_pb2.DecideRequest(tool="create-ami", subject=subject, dry_run=dry_run)
    return s.Decide(request, timeout=30)


class Load:
    """``CONNECTIONS`` threads, each on its own connection, deciding for one grant until
    ``total`` requests have been sent; counts answers by verdict and failed RPCs."""

    def __init__(self, target: str, grant: str, total: int) -> None:
        self.target, self.grant = target, grant
        self._left = total
        self._lock = threading.Lock()
        self.allowed = self.denied = self.failed = 0
        self.sent = threading.Event()

    def _take(self) -> bool:
        with self._lock:
            if self._left == 0:
                return False
            self._left -= 1
            return True

    def _run(self) -> None:
        channel, s = stub(self.target)
        with channel:
            while self._take():
                try:
                    r = decide(s, self.grant)
                except grpc.RpcError:
                    outcome = "failed"
                else:
                    outcome = "allowed" if r.verdict == decider_pb2.ALLOW else "denied"
                with self._lock:
                    setattr(self, outcome, getattr(self, outcome) + 1)

    def run(self, during: Callable[[], None] | None = None) -> None:
        threads = [threading.Thread(target=self._run) for _ in range(CONNECTIONS)]
        for t in threads:
            t.start()
        if during is not None:
            during()
        for t in threads:
            t.join(timeout=120)
            assert not t.is_alive()


def consumed(target: str, grant: str, max_calls: int) -> int:
    """Calls counted for ``grant``, read with a dry run (which reports the room that would be
    left after one more call, and counts nothing)."""
    channel, s = stub(target)
    with channel:
        probe = decide(s, grant, dry_run=True)
    if probe.verdict != decider_pb2.ALLOW:
        return max_calls
    (state,) = probe.limits
    return max_calls - int(state.remaining) - 1


def worker_pids(supervisor: int) -> list[int]:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return [int(pid) for pid in children]


def test_a_limit_is_exact_across_workers_and_connections():
    max_calls = 150
    with started(Sidecar(limited(max_calls), "--workers", str(WORKERS))) as sc:
        load = Load(sc.target, "alice", total=400)
        load.run()
        assert (load.allowed, load.denied, load.failed) == (max_calls, 400 - max_calls, 0)
        # /metrics, served once by the supervisor, sums the workers...
        assert (
            sc.metric("toolgate_decisions_total", api="decider", verdict="ALLOW", code="ALLOWED")
            == max_calls
        )
        assert (
            sc.metric(
                "toolgate_decisions_total", api="decider", verdict="DENY", code="RATE_LIMITED"
            )
            == 400 - max_calls
        )
        # ...each of which served some of the load.
        per_worker = sc.series("toolgate_worker_decisions_total")
        assert len(per_worker) == WORKERS
        assert all(n > 0 for n in per_worker.values()), per_worker
        assert sum(per_worker.values()) == 400


def test_a_worker_killed_under_load_is_restarted_and_loses_no_count():
    max_calls = 300
    with started(Sidecar(limited(max_calls), "--workers", str(WORKERS))) as sc:
        assert sc.proc is not None
        before = worker_pids(sc.proc.pid)
        assert len(before) == WORKERS

        def kill_one() -> None:
            time.sleep(0.3)  # under load
            os.kill(before[0], signal.SIGKILL)

        load = Load(sc.target, "bob", total=200)
        load.run(during=kill_one)
        wait_for(lambda: sc.metric("toolgate_worker_restarts_total", worker="0") == 1 or None)
        wait_for(lambda: len(worker_pids(sc.proc.pid)) == WORKERS or None)
        wait_for(lambda: sc.stderr.count("serving toolgate.v1.Decider") > WORKERS or None)
        assert before[0] not in worker_pids(sc.proc.pid)

        # No count is lost: every allowed answer was counted. A call the killed worker had
        # counted but not answered stays counted, whether its client saw the RPC fail or
        # gRPC retried it on the other worker (a transparent retry: counted twice, answered
        # once), so the excess is at most the calls in flight at the kill, one per connection.
        counted = consumed(sc.target, "bob", max_calls)
        assert load.allowed <= counted <= load.allowed + CONNECTIONS
        assert load.denied == 0

        # The limit stays exact: past it, nothing more is allowed, whichever worker answers.
        rest = Load(sc.target, "bob", total=max_calls)
        rest.run()
        assert counted + rest.allowed == max_calls
        assert load.allowed + rest.allowed <= max_calls
        assert rest.failed == 0
        assert consumed(sc.target, "bob", max_calls) == max_calls


def every_connection_answers(target: str, verdict: int) -> bool | None:
    """Whether ``CONNECTIONS`` connections (so, likely, every worker) all answer ``verdict``
    for a call that only the policy's default decides; None if not."""
    channels = [stub(target) for _ in range(CONNECTIONS)]
    try:
        return all(decide(s, "x").verdict == verdict for _, s in channels) or None
    finally:
        for channel, _ in channels:
            channel.close()


def test_reload_reaches_every_worker(tmp_path: Path):
    path = tmp_path / "policy.json"
    path.write_text('{"version": "1", "default": "deny"}')
    with started(Sidecar(path, "--workers", str(WORKERS), reload_interval=0.2)) as sc:
        write_atomically(path, '{"version": "1", "default": "allow"}')
        sc.wait_reloads("success", 1)
        wait_for(lambda: every_connection_answers(sc.target, decider_pb2.ALLOW))
        # SIGHUP to the supervisor is passed on too: with the file unchanged, nothing reloads
        # and every worker keeps serving.
        sc.signal(signal.SIGHUP)
        assert every_connection_answers(sc.target, decider_pb2.ALLOW)


def test_every_worker_waits_for_an_in_place_edit_to_settle(tmp_path: Path):
    """--reload-settle reaches the workers: with a settle that never ends, an in-place edit
    is loaded by none of them (each logs that it waits), until SIGHUP says it is complete."""
    path = tmp_path / "policy.json"
    path.write_text('{"version": "1", "default": "deny"}')
    settle = ("--reload-settle", "3600")
    with started(Sidecar(path, "--workers", str(WORKERS), *settle, reload_interval=0.2)) as sc:
        path.write_text('{"version": "1", "default": "allow"}')  # in place
        # The supervisor's watcher and each worker's have seen the edit.
        wait_for(lambda: sc.stderr.count("unchanged for 3600s") >= WORKERS + 1 or None)
        assert every_connection_answers(sc.target, decider_pb2.DENY)
        sc.signal(signal.SIGHUP)
        wait_for(lambda: every_connection_answers(sc.target, decider_pb2.ALLOW))


def test_sigterm_stops_every_worker_and_removes_the_shared_state():
    with started(Sidecar(limited(5), "--workers", str(WORKERS))) as sc:
        assert sc.proc is not None
        pids = worker_pids(sc.proc.pid)
        state = [line for line in sc.stderr.splitlines() if "shared state" in line]
        path = Path(state[0].split("shared state ")[1].split(",")[0])
        assert path.exists()
        assert sc.stop() == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid)
    assert not path.exists()


def test_state_files_of_dead_supervisors_are_removed():
    from toolgate.workers import state_directory

    dead = 2**22 + 12345  # above pid_max's default: no such process
    assert not Path(f"/proc/{dead}").exists()
    stale = state_directory() / f"toolgate-{dead}-0badc0de.state"
    live = state_directory() / f"toolgate-{os.getpid()}-0badc0de.state"
    stale.write_bytes(b"")
    live.write_bytes(b"")
    try:
        with started(Sidecar(limited(5), "--workers", str(WORKERS))):
            assert not stale.exists()
            assert live.exists()  # its owner (this test) is alive
    finally:
        for path in (stale, live):
            path.unlink(missing_ok=True)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_worker_options_that_cannot_work_are_refused():
    r = toolgate_cli("serve", "--workers", "2", "--metrics-per-tool", "--listen", "127.0.0.1:0")
    assert r.returncode == 2
    assert "--metrics-per-tool" in r.stderr
    r = toolgate_cli("serve", "--workers", "0")
    assert r.returncode == 2
    assert "--workers" in r.stderr


def test_an_invalid_policy_starts_no_worker(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": "1", "default": "maybe"}')
    r = toolgate_cli("serve", "--workers", "2", "--policy", bad, "--listen", "127.0.0.1:0")
    assert r.returncode == 1
    assert "/default" in r.stderr


def test_a_taken_port_is_reported_not_shared():
    with Sidecar(limited(5)) as first:
        r = toolgate_cli("serve", "--workers", str(WORKERS), "--listen", first.target)
        assert r.returncode == 2
        assert "cannot listen" in r.stderr
