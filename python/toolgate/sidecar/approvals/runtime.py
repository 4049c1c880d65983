"""Approvals in a running sidecar: the sidecar's approvals over the table file in the state
directory, their news recorded into the store, the table reconciled with the store at start,
the admin listener, the webhooks, and their metrics.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from toolgate._core import Approvals
from toolgate.sidecar.approvals.grant_labels import GrantLabels
from toolgate.sidecar.approvals.options import ApprovalOptions
from toolgate.sidecar.approvals.recorder import ApprovalRecorder, reconcile
from toolgate.sidecar.approvals.store import ApprovalStore
from toolgate.sidecar.approvals.webhook import DeliveryCounts, Notifier
from toolgate.sidecar.background import Background

if TYPE_CHECKING:
    from toolgate.sidecar.approvals.admin import AdminServer

log = logging.getLogger("toolgate.approvals")


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
        by_state = self._store.count_by_state(self._approvals.now_ms())
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


def purger(store: ApprovalStore, approvals: Approvals, retention_s: float) -> Background:
    """A thread deleting finished approvals past their retention, at every tenth of the
    retention (between 1 s and a minute)."""
    retention_ms = int(retention_s * 1000)

    def purge() -> None:
        purged = store.purge(approvals.now_ms(), retention_ms)
        if purged:
            log.info("deleted %d finished approvals past their retention", purged)

    every = min(60.0, max(1.0, retention_s / 10))
    return Background("approval-purger", purge, every, log, "cannot delete finished approvals")


class ApprovalRuntime:
    """Approvals for the sidecar; ``stop()`` undoes ``start``."""

    def __init__(
        self,
        approvals: Approvals,
        state: StateDir,
        labels: GrantLabels,
        opts: ApprovalOptions,
        *,
        preview_bytes: int,
    ) -> None:
        """``approvals``: the sidecar's, over ``state.table``, keyed with ``labels.key``;
        ``preview_bytes``: of a call's arguments kept, as the sidecar keeps them."""
        self.state = state
        self.labels = labels
        self.approvals = approvals
        if self.approvals.set_aside is not None:
            log.warning(
                "%s was written by another version of toolgate: set aside as %s; the store"
                " puts back what it held",
                self.state.table,
                self.approvals.set_aside,
            )
        self.store = ApprovalStore(self.state.store, preview_bytes=preview_bytes)
        self.deliveries = DeliveryCounts()
        self._recorder = ApprovalRecorder(self.approvals, self.store, self.labels)
        self._admin: AdminServer | None = None
        self._notifier: Notifier | None = None
        reconcile(self.approvals, self.store)
        self.store.purge(self.approvals.now_ms(), int(opts.retention_s * 1000))
        self._purger = purger(self.store, self.approvals, opts.retention_s)
        if opts.admin_tokens is not None:
            # The admin listener is a grpcio server, loaded only when one is asked for.
            from toolgate.sidecar.approvals.admin import AdminServer, ApprovalsService, load_tokens

            service = ApprovalsService(self.approvals, self.store, load_tokens(opts.admin_tokens))
            self._admin = AdminServer(opts.admin_listen, service)
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
                timeout=opts.webhook_timeout,
                workers=opts.webhook_workers,
            )

    @property
    def admin_address(self) -> str | None:
        """Where the admin listener listens (its real port), or None without one."""
        return self._admin.address if self._admin is not None else None

    def start(self) -> None:
        self._recorder.start()
        if self._notifier is not None:
            self._notifier.start()
        self._purger.start()

    def collector(self) -> ApprovalCollector:
        return ApprovalCollector(self.store, self.approvals, self.deliveries)

    def stop(self, grace: float) -> None:
        if self._admin is not None:
            self._admin.stop(grace)
        if self._notifier is not None:
            self._notifier.stop()
        self._purger.stop()
        self._recorder.stop()
        self.state.remove_if_temporary()
