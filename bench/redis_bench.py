"""Counters on Redis: toolgate's local table, exact and cached modes, and Limitador's
``redis`` and ``redis_cached`` storages, on one redis-server, driven alike by h2load over
Envoy's rate limit API (``ShouldRateLimit``). Run on purpose, never by the tests.

Each server answers the same request (one descriptor: tool and grant; a limit of 1e9 a day,
so every call is counted and none refused):

- one request in flight (``-c 1 -m 1``): p50 and p99, against one Redis round trip (the p50
  of ``redis-benchmark -c 1`` PING on the same Redis);
- saturated (``-c 16 -m 8`` for ``--sat-seconds``): requests per second.

The servers take turns, ``--runs`` times, the order rotating; the medians are printed as a
Markdown table with the issue's targets: exact mode adds at most 1.5 round trips to p50;
cached mode at least 0.8 of the local table's saturated throughput; each ahead of
Limitador's equivalent storage. Limitador comes from ``--limitador`` (its binary); without
one, only toolgate's three stores run.

    .venv/bin/python bench/redis_bench.py --limitador PATH/limitador-server
    .venv/bin/python bench/redis_bench.py --runs 1 --sat-seconds 3      # a quick look
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import grpc_bench as gb
from peers_bench import rls_code, rls_request

RLS = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
DOMAIN = "toolgate"
TOOL = "run_command"
BIG = 1_000_000_000
FLUSH_MS = 5
X = gb.X


def write_configs(workdir: Path) -> tuple[Path, Path]:
    policy = workdir / "policy.json"
    limit = {"counter": "run_command_rate", "window": "day", "max": BIG, "scope": "grant"}
    policy.write_text(
        json.dumps({"version": "1", "default": "deny", "tools": {TOOL: {"limits": [limit]}}})
    )
    limits = workdir / "limits.yaml"
    limits.write_text(
        f"""---
- namespace: {DOMAIN}
  name: run_command_rate
  max_value: {BIG}
  seconds: 86400
  conditions:
    - "descriptors[0]['tool'] == '{TOOL}'"
  variables:
    - "descriptors[0]['grant']"
