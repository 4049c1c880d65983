"""A real agentgateway (built by ``bench/peers/install.sh agentgateway`` into
target/peers/bin/agentgateway) in front of MCP servers, with the repository's
deploy/agentgateway/config.yaml: its ports, toolgate's address, the HTTP server's URL and the
stdio server's command rewritten for the test, everything else as deployed."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from mcp_servers import EVERYTHING_BIN, node_executable
from sidecar import _LIVE, PATIENCE, dies_with_parent, free_port

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "target" / "peers" / "bin" / "agentgateway"
CONFIG = ROOT / "deploy" / "agentgateway" / "config.yaml"


def available() -> bool:
    return BINARY.is_file() and os.access(BINARY, os.X_OK) and node_executable() is not None


class Agentgateway:
    """The deployed config, serving MCP at ``.url`` and asking toolgate at ``toolgate``."""

    def __init__(
        self,
        toolgate: str,
        remote_url: str = "",
        servers: dict[str, str] | None = None,
        guardrails: bool = True,
        added: dict[str, Any] | None = None,
    ) -> None:
        """``servers``: ``{name: url}``, Streamable HTTP servers to front instead of the
        deployed config's two. ``guardrails=False``: agentgateway alone, asking nobody.
        ``added``: top-level settings added to the config (``frontendPolicies``)."""
        self._dir = tempfile.TemporaryDirectory(prefix="toolgate-agw-")
        work = Path(self._dir.name)
        self.port, admin, ready = free_port(), free_port(), free_port()
        config: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
        config["config"] = {
            "adminAddr": f"127.0.0.1:{admin}",
            "readinessAddr": f"127.0.0.1:{ready}",
            "statsAddr": f"127.0.0.1:{free_port()}",
        }
        (bind,) = config["binds"]
        bind["port"] = self.port
        (route,) = bind["listeners"][0]["routes"]
        (backend,) = route["backends"]
        if servers is not None:
            targets = [{"name": name, "mcp": {"host": url}} for name, url in servers.items()]
            backend["mcp"]["targets"] = targets
        else:
            for target in backend["mcp"]["targets"]:
                if "stdio" in target:
                    # The pinned server-everything, not npx's download.
                    target["stdio"] = {"cmd": node_executable(), "args": [str(EVERYTHING_BIN)]}
                else:
                    target["mcp"]["host"] = remote_url
        if guardrails:
            (processor,) = backend["policies"]["mcpGuardrails"]["processors"]
            processor["host"] = toolgate
        else:
            del backend["policies"]
        config.update(added or {})
        self.config = work / "config.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = work / "agentgateway.log"
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                dies_with_parent([str(BINARY), "-f", str(self.config)]),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Binds on 127.0.0.1 (this build's), over IPv4.
                env={**os.environ, "IPV6_ENABLED": "false"},
            )
        _LIVE.add(self.proc)
        deadline = time.monotonic() + PATIENCE * 2
        while not self._ready(ready):
            if self.proc.poll() is not None:
                raise AssertionError(f"agentgateway exited:\n{self.log.read_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"agentgateway never became ready:\n{self.log.read_text()}")
            time.sleep(0.1)

    @staticmethod
    def _ready(port: int) -> bool:
        try:
            url = f"http://127.0.0.1:{port}/healthz/ready"
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=PATIENCE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        _LIVE.discard(self.proc)
        self._dir.cleanup()

    def __enter__(self) -> Agentgateway:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
