"""What Envoy's ext_proc adds per MCP exchange beside ext_authz alone: a ``tools/call`` (its
outcome followed, so a failed call gives its limits back) and a ``tools/list`` of 100 tools
(filtered for the caller). Run on purpose, never by the tests.

Five Envoys, each built from a deployed config as Envoy parses it (``/config_dump``), the
filters and their settings exactly as deployed, only ports, the server id and the upstream
swapped:

- ``plain``: deploy/envoy/mcp-ext-authz.yaml without the ext_authz filter;
- ``authz``: deploy/envoy/mcp-ext-authz.yaml (ext_authz alone);
- ``authz+proc``: deploy/envoy/mcp-ext-authz-ext-proc.yaml (ext_authz, then ext_proc on the
  routes toolgate's Check picks: ``list`` waits for toolgate, STREAMED; ``tools-call``
  in observability mode, Envoy does not wait);
- ``authz+proc-sync``: the same with ``observability_mode`` off on ``toolgate.outcomes``: what
  following a call would cost if Envoy waited for toolgate (tools/call only);
- ``authz+proc-floor``: ``authz+proc`` with its ext_proc streams sent to
  rust/server/examples/floor.rs, which does nothing with them, but for answering a list with
  toolgate's filtered one, unread (``--list-answer``): the same messages and bytes on the
  wire as toolgate's, without the reading.

Every route goes to the deployed ``mcp`` cluster (HTTP/1.1), served by one more Envoy
(``--concurrency 1``) answering with constants picked by the request header
``x-bench-answer``: ``call`` a JSON-RPC result, ``list`` a tools/list of 100 tools of which the
policy lets the caller see 66 (``delete_*`` hidden, ``create_*`` denied by default). A separate
Envoy, not a ``direct_response`` on the MCP route, so the route is the deployed proxied one
and every config pays the same upstream hop (Envoy does run ext_proc on a ``direct_response``
too: a probe shows it). One sidecar, ``toolgate serve`` with bench/policy_grpc.json plus
``hide`` and two allowed globs, ``--metrics-listen`` on (read between runs only). h2load over
h2c, one in flight (``-c 1 -m 1``) and loaded (``-c 4 -m 2``), the configs taking turns with
the order rotated each run, after the machine is quiet and no request is left open to the
sidecar (ext_proc streams of the run before). Every run checked: all HTTP 200, the response
bytes (every answer the right one, filtered through ``authz+proc``), Envoy's ext_authz,
ext_proc and cluster counters (circuit breakers included), the sidecar's limit count
(tools/call) and its tool-list and release counters.
Added = config - baseline per run (the configs of a run ran back to back), median over the
runs. Aim: ext_proc adds ≤ 0.1 ms at p50 to a tools/call over ext_authz alone.

    .venv/bin/python bench/ext_proc_bench.py          # writes its block of RESULTS.md
    .venv/bin/python bench/ext_proc_bench.py --runs 1 -n1 500 -nl 1000 --print   # quick

``--before OLD`` measures a change to the list exchange instead: OLD is another checkout with
its own .venv (its ``toolgate`` and its deploy/envoy/mcp-ext-authz-ext-proc.yaml), and two
``authz+proc`` stacks, OLD's and this tree's, take turns for ``--runs`` rounds of ``-n1``
lists one in flight; printed: each round, and the medians of the per-round differences.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import harness as h
from harness import envoy as ev
from prometheus_client.parser import text_string_to_metric_families

SECTION = "## ext_proc: filtering tool lists and following calls"
DEPLOYED = {
    "authz": ev.DEPLOYED,
    "proc": h.ROOT / "deploy" / "envoy" / "mcp-ext-authz-ext-proc.yaml",
}
AIM_ADDED_P50_US = 100.0
X, MINUS = h.X, h.MINUS
CONFIGS = ["plain", "authz", "authz+proc", "authz+proc-sync", "authz+proc-floor"]
#: Which configs each exchange runs through: the -sync variant differs on tools/call answers
#: only.
EXCHANGES = {"call": CONFIGS, "list": [*CONFIGS[:3], "authz+proc-floor"]}
#: The configs whose ext_proc is toolgate's (the floor's reads nothing).
FILTERING = ("authz+proc", "authz+proc-sync")
#: The configs whose agent gets the filtered list: toolgate's, and the floor's copy of it.
LISTS_FILTERED = (*FILTERING, "authz+proc-floor")
LOADS = (("single", "one in flight"), ("loaded", "loaded"))
ANSWER_HEADER = "x-bench-answer"  # the upstream's route: which constant it answers
#: After the last answer, how long the counters may take to reach what the run must show: an
#: observability-mode ext_proc stream that the server does not end is closed by Envoy only
#: ``deferred_close_timeout`` (5 s by default) after its exchange.
SETTLE = 10.0

# --- the MCP exchange ------------------------------------------------------------------------

CALL_REQUEST = ev.REQUEST_BODY  # tools/call of run_command, as in the other Envoy benches
CALL_ANSWER = ev.RESULT_BODY.encode()
#: A string id: toolgate sends the list on under a string id of its own, which the upstream
#: echoes (see ``upstream_config``).
LIST_ID = "bench-1"
LIST_REQUEST = json.dumps(
    {"jsonrpc": "2.0", "id": LIST_ID, "method": "tools/list"}, separators=(",", ":")
).encode()
#: (verb, how many, whether the bench policy lets the caller see them)
FAMILIES = (
    ("describe", 35, True),
    ("list", 30, True),
    ("delete", 20, False),
    ("create", 14, False),
)
NOUNS = ("instance", "volume", "snapshot", "bucket", "queue", "table", "image")


def tool(name: str, description: str, properties: dict[str, str]) -> dict:
    return {
        "name": name,
        "description": description,
        "inputSchema": {
            "type": "object",
            "properties": {k: {"type": "string", "description": v} for k, v in properties.items()},
            "required": list(properties)[:1],
        },
    }


def catalogue() -> tuple[list[dict], list[str]]:
    """The upstream's 100 tools, families interleaved, and the names the caller may see."""
    tools = [
        tool("run_command", "Run a shell command on the build host.", {"command": "The command."})
    ]
    for i in range(max(n for _, n, _ in FAMILIES)):
        for verb, count, _ in FAMILIES:
            if i < count:
                noun = NOUNS[i % len(NOUNS)]
                tools.append(
                    tool(
                        f"{verb}_{noun}_{i:02}",
                        f"{verb.capitalize()} one {noun} of the current project (set {i}).",
                        {"id": f"The {noun}'s id.", "region": "Where it lives."},
                    )
                )
    visible = {verb for verb, _, shown in FAMILIES if shown}
    shown = [
        t["name"] for t in tools if t["name"] == "run_command" or t["name"].split("_")[0] in visible
    ]
    return tools, shown


