"""Microseconds on the wire: the native data plane against its floor, this build against
another, and the sidecar's idle memory. Driven by h2load; run on purpose, never by the tests.

Parts (``--part``, repeatable; default floor and rss):

- ``floor``: ``toolgate serve`` against a Rust constant-answer server on the same stack
  (``rust/server/examples/floor.rs``: tonic on the sidecar's own serving threads, the same
  ``--threads``), which answers the sidecar's own answer to the bench request, so the bytes
  on the wire match. One request in flight (``-c 1 -m 1``, n requests) and saturated
  (``-c 16 -m 8``, time-bounded ``-D``), the servers taking turns with the order rotated each
  run. One in flight the two differ by a few µs while runs spread by ±30%, so that load runs
  ``--single-runs`` times (31) and its ratio comes with a 95% confidence interval for the
  median. Aims: p50 one in flight ≤ 1.1x the floor's; saturated ≥ 0.85x the floor's.
- ``before``: this build against another ``toolgate`` executable (``--before EXE``, e.g. the
  previous commit installed in a venv of its own), same options, interleaved: one in flight
  and saturated, throughput, latency and CPU per call, and idle memory of both.
- ``rss``: VmRSS of ``toolgate serve --policy examples/policy.json`` (default table), idle,
  a few seconds after it first answers (aim ≤ 60 MiB).

Each load run waits for the machine to be quiet first (``grpc_bench.wait_quiet``, up to
``--quiet-wait`` s), records how busy it was and the hypervisor's steal, and checks the
sidecar's limit counted every completed call (h2load counts gRPC errors as successes).
Server CPU per call is utime + stime of the server's processes (all threads) from /proc.

    .venv/bin/python bench/wire_bench.py                      # floor and rss, writes RESULTS.md
    .venv/bin/python bench/wire_bench.py --part floor --print # one part, print only
    .venv/bin/python bench/wire_bench.py --part before --before OTHER/.venv/bin/toolgate --print
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc_bench as gb

ROOT = gb.ROOT
FLOOR_BIN = ROOT / "target" / "release" / "examples" / "floor"
EXAMPLE_POLICY = ROOT / "examples" / "policy.json"
JSON_OUT = ROOT / "target" / "bench-wire.json"
BEGIN, END = "<!-- BEGIN wire -->", "<!-- END wire -->"
SECTION = "## Microseconds on the wire: native data plane, floor, memory"
X = gb.X
AIM_P50 = 1.1
AIM_SAT = 0.85
AIM_RSS_MIB = 60


def build_floor() -> None:
    subprocess.run(
        ["cargo", "build", "--release", "-q", "-p", "toolgate-server", "--example", "floor"],
        cwd=ROOT,
        check=True,
    )


def serve_cmd(
    port: int, *extra: str, policy: Path = gb.POLICY, exe: str | None = None
) -> list[str]:
    return [
        exe or gb.toolgate_exe(),
        "serve",
        "--policy",
        str(policy),
        "--metrics-listen",
        "off",
        "--listen",
        f"127.0.0.1:{port}",
        "--drain",
        "0",
        *extra,
    ]


def timed(server: gb.Server, body: Path, run: gb.Run, workdir: Path, args) -> gb.Run:
    r = gb.run_h2load(server, body, run, workdir, args.timeout, (args.quiet_wait, args.quiet))
    if not r.counted_ok():
        raise RuntimeError(
            f"{server.name}: the limit counted {r.consumed} calls, h2load {r.succeeded} "
            f"succeeded and {r.failed} failed"
        )
    print(
        f"{r.load:9} {r.server:14} run {r.index}: {r.rps:9,.0f} req/s  p50 "
        f"{gb.fmt_us(r.p50):>8}  p99 {gb.fmt_us(r.p99):>8}  cpu/req {r.server_cpu_us:5.1f} µs"
        f"  busy before {r.quiet_before:.2f}  other {r.other_cores:.2f}  steal "
        f"{r.steal_cores:.2f}  h2load {r.h2load_cores:.2f} cores",
        file=sys.stderr,
    )
    return r


def warm(servers: dict[str, gb.Server], body: Path, args) -> None:
    for s in servers.values():
        subprocess.run(
            gb.h2load_cmd(f"http://127.0.0.1:{s.port}{gb.METHOD}", body, 4, 4, n=args.warmup),
            capture_output=True,
            timeout=args.timeout,
            check=True,
        )


def interleave(servers, names, body, workdir, args, loads, rounds=None) -> list[gb.Run]:
    runs = []
    for load, c, m in loads:
        for i in range(1, (args.runs if rounds is None else rounds) + 1):
            for name in gb.rotated(names, i):
                run = gb.Run(load, name, i, args.n_single, c, m)
                if load == "saturated":
                    run.duration, run.n = args.sat_seconds, 0
                runs.append(timed(servers[name], body, run, workdir, args))
    return runs


def per_run_ratios(runs, load, a, b, attr) -> list[float]:
    out = []
    for i in sorted({r.index for r in runs}):
        ra = [r for r in runs if (r.load, r.server, r.index) == (load, a, i)]
        rb = [r for r in runs if (r.load, r.server, r.index) == (load, b, i)]
        if ra and rb and getattr(rb[0], attr):
            out.append(getattr(ra[0], attr) / getattr(rb[0], attr))
    return out


def med(runs, load, name, attr) -> float:
    xs = [getattr(r, attr) for r in runs if r.load == load and r.server == name]
    return statistics.median(xs) if xs else float("nan")


def busy_line(runs: list[gb.Run]) -> str:
    return (
        f"Machine during the runs: busy before each run (cores, 1 s sample) "
        f"{min(r.quiet_before for r in runs):.2f}\u2013{max(r.quiet_before for r in runs):.2f}, "
        f"other processes during them {min(r.other_cores for r in runs):.2f}\u2013"
        f"{max(r.other_cores for r in runs):.2f} cores, steal "
        f"{min(r.steal_cores for r in runs):.2f}\u2013{max(r.steal_cores for r in runs):.2f}, "
        f"h2load {min(r.h2load_cores for r in runs):.2f}\u2013"
        f"{max(r.h2load_cores for r in runs):.2f} cores."
    )


def fmt_ratio(xs: list[float]) -> str:
    if not xs:
        return "\u2013"
    return f"**{statistics.median(xs):.2f}{X}** ({', '.join(f'{x:.2f}' for x in xs)})"


def fmt_ratio_ci(xs: list[float]) -> str:
    """The median ratio with its 95% confidence interval, then the runs."""
    ci = gb.median_ci(xs)
    if not ci:
        return fmt_ratio(xs)
    return (
        f"**{statistics.median(xs):.2f}{X}**, 95% CI {ci[0]:.2f}\u2013{ci[1]:.2f}{X} "
        f"({len(xs)} runs: {', '.join(f'{x:.2f}' for x in xs)})"
    )


# --- parts ---------------------------------------------------------------------------------


def metric_rows(runs, names, ratio_of: tuple[str, str] | None = None) -> list[str]:
    """A table row per load and metric: each server's median, and with ``ratio_of`` the
    median of that pair's per-run ratios."""
    rows = []
    for load, label in (("single", "one in flight"), ("saturated", "saturated")):
        for attr in ("rps", "p50", "p99", "server_cpu_us"):
            cells = [gb.show(attr, med(runs, load, n, attr)) for n in names]
            if ratio_of:
                cells.append(fmt_ratio(per_run_ratios(runs, load, *ratio_of, attr)))
            metric = {"rps": "req/s", "server_cpu_us": "server CPU / call"}.get(attr, attr)
            rows.append(f"| {label} | {metric} | " + " | ".join(cells) + " |")
    return rows


