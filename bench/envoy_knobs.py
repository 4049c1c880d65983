"""Which Envoy settings make the ext_authz Check and the ext_proc stream cheaper: the deployed
configs' knobs tried one at a time, against a constant-answer server so only Envoy varies.
Run on purpose, never by the tests; it writes nothing in the repository.

Every config starts from a deployed file as Envoy parses it (envoy_bench's ``/config_dump``
reading), its ``/mcp`` routes answering with a ``direct_response`` (no upstream hop), the
ext_authz Check and the ext_proc streams going to rust/server/examples/floor.rs (tonic, the
sidecar's stack) answering every Check with ``toolgate serve``'s own answer to the bench's
``tools/call`` (taken from a sidecar once at the start, which then stops): so the route taken,
the headers added and the metadata forwarded are the deployed ones, and only Envoy's settings
vary. The variants (``--list`` prints them) change one setting each, against:

- ``plain``: deploy/envoy/mcp-ext-authz.yaml without the ext_authz filter;
- ``authz``: deploy/envoy/mcp-ext-authz.yaml as deployed;
- ``proc``: deploy/envoy/mcp-ext-authz-ext-proc.yaml as deployed (the Check's answer takes the
  ``tools-call`` route: ``toolgate.outcomes`` follows the answer in observability mode);
- ``alone``, ``alone-follow``: no ext_authz, one ext_proc filter doing its work instead (the
  request's headers and buffered body, and with ``-follow`` the answer on the same stream),
  set against ``authz`` and ``proc``: whether ext_proc alone would be the cheaper design.

Settings that change every stream Envoy handles (``--concurrency``, the HTTP/2 codec, stats)
have a ``plain-*`` twin, so what the filter adds is measured on equal terms.

h2load over h2c, one in flight (``-c 1 -m 1``) and loaded (``-c 4 -m 2``); in each run every
config once, the order rotated run by run, each after the machine is quiet (and only while
/tmp/bench-free exists: without it the bench waits, polling every 30 s); every run checked
(all 200, the body bytes, Envoy's ext_authz/ext_proc/cluster counters). Reported: medians of
p50/p99/req/s, Envoy's CPU and context switches per request (all its threads, /proc), the
floor's CPU per request; and per run, config - plain and config - its reference (authz or
proc), medians over the runs with the runs listed.

    .venv/bin/python bench/envoy_knobs.py --list
    .venv/bin/python bench/envoy_knobs.py                        # all variants, 5 runs
    .venv/bin/python bench/envoy_knobs.py --only plain,authz,authz-nobody --runs 7
    .venv/bin/python bench/envoy_knobs.py --syscalls 2000 --only plain,authz   # strace -c
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import envoy_bench as eb
import ext_proc_bench as xb
import grpc_bench as gb

CHECK = "/envoy.service.auth.v3.Authorization/Check"
BENCH_FREE = Path("/tmp/bench-free")
FLOOR_BIN = gb.ROOT / "target" / "release" / "examples" / "floor"
X, MINUS = gb.X, "\u2212"
AUTHZ_FILTER = eb.EXT_AUTHZ
OUTCOMES, ANSWERS, ALONE = "toolgate.outcomes", "toolgate.answers", "toolgate.alone"
RUNTIME_OGHTTP2 = "envoy.reloadable_features.http2_use_oghttp2"
RUNTIME_SIDE_FLOW = "envoy.reloadable_features.grpc_side_stream_flow_control"
#: Headers toolgate reads from a Check with its default settings (grant, session, MCP method
#: and name, a cut body); a deployment that names other headers would list those.
TOOLGATE_HEADERS = (
    "authorization",
    "mcp-session-id",
    "mcp-method",
    "mcp-name",
    "content-length",
    "x-envoy-auth-partial-body",
)


# --- gating --------------------------------------------------------------------------------


def bench_free() -> None:
    """Timed work only while /tmp/bench-free exists: otherwise wait, polling every 30 s."""
    if BENCH_FREE.exists():
        return
    print(f"{BENCH_FREE} is gone: pausing", file=sys.stderr, flush=True)
    while not BENCH_FREE.exists():
        time.sleep(30)
    print(f"{BENCH_FREE} is back: going on", file=sys.stderr, flush=True)


# --- configs -------------------------------------------------------------------------------


@dataclass
class Ctx:
    deployed: dict  # {"authz": ..., "proc": ...}: listeners and clusters as Envoy parsed them
    floor: int  # the floor's port


def direct(route: dict) -> None:
    """The route answers itself with the constant result, whatever cluster it named."""
    route.pop("route", None)
    route["direct_response"] = {"status": 200, "body": {"inline_string": eb.RESULT_BODY}}
    route["response_headers_to_add"] = [
        {
            "header": {"key": "content-type", "value": "application/json"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }
    ]


def authz_base(ctx: Ctx, authz: bool) -> dict:
    return eb.bench_config(
        ctx.deployed["authz"], authz=authz, listen=0, admin=0, toolgate=ctx.floor
    )


def proc_base(ctx: Ctx) -> dict:
    cfg = xb.proc_config(
        ctx.deployed["proc"], sync=False, listen=0, admin=0, toolgate=ctx.floor, upstream=1,
        answers=ctx.floor,
    )  # fmt: skip
    for route in routes(cfg):
        direct(route)
    # No route leads to the MCP cluster any more.
    clusters = cfg["static_resources"]["clusters"]
    cfg["static_resources"]["clusters"] = [c for c in clusters if c["name"] != "mcp"]
    return cfg


def listener(cfg: dict) -> dict:
    (lst,) = cfg["static_resources"]["listeners"]
    return lst


def hcm(cfg: dict) -> dict:
    return eb._hcm(listener(cfg))


def routes(cfg: dict) -> list[dict]:
    (vhost,) = hcm(cfg)["route_config"]["virtual_hosts"]
    return vhost["routes"]


def http_filter(cfg: dict, name: str) -> dict:
    (f,) = [f for f in hcm(cfg)["http_filters"] if f["name"] == name]
    return f["typed_config"]


def cluster(cfg: dict, name: str) -> dict:
    (c,) = [c for c in cfg["static_resources"]["clusters"] if c["name"] == name]
    return c


def protocol_options(cfg: dict, name: str) -> dict:
    return cluster(cfg, name)["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]


def runtime(cfg: dict, key: str, value) -> dict:
    cfg["layered_runtime"] = {
        "layers": [
            {"name": "bench", "static_layer": {key: value}},
            {"name": "admin", "admin_layer": {}},
        ]
    }
    return cfg


def google_grpc(cfg: dict, filter_name: str, cluster_name: str) -> None:
    """The filter's gRPC client: Envoy's Google gRPC (C-core) client instead of its own."""
    svc = http_filter(cfg, filter_name)["grpc_service"]
    port = cluster(cfg, cluster_name)["load_assignment"]["endpoints"][0]["lb_endpoints"][0][
        "endpoint"
    ]["address"]["socket_address"]["port_value"]
    del svc["envoy_grpc"]
    svc["google_grpc"] = {"target_uri": f"127.0.0.1:{port}", "stat_prefix": cluster_name}


def few_stats(cfg: dict) -> dict:
    """Only the stats the run's checks read are kept (an upper bound on what stats cost)."""
    keep = [{"prefix": p} for p in ("http.mcp.ext_authz.", "http.mcp.ext_proc.")]
    keep.append({"exact": "http.mcp.downstream_rq_2xx"})
    for c in ("toolgate", "toolgate-answers"):
        for s in ("upstream_rq_completed", "upstream_rq_200", "upstream_rq_timeout"):
            keep.append({"exact": f"cluster.{c}.{s}"})
        keep.append({"exact": f"cluster.{c}.upstream_rq_active"})
    cfg["stats_config"] = {"stats_matcher": {"inclusion_list": {"patterns": keep}}}
    return cfg