"""
    )
    return policy, limits


def commands(name: str, port: int, redis_url: str, workdir: Path, limitador: str | None):
    policy, limits = write_configs(workdir)
    toolgate = [gb.toolgate_exe(), "serve", "--transport", "native", "--policy", str(policy)]
    toolgate += ["--metrics-listen", "off", "--listen", f"127.0.0.1:{port}", "--drain", "0"]
    store = ["--store", redis_url, "--store-timeout-ms", "100"]
    if name == "toolgate local":
        return toolgate
    if name == "toolgate exact":
        return [*toolgate, *store]
    if name == "toolgate cached":
        return [*toolgate, *store, "--store-mode", "cached", "--store-flush-ms", str(FLUSH_MS)]
    assert limitador is not None
    cmd = [limitador, "-b", "127.0.0.1", "-p", str(port), "-B", "127.0.0.1"]
    cmd += ["-P", str(gb.free_port()), str(limits)]
    if name == "limitador redis":
        return [*cmd, "redis", redis_url]
    return [*cmd, "redis_cached", "--flush-period", str(FLUSH_MS), redis_url]


def start(name: str, cmd: list[str], port: int, workdir: Path) -> gb.Server:
    log = workdir / f"{name.replace(' ', '-')}.log"
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    server = gb.Server(name, port, proc, log)
    deadline = time.monotonic() + 30
    probe = rls_request("probe", TOOL)
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited ({proc.returncode}):\n{log.read_text()}")
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                answer = channel.unary_unary(RLS)(probe, timeout=1.0)
            if rls_code(answer) == "OK":
                return server
        except grpc.RpcError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"{name} did not answer OK on :{port}:\n{log.read_text()}")
        time.sleep(0.2)


def h2load(port: int, body: Path, c: int, m: int, n: int | None, seconds: float | None, args):
    log = body.parent / "h2load.log"
    cmd = gb.h2load_cmd(f"http://127.0.0.1:{port}{RLS}", body, c, m, n=n, duration=seconds)
    cmd += ["--log-file", str(log)]
    gb.wait_quiet(args.quiet_wait, 0.3)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if out.returncode != 0:
        raise RuntimeError(f"h2load failed: {out.stdout}\n{out.stderr}")
    summary = gb.parse_summary(out.stdout)
    durations, statuses = gb.read_log(log)
    log.unlink()
    if set(statuses) != {"200"} or summary.get("failed"):
        raise RuntimeError(f"answers not all OK: {dict(statuses)}, {summary}")
    return summary["rps"], gb.percentile(durations, 0.5), gb.percentile(durations, 0.99)


def redis_round_trip_us(port: int) -> float:
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--limitador", help="limitador-server binary (omit: toolgate only)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--sat-seconds", type=float, default=5.0)
    p.add_argument("-n1", type=int, default=5000, help="requests of the one-in-flight run")
    p.add_argument("--quiet-wait", type=float, default=10.0)
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args()
    if shutil.which("h2load") is None or shutil.which("redis-server") is None:
        raise SystemExit("needs h2load (nghttp2-client) and redis-server")
    names = ["toolgate local", "toolgate exact", "toolgate cached"]
    if args.limitador:
        names += ["limitador redis", "limitador redis_cached"]
    results: dict[str, list[tuple[float, float, float, float]]] = {n: [] for n in names}
    trips: list[float] = []
    with tempfile.TemporaryDirectory(prefix="toolgate-redis-bench-") as tmp:
        workdir = Path(tmp)
        redis_port = gb.free_port()
        redis = subprocess.Popen(
            [
                *("redis-server", "--port", str(redis_port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", tmp),
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.5)
            url = f"redis://127.0.0.1:{redis_port}/0"
            body = workdir / "request.bin"
            body.write_bytes(gb.grpc_frame(rls_request("bench-grant", TOOL)))
            for run in range(args.runs):
                trips.append(redis_round_trip_us(redis_port))
                order = names[run % len(names) :] + names[: run % len(names)]
                for name in order:
                    port = gb.free_port()
                    cmd = commands(name, port, url, workdir, args.limitador)
                    server = start(name, cmd, port, workdir)
                    try:
                        h2load(port, body, 1, 1, 500, None, args)  # warm-up
                        _, p50, p99 = h2load(port, body, 1, 1, args.n1, None, args)
                        rps, _, _ = h2load(port, body, 16, 8, None, args.sat_seconds, args)
                    finally:
                        server.stop()
                    results[name].append((p50, p99, rps, 0.0))
                    print(f"run {run + 1} {name}: p50 {p50:.0f} µs, p99 {p99:.0f} µs, {rps:.0f}/s")
        finally:
            redis.kill()
            redis.wait()
    med = {n: [statistics.median(r[i] for r in rs) for i in range(3)] for n, rs in results.items()}
    trip = statistics.median(trips)
    print(f"\nRedis round trip (PING, one client, p50): {trip:.0f} µs\n")
    print("| server | p50, 1 in flight | p99, 1 in flight | saturated req/s |")
    print("|---|---|---|---|")
    for n, (p50, p99, rps) in med.items():
        print(f"| {n} | {p50:.0f} µs | {p99:.0f} µs | {rps:,.0f} |")
    local, exact, cached = med["toolgate local"], med["toolgate exact"], med["toolgate cached"]
    added = exact[0] - local[0]
    print(
        f"\n- exact mode adds {added:.0f} µs to p50: {added / trip:.2f} round trips (target ≤ 1.5)"
    )
    print(
        f"- cached mode: {cached[2] / local[2]:.2f} of the local table's saturated throughput "
        "(target ≥ 0.8)"
    )
    if args.limitador:
        lr, lc = med["limitador redis"], med["limitador redis_cached"]
        print(
            f"- exact vs Limitador redis: p50 {exact[0] / lr[0]:.2f}{X}, throughput "
            f"{exact[2] / lr[2]:.2f}{X}"
        )
        print(
            f"- cached vs Limitador redis_cached: p50 {cached[0] / lc[0]:.2f}{X}, throughput "
            f"{cached[2] / lc[2]:.2f}{X}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
