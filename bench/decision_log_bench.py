"""What the decision log costs: saturated gRPC ``Decide`` on the native transport, without
and with ``--decision-log FILE`` (every decision written), runs interleaved.

One command, run on purpose (never by the tests). For each of ``--runs`` rounds it runs
h2load for ``--duration`` seconds against the sidecar without a log, then against one
writing every decision, each after the machine is quiet; it reports throughput, server CPU
per call, p50/p99, and, for the logging sidecar, the lines written and dropped (from
``/metrics``), and checks that the log's chain verifies and holds every logged decision.

    .venv/bin/python bench/decision_log_bench.py                 # 3 rounds of 10 s
    .venv/bin/python bench/decision_log_bench.py --runs 1 --duration 3   # a quick look

Target (the decision log's issue): logging every decision costs at most 10% of saturated
throughput, with no line dropped at the rate this machine sustains.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from grpc_bench import (
    POLICY,
    Run,
    decide_request,
    free_port,
    grpc_frame,
    run_h2load,
    start_server,
    toolgate_exe,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise RuntimeError(f"no {name} in /metrics")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per h2load run")
    p.add_argument("-c", type=int, default=16, help="h2load connections")
    p.add_argument("-m", type=int, default=8, help="h2load streams per connection")
    p.add_argument("--quiet-wait", type=float, default=20.0)
    args = p.parse_args()

    from toolgate.sidecar.decision_log import log_files, verify

    workdir = Path(tempfile.mkdtemp(prefix="toolgate-logbench-"))
    body = workdir / "decide.bin"
    body.write_bytes(grpc_frame(decide_request()))
    log_path = workdir / "decisions.jsonl"
    servers = {}
    for name, extra in (("off", []), ("on", ["--decision-log", str(log_path)])):
        port, mport = free_port(), free_port()
        cmd = [toolgate_exe(), "serve", "--policy", str(POLICY), "--listen", f"127.0.0.1:{port}"]
        cmd += ["--metrics-listen", f"127.0.0.1:{mport}", "--log-level", "warning", *extra]
        servers[name] = start_server(
            f"log-{name}", cmd, port, workdir, decide_request(dry_run=True), metrics_port=mport
        )
    runs: dict[str, list[Run]] = {"off": [], "on": []}
    try:
        for i in range(args.runs):
            for name, server in servers.items():
                run = Run("saturated", server.name, i, 0, args.c, args.m, duration=args.duration)
                runs[name].append(
                    run_h2load(
                        server, body, run, workdir, args.duration + 60, (args.quiet_wait, 0.3)
                    )
                )
                print(
                    f"round {i + 1} log {name}: {run.rps:,.0f} calls/s,"
                    f" {run.server_cpu_us:.1f} µs CPU/call, p50 {run.p50:.0f} µs,"
                    f" p99 {run.p99:.0f} µs, other {run.other_cores:.2f} cores",
                    flush=True,
                )
        on = servers["on"]
        lines = metric(on.metrics_port, "toolgate_decision_log_lines_total")
        dropped = metric(on.metrics_port, "toolgate_decision_log_dropped_total")
    finally:
        for server in servers.values():
            server.stop()
    result = verify(log_files(log_path))
    rps = {k: statistics.median(r.rps for r in v) for k, v in runs.items()}
    cpu = {k: statistics.median(r.server_cpu_us for r in v) for k, v in runs.items()}
    ratio = rps["on"] / rps["off"]
    print()
    print("| sidecar | calls/s (median) | server CPU per call | p50 | p99 |")
    print("|---|---:|---:|---:|---:|")
    for k in ("off", "on"):
        p50 = statistics.median(r.p50 for r in runs[k])
        p99 = statistics.median(r.p99 for r in runs[k])
        label = "no decision log" if k == "off" else "`--decision-log FILE` (every decision)"
        print(f"| {label} | {rps[k]:,.0f} | {cpu[k]:.1f} µs | {p50:.0f} µs | {p99:.0f} µs |")
    print()
    print(
        f"throughput with the log: {ratio:.3f}x without it (target >= 0.90); "
        f"CPU per call {cpu['on'] / cpu['off']:.3f}x; lines written {lines:,.0f}, "
        f"dropped {dropped:,.0f} (target 0); chain: "
        + ("whole" if result.problem is None else f"BROKEN {result.problem}")
        + f", {result.decisions:,} decisions in {len(log_files(log_path))} file(s)"
    )
    ok = result.problem is None and result.decisions == lines
    shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