def mutate(base: Callable[[Ctx], dict], *changes: Callable[[dict], object]):
    def build(ctx: Ctx) -> dict:
        cfg = base(ctx)
        for change in changes:
            change(cfg)
        return cfg

    return build


def plain(ctx: Ctx) -> dict:
    return authz_base(ctx, authz=False)


def authz(ctx: Ctx) -> dict:
    return authz_base(ctx, authz=True)


def set_in(path: list[str], value) -> Callable[[dict], None]:
    def change(d: dict) -> None:
        for k in path[:-1]:
            d = d.setdefault(k, {})
        d[path[-1]] = value

    return change


def on_authz(change: Callable[[dict], None]) -> Callable[[dict], None]:
    return lambda cfg: change(http_filter(cfg, AUTHZ_FILTER))


def on_filter(name: str, change: Callable[[dict], None]) -> Callable[[dict], None]:
    return lambda cfg: change(http_filter(cfg, name))


def drop(key: str) -> Callable[[dict], None]:
    def change(d: dict) -> None:
        if key not in d:
            raise RuntimeError(f"{key} is not in the deployed config any more")
        del d[key]

    return change


def call_route(cfg: dict) -> dict:
    (route,) = [r for r in routes(cfg) if OUTCOMES in r.get("typed_per_filter_config", {})]
    return route


def no_outcomes(cfg: dict) -> None:
    """The tools-call route without toolgate.outcomes turned on: ext_authz as in the ext_proc
    config (clear_route_cache, the route picked again), the ext_proc filters present, off."""
    del call_route(cfg)["typed_per_filter_config"][OUTCOMES]


def answers_disabled(cfg: dict) -> None:
    """toolgate.answers (all SKIP on this route anyway) disabled on the tools-call route."""
    call_route(cfg)["typed_per_filter_config"][ANSWERS] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
        "disabled": True,
    }


