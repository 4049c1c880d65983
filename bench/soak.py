"""An hour under load: the sidecar behind the deployed Envoy at half of saturation, a mix of
calls checked one by one against a model, the policy reloaded all along. Run on purpose; a
short version runs in CI (scripts/test) and in tests/test_soak.py as a test of the
invariants, not of speed.

What runs, all on 127.0.0.1: ``toolgate serve`` on a soak policy written into a temporary
directory (``--store local``: the sidecar's own table; ``--store redis``: a redis-server
started for the run), approvals in a state directory there; Envoy from
deploy/envoy/mcp-ext-authz.yaml as Envoy parses it (``harness.envoy.bench_config``: only
ports, the server id and the upstream swapped), its ``mcp`` route to a second Envoy standing
in for the MCP server (a constant result, HTTP/1.1 as the deployed cluster speaks).

The load: bench/openloop/openloop.c in ``-http`` mode, POST /mcp over h2c with the bench's
headers (one grant), at a fixed arrival rate (open loop: a slow answer does not slow the
sending), in back-to-back chunks of ``--sample`` seconds; each chunk is a sample. Its
requests cycle through 22 ``tools/call`` bodies, so the mix is (by weight):

- ``allowed`` 8: read_file, a limit of 1e9 a minute (so every call is counted in the store,
  and on Redis its reservation expires a minute later: its memory levels off in the run);
- ``denied`` 3: run_command ``rm -rf``, refused by a ``deny_if`` (CONDITION_FAILED);
- ``unknown`` 1: a tool the policy does not name (DEFAULT_DENY);
- ``capped`` 3: deploy, ``--cap`` calls a day per grant: far fewer than the run sends, on a
  window longer than the run, so exactly CAP calls are ALLOWED over the whole run and every
  other is RATE_LIMITED (a reload that reset or lost a counter would show here);
- ``sliding`` 3: search, a 1-second window whose max is a quarter of what the mix sends it
  per second: in a sample at most max x (ceil(span / 1 s) + 1) are ALLOWED, and some are;
- ``approval`` 4: terminate_instances (``require_approval``), four distinct calls each sent
  over and over: APPROVAL_REQUIRED every time, and exactly four approvals pending at the end
  (a repeated call finds its pending approval; none expires during the run).

Each answer is tallied by the generator (body, ``x-toolgate-code``, HTTP status, how it
ended). Every sample is checked three ways: the client's tallies against the model; toolgate's
``toolgate_decisions_total{api="ext_authz"}`` by code against the client's; Envoy's
counters (``ext_authz.ok`` = allowed, ``ext_authz.denied`` = the rest, no ``ext_authz.error``,
one Check per call on the toolgate cluster, every allowed call and no other on the mcp
cluster and on the upstream Envoy). An error is anything not an expected answer: a
transport error, a status other than 200, a timeout, a code the model does not allow.

The policy is rewritten every ``--reload`` seconds by a thread of its own (a new file renamed
over the old, as a ConfigMap update is; the denial's reason names the generation, so each
reload is a new revision), offset by half a period from the start of the samples; the
sidecar's watcher loads it, and ``toolgate_policy_reloads_total{result="success"}`` must
count every one, the last revision loaded at the end.

Sampled every chunk: p50/p99 (from the generator, from each request's intended send time),
errors, counts, VmRSS and open fds of the sidecar, Envoy and the upstream Envoy (and
redis-server's with its ``used_memory``), their CPU. The aims: the sidecar's RSS grows ≤ 5%
after the warm-up (the first ``--warmup-samples``, a tenth by default: the median of the last
three samples against the first three after it), p99 drifts ≤ 20% (the same medians), zero
errors, zero count mismatches, and open fds not growing (the last sample within 4 of the most
seen in the warm-up: Envoy renews its sidecar connection every 1000 requests; the sidecar's
and redis-server's counted without the Redis connection each of the sidecar's deciding
threads keeps: that pool grows in a slow spell of Redis, up to its bound, and is kept).
Exit status 1 when an invariant fails (counts, errors, fds, reloads) or, without ``--check``,
a speed aim is missed.

The rate: ``--rate`` calls/s, or half of saturation, measured first through the same Envoy
by h2load (``-c 4 -m 8``, 5 s, the allowed call: the dearest path, through the upstream).

    .venv/bin/python bench/soak.py --store local                  # the hour, on the table
    .venv/bin/python bench/soak.py --store redis                  # the hour, on Redis
    .venv/bin/python bench/soak.py --minutes 5 --store redis --rate 300 --check   # CI

``--check`` is the CI mode, a test of invariants, not of speed: the speed aims do not set the
exit status, and the deadlines only a slow machine misses (ext_authz's 0.1 s, the store's
5 ms) are raised to 2 s and 1 s unless given. Writes every sample to target/soak-STORE.json
(``--json``) and prints a markdown summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import harness as h
import toolgate
from harness import envoy as ev
from harness import redis
from prometheus_client.parser import text_string_to_metric_families
from toolgate._core import SidecarSettings

#: (class, tool, arguments, weight, the x-toolgate-code values the model allows).
MIX = (
    ("allowed", "read_file", {"path": "/srv/reports/q3.txt"}, 8, ("ALLOWED",)),
    ("denied", "run_command", {"command": "rm -rf /srv/reports"}, 3, ("CONDITION_FAILED",)),
    ("unknown", "drop_database", {"name": "prod"}, 1, ("DEFAULT_DENY",)),
    ("capped", "deploy", {"service": "web"}, 3, ("ALLOWED", "RATE_LIMITED")),
    ("sliding", "search", {"query": "open incidents"}, 3, ("ALLOWED", "RATE_LIMITED")),
    *(
        ("approval", "terminate_instances", {"ids": [f"i-{k}"]}, 1, ("APPROVAL_REQUIRED",))
        for k in range(4)
    ),
)
CLASSES = {c: codes for c, _, _, _, codes in MIX}
APPROVAL_CALLS = sum(1 for c, *_ in MIX if c == "approval")
SLIDING_WINDOW_S = 1.0
CODE_HEADER = "x-toolgate-code"
#: Open fds may exceed the most seen in the warm-up by this many: connections being renewed.
FD_SLACK = 4
AIM_RSS_GROWTH = 0.05
AIM_P99_DRIFT = 0.20
#: How long counters may take to show a sample's calls (they are updated before or as the
#: answer leaves: normally at once).
SETTLE_S = 5.0
CHECK_AUTHZ_TIMEOUT_S, CHECK_STORE_TIMEOUT_MS = 2.0, 1000


# --- the mix ---------------------------------------------------------------------------------


def request(i: int, tool: str, arguments: dict) -> bytes:
    body = {
        "jsonrpc": "2.0",
        "id": i + 1,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments},
    }
    return json.dumps(body, separators=(",", ":")).encode()


def bodies() -> list[tuple[str, bytes]]:
    """The cycle of (class, request) the generator sends in turn: each entry of MIX as often
    as its weight, spread evenly over the cycle; the first is an allowed call (the
    generator's warm-up calls send the first body)."""
    slots = sorted(
        ((k + 0.5) / weight, j) for j, (_, _, _, weight, _) in enumerate(MIX) for k in range(weight)
    )
    out = []
    for i, (_, j) in enumerate(slots):
        cls, tool, arguments, _, _ = MIX[j]
        out.append((cls, request(i, tool, arguments)))
    return out


def sliding_max(rate: float) -> int:
    """The search limit's max: a quarter of the calls the mix sends it per window."""
    share = sum(w for c, _, _, w, _ in MIX if c == "sliding") / sum(w for *_, w, _ in MIX)
    return max(2, int(rate * share * SLIDING_WINDOW_S / 4))


def policy(generation: int, cap: int, sliding: int, approval_timeout_s: int) -> dict:
    """The soak policy; ``generation`` only changes a denial's reason (a harmless change
    that still makes a new revision)."""

    def limit(counter: str, window: str, max_: int) -> dict:
        return {"counter": counter, "window": window, "max": max_, "scope": "grant"}

    destructive = {"path": "args.command", "op": "regex", "value": r"(^|\s)(rm|mkfs|dd)\s"}
    return {
        "version": "1",
        "default": "deny",
        "tools": {
            "read_file": {"limits": [limit("read_file_rate", "minute", 1_000_000_000)]},
            "run_command": {
                "deny_if": [
                    {
                        "conditions": [destructive],
                        "on_deny": "Destructive shell commands are not allowed "
                        f"(policy generation {generation}).",
                    }
                ]
            },
            "deploy": {"limits": [limit("deploy_cap", "day", cap)]},
            "search": {"limits": [limit("search_rate", f"{SLIDING_WINDOW_S:g}s", sliding)]},
            "terminate_instances": {
                "action": "require_approval",
                "reason": "Terminating instances needs a person's approval.",
                "approval": {"timeout": f"{approval_timeout_s}s"},
            },
        },
    }


# --- the model -------------------------------------------------------------------------------


def classify(rows: list[dict], classes: list[str]) -> tuple[Counter, list[str]]:
    """The generator's tally rows as counts by (class, code), and the errors: every answer
    that is not HTTP 200 with a code the model allows for its class, or did not end well."""
    counts: Counter = Counter()
    errors = []
    for row in rows:
        cls, code = classes[row["body"]], row["value"]
        if row["end"] != "ok" or row["status"] != 200 or code not in CLASSES[cls]:
            errors.append(
                f"{row['count']} x {cls}: HTTP {row['status'] or '-'}, {CODE_HEADER} {code}, "
                f"{row['end']}"
            )
        else:
            counts[cls, code] += row["count"]
    return counts, errors


@dataclass
class Model:
    """What the answers must be, sample after sample."""

    cap: int
    sliding: int  # the search limit's max per SLIDING_WINDOW_S
    capped_sent: int = 0  # calls of the capped class so far (answered well)
    capped_allowed: int = 0

    def check(self, counts: Counter, span_s: float) -> list[str]:
        """Problems with one sample's counts (calls answered as the model allows)."""
        problems = []
        sent = counts["capped", "ALLOWED"] + counts["capped", "RATE_LIMITED"]
        # Exactly the first CAP capped calls of the run are allowed, whatever reloads came.
        want = min(self.cap, self.capped_sent + sent) - min(self.cap, self.capped_sent)
        if counts["capped", "ALLOWED"] != want:
            problems.append(
                f"capped: {counts['capped', 'ALLOWED']} ALLOWED of {sent} (want {want}: "
                f"{self.capped_allowed} of the cap {self.cap} used before)"
            )
        self.capped_sent += sent
        self.capped_allowed += counts["capped", "ALLOWED"]
        allowed = counts["sliding", "ALLOWED"]
        bound = self.sliding * (math.ceil(span_s / SLIDING_WINDOW_S) + 1)
        if allowed > bound:
            problems.append(f"sliding: {allowed} ALLOWED in {span_s:.1f} s (at most {bound})")
        if span_s >= 2 * SLIDING_WINDOW_S and counts["sliding", "RATE_LIMITED"] and not allowed:
            problems.append("sliding: none ALLOWED in the sample: the window does not slide")
        return problems


def by_code(counts: Counter) -> Counter:
    out: Counter = Counter()
    for (_, code), n in counts.items():
        out[code] += n
    return out


def envoy_want(counts: Counter) -> dict[str, int]:
    """Envoy's counters (front and upstream) a sample's calls must move, and by how much."""
    codes = by_code(counts)
    total, allowed = sum(codes.values()), codes["ALLOWED"]
    return {
        "http.mcp.downstream_rq_2xx": total,
        "http.mcp.ext_authz.ok": allowed,
        "http.mcp.ext_authz.denied": total - allowed,
        "http.mcp.ext_authz.error": 0,
        "http.mcp.ext_authz.failure_mode_allowed": 0,
        "cluster.toolgate.upstream_rq_200": total,
        "cluster.toolgate.upstream_rq_timeout": 0,
        # ext_authz charges a denial's status to the route's cluster (upstream_rq_200,
        # upstream_rq_completed) as if it had gone there: upstream_rq_total counts what did.
        "cluster.mcp.upstream_rq_total": allowed,
        "cluster.mcp.ext_authz.denied": total - allowed,
        "upstream:http.upstream.downstream_rq_2xx": allowed,
    }


def compare(what: str, want: dict, got: dict) -> list[str]:
    return [
        f"{what} {k} +{got.get(k, 0):g} (want {v:g})" for k, v in want.items() if got.get(k, 0) != v
    ]


def toolgate_want(counts: Counter) -> dict[str, float]:
    """The sidecar's counters a sample's calls must move: its ext_authz decisions by code,
    and nothing it counts as a failure."""
    want = {f"decisions:{code}": n for code, n in by_code(counts).items()}
    for k in ("grpc_errors", "store_errors", "store_fallbacks", "table_full", "reload_failures"):
        want[k] = 0
    return want


# --- servers and what they show ----------------------------------------------------------------


def sidecar(path: Path, workdir: Path, args, store: h.Server | None) -> h.Server:
    port, mport = h.free_port(), h.free_port()
    extra = ["--state-dir", str(workdir / "state"), "--reload-interval", "0.5"]
    if store is not None:
        extra += ["--store", redis.url(store)]
        extra += ["--store-timeout-ms", str(args.store_timeout_ms)]
    cmd = h.serve_cmd(port, *extra, policy=path, metrics=mport)
    probe = h.decide_request(True, ev.GRANT, ev.SERVER_ID)
    return h.start_grpc("toolgate", cmd, port, workdir, probe, metrics_port=mport)


def toolgate_counts(port: int) -> dict[str, float]:
    """What the model checks in the sidecar's /metrics, by short names."""
    out: dict[str, float] = Counter()
    for family in text_string_to_metric_families(h.scrape(port)):
        for s in family.samples:
            lab = s.labels
            if s.name == "toolgate_decisions_total" and lab.get("api") == "ext_authz":
                out[f"decisions:{lab['code']}"] += s.value
            elif s.name == "toolgate_grpc_errors_total":
                out["grpc_errors"] += s.value
            elif s.name == "toolgate_store_errors_total":
                out["store_errors"] += s.value
            elif s.name == "toolgate_store_fallbacks_total":
                out["store_fallbacks"] += s.value
            elif s.name == "toolgate_counter_table_full_total":
                out["table_full"] += s.value
            elif s.name == "toolgate_policy_reloads_total":
                out["reloads" if lab.get("result") == "success" else "reload_failures"] += s.value
            elif s.name == "toolgate_approvals":
                out[f"approvals:{lab['state']}"] += s.value
            elif s.name == "toolgate_policy_info" and s.value == 1:
                out[f"revision:{lab['revision']}"] = 1
    return out


def envoy_counts(envoy: h.Server, upstream: h.Server) -> dict[str, int]:
    out = dict(ev.stats(envoy, "toolgate|mcp"))
    text = ev.admin_get(upstream.admin, "/stats?filter=^http\\.upstream\\.")
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            out[f"upstream:{name}"] = int(value)
    return out


def settled(read, before: dict, want: dict) -> dict:
    """``read() - before`` once it shows ``want`` (or SETTLE_S has passed)."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        got = ev.diff(read(), before)
        if not compare("", want, got) or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def fds(server: h.Server) -> int:
    try:
        return len(os.listdir(f"/proc/{server.proc.pid}/fd"))
    except OSError:
        return -1


#: The name of the sidecar's deciding threads (those that wait on Redis while it is slow).
DECIDING_THREAD = "toolgate-decide"


def threads_named(server: h.Server, name: str) -> int:
    """How many of the process's threads are called ``name``."""
    count = 0
    for task in Path(f"/proc/{server.proc.pid}/task").glob("*/comm"):
        with contextlib.suppress(OSError):  # a thread gone since the listing
            count += task.read_text().strip() == name
    return count


def steady_fds(sample: dict) -> dict[str, int]:
    """Open fds less the Redis connection each deciding thread keeps, on both its ends."""
    kept = sample.get("deciding_threads", 0)
    return {
        name: n - kept if name in ("toolgate", "redis") else n for name, n in sample["fds"].items()
    }


# --- the reloads -------------------------------------------------------------------------------


class Reloader(threading.Thread):
    """Writes the policy's next generation every ``every`` seconds, the first ``offset``
    seconds after ``start()``: a new file renamed over the old one."""

    def __init__(self, path: Path, make, every: float, offset: float) -> None:
        super().__init__(name="soak-reloader", daemon=True)
        self.path, self.make, self.every, self.offset = path, make, every, offset
        self.written = 0
        self.revisions = [write_policy(path, make(0))]
        self.stop = threading.Event()

    def run(self) -> None:
        due = time.monotonic() + self.offset
        while not self.stop.wait(max(0.0, due - time.monotonic())):
            self.revisions.append(write_policy(self.path, self.make(self.written + 1)))
            self.written += 1
            due += self.every


def write_policy(path: Path, document: dict) -> str:
    """Write the policy whole and rename it over ``path``; its revision."""
    text = json.dumps(document, indent=1)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return toolgate.Policy.from_str(text, path=str(path)).revision


# --- the run -----------------------------------------------------------------------------------


def saturation(envoy: h.Server, body: Path) -> float:
    """Calls/s h2load completes through Envoy with the allowed call, closed loop."""
    if not shutil.which("h2load"):
        sys.exit("h2load not found (apt-get install -y nghttp2-client): or give --rate")
    url = f"http://127.0.0.1:{envoy.port}/mcp"
    warm = h.h2load_cmd(url, body, 4, 4, n=500, headers=ev.H2LOAD_HEADERS)
    subprocess.run(warm, capture_output=True, timeout=60, check=True)
    cmd = h.h2load_cmd(url, body, 4, 8, duration=5, headers=ev.H2LOAD_HEADERS)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    summary = h.parse_summary(out)
    if summary.get("failed"):
        sys.exit(f"the saturation run failed requests:\n{out}")
    return summary["rps"]


def openloop_cmd(envoy: h.Server, files: list[Path], rate: float, seconds: float, args):
    cmd = [str(h.OPENLOOP), "-http", "-target", f"127.0.0.1:{envoy.port}", "-method", "/mcp"]
    cmd += ["-rate", f"{rate:.1f}", "-duration", f"{seconds:g}", "-conns", str(args.conns)]
    cmd += ["-timeout", f"{args.request_timeout:g}", "-warmup", "5"]
    cmd += ["-tally-header", CODE_HEADER]
    cmd += [x for k, v in ev.HEADERS.items() for x in ("-header", f"{k}: {v}")]
    return cmd + [x for f in files for x in ("-body", str(f))]


def sample(
    k: int, started: float, servers: dict[str, h.Server], files: list[Path], classes: list[str],
    model: Model, reloader: Reloader, args,
) -> dict:  # fmt: skip
    """One chunk of load and everything sampled after it."""
    tg, envoy, upstream = servers["toolgate"], servers["envoy"], servers["upstream"]
    t0, e0 = toolgate_counts(tg.metrics_port), envoy_counts(envoy, upstream)
    cpu0 = {name: s.cpu_seconds() for name, s in servers.items()}
    begun = time.monotonic()
    cmd = openloop_cmd(envoy, files, args.rate, args.sample, args)
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=args.sample + args.request_timeout + 60
    )
    wall = time.monotonic() - begun
    if proc.returncode != 0:
        raise RuntimeError(f"the generator failed: {' '.join(cmd)}\n{proc.stderr}")
    r = json.loads(proc.stdout)
    rows = r["tally"] + r["warmup_tally"]
    counts, errors = classify(rows, classes)
    problems = model.check(counts, r["wall_s"])
    tg_want = toolgate_want(counts)
    tg_got = settled(lambda: toolgate_counts(tg.metrics_port), t0, tg_want)
    tg_got = {k: v for k, v in tg_got.items() if not k.startswith(("approvals:", "revision:"))}
    tg_got.pop("reloads", None)
    # Whatever else moved must not have: a decision the client never saw, say.
    problems += compare("toolgate", tg_want | dict.fromkeys(tg_got.keys() - tg_want, 0), tg_got)
    envoy_got = settled(lambda: envoy_counts(envoy, upstream), e0, envoy_want(counts))
    problems += compare("Envoy", envoy_want(counts), envoy_got)
    now = toolgate_counts(tg.metrics_port)
    s = {
        "index": k,
        "t_s": round(time.monotonic() - started, 3),
        "wall_s": round(wall, 3),
        "span_s": r["wall_s"],
        "sent": r["sent"] + r["warmup"],
        "achieved_rps": r["achieved_rps"],
        "p50_us": r["latency_us"]["p50"],
        "p99_us": r["latency_us"]["p99"],
        "p999_us": r["latency_us"]["p99.9"],
        "late_over_1ms": r["late_over_1ms"],
        "errors": sum(row["count"] for row in rows) - sum(counts.values()),
        "error_detail": errors,
        "counts": {f"{c}:{code}": n for (c, code), n in sorted(counts.items())},
        "toolgate": {k: v for k, v in tg_got.items() if k.startswith("decisions:")},
        "envoy": {k: envoy_got.get(k, 0) for k in envoy_want(counts)},
        "reloads_written": reloader.written,
        "reloads_loaded": now.get("reloads", 0),
        "rss_mib": {name: round(srv.rss_mib(), 2) for name, srv in servers.items()},
        "fds": {name: fds(srv) for name, srv in servers.items()},
        "deciding_threads": threads_named(servers["toolgate"], DECIDING_THREAD),
        "cpu_cores": {
            name: round((srv.cpu_seconds() - cpu0[name]) / wall, 3) for name, srv in servers.items()
        },
        "problems": problems,
    }
    if "redis" in servers:
        s["redis_used_memory"] = int(redis.info(servers["redis"].port)["used_memory"])
    return s


