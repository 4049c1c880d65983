"""Shared helpers for the sidecar tests: ``Sidecar`` runs ``toolgate serve`` as a real process
on free 127.0.0.1 ports and talks to it through ``toolgate.Client``, raw gRPC channels and
HTTP ``/metrics``.

Every ``Sidecar`` is stopped by its ``with`` block (or ``stop()``), and, as a last resort, by
an ``atexit`` hook; on Linux the child also gets SIGKILL if the test process dies first, so no
server outlives the tests.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import toolgate
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

# The installed console script, next to this interpreter; `python -m toolgate.cli` otherwise.
_SCRIPT = Path(sys.executable).with_name("toolgate")
TOOLGATE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "toolgate.cli"]

DECIDER = "toolgate.v1.Decider"

#: How long to wait for anything the server does on its own (start, reload, stop).
PATIENCE = 15.0

T = TypeVar("T")

_LIVE: set[subprocess.Popen[bytes]] = set()


def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        if proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
    _LIVE.clear()


atexit.register(_kill_leftovers)


_SETPRIV = shutil.which("setpriv") if sys.platform == "linux" else None


def dies_with_parent(args: list[str]) -> list[str]:
    """``args`` run so that the child gets SIGKILL when the test process dies (Linux, through
    util-linux ``setpriv --pdeathsig``, which then execs ``args`` under the same pid).

    Not a ``preexec_fn``: that makes subprocess fork (instead of vfork) a process full of gRPC
    threads, and gRPC's fork handlers can then deadlock the parent."""
    return [_SETPRIV, "--pdeathsig", "KILL", *args] if _SETPRIV else args


def hang(pid: int) -> None:
    """Stop ``pid`` (SIGSTOP) as a hung process, and wait until every thread has stopped:
    kill() returns once one thread is told, and until it takes the signal the others go on
    serving (on a busy machine, long enough to answer the next call). SIGCONT resumes it."""
    os.kill(pid, signal.SIGSTOP)

    def all_stopped() -> bool:
        states = [
            (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
            for task in Path(f"/proc/{pid}/task").iterdir()
        ]
        return all(state == "T" for state in states)

    wait_for(lambda: all_stopped() or None)


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening_inodes(port: int) -> set[str]:
    """The inodes of the sockets listening on ``port`` of 127.0.0.1 (or of every address), as
    Linux's /proc/net/tcp lists them."""
    local = {f"0100007F:{port:04X}", f"00000000:{port:04X}"}
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] in local and fields[3] == "0A":  # 0A: LISTEN
            inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets process ``pid`` and its descendants hold."""
    inodes: set[str] = set()
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            for fd in Path(f"/proc/{current}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
            for task in Path(f"/proc/{current}/task").iterdir():
                pids += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return inodes


def listens(pid: int, port: int) -> bool:
    """Whether ``port`` is listened on by process ``pid`` (or one it started), not merely
    by someone: a port picked free can be taken by another test's server before this one
    binds it, which then answers in its place."""
    listening = _listening_inodes(port)
    return bool(listening) and bool(listening & _socket_inodes(pid))


def wait_for(
    probe: Callable[[], T | None], *, timeout: float = PATIENCE, interval: float = 0.05
) -> T:
    """Call ``probe`` until it returns something other than None/False; fail after
    ``timeout`` seconds with the last value it returned."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = probe()
        if last is not None and last is not False:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up after {timeout}s; last probe: {last!r}")
        time.sleep(interval)


