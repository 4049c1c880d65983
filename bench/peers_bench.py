"""toolgate against its peers on Envoy's two APIs, same machine, same load generators, runs
interleaved: Limitador on ``ShouldRateLimit`` (rate limit service), and OPA with its Envoy
plugin on ``Check`` (ext_authz) over the MCP JSON-RPC body. Run on purpose, never by the
tests; the peers come from ``bench/peers/install.sh`` (into target/peers/).

For each pair (``--pair``, repeatable; default both):

1. **Same answers first.** Both servers start on a small-limit configuration and answer the
   same requests; the bench stops (exit 1) unless every answer is the expected one on both:
   - rate limit: ``run_command`` for one grant 4 times against a limit of 3 (OK, OK, OK,
     OVER_LIMIT), another grant (OK), a tool the policy does not list (OVER_LIMIT: toolgate's
     default deny; Limitador's limit of 0 on every other tool);
   - ext_authz: ``tools/call`` of ``run_command`` with ``ls -la`` (allowed) and ``rm -rf /``
     (denied), of a tool the policy does not list (denied), ``tools/list`` and ``initialize``
     (allowed); allowed is gRPC status 0, denied anything else.
2. **Timed**, each server restarted on the timing configuration (the limit 1e9 a day, so it
   counts every call and never refuses; the ext_authz policy as above), the same request
   bytes to both:
   - saturated: h2load ``-t 1 -c 16 -m 8`` for ``--sat-seconds`` (time-bounded), the two
     taking turns, the order swapped each run;
   - same offered load: the open-loop generator (``bench/openloop/openloop.c``) at one fixed
     rate for both, ``--load-fraction`` of the slower one's saturated rate: p50/p99 from each
     request's intended send time; every answer checked (``-expect-prefix``).
   Server CPU per call: utime + stime of the server process (all threads) from /proc.
   Checks per run: h2load's answers all HTTP 200, the gRPC response bytes received match the
   answer's size times the calls (a gRPC error carries no message), and for rate limiting the
   limit's count (toolgate: a dry-run Decide; Limitador: its HTTP API's counter) rose by as
   many calls as were answered.
3. Markdown to stdout, and the block between ``<!-- BEGIN peers -->`` and
   ``<!-- END peers -->`` of bench/RESULTS.md (not with ``--print``); medians to
   target/bench-peers.json.

    bench/peers/install.sh                              # once: Limitador and OPA into target/peers/
    .venv/bin/python bench/peers_bench.py               # both pairs (~6 min)
    .venv/bin/python bench/peers_bench.py --pair opa --runs 1 --sat-seconds 3 --print   # quick
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import grpc_bench as gb
import openloop_bench as ol

ROOT = gb.ROOT
PEERS = ROOT / "target" / "peers" / "bin"
HERE = ROOT / "bench" / "peers"
RESULTS = gb.RESULTS
JSON_OUT = ROOT / "target" / "bench-peers.json"
BEGIN, END = "<!-- BEGIN peers -->", "<!-- END peers -->"
SECTION = "## toolgate against Limitador and OPA"
RLS = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
CHECK = "/envoy.service.auth.v3.Authorization/Check"
DOMAIN = "toolgate"
TOOL = "run_command"
X = gb.X
DAY = 86_400
BIG = 1_000_000_000
# (aim on toolgate/peer, higher is better) per metric and pair.
AIMS = {
    "limitador": {"rps": (1.0, True), "cpu": (0.7, False), "p99": (1.0, False)},
    "opa": {"rps": (3.0, True), "cpu": (0.3, False), "p99": (0.5, False)},
}


# --- requests ------------------------------------------------------------------------------


def rls_request(grant: str, tool: str = TOOL) -> bytes:
    from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
    from envoy.service.ratelimit.v3 import rls_pb2

    entry = ratelimit_pb2.RateLimitDescriptor.Entry
    return rls_pb2.RateLimitRequest(
        domain=DOMAIN,
        descriptors=[
            ratelimit_pb2.RateLimitDescriptor(
                entries=[entry(key="tool", value=tool), entry(key="grant", value=grant)]
            )
        ],
        hits_addend=1,
    ).SerializeToString()


def rls_code(answer: bytes) -> str:
    from envoy.service.ratelimit.v3 import rls_pb2

    r = rls_pb2.RateLimitResponse.FromString(answer)
    return rls_pb2.RateLimitResponse.Code.Name(r.overall_code)


def mcp_body(method: str, name: str | None = None, command: str | None = None) -> bytes:
    msg: dict = {"jsonrpc": "2.0", "id": 7, "method": method}
    if name is not None:
        msg["params"] = {"name": name, "arguments": {"command": command}}
    elif method != "tools/list":
        msg["params"] = {"protocolVersion": "2025-06-18", "capabilities": {}}
    return json.dumps(msg, separators=(",", ":")).encode()


def check_request(body: bytes) -> bytes:
    """A CheckRequest as Envoy sends one with the deployed filter (``pack_as_bytes``)."""
    from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2

    ctx = attribute_context_pb2.AttributeContext
    headers = {
        ":authority": "mcp.local",
        ":method": "POST",
        ":path": "/mcp",
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "authorization": "Bearer bench-grant",
        "content-length": str(len(body)),
    }
    http = ctx.HttpRequest(
        method="POST", path="/mcp", host="mcp.local", headers=headers, raw_body=body
    )
    return external_auth_pb2.CheckRequest(
        attributes=ctx(request=ctx.Request(http=http))
    ).SerializeToString()


def check_verdict(answer: bytes) -> str:
    from envoy.service.auth.v3 import external_auth_pb2

    r = external_auth_pb2.CheckResponse.FromString(answer)
    return "allow" if r.status.code == 0 else "deny"


def call(target: str, method: str, payload: bytes, timeout: float = 2.0) -> bytes:
    with grpc.insecure_channel(target) as channel:
        return channel.unary_unary(method)(payload, timeout=timeout)


# --- servers -------------------------------------------------------------------------------


@dataclass
class Srv:
    name: str  # toolgate | limitador | opa
    server: gb.Server
    http_port: int | None = None  # Limitador's HTTP API


def start(
    name: str, cmd: list[str], port: int, method: str, probe: bytes, workdir: Path, **kw
) -> Srv:
    log = workdir / f"{name}-{port}.log"
    proc = subprocess.Popen(
        cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT
    )
    server = gb.Server(name, port, proc, log)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited ({proc.returncode}):\n{log.read_text()}")
        try:
            call(f"127.0.0.1:{port}", method, probe, timeout=1.0)
            return Srv(name, server, **kw)
        except grpc.RpcError as err:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"{name} did not answer on :{port}:\n{log.read_text()}") from err
            time.sleep(0.2)


def toolgate_cmd(policy: Path, port: int) -> list[str]:
    return [
        gb.toolgate_exe(),
        "serve",
        "--policy",
        str(policy),
        "--metrics-listen",
        "off",
        "--listen",
        f"127.0.0.1:{port}",
        "--drain",
        "0",
    ]


def rls_policy(workdir: Path, limit: int) -> Path:
    path = workdir / f"policy-rls-{limit}.json"
    path.write_text(
        json.dumps(
            {
                "version": "1",
                "default": "deny",
                "tools": {
                    TOOL: {
                        "limits": [
                            {
                                "counter": "run_command_rate",
                                "window": "day",
                                "max": limit,
                                "scope": "grant",
                            }
                        ]
                    }
                },
            }
        )
    )
    return path


def limitador_limits(workdir: Path, limit: int) -> Path:
    """The same limit for Limitador: per grant, a day, on run_command; every other tool a
    limit of 0 (toolgate's default deny answers OVER_LIMIT)."""
    path = workdir / f"limits-{limit}.yaml"
    path.write_text(
        f"""---
- namespace: {DOMAIN}
  name: run_command_rate
  max_value: {limit}
  seconds: {DAY}
  conditions:
    - "descriptors[0]['tool'] == '{TOOL}'"
  variables:
    - "descriptors[0]['grant']"
- namespace: {DOMAIN}
  name: default_deny
  max_value: 0
  seconds: {DAY}
  conditions:
    - "descriptors[0]['tool'] != '{TOOL}'"
  variables: []
"""
    )
    return path


def start_pair(pair: str, limit: int, workdir: Path) -> dict[str, Srv]:
    out: dict[str, Srv] = {}
    p = gb.free_port()
    if pair == "limitador":
        probe = rls_request("probe")
        policy = rls_policy(workdir, limit)
        out["toolgate"] = start("toolgate", toolgate_cmd(policy, p), p, RLS, probe, workdir)
        p, hp = gb.free_port(), gb.free_port()
        cmd = [str(PEERS / "limitador-server"), "-b", "127.0.0.1", "-p", str(p)]
        cmd += ["-B", "127.0.0.1", "-P", str(hp), str(limitador_limits(workdir, limit)), "memory"]
        out["limitador"] = start("limitador", cmd, p, RLS, probe, workdir, http_port=hp)
    else:
        probe = check_request(mcp_body("tools/list"))
        policy = HERE / "policy_authz.json"
        out["toolgate"] = start("toolgate", toolgate_cmd(policy, p), p, CHECK, probe, workdir)
        p, hp = gb.free_port(), gb.free_port()
        cmd = [str(PEERS / "opa-envoy-plugin"), "run", "--server", "--addr", f"127.0.0.1:{hp}"]
        cmd += ["--diagnostic-addr", f"127.0.0.1:{gb.free_port()}", "--log-level", "error"]
        cmd += ["--config-file", str(HERE / "opa_config.yaml")]
        cmd += ["--set", f"plugins.envoy_ext_authz_grpc.addr=127.0.0.1:{p}"]
        cmd += [str(HERE / "mcp_authz.rego")]
        out["opa"] = start("opa", cmd, p, CHECK, probe, workdir, http_port=hp)
    return out


def stop_all(servers: dict[str, Srv]) -> None:
    for s in servers.values():
        s.server.stop()


# --- same answers --------------------------------------------------------------------------


def same_answers(pair: str, workdir: Path) -> list[str]:
    """Ask both servers the same requests; raise unless both answer as expected."""
    servers = start_pair(pair, 3, workdir)
    try:
        if pair == "limitador":
            cases = [(f"{TOOL}, grant a, call {i}", rls_request("a")) for i in (1, 2, 3, 4)]
            cases += [(f"{TOOL}, grant b", rls_request("b"))]
            cases += [("delete_everything (not in the policy)", rls_request("a", "delete_all"))]
            expected = ["OK", "OK", "OK", "OVER_LIMIT", "OK", "OVER_LIMIT"]
            method, read = RLS, rls_code
        else:
            cases = [
                (
                    "tools/call run_command `ls -la /var/log/nginx`",
                    mcp_body("tools/call", TOOL, "ls -la /var/log/nginx"),
                ),
                ("tools/call run_command `rm -rf /`", mcp_body("tools/call", TOOL, "rm -rf /")),
                (
                    "tools/call transfer_funds (not in the policy)",
                    mcp_body("tools/call", "transfer_funds", "x"),
                ),
                ("tools/list", mcp_body("tools/list")),
                ("initialize", mcp_body("initialize")),
            ]
            cases = [(label, check_request(b)) for label, b in cases]
            expected = ["allow", "deny", "deny", "allow", "allow"]
            method, read = CHECK, check_verdict
        rows, bad = [], []
        for (label, req), want in zip(cases, expected, strict=True):
            got = {
                n: read(call(f"127.0.0.1:{s.server.port}", method, req)) for n, s in servers.items()
            }
            rows.append(f"{label}: " + ", ".join(f"{n} {v}" for n, v in got.items()))
            if set(got.values()) != {want}:
                bad.append(f"{label}: want {want}, got {got}")
        if bad:
            raise SystemExit(f"{pair}: the servers do not answer alike:\n  " + "\n  ".join(bad))
        return rows
    finally:
        stop_all(servers)


# --- timed runs ----------------------------------------------------------------------------


@dataclass
class Run:
    pair: str
    server: str
    load: str  # saturated | offered
    index: int
    rps: float = 0.0
    p50: float = 0.0
    p99: float = 0.0
    p999: float = 0.0
    cpu_us: float = 0.0
    calls: int = 0
    busy_before: float = 0.0
    other_cores: float = 0.0
    steal_cores: float = 0.0
    gen_cores: float = 0.0
    problems: list = field(default_factory=list)


def counted(pair: str, s: Srv, grant: str) -> int | None:
    """Calls the rate limit has counted for the grant (None: nothing counts, ext_authz)."""
    if pair != "limitador":
        return None
    if s.name == "toolgate":
        from toolgate.v1 import decider_pb2 as pb

        req = pb.DecideRequest(tool=TOOL, subject=pb.Subject(grant=grant), dry_run=True)
        r = pb.DecideResponse.FromString(
            call(
                f"127.0.0.1:{s.server.port}", "/toolgate.v1.Decider/Decide", req.SerializeToString()
            )
        )
        return int(r.limits[0].max - r.limits[0].remaining) - 1
    url = f"http://127.0.0.1:{s.http_port}/counters/{DOMAIN}"
    for c in json.loads(urllib.request.urlopen(url, timeout=5).read()):
        if c.get("set_variables", {}).get("descriptors[0]['grant']") == grant:
            return int(c["limit"]["max_value"]) - int(c["remaining"])
    return 0


def data_bytes(out: str) -> int:
    m = re.search(r"\((\d+)\) data", out)
    return int(m.group(1)) if m else -1


def saturated(pair, s: Srv, method, body: Path, frame: int, grant, i, args) -> Run:
    run = Run(pair, s.name, "saturated", i)
    url = f"http://127.0.0.1:{s.server.port}{method}"
    log = body.parent / f"sat-{pair}-{s.name}-{i}.log"
    cmd = gb.h2load_cmd(url, body, args.c, args.m, duration=args.sat_seconds)
    cmd += ["--log-file", str(log)]
    run.busy_before = gb.wait_quiet(args.quiet_wait, args.quiet)
    before = counted(pair, s, grant)
    b0, st0 = gb.cpu_ticks()
    c0 = s.server.cpu_seconds()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = s.server.cpu_seconds() - c0
    b1, st1 = gb.cpu_ticks()
    h2 = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"h2load failed: {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    summary = gb.parse_summary(proc.stdout)
    durations, statuses = gb.read_log(log)
    log.unlink()
    run.calls = len(durations)
    run.rps = summary["rps"]
    run.p50, run.p99, run.p999 = (gb.percentile(durations, q) for q in (0.5, 0.99, 0.999))
    run.cpu_us = cpu / max(run.calls, 1) * 1e6
    run.steal_cores = (st1 - st0) / gb.CLK_TCK / wall
    run.gen_cores = h2 / wall
    run.other_cores = max(0.0, ((b1 - b0) / gb.CLK_TCK - cpu - h2) / wall)
    if set(statuses) != {"200"} or summary.get("failed"):
        run.problems.append(f"statuses {dict(statuses)}, failed {summary.get('failed')}")
    # Every answer carries one message (a gRPC error has none): the bytes received, against
    # the size of the answer (an OK's size varies by a few bytes with the counters' values).
    got = data_bytes(proc.stdout)
    if not 0.9 * frame * run.calls <= got <= 1.1 * frame * (run.calls + args.c * args.m):
        run.problems.append(f"{got} response bytes for {run.calls} calls of ~{frame}")
    if before is not None:
        n = counted(pair, s, grant) - before
        if not run.calls <= n <= run.calls + args.c * args.m:
            run.problems.append(f"the limit counted {n}, h2load completed {run.calls}")
    return run


def offered(pair, s: Srv, method, body: Path, prefix: str, rate: float, i, args) -> Run:
    run = Run(pair, s.name, "offered", i)
    cmd = [str(ol.GEN), "-target", f"127.0.0.1:{s.server.port}", "-method", method]
    cmd += ["-body", str(body), "-rate", f"{rate:.1f}", "-duration", f"{args.offered_seconds:g}"]
    cmd += ["-conns", str(args.conns), "-timeout", "2s", "-warmup", "200"]
    cmd += ["-expect-prefix", prefix]
    run.busy_before = gb.wait_quiet(args.quiet_wait, args.quiet)
    b0, st0 = gb.cpu_ticks()
    c0 = s.server.cpu_seconds()
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.offered_seconds + 60)
    wall = time.monotonic() - t0
    cpu = s.server.cpu_seconds() - c0
    b1, st1 = gb.cpu_ticks()
    if proc.returncode != 0:
        raise RuntimeError(f"openloop failed: {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    r = json.loads(proc.stdout)
    lat = r["latency_us"]
    run.calls = r["sent"] + r["warmup"]
    run.rps = r["achieved_rps"]
    run.p50, run.p99, run.p999 = lat["p50"], lat["p99"], lat.get("p99.9", float("nan"))
    run.cpu_us = cpu / max(run.calls, 1) * 1e6
    run.gen_cores = r["cpu_s"] / max(r["wall_s"], 1e-9)
    run.steal_cores = (st1 - st0) / gb.CLK_TCK / wall
    run.other_cores = max(0.0, ((b1 - b0) / gb.CLK_TCK - cpu - r["cpu_s"]) / wall)
    if r["bad_answers"] or sum(r["errors"].values()):
        run.problems.append(f"bad answers {r['bad_answers']}, errors {r['errors']}")
    return run


def show(r: Run) -> None:
    print(
        f"{r.pair:9} {r.load:9} {r.server:9} run {r.index}: {r.rps:9,.0f} req/s  p50 "
        f"{gb.fmt_us(r.p50):>8}  p99 {gb.fmt_us(r.p99):>8}  cpu/call {r.cpu_us:6.1f} µs  "
        f"busy before {r.busy_before:.2f}  other {r.other_cores:.2f}  steal "
        f"{r.steal_cores:.2f}  {'; '.join(r.problems) or 'ok'}",
        file=sys.stderr,
    )
    if r.problems:
        raise SystemExit(f"{r.pair}/{r.server}: run {r.index} failed its checks: {r.problems}")


def timed(pair: str, workdir: Path, args) -> list[Run]:
    peer = pair
    if pair == "limitador":
        req, method, grant = rls_request("bench-grant"), RLS, "bench-grant"
    else:
        body = mcp_body("tools/call", TOOL, "ls -la /var/log/nginx")
        req, method, grant = check_request(body), CHECK, None
    body_file = workdir / f"{pair}.body"
    body_file.write_bytes(gb.grpc_frame(req))
    msg_file = workdir / f"{pair}.msg"
    msg_file.write_bytes(req)
    servers = start_pair(pair, BIG, workdir)
    runs: list[Run] = []
    try:
        answers = {n: call(f"127.0.0.1:{s.server.port}", method, req) for n, s in servers.items()}
        frames = {n: 5 + len(a) for n, a in answers.items()}
        prefixes = {n: a[:2].hex() for n, a in answers.items()}
        order = ["toolgate", peer]
        for s in servers.values():  # warm-up
            url = f"http://127.0.0.1:{s.server.port}{method}"
            subprocess.run(
                gb.h2load_cmd(url, body_file, 4, 4, n=args.warmup),
                capture_output=True,
                timeout=args.timeout,
                check=True,
            )
        for i in range(1, args.runs + 1):
            for name in gb.rotated(order, i):
                r = saturated(pair, servers[name], method, body_file, frames[name], grant, i, args)
                show(r)
                runs.append(r)
        slower = min(statistics.median(r.rps for r in runs if r.server == n) for n in order)
        rate = args.load_fraction * slower
        for i in range(1, args.runs + 1):
            for name in gb.rotated(order, i):
                r = offered(pair, servers[name], method, msg_file, prefixes[name], rate, i, args)
                show(r)
                runs.append(r)
    finally:
        stop_all(servers)
    return runs


# --- report --------------------------------------------------------------------------------


def med(runs, server, load, attr) -> float:
    xs = [getattr(r, attr) for r in runs if r.server == server and r.load == load]
    return statistics.median(xs) if xs else float("nan")


def ratios(runs, peer, load, attr) -> list[float]:
    out = []
    for i in sorted({r.index for r in runs}):
        a = [r for r in runs if (r.server, r.load, r.index) == ("toolgate", load, i)]
        b = [r for r in runs if (r.server, r.load, r.index) == (peer, load, i)]
        if a and b and getattr(b[0], attr):
            out.append(getattr(a[0], attr) / getattr(b[0], attr))
    return out


def report(pair: str, runs: list[Run], checks: list[str], args) -> tuple[list[str], dict]:
    peer = pair
    label = {"limitador": "Limitador (`ShouldRateLimit`)", "opa": "OPA + Envoy plugin (`Check`)"}
    rate = med(runs, "toolgate", "offered", "rps")
    rows = [
        f"**{label[pair]}**",
        "",
        "| metric | toolgate | " + peer + " | toolgate / " + peer + " (runs) | aim | |",
        "|---|---:|---:|---|---|---|",
    ]
    summary: dict = {}
    lines = [
        ("saturated req/s", "saturated", "rps", "rps"),
        ("saturated p50", "saturated", "p50", None),
        ("saturated p99", "saturated", "p99", None),
        ("CPU / call, saturated", "saturated", "cpu_us", "cpu"),
        (f"p50 at {rate:,.0f} req/s offered", "offered", "p50", None),
        (f"p99 at {rate:,.0f} req/s offered", "offered", "p99", "p99"),
        ("CPU / call at that rate", "offered", "cpu_us", None),
    ]
    for name, load, attr, aim_key in lines:
        a, b = med(runs, "toolgate", load, attr), med(runs, peer, load, attr)
        rs = ratios(runs, peer, load, attr)
        ratio = statistics.median(rs) if rs else float("nan")
        fmt = (
            (lambda v: f"{v:,.0f}")
            if attr == "rps"
            else (lambda v: f"{v:.1f} µs")
            if attr == "cpu_us"
            else gb.fmt_us
        )
        aim, verdict = "", ""
        if aim_key:
            target, higher = AIMS[pair][aim_key]
            aim = f"{'≥' if higher else '≤'} {target:g}{X}"
            verdict = gb.verdict(ratio, target, higher)
            summary[aim_key] = {
                "toolgate": a,
                peer: b,
                "ratio": ratio,
                "aim": aim,
                "met": "met" in verdict,
            }
        rows.append(
            f"| {name} | {fmt(a)} | {fmt(b)} | **{ratio:.2f}{X}** "
            f"({', '.join(f'{x:.2f}' for x in rs)}) | {aim} | {verdict} |"
        )
    busy = [r.busy_before for r in runs]
    other = [r.other_cores for r in runs]
    steal = [r.steal_cores for r in runs]
    rows += [
        "",
        "Same answers, checked first on both (limit 3 for the rate limit): "
        + "; ".join(checks)
        + ". Every timed run passed its checks.",
        "",
        f"Machine: busy before each run {min(busy):.2f}\u2013{max(busy):.2f} cores (1 s sample), "
        f"other processes during runs up to {max(other):.2f} cores, steal up to "
        f"{max(steal):.2f}.",
    ]
    return rows, summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pair", action="append", choices=["limitador", "opa"])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--sat-seconds", type=float, default=5.0)
    p.add_argument("-c", type=int, default=16)
    p.add_argument("-m", type=int, default=8)
    p.add_argument("--offered-seconds", type=float, default=5.0)
    p.add_argument(
        "--load-fraction",
        type=float,
        default=0.5,
        help="offered load: this fraction of the slower server's saturated rate (0.5)",
    )
    p.add_argument("--conns", type=int, default=4, help="open-loop connections (4)")
    p.add_argument("--warmup", type=int, default=3000)
    p.add_argument("--quiet-wait", type=float, default=30.0)
    p.add_argument("--quiet", type=float, default=0.3)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--print", dest="write", action="store_false")
    args = p.parse_args()
    pairs = args.pair or ["limitador", "opa"]
    need = {"limitador": "limitador-server", "opa": "opa-envoy-plugin"}
    for pair in pairs:
        if not (PEERS / need[pair]).exists():
            raise SystemExit(f"{PEERS / need[pair]} missing: run bench/peers/install.sh")
    ol.build_generator()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="peers-bench-"))
    versions = {
        "limitador": gb.sh([str(PEERS / "limitador-server"), "--version"]).splitlines()[:1],
        "opa": [
            ln
            for ln in gb.sh([str(PEERS / "opa-envoy-plugin"), "version"]).splitlines()
            if ln.startswith("Version")
        ][:1],
    }
    block = [
        gb.written_by("peers_bench.py") + ". toolgate: "
        "`toolgate serve` (2 threads, the default here). Peers: "
        + "; ".join(f"{k} {' '.join(v)}" for k, v in versions.items() if k in pairs)
        + f". Saturated: h2load `-t 1 -c {args.c} -m {args.m}`, {args.sat_seconds:g} s; "
        f"offered: open loop, {args.conns} connections, {args.offered_seconds:g} s at "
        f"{args.load_fraction:g}{X} the slower server's saturated rate; {args.runs} runs each, "
        "the two servers taking turns; medians, ratios are medians of per-run ratios.",
    ]
    out: dict = {"when": time.time()}
    try:
        for pair in pairs:
            checks = same_answers(pair, workdir)
            print(f"{pair}: same answers: {checks}", file=sys.stderr)
            runs = timed(pair, workdir, args)
            rows, summary = report(pair, runs, checks, args)
            block += ["", *rows]
            out[pair] = summary
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    block += ["", f"Took {time.monotonic() - started:.0f} s."]
    gb.publish(
        "\n".join(block), "peers_bench.py", "peers-limitador-and-opa", (BEGIN, END, SECTION),
        args.write, JSON_OUT, out,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
