"""gRPC ``Decide`` against the transport floor, driven by h2load (DESIGN.md §7).

One command, run on purpose (never by the tests):

1. writes the pre-framed gRPC body (a 0 byte, a 4-byte big-endian length, a serialized
   ``toolgate.v1.DecideRequest``: tool ``run_command``, a grant, and a command the policy's
   regex does not match) to a file;
2. starts ``toolgate serve --policy bench/policy_grpc.json --metrics-listen off`` and the floor
   (``bench/grpc_floor.py``: a grpcio server on the same settings whose handler returns a
   constant, here the sidecar's own answer to the same request), and waits until each answers;
3. runs h2load against each, one request in flight (``-c 1 -m 1``) and saturated (``-c 16 -m 8``
   by default), alternating floor and Decide, three runs each, after a warm-up;
4. takes p50/p99/p99.9 from h2load's ``--log-file`` (start time, status, µs per request) and
   throughput from its summary; notes each server's CPU time per request and how busy the rest
   of the machine was during each run;
5. checks the server's own counters, since h2load counts gRPC errors (HTTP 200 with an error in
   the trailers) as successes: the policy's limit counts every allowed call in a day window
   with a 1e9 maximum, so a dry-run Decide before and after each run must show exactly as many
   calls consumed as h2load says it completed; and once more with ``--metrics-listen`` on,
   comparing ``toolgate_decisions_total`` with the requests sent;
6. profiles both servers under saturated load (``perf record -g`` for the native side, and
   py-spy for the Python side if it is installed), times ``engine.decide_wire`` from Python,
   prints markdown, and rewrites the block between ``<!-- BEGIN grpc -->`` and
   ``<!-- END grpc -->`` in bench/RESULTS.md.

    .venv/bin/python bench/grpc_bench.py              # everything (~4-5 min on 2 quiet cores)
    .venv/bin/python bench/grpc_bench.py --print      # print instead of writing RESULTS.md
    .venv/bin/python bench/grpc_bench.py --no-profile --runs 1 -n1 5000 -ns 20000   # quick
"""

from __future__ import annotations

import argparse
import datetime
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
import tempfile
import time
import timeit
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "bench" / "policy_grpc.json"
RESULTS = ROOT / "bench" / "RESULTS.md"
FLOOR_SCRIPT = ROOT / "bench" / "grpc_floor.py"
METHOD = "/toolgate.v1.Decider/Decide"
GRANT = "bench-grant"
ARGUMENTS = b'{"command": "ls -la /var/log/nginx"}'
BEGIN, END = "<!-- BEGIN grpc -->", "<!-- END grpc -->"
SECTION = "## gRPC Decide vs the transport floor"
CLK_TCK = os.sysconf("SC_CLK_TCK")
AIM_P50 = 1.15
AIM_RPS = 0.85
X = "\u00d7"  # multiplication sign


# --- requests ------------------------------------------------------------------------------


def decide_request(dry_run: bool = False) -> bytes:
    from toolgate.v1 import decider_pb2 as pb

    return pb.DecideRequest(
        tool="run_command",
        subject=pb.Subject(grant=GRANT),
        arguments_json=ARGUMENTS,
        dry_run=dry_run,
    ).SerializeToString()


def grpc_frame(message: bytes) -> bytes:
    return b"\0" + struct.pack(">I", len(message)) + message


def call_raw(port: int, payload: bytes, timeout: float = 2.0) -> bytes:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return channel.unary_unary(METHOD)(payload, timeout=timeout)


def remaining(port: int) -> int:
    """The limit's room left, by a dry-run Decide (consumes nothing)."""
    from toolgate.v1 import decider_pb2 as pb

    resp = pb.DecideResponse.FromString(call_raw(port, decide_request(dry_run=True)))
    if resp.verdict != pb.ALLOW or resp.code != pb.ALLOWED or len(resp.limits) != 1:
        raise RuntimeError(f"unexpected dry-run answer: {resp}")
    # dry_run reports the room left as if the call had been counted.
    return int(resp.limits[0].remaining) + 1


# --- processes and CPU accounting ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen
    log: Path

    def cpu_seconds(self) -> float:
        """utime + stime of the whole process (all threads)."""
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def context_switches(self) -> int:
        """Voluntary + involuntary context switches of all the process's threads."""
        total = 0
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                status = (task / "status").read_text()
            except OSError:
                continue
            total += sum(
                int(x) for x in re.findall(r"^\w*voluntary_ctxt_switches:\s+(\d+)", status, re.M)
            )
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(name: str, cmd: list[str], port: int, workdir: Path, probe: bytes) -> Server:
    log = workdir / f"{name}.log"
    proc = subprocess.Popen(
        cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT
    )
    server = Server(name, port, proc, log)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited ({proc.returncode}):\n{log.read_text()}")
        try:
            call_raw(port, probe, timeout=1.0)
            return server
        except grpc.RpcError as err:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(
                    f"{name} did not answer on port {port}:\n{log.read_text()}"
                ) from err
            time.sleep(0.2)


def toolgate_exe() -> str:
    local = ROOT / ".venv" / "bin" / "toolgate"
    found = str(local) if local.exists() else shutil.which("toolgate")
    if not found:
        raise SystemExit("toolgate not found: install the package (see README.md)")
    return found