TOOLS, VISIBLE = catalogue()
LIST_ANSWER = json.dumps(
    {"jsonrpc": "2.0", "id": LIST_ID, "result": {"tools": TOOLS}}, separators=(",", ":")
).encode()
REQUESTS = {"call": CALL_REQUEST, "list": LIST_REQUEST}
ANSWERS = {"call": CALL_ANSWER, "list": LIST_ANSWER}
EXCHANGE_NAMES = {"call": "tools/call", "list": f"tools/list ({len(TOOLS)} tools)"}


def bench_policy(workdir: Path) -> Path:
    """bench/policy_grpc.json (run_command: a regex deny_if, a 1e9-a-day limit per grant, so
    every call holds a reservation and goes through the tools-call route) plus what a tool
    list is filtered by: ``delete_*`` hidden, ``describe_*`` and ``list_*`` allowed, the rest
    denied by default."""
    policy = json.loads(h.POLICY.read_text())
    policy["hide"] = ["delete_*"]
    policy["tools"].update({"describe_*": {}, "list_*": {}})
    path = workdir / "policy.json"
    path.write_text(json.dumps(policy, indent=1))
    return path


# --- Envoy configs ---------------------------------------------------------------------------


def proc_config(
    deployed: dict, *, sync: bool, listen: int, admin: int, toolgate: int | str, upstream: int,
    answers: int | str | None = None,
) -> dict:  # fmt: skip
    """The ext_authz + ext_proc listener on these ports, every route's server id the bench's;
    ``sync``: toolgate.outcomes without observability mode (Envoy waits for toolgate);
    ``answers``: where the ext_proc streams go (default: toolgate)."""
    listener = copy.deepcopy(deployed["listener"])
    ev.set_port(listener["address"], listen)
    hcm = ev.hcm_of(listener)
    (vhost,) = hcm["route_config"]["virtual_hosts"]
    used = set()
    for route in vhost["routes"]:
        # Envoy redacts context_extensions in /config_dump: set the bench's server id.
        route["typed_per_filter_config"][ev.EXT_AUTHZ]["check_settings"]["context_extensions"] = {
            "server": ev.SERVER_ID
        }
        used.add(route["route"]["cluster"])
    if sync:
        (outcomes,) = [f for f in hcm["http_filters"] if f["name"] == "toolgate.outcomes"]
        if not outcomes["typed_config"].get("observability_mode"):
            raise RuntimeError("toolgate.outcomes is no longer in observability mode")
        outcomes["typed_config"]["observability_mode"] = False
    if used != {"mcp"}:
        raise RuntimeError(f"the deployed routes lead to {sorted(used)}, not the mcp cluster")
    sidecar_clusters = []
    for name, port in (("toolgate", toolgate), ("toolgate-answers", answers or toolgate)):
        cluster = copy.deepcopy(deployed["clusters"][name])
        ev.set_endpoint_port(cluster, port)
        sidecar_clusters.append(cluster)
    mcp = copy.deepcopy(deployed["clusters"]["mcp"])
    ev.set_endpoint_port(mcp, upstream)
    return ev.bootstrap(admin, listener, [*sidecar_clusters, mcp])


def envoy_config(
    name: str,
    deployed: dict,
    listen: int,
    admin: int,
    tport: int | str,
    uport: int,
    fport: int | str,
) -> dict:
    if name in ("plain", "authz"):
        return ev.bench_config(
            deployed["authz"], authz=name == "authz", listen=listen, admin=admin,
            toolgate=tport, upstream=uport,
        )  # fmt: skip
    return proc_config(
        deployed["proc"], sync=name.endswith("-sync"), listen=listen, admin=admin,
        toolgate=tport, upstream=uport, answers=fport if name.endswith("-floor") else None,
    )  # fmt: skip