def write_json(path: Path, document: Any) -> Path:
    """Write ``document`` as JSON in place (truncate and write, as an editor would)."""
    path.write_text(json.dumps(document, indent=2))
    return path


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` by a complete new file in one rename: a reader never sees half of it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class ConfigMapVolume:
    """A directory laid out as the kubelet lays out a ConfigMap volume: the files in a
    timestamped directory, ``..data`` a symlink to it, each key a symlink to ``..data/key``;
    ``update`` swaps ``..data`` to a new directory in one rename, as the kubelet does."""

    def __init__(self, path: Path, data: dict[str, str]) -> None:
        self.path = path
        path.mkdir(parents=True)
        self._generation = 0
        self.update(data)
        for key in data:
            (path / key).symlink_to(f"..data/{key}")

    def update(self, data: dict[str, str]) -> None:
        self._generation += 1
        new = self.path / f"..2026_11_21_00_00_{self._generation:02d}.000000001"
        new.mkdir()
        for key, text in data.items():
            (new / key).write_text(text)
        old = (self.path / "..data").resolve() if (self.path / "..data").exists() else None
        tmp = self.path / "..data_tmp"
        tmp.symlink_to(new.name)
        os.rename(tmp, self.path / "..data")
        if old is not None:
            shutil.rmtree(old)


class Sidecar:
    """``toolgate serve`` in a subprocess.

    ``Sidecar(policy, "--capacity", "64")`` starts it on fresh ports and returns once
    grpc.health.v1 answers SERVING for the whole server. ``policy`` is a path, a dict (written
    to a temporary file), or None (the built-in deny-everything policy).
    """

    def __init__(
        self,
        policy: Path | dict[str, Any] | None = None,
        *extra: str,
        grace: float = 5.0,
        drain: float = 0.0,
        reload_interval: float = 0.2,
        metrics: bool = True,
        env: dict[str, str] | None = None,
        stdout: int | None = None,
    ) -> None:
        """``stdout``: a file descriptor for the process's stdout (default: /dev/null)."""
        self._stdout = subprocess.DEVNULL if stdout is None else stdout
        self._dir = tempfile.TemporaryDirectory(prefix="toolgate-sidecar-")
        self._env = None if env is None else {**os.environ, **env}
        workdir = Path(self._dir.name)
        if isinstance(policy, dict):
            policy = write_json(workdir / "policy.json", policy)
        self.policy_path: Path | None = policy
        self.grace = grace + drain
        self.stderr_path = workdir / "stderr.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._channels: list[grpc.Channel] = []
        self._client: toolgate.Client | None = None
        self.returncode: int | None = None
        self._stderr: str | None = None
        # A port picked free can be taken before the server binds it: try a few times.
        for attempt in range(3):
            self.port = free_port()
            self.metrics_port = free_port() if metrics else None
            args = [
                *TOOLGATE,
                "serve",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--metrics-listen",
                f"127.0.0.1:{self.metrics_port}" if metrics else "off",
                "--reload-interval",
                str(reload_interval),
                "--grace",
                str(grace),
                "--drain",
                str(drain),
                *extra,
            ]
            if policy is not None:
                args += ["--policy", str(policy)]
            self.args = args
            try:
                self._spawn(args)
                return
            except _PortTaken:
                if attempt == 2:
                    self.stop()
                    raise
            except BaseException:
                self.stop()
                raise

    def _spawn(self, args: list[str]) -> None:
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                dies_with_parent(args),
                stdin=subprocess.DEVNULL,
                stdout=self._stdout,
                stderr=err,
                env=self._env,
            )
        _LIVE.add(self.proc)
        deadline = time.monotonic() + PATIENCE
        while True:
            code = self.proc.poll()
            if code is not None:
                _LIVE.discard(self.proc)
                self.returncode = code
                if code == 2 and ("cannot listen" in self.stderr or "cannot serve" in self.stderr):
                    raise _PortTaken(self.stderr)
                raise AssertionError(f"toolgate serve exited with {code}:\n{self.stderr}")
            # SERVING from this process: another test's sidecar may hold the port picked.
            serving = self.health() == health_pb2.HealthCheckResponse.SERVING
            if serving and listens(self.proc.pid, self.port):
                return
            if time.monotonic() >= deadline:
                raise AssertionError(f"toolgate serve never became SERVING:\n{self.stderr}")
            time.sleep(0.05)

    # --- talking to it --------------------------------------------------------------------

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def client(self) -> toolgate.Client:
        if self._client is None:
            self._client = toolgate.Client(self.target, timeout=30)
        return self._client

    def channel(self) -> grpc.Channel:
        """A new channel to the gRPC port, closed with the sidecar."""
        channel = grpc.insecure_channel(self.target)
        self._channels.append(channel)
        return channel

    def raw(self, method: str, channel: grpc.Channel | None = None) -> grpc.UnaryUnaryMultiCallable:
        """``/toolgate.v1.Decider/<method>`` taking and returning raw message bytes."""
        return (channel or self.channel()).unary_unary(
            f"/{DECIDER}/{method}",
            request_serializer=None,
            response_deserializer=None,
        )

    def health(self, service: str = "", timeout: float = 1.0) -> Any:
        """The Health status of ``service``, or the gRPC status code if the check failed."""
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                request = health_pb2.HealthCheckRequest(service=service)
                return stub.Check(request, timeout=timeout).status
            except grpc.RpcError as err:
                return err.code()

    def metrics_text(self) -> str:
        assert self.metrics_port is not None, "started with metrics off"
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
            return response.read().decode()

    def samples(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """Every sample of ``/metrics``: ``(name, frozenset(labels.items())) -> value``."""
        out = {}
        for family in text_string_to_metric_families(self.metrics_text()):
            for s in family.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample's value (None if absent)."""
        return self.samples().get((name, frozenset(labels.items())))

    def series(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        """Every sample named ``name``, by label set."""
        return {labels: v for (n, labels), v in self.samples().items() if n == name}

    def revision(self) -> str:
        """The loaded revision, read from a dry-run decision (consumes nothing)."""
        return self.client.decide("toolgate-test-probe", dry_run=True).revision

    def wait_revision(self, revision: str, timeout: float = PATIENCE) -> None:
        """Wait until decisions carry ``revision``."""
        seen: list[str] = []

        def probe() -> bool | None:
            seen.append(self.revision())
            return seen[-1] == revision or None

        try:
            wait_for(probe, timeout=timeout)
        except AssertionError:
            raise AssertionError(
                f"revision never became {revision}; last {seen[-1:]}\n{self.stderr}"
            ) from None

    def wait_reloads(self, result: str, count: int, timeout: float = PATIENCE) -> None:
        """Wait until ``toolgate_policy_reloads_total{result}`` reaches ``count``."""
        name = "toolgate_policy_reloads_total"
        wait_for(lambda: (self.metric(name, result=result) or 0) >= count or None, timeout=timeout)

    @property
    def stderr(self) -> str:
        """Everything the server has logged so far (kept after it stopped)."""
        if self._stderr is not None:
            return self._stderr
        return self.stderr_path.read_text(errors="replace")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit; returns its exit code."""
        assert self.proc is not None
        self.returncode = self.proc.wait(timeout=timeout)
        _LIVE.discard(self.proc)
        return self.returncode

    # --- stopping -------------------------------------------------------------------------

    def stop(self) -> int | None:
        """SIGTERM, wait for the grace period (plus slack), SIGKILL if still running."""
        if self._client is not None:
            self._client.close()
            self._client = None
        for channel in self._channels:
            channel.close()
        self._channels.clear()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.grace + 10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc is not None:
            self.returncode = self.proc.returncode
            _LIVE.discard(self.proc)
        if self._stderr is None and self.stderr_path.exists():
            self._stderr = self.stderr_path.read_text(errors="replace")
        self._dir.cleanup()
        return self.returncode

    def __enter__(self) -> Sidecar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _PortTaken(AssertionError):
    pass


def toolgate_cli(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the ``toolgate`` console script."""
    argv = [*map(str, args)]
    return subprocess.run([*TOOLGATE, *argv], capture_output=True, text=True, timeout=timeout)


def decision_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]
