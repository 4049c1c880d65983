"""The tail, published: latency against offered load, open loop, from light load to
saturation, for toolgate's three gRPC APIs beside its peers on the same axes. Run on
purpose, never by the tests; the peers come from ``bench/peers/install.sh``.

Series, each server started once and idle while the others run:

- toolgate native ``Decide`` (bench/policy_grpc.json: a regex condition and a limit);
- ``Check`` (ext_authz over the MCP body): toolgate and OPA's Envoy plugin, the policy and
  Rego rule of ``bench/peers_bench.py``;
- ``ShouldRateLimit``: toolgate and Limitador at its release (in memory), the one equivalent
  limit of ``bench/peers_bench.py`` (1e9 a day, so it counts every call and never refuses).

At each offered rate (``--rates``), every series still standing runs ``--runs`` times (3),
the series taking turns in an order rotated each run, before the next rate; a point is the
median of its runs. A run: the open-loop generator (``bench/openloop/openloop.c``)
sends at fixed intended times for ``--seconds`` over ``--conns`` connections, and each
latency counts from its request's intended send time (no coordinated omission); every
answer's first bytes are checked. A series stops after the first rate it cannot hold: under
``--keep`` of the offered rate achieved (median), any error or timeout (2 s), or p99 over
``--stop-p99``; that last point is plotted too (the knee). Aim: p99 ≤ 1 ms at 30,000
decisions/s for each of toolgate's APIs, with the generator on the same two cores.

Writes bench/tail.svg (p50, p99 and p99.9 panels on shared axes), the ``tail`` block of
bench/RESULTS.md (not with ``--print``) and target/bench-tail.json (every point), from which
``--replot`` redraws the SVG alone.

    bench/peers/install.sh                        # once: Limitador and OPA into target/peers/
    .venv/bin/python bench/tail_bench.py          # every series (~12 min)
    .venv/bin/python bench/tail_bench.py --series toolgate-decide --rates 1000,30000 --print
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import harness as h
import peers_bench as peers
from harness import plot

SECTION = "## The tail: latency against offered load"
SVG = h.BENCH / "tail.svg"
AIM_RATE, AIM_P99_US = 30_000, 1000.0
DASH = "\u2013"
RATES = "1000,5000,10000,20000,30000,40000,60000,80000,100000,120000,140000,160000,180000,200000"


@dataclass
class Series:
    key: str
    label: str
    api: str  # which panel family: the method's short name
    server: str  # key into the started servers
    method: str
    request: bytes
    prefix: str = ""  # hex of the expected answer's first bytes
    points: list[dict] = field(default_factory=list)
    stopped: str = ""  # why the series stopped, once it has


def start_all(workdir: Path) -> dict[str, h.Server]:
    """Every server, each on its own port: toolgate three times (one policy each), OPA and
    Limitador. Started through peers_bench's pairs, so configured alike."""
    servers: dict[str, h.Server] = {}
    try:
        port = h.free_port()
        servers["toolgate-decide"] = h.start_grpc(
            "toolgate-decide", h.serve_cmd(port), port, workdir
        )
        rls = peers.start_pair("limitador", peers.BIG, workdir)
        servers["toolgate-rls"], servers["limitador"] = rls["toolgate"], rls["limitador"]
        authz = peers.start_pair("opa", peers.BIG, workdir)
        servers["toolgate-check"], servers["opa"] = authz["toolgate"], authz["opa"]
    except BaseException:
        peers.stop_all(servers)
        raise
    return servers


def all_series() -> list[Series]:
    check = h.check_request(peers.mcp_body("tools/call", peers.TOOL, h.COMMAND))
    rls = h.rls_request(h.GRANT)
    return [
        Series("toolgate-decide", "toolgate Decide", "Decide", "toolgate-decide", h.DECIDE,
               h.decide_request()),
        Series("toolgate-check", "toolgate Check", "Check", "toolgate-check", h.CHECK, check),
        Series("opa", "OPA-Envoy Check", "Check", "opa", h.CHECK, check),
        Series("toolgate-rls", "toolgate ShouldRateLimit", "ShouldRateLimit", "toolgate-rls",
               h.RLS, rls),
        Series("limitador", "Limitador ShouldRateLimit", "ShouldRateLimit", "limitador",
               h.RLS, rls),
    ]  # fmt: skip


