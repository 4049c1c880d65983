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
- ``traced``: this build with ``--otlp-endpoint`` (``--otlp-endpoint URL``: a collector you
  run, e.g. ``bash scripts/install-jaeger && target/tools/bin/jaeger``, OTLP on
  127.0.0.1:4317) against the same build without, interleaved: what a span per decision
  costs. Every bench request starts a trace of its own, ``--ratio`` of them sampled (1 by
  default: the most tracing can cost); past the exporter's queue, spans are dropped, never
  waited for.
- ``rss``: VmRSS of ``toolgate serve --policy examples/policy.json`` (default table), idle,
  a few seconds after it first answers (aim ≤ 40 MiB).

Every Decide run checks the sidecar's limit counted every completed call (h2load counts gRPC
errors as successes).

    .venv/bin/python bench/wire_bench.py                      # floor and rss, writes RESULTS.md
    .venv/bin/python bench/wire_bench.py --part floor --print # one part, print only
    .venv/bin/python bench/wire_bench.py --part before --before OTHER/.venv/bin/toolgate --print
    .venv/bin/python bench/wire_bench.py --part traced --otlp-endpoint http://127.0.0.1:4317 --print
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

EXAMPLE_POLICY = h.ROOT / "examples" / "policy.json"
SECTION = "## Microseconds on the wire: native data plane, floor, memory"
X = h.X
AIM_P50 = 1.1
AIM_SAT = 0.85
AIM_RSS_MIB = 40
METRICS = {"rps": "req/s", "p50": "p50", "p99": "p99", "server_cpu_us": "server CPU / call"}


def timed(server: h.Server, body: Path, run: h.Run, workdir: Path, args) -> h.Run:
    before = h.counted(server.port) if run.name != "floor-rust" else None
    url = f"http://127.0.0.1:{server.port}{h.DECIDE}"
    r = h.h2load(run, url, body, workdir, {"server": server}, args)
    if before is not None:
        h.check_counted(r, h.counted(server.port) - before)
    print(
        f"{r.load:9} {r.name:14} run {r.index}: {r.rps:9,.0f} req/s  p50 "
        f"{h.fmt_us(r.p50):>8}  p99 {h.fmt_us(r.p99):>8}  cpu/req {r.server_cpu_us:5.1f} µs"
        f"  busy before {r.quiet_before:.2f}  other {r.other_cores:.2f}  steal "
        f"{r.steal_cores:.2f}  h2load {r.gen_cores:.2f} cores",
        file=sys.stderr,
    )
    if r.problems:
        raise SystemExit(f"{r.name} run {r.index}: {r.problems}")
    return r


def interleave(servers, body, workdir, args, load, rounds) -> list[h.Run]:
    runs = []
    for i in range(1, rounds + 1):
        for name in h.rotated(list(servers), i):
            if load == "single":
                run = h.Run(name, load, i, n=args.n_single)
            else:
                run = h.Run(name, load, i, args.c, args.m, duration=args.sat_seconds)
            runs.append(timed(servers[name], body, run, workdir, args))
    return runs


def metric_rows(runs, names, ratio_of: tuple[str, str] | None = None) -> list[str]:
    """A table row per load and metric: each server's median, and with ``ratio_of`` the
    median of that pair's per-run ratios."""
    rows = []
    for load, label in (("single", "one in flight"), ("saturated", "saturated")):
        for attr, metric in METRICS.items():
            cells = [show(attr, h.med(runs, attr, load=load, name=n)) for n in names]
            if ratio_of:
                cells.append(h.fmt_ratios(h.per_run(runs, attr, *ratio_of, load=load)))
            rows.append(f"| {label} | {metric} | " + " | ".join(cells) + " |")
    return rows


def show(attr: str, v: float) -> str:
    return f"{v:,.0f}" if attr == "rps" else f"{v:.0f} µs" if "cpu" in attr else h.fmt_us(v)


def medians(runs, names) -> dict:
    return {
        f"{n}/{load}": {a: h.med(runs, a, load=load, name=n) for a in METRICS}
        for n in names
        for load in ("single", "saturated")
    }


def start_servers(exes: dict[str, list[str]], workdir: Path) -> dict[str, h.Server]:
    servers: dict[str, h.Server] = {}
    try:
        for name, cmd in exes.items():
            port = h.free_port()
            servers[name] = h.start_grpc(
                name, h.serve_cmd(port, *cmd[1:], exe=cmd[0]), port, workdir
            )
    except BaseException:
        for s in servers.values():
            s.stop()
        raise
    return servers


