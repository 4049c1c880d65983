"""toolgate against its peers on Envoy's two APIs, same machine, same load generators, runs
interleaved: Limitador on ``ShouldRateLimit`` (rate limit service), and OPA with its Envoy
plugin on ``Check`` (ext_authz) over the MCP JSON-RPC body. Run on purpose, never by the
tests; the peers come from ``bench/peers/install.sh`` (into target/peers/).

For each pair (``--pair``, repeatable; default both):

1. **Same answers first.** Both servers start on a small-limit configuration and answer the
   same requests; the bench stops (exit 1) unless every answer is the expected one on both:
   - rate limit: ``run_command`` for one grant 4 times against a limit of 3 (OK, OK, OK,
     OVER_LIMIT), another grant (OK). Limitador has the one limit the measured call meets
     (Limitador at its latest release, configured as its users would); toolgate's default
     deny of other tools has no equivalent there without a second limit, so it is not
     compared;
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
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import harness as h

PEERS = h.ROOT / "target" / "peers" / "bin"
HERE = h.BENCH / "peers"
SECTION = "## toolgate against Limitador and OPA"
DOMAIN = "toolgate"
TOOL = "run_command"
X = h.X
BIG = 1_000_000_000
# (aim on toolgate/peer, higher is better) per metric and pair.
AIMS = {
    "limitador": {"rps": (1.0, True), "cpu": (0.7, False), "p99": (1.0, False)},
    "opa": {"rps": (3.0, True), "cpu": (0.3, False), "p99": (0.5, False)},
}


# --- requests ------------------------------------------------------------------------------


def mcp_body(method: str, name: str | None = None, command: str | None = None) -> bytes:
    msg: dict = {"jsonrpc": "2.0", "id": 7, "method": method}
    if name is not None:
        msg["params"] = {"name": name, "arguments": {"command": command}}
    elif method != "tools/list":
        msg["params"] = {"protocolVersion": "2025-06-18", "capabilities": {}}
    return json.dumps(msg, separators=(",", ":")).encode()


def check_verdict(answer: bytes) -> str:
    from envoy.service.auth.v3 import external_auth_pb2

    r = external_auth_pb2.CheckResponse.FromString(answer)
    return "allow" if r.status.code == 0 else "deny"


# --- servers -------------------------------------------------------------------------------


def start_pair(pair: str, limit: int, workdir: Path) -> dict[str, h.Server]:
    out: dict[str, h.Server] = {}
    p, hp = h.free_port(), h.free_port()
    try:
        if pair == "limitador":
            probe, policy = h.rls_request("probe"), h.rls_policy(workdir, limit)
            cmd = h.serve_cmd(p, policy=policy)
            out["toolgate"] = h.start_grpc("toolgate", cmd, p, workdir, probe, h.RLS)
            p = h.free_port()
            cmd = [str(PEERS / "limitador-server"), "-b", "127.0.0.1", "-p", str(p), "-B"]
            cmd += ["127.0.0.1", "-P", str(hp), str(h.limitador_limits(workdir, limit)), "memory"]
            out["limitador"] = h.start_grpc(
                "limitador", cmd, p, workdir, probe, h.RLS, http_port=hp
            )
        else:
            probe = h.check_request(mcp_body("tools/list"))
            cmd = h.serve_cmd(p, policy=HERE / "policy_authz.json")
            out["toolgate"] = h.start_grpc("toolgate", cmd, p, workdir, probe, h.CHECK)
            p = h.free_port()
            cmd = [str(PEERS / "opa-envoy-plugin"), "run", "--server", "--addr", f"127.0.0.1:{hp}"]
            cmd += ["--diagnostic-addr", f"127.0.0.1:{h.free_port()}", "--log-level", "error"]
            cmd += ["--config-file", str(HERE / "opa_config.yaml")]
            cmd += ["--set", f"plugins.envoy_ext_authz_grpc.addr=127.0.0.1:{p}"]
            cmd += [str(HERE / "mcp_authz.rego")]
            out["opa"] = h.start_grpc("opa", cmd, p, workdir, probe, h.CHECK, http_port=hp)
    except BaseException:
        stop_all(out)
        raise
    return out


def stop_all(servers: dict[str, h.Server]) -> None:
    for s in servers.values():
        s.stop()


# --- same answers --------------------------------------------------------------------------


def same_answers(pair: str, workdir: Path) -> list[str]:
    """Ask both servers the same requests; raise unless both answer as expected."""
    servers = start_pair(pair, 3, workdir)
    try:
        if pair == "limitador":
            cases = [(f"{TOOL}, grant a, call {i}", h.rls_request("a")) for i in (1, 2, 3, 4)]
            cases += [(f"{TOOL}, grant b", h.rls_request("b"))]
            expected = ["OK", "OK", "OK", "OVER_LIMIT", "OK"]
            method, read = h.RLS, h.rls_code
        else:
            cases = [
                (f"tools/call run_command `{h.COMMAND}`", mcp_body("tools/call", TOOL, h.COMMAND)),
                ("tools/call run_command `rm -rf /`", mcp_body("tools/call", TOOL, "rm -rf /")),
                (
                    "tools/call transfer_funds (not in the policy)",
                    mcp_body("tools/call", "transfer_funds", "x"),
                ),
                ("tools/list", mcp_body("tools/list")),
                ("initialize", mcp_body("initialize")),
            ]
            cases = [(label, h.check_request(b)) for label, b in cases]
            expected = ["allow", "deny", "deny", "allow", "allow"]
            method, read = h.CHECK, check_verdict
        rows, bad = [], []
        for (label, req), want in zip(cases, expected, strict=True):
            got = {n: read(h.call(s.port, req, method)) for n, s in servers.items()}
            rows.append(f"{label}: " + ", ".join(f"{n} {v}" for n, v in got.items()))
            if set(got.values()) != {want}:
                bad.append(f"{label}: want {want}, got {got}")
        if bad:
            raise SystemExit(f"{pair}: the servers do not answer alike:\n  " + "\n  ".join(bad))
        return rows
    finally:
        stop_all(servers)


# --- timed runs ----------------------------------------------------------------------------


def counted(pair: str, s: h.Server, grant: str) -> int | None:
    """Calls the rate limit has counted for the grant (None: nothing counts, ext_authz)."""
    if pair != "limitador":
        return None
    if s.name == "toolgate":
        return h.counted(s.port, grant)
    url = f"http://127.0.0.1:{s.http_port}/counters/{DOMAIN}"
    for c in json.loads(urllib.request.urlopen(url, timeout=5).read()):
        if c.get("set_variables", {}).get("descriptors[0]['grant']") == grant:
            return int(c["limit"]["max_value"]) - int(c["remaining"])
    return 0


def saturated(pair, s: h.Server, method, body: Path, frame: int, grant, i, args) -> h.Run:
    run = h.Run(s.name, "saturated", i, args.c, args.m, duration=args.sat_seconds)
    before = counted(pair, s, grant)
    h.h2load(run, f"http://127.0.0.1:{s.port}{method}", body, body.parent, {"server": s}, args)
    if set(run.statuses) != {"200"} or run.failed:
        run.problems.append(f"statuses {run.statuses}, failed {run.failed}")
    # Every answer carries one message (a gRPC error has none): the bytes received, against
    # the size of the answer (an OK's size varies by a few bytes with the counters' values).
    calls = run.succeeded
    if not 0.9 * frame * calls <= run.data <= 1.1 * frame * (calls + args.c * args.m):
        run.problems.append(f"{run.data} response bytes for {calls} calls of ~{frame}")
    if before is not None:
        n = counted(pair, s, grant) - before
        if not calls <= n <= calls + args.c * args.m:
            run.problems.append(f"the limit counted {n}, h2load completed {calls}")
    return run


def offered(pair, s: h.Server, method, message: Path, prefix: str, rate: float, i, args) -> h.Run:
    run = h.Run(s.name, "offered", i)
    cmd = h.openloop_cmd(
        s.port, method, message, rate, args.offered_seconds, conns=args.conns, timeout="2s",
        warmup=200, expect_prefix=prefix,
    )  # fmt: skip
    r = json.loads(h.measure(run, cmd, {"server": s}, args))
    run.rps, lat = r["achieved_rps"], r["latency_us"]
    run.p50, run.p99, run.p999 = lat["p50"], lat["p99"], lat.get("p99.9", float("nan"))
    run.per_call(r["sent"] + r["warmup"])
    if r["bad_answers"] or sum(r["errors"].values()):
        run.problems.append(f"bad answers {r['bad_answers']}, errors {r['errors']}")
    return run


def show(pair: str, r: h.Run) -> None:
    print(
        f"{pair:9} {r.load:9} {r.name:9} run {r.index}: {r.rps:9,.0f} req/s  p50 "
        f"{h.fmt_us(r.p50):>8}  p99 {h.fmt_us(r.p99):>8}  cpu/call {r.server_cpu_us:6.1f} µs  "
        f"busy before {r.quiet_before:.2f}  other {r.other_cores:.2f}  steal "
        f"{r.steal_cores:.2f}  {'; '.join(r.problems) or 'ok'}",
        file=sys.stderr,
    )
    if r.problems:
        raise SystemExit(f"{pair}/{r.name}: run {r.index} failed its checks: {r.problems}")


def timed(pair: str, workdir: Path, args) -> list[h.Run]:
    if pair == "limitador":
        req, method, grant = h.rls_request(h.GRANT), h.RLS, h.GRANT
    else:
        req, method, grant = h.check_request(mcp_body("tools/call", TOOL, h.COMMAND)), h.CHECK, None
    body_file = workdir / f"{pair}.body"
    body_file.write_bytes(h.grpc_frame(req))
    msg_file = workdir / f"{pair}.msg"
    msg_file.write_bytes(req)
    servers = start_pair(pair, BIG, workdir)
    runs: list[h.Run] = []
    try:
        answers = {n: h.call(s.port, req, method) for n, s in servers.items()}
        order = ["toolgate", pair]
        h.warm(
            [f"http://127.0.0.1:{s.port}{method}" for s in servers.values()],
            body_file,
            args.warmup,
            args,
        )
        for i in range(1, args.runs + 1):
            for name in h.rotated(order, i):
                frame = 5 + len(answers[name])
                runs.append(
                    saturated(pair, servers[name], method, body_file, frame, grant, i, args)
                )
                show(pair, runs[-1])
        rate = args.load_fraction * min(h.med(runs, "rps", name=n) for n in order)
        for i in range(1, args.runs + 1):
            for name in h.rotated(order, i):
                prefix = answers[name][:2].hex()
                runs.append(offered(pair, servers[name], method, msg_file, prefix, rate, i, args))
                show(pair, runs[-1])
    finally:
        stop_all(servers)
    return runs


# --- report --------------------------------------------------------------------------------


def report(pair: str, runs: list[h.Run], checks: list[str]) -> tuple[list[str], dict]:
    label = {"limitador": "Limitador (`ShouldRateLimit`)", "opa": "OPA + Envoy plugin (`Check`)"}
    rate = h.med(runs, "rps", name="toolgate", load="offered")
    rows = [
        f"**{label[pair]}**",
        "",
        f"| metric | toolgate | {pair} | toolgate / {pair} (runs) | aim | |",
        "|---|---:|---:|---|---|---|",
    ]
    summary: dict = {}
    lines = [
        ("saturated req/s", "saturated", "rps", "rps"),
        ("saturated p50", "saturated", "p50", None),
        ("saturated p99", "saturated", "p99", None),
        ("CPU / call, saturated", "saturated", "server_cpu_us", "cpu"),
        (f"p50 at {rate:,.0f} req/s offered", "offered", "p50", None),
        (f"p99 at {rate:,.0f} req/s offered", "offered", "p99", "p99"),
        ("CPU / call at that rate", "offered", "server_cpu_us", None),
    ]
    for name, load, attr, aim_key in lines:
        a, b = (h.med(runs, attr, name=n, load=load) for n in ("toolgate", pair))
        rs = h.per_run(runs, attr, "toolgate", pair, load=load)
        ratio = statistics.median(rs) if rs else float("nan")
        if attr == "rps":
            cells = [f"{v:,.0f}" for v in (a, b)]
        else:
            cells = [f"{v:.1f} µs" if "cpu" in attr else h.fmt_us(v) for v in (a, b)]
        aim, verdict = "", ""
        if aim_key:
            target, higher = AIMS[pair][aim_key]
            aim = f"{'≥' if higher else '≤'} {target:g}{X}"
            verdict = h.verdict(ratio, target, higher)
            summary[aim_key] = {"toolgate": a, pair: b, "ratio": ratio, "met": "met" in verdict}
        rows.append(f"| {name} | {' | '.join(cells)} | {h.fmt_ratios(rs)} | {aim} | {verdict} |")
    rows += [
        "",
        "Same answers, checked first on both (limit 3 for the rate limit): "
        + "; ".join(checks)
        + ". Every timed run passed its checks.",
        "",
        h.busy_line(runs),
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
    h.build_openloop()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="peers-bench-"))
    versions = {
        "limitador": h.sh([str(PEERS / "limitador-server"), "--version"]).splitlines()[:1],
        "opa": [
            ln
            for ln in h.sh([str(PEERS / "opa-envoy-plugin"), "version"]).splitlines()
            if ln.startswith("Version")
        ][:1],
    }
    block = [
        h.written_by("peers_bench.py") + ". toolgate: "
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
            rows, out[pair] = report(pair, timed(pair, workdir, args), checks)
            block += ["", *rows]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    block += ["", f"Took {time.monotonic() - started:.0f} s."]
    h.publish("peers", "\n".join(block), "peers_bench.py", SECTION, args.write, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
