"""What Envoy's ext_authz adds per MCP call with the native sidecar, over loopback TCP and over
a Unix socket (``toolgate serve --listen unix:PATH``, Envoy's ``pipe`` address), against the
same Envoy without the filter. Run on purpose, never by the tests.

Four Envoys from the deployed listener and clusters (deploy/envoy/mcp-ext-authz.yaml, as
Envoy parses it), the ``/mcp`` route answering with a ``direct_response``: ``plain`` (no
ext_authz), ``authz-floor`` (the toolgate cluster on a constant-answer Check server on the
sidecar's stack, rust/server/examples/floor.rs, answering the sidecar's own answer: what any
ext_authz server costs here), ``authz-tcp`` (the toolgate cluster on 127.0.0.1:PORT) and
``authz-unix`` (the same cluster on a pipe); two sidecars (``toolgate serve``, default
threads, one per address). h2load over h2c, one in flight (``-c 1 -m 1``) and loaded
(``-c 4 -m 2``), the four configs taking turns with the order rotated each run, after the
machine is quiet; every run checked against Envoy's counters and the sidecar's limit
(``harness.envoy.verify``). Added = authz - plain, per run (the configs of a run ran back to
back), median over the runs. Aim: ≤ 0.2 ms added at p50.

    .venv/bin/python bench/envoy_unix_bench.py           # writes its block of RESULTS.md
    .venv/bin/python bench/envoy_unix_bench.py --runs 1 -n1 2000 -nl 4000 --print    # quick
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import harness as h
from harness import envoy as ev

SECTION = "## Envoy ext_authz with the native sidecar: TCP and Unix socket"
AIM_ADDED_P50_US = 200.0
X = h.X
CONFIGS = ["plain", "authz-floor", "authz-tcp", "authz-unix"]
SERVER_OF = {"authz-unix": "tg-unix", "authz-floor": "floor"}


def envoy_config(
    deployed: dict, name: str, listen: int, admin: int, tport: int, sock: str, fport: int
):
    port = {"authz-floor": fport, "authz-unix": sock}.get(name, tport)
    return ev.bench_config(
        deployed, authz=name != "plain", listen=listen, admin=admin, toolgate=port
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n1", "--n-single", type=int, default=5_000, help="one in flight, per run")
    p.add_argument("-nl", "--n-loaded", type=int, default=10_000, help="loaded, per run")
    p.add_argument("-c", type=int, default=4)
    p.add_argument("-m", type=int, default=2)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2000)
    p.add_argument("--quiet-wait", type=float, default=30.0)
    p.add_argument("--quiet", type=float, default=0.3)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument(
        "--sidecar-arg",
        action="append",
        default=[],
        help="an extra argument for both sidecars (repeatable), e.g. --sidecar-arg=--threads=1",
    )
    p.add_argument(
        "--envoy-arg",
        action="append",
        default=[],
        help="an extra argument for every Envoy (repeatable), e.g. --envoy-arg=--concurrency "
        "--envoy-arg=1",
    )
    p.add_argument("--no-build", action="store_true", help="don't (re)build the Rust floor")
    p.add_argument("--print", dest="write", action="store_false")
    args = p.parse_args()
    if not args.no_build:
        h.build_floor()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="envoy-unix-bench-"))
    body = workdir / "tools-call.json"
    body.write_bytes(ev.REQUEST_BODY)
    sock = f"unix:{workdir / 'toolgate.sock'}"
    servers: dict[str, h.Server] = {}
    runs: list[ev.Run] = []
    try:
        deployed = ev.deployed_config(ev.DEPLOYED, workdir)
        tport = h.free_port()
        for name, listen in (("tg-tcp", tport), ("tg-unix", sock)):
            cmd = h.serve_cmd(listen, *args.sidecar_arg)
            probe = h.decide_request(True, ev.GRANT, ev.SERVER_ID)
            servers[name] = h.start_grpc(name, cmd, listen, workdir, probe)
        # The floor: a constant-answer Check server on the sidecar's stack (tonic, same
        # threads), answering the sidecar's own answer to this call.
        from envoy.service.auth.v3.external_auth_pb2 import CheckResponse

        answer = workdir / "check-answer.bin"
        check = h.check_request(ev.REQUEST_BODY)
        answer.write_bytes(h.call(tport, check, h.CHECK))
        fport = h.free_port()
        cmd = [str(h.FLOOR_BIN), "--listen", f"127.0.0.1:{fport}", "--check-response"]
        servers["floor"] = h.start_grpc(
            "floor", [*cmd, str(answer), *args.sidecar_arg], fport, workdir
        )
        # Compared as messages: the floor encodes the metadata Struct's keys in its own order.
        floor_answer = CheckResponse.FromString(h.call(fport, check, h.CHECK))
        if floor_answer != CheckResponse.FromString(answer.read_bytes()):
            raise RuntimeError("the floor's Check answer differs from the sidecar's")
        for name in CONFIGS:
            port, admin = h.free_port(), h.free_port()
            path = workdir / f"{name}.json"
            path.write_text(
                json.dumps(envoy_config(deployed, name, port, admin, tport, sock, fport))
            )
            servers[name] = ev.start(name, path, admin, workdir, *args.envoy_arg, port=port)
        probes = [f"{n}: {ev.probe(servers[n], n != 'plain')}" for n in CONFIGS]
        probes += [f"authz-unix, `rm -rf /`: {ev.deny_probe(servers['authz-unix'])}"]
        urls = [f"http://127.0.0.1:{servers[n].port}/mcp" for n in CONFIGS]
        h.warm(urls, body, args.warmup, args, ev.H2LOAD_HEADERS)
        time.sleep(ev.FLUSH_WAIT)
        for load, c, m, n in (
            ("single", 1, 1, args.n_single),
            ("loaded", args.c, args.m, args.n_loaded),
        ):
            for i in range(1, args.runs + 1):
                for name in h.rotated(CONFIGS, i):
                    tg = servers[SERVER_OF.get(name, "tg-tcp")]
                    r = ev.run(
                        ev.Run(name, load, i, c, m, n), servers[name], tg, body, workdir, args
                    )
                    runs.append(r)
                    print(
                        f"{load:6} {name:10} run {i}: {r.rps:8,.0f} req/s  p50 "
                        f"{h.fmt_us(r.p50):>8}  p99 {h.fmt_us(r.p99):>8}  envoy "
                        f"{r.envoy_cpu_us:4.0f} µs  toolgate {r.toolgate_cpu_us:4.0f} µs  busy "
                        f"{r.quiet_before:.2f}  steal {r.steal_cores:.2f}  "
                        f"{'; '.join(r.problems) or 'ok'}",
                        file=sys.stderr,
                    )
                    if r.problems:
                        raise SystemExit(f"{name} run {i} failed its checks: {r.problems}")
    finally:
        for s in servers.values():
            s.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    def added(load, name, attr):
        return h.per_run(runs, attr, name, "plain", diff=True, load=load)

    def median(xs):
        return statistics.median(xs) if xs else float("nan")

    lines = [
        h.written_by("envoy_unix_bench.py") + "; one in "
        f"flight `-c 1 -m 1` x {args.n_single:,}, loaded `-c {args.c} -m {args.m}` x "
        f"{args.n_loaded:,} per run, {args.runs} runs, medians.",
        "",
        "| load | metric | plain | authz-floor | authz-tcp | authz-unix | added, floor | "
        "added, TCP | added, unix | unix / tcp |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    authz = ("authz-floor", "authz-tcp", "authz-unix")
    for load, label in (("single", "one in flight"), ("loaded", f"{args.c}x{args.m} streams")):
        for attr, metric in (
            ("p50", "p50"),
            ("p99", "p99"),
            ("rps", "req/s"),
            ("toolgate_cpu_us", "ext_authz server CPU / call"),
            ("envoy_cpu_us", "Envoy CPU / call"),
        ):
            cells = [h.med(runs, attr, load=load, name=n) for n in CONFIGS]
            if attr == "rps":
                shown, add = [f"{v:,.0f}" for v in cells], ["", "", ""]
            elif "cpu" in attr:
                shown, add = [f"{v:.0f} µs" for v in cells], ["", "", ""]
            else:
                shown = [h.fmt_us(v) for v in cells]
                add = [h.fmt_added(median(added(load, n, attr))) for n in authz]
            ratio = median(h.per_run(runs, attr, "authz-unix", "authz-tcp", load=load))
            lines.append(f"| {label} | {metric} | {' | '.join(shown + add)} | {ratio:.2f}{X} |")

    def each(name):
        return ", ".join(f"{x:+.0f}" for x in added("single", name, "p50"))

    floor, tcp, unix = (median(added("single", n, "p50")) for n in authz)
    lines += [
        "",
        f"Added at p50, one in flight (aim ≤ {AIM_ADDED_P50_US:.0f} µs): TCP "
        f"**+{tcp:.0f} µs** ({h.verdict(tcp, AIM_ADDED_P50_US, False)}; runs {each('authz-tcp')}), "
        f"unix socket **+{unix:.0f} µs** ({h.verdict(unix, AIM_ADDED_P50_US, False)}; runs "
        f"{each('authz-unix')}). The constant-answer floor on the same stack adds "
        f"**+{floor:.0f} µs** (runs {each('authz-floor')}): what any ext_authz server costs "
        "Envoy's call on this machine.",
        "",
        "Checks: " + "; ".join(probes) + ". Every run: all HTTP 200, Envoy's ext_authz and "
        "toolgate-cluster counters and the sidecar's limit count matched the calls.",
        "",
        h.busy_line(runs) + f" Took {time.monotonic() - started:.0f} s.",
    ]
    h.publish("envoy-unix", "\n".join(lines), "envoy_unix_bench.py", SECTION, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
