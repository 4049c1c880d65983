"""gRPC ``Decide`` against the transport floor, driven by h2load (bench/README.md).

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


def call_raw(port: int | str, payload: bytes, timeout: float = 2.0, method: str = METHOD) -> bytes:
    """One unary call of raw bytes to a port on 127.0.0.1, or to a ``unix:PATH`` target."""
    target = port if isinstance(port, str) else f"127.0.0.1:{port}"
    # grpcio's default :authority for a unix target is the socket's path, which hyper
    # (under tonic) refuses as malformed (RST_STREAM, PROTOCOL_ERROR): name a host instead.
    options = [("grpc.default_authority", "localhost")] if isinstance(port, str) else []
    with grpc.insecure_channel(target, options=options) as channel:
        return channel.unary_unary(method)(payload, timeout=timeout)


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
    workers: int = 1  # processes serving the port (a supervisor's children when > 1)
    metrics_port: int | None = None  # toolgate's /metrics (the supervisor's, with workers)

    def children(self) -> list[int]:
        """The pids of the process's children (the worker processes of a supervisor)."""
        out: list[int] = []
        try:
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                try:
                    out += [int(x) for x in (task / "children").read_text().split()]
                except OSError:
                    continue
        except OSError:
            pass
        return sorted(set(out))

    def pids(self) -> list[int]:
        return [self.proc.pid, *self.children()]

    def cpu_by_pid(self) -> dict[int, float]:
        """utime + stime of each process of the tree (all threads), seconds."""
        out = {}
        for pid in self.pids():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
        return out

    def cpu_seconds(self) -> float:
        """utime + stime of the whole process tree (all threads, every worker)."""
        return sum(self.cpu_by_pid().values())

    def context_switches(self) -> int:
        """Voluntary + involuntary context switches of all the tree's threads."""
        total = 0
        for pid in self.pids():
            try:
                tasks = list(Path(f"/proc/{pid}/task").iterdir())
            except OSError:
                continue
            for task in tasks:
                try:
                    status = (task / "status").read_text()
                except OSError:
                    continue
                total += sum(
                    int(x)
                    for x in re.findall(r"^\w*voluntary_ctxt_switches:\s+(\d+)", status, re.M)
                )
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(
    name: str,
    cmd: list[str],
    port: int,
    workdir: Path,
    probe: bytes,
    workers: int = 1,
    metrics_port: int | None = None,
) -> Server:
    log = workdir / f"{name}.log"
    proc = subprocess.Popen(
        cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT
    )
    server = Server(name, port, proc, log, workers, metrics_port)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited ({proc.returncode}):\n{log.read_text()}")
        try:
            call_raw(port, probe, timeout=1.0)
            if workers > 1 and len(server.children()) < workers:
                raise RuntimeError("not every worker is up yet")
            if workers > 1:
                # One worker answering says little about the others: give them time to bind.
                time.sleep(1.0)
            return server
        except (grpc.RpcError, RuntimeError) as err:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(
                    f"{name} did not answer on port {port}:\n{log.read_text()}"
                ) from err
            time.sleep(0.2)


def toolgate_exe() -> str:
    """The ``toolgate`` measured: ``$TOOLGATE_EXE`` (another build), else this checkout's."""
    if os.environ.get("TOOLGATE_EXE"):
        return os.environ["TOOLGATE_EXE"]
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
    wall: float = 0.0  # seconds h2load ran
    server_cores: float = 0.0  # the server's CPU time over the wall time
    workers: int = 1
    worker_cpu: list[float] = field(default_factory=list)  # CPU s of each worker process
    worker_decisions: list[int] | None = None  # toolgate_worker_decisions_total, increase
    duration: float = 0.0  # > 0: a time-bounded run (h2load -D) instead of n requests

    def counted_ok(self) -> bool:
        """The limit counted every completed call. A time-bounded run stops with up to c * m
        calls in flight, which the server may have decided without h2load counting them."""
        if self.consumed is None:
            return True
        extra = self.consumed - self.succeeded
        if self.worker_decisions is not None and sum(self.worker_decisions) != self.consumed:
            return False
        return not self.failed and (0 <= extra <= self.c * self.m if self.duration else not extra)


