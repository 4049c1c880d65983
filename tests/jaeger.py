"""A real Jaeger (built by ``scripts/install-jaeger`` into target/tools/bin/jaeger, from the Go
module proxy) on 127.0.0.1: it receives spans over OTLP/gRPC, keeps them in memory, and its
query API gives each trace back, as a user's Jaeger UI would read it."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from sidecar import dies_with_parent, free_port

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "target" / "tools" / "bin" / "jaeger"
READY_TIMEOUT = 60.0


def install() -> Path:
    """The binary, built first if it is missing or older than the pinned version."""
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install-jaeger")],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise AssertionError(f"scripts/install-jaeger failed:\n{done.stdout}{done.stderr}")
    return BINARY


def config(otlp: int, query: int, query_grpc: int, health: int) -> dict[str, Any]:
    """Jaeger's all-in-one configuration on the given ports of 127.0.0.1, with OTLP/gRPC as
    its only receiver and no telemetry of its own."""
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
            "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "warn"}},
        },
        "extensions": {
            "jaeger_query": {
                "storage": {"traces": "memory"},
                "http": {"endpoint": f"127.0.0.1:{query}"},
                "grpc": {"endpoint": f"127.0.0.1:{query_grpc}"},
            },
            "jaeger_storage": {"backends": {"memory": {"memory": {"max_traces": 10000}}}},
            "healthcheckv2": {"use_v2": True, "http": {"endpoint": f"127.0.0.1:{health}"}},
        },
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{otlp}"}}}},
        "processors": {"batch": {"timeout": "100ms"}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memory"}},
    }


class Jaeger:
    """Jaeger receiving OTLP at ``.otlp_endpoint``."""

    def __init__(self, binary: Path) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="toolgate-jaeger-")
        work = Path(self._dir.name)
        self.otlp, self.query, grpc, health = free_port(), free_port(), free_port(), free_port()
        path = work / "jaeger.yaml"
        path.write_text(yaml.safe_dump(config(self.otlp, self.query, grpc, health)))
        self.log = work / "jaeger.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                dies_with_parent([str(binary), "--config", str(path)]),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "GOMAXPROCS": "1"},
            )
        self._wait_ready(f"http://127.0.0.1:{health}/status")

    @property
    def otlp_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.otlp}"

    def _wait_ready(self, url: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"jaeger exited {self.proc.returncode}:\n{self.text()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"jaeger not ready in {READY_TIMEOUT}s:\n{self.text()}")

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        """Every span of the trace it has (none if it has not seen it), each with its
        service's name as ``service`` and its tags as a dict ``attributes``."""
        url = f"http://127.0.0.1:{self.query}/api/traces/{trace_id}"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                found = json.load(answer)
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return []
            raise
        spans = []
        for trace in found.get("data") or []:
            processes = trace["processes"]
            for span in trace["spans"]:
                span["service"] = processes[span["processID"]]["serviceName"]
                span["attributes"] = {t["key"]: t["value"] for t in span.get("tags", [])}
                spans.append(span)
        return spans

    def wait_trace(
        self,
        trace_id: str,
        complete: Callable[[list[dict[str, Any]]], bool],
        timeout: float = 60.0,
    ) -> list[dict[str, Any]]:
        """The trace's spans once ``complete`` says they are all there."""
        deadline = time.monotonic() + timeout
        spans: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            spans = self.trace(trace_id)
            if complete(spans):
                return spans
            time.sleep(0.2)
        raise AssertionError(f"trace {trace_id} incomplete after {timeout}s: {spans}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._dir.cleanup()

    def __enter__(self) -> Jaeger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def parent_of(span: dict[str, Any]) -> str | None:
    """The span id of ``span``'s parent (CHILD_OF), if it has one."""
    for ref in span.get("references", []):
        if ref["refType"] == "CHILD_OF":
            return ref["spanID"]
    return None
