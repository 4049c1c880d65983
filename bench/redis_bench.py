"""Counters on Redis: toolgate's local table, exact and cached modes, and Limitador's
``redis`` and ``redis_cached`` storages, on one redis-server, driven alike by h2load over
Envoy's rate limit API (``ShouldRateLimit``). Run on purpose, never by the tests.

Each server answers the same request (one descriptor: tool and grant; a limit of 1e9 a day,
so every call is counted and none refused):

- one request in flight (``-c 1 -m 1``): p50 and p99, against one Redis round trip (the p50
  of ``redis-benchmark -c 1`` PING on the same Redis);
- saturated (``-c 16 -m 8`` for ``--sat-seconds``): requests per second.

The servers take turns, ``--runs`` times, the order rotating; the medians are printed as a
Markdown table with the aims: exact mode adds at most 1.5 round trips to p50;
cached mode at least 0.8 of the local table's saturated throughput; each ahead of
Limitador's equivalent storage. Limitador comes from ``--limitador`` (its binary); without
one, only toolgate's three stores run. Writes the redis block of bench/RESULTS.md (not with
``--print``); docs/redis.md discusses the figures.

    .venv/bin/python bench/redis_bench.py --limitador PATH/limitador-server
    .venv/bin/python bench/redis_bench.py --runs 1 --sat-seconds 3 --print   # a quick look
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import harness as h
from harness import redis

BIG = 1_000_000_000
FLUSH_MS = 5
X = h.X
SECTION = "## Counters on Redis, against Limitador on the same Redis"


def command(name: str, port: int, redis_url: str, workdir: Path, limitador: str | None):
    policy = h.rls_policy(workdir, BIG)
    store = ["--store", redis_url, "--store-timeout-ms", "100"]
    if name == "toolgate local":
        return h.serve_cmd(port, policy=policy)
    if name == "toolgate exact":
        return h.serve_cmd(port, *store, policy=policy)
    if name == "toolgate cached":
        cached = ["--store-mode", "cached", "--store-flush-ms", str(FLUSH_MS)]
        return h.serve_cmd(port, *store, *cached, policy=policy)
    assert limitador is not None
    limits = h.limitador_limits(workdir, BIG, deny_others=False)
    cmd = [limitador, "-b", "127.0.0.1", "-p", str(port), "-B", "127.0.0.1"]
    cmd += ["-P", str(h.free_port()), str(limits)]
    if name == "limitador redis":
        return [*cmd, "redis", redis_url]
    return [*cmd, "redis_cached", "--flush-period", str(FLUSH_MS), redis_url]


def start(name: str, cmd: list[str], port: int, workdir: Path) -> h.Server:
    """Up once it answers the bench request OK (Limitador's first answers may not be)."""

    def ready() -> None:
        if h.rls_code(h.call(port, h.rls_request("probe"), h.RLS, 1.0)) != "OK":
            raise ValueError("not OK yet")

    return h.start(name, cmd, workdir, ready, port)


def load(server: h.Server, body: Path, run: h.Run, args) -> h.Run:
    url = f"http://127.0.0.1:{server.port}{h.RLS}"
    h.h2load(run, url, body, body.parent, {"server": server}, args)
    if set(run.statuses) != {"200"} or run.failed:
        raise RuntimeError(f"answers not all OK: {run.statuses}, {run.failed} failed")
    return run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--limitador", help="limitador-server binary (omit: toolgate only)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--sat-seconds", type=float, default=5.0)
    p.add_argument("-n1", type=int, default=5000, help="requests of the one-in-flight run")
    p.add_argument("--quiet-wait", type=float, default=10.0)
    p.add_argument("--quiet", type=float, default=0.3)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--print", dest="write", action="store_false", help="don't write RESULTS.md")
    args = p.parse_args()
    if shutil.which("h2load") is None or shutil.which("redis-server") is None:
        raise SystemExit("needs h2load (nghttp2-client) and redis-server")
    started = time.monotonic()
    names = ["toolgate local", "toolgate exact", "toolgate cached"]
    if args.limitador:
        names += ["limitador redis", "limitador redis_cached"]
    runs: list[h.Run] = []
    trips: list[float] = []
    with tempfile.TemporaryDirectory(prefix="toolgate-redis-bench-") as tmp:
        workdir = Path(tmp)
        store = redis.start(workdir)
        try:
            url = redis.url(store)
            body = workdir / "request.bin"
            body.write_bytes(h.grpc_frame(h.rls_request(h.GRANT)))
            for i in range(1, args.runs + 1):
                trips.append(redis.round_trip_us(store.port))
                for name in h.rotated(names, i):
                    port = h.free_port()
                    server = start(
                        name, command(name, port, url, workdir, args.limitador), port, workdir
                    )
                    try:
                        load(server, body, h.Run(name, "warm-up", i, n=500), args)
                        one = load(server, body, h.Run(name, "single", i, n=args.n1), args)
                        sat = h.Run(name, "saturated", i, 16, 8, duration=args.sat_seconds)
                        load(server, body, sat, args)
                    finally:
                        server.stop()
                    runs += [one, sat]
                    print(
                        f"run {i} {name}: p50 {one.p50:.0f} µs, p99 {one.p99:.0f} µs, "
                        f"{sat.rps:.0f}/s",
                        file=sys.stderr,
                    )
        finally:
            store.stop()
    med = {
        n: (h.med(runs, "p50", name=n, load="single"), h.med(runs, "p99", name=n, load="single"),
            h.med(runs, "rps", name=n, load="saturated"))
        for n in names
    }  # fmt: skip
    trip = statistics.median(trips)
    lines = [
        h.written_by("redis_bench.py") + f"; one redis-server on the same machine, a round "
        f"trip (one client's PING, p50) {trip:.0f} µs; one in flight `-c 1 -m 1` {X} "
        f"{args.n1:,}, saturated `-c 16 -m 8` for {args.sat_seconds:g} s; {args.runs} runs, "
        f"the servers taking turns; medians. Limit 1e9 a day per grant (every call counted); "
        f"cached: `--store-flush-ms {FLUSH_MS}`, Limitador `--flush-period {FLUSH_MS}`.",
        "",
        "| server | p50, 1 in flight | p99, 1 in flight | saturated req/s |",
        "|---|---|---|---|",
        *(f"| {n} | {a:.0f} µs | {b:.0f} µs | {c:,.0f} |" for n, (a, b, c) in med.items()),
        "",
    ]
    local, exact, cached = med["toolgate local"], med["toolgate exact"], med["toolgate cached"]
    added = exact[0] - local[0]
    lines += [
        f"- exact mode adds {added:.0f} µs to p50: {added / trip:.2f} round trips (aim ≤ 1.5: "
        f"{h.verdict(added / trip, 1.5, False)})",
        f"- cached mode: {cached[2] / local[2]:.2f}{X} the local table's saturated throughput "
        f"(aim ≥ 0.8: {h.verdict(cached[2] / local[2], 0.8, True)})",
    ]
    if args.limitador:
        lr, lc = med["limitador redis"], med["limitador redis_cached"]
        lines += [
            f"- exact against Limitador `redis`: p50 {exact[0] / lr[0]:.2f}{X}, throughput "
            f"{exact[2] / lr[2]:.2f}{X}",
            f"- cached against Limitador `redis_cached`: p50 {cached[0] / lc[0]:.2f}{X}, "
            f"throughput {cached[2] / lc[2]:.2f}{X}",
        ]
    lines += ["", h.busy_line(runs), f"Took {time.monotonic() - started:.0f} s."]
    h.publish("redis", "\n".join(lines), "redis_bench.py", SECTION, args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
