"""Real MCP servers for the end-to-end tests, each a subprocess on a free 127.0.0.1 port, ready
(accepting connections) when the constructor returns and stopped when its ``with`` block ends:

- ``ExampleServer(log_path)``: tests/mcp_example_server.py (official Python SDK), the example tools,
  every HTTP request it receives logged as a JSON line to ``log_path`` (see ``requests()``).
- ``CatalogServer(tools, page_size)``: tests/mcp_catalog_server.py (the SDK's low-level
  server), a large tool list served in pages, and a tool that fails on request.
- ``EverythingServer()``: the reference ``@modelcontextprotocol/server-everything`` (Node,
  version pinned in tests/node/package-lock.json) in its streamableHttp mode.
- ``GoMcpServer(binary, log_path)``: tests/go_mcp_server (built by ``build_go_mcp_server``),
  which reads bodies with Go's encoding/json as Go MCP servers do and logs every tool call it
  executes, with the arguments as its handler bound them (see ``calls()``).

All serve Streamable HTTP at ``/mcp`` (``.url``); the first two statefully (``Mcp-Session-Id``),
the Go server without sessions.

``mcp_session(url, tool, arguments, headers=...)`` drives one session with the official client:
initialize (or, with ``mode="2026-07-28"``, the per-request protocol), tools/list, tools/call.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Self

import anyio
import httpx2
import mcp.types as types
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from sidecar import _LIVE, dies_with_parent, free_port, listens

TESTS = Path(__file__).resolve().parent
EXAMPLE_SCRIPT = TESTS / "mcp_example_server.py"
CATALOG_SCRIPT = TESTS / "mcp_catalog_server.py"
NODE_DIR = TESTS / "node"
EVERYTHING_BIN = (
    NODE_DIR / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
)
#: The conformance suite's command and the Node.js (22) it runs on, from the same lock file.
NODE_BIN = NODE_DIR / "node_modules" / ".bin"
#: What tests/node installs: each must be there, or ``npm ci`` runs.
NODE_INSTALLED = (EVERYTHING_BIN, NODE_BIN / "conformance", NODE_BIN / "node")
#: Preload that pins Node's listen() to 127.0.0.1 (server-everything binds all interfaces).
LOOPBACK = NODE_DIR / "loopback.mjs"

#: How long a server may take to accept connections.
START_TIMEOUT = 30.0


class _Server:
    """A server subprocess on a free port; ``_command(port)`` says how to start it."""

    name = "server"
    path = "/mcp"

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix=f"toolgate-{self.name}-")
        self.output_path = Path(self._dir.name) / "output.log"
        self._output: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        # A port picked free can be taken before the server binds it: try a few times.
        for attempt in range(3):
            self.port = free_port()
            try:
                self._spawn()
                return
            except _Exited:
                if attempt == 2:
                    self.stop()
                    raise
            except BaseException:
                self.stop()
                raise

    def _command(self, port: int) -> tuple[list[str], dict[str, str] | None]:
        raise NotImplementedError

    def _spawn(self) -> None:
        args, env = self._command(self.port)
        with open(self.output_path, "ab") as out:
            self.proc = subprocess.Popen(
                dies_with_parent(args),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=TESTS,
            )
        _LIVE.add(self.proc)
        deadline = time.monotonic() + START_TIMEOUT
        while not listens(self.proc.pid, self.port):
            if self.proc.poll() is not None:
                _LIVE.discard(self.proc)
                raise _Exited(f"{self.name} exited with {self.proc.returncode}:\n{self.output}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"{self.name} not listening after {START_TIMEOUT}s")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    @property
    def output(self) -> str:
        """What the server printed (stdout and stderr), kept after it stopped."""
        if self._output is not None:
            return self._output
        return self.output_path.read_text(errors="replace") if self.output_path.exists() else ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)  # both shut down cleanly on SIGINT
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
            _LIVE.discard(self.proc)
        if self._output is None:
            self._output = self.output
        with contextlib.suppress(OSError):
            self._dir.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Exited(AssertionError):
    pass


class ExampleServer(_Server):
    """tests/mcp_example_server.py. ``json=True`` answers POSTs with JSON instead of SSE;
    ``stateless=True`` serves without sessions; ``resumable=True`` replays streams after
    ``Last-Event-ID``; ``gzip=True`` compresses answers for clients that accept it; ``bearer``
    tokens, when given, are the only credentials it accepts (401 otherwise)."""

    name = "example"

    def __init__(
        self,
        log_path: str | Path,
        *,
        json: bool = False,
        stateless: bool = False,
        resumable: bool = False,
        gzip: bool = False,
        bearer: tuple[str, ...] = (),
    ):
        self.log_path = Path(log_path)
        flags = {"--json": json, "--stateless": stateless, "--resumable": resumable, "--gzip": gzip}
        self.flags = [flag for flag, on in flags.items() if on]
        self.flags += [arg for token in bearer for arg in ("--bearer", token)]
        super().__init__()

    def _command(self, port: int) -> tuple[list[str], dict[str, str] | None]:
        args = [
            sys.executable,
            str(EXAMPLE_SCRIPT),
            "--port",
            str(port),
            "--log",
            str(self.log_path),
        ]
        return [*args, *self.flags], None

    def requests(self) -> list[dict[str, Any]]:
        """Every request the server has received so far, oldest first: ``{"method", "path",
        "query", "headers", "body"}`` (header names lower-case, body as text)."""
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]


class PaymentServer(_Server):
    """tests/mcp_payment_server.py: ``pay`` records each payment in ``runs`` as it makes it,
    then waits for ``go()`` before it confirms."""

    name = "payments"

    def __init__(self, runs: Path, *, json: bool = False) -> None:
        self.runs = runs
        self.flags = ["--json"] if json else []
        super().__init__()

    def _command(self, port: int) -> tuple[list[str], dict[str, str] | None]:
        script = TESTS / "mcp_payment_server.py"
        return [
            sys.executable,
            str(script),
            "--port",
            str(port),
            "--runs",
            str(self.runs),
            *self.flags,
        ], None

    def payments(self) -> int:
        """Payments made so far."""
        return len(self.runs.read_text().split()) if self.runs.exists() else 0

    def go(self) -> None:
        """Let every payment waiting, and every one to come, confirm at once."""
        self.runs.with_name(self.runs.name + ".go").touch()

    def hold(self) -> None:
        """Payments to come wait again."""
        self.runs.with_name(self.runs.name + ".go").unlink(missing_ok=True)


class CatalogServer(_Server):
    """tests/mcp_catalog_server.py: ``tools`` tools (read_/write_/delete_ in turn) listed
    ``page_size`` at a time, plus ``charge``, which fails on request; JSON answers with
    ``json=True``."""

    name = "catalog"

    def __init__(self, tools: int = 30, page_size: int = 10, *, json: bool = False):
        self.flags = ["--tools", str(tools), "--page-size", str(page_size)]
        self.flags += ["--json"] if json else []
        super().__init__()

    def _command(self, port: int) -> tuple[list[str], dict[str, str] | None]:
        return [sys.executable, str(CATALOG_SCRIPT), "--port", str(port), *self.flags], None


#: The Go MCP server's source (stdlib only).
GO_MCP_SERVER = TESTS / "go_mcp_server"


def go_executable() -> str | None:
    """``go`` on PATH, else the official tarball's /usr/local/go/bin/go, else None."""
    found = shutil.which("go")
    if found is None and Path("/usr/local/go/bin/go").exists():
        found = "/usr/local/go/bin/go"
    return found


