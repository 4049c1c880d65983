"""A redis-server for the benchmarks: started on a free port of 127.0.0.1 without persistence,
ready once it answers INFO, and read over a plain socket."""

from __future__ import annotations

import shutil
import socket
import statistics
import subprocess
import sys
from pathlib import Path

import harness as h


def info(port: int) -> dict[str, str]:
    """INFO of a redis-server on 127.0.0.1 (a bulk string reply)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"INFO\r\n")
        data = b""
        while b"\r\n" not in data:
            data += s.recv(65536) or _closed()
        head, _, data = data.partition(b"\r\n")
        if not head.startswith(b"$"):
            raise ValueError(f"INFO answered {head!r}")
        while len(data) < int(head[1:]):
            data += s.recv(65536) or _closed()
    text = data[: int(head[1:])].decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _closed() -> bytes:
    raise ConnectionError("redis-server closed the connection")


def start(workdir: Path) -> h.Server:
    """A redis-server writing nothing to disk, once it answers."""
    exe = shutil.which("redis-server") or sys.exit("redis-server not found: apt-get install it")
    port = h.free_port()
    cmd = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    cmd += ["--dir", str(workdir)]
    return h.start("redis", cmd, workdir, lambda: info(port), port)


def url(server: h.Server) -> str:
    return f"redis://127.0.0.1:{server.port}/0"


def round_trip_us(port: int) -> float:
    """p50 of one client's PING, µs (redis-benchmark's latency summary)."""
    out = subprocess.run(
        ["redis-benchmark", "-p", str(port), "-c", "1", "-n", "20000", "-t", "ping", "--csv"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    rows = [line.replace('"', "").split(",") for line in out.splitlines()]
    header, *data = rows
    p50 = header.index("p50_latency_ms")
    return statistics.median(float(r[p50]) for r in data) * 1000