def part_floor(args, workdir: Path, body: Path, out: dict) -> list[str]:
    t = str(args.threads)
    servers: dict[str, gb.Server] = {}
    names = ["native", "floor-rust"]
    try:
        p = gb.free_port()
        servers["native"] = gb.start_server(
            "decide-native",
            serve_cmd(p, "--threads", t),
            p,
            workdir,
            gb.decide_request(dry_run=True),
        )
        # The floor answers what the sidecar answers the bench request.
        response = workdir / "response.bin"
        response.write_bytes(gb.call_raw(p, gb.decide_request()))
        p = gb.free_port()
        floor = [str(FLOOR_BIN), "--listen", f"127.0.0.1:{p}", "--threads", t]
        floor += ["--response", str(response)]
        servers["floor-rust"] = gb.start_server(
            "floor-rust", floor, p, workdir, gb.decide_request()
        )
        if gb.call_raw(p, gb.decide_request()) != response.read_bytes():
            raise RuntimeError("the floor's answer differs from the sidecar's")
        warm(servers, body, args)
        single = [("single", 1, 1)]
        runs = interleave(servers, names, body, workdir, args, single, args.single_runs)
        runs += interleave(servers, names, body, workdir, args, [("saturated", args.c, args.m)])
    finally:
        for s in servers.values():
            s.stop()
    rows = [
        "| load | metric | native | Rust floor |",
        "|---|---|---:|---:|",
    ]
    rows += metric_rows(runs, names)
    p50 = per_run_ratios(runs, "single", "native", "floor-rust", "p50")
    sat = per_run_ratios(runs, "saturated", "native", "floor-rust", "rps")
    cpu = per_run_ratios(runs, "saturated", "native", "floor-rust", "server_cpu_us")

    def verdict(xs, aim, higher):
        return gb.verdict(statistics.median(xs), aim, higher) if xs else "\u2013"

    rows += [
        "",
        "Ratios, median of the per-run ratios (each run: the servers compared back to "
        "back), the runs in brackets; for one in flight, the median's distribution-free "
        "95% confidence interval:",
        "",
        "| ratio | value | aim | |",
        "|---|---|---|---|",
        f"| native / Rust floor, p50 one in flight | {fmt_ratio_ci(p50)} | ≤ {AIM_P50}{X} | "
        f"{verdict(p50, AIM_P50, False)} |",
        f"| native / Rust floor, saturated req/s | {fmt_ratio(sat)} | ≥ {AIM_SAT}{X} | "
        f"{verdict(sat, AIM_SAT, True)} |",
        f"| native / Rust floor, server CPU per call, saturated | {fmt_ratio(cpu)} | | |",
        "",
        busy_line(runs),
    ]
    out["floor"] = {
        "medians": {
            f"{n}/{load}": {
                a: med(runs, load, n, a) for a in ("rps", "p50", "p99", "server_cpu_us")
            }
            for n in names
            for load in ("single", "saturated")
        },
        "ratios": {"p50_native_floor": p50, "sat_native_floor": sat, "cpu_native_floor": cpu},
    }
    return rows


