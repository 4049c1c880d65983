"""One caller's share of the counter table, and the other paths that reserve slots for one
caller: require_confirmation's nonces, task notes through ExtMcp, sessions of callers without
a credential. Driven through ``toolgate serve``'s ext_authz ``Check`` and ExtMcp services; the
table is read from ``/metrics``.

What holds is asserted as behaviour; a weakness found is a strict xfail that passes once it is
fixed. No assertion on wall-clock time.
"""

from __future__ import annotations

import json
from typing import Any

from confirming import CAPABLE
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from ext_mcp import ExtMcp
from google.rpc import code_pb2
from sidecar import Sidecar
from test_envoy_authz_api import Authz

Ctx = attribute_context_pb2.AttributeContext


class Gate(Authz):
    """ext_authz ``Check`` calls to a sidecar, as Envoy sends them (the body whole)."""

    def check(self, grant: str | None, body: str, session: str | None = None) -> tuple[bool, Any]:
        """(forwarded, the JSON-RPC message answered otherwise)."""
        raw = body.encode()
        headers = {"content-type": "application/json", "content-length": str(len(raw))}
        if grant is not None:
            headers["authorization"] = f"Bearer {grant}"
        if session is not None:
            headers["mcp-session-id"] = session
        http = Ctx.HttpRequest(method="POST", path="/mcp", headers=headers, raw_body=raw)
        attributes = Ctx(request=Ctx.Request(http=http), context_extensions={"server": "example"})
        r = self.stub(external_auth_pb2.CheckRequest(attributes=attributes), timeout=30)
        if r.status.code == code_pb2.OK:
            return True, None
        return False, json.loads(r.denied_response.body)

    def slots(self) -> float:
        """Counter-table slots that hold a key."""
        value = self.sidecar.metric("toolgate_counter_table_slots_used")
        assert value is not None
        return value

    def client_slots(self) -> float:
        value = self.sidecar.metric("toolgate_counter_table_client_slots")
        assert value is not None
        return value


def call(tool: str, arguments: dict[str, Any], answers: str | None = None) -> str:
    """A tools/call from a client that can be asked (MCP 2026-07-28, form elicitation)."""
    extra = "" if answers is None else f',"inputResponses":{answers}'
    params = (
        f'{{"name":"{tool}","arguments":{json.dumps(arguments)},'
        f'"_meta":{json.dumps(CAPABLE)}{extra}}}'
    )
    return f'{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{params}}}'


def confirm(gate: Gate, grant: str, n: int) -> str:
    """Ask a confirmed call and answer it yes, as a client that confirms its own calls does:
    ``RAN`` or the decision's code."""
    args = {"id": f"ami-{grant}-{n}"}
    forwarded, message = gate.check(grant, call("delete_image", args))
    assert not forwarded
    ((token, _),) = message["result"]["inputRequests"].items()
    yes = json.dumps({token: {"action": "accept", "content": {"approve": True}}})
    forwarded, message = gate.check(grant, call("delete_image", args, yes))
    if forwarded:
        return "RAN"
    return message["result"]["_meta"]["toolgate/decision"]["code"]


CONFIRMING = {
    "version": "1",
    "default": "allow",
    "tools": {
        "delete_image": {
            "action": "require_confirmation",
            "confirmation": {"message": "Delete image {args.id}?"},
        },
        "search": {
            "action": "allow",
            "limits": [{"counter": "searches", "max": 100, "window": "1m", "scope": "grant"}],
        },
    },
}


def test_sessions_past_the_cap_or_anothers_take_no_slot() -> None:
    """A 4,096-slot table: one caller holds 64 sessions (a 64th of the slots), and neither
    new sessions past that nor another caller's session take a slot, however often asked."""
    with Sidecar(CONFIRMING, "--capacity", "4096") as sidecar:
        gate = Gate(sidecar)
        held = [gate.check("mallory", call("other", {}), f"m-{i}")[0] for i in range(64)]
        assert all(held)
        assert gate.check("alice", call("other", {}), "alices")[0]
        before = gate.slots()
        for i in range(64, 200):
            forwarded, message = gate.check("mallory", call("other", {}), f"m-{i}")
            assert not forwarded and message["error"]["code"] == -32001
        for _ in range(50):
            forwarded, message = gate.check("mallory", call("other", {}), "alices")
            assert not forwarded and message["error"]["message"] == "Session not found"
        assert gate.slots() == before
        # Alice still reaches hers, and a new caller gets one.
        assert gate.check("alice", call("other", {}), "alices")[0]
        assert gate.check("carol", call("other", {}), "carols")[0]


def test_a_confirmation_refused_at_the_callers_cap_takes_no_slot() -> None:
    """A 4,096-slot table: one caller's confirmed calls are capped at a 64th of it (64), and a
    yes refused past that takes no slot."""
    with Sidecar(CONFIRMING, "--capacity", "4096") as sidecar:
        gate = Gate(sidecar)
        ran = [confirm(gate, "mallory", n) for n in range(64)]
        assert ran.count("RAN") == 64
        before = gate.client_slots()
        refused = [confirm(gate, "mallory", n) for n in range(64, 104)]
        assert set(refused) == {"RATE_LIMITED"}, refused
        assert gate.client_slots() == before


def test_one_callers_confirmations_leave_room_for_the_next_caller() -> None:
    with Sidecar(CONFIRMING, "--capacity", "64") as sidecar:
        gate = Gate(sidecar)
        for n in range(40):
            confirm(gate, "mallory", n)
        forwarded, message = gate.check("bob", call("search", {"q": "x"}))
        assert forwarded, message


def test_one_anonymous_client_cannot_refuse_every_anonymous_session() -> None:
    with Sidecar(CONFIRMING, "--capacity", "4096") as sidecar:
        gate = Gate(sidecar)
        for i in range(64):
            gate.check(None, call("other", {}), f"flood-{i}")
        forwarded, message = gate.check(None, call("other", {}), "a-real-clients-session")
        assert forwarded, message


def test_one_callers_sessions_and_tasks_hold_what_the_docs_say() -> None:
    """Sessions a 32nd of the slots, tasks a 64th, and a slot counting each."""
    slots = 4096
    with (
        Sidecar(CONFIRMING, "--capacity", str(slots)) as sidecar,
        ExtMcp(sidecar.target) as gw,
    ):
        gate = Gate(sidecar)
        empty = gate.slots()
        for i in range(100):
            gate.check("mallory", call("other", {}), f"m-{i}")
        for i in range(100):
            result = {"task": {"taskId": f"t-{i}"}}
            gw.response("tools/call", result, metadata={"authorization": "Bearer mallory"})
        assert gate.slots() - empty <= slots // 32 + slots // 64 + 2
