"""``toolgate serve``: the decision sidecar.

One process: the ``toolgate.v1.Decider`` gRPC service, Envoy's ext_authz, ext_proc and rate
limit services, agentgateway's ExtMCP, ``grpc.health.v1.Health`` and server reflection on one
address, served by the
sidecar the extension assembles from its settings (one serving thread per CPU);
Prometheus ``/metrics`` on another; hot reload of the policy file on change and on SIGHUP;
and a graceful stop on SIGTERM (NOT_SERVING for a drain period while still answering, then
refuse new calls, finish in-flight ones, exit 0). Python owns all of this; no Python runs
per call.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import threading
from pathlib import Path
from typing import NoReturn

from toolgate._core import SERVICES, MetricFamily, Policy, Sidecar
from toolgate.cli import exits
from toolgate.files import check_regular
from toolgate.sidecar import logs
from toolgate.sidecar.addresses import check_listen, join_host_port, parse_host_port
from toolgate.sidecar.approvals.grant_labels import GrantLabels, load_key
from toolgate.sidecar.approvals.runtime import ApprovalRuntime, StateDir
from toolgate.sidecar.metrics import ReloadCounts, serve_metrics, value
from toolgate.sidecar.options import ServeOptions
from toolgate.sidecar.reload import FileVersion, PolicyWatcher, read_version, warn_self_asserted
from toolgate.sidecar.store_eviction import EvictionCollector, EvictionWatch

log = logging.getLogger("toolgate.serve")

#: The policy served when none is given: nothing is allowed.
DENY_EVERYTHING = {"version": "1", "default": "deny"}


#: Seconds between logging the decision log's head (while it changes).
HEAD_EVERY = 60


def _reason(err: OSError) -> str:
    """What the system said went wrong (``Not a directory``), without Python's spelling."""
    return err.strerror or str(err)


def log_head(sidecar: Sidecar, last: tuple[int, str] | None) -> tuple[int, str] | None:
    """Log the decision log's head if it moved: kept apart from the decision log (with the
    sidecar's own logs), it anchors the chain for ``toolgate log verify --head``."""
    head = sidecar.decision_log_head()
    if head is not None and head != last and head[0] > 0:
        log.info("decision log head %d:%s", *head)
    return head


def warn_of_drops(families: list[MetricFamily], seen: int) -> int:
    """Log decision-log lines dropped since ``seen``; returns the count now."""
    dropped = int(value(families, "toolgate_decision_log_dropped"))
    if dropped > seen:
        log.warning(
            "decision log: %d decisions dropped (the disk cannot keep up); the log notes it",
            dropped - seen,
        )
    return dropped


