"""Latency against offered load, open loop: `toolgate serve` with 1 and N workers at a series
of fixed arrival rates, from a low rate to past saturation, without coordinated omission
(bench/README.md).

h2load is closed loop (a connection sends its next request when an answer comes back) and its
``--rps`` is bursty, so a slow answer delays the requests behind it and their wait is never
measured (coordinated omission). ``bench/openloop/openloop.c`` (C: one thread, epoll and
nghttp2, like h2load) sends request i at t0 + i/rate whatever is outstanding, and measures
each request's latency from that intended time. This driver:

1. compiles the generator (``cc ... -lnghttp2``; Debian ``libnghttp2-dev``) and writes the
   pre-encoded ``DecideRequest`` (the gRPC bench's: tool ``run_command``, a command the
   policy's regex does not match, one limit per grant that counts every call);
2. starts ``toolgate serve --policy bench/policy_grpc.json [--workers N]`` with /metrics on;
3. takes each server's saturated throughput S (the gRPC bench's medians from ``--saturated-from
   FILE``, written by ``grpc_bench.py --json``, or its own h2load runs, ``-c 16 -m 8``);
4. runs the generator at ``--fractions`` of S (default 0.1 to 1.15), for every worker count,
   ``--runs`` sweeps (default 3), each point after the machine is quiet, bounded in requests
   and time; per point: percentiles from the intended send time, errors, the generator's
   scheduling lag and CPU, the sidecar's CPU per call and context switches, each worker's
   share (``toolgate_worker_decisions_total``), and the limit's count (a dry-run Decide before
   and after: every answered call counted);
5. draws latency (p50, p99, p99.9, medians of the runs) against offered load, and achieved
   against offered throughput, into bench/latency_vs_load.png (matplotlib, a bench-only
   dependency), and rewrites the block between ``<!-- BEGIN openloop -->`` and
   ``<!-- END openloop -->`` in bench/RESULTS.md.

    .venv/bin/python bench/openloop_bench.py                 # everything (~6 min)
    .venv/bin/python bench/openloop_bench.py --print         # print, don't write RESULTS.md
    .venv/bin/python bench/openloop_bench.py --runs 1 --duration 2 --fractions 0.25 0.5 1.0 --print
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc_bench as gb

ROOT = gb.ROOT
SRC = ROOT / "bench" / "openloop" / "openloop.c"
GEN = ROOT / "target" / "openloop"
PNG = ROOT / "bench" / "latency_vs_load.png"
RESULTS = gb.RESULTS
BEGIN, END = "<!-- BEGIN openloop -->", "<!-- END openloop -->"
SECTION = "## Latency against load, open loop"
INTRO = (
    "A fixed arrival rate, latency from each request's intended send time (no coordinated "
    "omission); how it is run: [README.md](README.md#latency-against-load-open-loop). The "
    "block below and the plot are written by `bench/openloop_bench.py`."
)
FRACTIONS = (0.1, 0.25, 0.5, 0.7, 0.85, 1.0, 1.15)
AIM_P99_US = 2000.0  # p99 at half the saturated rate
X = "\u00d7"


def build_generator() -> str:
    """Compile the generator (C, nghttp2) into target/; its description for the report."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise SystemExit("no C compiler (cc): the open-loop generator is bench/openloop/openloop.c")
    if not Path("/usr/include/nghttp2/nghttp2.h").exists():
        raise SystemExit("nghttp2 headers missing: apt-get install -y libnghttp2-dev")
    GEN.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [cc, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(GEN), str(SRC), "-lnghttp2"],
        check=True,
        timeout=300,
    )
    version = gb.sh(["sh", "-c", "dpkg-query -W -f '${Version}' libnghttp2-14 2>/dev/null"])
    compiler = gb.sh([cc, "--version"]).splitlines()
    return (
        f"bench/openloop/openloop.c (one thread, epoll, timerfd), libnghttp2 {version or '?'}, "
        f"{compiler[0] if compiler else cc}"
    )


