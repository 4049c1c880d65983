"""Approvals in a running sidecar: which process does what.

Every serving process (the lone sidecar, or each worker) enables approvals on its engine,
over the one approvals table file in the state directory, and records its engine's news
into the store. The coordinating process (the lone sidecar, or the supervisor) also
reconciles the table with the store at start, serves the admin listener, sends the
webhooks, and exports their metrics.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from toolgate._core import Approvals, Engine
from toolgate.approvals import (
    STATES,
    ApprovalRecorder,
    ApprovalStore,
    GrantLabels,
    load_key,
    reconcile,
)
from toolgate.webhook import DeliveryCounts, Notifier

if TYPE_CHECKING:
    from toolgate.admin import AdminServer

log = logging.getLogger("toolgate.approvals")


@dataclass
class ApprovalOptions:
    #: Where approvals live (the table file, the SQLite store, the credential-hashing key);
    #: None: a private temporary directory, gone when the sidecar stops.
    state_dir: Path | None = None
    admin_listen: str = "127.0.0.1:50052"
    #: ``NAME TOKEN`` lines; without it there is no admin listener (nobody can approve).
    admin_tokens: Path | None = None
    webhook: str | None = None
    webhook_secret: Path | None = None
    webhook_format: str = "json"


class StateDir:
    """The state directory, made if missing (private to its owner)."""

    def __init__(self, path: Path | None) -> None:
        self.temporary = path is None
        self.path = Path(tempfile.mkdtemp(prefix="toolgate-state-")) if path is None else path
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)

    @property
    def table(self) -> Path:
        return self.path / "approvals.table"

    @property
    def store(self) -> Path:
        return self.path / "approvals.db"

    @property
    def key(self) -> Path:
        return self.path / "grant.key"

    def remove_if_temporary(self) -> None:
        if self.temporary:
            shutil.rmtree(self.path, ignore_errors=True)


class ApprovalCollector(Collector):
    """Approvals by state (from the store, at scrape time), webhook deliveries, and news
    the engine dropped."""

    def __init__(
        self, store: ApprovalStore, approvals: Approvals, deliveries: DeliveryCounts
    ) -> None:
        self._store = store
        self._approvals = approvals
        self._deliveries = deliveries

    def collect(self) -> Iterator[Metric]:
        now = self._approvals.now_ms()
        by_state = dict.fromkeys(STATES, 0)
        for row in self._store.list(None, now, limit=1 << 30):
            by_state[row.state(now)] += 1
        approvals = GaugeMetricFamily(
            "toolgate_approvals", "Approvals in the store, by state.", labels=["state"]
        )
        for state, n in by_state.items():
            approvals.add_metric([state], n)
        yield approvals
        deliveries = CounterMetricFamily(
            "toolgate_approval_webhook_deliveries",
            "Approval webhook attempts by result: ok, retried (failed, tried again), failed"
            " (given up).",
            labels=["result"],
        )
        for result, n in self._deliveries.snapshot().items():
            deliveries.add_metric([result], n)
        yield deliveries
        yield CounterMetricFamily(
            "toolgate_approval_events_dropped",
            "News of approvals dropped because its queue was full (this process's engine).",
            value=self._approvals.dropped,
        )


class ApprovalRuntime:
    """Approvals for one process; ``stop()`` undoes ``start``."""

    def __init__(
        self,
        engine: Engine,
        opts: ApprovalOptions,
        *,
        serving: bool,
        coordinating: bool,
    ) -> None:
        self.state = StateDir(opts.state_dir)
        self.approvals = engine.enable_approvals(self.state.table)
        self.store = ApprovalStore(self.state.store)
        self.labels = GrantLabels(load_key(self.state.key))
        self.deliveries = DeliveryCounts()
        self._recorder = ApprovalRecorder(self.approvals, self.store, self.labels)
        self._serving = serving
        self._admin: AdminServer | None = None
        self._notifier: Notifier | None = None
        self._coordinating = coordinating
        if coordinating:
            reconcile(self.approvals, self.store)
            if opts.admin_tokens is not None:
                # The admin listener is a grpcio server, loaded only when one is asked for.
                from toolgate.admin import AdminServer, ApprovalsService, load_tokens

                service = ApprovalsService(
                    self.approvals, self.store, load_tokens(opts.admin_tokens)
                )
                self._admin = AdminServer(opts.admin_listen, service)
            else:
                log.info("no --admin-tokens: approvals can be opened but not decided")
            if opts.webhook:
                secret = opts.webhook_secret.read_bytes().strip() if opts.webhook_secret else None
                self._notifier = Notifier(
                    self.store,
                    opts.webhook,
                    secret=secret,
                    fmt=opts.webhook_format,
                    admin=opts.admin_listen,
                    counts=self.deliveries,
                    now_ms=self.approvals.now_ms,
                )

    def start(self) -> None:
        if self._serving:
            self._recorder.start()
        if self._notifier is not None:
            self._notifier.start()

    def collector(self) -> ApprovalCollector:
        return ApprovalCollector(self.store, self.approvals, self.deliveries)

    def stop(self, grace: float) -> None:
        if self._admin is not None:
            self._admin.stop(grace)
        if self._notifier is not None:
            self._notifier.stop()
        if self._serving:
            self._recorder.stop()
        if self._coordinating:
            self.state.remove_if_temporary()