def redact(url: str) -> str:
    """A store URL without its password."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url


def report_store(sidecar: Sidecar, opts: ServeOptions) -> None:
    """Say where limits are counted, and what happens while Redis is unreachable."""
    settings = opts.sidecar
    where = redact(settings.store)
    if sidecar.store_connected:
        log.info(
            "counting on %s (%s mode, prefix %r)", where, settings.store_mode, settings.store_prefix
        )
    else:
        log.warning(
            "counter store %s is unreachable; retrying. Meanwhile calls with limits are %s",
            where,
            "denied (STORE_UNAVAILABLE)"
            if settings.store_unavailable == "deny"
            else "counted in this pod's own table",
        )


def watch_eviction(opts: ServeOptions, sidecar: Sidecar) -> EvictionWatch:
    """Read ``--store``'s eviction policy before serving (ValueError: refused; see
    toolgate.sidecar.store_eviction), and keep reading it: while Redis may evict counters
    unaccepted, ``sidecar``'s limits follow the store's outage behaviour."""
    watch = EvictionWatch(
        opts.sidecar.store,
        redact(opts.sidecar.store),
        accepted=opts.store_accept_eviction,
        every=opts.store_eviction_check_interval,
        refuse_limits=sidecar.set_store_evictable,
    )
    watch.check_at_start()
    return watch


def warn_of_store(families: list[MetricFamily], seen: tuple[int, int]) -> tuple[int, int]:
    """Log counter-store failures and local fallbacks since ``seen``; returns the counts."""
    (failed,) = [f for f in families if f.name == "toolgate_store_errors"]
    errors = int(value(families, "toolgate_store_errors"))
    fallbacks = int(value(families, "toolgate_store_fallbacks"))
    if errors > seen[0]:
        kinds = ", ".join(f"{kind} {n:.0f}" for (kind,), n in failed.samples if n)
        log.warning("counter store: %d calls failed (so far: %s)", errors - seen[0], kinds)
    if fallbacks > seen[1]:
        log.warning(
            "counter store unavailable: %d decisions counted in this pod's own table",
            fallbacks - seen[1],
        )
    return errors, fallbacks


def split_host_port(address: str) -> tuple[str, int]:
    """``127.0.0.1:9464`` or ``[::1]:9464`` → (host, port); ValueError saying what is wrong."""
    return parse_host_port(address, allow_port_zero=True)


def load_policy(opts: ServeOptions) -> tuple[Policy, FileVersion | None]:
    """The policy to serve, and its file as read just before the policy was read from it
    (where the policy watcher starts from: a change made in between is seen as new)."""
    version = read_version(opts.policy) if opts.policy else None
    policy = Policy.from_file(opts.policy) if opts.policy else Policy.from_dict(DENY_EVERYTHING)
    return policy, version


class StoppedWhileStarting(BaseException):
    """SIGTERM came before the sidecar was serving. A BaseException, as KeyboardInterrupt is:
    nothing between the start and its cleanup catches it."""


class Starting:
    """SIGTERM and Ctrl-C while the sidecar starts. Before the start has made anything, the
    signal stops it at once (a policy read from a pipe nobody writes is abandoned). Once it
    has made something to remove (a temporary state directory), the signal is noted and the
    start stops at its next step (``check``), where what it made is removed: a signal that
    lands in the middle of making it cannot leave it behind. Only the first signal counts."""

    def __init__(self) -> None:
        self.making = False
        self.signal: int | None = None

    def handle(self, signum: int, _frame: object) -> None:
        if self.signal is not None:
            return
        self.signal = signum
        if not self.making:
            self.stop()

    def check(self) -> None:
        if self.signal is not None:
            self.stop()

    def stop(self) -> NoReturn:
        if self.signal == signal.SIGINT:
            raise KeyboardInterrupt
        raise StoppedWhileStarting


def _announce(
    opts: ServeOptions,
    policy: Policy,
    loaded: FileVersion | None,
    sidecar: Sidecar,
    state: StateDir,
) -> tuple[EvictionWatch | None, ReloadCounts, PolicyWatcher | None]:
    """The steps between an assembled sidecar and its signal handlers: logging set up, what
    the operator should know said, the store's eviction watch and the policy watcher made."""
    engine = sidecar.engine
    logs.configure(opts.log_format, opts.log_level, lambda: engine.revision)
    settings = opts.sidecar
    eviction = None
    if settings.store != "local":
        eviction = watch_eviction(opts, sidecar)
        report_store(sidecar, opts)
    if opts.policy is None:
        log.warning("no --policy given: serving the built-in deny-everything policy")
    else:
        warn_self_asserted(opts.policy, policy, settings.verified)
    if settings.decision_log is not None:
        log.info(
            "decision log: %s (%s decisions)",
            "stdout" if settings.decision_log == "-" else settings.decision_log,
            settings.decision_log_filter,
        )
        if sidecar.decision_log_break is not None:
            log.warning("decision log: %s", sidecar.decision_log_break)
        if state.temporary:
            log.warning(
                "decision log: grants are labelled with a key made for this run, as there is"
                " no --state-dir: after a restart the same grant has another label"
            )
    if policy.needs_approval and opts.approvals.admin_tokens is None:
        log.warning(
            "the policy has require_approval rules but there is no --admin-tokens: their"
            " approvals open and nobody can decide them"
        )

    reloads = ReloadCounts()
    watcher = None
    if opts.policy is not None:
        watcher = PolicyWatcher(
            opts.policy,
            engine,
            reloads,
            interval=opts.reload_interval,
            loaded=loaded,
            settle=opts.reload_settle,
            verified=settings.verified,
        )
    return eviction, reloads, watcher


