"""What Envoy's ext_authz adds per MCP call with the native sidecar, over loopback TCP and over
a Unix socket (``toolgate serve --listen unix:PATH``, Envoy's ``pipe`` address), against the
same Envoy without the filter. Run on purpose, never by the tests.

It reuses bench/envoy_bench.py's configs and checks: the deployed listener and clusters
(deploy/envoy/mcp-ext-authz.yaml, as Envoy parses it), the ``/mcp`` route answering with a
``direct_response``; four Envoys: ``plain`` (no ext_authz), ``authz-floor`` (the cluster
on a constant-answer Check server on the sidecar's stack, rust/server/examples/floor.rs,
answering the sidecar's own answer: what any ext_authz server costs here), ``authz-tcp``
(the toolgate cluster on 127.0.0.1:PORT) and ``authz-unix`` (the same cluster on a pipe), two
sidecars (``toolgate serve --transport native``, default threads, one per address). h2load
over h2c, one in flight (``-c 1 -m 1``) and loaded (``-c 4 -m 2``), the four configs taking
turns with the order rotated each run, after the machine is quiet; every run checked against
Envoy's counters and the sidecar's limit (envoy_bench.verify). Added = authz - plain, per run
(the configs of a run ran back to back), median over the runs. Aim: ≤ 0.2 ms added at p50.

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

import envoy_bench as eb
import grpc_bench as gb
import peers_bench as pb

BEGIN, END = "<!-- BEGIN envoy-unix -->", "<!-- END envoy-unix -->"
SECTION = "## Envoy ext_authz with the native sidecar: TCP and Unix socket"
AIM_ADDED_P50_US = 200.0
X = gb.X
MINUS = "\u2212"
CONFIGS = ["plain", "authz-floor", "authz-tcp", "authz-unix"]
SERVER_OF = {"authz-unix": "tg-unix", "authz-floor": "floor"}
FLOOR_BIN = gb.ROOT / "target" / "release" / "examples" / "floor"


def sidecar(name: str, listen: str, port: int | str, workdir: Path, extra: list[str]) -> gb.Server:
    cmd = [gb.toolgate_exe(), "serve", "--transport", "native", "--policy", str(eb.POLICY)]
    cmd += ["--metrics-listen", "off", "--listen", listen, "--drain", "0", *extra]
    return gb.start_server(name, cmd, port, workdir, eb.decide_request(dry_run=True))


def envoy_config(
    deployed: dict, name: str, listen: int, admin: int, tport: int, sock: str, fport: int
):
    port = fport if name == "authz-floor" else tport
    cfg = eb.bench_config(
        deployed, authz=name != "plain", listen=listen, admin=admin, toolgate=port
    )
    if name == "authz-unix":
        (tg,) = [c for c in cfg["static_resources"]["clusters"] if c["name"] == "toolgate"]
        (group,) = tg["load_assignment"]["endpoints"]
        (lb,) = group["lb_endpoints"]
        lb["endpoint"]["address"] = {"pipe": {"path": sock}}
    return cfg


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
    p.add_argument("--print", dest="write", action="store_false")
    args = p.parse_args()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="envoy-unix-bench-"))
    body = workdir / "tools-call.json"
    body.write_bytes(eb.REQUEST_BODY)
    sock = str(workdir / "toolgate.sock")
    deployed = eb.deployed_config(workdir)
    servers: dict[str, gb.Server] = {}
    runs: list[eb.Run] = []
    try:
        tport = gb.free_port()
        servers["tg-tcp"] = sidecar(
            "tg-tcp", f"127.0.0.1:{tport}", tport, workdir, args.sidecar_arg
        )
        servers["tg-unix"] = sidecar(
            "tg-unix", f"unix:{sock}", f"unix:{sock}", workdir, args.sidecar_arg
        )
        # The floor: a constant-answer Check server on the sidecar's stack (tonic, same
        # threads), answering the sidecar's own answer to this call.
        answer = workdir / "check-answer.bin"
        check = pb.check_request(eb.REQUEST_BODY)
        answer.write_bytes(gb.call_raw(tport, check, method=pb.CHECK))
        fport = gb.free_port()
        floor_cmd = [str(FLOOR_BIN), "--listen", f"127.0.0.1:{fport}", "--check-response"]
        floor_cmd += [str(answer), *args.sidecar_arg]
        servers["floor"] = gb.start_server(
            "floor", floor_cmd, fport, workdir, eb.decide_request(dry_run=True)
        )
        # Compared as messages: the floor encodes the metadata Struct's keys in its own order.
        from envoy.service.auth.v3.external_auth_pb2 import CheckResponse

        floor_answer = CheckResponse.FromString(gb.call_raw(fport, check, method=pb.CHECK))
        if floor_answer != CheckResponse.FromString(answer.read_bytes()):
            raise RuntimeError("the floor's Check answer differs from the sidecar's")
        for name in CONFIGS:
            port, admin = gb.free_port(), gb.free_port()
            path = workdir / f"{name}.json"
            cfg = envoy_config(deployed, name, port, admin, tport, sock, fport)
            path.write_text(json.dumps(cfg, indent=1))
            servers[name] = eb.start_envoy(name, path, admin, workdir, *args.envoy_arg, port=port)
        probes = [f"{n}: {eb.probe(servers[n], n != 'plain')}" for n in CONFIGS]
        probes += [f"authz-unix, `rm -rf /`: {eb.deny_probe(servers['authz-unix'])}"]
        for name in CONFIGS:
            url = f"http://127.0.0.1:{servers[name].port}/mcp"
            cmd = eb.h2load_cmd(url, body, args.c, args.m, args.warmup)
            eb.subprocess.run(cmd, capture_output=True, timeout=args.timeout, check=True)
        time.sleep(eb.FLUSH_WAIT)
        quiet = (args.quiet_wait, args.quiet)
        for load, c, m, n in (
            ("single", 1, 1, args.n_single),
            ("loaded", args.c, args.m, args.n_loaded),
        ):
            for i in range(1, args.runs + 1):
                for name in gb.rotated(CONFIGS, i):
                    tg = servers[SERVER_OF.get(name, "tg-tcp")]
                    r = eb.run_h2load(
                        servers[name], tg, None, body, eb.Run(load, name, i, n, c, m),
                        workdir, args.timeout, quiet,
                    )  # fmt: skip
                    runs.append(r)
                    print(
                        f"{load:6} {name:10} run {i}: {r.rps:8,.0f} req/s  p50 "
                        f"{gb.fmt_us(r.p50):>8}  p99 {gb.fmt_us(r.p99):>8}  envoy "
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

    def pick(load, name, i=None):
        return [r for r in runs if r.load == load and r.config == name and i in (None, r.index)]

    def med(load, name, attr):
        return statistics.median(getattr(r, attr) for r in pick(load, name))

    def added(load, name, attr):
        out = []
        for i in range(1, args.runs + 1):
            a, b = pick(load, name, i), pick(load, "plain", i)
            if a and b:
                out.append(getattr(a[0], attr) - getattr(b[0], attr))
        return out

    def paired(load, attr):  # unix / tcp per run
        out = []
        for i in range(1, args.runs + 1):
            a, b = pick(load, "authz-unix", i), pick(load, "authz-tcp", i)
            if a and b and getattr(b[0], attr):
                out.append(getattr(a[0], attr) / getattr(b[0], attr))
        return out

    lines = [
        gb.written_by("envoy_unix_bench.py") + "; one in "
        f"flight `-c 1 -m 1` x {args.n_single:,}, loaded `-c {args.c} -m {args.m}` x "
        f"{args.n_loaded:,} per run, {args.runs} runs, medians.",
        "",
        "| load | metric | plain | authz-floor | authz-tcp | authz-unix | added, floor | "
        "added, TCP | added, unix | unix / tcp |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    authz = ("authz-floor", "authz-tcp", "authz-unix")
    for load, label in (("single", "one in flight"), ("loaded", f"{args.c}x{args.m} streams")):
        for attr, metric in (("p50", "p50"), ("p99", "p99"), ("rps", "req/s")):
            cells = [med(load, n, attr) for n in CONFIGS]
            if attr == "rps":
                shown = [f"{v:,.0f}" for v in cells]
                add = ["", "", ""]
            else:
                shown = [gb.fmt_us(v) for v in cells]
                add = [f"+{gb.fmt_us(statistics.median(added(load, n, attr)))}" for n in authz]
            ratio = paired(load, attr)
            lines.append(
                f"| {label} | {metric} | {' | '.join(shown)} | {' | '.join(add)} | "
                f"{statistics.median(ratio):.2f}{X} |"
            )
        for attr, metric in (
            ("toolgate_cpu_us", "ext_authz server CPU / call"),
            ("envoy_cpu_us", "Envoy CPU / call"),
        ):
            cells = [med(load, n, attr) for n in CONFIGS]
            lines.append(
                f"| {label} | {metric} | {' | '.join(f'{v:.0f} µs' for v in cells)} | | | | "
                f"{statistics.median(paired(load, attr)):.2f}{X} |"
            )
    floor = statistics.median(added("single", "authz-floor", "p50"))
    tcp = statistics.median(added("single", "authz-tcp", "p50"))
    unix = statistics.median(added("single", "authz-unix", "p50"))
    lines += [
        "",
        f"Added at p50, one in flight (aim ≤ {AIM_ADDED_P50_US:.0f} µs): TCP "
        f"**+{tcp:.0f} µs** ({gb.verdict(tcp, AIM_ADDED_P50_US, False)}; runs "
        + ", ".join(f"{x:+.0f}" for x in added("single", "authz-tcp", "p50"))
        + f"), unix socket **+{unix:.0f} µs** ({gb.verdict(unix, AIM_ADDED_P50_US, False)}; "
        "runs " + ", ".join(f"{x:+.0f}" for x in added("single", "authz-unix", "p50")) + "). "
        f"The constant-answer floor on the same stack adds **+{floor:.0f} µs** (runs "
        + ", ".join(f"{x:+.0f}" for x in added("single", "authz-floor", "p50"))
        + "): what any ext_authz server costs Envoy's call on this machine.",
        "",
        "Checks: " + "; ".join(probes) + ". Every run: all HTTP 200, Envoy's ext_authz and "
        "toolgate-cluster counters and the sidecar's limit count matched the calls.",
        "",
        f"Machine: busy before each run {min(r.quiet_before for r in runs):.2f}\u2013"
        f"{max(r.quiet_before for r in runs):.2f} cores, steal up to "
        f"{max(r.steal_cores for r in runs):.2f}. Took {time.monotonic() - started:.0f} s.",
    ]
    gb.publish(
        "\n".join(lines), "envoy_unix_bench.py", "envoy-ext_authz-tcp-and-unix-socket",
        (BEGIN, END, SECTION), args.write,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
