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
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_servers import EverythingServer, texts
from sidecar import PATIENCE, Sidecar, free_port, toolgate_cli
from test_approvals import TOKENS

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
        done = toolgate_cli(
            "approvals",
            "--target",
            f"127.0.0.1:{toolgate.admin}",
            "--token-file",
            toolgate.alice,
            "approve",
            id,
        )
        assert done.returncode == 0 and "APPROVED" in done.stdout, done.stderr

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
        # tools/list is refused too (its answer cannot be filtered): the session's first
        # list fails, so call without listing.
        async def call() -> Any:
            headers = {"authorization": "Bearer t-down"}
            async with (
                httpx2.AsyncClient(headers=headers, timeout=30.0) as http,
                streamable_http_client(gw.url, http_client=http) as (read, write),
                ClientSession(read, write) as s,
            ):
                await s.initialize()
                try:
                    return await s.call_tool("everything_echo", {"message": "hi"})
                except MCPError as e:
                    return e

        error = refused(anyio.run(call))
        assert error.code == -32603 and "mcpGuardrails" in error.message