def part_floor(args, workdir: Path, body: Path, out: dict) -> list[str]:
    t = str(args.threads)
    servers = start_servers({"native": [h.toolgate_exe(), "--threads", t]}, workdir)
    try:
        # The floor answers what the sidecar answers the bench request.
        response = workdir / "response.bin"
        response.write_bytes(h.call(servers["native"].port, h.decide_request()))
        p = h.free_port()
        cmd = [str(h.FLOOR_BIN), "--listen", f"127.0.0.1:{p}", "--threads", t]
        servers["floor-rust"] = h.start_grpc(
            "floor-rust", [*cmd, "--response", str(response)], p, workdir, h.decide_request()
        )
        if h.call(p, h.decide_request()) != response.read_bytes():
            raise RuntimeError("the floor's answer differs from the sidecar's")
        h.warm(
            [f"http://127.0.0.1:{s.port}{h.DECIDE}" for s in servers.values()],
            body,
            args.warmup,
            args,
        )
        runs = interleave(servers, body, workdir, args, "single", args.single_runs)
        runs += interleave(servers, body, workdir, args, "saturated", args.runs)
    finally:
        for s in servers.values():
            s.stop()
    names = ["native", "floor-rust"]
    p50 = h.per_run(runs, "p50", *names, load="single")
    sat = h.per_run(runs, "rps", *names, load="saturated")
    cpu = h.per_run(runs, "server_cpu_us", *names, load="saturated")

    def verdict(xs, aim, higher):
        return h.verdict(statistics.median(xs), aim, higher) if xs else "\u2013"

    out["floor"] = {
        "medians": medians(runs, names),
        "ratios": {"p50_native_floor": p50, "sat_native_floor": sat, "cpu_native_floor": cpu},
    }
    return [
        "| load | metric | native | Rust floor |",
        "|---|---|---:|---:|",
        *metric_rows(runs, names),
        "",
        "Ratios, median of the per-run ratios (each run: the servers compared back to "
        "back), the runs in brackets; for one in flight, the median's distribution-free "
        "95% confidence interval:",
        "",
        "| ratio | value | aim | |",
        "|---|---|---|---|",
        f"| native / Rust floor, p50 one in flight | {h.fmt_ratios(p50, ci=True)} | "
        f"≤ {AIM_P50}{X} | {verdict(p50, AIM_P50, False)} |",
        f"| native / Rust floor, saturated req/s | {h.fmt_ratios(sat)} | ≥ {AIM_SAT}{X} | "
        f"{verdict(sat, AIM_SAT, True)} |",
        f"| native / Rust floor, server CPU per call, saturated | {h.fmt_ratios(cpu)} | | |",
        "",
        h.busy_line(runs),
    ]


def side_by_side(sides: dict[str, list[str]], args, workdir: Path, body: Path) -> list[h.Run]:
    """Each side's ``toolgate serve`` (its command), warmed, then interleaved runs one in
    flight and saturated."""
    servers = start_servers(sides, workdir)
    try:
        h.warm(
            [f"http://127.0.0.1:{s.port}{h.DECIDE}" for s in servers.values()],
            body,
            args.warmup,
            args,
        )
        runs = interleave(servers, body, workdir, args, "single", args.runs)
        runs += interleave(servers, body, workdir, args, "saturated", args.runs)
    finally:
        for s in servers.values():
            s.stop()
    return runs


def part_before(args, workdir: Path, body: Path, out: dict) -> list[str]:
    if not args.before:
        raise SystemExit("--part before needs --before EXE")
    exes = {"before": args.before, "this build": h.toolgate_exe()}
    t = ["--threads", str(args.threads)]
    runs = side_by_side({name: [exe, *t] for name, exe in exes.items()}, args, workdir, body)
    rss = {name: idle_rss_mib(args, workdir, exe) for name, exe in exes.items()}
    out["before"] = medians(runs, list(exes))
    return [
        "| load | metric | before | this build | this build / before (per run) |",
        "|---|---|---:|---:|---|",
        *metric_rows(runs, list(exes), ratio_of=("this build", "before")),
        f"| idle | VmRSS | {rss['before']:.1f} MiB | {rss['this build']:.1f} MiB | |",
        "",
        f"`--before {Path(args.before).name}`: the other build.",
        h.busy_line(runs),
    ]