def h2load_cmd(url: str, body: Path, c: int, m: int, n: int | None = None, duration=None):
    cmd = ["h2load", "-t", "1", "-c", str(c), "-m", str(m)]
    cmd += ["-D", f"{duration:g}"] if duration else ["-n", str(n)]
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
    if run.duration:
        cmd = h2load_cmd(url, body, run.c, run.m, duration=run.duration)
    else:
        cmd = h2load_cmd(url, body, run.c, run.m, n=run.n)
    cmd += ["--log-file", str(log)]
    run.quiet_before = wait_quiet(*quiet)
    before = remaining(server.port) if server.name.startswith("decide") else None
    workers0 = scrape_worker_decisions(server.metrics_port) if server.metrics_port else None
    b0, s0 = cpu_ticks()
    by_pid0 = server.cpu_by_pid()
    srv0, cs0 = sum(by_pid0.values()), server.context_switches()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    by_pid1 = server.cpu_by_pid()
    srv = sum(by_pid1.values()) - srv0
    cs = server.context_switches() - cs0
    b1, s1 = cpu_ticks()
    if server.workers > 1:
        children = server.children()
        if len(children) != server.workers or any(c not in by_pid0 for c in children):
            raise RuntimeError(f"{server.name}: a worker process was replaced during the run")
        run.worker_cpu = [by_pid1[c] - by_pid0[c] for c in children]
    if workers0 is not None:
        workers1 = scrape_worker_decisions(server.metrics_port)
        run.worker_decisions = [
            int(workers1[k] - workers0.get(k, 0)) for k in sorted(workers1, key=int)
        ]
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
    run.wall = wall
    run.server_cores = srv / wall
    run.workers = server.workers
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

    class Context:
        """What the handler asks of its context on the allow path: no deadline."""

        def time_remaining(self):
            return None

    context = Context()

    cases = {
        "empty Python call `f(b)`": lambda: empty(request),
        "`engine.decide_wire(request)`": lambda: engine.decide_wire(request),
        "the service's handler, `handle(request, context)`": lambda: handler(request, context),
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


def scrape_worker_decisions(port: int | None) -> dict[str, float]:
    """toolgate_worker_decisions_total by worker, from the supervisor's /metrics."""
    if port is None:
        return {}
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(
            r'^toolgate_worker_decisions_total\{worker="(\d+)"\} (\S+)$', text, re.M
        )
    }