def build_go_mcp_server(out_dir: Path) -> Path:
    """``go build`` tests/go_mcp_server into ``out_dir``; the executable's path. Fails (never
    skips) without Go: the tests that need it are the only ones that run a Go MCP server."""
    go = go_executable()
    if go is None:
        raise AssertionError(
            "no `go` executable: the Go toolchain (1.22 or newer) is needed to build "
            f"{GO_MCP_SERVER} for the end-to-end tests; install it and put `go` on PATH"
        )
    binary = out_dir / "go_mcp_server"
    # Stdlib only: nothing to download, no C compiler needed.
    env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}
    done = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=GO_MCP_SERVER,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise AssertionError(f"go build in {GO_MCP_SERVER} failed:\n{done.stdout}{done.stderr}")
    return binary


class GoMcpServer(_Server):
    """tests/go_mcp_server, built at ``binary``, appending each executed tool call to
    ``log_path``."""

    name = "go-mcp"

    def __init__(self, binary: Path, log_path: str | Path) -> None:
        self.binary = binary
        self.log_path = Path(log_path)
        super().__init__()

    def _command(self, port: int) -> tuple[list[str], dict[str, str] | None]:
        args = [str(self.binary), "-listen", f"127.0.0.1:{port}", "-log", str(self.log_path)]
        return args, None

    def calls(self) -> list[dict[str, Any]]:
        """Every tool call the server executed, oldest first: ``{"tool", "arguments", "id",
        "authorization"}``, the arguments as the tool's handler bound them."""
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]