def one_run(s: Series, server: h.Server, rate: float, workdir: Path, args) -> dict:
    """One open-loop run at ``rate`` (the request is in WORKDIR/KEY.msg)."""
    run = h.Run(s.key, "offered", len(s.points) + 1)
    message = workdir / f"{s.key}.msg"
    cmd = h.openloop_cmd(
        server.port, s.method, message, rate, args.seconds, conns=args.conns, timeout="2",
        warmup=200, expect_prefix=s.prefix,
    )  # fmt: skip
    r = json.loads(h.measure(run, cmd, {"server": server}, args))
    run.per_call(r["sent"] + r["warmup"])
    lat = r["latency_us"]
    return {
        "achieved": r["achieved_rps"],
        "p50": lat["p50"],
        "p99": lat["p99"],
        "p999": lat["p99.9"],
        "errors": sum(r["errors"].values()) + r["bad_answers"],
        "error_kinds": r["errors"],
        "server_cpu_us": run.server_cpu_us,
        "gen_cores": run.gen_cores,
        "other_cores": run.other_cores,
    }


def point(rate: float, runs: list[dict], args) -> dict:
    """A point: the median of its runs' figures, and why the series stops here, if it does
    (any error, or the median run falling behind or past the p99 cap)."""
    p: dict = {"rate": rate, "runs": runs}
    for k in ("achieved", "p50", "p99", "p999", "server_cpu_us", "gen_cores", "other_cores"):
        p[k] = statistics.median(r[k] for r in runs)
    p["errors"] = sum(r["errors"] for r in runs)
    if p["errors"]:
        kinds: Counter = Counter()
        for r in runs:
            kinds.update(r["error_kinds"])
        named = ", ".join(f"{k} {v:,}" for k, v in kinds.most_common())
        p["stop"] = f"{p['errors']:,} errors or wrong answers ({named or 'wrong answers'})"
    elif p["achieved"] < args.keep * rate:
        p["stop"] = f"achieved {p['achieved']:,.0f}/s"
    elif p["p99"] > args.stop_p99 * 1000:
        p["stop"] = f"p99 {h.fmt_us(p['p99'])}"
    return p


def sweep(series: list[Series], servers: dict[str, h.Server], rates, workdir, args) -> None:
    """Rate by rate; at each, the live series take turns, run by run, each run's order
    rotated."""
    for i, rate in enumerate(rates):
        live = {s.key: s for s in series if not s.stopped}
        if not live:
            return
        runs: dict[str, list[dict]] = {k: [] for k in live}
        for j in range(1, args.runs + 1):
            for key in h.rotated(list(live), i + j):
                s = live[key]
                runs[key].append(one_run(s, servers[s.server], rate, workdir, args))
        for key, s in live.items():
            s.points.append(point(rate, runs[key], args))
            s.stopped = s.points[-1].get("stop", "")
            p = s.points[-1]
            print(
                f"{key:16} {rate:9,.0f}/s: achieved {p['achieved']:9,.0f}  p50 "
                f"{h.fmt_us(p['p50']):>8}  p99 {h.fmt_us(p['p99']):>8}  p99.9 "
                f"{h.fmt_us(p['p999']):>8}  cpu/call {p['server_cpu_us']:5.1f} µs  "
                f"{p.get('stop', 'ok')}",
                file=sys.stderr,
            )


def held(s: Series) -> list[dict]:
    return [p for p in s.points if "stop" not in p]


def at(s: Series, rate: float) -> dict | None:
    return next((p for p in held(s) if p["rate"] == rate), None)


def svg(series: list[Series]) -> str:
    panels = [
        plot.Panel(
            title,
            [
                plot.Series(
                    s.label,
                    [(p["rate"], p[key]) for p in s.points],
                    dashed=not s.key.startswith("toolgate"),
                )
                for s in series
                if s.points
            ],
            guides_y=[(AIM_P99_US, "1 ms")] if key == "p99" else [],
            guides_x=[(AIM_RATE, "30k/s")] if key == "p99" else [],
        )
        for title, key in (("p50", "p50"), ("p99", "p99"), ("p99.9", "p999"))
    ]
    return plot.chart(
        panels,
        title="Latency against offered load, open loop, 2 vCPUs shared with the generator",
        x_label="offered load (calls/s)",
        y_label="latency from the intended send time",
        fmt_x=lambda x: f"{x / 1000:g}k" if x else "0",
        fmt_y=lambda y: f"{y / 1000:g} ms" if y >= 1000 else f"{y:g} µs",
    )