def serve(opts: ServeOptions) -> int:
    # From the first line: a SIGTERM sent while starting (a pod deleted as it starts) must not
    # meet the default action, which kills the process before it removes what it made; a
    # SIGHUP then has nothing to reload yet (the policy is being read). What was there before
    # is put back when serve returns.
    starting = Starting()
    handlers = {signal.SIGTERM: starting.handle, signal.SIGINT: starting.handle}
    handlers[signal.SIGHUP] = lambda *_: None
    before = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        return _serve(opts, starting)
    except StoppedWhileStarting:
        log.info("stopped while starting (SIGTERM)")
        return exits.OK
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def _serve(opts: ServeOptions, starting: Starting) -> int:
    # The sidecar's settings were checked when made; the control plane's addresses first (the
    # command line checked them already; ServeOptions may come from elsewhere): a bad one
    # must stop the sidecar before anything starts.
    if opts.metrics_listen:
        split_host_port(opts.metrics_listen)
    check_listen(opts.approvals.admin_listen)
    if opts.reload_interval <= 0 or opts.drain < 0 or opts.grace < 0:
        raise ValueError("--reload-interval must be positive; --drain and --grace not negative")
    if not opts.reload_settle >= 0:  # also refuses NaN, which would never settle
        raise ValueError("--reload-settle must not be negative")
    if not opts.store_eviction_check_interval > 0:  # also refuses NaN
        raise ValueError("--store-eviction-check-interval must be positive")
    policy, loaded = load_policy(opts)
    # From here a signal is noted and the start stops at its next step (Starting).
    starting.making = True
    try:
        state = StateDir(opts.approvals.state_dir)
    except OSError as err:
        where = opts.approvals.state_dir
        log.error("--state-dir %s: cannot make it a directory: %s", where, _reason(err))
        return exits.UNUSABLE
    try:
        starting.check()
        decision_log = opts.sidecar.decision_log
        if decision_log not in (None, "-"):
            # Made if missing, as the state directory is.
            parent = Path(decision_log).parent
            try:
                check_regular(decision_log)
            except OSError as err:
                log.error("--decision-log %s: %s", decision_log, _reason(err))
                state.remove_if_temporary()
                return exits.UNUSABLE
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                log.error(
                    "--decision-log %s: cannot make its directory %s: %s",
                    decision_log,
                    parent,
                    _reason(err),
                )
                state.remove_if_temporary()
                return exits.UNUSABLE
        labels = GrantLabels(load_key(state.key))
        sidecar = Sidecar(policy, opts.sidecar, key=labels.key, approvals_table=state.table)
    except OSError as err:
        # Files in the state directory (its key, the approvals table) or the decision log.
        where = f"{err.filename}: " if err.filename else ""
        log.error("%s%s", where, _reason(err))
        state.remove_if_temporary()
        return exits.UNUSABLE
    except BaseException:
        state.remove_if_temporary()
        raise
    engine = sidecar.engine
    stop = threading.Event()
    try:
        starting.check()
        eviction, reloads, watcher = _announce(opts, policy, loaded, sidecar, state)
        starting.check()
        # From here a SIGTERM is a graceful stop, set before the server exists: one sent as
        # soon as the port answers drains like any other.
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        if watcher is not None:
            signal.signal(signal.SIGHUP, lambda *_: watcher.trigger())
        else:
            # SIGHUP's default action would kill the sidecar; with no file there is nothing to
            # reload, so say so and keep serving.
            signal.signal(
                signal.SIGHUP, lambda *_: log.warning("SIGHUP ignored: no --policy file to reload")
            )
        # A signal that came as the handlers changed.
        starting.check()
    except BaseException:
        state.remove_if_temporary()
        raise

    # The approvals are put in order (reconciled with their durable store) before the first
    # call is decided.
    taken = sidecar.take_approvals()
    assert taken is not None
    try:
        approvals = ApprovalRuntime(
            taken,
            state,
            labels,
            opts.approvals,
            preview_bytes=opts.sidecar.approval_preview_bytes,
        )
    except (OSError, ValueError, sqlite3.Error) as err:
        # The approvals store in --state-dir (SQLite) or its webhook's secret.
        log.error("approvals: %s", err)
        state.remove_if_temporary()
        return exits.UNUSABLE
    try:
        address = sidecar.serve()
    except OSError as err:
        log.error("%s", err)
        approvals.stop(0)
        return exits.UNUSABLE

    if opts.metrics_listen:
        host, metrics_port = split_host_port(opts.metrics_listen)
        try:
            registry, metrics_port = serve_metrics(sidecar, reloads, host, metrics_port)
        except OSError as err:
            log.error("cannot serve metrics on %s: %s", opts.metrics_listen, err)
            sidecar.stop(0)
            approvals.stop(0)
            return exits.UNUSABLE
        registry.register(approvals.collector())
        registry.register(EvictionCollector(eviction))
    approvals.start()
    if eviction is not None:
        eviction.start()
    if watcher is not None:
        watcher.start()
    # Calls are answered from the moment the port is bound; health says SERVING once the
    # metrics and the policy watcher are up too (unless a SIGTERM came meanwhile).
    if not stop.is_set():
        sidecar.set_serving(True)

    log.info(
        "serving %s on %s (%d threads), policy %s",
        ", ".join(SERVICES),
        address,
        opts.sidecar.serving_threads(),
        opts.policy or "built-in deny-everything",
    )
    # Every listener's real address (port 0 is given one by the system).
    if opts.metrics_listen:
        log.info("metrics on http://%s/metrics", join_host_port(host, metrics_port))
    else:
        log.info("metrics off")
    if approvals.admin_address is not None:
        log.info("admin (toolgate.v1.Approvals) on %s", approvals.admin_address)
    else:
        log.info("no admin listener (no --admin-tokens)")
    if (authzen := sidecar.authzen_address()) is not None:
        log.info("AuthZEN (/access/v1/evaluation, /access/v1/evaluations) on %s", authzen)

    dropped, head, ticks, store_seen = 0, None, 0, (0, 0)
    on_redis = opts.sidecar.store != "local"
    logging_decisions = opts.sidecar.decision_log is not None
    while not stop.wait(1.0):
        ticks += 1
        watched = on_redis or logging_decisions
        families = engine.metrics() if watched else []  # read once for every warning
        if on_redis:
            store_seen = warn_of_store(families, store_seen)
        if logging_decisions:
            dropped = warn_of_drops(families, dropped)
            if ticks % HEAD_EVERY == 0:
                head = log_head(sidecar, head)
    # NOT_SERVING first, while still answering, so health checkers see it and proxies stop
    # sending; then refuse new calls and let in-flight ones finish.
    log.info("stopping: NOT_SERVING for %.1fs, then finishing in-flight calls", opts.drain)
    sidecar.set_serving(False)
    stop.clear()
    stop.wait(opts.drain)
    sidecar.stop(opts.grace)
    if logging_decisions:
        if not sidecar.sync_decision_log(opts.grace):
            log.error("the decision log could not be written out in %.1fs", opts.grace)
        log_head(sidecar, head)
    approvals.stop(opts.grace)
    if eviction is not None:
        eviction.stop()
    if watcher is not None:
        watcher.stop()
    log.info("stopped")
    return 0
