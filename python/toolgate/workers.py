"""``toolgate serve --workers N``: N worker processes on one port, one exact set of limits.

One Python process serves about one core of gRPC. The supervisor (this module) creates a
shared state file under /dev/shm, the counter table and a statistics block per worker, and
starts N ``toolgate serve`` workers that all count in it and share the gRPC port
(``grpc.so_reuseport``). Each worker is a fresh process (fork and exec): no gRPC object ever
exists before it starts. The supervisor restarts a worker that dies (its counts are in the
shared table, so none are lost), forwards SIGHUP (reload) and SIGTERM (drain and stop), and
serves ``/metrics`` once, summing every worker's block, plus restarts per worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from toolgate import logs
from toolgate._core import Engine, Policy, create_shared_state
from toolgate.approval_runtime import ApprovalRuntime
from toolgate.metrics import ReloadCounts, serve_metrics
from toolgate.reload import FileVersion, PolicyWatcher, warn_self_asserted
from toolgate.serve import ServeOptions, load_policy, split_host_port, watch_eviction
from toolgate.store_eviction import EvictionCollector

log = logging.getLogger("toolgate.workers")

#: How often the supervisor looks for dead workers.
POLL_SECONDS = 0.1
#: A worker that dies sooner than this after starting, twice in a row, is not restarted
#: again: it cannot start (a taken port, a broken environment), and retrying would spin.
QUICK_DEATH_SECONDS = 1.0


def state_directory() -> Path:
    """/dev/shm (memory, shared between processes), or the temp directory without it."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def remove_stale_states(directory: Path) -> None:
    """Remove state files left by supervisors that died without cleaning up (SIGKILL, OOM):
    ``toolgate-<pid>-*.state`` whose process no longer exists."""
    for path in directory.glob("toolgate-*-*.state"):
        pid = path.name.split("-")[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            with contextlib.suppress(OSError):
                path.unlink()
                log.info("removed %s, left by a supervisor that is gone", path)


def worker_command(opts: ServeOptions, index: int, shared: Path) -> list[str]:
    """The ``toolgate serve`` command line of worker ``index``."""
    check = opts.check
    h = check.headers
    args = [
        sys.executable,
        "-m",
        "toolgate.cli",
        "serve",
        "--listen",
        opts.listen,
        "--metrics-listen",
        "off",
        "--transport",
        opts.transport,
        "--max-argument-bytes",
        str(opts.max_argument_bytes),
        "--reload-interval",
        str(opts.reload_interval),
        "--reload-settle",
        str(opts.reload_settle),
        "--drain",
        str(opts.drain),
        "--grace",
        str(opts.grace),
        "--log-format",
        opts.log_format,
        "--log-level",
        opts.log_level,
        "--grant-header",
        h.grant,
        "--session-header",
        h.session,
        "--agent-header",
        h.agent,
        "--server-header",
        h.server,
        "--grant-from",
        f"jwt:{check.grant_claim}" if check.grant_claim else "header",
        "--agent-from",
        f"jwt:{check.agent_claim}" if check.agent_claim else "header",
        "--jwt-payload-key",
        check.jwt_payload_key,
        "--max-request-bytes",
        str(check.max_request_bytes),
        "--shared",
        str(shared),
        "--worker-index",
        str(index),
    ]
    if opts.threads is not None:
        args += ["--threads", str(opts.threads)]
    if opts.store != "local":
        # Each worker talks to Redis itself.
        args += [
            "--store",
            opts.store,
            "--store-prefix",
            opts.store_prefix,
            "--store-timeout-ms",
            str(opts.store_timeout_ms),
            "--store-unavailable",
            opts.store_unavailable,
            "--store-mode",
            opts.store_mode,
            "--store-flush-ms",
            str(opts.store_flush_ms),
        ]
    if opts.approvals.state_dir is not None:
        args += ["--state-dir", str(opts.approvals.state_dir)]
    # What each worker's engine enforces when a call opens an approval.
    args += [
        "--approval-pending-per-grant",
        str(opts.approvals.pending_per_grant),
        "--approval-pending-per-rule",
        str(opts.approvals.pending_per_rule),
        "--approval-preview-bytes",
        str(opts.approvals.preview_bytes),
    ]
    if opts.decision_log is not None:
        args += [
            "--decision-log",
            opts.decision_log,
            "--decision-log-filter",
            opts.decision_log_filter,
            "--decision-log-rotate-mib",
            str(opts.decision_log_rotate_bytes / (1 << 20)),
        ]
    if opts.policy is not None:
        args += ["--policy", str(opts.policy)]
    return args


@dataclass
class Worker:
    index: int
    proc: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)
    quick_deaths: int = 0


class WorkerCollector(Collector):
    """Per-worker decisions (from each worker's block) and restarts."""

    def __init__(self, engines: list[Engine], restarts: list[int]) -> None:
        self._engines = engines
        self._restarts = restarts

    def collect(self) -> Iterator[Metric]:
        decisions = CounterMetricFamily(
            "toolgate_worker_decisions",
            "Decisions made by each worker process.",
            labels=["worker"],
        )
        restarts = CounterMetricFamily(
            "toolgate_worker_restarts",
            "Times the supervisor restarted a worker process that had died.",
            labels=["worker"],
        )
        for i, engine in enumerate(self._engines):
            total = sum(n for *_, n in engine.stats()["outcomes"])
            decisions.add_metric([str(i)], total)
            restarts.add_metric([str(i)], self._restarts[i])
        yield decisions
        yield restarts