def upstream_config(listen: int, admin: int) -> dict:
    """harness.envoy's stand-in MCP server (an Envoy answering constants over HTTP/1.1), its
    answer picked by ``x-bench-answer``; anything else is a 404."""
    cfg = ev.upstream_config(listen, admin)
    (lst,) = cfg["static_resources"]["listeners"]
    (chain,) = lst["filter_chains"]
    (hcm,) = [f["typed_config"] for f in chain["filters"] if f["name"] == ev.HCM]
    routes = [
        {
            "match": {
                "prefix": "/",
                "headers": [{"name": ANSWER_HEADER, "string_match": {"exact": kind}}],
            },
            "direct_response": {"status": 200, "body": {"inline_string": body.decode()}},
            "response_headers_to_add": [
                {"header": {"key": "content-type", "value": "application/json"}}
            ],
        }
        for kind, body in ANSWERS.items()
    ]
    routes.append({"match": {"prefix": "/"}, "direct_response": {"status": 404}})
    # The list answers the id it was asked with (toolgate sends a list on under an id of its
    # own): the request's id goes into metadata, and the answer's body is rewritten with it.
    hcm["http_filters"].insert(
        0,
        {
            "name": "envoy.filters.http.json_to_metadata",
            "typed_config": {
                "@type": f"{ev.TYPE}.http.json_to_metadata.v3.JsonToMetadata",
                "request_rules": {
                    "rules": [
                        {
                            "selectors": [{"key": "id"}],
                            "on_present": {"metadata_namespace": "bench", "key": "id"},
                        }
                    ]
                },
            },
        },
    )
    echoing = LIST_ANSWER.decode().replace(
        f'"id":"{LIST_ID}"', '"id":"%DYNAMIC_METADATA(bench:id)%"', 1
    )
    hcm["local_reply_config"] = {
        "mappers": [
            {
                "filter": {
                    "header_filter": {
                        "header": {"name": ANSWER_HEADER, "string_match": {"exact": "list"}}
                    }
                },
                "body_format_override": {
                    "text_format_source": {"inline_string": echoing},
                    "content_type": "application/json",
                },
            }
        ]
    }
    hcm["route_config"] = {
        # The default limit on a direct_response body is 4 KiB.
        "max_direct_response_body_size_bytes": 2 * max(len(b) for b in ANSWERS.values()),
        "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}],
    }
    return cfg


# --- processes and counters -------------------------------------------------------------------


def sidecar(policy: Path, workdir: Path, extra: list[str], unix: bool = False) -> h.Server:
    """``toolgate serve`` on a port of 127.0.0.1, or with ``unix`` on a socket in ``workdir``."""
    port = f"unix:{workdir / 'toolgate.sock'}" if unix else h.free_port()
    mport = h.free_port()
    cmd = h.serve_cmd(port, *extra, policy=policy, metrics=mport)
    probe = h.decide_request(True, ev.GRANT, ev.SERVER_ID)
    return h.start_grpc("toolgate", cmd, port, workdir, probe, metrics_port=mport)


def envoy_stats(envoy: h.Server) -> dict[str, int]:
    return ev.stats(envoy, "toolgate|toolgate-answers|mcp")


SIDECAR_COUNTERS = (
    "toolgate_tool_lists_total",
    "toolgate_tools_unlisted_total",
    "toolgate_reservations_released_on_failure_total",
)


def sidecar_counts(port: int) -> dict[str, float]:
    """The sidecar's tool-list and release counters from its /metrics, ``name{labels}``."""
    out = {}
    for family in text_string_to_metric_families(h.scrape(port)):
        for s in family.samples:
            if s.name in SIDECAR_COUNTERS:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


# --- runs ------------------------------------------------------------------------------------


@dataclass
class Run(ev.Run):
    exchange: str = "call"
    answer: int = 0  # bytes each answer must have
    settled: float = 0.0  # s from the last answer until the counters showed what they must
    open: int = 0  # requests Envoy still holds open to the sidecar
    floor_cpu_us: float = 0.0  # the floor's CPU a request (its configs; set by per_call)
    sidecar: dict = field(default_factory=dict)  # the sidecar's counters, after - before

    @property
    def proc(self) -> bool:
        return "+proc" in self.name


def headers(kind: str) -> tuple[str, ...]:
    return (*ev.H2LOAD_HEADERS, f"{ANSWER_HEADER}: {kind}")