def scrape_decisions(port: int) -> dict[tuple[str, str], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[tuple[str, str], float] = {}
    for m in re.finditer(
        r'^toolgate_decisions_total\{api="\w+",code="(\w+)",verdict="(\w+)"\} (\S+)$', text, re.M
    ):
        key = (m.group(2), m.group(1))
        out[key] = out.get(key, 0.0) + float(m.group(3))
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


def sat_size(args) -> str:
    if args.sat_seconds:
        return f"{args.sat_seconds:g} s (h2load `-D`, time-bounded)"
    return f"{args.n_sat:,} requests"


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
    # This block compares one process with its floor; the N-worker servers have their own.
    runs = [r for r in runs if r.server in ("floor", "decide", *args.variants)]
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
        f"`-c {args.c} -m {args.m}` ({args.c * args.m} streams), {sat_size(args)} per "
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
                counted = f"{r.consumed:,} of {r.succeeded:,}" + (
                    " ✓" if r.counted_ok() else " **✗**"
                )
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
    bad = [r for r in runs if not r.counted_ok()]
    out.append(
        "- Every Decide run: a dry-run Decide before and after shows how many calls the "
        "limit counted (it counts every allowed call, day window, max 1e9); "
        + (
            "all equal to h2load's completed requests (time-bounded runs: plus at most the "
            "streams still in flight when h2load stopped), no failed streams, every status 200."
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


WORKERS_BEGIN, WORKERS_END = "<!-- BEGIN grpc-workers -->", "<!-- END grpc-workers -->"
WORKERS_SECTION = "## gRPC Decide with worker processes"
WORKERS_INTRO = (
    "The same h2load runs against `toolgate serve --workers N` and an N-process floor, in the "
    "same rotation as the block above; how it is run: "
    "[README.md](README.md#grpc-decide-with-worker-processes). The block below is written by "
    "`bench/grpc_bench.py`."
)
AIM_SCALE = 1.6
#: A saturated run on N workers where one of them got less than this share of the work has
#: not spread its connections over every worker.
MIN_SHARE = 0.1


def ratios(runs: list[Run], load: str, a: str, b: str, attr: str) -> list[float]:
    """b/a of attr, run by run (the same run index: both ran in the same rotation)."""
    base = {r.index: getattr(r, attr) for r in runs if r.load == load and r.server == a}
    return [
        getattr(r, attr) / base[r.index]
        for r in runs
        if r.load == load and r.server == b and base.get(r.index)
    ]


def shares(r: Run) -> list[float]:
    """Each worker's share of the run's work: decisions (toolgate's per-worker counters) or,
    for the floor, CPU time."""
    parts = r.worker_decisions if r.worker_decisions is not None else r.worker_cpu
    total = sum(parts) or 1
    return [x / total for x in parts]


def spread_cell(r: Run) -> str:
    if r.worker_decisions is not None:
        return " / ".join(f"{d:,}" for d in r.worker_decisions) + " decisions"
    if r.worker_cpu:
        return " / ".join(f"{x:.0%}" for x in shares(r)) + " of CPU"
    return ""


def report_workers(args, runs: list[Run], elapsed: float) -> str:
    n = args.workers
    dn, fn = f"decide-w{n}", f"floor-w{n}"
    loads = [("single", "one in flight"), ("saturated", "saturated")]
    git = sh(["git", "rev-parse", "--short", "HEAD"])
    dirty = " with uncommitted changes" if sh(["git", "status", "--porcelain"]) else ""
    cpu = sh(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p' | head -1"])
    out = [
        f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, commit {git}{dirty}; "
        f"{cpu}, `nproc` = {os.cpu_count()}, Linux {platform.release()}; Python "
        f"{platform.python_version()}, grpcio {grpc.__version__}, "
        f"{sh(['h2load', '--version']) or 'h2load'}. Whole run (with the block above): "
        f"{elapsed:.0f} s.",
        "",
        f"Command: `.venv/bin/python bench/grpc_bench.py {' '.join(args.argv)}`".rstrip()
        + f". `{dn}`: `toolgate serve --workers {n} --metrics-listen 127.0.0.1:PORT` (a "
        f"supervisor and {n} worker processes of 8 handler threads each, sharing the port with "
        f"`grpc.so_reuseport` 1 and one counter table in /dev/shm); `{fn}`: `bench/grpc_floor.py"
        f" --workers {n}` ({n} floor processes sharing the port the same way); `decide` and "
        f"`floor`: the single processes of the block above, in the same rotation. h2load `-t "
        f"1`; one in flight `-c 1 -m 1`, {args.n_single:,} requests per run (one connection, "
        f"which the kernel gives to one worker); saturated `-c {args.c} -m {args.m}`, "
        f"{sat_size(args)} per run ({args.c} connections, which the kernel spreads over "
        f"the workers); {args.runs} runs of each. Server CPU and context switches: the whole "
        f"process tree (supervisor and workers). Cores: CPU time over the run's wall time, of "
        f"the server, of h2load, of everything else on the machine, and the hypervisor's steal "
        f"(the machine has {os.cpu_count()}). Per worker: each worker's share of the run "
        f"(toolgate: `toolgate_worker_decisions_total{{worker}}` on the supervisor's /metrics; "
        f"floor: CPU time).",
        "",
        "| load | server | run | req/s | p50 | p99 | p99.9 | server CPU / req | cs / req "
        "| cores: server / h2load / other / steal | per worker | counted by the limit |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for key, label in loads:
        for r in runs:
            if r.load != key or r.server not in (fn, dn):
                continue
            counted = ""
            if r.consumed is not None:
                counted = f"{r.consumed:,} of {r.succeeded:,}" + (
                    " ✓" if r.counted_ok() else " **✗**"
                )
            spread = spread_cell(r)
            if key == "saturated" and min(shares(r), default=0) < MIN_SHARE:
                spread += " **✗**"
            out.append(
                f"| {label} | {r.server} | {r.index} | {r.rps:,.0f} | {fmt_us(r.p50)} | "
                f"{fmt_us(r.p99)} | {fmt_us(r.p999)} | {r.server_cpu_us:.0f} µs | "
                f"{r.server_cs:.1f} | {r.server_cores:.2f} / {r.h2load_cores:.2f} / "
                f"{r.other_cores:.2f} / {r.steal_cores:.2f} | {spread} | {counted} |"
            )
    names = ["floor", "decide", fn, dn]
    out += [
        "",
        f"Medians of the runs; ratios are medians of the per-run ratios (same rotation), the "
        f"ratio of the medians in brackets. {X}1 is one process, {X}{n} is {n} workers:",
        "",
        f"| load | metric | floor {X}1 | Decide {X}1 | floor {X}{n} | Decide {X}{n} "
        f"| Decide {X}{n} / {X}1 | floor {X}{n} / {X}1 | Decide / floor at {X}{n} |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in loads:
        got = {name: [r for r in runs if r.load == key and r.server == name] for name in names}
        if not all(got.values()):
            continue
        for attr, mname in (*METRICS, ("h2load_cores", "h2load cores")):
            m = {name: med(got[name], attr) for name in names}
            cells = []
            for a, b in (("decide", dn), ("floor", fn), (fn, dn)):
                rs = ratios(runs, key, a, b, attr)
                cells.append(f"{statistics.median(rs):.3f} ({m[b] / m[a]:.3f})" if rs else "")
            shown = [f"{m[x]:.2f}" if attr == "h2load_cores" else show(attr, m[x]) for x in names]
            out.append(f"| {label} | {mname} | " + " | ".join(shown + cells) + " |")
    sat = {name: [r for r in runs if r.load == "saturated" and r.server == name] for name in names}
    out += ["", "**Target**", ""]
    if sat["decide"] and sat[dn]:
        rs = ratios(runs, "saturated", "decide", dn, "rps")
        ratio = statistics.median(rs)
        each = ", ".join(f"{x:.2f}" for x in rs)
        a, b = med(sat["decide"], "rps"), med(sat[dn], "rps")
        if ratio >= AIM_SCALE:
            word = f"**met** ({ratio / AIM_SCALE:.2f}{X} the target)"
        else:
            word = (
                f"**missed** by {AIM_SCALE - ratio:.2f} ({ratio / AIM_SCALE:.0%} of the "
                f"target; {AIM_SCALE * a - b:,.0f} req/s short)"
            )
        frs = ratios(runs, "saturated", "floor", fn, "rps")
        out.append(
            f"- {n} workers reach ≥ {AIM_SCALE}{X} the saturated throughput of one: "
            f"{ratio:.2f}{X} ({b:,.0f} against {a:,.0f} req/s; runs: {each}), {word}. The "
            f"floor, for comparison: {statistics.median(frs):.2f}{X} "
            f"({med(sat[fn], 'rps'):,.0f} against {med(sat['floor'], 'rps'):,.0f} req/s)."
        )
        d = sat[dn]
        busy = med(d, "h2load_cores") + med(d, "other_cores") + med(d, "steal_cores")
        cpu_req = med(d, "server_cpu_us")
        room = max(0.0, (os.cpu_count() or 1) - busy)
        out.append(
            f"- Where the cores went, saturated, {n} workers (medians): the sidecar "
            f"{med(d, 'server_cores'):.2f} cores, h2load {med(d, 'h2load_cores'):.2f}, everything "
            f"else {med(d, 'other_cores'):.2f}, steal {med(d, 'steal_cores'):.2f}, of "
            f"{os.cpu_count()}. At {cpu_req:.0f} µs of sidecar CPU per call, the "
            f"{room:.2f} cores left to it allow ~{room / cpu_req * 1e6:,.0f} req/s; one "
            f"process used {med(sat['decide'], 'server_cores'):.2f} cores at "
            f"{med(sat['decide'], 'server_cpu_us'):.0f} µs per call."
        )
    out += ["", "**Checks**", ""]
    bad_spread = [
        r
        for r in runs
        if r.load == "saturated" and r.server in (fn, dn) and min(shares(r), default=0) < MIN_SHARE
    ]
    spread_text = "; ".join(
        f"{r.server} run {r.index}: " + " / ".join(f"{x:.0%}" for x in shares(r))
        for r in runs
        if r.load == "saturated" and r.server in (fn, dn)
    )
    out.append(
        f"- Saturated, every worker got load (at least {MIN_SHARE:.0%} of the run's decisions, "
        "or of the floor's CPU): "
        + ("**yes**" if not bad_spread else f"**no, {len(bad_spread)} run(s)**")
        + f" ({spread_text})."
    )
    singles = [r for r in runs if r.load == "single" and r.server in (fn, dn)]
    if singles:
        out.append(
            "- One in flight, the one connection went to worker "
            + ", ".join(
                f"{max(range(len(shares(r))), key=lambda i: shares(r)[i])} ({r.server} run "
                f"{r.index})"
                for r in singles
                if r.worker_decisions is not None or r.worker_cpu
            )
            + ": one connection is served by one worker, by design."
        )
    dec = [r for r in runs if r.server == dn]
    bad = [r for r in dec if not r.counted_ok()]
    out.append(
        f"- Every {dn} run: the limit (one counter table shared by the workers, read by a "
        "dry-run Decide before and after) counted every call h2load completed (time-bounded "
        "runs: plus at most the streams in flight when h2load stopped), and the workers' "
        "decisions on /metrics add up to the limit's count: "
        + ("**yes**, all runs." if not bad else f"**no**: {len(bad)} run(s), see the table.")
    )
    return "\n".join(out)


def write_block(begin: str, end: str, section: str, intro: str, block: str) -> None:
    """Replace the block between begin and end in RESULTS.md, or append it under a new
    section. Re-read just before writing: other scripts rewrite other blocks of this file."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    new = f"{begin}\n{block}\n{end}"
    if pattern.search(text):
        text = pattern.sub(lambda _: new, text)
    else:
        text = text.rstrip("\n") + f"\n\n{section}\n\n{intro}\n\n{new}\n"
    RESULTS.write_text(text)


def rotated(names: list[str], i: int) -> list[str]:
    """The order of run i (from 1): each run starts one later, so none always goes first."""
    k = (i - 1) % len(names)
    return names[k:] + names[:k]


def written_by(script: str) -> str:
    """The first words of a results block: which command wrote it, when, on which code."""
    return (
        f"Written by `bench/{script} {' '.join(sys.argv[1:])}`".rstrip()
        + f" at {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, code of commit "
        + sh(["git", "log", "-1", "--format=%h", "--", ".", ":(exclude)bench"])
    )


def publish(
    text: str, script: str, anchor: str, block: tuple[str, str, str], write: bool,
    json_out: Path | None = None, figures: dict | None = None,
) -> None:  # fmt: skip
    """Print a results block, merge its figures into json_out, and (write) put it between
    its markers in RESULTS.md. block: (begin marker, end marker, section title)."""
    print(text)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        previous = json.loads(json_out.read_text()) if json_out.exists() else {}
        json_out.write_text(json.dumps({**previous, **(figures or {})}, indent=1))
    if write:
        begin, end, section = block
        intro = f"Written by `bench/{script}`; how it is run: [README.md](README.md#{anchor})."
        write_block(begin, end, section, intro, text)
        print(f"\nrewrote the {begin} block of {RESULTS}", file=sys.stderr)


def write_results(block: str) -> bool:
    write_block(
        BEGIN,
        END,
        SECTION,
        "h2load against `toolgate serve` and against a constant-answer grpcio server on the "
        "same settings (the transport floor); how it is run: "
        "[README.md](README.md#grpc-decide-vs-the-transport-floor). The block below is "
        "written by `bench/grpc_bench.py`.",
        block,
    )
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
    p.add_argument(
        "-Ds",
        "--sat-seconds",
        type=float,
        default=0,
        help="saturated runs last this many seconds (h2load -D) instead of -ns requests: "
        "with -n, h2load gives each connection n/c requests, so with workers the one holding "
        "more connections works alone at the end (default 0: by count)",
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
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="also run `toolgate serve --workers N` and an N-process floor in the rotation "
        "and write the grpc-workers block (default 2; 1: skip)",
    )
    p.add_argument(
        "--json",
        type=Path,
        help="also write the runs' medians here (bench/openloop_bench.py reads the saturated "
        "throughput from it)",
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
        if args.workers > 1:
            n = args.workers
            wport, mport, wfport = free_port(), free_port(), free_port()
            servers[f"decide-w{n}"] = start_server(
                f"decide-w{n}",
                [
                    toolgate_exe(),
                    "serve",
                    "--workers",
                    str(n),
                    "--policy",
                    str(POLICY),
                    "--metrics-listen",
                    f"127.0.0.1:{mport}",
                    "--listen",
                    f"127.0.0.1:{wport}",
                    "--drain",
                    "0",
                ],
                wport,
                workdir,
                decide_request(dry_run=True),
                workers=n,
                metrics_port=mport,
            )
            servers[f"floor-w{n}"] = start_server(
                f"floor-w{n}",
                [
                    sys.executable,
                    str(FLOOR_SCRIPT),
                    "--workers",
                    str(n),
                    "--listen",
                    f"127.0.0.1:{wfport}",
                    "--response",
                    str(workdir / "response.bin"),
                ],
                wfport,
                workdir,
                decide_request(),
                workers=n,
            )
            names += [f"floor-w{n}", f"decide-w{n}"]
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
                    run = Run(load, name, i, n, c, m)
                    if load == "saturated":
                        run.duration = args.sat_seconds
                        run.n = 0 if args.sat_seconds else n
                    r = run_h2load(servers[name], body, run, workdir, args.timeout, quiet)
                    runs.append(r)
                    spread = ""
                    if r.worker_decisions is not None:
                        spread = f"  per worker {r.worker_decisions}"
                    elif r.worker_cpu:
                        spread = "  worker cpu " + "/".join(f"{x:.1f}" for x in r.worker_cpu)
                    print(
                        f"{load:9} {name:9} run {i}: {r.rps:8,.0f} req/s  p50 "
                        f"{fmt_us(r.p50):>8}  p99 {fmt_us(r.p99):>8}  p99.9 "
                        f"{fmt_us(r.p999):>8}  cpu/req {r.server_cpu_us:5.0f} µs  cs/req "
                        f"{r.server_cs:4.1f}  busy before {r.quiet_before:.2f}  steal "
                        f"{r.steal_cores:.2f}  h2load {r.h2load_cores:.2f} cores  counted "
                        f"{r.consumed}{spread}",
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
    elapsed = time.monotonic() - started
    block, _aims = report(args, runs, profiles, wire, wire_profile, checks, elapsed)
    print(block)
    if args.write:
        write_results(block)
        print(f"\nrewrote the grpc block of {RESULTS}", file=sys.stderr)
    if args.workers > 1:
        wblock = report_workers(args, runs, elapsed)
        print("\n" + wblock)
        if args.write:
            write_block(WORKERS_BEGIN, WORKERS_END, WORKERS_SECTION, WORKERS_INTRO, wblock)
            print(f"rewrote the grpc-workers block of {RESULTS}", file=sys.stderr)
    if args.json:
        summary = {}
        for name in sorted({r.server for r in runs}):
            for load in ("single", "saturated"):
                rs = [r for r in runs if r.server == name and r.load == load]
                if rs:
                    summary[f"{name}/{load}"] = {
                        a: med(rs, a) for a in ("rps", "p50", "p99", "p999", "server_cpu_us")
                    }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"when": time.time(), "medians": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