def die_with_supervisor() -> None:
    """In a worker: get SIGTERM when the supervisor dies (Linux), so no worker outlives it
    and keeps serving counts nobody reports; exit at once if it is already gone."""
    parent = os.getppid()
    if sys.platform == "linux":
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    if parent == 1 or os.getppid() != parent:
        sys.exit("toolgate worker: the supervisor is gone")


def _check_port_free(listen: str) -> None:
    """Fail now, with a clear message, if the gRPC port is taken: the workers bind it with
    SO_REUSEPORT, which would not notice a process of the same user already there."""
    host, port = split_host_port(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, port))


def supervise(opts: ServeOptions) -> int:
    if opts.metrics_per_tool:
        raise ValueError("--metrics-per-tool counts per process; it cannot be used with --workers")
    if opts.decision_log == "-":
        raise ValueError(
            "with --workers, --decision-log needs a file: each worker writes its own chain"
            " (FILE.wN), and stdout would interleave them"
        )
    policy, loaded = load_policy(opts)  # invalid policy: PolicyError before anything starts
    if opts.policy is not None:
        warn_self_asserted(opts.policy, policy, opts.check.agent_claim is not None)
    directory = state_directory()
    remove_stale_states(directory)
    state = directory / f"toolgate-{os.getpid()}-{secrets.token_hex(4)}.state"
    create_shared_state(
        state, workers=opts.workers, capacity=opts.capacity, reservations=opts.reservations
    )
    try:
        return _run(opts, policy, loaded, state)
    finally:
        with contextlib.suppress(FileNotFoundError):
            state.unlink()


def _run(opts: ServeOptions, policy: Policy, loaded: FileVersion | None, state: Path) -> int:
    total = Engine(policy, shared=state)
    logs.configure(opts.log_format, opts.log_level, lambda: total.revision)
    try:
        _check_port_free(opts.listen)
    except OSError as err:
        log.error("cannot listen on %s: %s", opts.listen, err)
        return 2
    # The workers count on Redis; the supervisor reads its eviction policy for them all.
    eviction = watch_eviction(opts) if opts.store != "local" else None

    reloads = ReloadCounts()
    per_worker = [Engine(policy, shared=state, worker=i) for i in range(opts.workers)]
    restarts = [0] * opts.workers
    # The supervisor coordinates approvals (admin listener, webhooks); the workers serve.
    try:
        approvals = ApprovalRuntime(total, opts.approvals, serving=False, coordinating=True)
    except (OSError, ValueError) as err:
        log.error("approvals: %s", err)
        return 2
    worker_opts = replace(opts, approvals=replace(opts.approvals, state_dir=approvals.state.path))
    if opts.metrics_listen:
        host, metrics_port = split_host_port(opts.metrics_listen)
        try:
            registry = serve_metrics(total, reloads, host, metrics_port, transport=opts.transport)
        except OSError as err:
            log.error("cannot serve metrics on %s: %s", opts.metrics_listen, err)
            approvals.stop(0)
            return 2
        registry.register(WorkerCollector(per_worker, restarts))
        registry.register(approvals.collector())
        registry.register(EvictionCollector(eviction))
    approvals.start()
    if eviction is not None:
        eviction.start()

    # The supervisor's own engine follows the file too, so /metrics shows the revision the
    # workers serve and counts reloads once.
    watcher = None
    if opts.policy is not None:
        watcher = PolicyWatcher(
            opts.policy,
            total,
            reloads,
            interval=opts.reload_interval,
            loaded=loaded,
            settle=opts.reload_settle,
            agent_verified=opts.check.agent_claim is not None,
        )
        watcher.start()

    def spawn(index: int) -> Worker:
        return Worker(index, subprocess.Popen(worker_command(worker_opts, index, state)))

    workers = [spawn(i) for i in range(opts.workers)]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def reload_all(*_: object) -> None:
        if watcher is not None:
            watcher.trigger()
        for w in workers:
            with contextlib.suppress(ProcessLookupError):
                w.proc.send_signal(signal.SIGHUP)

    signal.signal(signal.SIGHUP, reload_all)
    log.info(
        "supervising %d workers on %s (shared state %s, metrics on %s)",
        opts.workers,
        opts.listen,
        state,
        opts.metrics_listen or "off",
    )

    failed = False
    while not stop.wait(POLL_SECONDS):
        for slot, w in enumerate(workers):
            code = w.proc.poll()
            if code is None:
                continue
            quick = time.monotonic() - w.started < QUICK_DEATH_SECONDS
            quick_deaths = w.quick_deaths + 1 if quick else 0
            if quick_deaths >= 2:
                log.error("worker %d cannot start (exit %d): stopping", w.index, code)
                failed = True
                stop.set()
                break
            log.warning("worker %d exited with %d: restarting it", w.index, code)
            restarts[w.index] += 1
            workers[slot] = spawn(w.index)
            workers[slot].quick_deaths = quick_deaths

    log.info("stopping %d workers", len(workers))
    for w in workers:
        with contextlib.suppress(ProcessLookupError):
            w.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + opts.drain + opts.grace + 5
    codes = []
    for w in workers:
        try:
            codes.append(w.proc.wait(timeout=max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            log.error("worker %d did not stop in time: killing it", w.index)
            w.proc.kill()
            codes.append(w.proc.wait())
    approvals.stop(opts.grace)
    if eviction is not None:
        eviction.stop()
    if watcher is not None:
        watcher.stop()
    log.info("stopped")
    if failed:
        return 2
    return 0 if all(c == 0 for c in codes) else 1
