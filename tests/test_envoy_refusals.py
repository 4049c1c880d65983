"""What the sidecar refuses on Envoy's APIs, and why, against a real ``toolgate serve``: each
class of request that an upstream could read differently from toolgate, or that could make
toolgate count what it should not, is refused and changes nothing.

The bodies an upstream Go server reads differently are checked against Go's own decoder in
test_differential.py; end to end through Envoy in test_envoy_e2e.py.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

import pytest
from conftest import cond, limit, policy
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf import wrappers_pb2
from sidecar import Sidecar
from test_envoy_authz_api import Authz, allowed, call_body, decision_meta, denied

POLICY = policy(
    {
        "transfer": {"deny_if": [cond("args.amount", "gt", 100)]},
        "push": {"deny_if": [cond("args.force", "exists")]},
        "read_file": {},
        "create-ami": {"limits": [limit("ami", 3, scope="grant")]},
    },
    hide=["drop_database"],
)

#: Small, so the bodies at the limit are small too.
MAX_REQUEST_BYTES = 4096


@pytest.fixture(scope="module")
def sidecar():
    with Sidecar(POLICY, "--max-request-bytes", str(MAX_REQUEST_BYTES)) as s:
        yield s


@pytest.fixture(scope="module")
def authz(sidecar):
    return Authz(sidecar)


def refused(reply: dict[str, Any]) -> str:
    """The message of a JSON-RPC error refusal."""
    assert reply["error"]["code"] in (-32700, -32600, -32602), reply
    return reply["error"]["message"]


def raw_call(params: str, envelope_extra: str = "") -> bytes:
    """A tools/call written by hand, so keys can repeat and be spelled at will."""
    return (
        f'{{"jsonrpc":"2.0","id":7,"method":"tools/call"{envelope_extra},"params":{params}}}'
    ).encode()


# --- keys that a case-folding decoder reads as another ------------------------------------

FOLDED_KEY_BODIES = [
    # A second params object under a key that Go's encoding/json reads as "params" (U+017F
    # LONG S): Go keeps the last, the hidden tool.
    pytest.param(
        raw_call('{"name":"read_file"}', ',"param\u017f":{"name":"drop_database"}'),
        id="long-s-params-twin",
    ),
    pytest.param(
        raw_call('{"name":"read_file"}', ',"PARAMS":{"name":"drop_database"}'),
        id="ascii-params-twin",
    ),
    # The amount the policy sees is 5; Go binds the last key that folds to "amount".
    pytest.param(
        raw_call('{"name":"transfer","arguments":{"amount":5,"Amount":5000}}'),
        id="arguments-case-twin",
    ),
    pytest.param(
        raw_call('{"name":"transfer","arguments":{"amount":5,"\\u0041mount":5000}}'),
        id="arguments-escaped-twin",
    ),
    pytest.param(
        raw_call('{"name":"push","arguments":{"opts":{"\u212aey":1,"key":2}}}'),
        id="kelvin-sign-nested",
    ),
    pytest.param(
        raw_call('{"name":"push","arguments":{"list":[{"x":1},{"ok":1,"OK":2}]}}'),
        id="twin-inside-array",
    ),
    pytest.param(
        raw_call('{"name":"read_file","argument\u017f":{"path":"/etc/shadow"}}'),
        id="folded-known-params-key",
    ),
    pytest.param(
        raw_call('{"name":"transfer","arguments":{"amount":9007199254740993}}'),
        id="integer-beyond-2^53",
    ),
]


@pytest.mark.parametrize("body", FOLDED_KEY_BODIES)
def test_keys_a_case_folding_decoder_reads_as_one_are_refused(authz, body):
    status, headers, reply = denied(authz(body))
    assert status == 400
    assert headers["x-toolgate-code"] == "INVALID_REQUEST"
    assert "two ways" in refused(reply) or "only by case" in refused(reply)


def test_a_key_present_only_by_case_is_not_read_as_missing(authz):
    # `push` denies when args.force exists; "Force" alone is what a Go handler binds.
    _, _, reply = denied(authz(call_body("push", {"Force": True})))
    meta = decision_meta(reply)
    assert meta["code"] == "CONDITION_FAILED"
    assert "only by case" in meta["reason"]
    # Spelled exactly, or absent: decided as written.
    denied(authz(call_body("push", {"force": True})))
    allowed(authz(call_body("push", {"other": True})))


# --- bodies shaped to make the reader slow --------------------------------------------------


def test_bodies_over_the_key_and_value_caps_are_refused_and_the_sidecar_keeps_serving():
    """A body of ~130k keys once froze the sidecar for half a minute (a quadratic duplicate
    check under the GIL); now the reader stops at the cap, linear in the body and without
    the GIL, while other calls are answered."""
    with Sidecar(POLICY, "--max-request-bytes", str(4 << 20)) as s:
        authz = Authz(s)
        many_keys = "{" + ",".join(f'"k{i}":0' for i in range(130_000)) + "}"
        many_values = "[" + ",".join(["0"] * 300_000) + "]"
        answers: dict[str, Any] = {}

        def attack(name: str, arguments: str) -> None:
            body = raw_call(f'{{"name":"read_file","arguments":{{"x":{arguments}}}}}')
            answers[name] = denied(authz(body))

        threads = [
            threading.Thread(target=attack, args=("keys", many_keys)),
            threading.Thread(target=attack, args=("values", many_values)),
        ]
        for t in threads:
            t.start()
        # Meanwhile, ordinary calls are decided.
        for _ in range(20):
            allowed(authz(call_body("read_file", {"path": "/tmp/x"})))
        for t in threads:
            t.join()
        status, _, reply = answers["keys"]
        assert status == 400 and "more than 100000 object keys" in refused(reply)
        status, _, reply = answers["values"]
        assert status == 400 and "more than 250000 values" in refused(reply)
        assert s.alive


# --- bodies Envoy may have cut ---------------------------------------------------------------


def padded_call(size: int) -> bytes:
    """A valid tools/call of exactly ``size`` bytes (whitespace padding inside the JSON)."""
    body = call_body("read_file", {"path": "/tmp/x"})
    return body[:-1] + b" " * (size - len(body)) + b"}"


def test_a_body_that_fills_envoys_buffer_without_a_length_is_refused_as_cut(authz):
    # With no content-length (chunked HTTP/1.1, or HTTP/2), Envoy reports a body it cut at
    # max_request_bytes as whole: only its size gives it away.
    status, _, reply = denied(authz(padded_call(MAX_REQUEST_BYTES), content_length=False))
    assert status == 413
    assert "whole request body" in refused(reply)
    allowed(authz(padded_call(MAX_REQUEST_BYTES - 1), content_length=False))
    # A declared length says whether the body is whole.
    allowed(authz(padded_call(MAX_REQUEST_BYTES)))


# --- the rate limit service: validated before any counter is touched --------------------------

Descriptor = ratelimit_pb2.RateLimitDescriptor
Response = rls_pb2.RateLimitResponse


def rls_stub(sidecar: Sidecar) -> Any:
    stub = sidecar.channel().unary_unary(
        "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
        request_serializer=rls_pb2.RateLimitRequest.SerializeToString,
        response_deserializer=Response.FromString,
    )
    return lambda *d, hits=0: stub(
        rls_pb2.RateLimitRequest(domain="", descriptors=list(d), hits_addend=hits), timeout=30
    )


_grants = itertools.count()


def descriptor(hits: int | None = None, **entries: str) -> Descriptor:
    d = Descriptor(entries=[Descriptor.Entry(key=k, value=v) for k, v in entries.items()])
    if hits is not None:
        d.hits_addend.CopyFrom(wrappers_pb2.UInt64Value(value=hits))
    return d


INVALID_LATER_DESCRIPTORS = [
    pytest.param(descriptor(hits=2**32, tool="create-ami", grant="g"), id="hits-over-u32"),
    pytest.param(descriptor(hits=2**64 - 1, tool="create-ami", grant="g"), id="hits-u64-max"),
    pytest.param(descriptor(grant="g"), id="no-tool"),
    pytest.param(
        Descriptor(
            entries=[Descriptor.Entry(key="tool", value="create-ami")] * 2,
        ),
        id="entry-twice",
    ),
    pytest.param(
        # is_negative_hits (field 4, newer than these protos): kept as an unknown field.
        Descriptor.FromString(descriptor(tool="create-ami").SerializeToString() + b"\x20\x01"),
        id="negative-hits",
    ),
    pytest.param(
        Descriptor(
            entries=[Descriptor.Entry(key="tool", value="create-ami")],
            limit=Descriptor.RateLimitOverride(requests_per_unit=1000),
        ),
        id="limit-override",
    ),
]


@pytest.mark.parametrize("bad", INVALID_LATER_DESCRIPTORS)
def test_an_invalid_descriptor_anywhere_refuses_the_request_and_counts_nothing(sidecar, bad):
    ask = rls_stub(sidecar)
    grant = f"rls-{next(_grants)}"
    for _ in range(3):
        r = ask(descriptor(tool="create-ami", grant=grant), bad)
        assert r.overall_code == Response.OVER_LIMIT
        assert [s.code for s in r.statuses] == [Response.OVER_LIMIT] * 2
        assert {h.key: h.value for h in r.response_headers_to_add}["x-toolgate-code"] == (
            "INVALID_REQUEST"
        )
    # Nothing was counted: the grant still has its whole quota of 3.
    r = ask(descriptor(tool="create-ami", grant=grant))
    assert (r.overall_code, r.statuses[0].limit_remaining) == (Response.OK, 2)


def test_a_request_level_hits_addend_applies_to_each_descriptor(sidecar):
    ask = rls_stub(sidecar)
    r = ask(descriptor(tool="create-ami", grant="rls-addend"), hits=3)
    assert (r.overall_code, r.statuses[0].limit_remaining) == (Response.OK, 0)


# --- credentials: one token, one grant; anything else refused and not counted ----------------

RESPELLINGS = ["Bearer tok-1", "bearer tok-1", "BEARER  tok-1"]

NOT_A_BEARER_TOKEN = [
    "Bearer\ttok-1",
    "Bearer tok-1,",
    "Bearer tok-1,Bearer tok-2",
    "Bearer tok-1 ",
    "Bearer tok 1",
    "Basic dXNlcjpwYXNz",
    "tok-1",
    "Bearer",
]


def test_one_bearer_token_is_one_grant_however_it_is_spelled(authz):
    for spelling in RESPELLINGS:
        allowed(authz(call_body("create-ami"), headers={"authorization": spelling}))
    _, _, reply = denied(authz(call_body("create-ami"), headers={"authorization": "Bearer tok-1"}))
    assert decision_meta(reply)["code"] == "RATE_LIMITED"


@pytest.mark.parametrize("value", NOT_A_BEARER_TOKEN)
def test_a_value_that_is_not_a_bearer_token_is_refused_and_takes_no_counter(sidecar, authz, value):
    before = sidecar.metric("toolgate_counter_table_slots_used")
    status, headers, reply = denied(
        authz(call_body("create-ami"), headers={"authorization": value})
    )
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer error="invalid_request"'
    assert "Authorization" in refused(reply)
    # A refused credential reaches no counter, on a call with a limit or without.
    denied(authz(call_body("read_file"), headers={"authorization": value}))
    assert sidecar.metric("toolgate_counter_table_slots_used") == before