def verify(r: Run) -> None:
    """What h2load, Envoy's counters and the sidecar's must show for the run to count."""
    d, s, n = r.delta, r.sidecar, r.succeeded
    problems = r.problems
    if r.failed or r.succeeded != r.n or set(r.statuses) != {"200"}:
        problems.append(f"h2load: {r.succeeded} of {r.n} succeeded, statuses {r.statuses}")
    if r.data != n * r.answer:
        problems.append(f"{r.data} response bytes, want {n} x {r.answer}")
    want = {
        "http.mcp.downstream_rq_2xx": n,
        "cluster.mcp.upstream_rq_200": n,
        "cluster.mcp.upstream_rq_completed": n,
    }
    if r.authz:
        # One Check per request on the toolgate cluster, and through authz+proc one ext_proc
        # stream as well on toolgate-answers, ended (by Envoy, or by toolgate).
        want |= {
            "http.mcp.ext_authz.ok": n,
            "http.mcp.ext_authz.denied": 0,
            "http.mcp.ext_authz.error": 0,
            "http.mcp.ext_authz.failure_mode_allowed": 0,
            "cluster.toolgate.upstream_rq_completed": n,
            "cluster.toolgate.upstream_rq_200": n,
            "cluster.toolgate.upstream_rq_timeout": 0,
        }
    if r.proc:
        want |= {
            "cluster.toolgate-answers.upstream_rq_completed": n,
            "cluster.toolgate-answers.upstream_rq_200": n,
            "cluster.toolgate-answers.upstream_rq_timeout": 0,
            "http.mcp.ext_proc.streams_started": n,
            "http.mcp.ext_proc.streams_failed": 0,
            "http.mcp.ext_proc.failure_mode_allowed": 0,
            "http.mcp.ext_proc.message_timeouts": 0,
            "http.mcp.ext_proc.spurious_msgs_received": 0,
        }
    for k, v in want.items():
        if d.get(k, 0) != v:
            problems.append(f"{k} +{d.get(k, 0)} (want {v})")
    if r.open:
        problems.append(f"{r.open} requests still open to the sidecar (ext_proc streams)")
    if overflow := {k: v for k, v in d.items() if k.startswith("cluster.") and "overflow" in k}:
        problems.append(
            f"circuit breaker overflows {overflow}: more requests open on the cluster than its "
            "max_requests (1024 by default), e.g. ext_proc streams held open"
        )
    if not r.authz and any(k.startswith("http.mcp.ext_authz.") for k in d):
        problems.append("ext_authz counters moved on the plain config")
    if not r.proc and any(k.startswith("http.mcp.ext_proc.") for k in d):
        problems.append("ext_proc counters moved without ext_proc")
    # toolgate filters the list through its ext_proc configs (the floor only copies it).
    filtered = r.proc and r.exchange == "list" and not r.name.endswith("-floor")
    hidden = len(TOOLS) - len(VISIBLE)
    sidecar_want = {
        'toolgate_tool_lists_total{result="filtered"}': n if filtered else 0,
        "toolgate_tools_unlisted_total": n * hidden if filtered else 0,
    }
    for k, v in sidecar_want.items():
        if s.get(k, 0) != v:
            problems.append(f"sidecar {k} +{s.get(k, 0):.0f} (want {v})")
    if others := {k: v for k, v in s.items() if k not in sidecar_want}:
        problems.append(f"sidecar counters moved: {others} (refused lists or released calls)")
    if r.counts and r.exchange == "call" and r.counted != n:
        problems.append(f"toolgate's limit counted {r.counted} (want {n})")


def run_h2load(
    envoy: h.Server, toolgate: h.Server, upstream: h.Server, body: Path, run: Run,
    workdir: Path, args, request_headers: tuple[str, ...] | None = None,
    floor: h.Server | None = None,
) -> Run:  # fmt: skip
    """One h2load run through Envoy, checked (``verify``) once the counters settle; the
    request's headers are ``headers(run.exchange)`` unless given; ``floor``, if given, is
    watched too."""
    url = f"http://127.0.0.1:{envoy.port}/mcp"
    call = run.counts and run.exchange == "call"
    idle(envoy)
    s0, m0 = envoy_stats(envoy), sidecar_counts(toolgate.metrics_port)
    c0 = ev.counted(toolgate) if call else None
    servers = {"envoy": envoy, "toolgate": toolgate, "upstream": upstream}
    if floor:
        servers["floor"] = floor
    h.h2load(run, url, body, workdir, servers, args, request_headers or headers(run.exchange))
    # An observability-mode stream ends after its answer went out: read the counters until
    # they show what they must, or SETTLE has passed (then the run fails its checks).
    done_at = time.monotonic()
    deadline = done_at + SETTLE
    while True:
        run.settled = time.monotonic() - done_at
        run.problems = []
        now = envoy_stats(envoy)
        run.delta = ev.diff(now, s0)
        # A stream counts as completed before it ends; the gauge says when it has.
        run.open = open_requests(now)
        run.sidecar = ev.diff(sidecar_counts(toolgate.metrics_port), m0)
        if call:
            run.counted = ev.counted(toolgate) - c0
        verify(run)
        if not run.problems or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def open_requests(stats: dict) -> int:
    """Requests Envoy holds open to the sidecar: Checks and ext_proc streams."""
    clusters = ("toolgate", "toolgate-answers")
    return sum(stats.get(f"cluster.{c}.upstream_rq_active", 0) for c in clusters)


