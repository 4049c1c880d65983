"""What the decision log holds of a call: argument values never, in any line, whatever the
decision (allowed, denied, a condition failed or unevaluable, a cost that is not one, a body
or arguments refused as unreadable) and whatever the API (in process, toolgate.v1 Decide,
Envoy's Check), unless a rule's ``log`` names the path; and, for a refused request, who made
it and the tool it named, as far as they could be read.

The agent is still told what is wrong in its own answer (the key or number at fault), which
the log does not repeat.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import native
import toolgate
from conftest import START, cond, limit, policy
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sidecar import PATIENCE
from toolgate.v1 import decider_pb2 as pb

KEY = b"k" * 32

DOC = policy(
    {
        "ok": {},
        "shown": {"log": ["args.a"]},
        "deny": {"action": "deny"},
        "held": {"deny_if": [cond("args.a", "exists")]},
        "typed": {"require": [cond("args.a", "gt", 0)]},
        "spend": {"limits": [limit("spend", 1e9, cost="args.amount")]},
    }
)

Ctx = attribute_context_pb2.AttributeContext

#: Text no line would hold by chance: distinctive strings, a negative amount with decimals
#: (what a cost reason quoted), an integer beyond 2^53 (what a refusal quoted).
TOKEN = st.text("abcdefghjkmnpqrstuvwxyz23456789", min_size=12, max_size=16).map("zq".__add__)
AMOUNT = st.integers(10**6, 10**9).map(lambda n: -(n + 0.371))
HUGE = st.integers(2**53 + 1, 2**60)


def logging_sidecar(path: Path) -> toolgate._core.Sidecar:
    """A sidecar on DOC, served, writing its decisions to ``path``."""
    clock = toolgate.ManualClock(START)
    return native.served(DOC, clock=clock, decision_log=str(path), key=KEY)


def decide_wire(engine: toolgate.Engine, tool: str, arguments: bytes) -> pb.DecideResponse:
    request = pb.DecideRequest(
        tool=tool, subject=pb.Subject(grant="g", session="s-1"), arguments_json=arguments
    )
    return pb.DecideResponse.FromString(
        native.call(engine, native.DECIDE, request.SerializeToString())
    )


def check_request(body: bytes, headers: dict[str, str] | None = None) -> bytes:
    h = {"content-length": str(len(body)), "mcp-session-id": "s-1", "x-agent-id": "bot-1"}
    h.update(headers or {})
    http = Ctx.HttpRequest(method="POST", path="/mcp", headers=h, raw_body=body)
    attributes = Ctx(request=Ctx.Request(http=http), context_extensions={"server": "srv"})
    return external_auth_pb2.CheckRequest(attributes=attributes).SerializeToString()


def check(engine: toolgate.Engine, body: bytes, headers: dict[str, str] | None = None) -> Any:
    answer = native.call(engine, native.CHECK, check_request(body, headers))
    return external_auth_pb2.CheckResponse.FromString(answer)


def call_body(tool: str, arguments_text: str) -> bytes:
    """A tools/call body with ``arguments_text`` spliced in as written (keys twice...)."""
    head = '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"%s","arguments":'
    return (head % tool + arguments_text + "}}").encode()


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tokens=st.lists(TOKEN, min_size=7, max_size=7, unique=True),
    amount=AMOUNT,
    huge=HUGE,
    data=st.data(),
)
def test_argument_values_are_never_logged(tmp_path_factory, tokens, amount, huge, data):
    path = tmp_path_factory.mktemp("privacy") / "decisions.jsonl"
    sidecar = logging_sidecar(path)
    engine = sidecar.engine
    *strings, shown = tokens
    s1, s2, s3, s4, k1, k2 = strings
    # The values in random places: top level, nested, in an array, under a nested key.
    nested = data.draw(st.sampled_from([{k1: s2}, [s2, {k1: s3}], {"deep": [{k2: s2}]}]))
    args = {"a": s1, "b": nested, "c": [s3, {"d": s4}], "amount": amount}

    # In process, arguments as a dict: every kind of decision.
    engine.decide("ok", grant="g", arguments=args)
    engine.decide("deny", grant="g", arguments=args)
    engine.decide("held", grant="g", arguments=args)  # CONDITION_FAILED
    engine.decide("typed", grant="g", arguments=args)  # args.a a string: unevaluable
    engine.decide("typed", grant="g", arguments={"a": s1, "A": s2})  # a case twin
    engine.decide("spend", grant="g", arguments=args)  # a negative cost
    engine.decide("spend", grant="g", arguments={"amount": s1, "b": nested})  # not a number
    engine.decide("nope", grant="g", arguments=args)  # DEFAULT_DENY
    engine.decide("shown", grant="g", arguments={"a": shown, "b": s2})

    # toolgate.v1 Decide: arguments as JSON text, refused when readable two ways.
    told = []
    for text in (
        json.dumps(args),
        f'{{"a": "{s1}", "a": "{s2}"}}',
        f'{{"path": "{s1}", "PATH": "{s2}"}}',
        f'{{"a": {{"{k1}": "{s1}", "{k1.upper()}": 1}}}}',
        f'{{"amount": {huge}, "a": "{s1}"}}',
        f'["{s1}"]',
        f'{{"a": "{s1}" "{s2}"}}',
        json.dumps({"amount": amount, "a": s1}),
    ):
        tool = data.draw(st.sampled_from(["ok", "spend", "typed"]))
        told.append(decide_wire(engine, tool, text.encode()).reason)

    # Envoy's Check: the MCP body read strictly, refused when it could be read two ways.
    for text in (
        json.dumps(args),
        f'{{"a": "{s1}", "a": "{s2}"}}',
        f'{{"b": {{"{k1}": "{s1}", "{k1.capitalize()}": "{s2}"}}}}',
        f'{{"amount": {huge}}}',
        f'["{s1}", "{s2}"]',
    ):
        tool = data.draw(st.sampled_from(["ok", "deny", "spend"]))
        check(engine, call_body(tool, text))
    cut = call_body("ok", json.dumps(args))
    check(engine, cut[:-3], headers={"content-length": str(len(cut))})
    check(engine, call_body("ok", f'{{"a": "{s1}"')[:-2])  # not JSON

    assert sidecar.sync_decision_log(PATIENCE)
    text = path.read_text()
    logged = lines(path)
    assert len(logged) == 9 + 8 + 7, "every decision is logged"
    secrets = [*strings, json.dumps(amount), str(huge)]
    assert [s for s in secrets if s in text] == []
    # The agent was told which key or number (the log leaves that out)...
    assert any(str(huge) in reason for reason in told)
    assert any(k1 in reason for reason in told)
    # ...and a path a rule's `log` names is written, in clear.
    assert shown in text


def test_refusals_name_the_caller_and_tool_where_known(tmp_path):
    """A request refused before its policy could decide it is logged with who made it and
    the tool it named, as far as each could be read: the Decide request's subject and tool;
    a Check's session, agent and server, and its body's tool when the body was read that far;
    for a credential that is not one, everything but the credential."""
    path = tmp_path / "decisions.jsonl"
    sidecar = logging_sidecar(path)
    engine = sidecar.engine
    subject = pb.Subject(grant="g", session="s-9", agent="bot-9")
    request = pb.DecideRequest(tool="ok", server="srv", subject=subject, arguments_json=b"[1]")
    native.call(engine, native.DECIDE, request.SerializeToString())
    check(engine, call_body("ok", '{"a": 1, "a": 2}'))  # the tool is not read: refused first
    check(engine, call_body("ok", "[1]"))  # read up to the arguments
    check(engine, call_body("ok", "{}"), headers={"mcp-name": "other"})
    check(engine, call_body("ok", "{}"), headers={"authorization": "Basic abc"})
    cut = call_body("ok", "{}")
    check(engine, cut, headers={"content-length": str(len(cut) + 1)})
    assert sidecar.sync_decision_log(PATIENCE)
    logged = lines(path)
    assert {line["code"] for line in logged} == {"INVALID_REQUEST"}
    tools = [line["tool"] for line in logged]
    assert tools == ["ok", None, "ok", "ok", "ok", None]
    assert [line["server"] for line in logged] == ["srv"] * 6
    decided = logged[0]["subject"]
    assert (decided["session"], decided["agent"]) == ("s-9", "bot-9")
    assert decided["grant"].startswith("hmac-sha256:")
    for line in logged[1:]:
        assert (line["subject"]["session"], line["subject"]["agent"]) == ("s-1", "bot-1")
    unauthenticated = logged[4]
    assert unauthenticated["subject"]["grant"] is None, "a refused credential is not logged"
    assert "Bearer" in unauthenticated["reason"]
