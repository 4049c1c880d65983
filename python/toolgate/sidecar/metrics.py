"""Prometheus metrics, read from the Rust core's atomics when ``/metrics`` is scraped.

Nothing here runs per decision: the core counts decisions and latencies in atomics, and
this collector turns a snapshot of them into metric families at scrape time.
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

from toolgate._core import Engine, Sidecar, __revision__, __version__


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
    """The last reload's time and result, as gauges (alert on a failed one, or a stale one)."""

    def __init__(self, reloads: ReloadCounts) -> None:
        self._reloads = reloads

    def collect(self) -> Iterator[Metric]:
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


class EngineCollector(Collector):
    """Exports an engine's decision counts, latency histogram and counter-table usage."""

    def __init__(self, engine: Engine, reloads: ReloadCounts, per_tool: bool = False) -> None:
        self._engine = engine
        self._reloads = reloads
        self._per_tool = per_tool

    def collect(self) -> Iterator[Metric]:
        stats = self._engine.stats()
        decisions = CounterMetricFamily(
            "toolgate_decisions",
            "Decisions made, by the API that asked (decider, ext_authz, ratelimit, extmcp; "
            "engine: in-process), verdict and code.",
            labels=["api", "verdict", "code"],
        )
        for api, verdict, code, count in stats["outcomes"]:
            decisions.add_metric([api, verdict, code], count)
        yield decisions
        errors = CounterMetricFamily(
            "toolgate_grpc_errors",
            "Calls answered with a gRPC error, by API (decider, ext_authz, ratelimit, ext_proc, "
            "extmcp) and status (INVALID_ARGUMENT, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED...).",
            labels=["api", "status"],
        )
        for api, status, count in stats["errors"]:
            errors.add_metric([api, status], count)
        yield errors

        buckets = [(_bound(le), count) for le, count in stats["duration_buckets"]]
        buckets.append(("+Inf", stats["duration_count"]))
        yield HistogramMetricFamily(
            "toolgate_decision_duration_seconds",
            "Time to serve one decision request in the core: decode, decide, encode.",
            buckets=buckets,
            sum_value=stats["duration_sum"],
        )

        reloads = CounterMetricFamily(
            "toolgate_policy_reloads", "Policy reloads, by result.", labels=["result"]
        )
        for result, count in sorted(self._reloads.snapshot().items()):
            reloads.add_metric([result], count)
        yield reloads

        info = GaugeMetricFamily(
            "toolgate_policy_info", "The loaded policy's revision.", labels=["revision"]
        )
        info.add_metric([self._engine.revision], 1)
        yield info

        yield GaugeMetricFamily(
            "toolgate_counter_table_slots_used",
            "Counter-table slots holding a key (live, or expired and not yet reused).",
            value=stats["table_occupied"],
        )
        yield GaugeMetricFamily(
            "toolgate_counter_table_client_slots",
            "Counter-table slots holding a key a client chose (an unverified credential, a"
            " session or agent id); at most half the table.",
            value=stats["table_client_slots"],
        )
        yield GaugeMetricFamily(
            "toolgate_vouched_grants",
            "Grants an MCP server accepted (answered their initialize or a list), with"
            " --grant-vouched-by-server: trusted with the table's and approvals' room.",
            value=stats["vouched_grants"],
        )
        yield GaugeMetricFamily(
            "toolgate_counter_table_slots_capacity",
            "Counter-table slots in all.",
            value=stats["table_capacity"],
        )
        yield CounterMetricFamily(
            "toolgate_counter_table_full",
            "Calls denied because the counter table had no free slot.",
            value=stats["table_full"],
        )
        yield CounterMetricFamily(
            "toolgate_counter_table_peer_refusals",
            "New keys a client chose refused because the share for them was three quarters"
            " taken and the request's network address held its part of it.",
            value=stats["table_peer_refusals"],
        )
        yield CounterMetricFamily(
            "toolgate_confirmed_calls",
            "Calls that ran on their user's confirmation in their MCP client "
            "(require_confirmation); the questions and refusals are toolgate_decisions_total's "
            "CONFIRMATION_* codes.",
            value=stats["confirmed"],
        )
        yield CounterMetricFamily(
            "toolgate_decision_log_lines",
            "Decisions handed to the decision log (--decision-log).",
            value=stats["logged"],
        )
        yield CounterMetricFamily(
            "toolgate_decision_log_dropped",
            "Decisions the decision log dropped because the disk could not keep up.",
            value=stats["log_dropped"],
        )
        trips = [(_bound(le), count) for le, count in stats["store_rtt_buckets"]]
        trips.append(("+Inf", stats["store_rtt_count"]))
        yield HistogramMetricFamily(
            "toolgate_store_round_trip_seconds",
            "Round trips to the counter store (--store redis://...) that answered in time.",
            buckets=trips,
            sum_value=stats["store_rtt_sum"],
        )
        errors = CounterMetricFamily(
            "toolgate_store_errors",
            "Counter-store calls that failed, by kind: timeout (no answer within "
            "--store-timeout-ms), connection, reply.",
            labels=["kind"],
        )
        for kind, count in stats["store_errors"].items():
            errors.add_metric([kind], count)
        yield errors
        yield CounterMetricFamily(
            "toolgate_store_fallbacks",
            "Decisions counted in this pod's own table because the counter store was "
            "unavailable (--store-unavailable local).",
            value=stats["store_fallbacks"],
        )
        lists = CounterMetricFamily(
            "toolgate_tool_lists",
            "tools/list answers filtered on their way to the agent (Envoy's ext_proc, "
            "agentgateway's ExtMCP): filtered for their caller, or refused (unreadable; the "
            "agent got a JSON-RPC error).",
            labels=["result"],
        )
        lists.add_metric(["filtered"], stats["lists_filtered"])
        lists.add_metric(["refused"], stats["lists_refused"])
        yield lists
        yield CounterMetricFamily(
            "toolgate_tools_unlisted",
            "Tools taken out of tools/list answers: ones the caller can never call.",
            value=stats["tools_unlisted"],
        )
        drift = CounterMetricFamily(
            "toolgate_tool_drift",
            "Listed tools that depart from their pins (the policy's pins): changed since "
            "pinned, or unpinned where unpinned tools are withheld; counted once per change of "
            "what the server lists. server is the policy's server id (empty: none named); a "
            "tool name MCP does not allow, or past 1000 rows, counts as _other (and a new server "
            "then too).",
            labels=["server", "tool", "kind"],
        )
        for server, tool, kind, count in stats["drift"]:
            drift.add_metric([server, tool, kind], count)
        yield drift
        released = CounterMetricFamily(
            "toolgate_reservations_released_on_failure",
            "Reservations given back because the call failed upstream, by how it failed: "
            "http_status (>= 400), jsonrpc_error, tool_error (isError).",
            labels=["failure"],
        )
        for failure, count in stats["released_on_failure"].items():
            released.add_metric([failure], count)
        yield released
        if self._per_tool:
            per_tool = CounterMetricFamily(
                "toolgate_tool_decisions",
                "Decisions per tool and verdict (opt-in: --metrics-per-tool).",
                labels=["tool", "verdict"],
            )
            for tool, verdict, count in stats.get("per_tool", []):
                per_tool.add_metric([tool, verdict], count)
            yield per_tool