def idle(envoy: h.Server) -> None:
    """Wait until Envoy holds no request open to the sidecar (ext_proc streams of
    earlier exchanges), so a run starts from the same state whatever ran before it."""
    deadline = time.monotonic() + SETTLE
    while open_requests(envoy_stats(envoy)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{envoy.name}: requests to toolgate still open after {SETTLE} s")
        time.sleep(0.2)


# --- checks by hand --------------------------------------------------------------------------


def exchange(envoy: h.Server, kind: str) -> tuple[int, dict[str, str], bytes]:
    """One request by hand (HTTP/1.1): status, headers (lower case), body."""
    return ev.post(envoy, REQUESTS[kind], **{ANSWER_HEADER: kind})


def probe(name: str, envoy: h.Server) -> tuple[str, dict[str, bytes]]:
    """A tools/call and a tools/list through one config: the call's answer is the upstream's;
    the list is whole, or through ext_proc exactly the tools the caller may see. Returns a
    description and the answers (the run checks compare their sizes)."""
    authz = name != "plain"
    status, headers, body = exchange(envoy, "call")
    ours = {k: v for k, v in headers.items() if k.startswith(ev.TOOLGATE_HEADERS)}
    if status != 200 or body != CALL_ANSWER or authz != bool(ours):
        raise RuntimeError(f"{name}: tools/call answered {status} {ours} {body!r}")
    if authz and ours.get("x-toolgate-code") != "ALLOWED":
        raise RuntimeError(f"{name}: tools/call answered with toolgate's headers {ours}")
    status, _, listed = exchange(envoy, "list")
    result = ev.message(listed).get("result", {})
    names = [t["name"] for t in result.get("tools", [])]
    want = VISIBLE if name in LISTS_FILTERED else [t["name"] for t in TOOLS]
    if status != 200 or names != want:
        raise RuntimeError(f"{name}: tools/list answered {status} with {len(names)} tools")
    if name not in LISTS_FILTERED and listed != LIST_ANSWER:
        raise RuntimeError(f"{name}: the tools/list answer was changed without toolgate")
    marks = {k: v for k, v in result.items() if k != "tools"}
    shown = f"tools/call 200 `x-toolgate-code: {ours['x-toolgate-code']}`" if authz else ""
    shown = shown or "tools/call 200, no toolgate headers"
    shown += f", tools/list 200 with {len(names)} of {len(TOOLS)} tools ({len(listed):,} bytes"
    shown += f"{', ' + json.dumps(marks) if marks else ''})"
    return shown, {"call": body, "list": listed}


def direct_response_probe(deployed: dict, tport: int, workdir: Path) -> str:
    """Whether ext_proc sees an answer Envoy makes itself: the authz+proc config with its
    routes answering the tools/list by ``direct_response`` instead of the upstream."""
    port, admin = h.free_port(), h.free_port()
    cfg = proc_config(
        deployed["proc"], sync=False, listen=port, admin=admin, toolgate=tport, upstream=1
    )
    hcm = ev.hcm_of(cfg["static_resources"]["listeners"][0])
    hcm["route_config"]["max_direct_response_body_size_bytes"] = 2 * len(LIST_ANSWER)
    for route in hcm["route_config"]["virtual_hosts"][0]["routes"]:
        ev.direct(route, LIST_ANSWER.decode())
    path = workdir / "direct-response.json"
    path.write_text(json.dumps(cfg, indent=1))
    envoy = ev.start("direct-response", path, admin, workdir, port=port)
    try:
        s0 = envoy_stats(envoy)
        status, _, listed = exchange(envoy, "list")
        streams = ev.diff(envoy_stats(envoy), s0).get("http.mcp.ext_proc.streams_started", 0)
    finally:
        envoy.stop()
    n = len(ev.message(listed).get("result", {}).get("tools", []))
    return (
        f"a tools/list answered by a `direct_response` on the ext_proc route: {status}, "
        f"{n} of {len(TOOLS)} tools, {streams} ext_proc stream(s)"
    )


# --- report ----------------------------------------------------------------------------------


def report(args, runs: list[Run], probes: list[str], sizes: dict, elapsed: float) -> str:
    def pick(exchange, load, name, i=None):
        return [
            r
            for r in runs
            if (r.exchange, r.load, r.name) == (exchange, load, name) and i in (None, r.index)
        ]

    def med(exchange, load, name, attr):
        got = pick(exchange, load, name)
        return statistics.median(getattr(r, attr) for r in got) if got else float("nan")

    def added(exchange, load, name, base, attr):
        out = []
        for i in range(1, args.runs + 1):
            a, b = pick(exchange, load, name, i), pick(exchange, load, base, i)
            if a and b:
                out.append(getattr(a[0], attr) - getattr(b[0], attr))
        return out

    def ratio(exchange, load, name, base, attr):
        out = []
        for i in range(1, args.runs + 1):
            a, b = pick(exchange, load, name, i), pick(exchange, load, base, i)
            if a and b and getattr(b[0], attr):
                out.append(getattr(a[0], attr) / getattr(b[0], attr))
        return out

    diffs = (
        ("authz+proc", "authz"),
        ("authz+proc-floor", "authz"),
        ("authz+proc-sync", "authz"),
        ("authz", "plain"),
        ("authz+proc", "plain"),
    )
    head = " | ".join(f"{a} {MINUS} {b}" for a, b in diffs)
    hidden = len(TOOLS) - len(VISIBLE)
    lines = [
        h.written_by("ext_proc_bench.py") + f"; one in flight `-c 1 -m 1` x "
        f"{args.n_single:,}, loaded `-c {args.c} -m {args.m}` x {args.n_loaded:,} per run, "
        f"{args.runs} runs, medians; the differences are medians of the per-run differences "
        "(ratios for req/s).",
        "",
        "Configs from the deployed files as Envoy parses them: `plain` and `authz` "
        "deploy/envoy/mcp-ext-authz.yaml without and with ext_authz, `authz+proc` "
        "deploy/envoy/mcp-ext-authz-ext-proc.yaml, `authz+proc-sync` the same with "
        "`observability_mode` off on `toolgate.outcomes` (Envoy waits for toolgate on each "
        "tools/call answer; not deployed), `authz+proc-floor` the same config with its ext_proc "
        "streams sent to a server on toolgate's stack that does nothing with them "
        "(rust/server/examples/floor.rs: it ends each stream after the answer's first part; "
        "what any ext_proc server costs Envoy here), but for answering a tools/list with "
        "toolgate's filtered list, unread (`--list-answer`: the same messages and bytes as "
        "toolgate's; the floor of filtering a list through ext_proc). Upstream: the deployed "
        "`mcp` cluster (HTTP/1.1) on one more Envoy (`--concurrency 1`) answering constants: a "
        f"{len(CALL_ANSWER)}-byte tools/call result, or a {len(LIST_ANSWER):,}-byte tools/list "
        f"of {len(TOOLS)} tools, {hidden} of which the caller may not see (`delete_*` hidden, "
        f"`create_*` denied by default), so through ext_proc {len(sizes['list']):,} bytes. "
        "Sidecar: `toolgate serve`, bench/policy_grpc.json plus `hide` and "
        "two allowed globs (run_command's 1e9-a-day limit makes every call hold a "
        "reservation, so it takes the tools-call route)"
        + (f", {' '.join(args.sidecar_arg)}" if args.sidecar_arg else "")
        + "."
        + (
            " toolgate and the floor on unix sockets (`--unix`: each cluster's endpoint a "
            "`pipe`), not the deployed loopback TCP."
            if args.unix
            else ""
        ),
        "",
        f"| exchange | load | metric | {' | '.join(CONFIGS)} | {head} |",
        "|---|---|---|" + "---:|" * (len(CONFIGS) + len(diffs)),
    ]
    for ex, configs in EXCHANGES.items():
        for load, label in LOADS:
            if label == "loaded":
                label = f"`-c {args.c} -m {args.m}`"
            for attr, metric in (
                ("p50", "p50"),
                ("p99", "p99"),
                ("rps", "req/s"),
                ("envoy_cpu_us", "Envoy CPU / req"),
                ("toolgate_cpu_us", "toolgate CPU / req"),
                ("floor_cpu_us", "floor CPU / req"),
            ):
                cells, adds = [], []
                for name in CONFIGS:
                    v = med(ex, load, name, attr) if name in configs else float("nan")
                    if v != v:
                        cells.append("")
                    elif attr == "rps":
                        cells.append(f"{v:,.0f}")
                    elif attr.endswith("cpu_us"):
                        cells.append(f"{v:.0f} µs")
                    else:
                        cells.append(h.fmt_us(v))
                for a, b in diffs:
                    if a not in configs:
                        adds.append("")
                    elif attr == "rps":
                        adds.append(f"{statistics.median(ratio(ex, load, a, b, attr)):.2f}{X}")
                    else:
                        v = statistics.median(added(ex, load, a, b, attr))
                        cell = (
                            f"{v:+.0f} µs".replace("-", MINUS) if "cpu" in attr else h.fmt_added(v)
                        )
                        adds.append(f"**{cell}**" if (a, b) == diffs[0] else cell)
                lines.append(
                    f"| {EXCHANGE_NAMES[ex]} | {label} | {metric} | {' | '.join(cells)} | "
                    f"{' | '.join(adds)} |"
                )

    def aim(load):
        runs_ = added("call", load, "authz+proc", "authz", "p50")
        v = statistics.median(runs_)
        return (
            f"**{h.fmt_added(v)}** ({h.verdict(v, AIM_ADDED_P50_US, False)}; runs "
            + ", ".join(h.fmt_added(x) for x in runs_)
            + ")"
        )

    def at(ex, name, load):
        return h.fmt_added(statistics.median(added(ex, load, name, "authz", "p50")))

    def cpu(ex, name, load, attr):
        return f"{statistics.median(added(ex, load, name, 'authz', attr)):+.0f} µs".replace(
            "-", MINUS
        )

    def floor_cpu(ex, load):
        return f"{med(ex, load, 'authz+proc-floor', 'floor_cpu_us'):.0f} µs"

    lines += [
        "",
        f"ext_proc added at p50 to a tools/call over ext_authz alone (aim ≤ "
        f"{AIM_ADDED_P50_US:.0f} µs): one in flight {aim('single')}, loaded {aim('loaded')}. "
        f"A server that does nothing with the streams (`authz+proc-floor`) adds "
        f"{at('call', 'authz+proc-floor', 'single')} one in flight, "
        f"{at('call', 'authz+proc-floor', 'loaded')} loaded: Envoy's own part. "
        f"Waiting for toolgate on the answer instead (`authz+proc-sync`): "
        f"{at('call', 'authz+proc-sync', 'single')} one in flight, "
        f"{at('call', 'authz+proc-sync', 'loaded')} loaded. Filtering a tools/list of "
        f"{len(TOOLS)} tools: {at('list', 'authz+proc', 'single')} one in flight, "
        f"{at('list', 'authz+proc', 'loaded')} loaded, with "
        f"{cpu('list', 'authz+proc', 'single', 'toolgate_cpu_us')} of toolgate's CPU a list "
        f"({cpu('list', 'authz+proc', 'loaded', 'toolgate_cpu_us')} loaded); the floor "
        "answering it with the same filtered bytes, unread: "
        f"{at('list', 'authz+proc-floor', 'single')} one in flight, "
        f"{at('list', 'authz+proc-floor', 'loaded')} loaded, with {floor_cpu('list', 'single')} "
        f"of the floor's CPU a list ({floor_cpu('list', 'loaded')} loaded) and Envoy's "
        f"{cpu('list', 'authz+proc-floor', 'single', 'envoy_cpu_us')} "
        f"(toolgate's config {cpu('list', 'authz+proc', 'single', 'envoy_cpu_us')}).",
        "",
        "Checks: by hand (HTTP/1.1) before the runs: "
        + "; ".join(probes)
        + ". Every run: all HTTP 200 and h2load's response bytes exactly the answers' "
        "(through `authz+proc` the filtered list); Envoy's `downstream_rq_2xx` and the mcp "
        "cluster's `upstream_rq_200` up by the requests; on the authz configs "
        "`ext_authz.ok` by as many, `denied`/`error`/`failure_mode_allowed` not at all, the "
        "toolgate cluster's `upstream_rq_completed` and `upstream_rq_200` by one Check per "
        "request, plus one ext_proc stream per request through `authz+proc` "
        "(`ext_proc.streams_started` by as many, `streams_failed`, `failure_mode_allowed`, "
        "`message_timeouts` and the cluster's circuit-breaker overflows not at all), every "
        "stream ended after the run (the cluster's `upstream_rq_active` back to 0); the "
        "sidecar's limit counted every tools/call, "
        f'`toolgate_tool_lists_total{{result="filtered"}}` rose by one and '
        f"`toolgate_tools_unlisted_total` by {hidden} per tools/list through `authz+proc` "
        "(and not otherwise), no list refused, no reservation released. The counters showed "
        "all this, after each run's last answer, within "
        + ", ".join(
            f"{max(r.settled for r in runs if (r.exchange, r.name) == (ex, name)):.1f} s "
            f"({EXCHANGE_NAMES[ex].split()[0]}, {name})"
            for ex, configs in EXCHANGES.items()
            for name in configs
            if "+proc" in name
        )
        + " (Envoy closes an observability-mode ext_proc stream that the server has not "
        "ended `deferred_close_timeout`, 5 s by default, after its exchange).",
        "",
        h.busy_line(runs) + f" Took {elapsed:.0f} s.",
    ]
    return "\n".join(lines)


def pair_lists(args, old: Path) -> int:
    """``--before OLD``: this tree's list exchange against OLD's, in paired rounds."""
    workdir = Path(tempfile.mkdtemp(prefix="ext-proc-before-"))
    body = workdir / "tools-list.json"
    body.write_bytes(REQUESTS["list"])
    trees = {"before": old, "after": h.ROOT}
    servers: dict[str, h.Server] = {}
    rows: dict[str, list[Run]] = {"before": [], "after": []}
    try:
        policy = bench_policy(workdir)
        uport, uadmin = h.free_port(), h.free_port()
        path = workdir / "upstream.json"
        path.write_text(json.dumps(upstream_config(uport, uadmin), indent=1))
        servers["upstream"] = ev.start(
            "upstream", path, uadmin, workdir, "--concurrency", "1", port=uport
        )
        answers = {}
        for side, tree in trees.items():
            # The sidecar is started from $TOOLGATE_EXE: each tree's own build.
            os.environ["TOOLGATE_EXE"] = str(tree / ".venv" / "bin" / "toolgate")
            try:
                servers[f"toolgate-{side}"] = tg = sidecar(policy, workdir, args.sidecar_arg)
            finally:
                del os.environ["TOOLGATE_EXE"]
            config = tree / DEPLOYED["proc"].relative_to(h.ROOT)
            deployed = ev.deployed_config(config, workdir)
            port, admin = h.free_port(), h.free_port()
            cfg = proc_config(
                deployed, sync=False, listen=port, admin=admin, toolgate=tg.port, upstream=uport
            )
            path = workdir / f"{side}.json"
            path.write_text(json.dumps(cfg, indent=1))
            servers[side] = ev.start(side, path, admin, workdir, port=port)
            _, answers[side] = probe("authz+proc", servers[side])
        urls = [f"http://127.0.0.1:{servers[side].port}/mcp" for side in trees]
        h.warm(urls, body, args.warmup, args, headers("list"))
        for i in range(1, args.runs + 1):
            for side in h.rotated(list(trees), i):
                r = Run("authz+proc", "single", i, 1, 1, args.n_single, exchange="list")
                r.answer = len(answers[side]["list"])
                tg = servers[f"toolgate-{side}"]
                run_h2load(servers[side], tg, servers["upstream"], body, r, workdir, args)
                if r.problems:
                    raise SystemExit(f"{side} round {i} failed its checks: {r.problems}")
                rows[side].append(r)
                print(
                    f"round {i} {side:6}: p50 {h.fmt_us(r.p50):>8}  envoy {r.envoy_cpu_us:4.0f} "
                    f"µs  toolgate {r.toolgate_cpu_us:4.0f} µs",
                    file=sys.stderr,
                )
    finally:
        for s in servers.values():
            s.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    pairs = list(zip(rows["before"], rows["after"], strict=True))
    med = statistics.median
    p50 = med(b.p50 - a.p50 for a, b in pairs)
    ratio = med(b.p50 / a.p50 for a, b in pairs)
    tg = med(b.toolgate_cpu_us - a.toolgate_cpu_us for a, b in pairs)
    envoy = med(b.envoy_cpu_us - a.envoy_cpu_us for a, b in pairs)
    print(
        f"tools/list of {len(TOOLS)} tools, one in flight, {args.runs} paired rounds of "
        f"{args.n_single:,} (before: {old}): p50 {h.fmt_us(med(a.p50 for a, _ in pairs))} -> "
        f"{h.fmt_us(med(b.p50 for _, b in pairs))}, per round {h.fmt_added(p50)} ({ratio:.2f}{X}); "
        f"toolgate CPU {tg:+.0f} µs, Envoy CPU "
        f"{envoy:+.0f} µs a list. {h.busy_line(rows['before'] + rows['after'])}"
    )
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n1", "--n-single", type=int, default=4_000, help="one in flight, per run")
    p.add_argument("-nl", "--n-loaded", type=int, default=8_000, help="loaded, per run")
    p.add_argument("-c", type=int, default=4, help="loaded: connections (default 4)")
    p.add_argument("-m", type=int, default=2, help="loaded: streams per connection (2)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=500, help="requests per config and exchange")
    p.add_argument("--quiet-wait", type=float, default=30.0, help="wait up to s for quiet")
    p.add_argument("--quiet", type=float, default=0.3, help="'quiet': under this many cores")
    p.add_argument("--timeout", type=float, default=120.0, help="bound on one h2load run, s")
    p.add_argument(
        "--sidecar-arg",
        action="append",
        default=[],
        help="an extra argument for the sidecar (repeatable), e.g. --sidecar-arg=--threads=1",
    )
    p.add_argument("--no-build", action="store_true", help="don't (re)build the Rust floor")
    p.add_argument("--print", dest="write", action="store_false", help="don't write RESULTS.md")
    p.add_argument(
        "--before", type=Path, help="another checkout (with its .venv): lists, paired rounds"
    )
    p.add_argument(
        "--unix",
        action="store_true",
        help="Envoy reaches toolgate and the floor on unix sockets, not loopback TCP "
        "(prints its block: RESULTS.md keeps the deployed TCP's)",
    )
    args = p.parse_args()
    if args.unix:
        args.write = False
    if not shutil.which("h2load"):
        raise SystemExit("h2load not found: apt-get install -y nghttp2-client")
    if args.before:
        return pair_lists(args, args.before.resolve())
    started = time.monotonic()
    if not args.no_build:
        h.build_floor()
    workdir = Path(tempfile.mkdtemp(prefix="ext-proc-bench-"))
    bodies = {}
    for kind, request in REQUESTS.items():
        bodies[kind] = workdir / f"tools-{kind}.json"
        bodies[kind].write_bytes(request)
    servers: dict[str, h.Server] = {}
    runs: list[Run] = []
    try:
        deployed = {k: ev.deployed_config(path, workdir) for k, path in DEPLOYED.items()}
        policy = bench_policy(workdir)
        servers["toolgate"] = tg = sidecar(policy, workdir, args.sidecar_arg, args.unix)
        fport = f"unix:{workdir / 'floor.sock'}" if args.unix else h.free_port()
        flisten = fport if args.unix else f"127.0.0.1:{fport}"
        floor_cmd = [str(h.FLOOR_BIN), "--listen", flisten, *args.sidecar_arg]
        uport, uadmin = h.free_port(), h.free_port()
        path = workdir / "upstream.json"
        path.write_text(json.dumps(upstream_config(uport, uadmin), indent=1))
        servers["upstream"] = ev.start(
            "upstream", path, uadmin, workdir, "--concurrency", "1", port=uport
        )
        for name in CONFIGS:
            port, admin = h.free_port(), h.free_port()
            path = workdir / f"{name}.json"
            cfg = envoy_config(name, deployed, port, admin, tg.port, uport, fport)
            path.write_text(json.dumps(cfg, indent=1))
            servers[name] = ev.start(name, path, admin, workdir, port=port)
        probes, answers = [], {}
        for name in CONFIGS:
            if name == "authz+proc-floor":
                # The floor answers a list with toolgate's filtered one (probed just before):
                # the same bytes on the wire.
                listed = workdir / "filtered-list"
                listed.write_bytes(answers["authz+proc"]["list"])
                cmd = [*floor_cmd, "--list-answer", str(listed)]
                servers["floor"] = h.start_grpc("floor", cmd, fport, workdir)
            shown, answers[name] = probe(name, servers[name])
            probes.append(f"{name}: {shown}")
        probes.append(f"`rm -rf /`, authz+proc: {ev.deny_probe(servers['authz+proc'])}")
        probes.append(direct_response_probe(deployed, tg.port, workdir))
        for ex, configs in EXCHANGES.items():
            urls = [f"http://127.0.0.1:{servers[name].port}/mcp" for name in configs]
            h.warm(urls, bodies[ex], args.warmup, args, headers(ex))
        for name in CONFIGS:
            idle(servers[name])
        for ex, configs in EXCHANGES.items():
            for load, c, m, n in (
                ("single", 1, 1, args.n_single),
                ("loaded", args.c, args.m, args.n_loaded),
            ):
                for i in range(1, args.runs + 1):
                    for name in h.rotated(configs, i):
                        r = Run(name, load, i, c, m, n, exchange=ex)
                        r.answer = len(answers[name][ex])
                        floor = servers["floor"] if name == "authz+proc-floor" else None
                        run_h2load(
                            servers[name], tg, servers["upstream"], bodies[ex], r, workdir, args,
                            floor=floor,
                        )  # fmt: skip
                        runs.append(r)
                        print(
                            f"{ex:4} {load:6} {name:15} run {i}: {r.rps:8,.0f} req/s  p50 "
                            f"{h.fmt_us(r.p50):>8}  p99 {h.fmt_us(r.p99):>8}  envoy "
                            f"{r.envoy_cpu_us:4.0f} µs  toolgate {r.toolgate_cpu_us:4.0f} µs  "
                            f"upstream {r.upstream_cpu_us:4.0f} µs  floor "
                            f"{r.floor_cpu_us:4.0f} µs  busy "
                            f"{r.quiet_before:.2f}  steal {r.steal_cores:.2f}  settled "
                            f"{r.settled:.1f} s  "
                            f"{'; '.join(r.problems) or 'ok'}",
                            file=sys.stderr,
                        )
                        if r.problems:
                            raise SystemExit(f"{ex} {name} run {i} failed its checks: {r.problems}")
    finally:
        for s in servers.values():
            s.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    block = report(args, runs, probes, answers["authz+proc"], time.monotonic() - started)
    h.publish("ext-proc", block, "ext_proc_bench.py", SECTION, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