def report(series: list[Series], args) -> tuple[list[str], dict]:
    rows = [
        "| series | highest rate held | p50 / p99 / p99.9 at 10k/s | at 30k/s | at the highest "
        "rate held | server CPU / call there | stopped at |",
        "|---|---:|---|---|---|---:|---|",
    ]

    def cell(p: dict | None) -> str:
        if p is None:
            return DASH
        return " / ".join(h.fmt_us(p[k]) for k in ("p50", "p99", "p999"))

    figures: dict = {}
    for s in series:
        kept = held(s)
        top = max(kept, key=lambda p: p["rate"]) if kept else None
        last = s.points[-1] if s.points else {}
        stop = f"{last['rate']:,.0f}/s: {last['stop']}" if "stop" in last else "not reached"
        rate = f"{top['rate']:,.0f}/s" if top else DASH
        cpu = f"{top['server_cpu_us']:.1f} µs" if top else DASH
        rows.append(
            f"| {s.label} | {rate} | {cell(at(s, 10_000))} | {cell(at(s, AIM_RATE))} | "
            f"{cell(top)} | {cpu} | {stop} |"
        )
        figures[s.key] = {"points": s.points, "stopped": s.stopped}
    aims = []
    for s in series:
        if not s.key.startswith("toolgate"):
            continue
        p = at(s, AIM_RATE)
        figure = h.fmt_us(p["p99"]) if p else "not held"
        ok = p is not None and p["p99"] <= AIM_P99_US
        aims.append(f"{s.label} {figure} ({'**met**' if ok else '**missed**'})")
        figures[s.key]["aim_p99_us"] = p["p99"] if p else None
    rows += [
        "",
        f"Aim, p99 ≤ 1 ms at {AIM_RATE:,} decisions/s: " + "; ".join(aims) + ".",
        "",
        "![p50, p99 and p99.9 against offered load for each series](tail.svg)",
    ]
    return rows, figures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--series", action="append", help="keys: toolgate-decide, opa, ... (all)")
    p.add_argument("--rates", default=RATES, help="offered rates, calls/s, comma separated")
    p.add_argument("--runs", type=int, default=3, help="runs per point, interleaved (3)")
    p.add_argument("--seconds", type=float, default=3.0, help="per run (3)")
    p.add_argument("--conns", type=int, default=4, help="open-loop connections (4)")
    p.add_argument("--keep", type=float, default=0.95, help="achieved/offered to go on (0.95)")
    p.add_argument("--stop-p99", type=float, default=50.0, help="ms; a p99 over it stops (50)")
    p.add_argument("--quiet-wait", type=float, default=30.0)
    p.add_argument("--quiet", type=float, default=0.3)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--print", dest="write", action="store_false")
    p.add_argument("--replot", action="store_true", help="only redraw tail.svg from the last run")
    args = p.parse_args()
    series = [s for s in all_series() if not args.series or s.key in args.series]
    if args.replot:
        last = json.loads((h.TARGET / "bench-tail.json").read_text())
        for s in series:
            s.points = last.get(s.key, {}).get("points", [])
        SVG.write_text(svg(series))
        return 0
    if not series:
        raise SystemExit(f"--series: none of {[s.key for s in all_series()]}")
    for name in ("limitador-server", "opa-envoy-plugin"):
        if not (peers.PEERS / name).exists():
            raise SystemExit(f"{peers.PEERS / name} missing: run bench/peers/install.sh")
    rates = [float(r) for r in args.rates.split(",")]
    h.build_openloop()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="tail-bench-"))
    servers = start_all(workdir)
    try:
        for s in series:
            s.prefix = h.call(servers[s.server].port, s.request, s.method)[:2].hex()
            (workdir / f"{s.key}.msg").write_bytes(s.request)
        sweep(series, servers, rates, workdir, args)
        versions = {
            "limitador": h.sh([str(peers.PEERS / "limitador-server"), "--version"]),
            "opa": h.sh([str(peers.PEERS / "opa-envoy-plugin"), "version"]).splitlines(),
        }
    finally:
        peers.stop_all(servers)
        shutil.rmtree(workdir, ignore_errors=True)
    opa = next((ln for ln in versions["opa"] if ln.startswith("Version")), "?")
    rows, figures = report(series, args)
    block = [
        h.written_by("tail_bench.py") + ". toolgate: `toolgate serve` (2 threads, the "
        f"default here); {versions['limitador'].splitlines()[0]} (in memory); OPA "
        f"{opa.removeprefix('Version: ')} with its Envoy plugin. Each point: the median of "
        f"{args.runs} open-loop runs "
        f"(the series taking turns), {args.conns} connections, {args.seconds:g} s, latency "
        "from each request's intended send time; a series stops "
        f"after the first rate under {args.keep:g}{h.X} achieved, with an error, or with p99 "
        f"over {args.stop_p99:g} ms (that point is plotted, not counted as held).",
        "",
        *rows,
        "",
        f"Took {time.monotonic() - started:.0f} s.",
    ]
    if args.write:
        SVG.write_text(svg(series))
    h.publish("tail", "\n".join(block), "tail_bench.py", SECTION, args.write, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