def loaded(tg: h.Server, revision: str) -> dict[str, float]:
    """The sidecar's counters once it serves ``revision``."""
    deadline = time.monotonic() + 3 * SETTLE_S
    while f"revision:{revision}" not in (now := toolgate_counts(tg.metrics_port)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the sidecar did not load revision {revision}")
        time.sleep(0.1)
    return now


def final_checks(tg: h.Server, reloader: Reloader, base: dict) -> tuple[list[str], dict]:
    """After the last sample: every reload loaded, the last revision live, the approvals
    pending as the model says and none in any other state."""
    deadline = time.monotonic() + 3 * SETTLE_S
    want_rev = f"revision:{reloader.revisions[-1]}"
    while True:
        now = toolgate_counts(tg.metrics_port)
        loaded = now.get("reloads", 0) - base.get("reloads", 0)
        approvals = {k.split(":", 1)[1]: v for k, v in now.items() if k.startswith("approvals:")}
        problems = []
        if loaded != reloader.written:
            problems.append(f"{loaded:g} reloads loaded, {reloader.written} written")
        if want_rev not in now:
            live = [k for k in now if k.startswith("revision:")]
            problems.append(f"policy revision {live}, not the last written ({want_rev})")
        if approvals.get("PENDING", 0) != APPROVAL_CALLS:
            problems.append(f"{approvals.get('PENDING', 0):g} approvals pending")
        if others := {k: v for k, v in approvals.items() if k != "PENDING" and v}:
            problems.append(f"approvals in other states: {others}")
        if not problems or time.monotonic() > deadline:
            return problems, {"reloads_loaded": loaded, "approvals": approvals}
        time.sleep(0.2)


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def aims(samples: list[dict], warmup: int) -> dict:
    """The aims from the samples after the warm-up: each figure and whether it is met."""
    post = samples[warmup:]
    k = max(1, min(3, len(post) // 3))
    first, last = post[:k], post[-k:]

    def growth(f) -> tuple[float, float, float]:
        a, b = median([f(s) for s in first]), median([f(s) for s in last])
        return (b / a - 1 if a else float("nan")), a, b

    rss, _, _ = growth(lambda s: s["rss_mib"]["toolgate"])
    p99, p99_from, p99_to = growth(lambda s: s["p99_us"])
    fd_limits = {
        name: max(steady_fds(s)[name] for s in samples[: max(warmup, 1)]) + FD_SLACK
        for name in samples[0]["fds"]
    }
    last = steady_fds(samples[-1])
    fd_over = {name: last[name] for name, limit in fd_limits.items() if last[name] > limit}
    errors = sum(s["errors"] for s in samples)
    mismatches = sum(len(s["problems"]) for s in samples)
    return {
        "rss_growth": {"value": rss, "met": rss <= AIM_RSS_GROWTH, "speed": True},
        "p99_drift": {
            "value": p99,
            # The medians compared: of the first samples after the warm-up, of the last.
            "from_us": p99_from,
            "to_us": p99_to,
            "met": p99 <= AIM_P99_DRIFT,
            "speed": True,
        },
        "errors": {"value": errors, "met": errors == 0, "speed": False},
        "count_mismatches": {"value": mismatches, "met": mismatches == 0, "speed": False},
        "fds": {"value": fd_over, "limits": fd_limits, "met": not fd_over, "speed": False},
    }


def report(result: dict) -> str:
    s, a = result["samples"], result["aims"]
    warm = result["warmup_samples"]
    post = s[warm:] or s

    def verdict(name: str) -> str:
        return "**met**" if a[name]["met"] else "**missed**"

    def span(f) -> str:
        return f"{f(post[0])} → {f(s[-1])}"

    totals: Counter = Counter()
    for x in s:
        totals.update(x["counts"])
    mix = ", ".join(f"{k} {v:,}" for k, v in sorted(totals.items()))
    rss = " ".join(f"{n} {span(lambda x, n=n: x['rss_mib'][n])} MiB;" for n in s[0]["rss_mib"])
    if "redis_used_memory" in s[0]:
        used = span(lambda x: f"{x['redis_used_memory'] / 2**20:.2f}")
        rss += f" Redis used_memory {used} MiB;"
    fd = " ".join(f"{n} {span(lambda x, n=n: x['fds'][n])};" for n in s[0]["fds"])
    fd += f" the sidecar's deciding threads {span(lambda x: x.get('deciding_threads', 0))};"
    ms = result.get("store_timeout_ms")
    budget = f" (store budget {ms} ms)" if ms else ""
    lines = [
        f"Soak, `--store {result['store']}`{budget}: {result['minutes']:g} min at "
        f"{result['rate']:,.0f} "
        f"calls/s ({result['rate_from']}), {len(s)} samples of {result['sample_s']:g} s "
        f"({warm} of warm-up), the policy reloaded {result['reloads_written']} times "
        f"(every {result['reload_s']:g} s; {result['final'].get('reloads_loaded', 0):g} "
        "loaded).",
        "",
        "| aim | figure | |",
        "|---|---|---|",
        f"| sidecar RSS growth after warm-up ≤ {AIM_RSS_GROWTH:.0%} | "
        f"{a['rss_growth']['value']:+.1%} | {verdict('rss_growth')} |",
        f"| p99 drift ≤ {AIM_P99_DRIFT:.0%} | {a['p99_drift']['value']:+.1%} "
        f"(medians {h.fmt_us(a['p99_drift']['from_us'])} → {h.fmt_us(a['p99_drift']['to_us'])})"
        f" | {verdict('p99_drift')} |",
        f"| zero errors | {a['errors']['value']:,} | {verdict('errors')} |",
        f"| zero count mismatches | {a['count_mismatches']['value']:,} | "
        f"{verdict('count_mismatches')} |",
        "| open fds not growing (less a Redis connection per deciding thread) | "
        f"{a['fds']['value'] or 'none over'} | {verdict('fds')} |",
        "",
        f"Calls by class and code (client, toolgate and Envoy agree sample by sample): {mix}. "
        f"RSS first after warm-up → last: {rss} open fds: {fd} p50 "
        f"{span(lambda x: h.fmt_us(x['p50_us']))}.",
    ]
    if result["problems"]:
        lines += ["", "Problems:", *(f"- {p}" for p in result["problems"][:20])]
    return "\n".join(lines)


def run(args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    servers: dict[str, h.Server] = {}
    reloader = None
    started_at = time.time()
    try:
        h.build_openloop()
        if args.store == "redis":
            servers["redis"] = redis.start(workdir)
        mix = bodies()
        classes = [c for c, _ in mix]
        files = []
        for i, (_, body) in enumerate(mix):
            files.append(workdir / f"body-{i:02}.json")
            files[-1].write_bytes(body)
        rate_from = "given"
        # The sliding limit depends on the rate, which may be measured through the sidecar:
        # a first policy for that, with the reloads' own generation 0 written after it.
        minutes_s = int(args.minutes * 60)
        path = workdir / "policy.json"

        def make(rate: float):
            sliding = sliding_max(rate)
            return lambda g: policy(g, args.cap, sliding, minutes_s + 3600)

        write_policy(path, make(args.rate or 1000.0)(0))
        servers["toolgate"] = tg = sidecar(path, workdir, args, servers.get("redis"))
        uport, uadmin = h.free_port(), h.free_port()
        cfg = workdir / "upstream.json"
        cfg.write_text(json.dumps(ev.upstream_config(uport, uadmin), indent=1))
        servers["upstream"] = ev.start(
            "upstream", cfg, uadmin, workdir, "--concurrency", "1", port=uport
        )
        deployed = ev.deployed_config(ev.DEPLOYED, workdir)
        port, admin = h.free_port(), h.free_port()
        bench = ev.bench_config(
            deployed, authz=True, listen=port, admin=admin, toolgate=tg.port, upstream=uport
        )
        if args.authz_timeout:
            hcm = ev.hcm_of(bench["static_resources"]["listeners"][0])
            (authz,) = [f for f in hcm["http_filters"] if f["name"] == ev.EXT_AUTHZ]
            authz["typed_config"]["grpc_service"]["timeout"] = f"{args.authz_timeout:g}s"
        cfg = workdir / "envoy.json"
        cfg.write_text(json.dumps(bench, indent=1))
        servers["envoy"] = envoy = ev.start("front", cfg, admin, workdir, port=port)
        saturated = None
        if not args.rate:
            saturated = saturation(envoy, files[0])
            args.rate = max(10.0, round(saturated / 2, -1))
            rate_from = f"half of {saturated:,.0f} calls/s saturated"
        reloader = Reloader(path, make(args.rate), args.reload, args.reload / 2)
        model = Model(args.cap, sliding_max(args.rate))
        n = max(2, round(args.minutes * 60 / args.sample))
        warmup = args.warmup_samples if args.warmup_samples is not None else max(1, n // 10)
        base = loaded(tg, reloader.revisions[0])
        started = time.monotonic()
        reloader.start()
        samples = []
        for k in range(n):
            s = sample(k, started, servers, files, classes, model, reloader, args)
            samples.append(s)
            print(
                f"sample {k + 1:3}/{n}: {s['sent']:6,} calls  p50 {h.fmt_us(s['p50_us']):>8}  "
                f"p99 {h.fmt_us(s['p99_us']):>8}  errors {s['errors']}  sidecar "
                f"{s['rss_mib']['toolgate']:.1f} MiB {s['fds']['toolgate']} fds  envoy "
                f"{s['rss_mib']['envoy']:.1f} MiB {s['fds']['envoy']} fds  reloads "
                f"{s['reloads_loaded'] - base.get('reloads', 0):g}/{s['reloads_written']}  "
                f"{'; '.join(s['problems'] + s['error_detail'][:3]) or 'ok'}",
                file=sys.stderr,
                flush=True,
            )
        reloader.stop.set()
        reloader.join()
        problems, final = final_checks(tg, reloader, base)
        result = {
            "store": args.store,
            "store_timeout_ms": args.store_timeout_ms if args.store == "redis" else None,
            "minutes": args.minutes,
            "rate": args.rate,
            "rate_from": rate_from,
            "saturated_rps": saturated,
            "sample_s": args.sample,
            "reload_s": args.reload,
            "cap": args.cap,
            "sliding_max": model.sliding,
            "approval_calls": APPROVAL_CALLS,
            "warmup_samples": warmup,
            "reloads_written": reloader.written,
            "revisions": len(set(reloader.revisions)),
            "final": final,
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started_at)),
            "samples": samples,
            "aims": aims(samples, warmup),
        }
        result["problems"] = [
            *(f"sample {s['index'] + 1}: {p}" for s in samples for p in s["problems"]),
            *(f"sample {s['index'] + 1}: {e}" for s in samples for e in s["error_detail"]),
            *problems,
        ]
        result["aims"]["final_checks"] = {"value": problems, "met": not problems, "speed": False}
        return result
    finally:
        if reloader is not None:
            reloader.stop.set()
        for s in reversed(servers.values()):
            s.stop()
        if args.keep:
            print(f"logs and files kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def failed(result: dict, check: bool) -> list[str]:
    """The aims whose miss sets the exit status: all, or with ``check`` the invariants."""
    return [k for k, a in result["aims"].items() if not a["met"] and not (check and a["speed"])]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--store", choices=("local", "redis"), default="local")
    p.add_argument("--rate", type=float, help="calls/s (default: half of saturation)")
    p.add_argument("--sample", type=float, default=10.0, help="seconds per sample (10)")
    p.add_argument("--reload", type=float, default=10.0, help="reload every S seconds (10)")
    p.add_argument("--warmup-samples", type=int, help="default: a tenth of the samples")
    p.add_argument("--cap", type=int, default=50, help="the capped tool's calls a day (50)")
    p.add_argument("--conns", type=int, default=4, help="the generator's connections (4)")
    p.add_argument("--request-timeout", type=float, default=5.0, help="per call, s (5)")
    p.add_argument("--authz-timeout", type=float, help="ext_authz's (deployed: 0.1 s)")
    p.add_argument(
        "--store-timeout-ms", type=int, help=f"the sidecar's ({SidecarSettings().store_timeout_ms})"
    )
    p.add_argument("--check", action="store_true", help="CI: only invariants set the status")
    p.add_argument("--json", type=Path, help="default: target/soak-STORE.json")
    p.add_argument("--keep", action="store_true", help="keep the logs and files")
    args = p.parse_args()
    if args.check:
        args.authz_timeout = args.authz_timeout or CHECK_AUTHZ_TIMEOUT_S
        args.store_timeout_ms = args.store_timeout_ms or CHECK_STORE_TIMEOUT_MS
    args.store_timeout_ms = args.store_timeout_ms or SidecarSettings().store_timeout_ms
    # SIGTERM (CI, a timeout) cleans up as Ctrl-C does: every server stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = run(args)
    out = args.json or h.TARGET / f"soak-{args.store}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(report(result))
    print(f"\nevery sample in {out}", file=sys.stderr)
    if bad := failed(result, args.check):
        print(f"soak failed: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
