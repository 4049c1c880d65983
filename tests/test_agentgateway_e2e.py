"""toolgate behind a real agentgateway, end to end: the official MCP client calls through
agentgateway (deploy/agentgateway/config.yaml) to a stdio server it starts and a Streamable
HTTP server, both the reference server-everything, multiplexed behind one endpoint, with
``toolgate serve`` on examples/agentgateway-policy.yaml deciding every call and filtering
every list through agentgateway's ExtMCP.

agentgateway is built from source (``bench/peers/install.sh agentgateway``, ~25 min on 2
cores), so these tests run where that binary is; the protocol itself is tested everywhere
(tests/test_extmcp.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from agentgateway import Agentgateway, available
from conftest import EXAMPLES
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import ErrorData
from mcp_servers import EverythingServer, texts
from sidecar import PATIENCE, Sidecar, free_port
from test_approvals import TOKENS, approve_with_cli
from test_crm_example_e2e import MAIL, MAIL_REASON, REVISION, ExampleServer

pytestmark = pytest.mark.skipif(
    not available(),
    reason="no agentgateway at target/peers/bin (bench/peers/install.sh agentgateway builds it)",
)

POLICY = EXAMPLES / "agentgateway-policy.yaml"


@pytest.fixture(scope="module")
def remote() -> Iterator[EverythingServer]:
    with EverythingServer() as server:
        yield server


@pytest.fixture(scope="module")
def toolgate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    state = tmp_path_factory.mktemp("toolgate")
    (state / "tokens").write_text("".join(f"{n} {t}\n" for n, t in TOKENS.items()))
    (state / "alice.token").write_text(TOKENS["alice"])
    admin = free_port()
    with Sidecar(
        POLICY,
        "--state-dir",
        str(state / "state"),
        "--admin-listen",
        f"127.0.0.1:{admin}",
        "--admin-tokens",
        str(state / "tokens"),
    ) as s:
        s.admin = admin
        s.alice = state / "alice.token"
        yield s


@pytest.fixture(scope="module")
def gateway(toolgate: Sidecar, remote: EverythingServer) -> Iterator[Agentgateway]:
    with Agentgateway(toolgate.target, remote.url) as gw:
        yield gw


async def session(
    url: str,
    token: str,
    steps: list[tuple[str, dict[str, Any]]],
    after: Callable[[int, Any], None] = lambda i, answer: None,
) -> list[Any]:
    """One MCP session through the gateway as ``token``: tools/list, then each call (and
    ``after(i, answer)`` once call ``i`` is answered); a call refused with a JSON-RPC error
    gives its MCPError."""
    headers = {"authorization": f"Bearer {token}"}
    out: list[Any] = []
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=120.0)) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as s,
    ):
        with anyio.fail_after(PATIENCE * 4):
            await s.initialize()
            out.append(await s.list_tools())
            for i, (tool, arguments) in enumerate(steps):
                try:
                    out.append(await s.call_tool(tool, arguments))
                except MCPError as e:
                    out.append(e)
                await anyio.to_thread.run_sync(after, i, out[-1])
    return out


def run(gw: Agentgateway, token: str, *steps: tuple[str, dict[str, Any]], **kw: Any) -> list[Any]:
    return anyio.run(lambda: session(gw.url, token, list(steps), **kw))


def refused(answer: Any) -> Any:
    assert isinstance(answer, MCPError), answer
    return answer.error


def test_a_stdio_servers_call_is_decided_and_runs(gateway: Agentgateway, toolgate: Sidecar):
    _, echoed = run(gateway, "t-allow", ("everything_echo", {"message": "hi"}))
    assert texts(echoed) == ["Echo: hi"]
    labels = {"api": "extmcp", "verdict": "ALLOW", "code": "ALLOWED"}
    assert (toolgate.metric("toolgate_decisions_total", **labels) or 0) >= 1


def test_the_list_lacks_what_the_policy_hides_or_does_not_name(gateway: Agentgateway):
    listed, called = run(gateway, "t-list", ("everything_get-env", {}))
    names = {t.name for t in listed.tools}
    assert {"everything_echo", "everything_get-sum", "remote_echo", "remote_get-sum"} <= names
    assert "everything_get-env" not in names, "hidden"
    assert "remote_get-env" not in names and "everything_trigger-long-running-operation" not in (
        names
    ), "not named by the policy: denied by default, so not listed"
    error = refused(called)
    assert error.message == "Unknown tool: get-env"


def test_a_denied_call_tells_the_model_why(gateway: Agentgateway):
    _, denied, allowed = run(
        gateway,
        "t-deny",
        ("everything_echo", {"message": "sudo rm -rf /"}),
        ("everything_echo", {"message": "ls"}),
    )
    error = refused(denied)
    assert error.code == -32001
    assert error.message == "Destructive shell commands may not be echoed to a shell."
    assert error.data["toolgate/decision"]["code"] == "CONDITION_FAILED"
    assert texts(allowed) == ["Echo: ls"]


def test_a_limit_says_when_to_retry(gateway: Agentgateway):
    steps = [("everything_get-sum", {"a": 1, "b": 2})] * 4
    _, *answers = run(gateway, "t-limit", *steps)
    assert [texts(a)[0] for a in answers[:3]] == ["The sum of 1 and 2 is 3."] * 3
    error = refused(answers[3])
    assert error.code == -32003
    d = error.data["toolgate/decision"]
    assert d["code"] == "RATE_LIMITED" and 0 < d["retry_after_ms"] <= 65_000


def test_an_approved_call_runs_once(gateway: Agentgateway, toolgate: Sidecar):
    """Refused with its approval's id; an approver approves it with ``toolgate approvals``;
    the agent's retry in the same session (an approval is for its session) runs, once."""
    image = ("everything_get-tiny-image", {})
    approval: dict[str, str] = {}

    def approve_the_first(i: int, answer: Any) -> None:
        if i != 0:
            return
        error = refused(answer)
        id = approval["id"] = error.data["toolgate/decision"]["approval_id"]
        assert error.code == -32001 and id in error.message
        approve_with_cli(toolgate.admin, toolgate.alice, id)

    _, _, ran, again = run(gateway, "t-approval", image, image, image, after=approve_the_first)
    assert not isinstance(ran, MCPError) and ran.content, ran
    assert refused(again).data["toolgate/decision"]["approval_id"] != approval["id"]