def part_before(args, workdir: Path, body: Path, out: dict) -> list[str]:
    if not args.before:
        raise SystemExit("--part before needs --before EXE")
    exes = {"before": args.before, "this build": gb.toolgate_exe()}
    servers: dict[str, gb.Server] = {}
    names = list(exes)
    try:
        for name, exe in exes.items():
            p = gb.free_port()
            cmd = serve_cmd(p, "--threads", str(args.threads), exe=exe)
            servers[name] = gb.start_server(
                f"decide-{name.replace(' ', '-')}", cmd, p, workdir, gb.decide_request(True)
            )
        warm(servers, body, args)
        loads = [("single", 1, 1), ("saturated", args.c, args.m)]
        runs = interleave(servers, names, body, workdir, args, loads)
    finally:
        for s in servers.values():
            s.stop()
    rows = [
        "| load | metric | before | this build | this build / before (per run) |",
        "|---|---|---:|---:|---|",
    ]
    rows += metric_rows(runs, names, ratio_of=("this build", "before"))
    rss = {name: idle_rss_mib(args, workdir, exe) for name, exe in exes.items()}
    rows.append(f"| idle | VmRSS | {rss['before']:.1f} MiB | {rss['this build']:.1f} MiB | |")
    rows += ["", f"`--before {Path(args.before).name}`: the other build.", busy_line(runs)]
    out["before"] = {
        n: {a: med(runs, load, n, a) for a in ("rps", "p50", "server_cpu_us")}
        for n in names
        for load in ("single", "saturated")
    }
    return rows


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def idle_rss_mib(args, workdir: Path, exe: str | None = None) -> float:
    """VmRSS of ``toolgate serve`` on the example policy, idle after one dry-run Decide and
    one /metrics scrape."""
    from toolgate.v1 import decider_pb2 as pb

    probe = pb.DecideRequest(
        tool="describe_instances", subject=pb.Subject(grant="g"), dry_run=True
    ).SerializeToString()
    p, mp = gb.free_port(), gb.free_port()
    cmd = serve_cmd(p, policy=EXAMPLE_POLICY, exe=exe)
    cmd[cmd.index("--metrics-listen") + 1] = f"127.0.0.1:{mp}"
    s = gb.start_server(f"rss-{p}", cmd, p, workdir, probe)
    try:
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{mp}/metrics", timeout=5).read()
        if b"toolgate_decisions_total" not in metrics:
            raise RuntimeError("/metrics does not count decisions")
        time.sleep(args.rss_settle)
        return rss_kib(s.pids()) / 1024
    finally:
        s.stop()