def cpu_ticks() -> tuple[int, int]:
    """(busy, steal) clock ticks over all CPUs since boot."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = v[:8]
    return user + nice + system + irq + softirq + steal, steal


def wait_quiet(max_wait: float, threshold: float) -> float:
    """Wait (up to max_wait s) until the machine's busy CPUs, sampled over 1 s, are under
    threshold cores; return the last sample. Between runs our own servers are idle."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, _ = cpu_ticks()
        time.sleep(1.0)
        busy = (cpu_ticks()[0] - b0) / CLK_TCK
        if busy < threshold or time.monotonic() >= deadline:
            return busy


# --- h2load --------------------------------------------------------------------------------


@dataclass
class Run:
    load: str
    server: str
    index: int
    n: int
    c: int
    m: int
    rps: float = 0.0
    succeeded: int = 0
    failed: int = 0
    p50: float = 0.0
    p99: float = 0.0
    p999: float = 0.0
    server_cpu_us: float = 0.0  # server CPU time per request, µs
    server_cs: float = 0.0  # server context switches (all threads) per request
    h2load_cores: float = 0.0
    other_cores: float = 0.0  # CPU used by everything else on the machine, in cores
    steal_cores: float = 0.0
    quiet_before: float = 0.0
    consumed: int | None = None  # Decide only: calls the limit counted during the run


def h2load_cmd(url: str, body: Path, c: int, m: int, n: int | None = None, duration=None):
    cmd = ["h2load", "-t", "1", "-c", str(c), "-m", str(m)]
    cmd += ["-D", str(duration)] if duration else ["-n", str(n)]
    cmd += ["-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(body), url]
    return cmd


def parse_summary(out: str) -> dict[str, float]:
    res: dict[str, float] = {}
    m = re.search(r"finished in ([\d.]+)(s|ms|us), ([\d.]+) req/s", out)
    if not m:
        raise RuntimeError(f"cannot read h2load's summary:\n{out}")
    scale = {"s": 1.0, "ms": 1e-3, "us": 1e-6}[m.group(2)]
    res["elapsed"], res["rps"] = float(m.group(1)) * scale, float(m.group(3))
    m = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", out
    )
    if m:
        res["done"], res["succeeded"], res["failed"] = map(int, m.group(3, 4, 5))
    return res