def test_a_failed_call_gives_its_spend_back(gateway: Agentgateway):
    def spend(a: Any, b: Any) -> tuple[str, dict[str, Any]]:
        return ("remote_get-sum", {"a": a, "b": b})

    _, ok, failed, after = run(gateway, "t-spend", spend(60, 1), spend(30, "x"), spend(35, 1))
    assert texts(ok) == ["The sum of 60 and 1 is 61."]
    assert not isinstance(failed, MCPError) and failed.is_error, failed
    # 60 + 30 + 35 > 100: the 30 of the failed call came back, so the 35 fits.
    assert texts(after) == ["The sum of 35 and 1 is 36."]
    (_, over) = run(gateway, "t-spend", spend(10, 1))
    assert refused(over).data["toolgate/decision"]["code"] == "RATE_LIMITED"


def test_with_toolgate_down_agentgateway_refuses(remote: EverythingServer, tmp_path: Path):
    with Sidecar(POLICY) as down:
        target = down.target
    with Agentgateway(target, remote.url) as gw:
        # Every method asks toolgate first, initialize too: nothing reaches a server.
        async def call() -> Any:
            headers = {"authorization": "Bearer t-down"}
            async with (
                httpx2.AsyncClient(headers=headers, timeout=30.0) as http,
                streamable_http_client(gw.url, http_client=http) as (read, write),
                ClientSession(read, write) as s,
            ):
                try:
                    await s.initialize()
                    return await s.call_tool("everything_echo", {"message": "hi"})
                except MCPError as e:
                    return e

        error = refused(anyio.run(call))
        assert error.code == -32603 and "mcpGuardrails" in error.message


# --- resources and prompts ---------------------------------------------------------------------


async def browse(url: str, token: str) -> dict[str, Any]:
    """What one caller lists, reads and gets through the gateway: each refusal as its
    JSON-RPC error."""
    headers = {"authorization": f"Bearer {token}"}
    out: dict[str, Any] = {}

    async def attempt(request: Any) -> Any:
        try:
            return await request
        except MCPError as e:
            return e.error

    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=120.0)) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as s,
    ):
        with anyio.fail_after(PATIENCE * 4):
            await s.initialize()
            out["resources"] = [str(r.uri) for r in (await s.list_resources()).resources]
            templates = (await s.list_resource_templates()).resource_templates
            out["templates"] = [t.uri_template for t in templates]
            out["prompts"] = [p.name for p in (await s.list_prompts()).prompts]
            doc = "demo://resource/static/document/features.md"
            out["doc"] = await attempt(s.read_resource(f"everything+{doc}"))
            out["remote doc"] = await attempt(s.read_resource(f"remote+{doc}"))
            out["dynamic"] = await attempt(
                s.read_resource("everything+demo://resource/dynamic/text/1")
            )
            out["paris"] = await attempt(s.get_prompt("everything_args-prompt", {"city": "Paris"}))
            out["rome"] = await attempt(s.get_prompt("everything_args-prompt", {"city": "Rome"}))
            out["remote prompt"] = await attempt(s.get_prompt("remote_simple-prompt"))
    return out