def h2_windows(cfg: dict) -> None:
    """The sidecar cluster's HTTP/2 settings: small windows (Envoy's default is 256 MiB per
    stream and connection), a bounded max_concurrent_streams."""
    protocol_options(cfg, "toolgate")["explicit_http_config"]["http2_protocol_options"] = {
        "initial_stream_window_size": 65536,
        "initial_connection_window_size": 1048576,
        "max_concurrent_streams": 1024,
    }


def no_max_requests(cfg: dict) -> None:
    opts = protocol_options(cfg, "toolgate")
    del opts["common_http_protocol_options"]["max_requests_per_connection"]
    if not opts["common_http_protocol_options"]:
        del opts["common_http_protocol_options"]


def allowed_headers(cfg: dict) -> None:
    http_filter(cfg, AUTHZ_FILTER)["allowed_headers"] = {
        "patterns": [{"exact": h} for h in TOOLGATE_HEADERS]
    }


def no_request_id(cfg: dict) -> None:
    hcm(cfg)["generate_request_id"] = False


def flush(seconds: str) -> Callable[[dict], None]:
    return set_in(["stats_flush_interval"], seconds)


def lean(cfg: dict) -> None:
    """The Check trimmed every way that keeps toolgate's inputs: its headers only, sent raw,
    without Envoy's own x-envoy-* headers."""
    allowed_headers(cfg)
    f = http_filter(cfg, AUTHZ_FILTER)
    f["encode_raw_headers"] = True
    f["grpc_service"]["envoy_grpc"]["skip_envoy_headers"] = True


def ext_proc_alone(follow: bool) -> Callable[[Ctx], dict]:
    """ext_authz replaced by one ext_proc filter to the same cluster, which would decide on
    the request's headers and body (BUFFERED: Envoy waits for each answer) and, with
    ``follow``, read the answer on the same stream (headers SEND, body STREAMED: Envoy waits
    too, as one filter cannot be in observability mode for the answer only)."""

    def build(ctx: Ctx) -> dict:
        cfg = authz(ctx)
        filters = hcm(cfg)["http_filters"]
        i = next(i for i, f in enumerate(filters) if f["name"] == AUTHZ_FILTER)
        grpc_service = copy.deepcopy(filters[i]["typed_config"]["grpc_service"])
        # The headers are sent too: skipped, Envoy would pass them on (or answer a direct
        # response) before the body, and so the call, had been decided.
        mode = {"request_header_mode": "SEND", "request_body_mode": "BUFFERED"}
        mode |= {"response_header_mode": "SEND" if follow else "SKIP"}
        if follow:
            mode["response_body_mode"] = "STREAMED"
        filters[i] = {
            "name": ALONE,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3"
                ".ExternalProcessor",
                "grpc_service": grpc_service,
                "processing_mode": mode,
                "failure_mode_allow": False,
            },
        }
        for route in routes(cfg):
            route.get("typed_per_filter_config", {}).pop(AUTHZ_FILTER, None)
            if not route.get("typed_per_filter_config", True):
                del route["typed_per_filter_config"]
        return cfg

    return build


@dataclass
class Variant:
    name: str
    kind: str  # plain | authz | proc | alone: which checks apply, the reference it is set against
    what: str
    build: Callable[[Ctx], dict]
    envoy_args: tuple[str, ...] = ()
    cluster_checks: bool = True  # the Check goes through the toolgate cluster (envoy_grpc)

    @property
    def reference(self) -> str:
        if self.kind == "alone":  # set against the ext_authz config that does the same work
            return "proc" if self.name.endswith("-follow") else "authz"
        return self.kind

    @property
    def authz_twin(self) -> str:
        """For a proc config: the ext_authz-only config its ext_proc cost is measured over."""
        twin = "authz" + self.name[len("proc") :]
        return twin if twin in BY_NAME else "authz"

    @property
    def plain_twin(self) -> str:
        """The plain config this one's added cost is measured over."""
        for suffix in ("-c1", "-nghttp2", "-fewstats", "-noreqid"):
            if self.name.endswith(suffix):
                return "plain" + suffix
        return "plain"