def percentile(sorted_values: list[int], q: float) -> float:
    """Nearest-rank percentile."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(-(-q * len(sorted_values) // 1)) - 1))
    return float(sorted_values[k])


def read_log(path: Path) -> tuple[list[int], Counter]:
    """Per-request durations (µs) of HTTP 200 responses, and all status codes seen."""
    durations, statuses = [], Counter()
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        statuses[parts[1]] += 1
        if parts[1] == "200":
            durations.append(int(parts[2]))
    durations.sort()
    return durations, statuses


def run_h2load(
    server: Server, body: Path, run: Run, workdir: Path, timeout: float, quiet: tuple
) -> Run:
    url = f"http://127.0.0.1:{server.port}{METHOD}"
    log = workdir / f"{run.load}-{server.name}-{run.index}.log"
    cmd = [*h2load_cmd(url, body, run.c, run.m, n=run.n), "--log-file", str(log)]
    run.quiet_before = wait_quiet(*quiet)
    before = remaining(server.port) if server.name == "decide" else None
    b0, s0 = cpu_ticks()
    srv0, cs0 = server.cpu_seconds(), server.context_switches()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    srv = server.cpu_seconds() - srv0
    cs = server.context_switches() - cs0
    b1, s1 = cpu_ticks()
    if proc.returncode != 0:
        raise RuntimeError(f"h2load failed: {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    summary = parse_summary(proc.stdout)
    durations, statuses = read_log(log)
    h2 = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    run.rps = summary["rps"]
    run.succeeded = int(summary.get("succeeded", len(durations)))
    run.failed = int(summary.get("failed", 0)) + sum(v for k, v in statuses.items() if k != "200")
    run.p50, run.p99, run.p999 = (percentile(durations, q) for q in (0.5, 0.99, 0.999))
    run.server_cpu_us = srv / max(len(durations), 1) * 1e6
    run.server_cs = cs / max(len(durations), 1)
    run.h2load_cores = h2 / wall
    run.other_cores = max(0.0, ((b1 - b0) / CLK_TCK - srv - h2) / wall)
    run.steal_cores = (s1 - s0) / CLK_TCK / wall
    if before is not None:
        run.consumed = before - remaining(server.port)
    log.unlink()
    return run


# --- profiles ------------------------------------------------------------------------------

NATIVE_GROUPS = [
    ("toolgate Rust (`_core`: decide_wire)", "rust"),
    ("CPython interpreter (libpython)", "python"),
    ("grpcio core (cygrpc: C core + Cython)", "cygrpc"),
    ("libc, ld.so, libstdc++, vDSO (malloc, locks, TLS, clock)", "libc"),
    ("kernel: futex (GIL and lock handoffs, thread wake-ups)", "k_futex"),
    ("kernel: TCP over loopback (sendmsg, recvmsg, softirq)", "k_net"),
    ("kernel: epoll", "k_poll"),
    ("kernel: other (preemption, interrupts, other syscalls)", "k_other"),
    ("other / unknown", "other"),
]
_NET = re.compile(
    r"^(tcp_|__tcp|sock_|__sock|__sys_(send|recv)|inet_|ip_|__ip|net_rx|__netif|"
    r"skb_|__skb|loopback|__dev_queue|do_softirq|__x64_sys_(send|recv|read|write))"
)


def _kernel_group(frames: list[tuple[str, str]]) -> str:
    for sym, dso in frames:
        if dso != "[kernel.kallsyms]":
            # The syscall's name can be missing from the kernel part of the chain (rescheduled on
            # the way out): judge by the user-space caller.
            if re.search(r"futex|lll_lock|pthread_cond|pthread_mutex|sem_", sym):
                return "k_futex"
            if re.search(r"sendmsg|recvmsg|__libc_(write|read)|writev|readv", sym):
                return "k_net"
            if "epoll" in sym:
                return "k_poll"
            return "k_other"
        if "futex" in sym:
            return "k_futex"
        if _NET.match(sym):
            return "k_net"
        if "epoll" in sym or sym.startswith("ep_"):
            return "k_poll"
    return "k_other"


def classify_perf(script_out: str) -> tuple[Counter, Counter]:
    """Samples by group, and by leaf symbol, from ``perf script -F ip,sym,dso``."""
    groups: Counter = Counter()
    symbols: Counter = Counter()
    for block in script_out.split("\n\n"):
        frames = []
        for line in block.splitlines():
            m = re.match(r"\s+[0-9a-f]+ (.+) \((.*)\)$", line)
            if m:
                frames.append((m.group(1), os.path.basename(m.group(2)) or m.group(2)))
        if not frames:
            continue
        sym, dso = frames[0]
        if dso == "[kernel.kallsyms]":
            g = _kernel_group(frames)
        elif dso.startswith("_core"):
            g = "rust"
        elif dso.startswith("libpython") or dso.startswith("python3"):
            g = "python"
        elif dso.startswith("cygrpc"):
            g = "cygrpc"
        elif dso.startswith(("libc.", "ld-linux", "libstdc++", "libm.", "[vdso]", "libgcc")):
            g = "libc"
        else:
            g = "other"
        groups[g] += 1
        symbols[f"{sym} ({dso})"] += 1
    return groups, symbols


def classify_pyspy(folded: str) -> tuple[Counter, Counter, int]:
    """py-spy raw stacks (``frame;frame;... count``, GIL holder only): (self time by function,
    inclusive time by function, total samples)."""
    own: Counter = Counter()
    incl: Counter = Counter()
    total = 0
    for line in folded.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        names = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        names = [re.sub(r"\(/[^)]*/(site-packages|python3\.\d+|python)/", "(", f) for f in names]
        own[names[-1]] += n
        for f in set(names):
            incl[f] += n
    return own, incl, total


@dataclass
class Profile:
    server: str
    rps: float = 0.0
    cpu_us: float = 0.0  # server CPU per request during the profiled run
    groups: Counter = field(default_factory=Counter)
    symbols: Counter = field(default_factory=Counter)
    py_own: Counter = field(default_factory=Counter)
    py_incl: Counter = field(default_factory=Counter)
    py_total: int = 0


def profile_server(
    server: Server, body: Path, c: int, m: int, workdir: Path, seconds: int, pyspy: str | None
) -> Profile:
    url = f"http://127.0.0.1:{server.port}{METHOD}"
    total = seconds * (2 if pyspy else 1) + 4
    prof = Profile(server.name)
    srv0, t0 = server.cpu_seconds(), time.monotonic()
    load = subprocess.Popen(
        h2load_cmd(url, body, c, m, duration=total),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(1.5)
        data = workdir / f"perf-{server.name}.data"
        subprocess.run(
            [
                "perf",
                "record",
                "-q",
                "-g",
                "-F",
                "999",
                "-p",
                str(server.proc.pid),
                "-o",
                str(data),
                "--",
                "sleep",
                str(seconds),
            ],
            check=True,
            capture_output=True,
            timeout=seconds + 60,
        )
        if pyspy:
            folded = workdir / f"pyspy-{server.name}.txt"
            subprocess.run(
                [
                    pyspy,
                    "record",
                    "--pid",
                    str(server.proc.pid),
                    "--duration",
                    str(seconds),
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "--gil",
                    "--nonblocking",
                    "-o",
                    str(folded),
                ],
                capture_output=True,
                timeout=seconds + 60,
            )
            if folded.exists():
                prof.py_own, prof.py_incl, prof.py_total = classify_pyspy(folded.read_text())
        out, _ = load.communicate(timeout=total + 60)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    prof.cpu_us = (server.cpu_seconds() - srv0) / max(1.0, time.monotonic() - t0)
    summary = parse_summary(out)
    prof.rps = summary["rps"]
    prof.cpu_us = prof.cpu_us / max(prof.rps, 1.0) * 1e6
    script = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "ip,sym,dso"],
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    prof.groups, prof.symbols = classify_perf(script)
    data.unlink()
    return prof


# --- decide_wire from Python ---------------------------------------------------------------


def time_decide_wire(repeats: int = 9, number: int = 100_000) -> dict[str, float]:
    """Per-call ns of engine.decide_wire, of the service's handler around it, and of an empty
    call with the same shape, from Python (best of ``repeats``)."""
    from toolgate._core import Engine
    from toolgate.service import _unary

    engine = Engine.from_file(POLICY)
    request = decide_request()
    handler = _unary(engine.decide_wire).unary_unary

    def empty(b):
        return b

    cases = {
        "empty Python call `f(b)`": lambda: empty(request),
        "`engine.decide_wire(request)`": lambda: engine.decide_wire(request),
        "the service's handler, `handle(request, context)`": lambda: handler(request, None),
    }
    best = dict.fromkeys(cases, float("inf"))
    # Round-robin over the cases, so a burst of outside load hits all of them alike.
    for _ in range(repeats):
        for name, fn in cases.items():
            best[name] = min(best[name], timeit.timeit(fn, number=number) / number * 1e9)
    return best


WIRE_GROUPS = [
    ("decision (`toolgate_core`: lookup, regex, counter, reservation log)", r"toolgate_core|regex"),
    ("protobuf decode + encode (prost)", r"prost|wire::|varint|encoded_len"),
    ("arguments JSON (serde_json into a Value, IndexMap, SipHash)", r"serde|indexmap|sip::"),
    ("UTF-8 checks", r"from_utf8|utf8"),
    ("malloc, free, memcpy", r"malloc|free|_int_|memmove|memcpy|realloc|finish_grow|alloc::"),
    ("clock (`clock_gettime`)", r"clock_gettime|vdso"),
    ("binding + Python: the call, GIL release/take, bytes object, the loop", r"."),
]

LOOP = """
import sys
from toolgate._core import Engine
engine = Engine.from_file(sys.argv[1])
request = bytes.fromhex(sys.argv[2])
call = engine.decide_wire
for _ in range(int(sys.argv[3])):
    call(request)
