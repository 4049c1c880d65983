"""Prometheus metrics, read from the Rust core's atomics when ``/metrics`` is scraped.

Nothing here runs per decision: the core counts decisions and latencies in atomics and
describes each family it keeps (name, help, kind, labels, samples: ``Sidecar.metrics()``);
the collector here writes them out at scrape time, beside the few facts Python keeps itself
(reloads, the build).
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar

from toolgate._core import MetricFamily, Sidecar, __revision__, __version__


class ReloadCounts:
    """Policy reloads by result, and the last one's time and result (the policy loaded at
    start counts as a successful load); touched only when a reload happens."""

    def __init__(self, loaded_at: float | None = None) -> None:
        self._lock = threading.Lock()
        self._counts = {"success": 0, "failure": 0}
        now = time.time() if loaded_at is None else loaded_at
        self._last = (now, True)
        self._last_success = now

    def add(self, result: str) -> None:
        now = time.time()
        with self._lock:
            self._counts[result] += 1
            self._last = (now, result == "success")
            if result == "success":
                self._last_success = now

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def last(self) -> tuple[float, bool, float]:
        """(when the last load or reload was tried, whether it succeeded, when the last one
        succeeded), in seconds since the epoch."""
        with self._lock:
            return (*self._last, self._last_success)


class ReloadStateCollector(Collector):
    """Reloads by result, and the last one's time and result as gauges (alert on a failed
    one, or a stale one)."""

    def __init__(self, reloads: ReloadCounts) -> None:
        self._reloads = reloads

    def collect(self) -> Iterator[Metric]:
        reloads = CounterMetricFamily(
            "toolgate_policy_reloads", "Policy reloads, by result.", labels=["result"]
        )
        for result, count in sorted(self._reloads.snapshot().items()):
            reloads.add_metric([result], count)
        yield reloads
        tried, succeeded, last_success = self._reloads.last()
        yield GaugeMetricFamily(
            "toolgate_policy_last_reload_timestamp_seconds",
            "When the policy was last loaded or a reload last tried (Unix time).",
            value=tried,
        )
        yield GaugeMetricFamily(
            "toolgate_policy_last_reload_successful",
            "1 if that load or reload succeeded, 0 if it failed (the old policy is kept).",
            value=1 if succeeded else 0,
        )
        yield GaugeMetricFamily(
            "toolgate_policy_last_reload_success_timestamp_seconds",
            "When a policy was last loaded successfully (Unix time).",
            value=last_success,
        )


class BuildInfoCollector(Collector):
    """``toolgate_build_info``: what is running, as labels of a constant 1."""

    def __init__(self) -> None:
        self._labels = {
            "version": __version__,
            # The git commit the extension was built from; "unknown" for a build without one.
            "revision": __revision__ or "unknown",
            "python": platform.python_version(),
        }

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "toolgate_build_info",
            "toolgate's version, the source revision it was built from, and the Python "
            "running it; always 1.",
            labels=list(self._labels),
        )
        info.add_metric(list(self._labels.values()), 1)
        yield info


class SidecarCollector(Collector):
    """Every family the sidecar's Rust side describes, written out as it says."""

    def __init__(self, sidecar: Sidecar) -> None:
        self._sidecar = sidecar

    def collect(self) -> Iterator[Metric]:
        for family in self._sidecar.metrics():
            yield written(family)


def _exemplar(e: tuple[str, str, float, float]) -> Exemplar:
    trace_id, span_id, value, timestamp = e
    return Exemplar({"trace_id": trace_id, "span_id": span_id}, value, timestamp)


def written(family: MetricFamily) -> Metric:
    """``family`` as prometheus_client's metric family of its kind."""
    if family.buckets is not None:
        bounds, count, total = family.buckets
        cumulative = [(_bound(le), n) for le, n in bounds]
        cumulative.append(("+Inf", count))
        # A bucket's exemplar (a sampled decision's trace) is written where OpenMetrics is
        # asked for; the Prometheus text format has no place for it.
        exemplars = family.exemplars or [None] * len(cumulative)
        buckets = [
            (le, n) if e is None else (le, n, _exemplar(e))
            for (le, n), e in zip(cumulative, exemplars, strict=True)
        ]
        return HistogramMetricFamily(family.name, family.help, buckets=buckets, sum_value=total)
    kind = CounterMetricFamily if family.kind == "counter" else GaugeMetricFamily
    out = kind(family.name, family.help, labels=family.labels)
    for values, value in family.samples:
        out.add_metric(values, value)
    return out


def value(families: list[MetricFamily], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels hold ``labels``: 0 for none."""
    (family,) = [f for f in families if f.name == name]
    at = {label: i for i, label in enumerate(family.labels)}
    held = [v for values, v in family.samples if all(values[at[k]] == w for k, w in labels.items())]
    return sum(held)


def _bound(seconds: float) -> str:
    return f"{seconds:.7f}".rstrip("0").rstrip(".")


def serve_metrics(
    sidecar: Sidecar, reloads: ReloadCounts, host: str, port: int
) -> tuple[CollectorRegistry, int]:
    """Serve ``/metrics`` over HTTP on ``host:port`` from a background thread; the registry,
    and the port bound (the one given, or the one the system chose for port 0)."""
    registry = CollectorRegistry()
    registry.register(SidecarCollector(sidecar))
    registry.register(ReloadStateCollector(reloads))
    registry.register(BuildInfoCollector())
    server, _ = start_http_server(port, addr=host, registry=registry)
    return registry, server.server_port
