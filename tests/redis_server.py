"""A real ``redis-server`` for the counter-store tests, and a TCP proxy in front of it that
can pass, delay or black-hole what flows through it.

redis-server comes from Debian's package (scripts/test installs it). Without it the tests
fail with a message saying so; they are never skipped.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from sidecar import PATIENCE, dies_with_parent, free_port


def _redis_server() -> str:
    path = shutil.which("redis-server")
    assert path is not None, (
        "redis-server is required for the counter-store tests: apt-get install redis-server "
        "(scripts/test installs it when run as root)"
    )
    return path


def make_certificates(d: Path) -> Path:
    """A CA (``ca.pem``) and a certificate for ``localhost`` it signed (``server.pem``,
    ``server.key``), made with openssl; returns the CA's path."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    key = ["-newkey", "rsa:2048", "-nodes"]
    openssl("req", "-x509", *key, "-days", "2", "-subj", "/CN=test CA", "-keyout", "ca.key",
            "-out", "ca.pem")  # fmt: skip
    openssl("req", *key, "-subj", "/CN=localhost", "-keyout", "server.key",
            "-out", "server.csr")  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=DNS:localhost\n")
    sign = ["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2"]
    openssl("x509", "-req", "-in", "server.csr", *sign, "-extfile", "san.ext",
            "-out", "server.pem")  # fmt: skip
    return d / "ca.pem"


class RedisServer:
    """``redis-server`` on 127.0.0.1, a free port and a temporary directory, with no
    persistence: a restart starts empty, as a Redis without a volume does. ``config``: more
    configuration, as ``redis-server`` arguments (``("--maxmemory-policy", "volatile-ttl")``)."""

    def __init__(
        self, tls: bool = False, replica_of: int | None = None, config: tuple[str, ...] = ()
    ) -> None:
        self.replica_of = replica_of
        self.config = config
        self._dir = tempfile.TemporaryDirectory(prefix="toolgate-redis-")
        self.port = free_port()
        #: With ``tls``: TLS only, on ``tls_port``, with a certificate for ``localhost``
        #: signed by a CA made for this server (``ca``, a PEM file).
        self.tls_port = free_port() if tls else None
        self.ca = make_certificates(Path(self._dir.name)) if tls else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def tls_url(self) -> str:
        return f"rediss://localhost:{self.tls_port}/0"

    def start(self) -> None:
        args = [_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", self._dir.name]
        if self.replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        if self.tls_port is not None:
            d = Path(self._dir.name)
            args += ["--tls-port", str(self.tls_port), "--tls-auth-clients", "no"]
            args += [
                "--tls-cert-file",
                str(d / "server.pem"),
                "--tls-key-file",
                str(d / "server.key"),
            ]
            args += ["--tls-ca-cert-file", str(d / "ca.pem")]
        args += self.config
        self.proc = subprocess.Popen(
            dies_with_parent(args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + PATIENCE
        while self.cli("PING") != "PONG":
            assert self.proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no goodbye to its clients, every count lost."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def cli(self, *args: str) -> str | None:
        """A command through redis-cli; None if the server does not answer."""
        try:
            out = subprocess.run(
                ["redis-cli", "-p", str(self.port), "--raw", *args],
                capture_output=True,
                text=True,
                timeout=5,
            )
        except subprocess.TimeoutExpired:
            return None
        if out.returncode != 0 or "Could not connect" in out.stdout + out.stderr:
            return None
        return out.stdout.strip()

    def keys(self) -> list[str]:
        return (self.cli("KEYS", "*") or "").split()

    def stop(self) -> None:
        self.kill()
        self._dir.cleanup()

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SentinelServer:
    """One Redis Sentinel (``redis-server --sentinel``) on 127.0.0.1 watching ``primary`` as
    service ``name``; quick to fail over (down after 300 ms), for the tests."""

    def __init__(self, primary: int, name: str = "toolgate") -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="toolgate-sentinel-")
        self.port = free_port()
        self.name = name
        conf = Path(self._dir.name) / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self._dir.name}\n"
            f"sentinel monitor {name} 127.0.0.1 {primary} 1\n"
            f"sentinel down-after-milliseconds {name} 300\n"
            f"sentinel failover-timeout {name} 2000\n"
        )
        self.proc = subprocess.Popen(
            dies_with_parent([_redis_server(), str(conf), "--sentinel"]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + PATIENCE
        while self.primary() != primary:
            assert self.proc.poll() is None, "redis-server --sentinel exited"
            assert time.monotonic() < deadline, "the sentinel did not start"
            time.sleep(0.05)

    def primary(self) -> int | None:
        """The port of the primary the sentinel names now."""
        ask = ["SENTINEL", "get-master-addr-by-name", self.name]
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), "--raw", *ask],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.split()
        return int(out[1]) if len(out) == 2 and out[1].isdigit() else None

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.name}/0"

    def __enter__(self) -> SentinelServer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._dir.cleanup()


class Proxy:
    """A TCP proxy from a free port to ``port``: ``mode`` is ``pass``, ``hold`` (what the
    client sends waits until ``release()``, then goes on: Redis answers, late) or
    ``blackhole`` (everything is read and dropped; the connection stays open). Neither
    depends on how fast the machine is: a held request is answered only when released."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.mode = "pass"
        #: Set once a request is held (``hold``).
        self.holding = threading.Event()
        self._released = threading.Event()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            self._sockets += [client, upstream]
            for src, dst, toward in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(src, dst, toward), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, toward_redis: bool) -> None:
        with contextlib.suppress(OSError):
            src.settimeout(None)
            while chunk := src.recv(65536):
                if toward_redis and self.mode == "blackhole":
                    continue
                if toward_redis and self.mode == "hold":
                    self.holding.set()
                    self._released.wait()
                dst.sendall(chunk)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def release(self) -> None:
        """Let every held request (and any later one) go on to Redis."""
        self._released.set()

    def close(self) -> None:
        self.release()
        self._stop.set()
        self._listener.close()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