def part_traced(args, workdir: Path, body: Path, out: dict) -> list[str]:
    if not args.otlp_endpoint:
        raise SystemExit("--part traced needs --otlp-endpoint URL (a collector)")
    exe, t = h.toolgate_exe(), ["--threads", str(args.threads)]
    traced = ["--otlp-endpoint", args.otlp_endpoint, "--otlp-sample-ratio", str(args.ratio)]
    sides = {"untraced": [exe, *t], "traced": [exe, *t, *traced]}
    runs = side_by_side(sides, args, workdir, body)
    out["traced"] = medians(runs, list(sides))
    return [
        "| load | metric | untraced | traced | traced / untraced (per run) |",
        "|---|---|---:|---:|---|",
        *metric_rows(runs, list(sides), ratio_of=("traced", "untraced")),
        "",
        f"Traced: `--otlp-endpoint`, every request a trace of its own, `--otlp-sample-ratio "
        f"{args.ratio:g}` of them sampled and exported.",
        h.busy_line(runs),
    ]


def idle_rss_mib(args, workdir: Path, exe: str | None = None) -> float:
    """VmRSS of ``toolgate serve`` on the example policy, idle after one dry-run Decide and
    one /metrics scrape."""
    from toolgate.v1 import decider_pb2 as pb

    probe = pb.DecideRequest(
        tool="describe_instances", subject=pb.Subject(grant="g"), dry_run=True
    ).SerializeToString()
    p, mp = h.free_port(), h.free_port()
    cmd = h.serve_cmd(p, policy=EXAMPLE_POLICY, metrics=mp, exe=exe)
    s = h.start_grpc(f"rss-{p}", cmd, p, workdir, probe)
    try:
        if "toolgate_decisions_total" not in h.scrape(mp):
            raise RuntimeError("/metrics does not count decisions")
        time.sleep(args.rss_settle)
        return s.rss_mib()
    finally:
        s.stop()


def part_rss(args, workdir: Path, out: dict) -> list[str]:
    mib = idle_rss_mib(args, workdir)
    out["rss"] = {"native": mib}
    return [
        "| VmRSS after start (idle) | aim |",
        "|---:|---|",
        f"| {mib:.1f} MiB | ≤ {AIM_RSS_MIB} MiB: {h.verdict(mib, AIM_RSS_MIB, False)} |",
        "",
        f"`toolgate serve --policy examples/policy.json` (default counter table, "
        f"{2**16:,} slots; /metrics on), one dry-run Decide answered and /metrics scraped "
        f"once, then {args.rss_settle:g} s idle; VmRSS of the process from /proc/PID/status.",
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", action="append", choices=["floor", "before", "traced", "rss"])
    p.add_argument("--before", metavar="EXE", help="--part before: the other build's toolgate")
    p.add_argument("--otlp-endpoint", metavar="URL", help="--part traced: the collector")
    p.add_argument("--ratio", type=float, default=1.0, help="--part traced: sampled share (1)")
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
        h.build_floor()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="wire-bench-"))
    body = workdir / "decide.body"
    body.write_bytes(h.grpc_frame(h.decide_request()))
    out: dict = {"when": time.time()}
    lines = [
        h.written_by("wire_bench.py") + "; "
        f"h2load `-t 1`, one in flight `-c 1 -m 1` \u00d7 {args.n_single:,} requests, saturated "
        f"`-c {args.c} -m {args.m}` for {args.sat_seconds:g} s; {args.runs} runs, medians"
        + (
            f" ({args.single_runs} runs of native and Rust floor one in flight)"
            if "floor" in parts
            else ""
        )
        + f"; `--threads {args.threads}`.",
    ]
    try:
        if "floor" in parts:
            lines += ["", "**Native vs its floor** (`--part floor`)", ""]
            lines += part_floor(args, workdir, body, out)
        if "before" in parts:
            lines += ["", "**This build against another** (`--part before`)", ""]
            lines += part_before(args, workdir, body, out)
        if "traced" in parts:
            lines += ["", "**A span per decision** (`--part traced`)", ""]
            lines += part_traced(args, workdir, body, out)
        if "rss" in parts:
            lines += ["", "**Idle memory** (`--part rss`)", ""]
            lines += part_rss(args, workdir, out)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    lines += ["", f"Took {time.monotonic() - started:.0f} s."]
    h.publish("wire", "\n".join(lines), "wire_bench.py", SECTION, args.write, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
