"""Envoy's ext_authz ``Check`` against a real ``toolgate serve`` process, with requests built
from Envoy's published protos (xds-protos) exactly as Envoy sends them: the MCP body in
``raw_body``, headers lower-cased, the server id in ``context_extensions``.

What Envoy itself does with the answers is covered end to end in test_envoy_e2e.py; here every
case of the decision is pinned.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import grpc
import pytest
from conftest import EXAMPLES, limit, policy
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from google.rpc import code_pb2
from sidecar import Sidecar

Ctx = attribute_context_pb2.AttributeContext
CHECK = "/envoy.service.auth.v3.Authorization/Check"

_ids = itertools.count(100)


def call_body(tool: str, arguments: dict[str, Any] | None = None, id: Any = None) -> bytes:
    params: dict[str, Any] = {"name": tool}
    if arguments is not None:
        params["arguments"] = arguments
    message = {"jsonrpc": "2.0", "id": next(_ids) if id is None else id, "method": "tools/call"}
    message["params"] = params
    return json.dumps(message).encode()


def check_request(
    body: bytes | str,
    *,
    headers: dict[str, str] | None = None,
    method: str = "POST",
    extensions: dict[str, str] | None = None,
    as_text: bool = False,
    content_length: bool = True,
    jwt_payload: dict[str, Any] | None = None,
) -> external_auth_pb2.CheckRequest:
    raw = body.encode() if isinstance(body, str) else body
    h = {"content-type": "application/json", ":path": "/mcp", **(headers or {})}
    if content_length and raw:
        h.setdefault("content-length", str(len(raw)))
    http = Ctx.HttpRequest(method=method, path="/mcp", headers=h)
    if as_text:
        http.body = raw.decode()
    else:
        http.raw_body = raw
    attributes = Ctx(request=Ctx.Request(http=http), context_extensions=extensions or {})
    if jwt_payload is not None:
        # Where Envoy's jwt_authn filter leaves a verified token's payload.
        namespace = attributes.metadata_context.filter_metadata["envoy.filters.http.jwt_authn"]
        namespace.update({"jwt_payload": jwt_payload})
    return external_auth_pb2.CheckRequest(attributes=attributes)


class Authz:
    """A Check stub on one sidecar."""

    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar
        self.stub = sidecar.channel().unary_unary(
            CHECK,
            request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
            response_deserializer=external_auth_pb2.CheckResponse.FromString,
        )

    def __call__(self, body: bytes | str, **kw: Any) -> external_auth_pb2.CheckResponse:
        return self.stub(check_request(body, **kw), timeout=30)


def headers_of(options: Any) -> dict[str, str]:
    return {o.header.key: o.header.value for o in options}


def allowed(r: external_auth_pb2.CheckResponse) -> dict[str, str]:
    assert r.status.code == code_pb2.OK, r
    assert r.HasField("ok_response")
    return headers_of(r.ok_response.response_headers_to_add)


def denied(r: external_auth_pb2.CheckResponse) -> tuple[int, dict[str, str], dict[str, Any]]:
    """(HTTP status, headers, JSON body) of a denial."""
    assert r.status.code == code_pb2.PERMISSION_DENIED, r
    d = r.denied_response
    headers = headers_of(d.headers)
    assert headers["content-type"] == "application/json"
    return d.status.code, headers, json.loads(d.body)


def decision_meta(body: dict[str, Any]) -> dict[str, Any]:
    result = body["result"]
    assert result["isError"] is True
    assert result["content"][0]["type"] == "text"
    meta = result["_meta"]["toolgate/decision"]
    assert result["content"][0]["text"] == meta["reason"]
    return meta


def bearer(name: str) -> dict[str, str]:
    return {"authorization": f"Bearer {name}"}


@pytest.fixture(scope="module")
def authz():
    with Sidecar(EXAMPLES / "policy.json") as s:
        yield Authz(s)


# --- decisions on tools/call ---------------------------------------------------------------


def test_allowed_call_passes_with_headers_naming_decision_and_rule(authz):
    r = authz(call_body("create-ami", {"name": "web"}), headers=bearer("t-allowed"))
    assert allowed(r) == {"x-toolgate-code": "ALLOWED", "x-toolgate-rule": "/tools/create-ami"}


def test_31st_create_ami_in_a_minute_is_rate_limited_per_bearer_token(authz):
    for _ in range(30):
        allowed(authz(call_body("create-ami"), headers=bearer("t-example")))
    status, h, body = denied(
        authz(call_body("create-ami", id="the-31st"), headers=bearer("t-example"))
    )
    assert status == 200
    assert body["id"] == "the-31st"
    meta = decision_meta(body)
    assert meta["code"] == "RATE_LIMITED"
    assert meta["rule"] == "/tools/create-ami/limits/0"
    assert 0 < meta["retry_after_ms"] <= 65_000
    assert int(h["retry-after"]) == -(-meta["retry_after_ms"] // 1000)
    assert (h["ratelimit-limit"], h["ratelimit-remaining"]) == ("30", "0")
    assert 0 < int(h["ratelimit-reset"]) <= 65
    # Another token is another grant; the scheme is case-insensitive.
    allowed(authz(call_body("create-ami"), headers={"authorization": "bearer t-other"}))


def test_policy_denials_are_tool_results_with_is_error(authz):
    cases = [
        ("transfer_funds", {"amount": 5000, "currency": "USD"}, "CONDITION_FAILED"),
        ("run_command", {"command": "rm -rf /"}, "CONDITION_FAILED"),
        ("not_in_the_policy", {}, "DEFAULT_DENY"),
        ("terminate_instances", {"ids": ["i-1"]}, "APPROVAL_REQUIRED"),
    ]
    for tool, arguments, code in cases:
        status, h, body = denied(
            authz(call_body(tool, arguments, id=tool), headers={**bearer("t"), "x-agent-id": "a"})
        )
        assert status == 200, tool
        assert body["jsonrpc"] == "2.0" and body["id"] == tool
        assert "error" not in body
        meta = decision_meta(body)
        assert meta["code"] == code, (tool, meta)
        assert h["x-toolgate-code"] == code
        assert meta["revision"]
    status, _, body = denied(
        authz(call_body("run_command", {"command": "rm -rf /"}), headers=bearer("t"))
    )
    assert decision_meta(body)["reason"] == "Destructive shell commands are not allowed."


def test_a_hidden_tool_is_an_unknown_tool(authz):
    status, _, body = denied(authz(call_body("delete_bucket", {"b": 1}, id=77)))
    assert status == 200
    assert body == {
        "jsonrpc": "2.0",
        "id": 77,
        "error": {"code": -32602, "message": "Unknown tool: delete_bucket"},
    }


def test_the_body_may_come_as_text(authz):
    allowed(authz(call_body("list_buckets"), as_text=True))
    denied(authz(call_body("delete_x"), as_text=True))


# --- what passes undecided, and what is refused --------------------------------------------


def test_other_methods_pass_undecided(authz):
    for message in [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 3, "result": {}},
    ]:
        h = allowed(authz(json.dumps(message)))
        assert "x-toolgate-code" not in h, message
    for method in ("GET", "DELETE"):
        allowed(authz(b"", method=method))


MALFORMED = [
    pytest.param(
        b'[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_x"}}]',
        400,
        -32600,
        id="batch",
    ),
    pytest.param(
        b'{"jsonrpc":"2.0","id":1,"method":"tools/list","METHOD":"tools/call",'
        b'"params":{"name":"delete_x"}}',
        400,
        -32600,
        id="case-variant-key",
    ),
    pytest.param(
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_x","name":"x"}}',
        400,
        -32600,
        id="duplicate-key",
    ),
    pytest.param(
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["list_x"]}',
        400,
        -32602,
        id="params-not-object",
    ),
    pytest.param(
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_x","arguments":1}}',
        400,
        -32602,
        id="arguments-not-object",
    ),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"tools/ca', 400, -32700, id="cut-json"),
    pytest.param(b"\xff\xfe{}", 400, -32700, id="not-utf8"),
    pytest.param(b"", 400, -32700, id="empty-post"),
]


@pytest.mark.parametrize(("body", "status", "code"), MALFORMED)
def test_unreadable_bodies_are_refused_with_json_rpc_errors(authz, body, status, code):
    got_status, h, reply = denied(authz(body))
    assert got_status == status
    assert reply["jsonrpc"] == "2.0"
    assert reply["error"]["code"] == code
    assert h["x-toolgate-code"] == "INVALID_REQUEST"


def test_a_body_envoy_cut_is_refused_even_when_the_part_parses(authz):
    whole = call_body("list_buckets")
    # Envoy flags a body cut at max_request_bytes...
    status, _, reply = denied(authz(whole, headers={"x-envoy-auth-partial-body": "true"}))
    assert (status, reply["error"]["code"]) == (413, -32600)
    # ...and a body shorter than its declared length was cut too.
    status, _, _ = denied(authz(whole, headers={"content-length": str(len(whole) + 10)}))
    assert status == 413


def test_mcp_headers_must_agree_with_the_body(authz):
    body = call_body("delete_everything", id=5)
    status, _, reply = denied(
        authz(body, headers={"mcp-method": "tools/call", "mcp-name": "list_buckets"})
    )
    assert (status, reply["id"], reply["error"]["code"]) == (400, 5, -32600)
    assert "Mcp-Name" in reply["error"]["message"]
    status, _, _ = denied(
        authz(
            json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
            headers={"mcp-method": "tools/call"},
        )
    )
    assert status == 400
    allowed(
        authz(
            call_body("list_buckets"),
            headers={"mcp-method": "tools/call", "mcp-name": "list_buckets"},
        )
    )


def test_a_limit_whose_subject_is_missing_denies(authz):
    # create-ami counts per grant; with no Authorization header there is no grant.
    _, _, body = denied(authz(call_body("create-ami")))
    assert decision_meta(body)["code"] == "INVALID_REQUEST"


def test_malformed_check_requests_get_a_grpc_error_and_the_server_keeps_serving(authz):
    raw = authz.sidecar.channel().unary_unary(CHECK)
    with pytest.raises(grpc.RpcError) as info:
        raw(b"\xff\xff\xff", timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    allowed(authz(call_body("list_buckets")))


def test_refusals_are_counted_in_metrics(authz):
    def invalid() -> float:
        samples = authz.sidecar.samples()
        return sum(
            v
            for (name, labels), v in samples.items()
            if name == "toolgate_decisions_total"
            and ("code", "INVALID_REQUEST") in labels
            and ("api", "ext_authz") in labels
        )

    before = invalid()
    denied(authz(b"[]"))
    assert invalid() == before + 1


# --- configuration: server id and subject headers ------------------------------------------

SERVERS = policy(
    {"ping": {"limits": [limit("ping", 1, scope="agent")]}},
    servers={"billing": policy({"charge": {}})},
)


def test_server_from_route_extension_or_header_and_custom_subject_headers():
    with Sidecar(
        SERVERS,
        "--grant-header",
        "x-api-key",
        "--agent-header",
        "x-agent",
        "--server-header",
        "x-upstream",
    ) as s:
        authz = Authz(s)
        # The route's context extension selects the billing section...
        allowed(authz(call_body("charge"), extensions={"server": "billing"}))
        # ...so does the configured header; the extension wins over the header.
        allowed(authz(call_body("charge"), headers={"x-upstream": "billing"}))
        denied(
            authz(
                call_body("charge"),
                extensions={"server": "other"},
                headers={"x-upstream": "billing"},
            )
        )
        denied(authz(call_body("charge")))
        # The agent comes from x-agent: one ping per agent.
        allowed(authz(call_body("ping"), headers={"x-agent": "a1"}))
        _, _, body = denied(authz(call_body("ping"), headers={"x-agent": "a1"}))
        assert decision_meta(body)["code"] == "RATE_LIMITED"
        allowed(authz(call_body("ping"), headers={"x-agent": "a2"}))


def test_grant_header_value_is_used_whole_when_not_authorization():
    doc = policy({"t": {"limits": [limit("t", 1)]}})
    with Sidecar(doc, "--grant-header", "x-api-key") as s:
        authz = Authz(s)
        allowed(authz(call_body("t"), headers={"x-api-key": "Bearer k1"}))
        denied(authz(call_body("t"), headers={"x-api-key": "Bearer k1"}))
        # The Authorization header means nothing now.
        denied(authz(call_body("t"), headers={"authorization": "Bearer k2"}))


def test_a_verified_grant_is_the_issuer_and_subject_and_needs_a_verified_token():
    doc = policy({"t": {"limits": [limit("t", 1)]}})
    with Sidecar(doc, "--grant-from", "jwt:sub") as s:
        authz = Authz(s)
        one = {"iss": "https://idp.one", "sub": "alice"}
        allowed(authz(call_body("t"), jwt_payload=one))
        _, _, body = denied(authz(call_body("t"), jwt_payload=one))
        assert decision_meta(body)["code"] == "RATE_LIMITED"
        # The same subject from another issuer is another caller, with a count of its own.
        allowed(authz(call_body("t"), jwt_payload={"iss": "https://idp.two", "sub": "alice"}))
        # No verified token, no subject in it, or no issuer: refused, never a shared grant.
        for payload in [None, {"iss": "https://idp.one"}, {"sub": "alice"}]:
            status, headers, body = denied(authz(call_body("t", id=9), jwt_payload=payload))
            assert status == 401, payload
            assert headers["www-authenticate"] == 'Bearer error="invalid_request"'
            assert body["id"] == 9
        # Not even a call without limits runs without one.
        status, _, _ = denied(authz(call_body("free"), jwt_payload=None))
        assert status == 401


def test_made_up_tokens_cannot_take_the_counter_table_from_anyone_else():
    doc = policy(
        {
            "pay": {"limits": [limit("pay", 2, window="day")]},
            "ping": {"limits": [limit("pings", 5, scope="global")]},
        }
    )
    with Sidecar(doc, "--capacity", "64") as s:
        authz = Authz(s)
        allowed(authz(call_body("pay"), headers=bearer("alice-token")))
        # A flood of made-up bearer tokens, each counted for a day: half the table, no more.
        flood = [authz(call_body("pay"), headers=bearer(f"made-up-{i}")) for i in range(100)]
        counted = [r for r in flood if r.status.code == code_pb2.OK]
        assert len(counted) == 64 // 2 - 1  # alice holds one client slot
        _, _, body = denied(flood[-1])
        assert "counter table is full" in decision_meta(body)["reason"]
        assert s.metric("toolgate_counter_table_client_slots") == 32
        # A counter no client chooses still finds room, and alice is counted as before.
        allowed(authz(call_body("ping"), headers=bearer("made-up-0")))
        allowed(authz(call_body("pay"), headers=bearer("alice-token")))
        _, _, body = denied(authz(call_body("pay"), headers=bearer("alice-token")))
        assert decision_meta(body)["code"] == "RATE_LIMITED"
        assert "at most 2 calls per 1d per grant" in decision_meta(body)["reason"]


def test_bad_header_configuration_is_refused_at_start(tmp_path):
    from sidecar import toolgate_cli

    r = toolgate_cli("serve", "--grant-header", "X-Api-Key", "--listen", "127.0.0.1:0")
    assert r.returncode == 2
    assert "lower-case" in r.stderr