def part_rss(args, workdir: Path, out: dict) -> list[str]:
    mib = idle_rss_mib(args, workdir)
    out["rss"] = {"native": mib}
    aim = f"≤ {AIM_RSS_MIB} MiB: {gb.verdict(mib, AIM_RSS_MIB, False)}"
    return [
        "| VmRSS after start (idle) | aim |",
        "|---:|---|",
        f"| {mib:.1f} MiB | {aim} |",
        "",
        f"`toolgate serve --policy examples/policy.json` (default counter table, "
        f"{2**16:,} slots; /metrics on), one dry-run Decide answered and /metrics scraped "
        f"once, then {args.rss_settle:g} s idle; VmRSS of the process from /proc/PID/status.",
    ]


# --- main ----------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", action="append", choices=["floor", "before", "rss"])
    p.add_argument("--before", metavar="EXE", help="--part before: the other build's toolgate")
    p.add_argument("--threads", type=int, default=2, help="native and Rust floor threads (2)")
    p.add_argument("-n1", "--n-single", type=int, default=10_000, help="one in flight, per run")
    p.add_argument("--sat-seconds", type=float, default=5.0, help="saturated run, h2load -D")
    p.add_argument("-c", type=int, default=16, help="saturated: connections (16)")
    p.add_argument("-m", type=int, default=8, help="saturated: streams per connection (8)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument(
        "--single-runs", type=int, default=31, help="one in flight, native vs Rust floor (31)"
    )
    p.add_argument("--warmup", type=int, default=3000)
    p.add_argument("--quiet-wait", type=float, default=30.0, help="wait up to s for quiet")
    p.add_argument("--quiet", type=float, default=0.3, help="'quiet': under this many cores")
    p.add_argument("--timeout", type=float, default=120.0, help="bound on one h2load run, s")
    p.add_argument("--rss-settle", type=float, default=3.0)
    p.add_argument("--no-build", action="store_true", help="don't (re)build the Rust floor")
    p.add_argument("--print", dest="write", action="store_false", help="don't write RESULTS.md")
    args = p.parse_args()
    parts = args.part or ["floor", "rss"]
    if "floor" in parts and not args.no_build:
        build_floor()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="wire-bench-"))
    body = workdir / "decide.body"
    body.write_bytes(gb.grpc_frame(gb.decide_request()))
    out: dict = {"when": time.time()}
    lines = [
        gb.written_by("wire_bench.py") + "; "
        f"h2load `-t 1`, one in flight `-c 1 -m 1` \u00d7 {args.n_single:,} requests, saturated "
        f"`-c {args.c} -m {args.m}` for {args.sat_seconds:g} s; {args.runs} runs, medians "
        f"({args.single_runs} runs of native and Rust floor one in flight); "
        f"native and Rust floor `--threads {args.threads}`.",
    ]
    try:
        if "floor" in parts:
            lines += ["", "**Native vs its floor** (`--part floor`)", ""]
            lines += part_floor(args, workdir, body, out)
        if "before" in parts:
            lines += ["", "**This build against another** (`--part before`)", ""]
            lines += part_before(args, workdir, body, out)
        if "rss" in parts:
            lines += ["", "**Idle memory** (`--part rss`)", ""]
            lines += part_rss(args, workdir, out)
    finally:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    lines += ["", f"Took {time.monotonic() - started:.0f} s."]
    gb.publish(
        "\n".join(lines), "wire_bench.py", "microseconds-on-the-wire", (BEGIN, END, SECTION),
        args.write, JSON_OUT, out,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