def need_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise SystemExit(
            "matplotlib is missing: .venv/bin/pip install matplotlib==3.11.2 (bench only; "
            "bench/run_all.sh installs it)"
        ) from None
    matplotlib.use("Agg")
    return matplotlib


# --- measurement ---------------------------------------------------------------------------


def scrape(port: int) -> tuple[float, dict[str, float]]:
    """(toolgate_decisions_total summed, per worker decisions) from /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = sum(
        float(m.group(1))
        for m in re.finditer(r"^toolgate_decisions_total\{[^}]*\} (\S+)$", text, re.M)
    )
    return total, gb.scrape_worker_decisions(port)


def psi_some_us() -> int:
    """Linux PSI, CPU 'some': total µs any task waited for a CPU (0 without PSI)."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return int(line.rsplit("total=", 1)[1])
    except (OSError, IndexError, ValueError):
        return 0


@dataclass
class Point:
    workers: int
    fraction: float
    rate: float
    index: int
    kind: str = "decide"  # or "floor": bench/grpc_floor.py at the same rate
    res: dict = field(default_factory=dict)  # the generator's JSON
    server_cpu_us: float = 0.0  # sidecar CPU (whole tree) per request sent
    server_cs: float = 0.0
    server_cores: float = 0.0
    gen_cores: float = 0.0
    other_cores: float = 0.0
    steal_cores: float = 0.0
    pressure: float = 0.0  # share of the wall time some task waited for a CPU
    quiet_before: float = 0.0
    counted: int = 0  # calls the limit counted (warm-up included)
    decisions: float = 0.0  # toolgate_decisions_total increase (warm-up included)
    per_worker: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def lat(self, q: str) -> float:
        return self.res["latency_us"].get(q, float("nan"))

    @property
    def errors(self) -> int:
        return sum(self.res["errors"].values())