def test_resources_and_prompts_are_decided_and_their_lists_filtered(gateway: Agentgateway):
    out = anyio.run(browse, gateway.url, "t-browse")
    docs = [u for u in out["resources"] if u.startswith("everything+demo://resource/static/")]
    assert docs and docs == out["resources"], "only the stdio server's documents are listed"
    assert out["templates"] == [], "dynamic resources: not allowed, not listed"
    assert out["prompts"] == ["everything_simple-prompt", "everything_args-prompt"]
    assert out["doc"].contents[0].text
    for refused_read in ("remote doc", "dynamic"):
        error = out[refused_read]
        assert error.code == -32001 and "denied by default" in error.message, error
    assert out["paris"].messages
    assert out["rome"].message == "Prompts are written for French cities only."
    assert "denied by default" in out["remote prompt"].message


# --- the worked example: marks across two servers, for a stateless client ---------------------


def test_mail_may_not_leave_a_caller_that_read_the_crm_through_either_server(tmp_path: Path):
    """examples/crm behind agentgateway: the CRM server and the mail server multiplexed
    behind one endpoint, calls from the official client on MCP 2026-07-28 (no handshake, no
    session). After a CRM read, mail is refused through either server; another caller may
    still send."""
    policy = EXAMPLES / "crm" / "policy.yaml"
    with (
        ExampleServer("crm_server", tmp_path / "crm.jsonl") as crm,
        ExampleServer("mail_server", tmp_path / "mail.jsonl") as mail,
        Sidecar(policy) as toolgate,
        Agentgateway(toolgate.target, servers={"crm": crm.url, "mail": mail.url}) as gw,
    ):

        async def calls(token: str, *steps: tuple[str, dict[str, Any]]) -> list[Any]:
            headers = {"authorization": f"Bearer {token}"}
            out: list[Any] = []
            async with (
                httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=120.0)) as h,
                Client(streamable_http_client(gw.url, http_client=h), mode=REVISION) as c,
            ):
                with anyio.fail_after(PATIENCE * 4):
                    for tool, arguments in steps:
                        try:
                            out.append(await c.call_tool(tool, arguments))
                        except MCPError as e:
                            out.append(e.error)
            return out

        mail_step = ("mail_send_mail", MAIL)
        read = ("crm_crm_read", {"contact_id": "c-1"})
        before, reading, after, crm_mail = anyio.run(
            calls, "t-reader", mail_step, read, mail_step, ("crm_send_email", MAIL)
        )
        assert not isinstance(before, ErrorData), before
        assert texts(before) == ["mailed 'hi' to a@example.com"]
        assert texts(reading)[0].startswith("Ada Example")
        for refusal in (after, crm_mail):
            assert refusal.code == -32001 and refusal.message == MAIL_REASON, refusal
        assert mail.called("t-reader") == ["send_mail"]
        assert crm.called("t-reader") == ["crm_read"]
        (other,) = anyio.run(calls, "t-other", mail_step)
        assert texts(other) == ["mailed 'hi' to a@example.com"]


def test_room_for_made_up_tokens_is_shared_out_by_the_clients_address(
    remote: EverythingServer,
):
    """The deployed config passes ``source.address``: a flood of made-up tokens from one
    address stops at three quarters of the table's room for them, and a caller from another
    address still gets its call through (docs/counters.md)."""

    async def one(token: str, source: str) -> bool:
        transport = httpx2.AsyncHTTPTransport(local_address=source)
        headers = {"authorization": f"Bearer {token}"}
        try:
            async with (
                httpx2.AsyncClient(headers=headers, transport=transport, timeout=30.0) as http,
                streamable_http_client(gw.url, http_client=http) as (read, write),
                ClientSession(read, write) as s,
            ):
                with anyio.fail_after(PATIENCE * 4):
                    await s.initialize()
                    answer = await s.call_tool("everything_get-sum", {"a": 1, "b": 2})
                    return not answer.is_error
        except Exception:  # refused anywhere in the session: not let through
            return False

    # A day's window: the flood's counts outlive it however slowly it goes.
    sums = {"limits": [{"counter": "sums", "window": "day", "max": 3, "scope": "grant"}]}
    doc = {
        "version": "1",
        "default": "deny",
        "servers": {"everything": {"tools": {"get-sum": sums}}},
    }
    with (
        Sidecar(doc, "--capacity", "256") as sidecar,
        Agentgateway(sidecar.target, remote.url) as gw,
    ):
        # 128 slots for keys a client chose; each made-up token's call takes one.
        cap, flood = 128, 0
        while anyio.run(one, f"made-up-{flood}", "127.0.0.2"):
            flood += 1
            assert flood < cap, "the flood was never refused"
        assert flood == cap * 3 // 4
        assert sidecar.metric("toolgate_counter_table_client_slots") == flood
        assert (sidecar.metric("toolgate_counter_table_peer_refusals_total") or 0) >= 1
        assert anyio.run(one, "made-up-after", "127.0.0.2") is False
        assert anyio.run(one, "a-new-caller", "127.0.0.3") is True
