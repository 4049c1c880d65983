"""What the decision log costs: saturated gRPC ``Decide`` without and with
``--decision-log FILE`` (every decision written), runs interleaved. RESULTS.md's section
"Approvals and the decision log" holds the figures.

One command, run on purpose (never by the tests). For each of ``--runs`` rounds it runs
h2load for ``--duration`` seconds against the sidecar without a log, then against one
writing every decision, each after the machine is quiet; it prints throughput, server CPU
per call, p50/p99, and, for the logging sidecar, the lines written and dropped (from
``/metrics``), and checks that the log's chain verifies and holds every logged decision.
Aim: logging every decision costs at most 10% of saturated throughput, with no line dropped
at the rate this machine sustains.

    .venv/bin/python bench/decision_log_bench.py                 # 3 rounds of 10 s
    .venv/bin/python bench/decision_log_bench.py --runs 1 --duration 3   # a quick look
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

import harness as h


def metric(port: int, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", h.scrape(port), re.M)
    if not m:
        raise RuntimeError(f"no {name} in /metrics")
    return float(m.group(1))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per h2load run")
    p.add_argument("-c", type=int, default=16, help="h2load connections")
    p.add_argument("-m", type=int, default=8, help="h2load streams per connection")
    p.add_argument("--quiet-wait", type=float, default=20.0)
    p.add_argument("--quiet", type=float, default=0.3)
    args = p.parse_args()
    args.timeout = args.duration + 60

    from toolgate.sidecar.decision_log import log_files, verify

    workdir = Path(tempfile.mkdtemp(prefix="toolgate-logbench-"))
    body = workdir / "decide.bin"
    body.write_bytes(h.grpc_frame(h.decide_request()))
    log_path = workdir / "decisions.jsonl"
    servers: dict[str, h.Server] = {}
    runs: list[h.Run] = []
    try:
        for name, extra in (("off", []), ("on", ["--decision-log", str(log_path)])):
            port, mport = h.free_port(), h.free_port()
            cmd = h.serve_cmd(port, "--log-level", "warning", *extra, metrics=mport)
            servers[name] = h.start_grpc(f"log-{name}", cmd, port, workdir, metrics_port=mport)
        for i in range(1, args.runs + 1):
            for name, server in servers.items():
                run = h.Run(name, "saturated", i, args.c, args.m, duration=args.duration)
                url = f"http://127.0.0.1:{server.port}{h.DECIDE}"
                runs.append(h.h2load(run, url, body, workdir, {"server": server}, args))
                print(
                    f"round {i} log {name}: {run.rps:,.0f} calls/s,"
                    f" {run.server_cpu_us:.1f} µs CPU/call, p50 {run.p50:.0f} µs,"
                    f" p99 {run.p99:.0f} µs, other {run.other_cores:.2f} cores",
                    flush=True,
                )
        mport = servers["on"].metrics_port
        lines = metric(mport, "toolgate_decision_log_lines_total")
        dropped = metric(mport, "toolgate_decision_log_dropped_total")
    finally:
        for server in servers.values():
            server.stop()
    result = verify(log_files(log_path))
    rps = {k: h.med(runs, "rps", name=k) for k in servers}
    cpu = {k: h.med(runs, "server_cpu_us", name=k) for k in servers}
    print("\n| sidecar | calls/s (median) | server CPU per call | p50 | p99 |")
    print("|---|---:|---:|---:|---:|")
    for k in ("off", "on"):
        label = "no decision log" if k == "off" else "`--decision-log FILE` (every decision)"
        p50, p99 = h.med(runs, "p50", name=k), h.med(runs, "p99", name=k)
        print(f"| {label} | {rps[k]:,.0f} | {cpu[k]:.1f} µs | {p50:.0f} µs | {p99:.0f} µs |")
    print(
        f"\nthroughput with the log: {rps['on'] / rps['off']:.3f}x without it (aim >= 0.90); "
        f"CPU per call {cpu['on'] / cpu['off']:.3f}x; lines written {lines:,.0f}, "
        f"dropped {dropped:,.0f} (aim 0); chain: "
        + ("whole" if result.problem is None else f"BROKEN {result.problem}")
        + f", {result.decisions:,} decisions in {len(log_files(log_path))} file(s)"
    )
    ok = result.problem is None and result.decisions == lines
    shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