def run_point(server: gb.Server, body: Path, prefix: str, p: Point, args) -> Point:
    duration = max(args.duration, args.min_requests / p.rate)
    cmd = [str(GEN), "-target", f"127.0.0.1:{server.port}", "-body", str(body)]
    cmd += ["-rate", f"{p.rate:.3f}", "-duration", f"{duration:.3f}", "-conns", str(args.conns)]
    cmd += ["-timeout", f"{args.request_timeout}s", "-warmup", str(args.warmup)]
    cmd += ["-expect-prefix", prefix, "-pick", args.pick]
    p.quiet_before = gb.wait_quiet(args.quiet_wait, args.quiet_cores)
    floor = p.kind == "floor"
    before = 0 if floor else gb.remaining(server.port)
    d0, w0 = (0.0, {}) if floor else scrape(server.metrics_port)
    b0, s0 = gb.cpu_ticks()
    srv0, cs0, psi0 = server.cpu_seconds(), server.context_switches(), psi_some_us()
    t0 = time.monotonic()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=duration + args.request_timeout + 60
    )
    wall = time.monotonic() - t0
    srv, cs, psi = (
        server.cpu_seconds() - srv0,
        server.context_switches() - cs0,
        psi_some_us() - psi0,
    )
    b1, s1 = gb.cpu_ticks()
    if proc.returncode != 0:
        raise RuntimeError(f"openloop failed: {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    d1, w1 = (0.0, {}) if floor else scrape(server.metrics_port)
    p.counted = 0 if floor else before - gb.remaining(server.port)
    p.res = json.loads(proc.stdout)
    r = p.res
    sent = r["sent"] + r["warmup"]
    p.server_cpu_us = srv / max(sent, 1) * 1e6
    p.server_cs = cs / max(sent, 1)
    p.server_cores = srv / wall
    p.gen_cores = r["cpu_s"] / max(r["wall_s"], 1e-9)
    p.other_cores = max(0.0, ((b1 - b0) / gb.CLK_TCK - srv - r["cpu_s"]) / wall)
    p.steal_cores = (s1 - s0) / gb.CLK_TCK / wall
    p.pressure = psi / 1e6 / wall
    p.decisions = d1 - d0
    p.per_worker = [int(w1[k] - w0.get(k, 0)) for k in sorted(w1, key=int)]
    answered = r["ok"] + r["warmup"]
    # Every answered call was counted; an unanswered one (deadline passed) may or may not have
    # been decided before the caller gave up.
    if floor:
        if r["bad_answers"]:
            p.problems.append(f"{r['bad_answers']} answers not ALLOW")
        return p
    if not answered <= p.counted <= sent:
        p.problems.append(f"limit counted {p.counted:,}, answered {answered:,}, sent {sent:,}")
    if p.decisions != p.counted:
        p.problems.append(f"decisions on /metrics +{p.decisions:,.0f}, counted {p.counted:,}")
    if r["bad_answers"]:
        p.problems.append(f"{r['bad_answers']} answers not ALLOW")
    return p


def saturated_from(path: Path | None, workers: list[int]) -> dict[int, float]:
    if not path or not path.exists():
        return {}
    medians = json.loads(path.read_text())["medians"]
    out = {}
    for w in workers:
        key = "decide/saturated" if w == 1 else f"decide-w{w}/saturated"
        if key in medians:
            out[w] = medians[key]["rps"]
    return out


def measure_saturated(server: gb.Server, body: Path, args, workdir: Path) -> float:
    rates = []
    for i in range(args.runs):
        # Time-bounded (h2load -D): with -n each connection gets n/c requests, and the worker
        # holding more connections would work alone at the end.
        run = gb.Run("saturated", server.name, i + 1, 0, 16, 8, duration=args.sat_seconds)
        r = gb.run_h2load(server, body, run, workdir, 180.0, (args.quiet_wait, args.quiet_cores))
        rates.append(r.rps)
    return statistics.median(rates)


# --- report --------------------------------------------------------------------------------


def med(points: list[Point], fn) -> float:
    return statistics.median(fn(p) for p in points)


def grouped(points: list[Point], kind: str = "decide") -> dict[tuple[int, float], list[Point]]:
    out: dict[tuple[int, float], list[Point]] = {}
    for p in points:
        if p.kind == kind:
            out.setdefault((p.workers, p.fraction), []).append(p)
    return dict(sorted(out.items()))


def fmt(us: float) -> str:
    return gb.fmt_us(us)


def plot(points: list[Point], sat: dict[int, float], title_note: str) -> None:
    need_matplotlib()
    import matplotlib.pyplot as plt

    groups = grouped(points)
    colors = {1: "tab:blue", 2: "tab:orange", 3: "tab:green", 4: "tab:red"}
    fig, (ax, ax2) = plt.subplots(
        1, 2, figsize=(12, 5.2), gridspec_kw={"width_ratios": [1.6, 1]}, layout="constrained"
    )
    for w in sorted({p.workers for p in points}):
        keys = [k for k in groups if k[0] == w]
        rates = [med(groups[k], lambda p: p.rate) for k in keys]
        color = colors.get(w)
        label = f"{w} worker" + ("s" if w > 1 else "")
        for q, style, marker in (("p50", "-", "o"), ("p99", "--", "s"), ("p99.9", ":", "^")):
            ys = [med(groups[k], lambda p, q=q: p.lat(q)) / 1000 for k in keys]
            ax.plot(rates, ys, style, marker=marker, ms=4, color=color, label=f"{label}, {q}")
        bad = [
            (r, med(groups[k], lambda p: p.lat("p99.9")) / 1000)
            for r, k in zip(rates, keys, strict=True)
            if med(groups[k], lambda p: p.errors)
        ]
        if bad:
            ax.plot([b[0] for b in bad], [b[1] for b in bad], "x", color="black", ms=9, mew=2)
        if w in sat:
            ax.axvline(sat[w], color=color, lw=0.8, alpha=0.6)
            ax.axvline(sat[w] / 2, color=color, lw=0.8, alpha=0.6, ls="-.")
        floors = grouped(points, "floor")
        fk = [k for k in floors if k[0] == w]
        if fk:
            ax.plot(
                [med(floors[k], lambda p: p.rate) for k in fk],
                [med(floors[k], lambda p: p.lat("p99")) / 1000 for k in fk],
                "D",
                color=color,
                mec="black",
                ms=7,
                label=f"{label}, floor p99 (same rate)",
            )
        achieved = [med(groups[k], lambda p: p.res["achieved_rps"]) for k in keys]
        ax2.plot(rates, achieved, "-o", ms=4, color=color, label=label)
    ax.axhline(AIM_P99_US / 1000, color="red", lw=0.8, ls="--")
    ax.text(
        ax.get_xlim()[0],
        AIM_P99_US / 1000 * 1.08,
        " 2 ms (p99 target at ½ saturation)",
        color="red",
        fontsize=8,
    )
    ax.set_yscale("log")
    ax.set_xlabel("offered load, requests/s (fixed arrival rate)")
    ax.set_ylabel("latency from intended send time, ms (log)")
    ax.set_title("Decide over gRPC, open loop: latency against offered load", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncols=2, loc="upper left")
    hi = max(p.rate for p in points) * 1.05
    ax2.plot([0, hi], [0, hi], color="grey", lw=0.8, ls=":", label="achieved = offered")
    ax2.set_xlabel("offered load, requests/s")
    ax2.set_ylabel("answered OK, requests/s")
    ax2.set_title("throughput", fontsize=10)
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=7)
    fig.suptitle(
        "Vertical lines: saturated throughput by h2load (solid) and half of it (dash-dot); "
        f"x: a point with errors (timeouts). {title_note}",
        fontsize=8,
    )
    fig.savefig(PNG, dpi=110)
    plt.close(fig)


