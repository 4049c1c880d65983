"""Why 2 workers serve more than twice one process's saturated throughput on 2 vCPUs: per
request, the sidecar's CPU time and context switches, the inter-processor interrupts
(rescheduling and function-call IPIs, /proc/interrupts, whole machine), and the cores left
idle, during h2load's saturated load (``-c 16 -m 8``) on ``toolgate serve`` with 1 and with
2 workers, alternating, three rounds. Prints a markdown table (RESULTS.md quotes it).

    .venv/bin/python bench/why_workers.py [--rounds 3] [--seconds 6]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import time
from pathlib import Path

import grpc_bench as gb


def interrupts() -> dict[str, int]:
    """Rescheduling (RES) and function-call (CAL) IPIs so far, summed over the CPUs."""
    out = {}
    for line in Path("/proc/interrupts").read_text().splitlines():
        m = re.match(r"\s*(RES|CAL):\s+([\d\s]+?)\s+[A-Za-z]", line)
        if m:
            out[m.group(1)] = sum(int(x) for x in m.group(2).split())
    return out


def cpu_times() -> list[int]:
    """user nice system idle iowait irq softirq steal ... (ticks, all CPUs)."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=6.0, help="measured window per run")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="why-workers-"))
    body = work / "decide.body"
    body.write_bytes(gb.grpc_frame(gb.decide_request()))
    rows = []
    for w in [1, 2] * args.rounds:
        port = gb.free_port()
        cmd = [gb.toolgate_exe(), "serve", "--policy", str(gb.POLICY), "--listen"]
        cmd += [f"127.0.0.1:{port}", "--metrics-listen", "off", "--drain", "0"]
        cmd += ["--workers", str(w)] if w > 1 else []
        server = gb.start_server(f"w{w}", cmd, port, work, gb.decide_request(True), workers=w)
        try:
            url = f"http://127.0.0.1:{port}{gb.METHOD}"
            subprocess.run(gb.h2load_cmd(url, body, 16, 8, n=3000), capture_output=True, check=True)
            gb.wait_quiet(20, 0.3)
            duration = int(args.seconds + 4)
            load = subprocess.Popen(
                gb.h2load_cmd(url, body, 16, 8, duration=duration),
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(1.5)
            i0, c0, t0 = interrupts(), cpu_times(), time.monotonic()
            s0, cs0 = server.cpu_seconds(), server.context_switches()
            time.sleep(args.seconds)
            i1, c1, t1 = interrupts(), cpu_times(), time.monotonic()
            s1, cs1 = server.cpu_seconds(), server.context_switches()
            out, _ = load.communicate(timeout=duration + 60)
        finally:
            server.stop()
        rps = gb.parse_summary(out)["rps"]
        wall = t1 - t0
        n = rps * wall
        rows.append(
            (
                w,
                rps,
                (s1 - s0) / n * 1e6,
                (cs1 - cs0) / n,
                (i1["RES"] - i0["RES"]) / n,
                (i1["CAL"] - i0["CAL"]) / n,
                (c1[3] - c0[3]) / gb.CLK_TCK / wall,
                (c1[7] - c0[7]) / gb.CLK_TCK / wall,
                (s1 - s0) / wall,
            )
        )
    print(
        "| workers | req/s | sidecar CPU / req | context switches / req | rescheduling IPIs / req "
        "| function-call IPIs / req | idle cores | steal | sidecar cores |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for w, rps, cpu, cs, res, cal, idle, steal, cores in rows:
        print(
            f"| {w} | {rps:,.0f} | {cpu:.0f} µs | {cs:.1f} | {res:.2f} | {cal:.2f} | {idle:.2f} "
            f"| {steal:.2f} | {cores:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