def node_executable() -> str | None:
    return shutil.which("node")


def ensure_node_modules() -> None:
    """Install tests/node's pinned packages (``npm ci``, from the lock file) if they are not."""
    if all(path.exists() for path in NODE_INSTALLED):
        return
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError(f"{EVERYTHING_BIN} is missing and there is no npm to install it")
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0 or not all(path.exists() for path in NODE_INSTALLED):
        raise AssertionError(f"npm ci in {NODE_DIR} failed:\n{done.stdout}\n{done.stderr}")


class EverythingServer(_Server):
    """``mcp-server-everything streamableHttp`` (``PORT`` env var; endpoint ``/mcp``)."""

    name = "everything"

    def __init__(self) -> None:
        ensure_node_modules()
        super().__init__()

    def _command(self, port: int) -> tuple[list[str], dict[str, str] | None]:
        node = node_executable()
        if node is None:
            raise FileNotFoundError("no node executable")
        # A minimal environment: the server has a tool (get-env) that prints its environment.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PORT": str(port)}
        args = [node, "--import", LOOPBACK.as_uri(), str(EVERYTHING_BIN), "streamableHttp"]
        return args, env


# --- the client side -----------------------------------------------------------------------------


async def mcp_session(
    url: str,
    tool: str,
    arguments: dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
    mode: str = "legacy",
    timeout: float = 30.0,
) -> dict[str, Any]:
    """One MCP session at ``url`` with the official client, ``headers`` on every HTTP request:
    ``initialize`` (``mode="legacy"``, as every pre-2026 client; or ``mode="2026-07-28"``: no
    handshake, Mcp-Method / Mcp-Name headers on each request), ``tools/list``, then
    ``tools/call tool(arguments)``. Returns ``{"init": InitializeResult | None, "tools":
    {name: Tool}, "result": CallToolResult}``; the session is closed (DELETE) on return."""
    # The SDK's own defaults: 30 s, but 300 s between reads of an SSE stream.
    timeouts = httpx2.Timeout(30.0, read=300.0)
    async with httpx2.AsyncClient(headers=headers, timeout=timeouts) as http:
        transport = streamable_http_client(url, http_client=http)
        if mode == "legacy":
            async with transport as (read, write), ClientSession(read, write) as session:
                with anyio.fail_after(timeout):
                    init = await session.initialize()
                    listed = await session.list_tools()
                    result = await session.call_tool(tool, arguments)
        else:
            async with Client(transport, mode=mode) as client:
                with anyio.fail_after(timeout):
                    init = None
                    listed = await client.list_tools()
                    result = await client.call_tool(tool, arguments)
    assert isinstance(result, types.CallToolResult), result
    return {"init": init, "tools": {t.name: t for t in listed.tools}, "result": result}


def texts(result: types.CallToolResult) -> list[str]:
    """The text blocks of a tool result."""
    return [c.text for c in result.content if isinstance(c, types.TextContent)]