class KnownAnswersCollector(Collector):
    """The ext_proc service's known answers: the tools/list answers it keeps to find again."""

    def __init__(self, sidecar: Sidecar) -> None:
        self._sidecar = sidecar

    def collect(self) -> Iterator[Metric]:
        recalled, kept, held = self._sidecar.known_answers()
        yield CounterMetricFamily(
            "toolgate_tool_lists_recalled",
            "tools/list answers found among those read before (the same bytes but for the "
            "request's id) and so not read again; their tools still judged for the caller.",
            value=recalled,
        )
        yield GaugeMetricFamily(
            "toolgate_known_answers",
            "tools/list answers kept to be found again (at most 64).",
            value=kept,
        )
        yield GaugeMetricFamily(
            "toolgate_known_answer_bytes",
            "Memory the kept tools/list answers hold: their bytes and what was read in them "
            "(at most 8 MiB).",
            value=held,
        )


def _bound(seconds: float) -> str:
    return f"{seconds:.7f}".rstrip("0").rstrip(".")


def serve_metrics(
    engine: Engine,
    reloads: ReloadCounts,
    host: str,
    port: int,
    per_tool: bool = False,
) -> tuple[CollectorRegistry, int]:
    """Serve ``/metrics`` over HTTP on ``host:port`` from a background thread; the registry,
    and the port bound (the one given, or the one the system chose for port 0)."""
    registry = CollectorRegistry()
    registry.register(EngineCollector(engine, reloads, per_tool))
    registry.register(ReloadStateCollector(reloads))
    registry.register(BuildInfoCollector())
    server, _ = start_http_server(port, addr=host, registry=registry)
    return registry, server.server_port