C1 = ("--concurrency", "1")
VARIANTS = [
    Variant("plain", "plain", "mcp-ext-authz.yaml without ext_authz", plain),
    Variant("authz", "authz", "mcp-ext-authz.yaml as deployed", authz),
    Variant(
        "authz-nobody", "authz", "`with_request_body` removed (headers only)",
        mutate(authz, on_authz(drop("with_request_body"))),
    ),
    Variant(
        "authz-google", "authz", "`google_grpc` client instead of `envoy_grpc`",
        mutate(authz, lambda c: google_grpc(c, AUTHZ_FILTER, "toolgate")), cluster_checks=False,
    ),
    Variant(
        "authz-h2win", "authz", "toolgate cluster: 64 KiB stream / 1 MiB connection windows, "
        "max_concurrent_streams 1024", mutate(authz, h2_windows),
    ),
    Variant(
        "authz-nomaxreq", "authz", "toolgate cluster: `max_requests_per_connection` removed",
        mutate(authz, no_max_requests),
    ),
    Variant(
        "authz-headers", "authz", "`allowed_headers`: only the " + str(len(TOOLGATE_HEADERS))
        + " headers toolgate reads", mutate(authz, allowed_headers),
    ),
    Variant(
        "authz-rawheaders", "authz", "`encode_raw_headers: true`",
        mutate(authz, on_authz(set_in(["encode_raw_headers"], True))),
    ),
    Variant(
        "authz-flush5", "authz", "`stats_flush_interval` 5 s (Envoy's default; the benches' 1 s)",
        mutate(authz, flush("5s")),
    ),
    Variant(
        "authz-sideflow", "authz", f"runtime `{RUNTIME_SIDE_FLOW}` false",
        mutate(authz, lambda c: runtime(c, RUNTIME_SIDE_FLOW, False)),
    ),
    Variant("plain-fewstats", "plain", "plain, stats_matcher keeping ~20 stats",
            mutate(plain, few_stats)),
    Variant("authz-fewstats", "authz", "stats_matcher keeping ~20 stats (the checks')",
            mutate(authz, few_stats)),
    Variant(
        "authz-skiphdrs", "authz", "`envoy_grpc.skip_envoy_headers: true` (no x-envoy-* on "
        "the Check)", mutate(authz, on_authz(set_in(["grpc_service", "envoy_grpc",
                                                      "skip_envoy_headers"], True))),
    ),
    Variant("plain-noreqid", "plain", "plain, HCM `generate_request_id: false`",
            mutate(plain, no_request_id)),
    Variant("authz-noreqid", "authz", "HCM `generate_request_id: false` (no x-request-id made "
            "for each request, nor sent in the Check)", mutate(authz, no_request_id)),
    Variant("plain-c1", "plain", "plain, `--concurrency 1`", plain, C1),
    Variant("authz-c1", "authz", "`--concurrency 1` (the benches: 2 workers)", authz, C1),
    Variant(
        "plain-nghttp2", "plain", f"plain, runtime `{RUNTIME_OGHTTP2}` false",
        mutate(plain, lambda c: runtime(c, RUNTIME_OGHTTP2, False)),
    ),
    Variant(
        "authz-nghttp2", "authz", f"runtime `{RUNTIME_OGHTTP2}` false (nghttp2 codec)",
        mutate(authz, lambda c: runtime(c, RUNTIME_OGHTTP2, False)),
    ),
    Variant("authz-lean", "authz", "authz-headers + authz-rawheaders + authz-skiphdrs",
            mutate(authz, lean)),
    Variant("proc", "proc", "mcp-ext-authz-ext-proc.yaml as deployed (tools-call route)",
            proc_base),
    Variant(
        "proc-off", "proc", "the tools-call route without toolgate.outcomes (ext_authz with "
        "clear_route_cache, ext_proc filters present, off)", mutate(proc_base, no_outcomes),
    ),
    Variant(
        "proc-nometa", "proc", "toolgate.outcomes: `metadata_options` removed",
        mutate(proc_base, on_filter(OUTCOMES, drop("metadata_options"))),
    ),
    Variant(
        "proc-noanswers", "proc", "toolgate.answers disabled on the tools-call route",
        mutate(proc_base, answers_disabled),
    ),
    Variant(
        "proc-google", "proc", "toolgate.outcomes: `google_grpc` client",
        mutate(proc_base, lambda c: google_grpc(c, OUTCOMES, "toolgate-answers")),
    ),
    Variant(
        "proc-sideflow", "proc", f"runtime `{RUNTIME_SIDE_FLOW}` false",
        mutate(proc_base, lambda c: runtime(c, RUNTIME_SIDE_FLOW, False)),
    ),
    Variant("proc-c1", "proc", "`--concurrency 1`", proc_base, C1),
    Variant(
        "alone", "alone", "ext_proc alone deciding: ext_authz replaced by an ext_proc filter "
        "sent the buffered request body", ext_proc_alone(follow=False),
    ),
    Variant(
        "alone-follow", "alone", "ext_proc alone deciding and following the answer on the "
        "same stream (headers SEND, body STREAMED)", ext_proc_alone(follow=True),
    ),
    Variant(
        "proc-nghttp2", "proc", f"runtime `{RUNTIME_OGHTTP2}` false",
        mutate(proc_base, lambda c: runtime(c, RUNTIME_OGHTTP2, False)),
    ),
]  # fmt: skip
BY_NAME = {v.name: v for v in VARIANTS}