def report(args, points: list[Point], sat: dict, sat_source: str, gen_version: str, elapsed):
    git = gb.sh(["git", "rev-parse", "--short", "HEAD"])
    dirty = " with uncommitted changes" if gb.sh(["git", "status", "--porcelain"]) else ""
    cpu = gb.sh(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p' | head -1"])
    import grpc

    out = [
        f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, commit {git}{dirty}; "
        f"{cpu}, `nproc` = {os.cpu_count()}, Linux {platform.release()}; Python "
        f"{platform.python_version()}, grpcio {grpc.__version__}; generator: {gen_version}. "
        f"Whole run: {elapsed:.0f} s.",
        "",
        f"Command: `.venv/bin/python bench/openloop_bench.py {' '.join(args.argv)}`".rstrip()
        + f". Sidecar: `toolgate serve --policy bench/policy_grpc.json [--workers N] "
        f"--metrics-listen 127.0.0.1:PORT` (8 handler threads per process). Generator: "
        f"`target/openloop` (bench/openloop/openloop.c), {args.conns} HTTP/2 connections, "
        f"each request on the connection with the fewest outstanding (`-pick {args.pick}`; "
        f"`rr`: in turn), {args.warmup} "
        f"warm-up calls per connection first, each request's deadline "
        f"{args.request_timeout:g} s after its intended send time; each point runs "
        f"max({args.duration:g} s, {args.min_requests:,} requests). Rates: "
        + ", ".join(f"{f:g}" for f in args.fractions)
        + f" {X} S, S the saturated throughput of that worker count ({sat_source}: "
        + ", ".join(f"{w} worker{'s' if w > 1 else ''} {s:,.0f} req/s" for w, s in sat.items())
        + f"); {args.runs} sweeps, rates in increasing order, every figure the median of the "
        "sweeps (p99's range over them in brackets). The generator runs on the same 2 cores "
        "as the sidecar. Cores: CPU time over wall time of the sidecar (supervisor and "
        "workers), of the generator, of everything else, and the hypervisor's steal. Lag: "
        "when the generator actually sent, after the intended time (part of the latency).",
        "",
        f"![latency against offered load]({PNG.name})",
        "",
        "| workers | offered req/s | achieved | p50 | p99 (range) | p99.9 | max | errors "
        "| lag p99 | cores: sidecar / generator / other / steal | sidecar CPU / req (cs) "
        "| per worker | checks |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---|",
    ]
    for (w, f), ps in grouped(points).items():
        p99s = [p.lat("p99") for p in ps]
        errs = med(ps, lambda p: p.errors)
        err_cell = f"{errs:,.0f}" if not errs else f"{errs:,.0f} ({ps[0].res['errors']})"
        share = ""
        if w > 1:
            share = " / ".join(
                f"{statistics.median(p.per_worker[i] / (sum(p.per_worker) or 1) for p in ps):.0%}"
                for i in range(w)
            )
        probs = [f"run {p.index}: {'; '.join(p.problems)}" for p in ps if p.problems]

        def m(fn, ps=ps):
            return med(ps, fn)

        cells = [
            f"{w}",
            f"{m(lambda p: p.rate):,.0f} ({f:g} S)",
            f"{m(lambda p: p.res['achieved_rps']):,.0f}",
            fmt(m(lambda p: p.lat("p50"))),
            f"**{fmt(statistics.median(p99s))}** ({fmt(min(p99s))} to {fmt(max(p99s))})",
            fmt(m(lambda p: p.lat("p99.9"))),
            fmt(m(lambda p: p.lat("max"))),
            err_cell,
            fmt(m(lambda p: p.res["lag_us"]["p99"])),
            f"{m(lambda p: p.server_cores):.2f} / {m(lambda p: p.gen_cores):.2f} / "
            f"{m(lambda p: p.other_cores):.2f} / {m(lambda p: p.steal_cores):.2f}",
            f"{m(lambda p: p.server_cpu_us):.0f} µs ({m(lambda p: p.server_cs):.1f})",
            share,
            "**" + "; ".join(probs) + "**" if probs else "✓",
        ]
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "**Target**: p99 at half the saturated rate under 2 ms.", ""]
    for w in sorted(sat):
        ps = grouped(points).get((w, 0.5))
        if not ps:
            continue
        v = med(ps, lambda p: p.lat("p99"))
        each = ", ".join(fmt(p.lat("p99")) for p in ps)
        word = (
            f"**met**, {fmt(AIM_P99_US - v)} under"
            if v < AIM_P99_US
            else f"**missed** by {fmt(v - AIM_P99_US)} ({v / AIM_P99_US:.2f}{X} the target)"
        )
        gen = med(ps, lambda p: p.gen_cores)
        gen_us = med(ps, lambda p: p.res["cpu_s"] / p.res["sent"] * 1e6)
        out.append(
            f"- {w} worker{'s' if w > 1 else ''}, {med(ps, lambda p: p.rate):,.0f} req/s "
            f"(S/2): p99 {fmt(v)} (runs: {each}), {word}. p50 "
            f"{fmt(med(ps, lambda p: p.lat('p50')))}, p99.9 "
            f"{fmt(med(ps, lambda p: p.lat('p99.9')))}; the generator's own lag p99 "
            f"{fmt(med(ps, lambda p: p.res['lag_us']['p99']))}; it used {gen:.2f} cores "
            f"({gen_us:.0f} µs per request) beside the sidecar's "
            f"{med(ps, lambda p: p.server_cores):.2f}; PSI CPU pressure "
            f"{med(ps, lambda p: p.pressure):.0%} of the time."
        )
    floors = grouped(points, "floor")
    if floors:
        out += [
            "",
            "**Decide against the transport floor at the same rate** (bench/grpc_floor.py, "
            "a constant answer on the same grpcio settings, with as many processes; run right "
            "after the Decide point in each sweep, medians):",
            "",
            "| workers | rate | server | p50 | p99 (range) | p99.9 | server CPU / req (cs) "
            "| cores: server / generator / other / steal |",
            "|---:|---:|---|---:|---:|---:|---:|---|",
        ]
        for (w, f), fps in floors.items():
            for kind, ps in (("Decide", grouped(points).get((w, f), [])), ("floor", fps)):
                if not ps:
                    continue
                p99s = [p.lat("p99") for p in ps]
                out.append(
                    f"| {w} | {med(ps, lambda p: p.rate):,.0f} ({f:g} S) | {kind} | "
                    f"{fmt(med(ps, lambda p: p.lat('p50')))} | **{fmt(statistics.median(p99s))}**"
                    f" ({fmt(min(p99s))} to {fmt(max(p99s))}) | "
                    f"{fmt(med(ps, lambda p: p.lat('p99.9')))} | "
                    f"{med(ps, lambda p: p.server_cpu_us):.0f} µs "
                    f"({med(ps, lambda p: p.server_cs):.1f}) | "
                    f"{med(ps, lambda p: p.server_cores):.2f} / "
                    f"{med(ps, lambda p: p.gen_cores):.2f} / "
                    f"{med(ps, lambda p: p.other_cores):.2f} / "
                    f"{med(ps, lambda p: p.steal_cores):.2f} |"
                )
    bad = [p for p in points if p.problems]
    out += [
        "",
        "**Checks**: each point, a dry-run Decide before and after reads the limit's count "
        "(day window, max 1e9): every call answered OK (and the warm-up) must be counted, and "
        "no more than were sent (a call whose deadline passed may or may not have been decided "
        "first); `toolgate_decisions_total` on /metrics must rise by as many; every answer must "
        "be an ALLOW (its first bytes). "
        + (
            "**All points passed.**" if not bad else f"**{len(bad)} run(s) failed**: see the table."
        ),
    ]
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="default: 1 2")
    p.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS))
    p.add_argument("--runs", type=int, default=3, help="sweeps (default 3)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per point at least")
    p.add_argument(
        "--min-requests", type=int, default=2000, help="requests per point at least (2000)"
    )
    p.add_argument("--conns", type=int, default=16, help="generator connections (16)")
    p.add_argument(
        "--floor-fractions",
        type=float,
        nargs="*",
        default=[0.5],
        help="at these fractions of S, also run the transport floor (grpc_floor.py with as "
        "many processes) at the same rate (default 0.5; none: --floor-fractions)",
    )
    p.add_argument("--pick", choices=["least", "rr"], default="least")
    p.add_argument("--warmup", type=int, default=20, help="calls per connection first")
    p.add_argument("--request-timeout", type=float, default=1.0, help="per request, s")
    p.add_argument(
        "--saturated-from",
        type=Path,
        help="grpc_bench.py --json output: take S from its saturated medians",
    )
    p.add_argument(
        "-Ds", "--sat-seconds", type=float, default=8.0, help="h2load run, if S is measured here"
    )
    p.add_argument("--quiet-wait", type=float, default=10.0)
    p.add_argument("--quiet-cores", type=float, default=0.3)
    p.add_argument("--print", dest="write", action="store_false", help="don't write RESULTS.md")
    p.add_argument("--no-plot", dest="plot", action="store_false")
    args = p.parse_args()
    args.argv = sys.argv[1:]
    if args.plot:
        need_matplotlib()
    started = time.monotonic()
    gen_version = build_generator()
    workdir = Path(tempfile.mkdtemp(prefix="openloop-bench-"))
    body = workdir / "decide.bin"
    body.write_bytes(gb.decide_request())
    framed = workdir / "decide.body"
    framed.write_bytes(gb.grpc_frame(gb.decide_request()))
    from toolgate._core import Engine

    answer = Engine.from_file(gb.POLICY).decide_wire(gb.decide_request())
    prefix = answer[:2].hex()  # field 1 (verdict) = ALLOW

    (workdir / "response.bin").write_bytes(answer)
    sat = saturated_from(args.saturated_from, args.workers)
    sat_source = f"the gRPC bench's medians, {args.saturated_from}" if sat else "h2load here"
    servers: dict[int, gb.Server] = {}
    floors: dict[int, gb.Server] = {}
    points: list[Point] = []
    try:
        for w in args.workers:
            port, mport = gb.free_port(), gb.free_port()
            cmd = [gb.toolgate_exe(), "serve", "--policy", str(gb.POLICY), "--listen"]
            cmd += [f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{mport}", "--drain", "0"]
            if w > 1:
                cmd += ["--workers", str(w)]
            servers[w] = gb.start_server(
                f"decide-w{w}",
                cmd,
                port,
                workdir,
                gb.decide_request(dry_run=True),
                workers=w,
                metrics_port=mport,
            )
            if args.floor_fractions:
                fport = gb.free_port()
                fcmd = [sys.executable, str(gb.FLOOR_SCRIPT), "--listen", f"127.0.0.1:{fport}"]
                fcmd += ["--response", str(workdir / "response.bin"), "--workers", str(w)]
                floors[w] = gb.start_server(
                    f"floor-w{w}", fcmd, fport, workdir, gb.decide_request(), workers=w
                )
        for w, server in servers.items():
            if w not in sat:
                sat[w] = measure_saturated(server, framed, args, workdir)
                sat_source = "h2load here, `-c 16 -m 8`, median of the runs"
                print(f"{w} worker(s): saturated at {sat[w]:,.0f} req/s", file=sys.stderr)
        for i in range(1, args.runs + 1):
            for f in args.fractions:
                # Alternate the worker counts point by point, order rotated each sweep.
                ws = (
                    args.workers[(i - 1) % len(args.workers) :]
                    + args.workers[: (i - 1) % len(args.workers)]
                )
                for w, kind in [(w, k) for w in ws for k in ("decide", "floor")]:
                    if kind == "floor" and (f not in args.floor_fractions or w not in floors):
                        continue
                    rate = round(sat[w] * f / 10) * 10 or 10
                    server = floors[w] if kind == "floor" else servers[w]
                    pt = run_point(server, body, prefix, Point(w, f, rate, i, kind), args)
                    points.append(pt)
                    r = pt.res
                    print(
                        f"sweep {i} {kind:6} {w}w {f:4g}S {rate:6,.0f}/s: achieved "
                        f"{r['achieved_rps']:6,.0f}  p50 {fmt(pt.lat('p50')):>8}  p99 "
                        f"{fmt(pt.lat('p99')):>8}  p99.9 {fmt(pt.lat('p99.9')):>8}  err "
                        f"{pt.errors}  lag p99 {fmt(r['lag_us']['p99'])}  cores srv "
                        f"{pt.server_cores:.2f} gen {pt.gen_cores:.2f} other "
                        f"{pt.other_cores:.2f} steal {pt.steal_cores:.2f}  workers "
                        f"{pt.per_worker}  {'; '.join(pt.problems) or 'ok'}",
                        file=sys.stderr,
                    )
    finally:
        for s in [*servers.values(), *floors.values()]:
            s.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    if args.plot:
        plot(points, sat, f"{args.runs} sweeps, medians; generator on the same 2 cores.")
    block = report(args, points, sat, sat_source, gen_version, time.monotonic() - started)
    print(block)
    if args.write:
        gb.write_block(BEGIN, END, SECTION, INTRO, block)
        print(f"\nrewrote the openloop block of {RESULTS}", file=sys.stderr)
    raw = ROOT / "target" / "bench-openloop.json"
    raw.write_text(
        json.dumps(
            {"saturated": sat, "points": [p.__dict__ for p in points]}, indent=1, default=str
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