"""


def profile_decide_wire(workdir: Path, calls: int = 3_000_000) -> list[tuple[str, float]]:
    """Where decide_wire's time goes, called in a loop from Python (perf, self time)."""
    data = workdir / "perf-wire.data"
    cmd = ["perf", "record", "-q", "-F", "2999", "-D", "1500", "-o", str(data), "--"]
    cmd += [sys.executable, "-c", LOOP, str(POLICY), decide_request().hex(), str(calls)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    rep = subprocess.run(
        ["perf", "report", "-i", str(data), "--no-children", "--sort", "sym", "--stdio", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    data.unlink()
    shares: Counter = Counter()
    for line in rep.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+\[[.k]\]\s+(.*)$", line)
        if not m:
            continue
        sym = m.group(2)
        for label, pattern in WIRE_GROUPS:
            if re.search(pattern, sym):
                shares[label] += float(m.group(1))
                break
    total = sum(shares.values()) or 1.0
    return [(label, shares[label] / total) for label, _ in WIRE_GROUPS]


# --- metrics-on check ----------------------------------------------------------------------


def scrape_decisions(port: int) -> dict[tuple[str, str], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for m in re.finditer(
        r'^toolgate_decisions_total\{code="(\w+)",verdict="(\w+)"\} (\S+)$', text, re.M
    ):
        out[(m.group(2), m.group(1))] = float(m.group(3))
    return out


def metrics_check(body: Path, c: int, m: int, n: int, workdir: Path) -> str:
    port, mport = free_port(), free_port()
    cmd = [
        toolgate_exe(),
        "serve",
        "--policy",
        str(POLICY),
        "--metrics-listen",
        f"127.0.0.1:{mport}",
        "--listen",
        f"127.0.0.1:{port}",
        "--drain",
        "0",
    ]
    server = start_server("decide-metrics", cmd, port, workdir, decide_request(dry_run=True))
    try:
        before = scrape_decisions(mport)
        proc = subprocess.run(
            h2load_cmd(f"http://127.0.0.1:{port}{METHOD}", body, c, m, n=n),
            capture_output=True,
            text=True,
            timeout=300,
        )
        sent = int(parse_summary(proc.stdout).get("succeeded", 0))
        after = scrape_decisions(mport)
    finally:
        server.stop()
    delta = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
    allowed = int(delta.get(("ALLOW", "ALLOWED"), 0))
    others = {f"{v}/{c}": int(d) for (v, c), d in delta.items() if (v, c) != ("ALLOW", "ALLOWED")}
    ok = allowed == sent == n and not others
    return (
        f"with `--metrics-listen` on, {n:,} requests sent (-c {c} -m {m}), h2load counted "
        f'{sent:,} succeeded, `toolgate_decisions_total{{verdict="ALLOW",code="ALLOWED"}}`'
        f" rose by {allowed:,}"
        + (f", other outcomes: {others}" if others else "")
        + (": **match**" if ok else ": **MISMATCH**")
    )


# --- report --------------------------------------------------------------------------------


def fmt_us(us: float) -> str:
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"


def sh(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).stdout.strip()
    except OSError:
        return ""


def show(attr: str, v: float) -> str:
    if attr == "rps":
        return f"{v:,.0f}"
    if attr == "server_cpu_us":
        return f"{v:.0f} µs"
    if attr == "server_cs":
        return f"{v:.1f}"
    return fmt_us(v)


def med(runs: list[Run], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in runs)


def verdict(ratio: float, aim: float, higher_is_better: bool) -> str:
    ok = ratio >= aim if higher_is_better else ratio <= aim
    return "**met**" if ok else "**missed**"


def paired(runs: list[Run], load: str, server: str, attr: str) -> list[float]:
    """server/floor ratios of attr, run by run (each pair ran back to back)."""
    base = {r.index: getattr(r, attr) for r in runs if r.load == load and r.server == "floor"}
    return [
        getattr(r, attr) / base[r.index]
        for r in runs
        if r.load == load and r.server == server and base.get(r.index)
    ]


METRICS = (
    ("rps", "req/s"),
    ("p50", "p50"),
    ("p99", "p99"),
    ("p999", "p99.9"),
    ("server_cpu_us", "server CPU / req"),
    ("server_cs", "server context switches / req"),
)


def report(
    args,
    runs: list[Run],
    profiles: list[Profile],
    wire: dict,
    wire_profile: list[tuple[str, float]],
    checks: list[str],
    elapsed: float,
) -> tuple[str, list[str]]:
    loads = [("single", "one in flight"), ("saturated", "saturated")]
    git = sh(["git", "rev-parse", "--short", "HEAD"])
    dirty = " with uncommitted changes" if sh(["git", "status", "--porcelain"]) else ""
    cpu = sh(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p' | head -1"])
    variants = f", and floor variants {', '.join(args.variants)}" if args.variants else ""
    out = [
        f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, commit {git}{dirty}; "
        f"{cpu}, `nproc` = {os.cpu_count()}, Linux {platform.release()}; Python "
        f"{platform.python_version()}, grpcio {grpc.__version__}, "
        f"{sh(['h2load', '--version']) or 'h2load'}. Whole run: {elapsed:.0f} s.",
        "",
        f"Command: `.venv/bin/python bench/grpc_bench.py {' '.join(args.argv)}`".rstrip() + ". "
        f"Both servers: 8 handler threads, `grpc.so_reuseport` 0, generic handler without "
        f"(de)serializers; request {len(decide_request())} bytes, response "
        f"{args.response_len} bytes (the floor returns the sidecar's own answer). h2load "
        f"`-t 1`; one in flight `-c 1 -m 1`, {args.n_single:,} requests per run; saturated "
        f"`-c {args.c} -m {args.m}` ({args.c * args.m} streams), {args.n_sat:,} requests per "
        f"run; {args.runs} runs of each, floor and Decide{variants} taking turns (the order "
        f"rotates run by run), after a {args.warmup:,}-request warm-up of each. Server CPU "
        f"and context switches are the whole process's (all threads, from /proc). Busy before: "
        f"CPU cores in use on the machine in the second before the run (our servers idle); "
        f"steal: cores' worth of time the hypervisor took during the run.",
        "",
        "| load | server | run | req/s | p50 | p99 | p99.9 | server CPU / req "
        "| context switches / req | busy before / steal | counted by the limit |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key, label in loads:
        for r in runs:
            if r.load != key:
                continue
            counted = ""
            if r.consumed is not None:
                ok = r.consumed == r.succeeded and not r.failed
                counted = f"{r.consumed:,} of {r.succeeded:,}" + (" ✓" if ok else " **✗**")
            out.append(
                f"| {label} | {r.server} | {r.index} | {r.rps:,.0f} | {fmt_us(r.p50)} | "
                f"{fmt_us(r.p99)} | {fmt_us(r.p999)} | {r.server_cpu_us:.0f} µs | "
                f"{r.server_cs:.1f} | {r.quiet_before:.2f} / {r.steal_cores:.2f} | {counted} |"
            )
    out += [
        "",
        "Medians of the runs, and Decide/floor ratios (median of the per-run pairs, "
        "which ran back to back; the ratio of the medians in brackets):",
        "",
        "| load | metric | floor | Decide | Decide / floor |",
        "|---|---|---:|---:|---:|",
    ]
    aims = []
    for key, label in loads:
        fl = [r for r in runs if r.load == key and r.server == "floor"]
        de = [r for r in runs if r.load == key and r.server == "decide"]
        if not fl or not de:
            continue
        for attr, name in METRICS:
            ratios = paired(runs, key, "decide", attr)
            ratio = statistics.median(ratios)
            a, b = med(fl, attr), med(de, attr)
            out.append(
                f"| {label} | {name} | {show(attr, a)} | {show(attr, b)} | "
                f"{ratio:.3f} ({b / a:.3f}) |"
            )
            each = ", ".join(f"{x:.3f}" for x in ratios)
            if attr == "p50":
                aims.append(
                    f"- {label}, Decide p50 ≤ {AIM_P50}{X} the floor's: {ratio:.3f}{X} "
                    f"({fmt_us(b)} against {fmt_us(a)}; runs: {each}), "
                    f"{verdict(ratio, AIM_P50, False)}."
                )
            if attr == "rps" and key == "saturated":
                aims.append(
                    f"- saturated, Decide throughput ≥ {AIM_RPS}{X} the floor's: "
                    f"{ratio:.3f}{X} ({b:,.0f} against {a:,.0f} req/s; runs: {each}), "
                    f"{verdict(ratio, AIM_RPS, True)}."
                )
    if args.variants:
        out += [
            "",
            "Floor variants (grpc_floor.py `--work`: SHA-256 of 2000 bytes with the GIL held, "
            "or of 2048 bytes with the GIL released around it, ~1.5-2 µs either way), "
            "medians and the median of per-run ratios to the floor:",
            "",
            "| load | server | req/s | p50 | p99 | server CPU / req | context switches / req "
            "| p50 / floor | req/s / floor |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for key, label in loads:
            for name in ["floor", "decide", *args.variants]:
                rs = [r for r in runs if r.load == key and r.server == name]
                if not rs:
                    continue
                p50r = statistics.median(paired(runs, key, name, "p50"))
                rpsr = statistics.median(paired(runs, key, name, "rps"))
                out.append(
                    f"| {label} | {name} | {med(rs, 'rps'):,.0f} | {fmt_us(med(rs, 'p50'))} | "
                    f"{fmt_us(med(rs, 'p99'))} | {med(rs, 'server_cpu_us'):.0f} µs | "
                    f"{med(rs, 'server_cs'):.1f} | {p50r:.3f} | {rpsr:.3f} |"
                )
    out += [
        "",
        "**Aims**",
        "",
        *aims,
        "",
        "**Checks** (h2load counts gRPC errors as successes)",
        "",
    ]
    bad = [r for r in runs if r.failed or (r.consumed is not None and r.consumed != r.succeeded)]
    out.append(
        "- Every Decide run: a dry-run Decide before and after shows how many calls the "
        "limit counted (it counts every allowed call, day window, max 1e9); "
        + (
            "all equal to h2load's completed requests, no failed streams, every status 200."
            if not bad
            else f"**{len(bad)} run(s) differ**: see the table."
        )
    )
    out += [f"- {c}" for c in checks]
    out += [
        "",
        f"**`decide_wire` from Python** (timeit, best of 9 {X} 100,000 taking turns, same "
        "request):",
        "",
        "| call | ns per call |",
        "|---|---:|",
    ]
    out += [f"| {k} | {v:,.0f} |" for k, v in wire.items()]
    dw = wire.get("`engine.decide_wire(request)`", 0.0)
    if wire_profile:
        out += [
            "",
            "Where `decide_wire`'s time goes (`perf record` of 3,000,000 calls in a Python "
            "loop, self time by symbol, grouped; ns = share of the call's time above):",
            "",
            "| part | share | ns per call |",
            "|---|---:|---:|",
        ]
        out += [f"| {k} | {v:.0%} | {v * dw:,.0f} |" for k, v in wire_profile]
    for p in profiles:
        sat = [r for r in runs if r.load == "saturated" and r.server == p.server]
        if sat:
            p.cpu_us = med(sat, "server_cpu_us")
    if profiles:
        out += profile_tables(profiles)
    conclusion = conclude(runs, profiles, wire)
    out += ["", "**Conclusion**", "", *conclusion]
    return "\n".join(out), aims


def profile_tables(profiles: list[Profile]) -> list[str]:
    out = [
        "",
        f"**Profile**: `perf record -g -F 999 -p PID` for {PROFILE_SECONDS} s of each "
        "server under the saturated load (a separate run, same settings); samples by where "
        "the sampled instruction was (self time), kernel samples split by the system call "
        f"or wake-up in their call chain. µs / req = share {X} the server's CPU time per "
        "request during that run.",
        "",
        "| where | "
        + " | ".join(f"{p.server} share | {p.server} µs / req" for p in profiles)
        + " |",
        "|---|" + "---:|---:|" * len(profiles),
    ]
    for label, key in NATIVE_GROUPS:
        cells = []
        for p in profiles:
            total = sum(p.groups.values()) or 1
            share = p.groups[key] / total
            cells += [f"{share:.1%}", f"{share * p.cpu_us:.1f}"]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    cells = []
    for p in profiles:
        cells += [f"{sum(p.groups.values()):,} samples", f"**{p.cpu_us:.0f}** ({p.rps:,.0f} req/s)"]
    out.append("| total | " + " | ".join(cells) + " |")
    for p in profiles:
        total = sum(p.symbols.values()) or 1
        top = ", ".join(f"`{s}` {n / total:.1%}" for s, n in p.symbols.most_common(8))
        out += ["", f"Top symbols, {p.server}: {top}."]
    if any(p.py_total for p in profiles):
        out += [
            "",
            "**Python side** (py-spy `--gil --nonblocking`, 250 Hz, same load: only the "
            "thread holding the GIL is sampled, so this is where interpreter time goes). "
            "Inclusive share of GIL-holding samples:",
            "",
            "| function | " + " | ".join(p.server for p in profiles) + " |",
            "|---|" + "---:|" * len(profiles),
        ]
        keys = []
        for p in profiles:
            for name, _ in p.py_incl.most_common(40):
                short = name.split(" (")[0]
                if name not in keys and short not in {
                    "Thread._bootstrap",
                    "Thread.run",
                    "Thread._bootstrap_inner",
                }:
                    keys.append(name)
        keys = sorted(
            keys, key=lambda k: -max(p.py_incl[k] / max(p.py_total, 1) for p in profiles)
        )[:18]
        for k in keys:
            out.append(
                f"| `{k}` | "
                + " | ".join(f"{p.py_incl[k] / max(p.py_total, 1):.1%}" for p in profiles)
                + " |"
            )
        for p in profiles:
            if p.py_total:
                top = ", ".join(f"`{s}` {n / p.py_total:.1%}" for s, n in p.py_own.most_common(6))
                out += ["", f"Self time, {p.server} ({p.py_total:,} samples): {top}."]
    return out


def conclude(runs: list[Run], profiles: list[Profile], wire: dict) -> list[str]:
    def pick(load: str, server: str) -> list[Run]:
        return [r for r in runs if r.load == load and r.server == server]

    sat_f, sat_d = pick("saturated", "floor"), pick("saturated", "decide")
    one_f, one_d = pick("single", "floor"), pick("single", "decide")
    dw = wire.get("`engine.decide_wire(request)`", 0.0) / 1000
    lines = []
    if sat_f and sat_d and one_f and one_d:
        cf, cd = med(sat_f, "server_cpu_us"), med(sat_d, "server_cpu_us")
        lines.append(
            f"- **What the Python layer costs per call.** The floor, a grpcio server whose "
            f"handler does nothing, spends {cf:.0f} µs of CPU per call saturated "
            f"({med(one_f, 'server_cpu_us'):.0f} µs one in flight) and switches context "
            f"{med(sat_f, 'server_cs'):.0f} times per call across its threads; the sidecar "
            f"{cd:.0f} µs ({med(one_d, 'server_cpu_us'):.0f} µs) and "
            f"{med(sat_d, 'server_cs'):.0f} switches. `decide_wire` itself costs {dw:.2f} µs "
            f"from Python, under 1% of that: the decision is not where the time goes; "
            f"grpcio's Python server is, and the floor pays it too."
        )
        spread = max(r.p50 for r in one_f) / min(r.p50 for r in one_f)
        each = ", ".join(f"{x:.2f}" for x in paired(runs, "single", "decide", "p50"))
        lines.append(
            f"- One in flight, p50 {fmt_us(med(one_f, 'p50'))} (floor) against "
            f"{fmt_us(med(one_d, 'p50'))} (Decide), {med(one_d, 'p50') - med(one_f, 'p50'):+.0f}"
            f" µs (per-run ratios {each}),"
            f" where the decision itself is ~{dw:.1f} µs; the floor's own p50 varied "
            f"{spread:.2f}{X} between its runs. Context switches per call at one in flight: "
            f"{med(one_f, 'server_cs'):.1f} (floor), {med(one_d, 'server_cs'):.1f} (Decide); "
            f"saturated: {med(sat_f, 'server_cs'):.1f} and {med(sat_d, 'server_cs'):.1f}."
        )
    byname = {p.server: p for p in profiles}
    if "floor" in byname and "decide" in byname:
        f, d = byname["floor"], byname["decide"]

        def us(p: Profile, *keys: str) -> float:
            t = sum(p.groups.values()) or 1
            return sum(p.groups[k] for k in keys) / t * p.cpu_us

        lines.append(
            "- **Where it goes** (saturated, perf; sidecar, floor in brackets): kernel "
            f"futex and scheduling {us(d, 'k_futex', 'k_other'):.0f} µs "
            f"({us(f, 'k_futex', 'k_other'):.0f}): handing each call between grpcio's "
            f"event-engine threads, its Python poller thread and a pool worker, each handoff "
            f"a futex wake-up and a context switch, which in this VM is expensive; CPython "
            f"interpreter {us(d, 'python'):.0f} µs ({us(f, 'python'):.0f}); grpcio core "
            f"{us(d, 'cygrpc'):.0f} µs ({us(f, 'cygrpc'):.0f}); libc "
            f"{us(d, 'libc'):.0f} µs ({us(f, 'libc'):.0f}); kernel TCP and epoll "
            f"{us(d, 'k_net', 'k_poll'):.0f} µs ({us(f, 'k_net', 'k_poll'):.0f}); our Rust "
            f"{us(d, 'rust'):.1f} µs ({us(f, 'rust'):.1f})."
        )
        if d.py_total and f.py_total:

            def share(p: Profile, prefix: str) -> float:
                hits = [v for k, v in p.py_incl.items() if k.startswith(prefix)]
                return max(hits, default=0) / p.py_total

            handler = max(
                (v for k, v in d.py_incl.items() if "handle (toolgate/service.py)" in k),
                default=0,
            ) / max(d.py_total, 1)
            lines.append(
                "- **Python side** (py-spy, GIL holder; sidecar, floor in brackets): grpcio's "
                f"poller thread (`_serve`) {share(d, '_serve '):.0%} "
                f"({share(f, '_serve '):.0%}) and the pool workers "
                f"{share(d, '_worker '):.0%} ({share(f, '_worker '):.0%}) of the "
                f"interpreter's time; in the workers, grpcio's unary path "
                f"(`_unary_response_in_pool`: read the request, call the handler, send the "
                f"response and status) {share(d, '_unary_response_in_pool '):.0%} "
                f"({share(f, '_unary_response_in_pool '):.0%}), of which the handler itself "
                f"(`handle` in toolgate/service.py, with `decide_wire` while it holds the GIL) "
                f"{handler:.1%}."
            )
    return lines


def write_results(block: str) -> bool:
    # Re-read just before writing: another script rewrites other blocks of this file.
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    new = f"{BEGIN}\n{block}\n{END}"
    if pattern.search(text):
        text = pattern.sub(lambda _: new, text)
    else:
        text = text.rstrip("\n") + (
            f"\n\n{SECTION}\n\nh2load against `toolgate serve` and against a constant-answer "
            "grpcio server on the same settings (the transport floor); how it is run: "
            "[README.md](README.md#grpc-decide-vs-the-transport-floor). The block below is "
            "written by `bench/grpc_bench.py`.\n\n" + new + "\n"
        )
    RESULTS.write_text(text)
    return True


PROFILE_SECONDS = 10


def main() -> int:
    global PROFILE_SECONDS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "-n1",
        "--n-single",
        type=int,
        default=20_000,
        help="requests per one-in-flight run (default 20000)",
    )
    p.add_argument(
        "-ns",
        "--n-sat",
        type=int,
        default=60_000,
        help="requests per saturated run (default 60000)",
    )
    p.add_argument("-c", type=int, default=16, help="saturated: connections (default 16)")
    p.add_argument("-m", type=int, default=8, help="saturated: streams per connection (8)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3000, help="requests per server first")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=10.0,
        help="before each run, wait up "
        "to this many seconds for the other load to drop (default 10)",
    )
    p.add_argument(
        "--quiet-cores",
        type=float,
        default=0.3,
        help="'quiet': under this many busy cores (default 0.3)",
    )
    p.add_argument("--timeout", type=float, default=180.0, help="bound on one h2load run, s")
    p.add_argument("--no-profile", action="store_true", help="skip perf/py-spy profiles")
    p.add_argument("--profile-seconds", type=int, default=PROFILE_SECONDS)
    p.add_argument("--py-spy", default=shutil.which("py-spy"), help="py-spy binary (optional)")
    p.add_argument("--no-metrics-check", action="store_true")
    p.add_argument(
        "--variants",
        nargs="*",
        default=[],
        choices=["hash-gil-held", "hash-gil-released"],
        help="also run floor servers with this --work (see grpc_floor.py) in the rotation",
    )
    p.add_argument("--print", dest="write", action="store_false", help="don't write RESULTS.md")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args()
    args.argv = sys.argv[1:]
    PROFILE_SECONDS = args.profile_seconds
    if not shutil.which("h2load"):
        raise SystemExit("h2load not found: apt-get install -y nghttp2-client")
    profile = not args.no_profile and shutil.which("perf") is not None
    started = time.monotonic()

    workdir = Path(tempfile.mkdtemp(prefix="grpc-bench-"))
    body = workdir / "decide.body"
    body.write_bytes(grpc_frame(decide_request()))

    # The floor answers with the sidecar's own answer to this request, so the bytes match.
    from toolgate._core import Engine

    response = Engine.from_file(POLICY).decide_wire(decide_request())
    (workdir / "response.bin").write_bytes(response)
    args.response_len = len(response)

    servers: dict[str, Server] = {}
    try:
        dport, fport = free_port(), free_port()
        servers["decide"] = start_server(
            "decide",
            [
                toolgate_exe(),
                "serve",
                "--policy",
                str(POLICY),
                "--metrics-listen",
                "off",
                "--listen",
                f"127.0.0.1:{dport}",
                "--drain",
                "0",
            ],
            dport,
            workdir,
            decide_request(dry_run=True),
        )
        servers["floor"] = start_server(
            "floor",
            [
                sys.executable,
                str(FLOOR_SCRIPT),
                "--listen",
                f"127.0.0.1:{fport}",
                "--response",
                str(workdir / "response.bin"),
            ],
            fport,
            workdir,
            decide_request(),
        )
        for work in args.variants:
            vport = free_port()
            servers[work] = start_server(
                work,
                [
                    sys.executable,
                    str(FLOOR_SCRIPT),
                    "--listen",
                    f"127.0.0.1:{vport}",
                    "--response",
                    str(workdir / "response.bin"),
                    "--work",
                    work,
                ],
                vport,
                workdir,
                decide_request(),
            )
        names = ["floor", "decide", *args.variants]
        if call_raw(fport, decide_request()) != response:
            raise RuntimeError("the floor's answer differs from the response it was given")
        print(
            f"decide on :{dport} (pid {servers['decide'].proc.pid}), floor on :{fport} "
            f"(pid {servers['floor'].proc.pid}); work dir {workdir}",
            file=sys.stderr,
        )

        for s in servers.values():
            subprocess.run(
                h2load_cmd(
                    f"http://127.0.0.1:{s.port}{METHOD}", body, args.c, args.m, n=args.warmup
                ),
                capture_output=True,
                timeout=args.timeout,
                check=True,
            )
        runs: list[Run] = []
        quiet = (args.quiet_wait, args.quiet_cores)
        for load, c, m, n in (
            ("single", 1, 1, args.n_single),
            ("saturated", args.c, args.m, args.n_sat),
        ):
            for i in range(1, args.runs + 1):
                # Rotate the order run by run (floor, decide / decide, floor / ...).
                k = (i - 1) % len(names)
                for name in names[k:] + names[:k]:
                    r = run_h2load(
                        servers[name],
                        body,
                        Run(load, name, i, n, c, m),
                        workdir,
                        args.timeout,
                        quiet,
                    )
                    runs.append(r)
                    print(
                        f"{load:9} {name:6} run {i}: {r.rps:8,.0f} req/s  p50 "
                        f"{fmt_us(r.p50):>8}  p99 {fmt_us(r.p99):>8}  p99.9 "
                        f"{fmt_us(r.p999):>8}  cpu/req {r.server_cpu_us:5.0f} µs  cs/req "
                        f"{r.server_cs:4.1f}  busy before "
                        f"{r.quiet_before:.2f}  steal {r.steal_cores:.2f}  counted {r.consumed}",
                        file=sys.stderr,
                    )

        profiles = []
        if profile:
            for name in ("floor", "decide"):
                wait_quiet(*quiet)
                print(f"profiling {name} ...", file=sys.stderr)
                profiles.append(
                    profile_server(
                        servers[name],
                        body,
                        args.c,
                        args.m,
                        workdir,
                        args.profile_seconds,
                        args.py_spy,
                    )
                )
    finally:
        for s in servers.values():
            s.stop()

    checks = []
    if not args.no_metrics_check:
        checks.append(metrics_check(body, args.c, args.m, 10_000, workdir))
    wait_quiet(args.quiet_wait, args.quiet_cores)
    wire = time_decide_wire()
    wire_profile = profile_decide_wire(workdir) if profile else []
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    block, _aims = report(
        args, runs, profiles, wire, wire_profile, checks, time.monotonic() - started
    )
    print(block)
    if args.write:
        write_results(block)
        print(f"\nrewrote the grpc block of {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