def render(v: Variant, ctx: Ctx, listen: int, admin: int) -> dict:
    cfg = v.build(ctx)
    eb._set_port(listener(cfg)["address"], listen)
    cfg["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}}
    cfg.setdefault("stats_flush_interval", "1s")
    if "[redacted]" in json.dumps(cfg):
        raise RuntimeError(f"{v.name}: a redacted field is left in the config")
    return cfg


# --- the Check's answer --------------------------------------------------------------------


def check_request() -> bytes:
    """The Check Envoy sends for the bench's tools/call through the deployed route."""
    from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2

    ctx = attribute_context_pb2.AttributeContext
    headers = {":authority": "127.0.0.1", ":method": "POST", ":path": "/mcp"}
    headers |= dict(eb.HEADERS) | {"content-length": str(len(eb.REQUEST_BODY))}
    http = ctx.HttpRequest(
        method="POST", path="/mcp", host="127.0.0.1", headers=headers, raw_body=eb.REQUEST_BODY
    )
    return external_auth_pb2.CheckRequest(
        attributes=ctx(request=ctx.Request(http=http), context_extensions={"server": eb.SERVER_ID})
    ).SerializeToString()


def sidecar_answer(workdir: Path) -> bytes:
    """toolgate's own answer to the bench's Check (an allow holding a reservation: the
    tools-call route, with the note in dynamic metadata); the sidecar stops after."""
    from envoy.service.auth.v3 import external_auth_pb2

    port = gb.free_port()
    cmd = [gb.toolgate_exe(), "serve", "--transport", "native", "--policy", str(eb.POLICY)]
    cmd += ["--metrics-listen", "off", "--listen", f"127.0.0.1:{port}", "--drain", "0"]
    tg = gb.start_server("toolgate", cmd, port, workdir, eb.decide_request(dry_run=True))
    try:
        answer = gb.call_raw(port, check_request(), method=CHECK)
    finally:
        tg.stop()
    r = external_auth_pb2.CheckResponse.FromString(answer)
    added = {h.header.key: h.header.value for h in r.ok_response.headers}
    if r.status.code != 0 or added.get("x-toolgate-exchange") != "tools-call":
        raise RuntimeError(f"the sidecar's answer is not an allow on the tools-call route: {r}")
    return answer


# --- runs ----------------------------------------------------------------------------------


@dataclass
class Run(eb.Run):
    kind: str = "plain"
    cluster_checks: bool = True
    floor_cpu_us: float = 0.0
    data: int = 0
    settled: float = 0.0

    @property
    def counts(self) -> bool:  # the floor counts nothing
        return False


def verify(r: Run) -> None:
    d, n, p = r.delta, r.succeeded, r.problems
    if r.failed or r.succeeded != r.n or set(r.statuses) != {"200"}:
        p.append(f"h2load: {r.succeeded} of {r.n} succeeded, statuses {r.statuses}")
    if r.data != n * len(eb.RESULT_BODY):
        p.append(f"{r.data} response bytes, want {n} x {len(eb.RESULT_BODY)}")
    want = {"http.mcp.downstream_rq_2xx": n}
    if r.kind in ("authz", "proc"):
        want |= {
            "http.mcp.ext_authz.ok": n,
            "http.mcp.ext_authz.denied": 0,
            "http.mcp.ext_authz.error": 0,
            "http.mcp.ext_authz.failure_mode_allowed": 0,
        }
        if r.cluster_checks:
            want |= {
                "cluster.toolgate.upstream_rq_completed": n,
                "cluster.toolgate.upstream_rq_200": n,
                "cluster.toolgate.upstream_rq_timeout": 0,
            }
    if r.kind == "alone":  # one stream per request, to the toolgate cluster
        want |= {
            "cluster.toolgate.upstream_rq_completed": n,
            "cluster.toolgate.upstream_rq_timeout": 0,
        }
    streams = n if r.kind in ("proc", "alone") and r.config != "proc-off" else 0
    want |= {
        "http.mcp.ext_proc.streams_started": streams,
        "http.mcp.ext_proc.streams_failed": 0,
        "http.mcp.ext_proc.failure_mode_allowed": 0,
        "http.mcp.ext_proc.message_timeouts": 0,
        "http.mcp.ext_proc.spurious_msgs_received": 0,
    }
    if streams and r.kind == "proc" and r.config != "proc-google":
        want |= {
            "cluster.toolgate-answers.upstream_rq_completed": n,
            "cluster.toolgate-answers.upstream_rq_timeout": 0,
        }
    for k, v in want.items():
        if d.get(k, 0) != v:
            p.append(f"{k} +{d.get(k, 0)} (want {v})")
    if r.kind in ("plain", "alone") and any(k.startswith("http.mcp.ext_authz.") for k in d):
        p.append(f"ext_authz counters moved on a {r.kind} config")
    if over := {k: v for k, v in d.items() if "overflow" in k}:
        p.append(f"circuit breaker overflows {over}")


def measure(envoy: gb.Server, floor: gb.Server, body: Path, run: Run, workdir: Path, args) -> Run:
    log = workdir / f"{run.load}-{run.config}-{run.index}.log"
    url = f"http://127.0.0.1:{envoy.port}/mcp"
    cmd = [*eb.h2load_cmd(url, body, run.c, run.m, run.n), "--log-file", str(log)]
    bench_free()
    run.quiet_before = gb.wait_quiet(args.quiet_wait, args.quiet)
    xb.idle(envoy)
    s0 = xb.envoy_stats(envoy)
    _, st0 = gb.cpu_ticks()
    e0, f0 = envoy.cpu_seconds(), floor.cpu_seconds()
    cs0 = envoy.context_switches()
    w0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    wall = time.monotonic() - w0
    # Envoy's work on a request may end after its answer (an ext_proc stream in observability
    # mode): count it up to when no request to the floor is open.
    done_at = time.monotonic()
    while xb.open_requests(xb.envoy_stats(envoy)) and time.monotonic() < done_at + xb.SETTLE:
        time.sleep(0.05)
    run.settled = time.monotonic() - done_at
    e1, f1 = envoy.cpu_seconds(), floor.cpu_seconds()
    cs1 = envoy.context_switches()
    _, st1 = gb.cpu_ticks()
    done = xb.read_h2load(run, cmd, proc, log)
    run.envoy_cpu_us = (e1 - e0) / done * 1e6
    run.floor_cpu_us = (f1 - f0) / done * 1e6
    run.envoy_cs = (cs1 - cs0) / done
    run.steal_cores = (st1 - st0) / gb.CLK_TCK / wall
    run.delta = xb.diff(xb.envoy_stats(envoy), s0)
    verify(run)
    return run


def probe(v: Variant, envoy: gb.Server) -> str:
    """One request by hand: the constant answer, toolgate's headers through the filter, and
    as many ext_proc streams as the config must open."""
    s0 = xb.envoy_stats(envoy)
    shown = eb.probe(envoy, v.kind in ("authz", "proc"))
    deadline = time.monotonic() + xb.SETTLE
    while xb.open_requests(xb.envoy_stats(envoy)) and time.monotonic() < deadline:
        time.sleep(0.05)
    d = xb.diff(xb.envoy_stats(envoy), s0)
    streams = d.get("http.mcp.ext_proc.streams_started", 0)
    want = 1 if v.kind in ("proc", "alone") and v.name != "proc-off" else 0
    if streams != want:
        raise RuntimeError(f"{v.name}: {streams} ext_proc streams for one request, want {want}")
    return f"{shown}, {streams} ext_proc stream(s)"


def codec_check(v: Variant, envoy: gb.Server) -> str:
    """Which HTTP/2 codec Envoy runs (its runtime, as the admin page reports it)."""
    rt = json.loads(eb.envoy_admin(envoy.admin, "/runtime"))
    got = rt.get("entries", {}).get(RUNTIME_OGHTTP2, {}).get("final_value", "default")
    return f"{v.name}: `{RUNTIME_OGHTTP2}` = {got}"


# --- syscalls ------------------------------------------------------------------------------


def syscalls(envoy: gb.Server, body: Path, n: int, workdir: Path, args) -> dict[str, float]:
    """strace -c -f on Envoy over n requests one in flight: calls per request, by syscall."""
    out = workdir / f"strace-{envoy.name}.txt"
    bench_free()
    st = subprocess.Popen(
        ["strace", "-f", "-c", "-o", str(out), "-p", str(envoy.proc.pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)
    url = f"http://127.0.0.1:{envoy.port}/mcp"
    subprocess.run(eb.h2load_cmd(url, body, 1, 1, n), capture_output=True, timeout=args.timeout)
    st.send_signal(signal.SIGINT)
    st.wait(30)
    calls: dict[str, float] = {}
    for line in out.read_text().splitlines():
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
            calls[f[-1]] = int(f[3]) / n
    return calls


# --- report --------------------------------------------------------------------------------

METRICS = (
    ("p50", "p50"),
    ("p99", "p99"),
    ("rps", "req/s"),
    ("envoy_cpu_us", "Envoy CPU/req"),
    ("envoy_cs", "Envoy cs/req"),
    ("floor_cpu_us", "floor CPU/req"),
)


def cell(attr: str, v: float, signed: bool = False) -> str:
    if v != v:
        return ""
    sign = ("+" if v >= 0 else MINUS) if signed else ""
    if attr == "rps":
        return f"{v:,.0f}" if not signed else f"{v:.2f}{X}"
    if attr == "envoy_cs":
        return f"{sign}{abs(v):.1f}"
    if attr.endswith("cpu_us"):
        return f"{sign}{abs(v):.0f} µs"
    return f"{sign}{gb.fmt_us(abs(v))}"


def report(args, runs: list[Run], names: list[str], notes: list[str], elapsed: float) -> str:
    def pick(load, name, i=None):
        return [r for r in runs if (r.load, r.config) == (load, name) and i in (None, r.index)]

    def med(load, name, attr):
        got = pick(load, name)
        return statistics.median(getattr(r, attr) for r in got) if got else float("nan")

    def per_run(load, a, b, attr, ratio=False):
        out = []
        for i in sorted({r.index for r in pick(load, a)}):
            x, y = pick(load, a, i), pick(load, b, i)
            if x and y:
                va, vb = getattr(x[0], attr), getattr(y[0], attr)
                out.append(va / vb if ratio else va - vb)
        return out

    n_runs = max((r.index for r in runs), default=0)
    lines = [
        gb.written_by("envoy_knobs.py") + f"; one in flight `-c 1 -m 1` x {args.n_single:,}, "
        f"loaded `-c {args.c} -m {args.m}` x {args.n_loaded:,} per run, {n_runs} runs; "
        f"took {elapsed:.0f} s. Busy before each run "
        f"{min(r.quiet_before for r in runs):.2f}\u2013{max(r.quiet_before for r in runs):.2f}"
        f" cores, steal up to {max(r.steal_cores for r in runs):.2f}.",
        "",
        "| config | what |",
        "|---|---|",
        *(f"| {n} | {BY_NAME[n].what} {' '.join(BY_NAME[n].envoy_args)} |" for n in names),
    ]
    for load, label in (("single", "one in flight"), ("loaded", f"-c {args.c} -m {args.m}")):
        lines += [
            "",
            f"**{label}**: medians; *added* = config {MINUS} its plain twin, *vs ref* = config "
            f"{MINUS} authz (or proc), each the median of the per-run differences (req/s: "
            "ratio), with the runs listed for p50 and Envoy CPU.",
            "",
            "| config | p50 | p99 | req/s | Envoy CPU/req | Envoy cs/req | floor CPU/req "
            "| p50 added | p50 vs ref (runs) | Envoy CPU added | Envoy CPU vs ref (runs) "
            "| req/s vs ref |",
            "|---|" + "---:|" * 11,
        ]
        for name in names:
            v = BY_NAME[name]
            cells = [cell(a, med(load, name, a)) for a, _ in METRICS]
            extra = []
            for attr in ("p50", "envoy_cpu_us"):
                add = per_run(load, name, v.plain_twin, attr) if v.kind != "plain" else []
                extra.append(cell(attr, statistics.median(add), True) if add else "")
                ref = per_run(load, name, v.reference, attr) if name != v.reference else []
                if ref:
                    runs_ = ", ".join(f"{x:+.0f}".replace("-", MINUS) for x in ref)
                    extra.append(f"{cell(attr, statistics.median(ref), True)} ({runs_})")
                else:
                    extra.append("")
            ratio = per_run(load, name, v.reference, "rps", ratio=True)
            extra.append(f"{statistics.median(ratio):.3f}{X}" if name != v.reference else "")
            lines.append(f"| {name} | {' | '.join(cells + extra)} |")
        procs = [n for n in names if BY_NAME[n].kind == "proc" and BY_NAME[n].authz_twin in names]
        if procs:
            lines += [
                "",
                f"ext_proc over ext_authz alone ({label}): config {MINUS} its authz twin, "
                "median of the per-run differences (runs):",
                "",
                "| config | over | p50 | Envoy CPU/req | floor CPU/req |",
                "|---|---|---:|---:|---:|",
            ]
            for name in procs:
                twin = BY_NAME[name].authz_twin
                row = []
                for attr in ("p50", "envoy_cpu_us", "floor_cpu_us"):
                    d = per_run(load, name, twin, attr)
                    runs_ = ", ".join(f"{x:+.0f}".replace("-", MINUS) for x in d)
                    row.append(f"{cell(attr, statistics.median(d), True)} ({runs_})")
                lines.append(f"| {name} | {twin} | {' | '.join(row)} |")
    bad = [r for r in runs if r.problems]
    lines += [
        "",
        "Checks: " + "; ".join(notes) + ". Every run: all 200 with the constant body's bytes, "
        "`downstream_rq_2xx`, `ext_authz.ok` and the toolgate cluster's completed/200 by the "
        "requests (not through `google_grpc`), ext_proc streams started one per request "
        "through proc configs (none elsewhere), none failed or timed out, no overflow: "
        + ("**all passed**." if not bad else f"**{len(bad)} runs failed**: "
           + "; ".join(f"{r.config} {r.load} {r.index}: {r.problems}" for r in bad[:5])),
    ]  # fmt: skip
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="comma-separated configs (default: all; --list shows them)")
    p.add_argument("--list", action="store_true", help="print the configs and exit")
    p.add_argument("-n1", "--n-single", type=int, default=4_000, help="one in flight, per run")
    p.add_argument("-nl", "--n-loaded", type=int, default=8_000, help="loaded, per run")
    p.add_argument("-c", type=int, default=4)
    p.add_argument("-m", type=int, default=2)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--budget", type=float, default=0, help="s: start no run after this")
    p.add_argument("--warmup", type=int, default=1000)
    p.add_argument("--quiet-wait", type=float, default=20.0)
    p.add_argument("--quiet", type=float, default=0.3)
    p.add_argument("--timeout", type=float, default=120.0, help="bound on one h2load run, s")
    p.add_argument("--floor-threads", type=int, default=0, help="floor --threads (0: its own)")
    p.add_argument("--syscalls", type=int, default=0, help="then strace -c over N requests")
    p.add_argument("--json", type=Path, help="write every run here")
    args = p.parse_args()
    if args.list:
        for v in VARIANTS:
            print(f"{v.name:16} {v.kind:6} {v.what} {' '.join(v.envoy_args)}")
        return 0
    names = args.only.split(",") if args.only else [v.name for v in VARIANTS]
    if unknown := [n for n in names if n not in BY_NAME]:
        raise SystemExit(f"unknown configs {unknown}: see --list")
    for n in names:  # a config is set against its reference and its plain twin
        v = BY_NAME[n]
        for dep in (v.reference, v.plain_twin) if v.kind != "plain" else ():
            if dep not in names:
                names.append(dep)
    names = [v.name for v in VARIANTS if v.name in names]
    if not shutil.which("h2load"):
        raise SystemExit("h2load not found: apt-get install -y nghttp2-client")
    if not FLOOR_BIN.exists():
        raise SystemExit(f"{FLOOR_BIN} missing: cargo build --release -p toolgate-server "
                         "--example floor")  # fmt: skip
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="envoy-knobs-"))
    body = workdir / "tools-call.json"
    body.write_bytes(eb.REQUEST_BODY)
    servers: dict[str, gb.Server] = {}
    runs: list[Run] = []
    notes: list[str] = []
    try:
        deployed = {k: xb.deployed_config(path, workdir) for k, path in xb.DEPLOYED.items()}
        answer = workdir / "check-answer.bin"
        answer.write_bytes(sidecar_answer(workdir))
        fport = gb.free_port()
        cmd = [str(FLOOR_BIN), "--listen", f"127.0.0.1:{fport}", "--check-response", str(answer)]
        if args.floor_threads:
            cmd += ["--threads", str(args.floor_threads)]
        servers["floor"] = floor = gb.start_server(
            "floor", cmd, fport, workdir, eb.decide_request(dry_run=True)
        )
        ctx = Ctx(deployed, fport)
        for name in names:
            v = BY_NAME[name]
            port, admin = gb.free_port(), gb.free_port()
            path = workdir / f"{name}.json"
            path.write_text(json.dumps(render(v, ctx, port, admin), indent=1))
            servers[name] = eb.start_envoy(name, path, admin, workdir, *v.envoy_args, port=port)
        for name in names:
            notes.append(f"{name}: {probe(BY_NAME[name], servers[name])}")
            if "nghttp2" in name or name in ("plain", "authz"):
                notes.append(codec_check(BY_NAME[name], servers[name]))
        print("\n".join(notes), file=sys.stderr)
        for name in names:
            bench_free()
            url = f"http://127.0.0.1:{servers[name].port}/mcp"
            warm = eb.h2load_cmd(url, body, args.c, args.m, args.warmup)
            subprocess.run(warm, capture_output=True, timeout=args.timeout, check=True)
        for i in range(1, args.runs + 1):
            if args.budget and time.monotonic() - started > args.budget:
                print(f"budget spent: stopping after {i - 1} runs", file=sys.stderr)
                break
            for load, c, m, n in (
                ("single", 1, 1, args.n_single),
                ("loaded", args.c, args.m, args.n_loaded),
            ):
                for name in gb.rotated(names, i):
                    v = BY_NAME[name]
                    r = Run(load, name, i, n, c, m, kind=v.kind, cluster_checks=v.cluster_checks)
                    measure(servers[name], floor, body, r, workdir, args)
                    runs.append(r)
                    print(
                        f"{load:6} {name:16} run {i}: {r.rps:8,.0f} req/s  p50 "
                        f"{gb.fmt_us(r.p50):>8}  p99 {gb.fmt_us(r.p99):>8}  envoy "
                        f"{r.envoy_cpu_us:4.0f} µs {r.envoy_cs:4.1f} cs  floor "
                        f"{r.floor_cpu_us:4.0f} µs  busy {r.quiet_before:.2f}  steal "
                        f"{r.steal_cores:.2f}  {'; '.join(r.problems) or 'ok'}",
                        file=sys.stderr,
                        flush=True,
                    )
            if args.json:
                args.json.write_text(json.dumps([asdict(r) for r in runs], indent=1))
        if args.syscalls:
            table = {n: syscalls(servers[n], body, args.syscalls, workdir, args) for n in names}
            keys = sorted({k for t in table.values() for k in t},
                          key=lambda k: -max(t.get(k, 0) for t in table.values()))  # fmt: skip
            keys = [k for k in keys if max(t.get(k, 0) for t in table.values()) >= 0.05]
            print(f"\nEnvoy's syscalls per request (strace -c -f, {args.syscalls:,} requests "
                  "one in flight; strace slows everything, counts only)\n")  # fmt: skip
            print("| syscall | " + " | ".join(names) + " |")
            print("|---|" + "---:|" * len(names))
            for k in [*keys, "all"]:
                vals = [sum(table[n].values()) if k == "all" else table[n].get(k, 0) for n in names]
                print(f"| {k} | " + " | ".join(f"{x:.2f}" for x in vals) + " |")
    finally:
        for s in servers.values():
            s.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if runs:
        print(report(args, runs, names, notes, time.monotonic() - started))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
