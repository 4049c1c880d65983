"""An outside review of MCP session holding: caller "mallory" (``Bearer mallory``, or no
credential at all) knows the ``Mcp-Session-Id`` that caller "alice" (``Bearer alice``) uses,
and tries to reach that session through toolgate anyway.

What toolgate promises (docs/policy.md, "Sessions"): the first caller (its grant) to send
an ``Mcp-Session-Id`` for a server holds that session; any other caller that sends it, on any
request (a message, a notification, a JSON-RPC response, the GET stream, its replay with
``Last-Event-ID``, the DELETE), is answered HTTP 404 with the JSON-RPC error "Session not
found", and the request never reaches the MCP server. The header is read once: twice, with a
comma, or with spaces or tabs around its value, is a 400.

End to end through a real Envoy (deploy/envoy/mcp-ext-authz-ext-proc.yaml) and a real
``toolgate serve``. Most tests run against a scripted upstream that records every request it
receives, so a test proves that mallory's request never reached the server (each attack
carries an ``x-probe`` marker the upstream would record). Spellings that a server normalises
(whitespace around the id, which Node's HTTP parser trims) run against the reference
server-everything, whose sessions are real. Each test asserts the attack fails. The review
found one that did not: over HTTP/2 a padded id (" <id>") reached the server, which trims it,
as a session mallory held first; such values are refused since.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from conftest import policy
from envoy_proxy import DEPLOY, Envoy, deployed, envoy_executable
from mcp_servers import EverythingServer, node_executable
from sidecar import Sidecar
from test_envoy_ext_proc import request_body
from test_tasks_attacks import rpc

EXT_PROC = DEPLOY / "mcp-ext-authz-ext-proc.yaml"
REVISION = "2025-11-25"
POLICY = policy({"*": {}}, default="allow")
NOT_FOUND = {
    "jsonrpc": "2.0",
    "id": None,
    "error": {"code": -32001, "message": "Session not found"},
}
ALICE = "Bearer alice"
MALLORY = "Bearer mallory"

# --- a recording upstream ----------------------------------------------------------------------


class Seen:
    """One request as the upstream received it."""

    def __init__(self, method: str, headers: dict[str, str], body: bytes) -> None:
        self.method, self.headers, self.body = method, headers, body


class RecordingUpstream:
    """An MCP server stand-in that answers every HTTP method and records each request it
    receives (method, headers lower-cased, body): initialize gets a session id, a request
    its empty result, a notification or response 202, a GET a one-event stream, a DELETE 200."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        seen, lock = self.seen, self.lock

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                body = self._body()
                headers = {k.lower(): v for k, v in self.headers.items()}
                with lock:
                    seen.append(Seen(self.command, headers, body))
                status, content_type, out, extra = 200, "application/json", b"", {}
                if self.command == "POST":
                    try:
                        message = json.loads(body)
                    except ValueError:
                        message = None
                    if isinstance(message, dict) and "method" in message and "id" in message:
                        result: dict[str, Any] = {}
                        if message["method"] == "initialize":
                            result = {"protocolVersion": REVISION, "capabilities": {}}
                            result["serverInfo"] = {"name": "recording", "version": "1"}
                            extra["mcp-session-id"] = uuid.uuid4().hex
                        reply = {"jsonrpc": "2.0", "id": message["id"], "result": result}
                        out = json.dumps(reply).encode()
                    else:
                        status = 202
                elif self.command == "GET":
                    content_type = "text/event-stream"
                    ping = {"jsonrpc": "2.0", "method": "notifications/message", "params": {}}
                    out = b"id: 1\ndata: " + json.dumps(ping).encode() + b"\n\n"
                self.send_response(status)
                self.send_header("content-type", content_type)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(out)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = do_OPTIONS = do_HEAD = _any

            def _body(self) -> bytes:
                return request_body(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def probed(self, probe: str) -> list[Seen]:
        """The requests that reached the upstream carrying the ``x-probe`` marker ``probe``."""
        with self.lock:
            return [s for s in self.seen if probe in s.headers.get("x-probe", "")]

    def __enter__(self) -> RecordingUpstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- talking to Envoy --------------------------------------------------------------------------


class Reply:
    def __init__(self, status: int | None, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)

    def messages(self) -> list[Any]:
        """The JSON-RPC messages of a JSON body or of an event stream's data lines."""
        text = self.body.decode(errors="replace")
        if text.lstrip()[:1] in ("{", "["):
            return [json.loads(text)]
        out = []
        for line in text.replace("\r\n", "\n").split("\n"):
            if line.startswith("data:") and line[5:].strip():
                out.append(json.loads(line[5:]))
        return out


def h1(
    envoy: Envoy,
    method: str,
    headers: list[tuple[str, str]],
    body: bytes = b"",
    timeout: float = 30.0,
) -> Reply:
    """One HTTP/1.1 request to /mcp with ``headers`` as given (a name may repeat)."""
    assert envoy.port is not None
    connection = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=timeout)
    try:
        connection.putrequest(method, "/mcp", skip_accept_encoding=True)
        sent = [("accept", "application/json, text/event-stream"), *headers]
        if body:
            sent += [("content-type", "application/json"), ("content-length", str(len(body)))]
        for name, value in sent:
            connection.putheader(name, value)
        connection.endheaders(body or None)
        response = connection.getresponse()
        out = b"" if method == "HEAD" else response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, out)
    finally:
        connection.close()


def raw_h1(envoy: Envoy, head: bytes, body: bytes = b"") -> tuple[int | None, bytes]:
    """Bytes sent as they are (for header spellings http.client will not write): the status
    and the body of Envoy's answer (None: the connection closed with no answer)."""
    assert envoy.port is not None
    with socket.create_connection(("127.0.0.1", envoy.port), timeout=30) as sock:
        sock.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        if not data:
            return None, b""
        top, _, rest = data.partition(b"\r\n\r\n")
        status = int(top.split(b" ", 2)[1])
        length = 0
        for line in top.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, rest[:length]


def h2c(
    envoy: Envoy,
    method: str,
    headers: list[tuple[str, str]],
    body: bytes = b"",
) -> Reply:
    """One HTTP/2 (prior knowledge) request to /mcp, the headers sent exactly as given: no
    normalising or checking on the client's side. Status None: Envoy reset the stream or the
    connection."""
    assert envoy.port is not None
    config = h2.config.H2Configuration(
        client_side=True,
        header_encoding="utf-8",
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
    )
    connection = h2.connection.H2Connection(config=config)
    with socket.create_connection(("127.0.0.1", envoy.port), timeout=30) as sock:
        connection.initiate_connection()
        stream = connection.get_next_available_stream_id()
        sent = [
            (":method", method),
            (":scheme", "http"),
            (":authority", f"127.0.0.1:{envoy.port}"),
            (":path", "/mcp"),
            ("accept", "application/json, text/event-stream"),
            *headers,
        ]
        if body:
            sent += [("content-type", "application/json"), ("content-length", str(len(body)))]
        connection.send_headers(stream, sent, end_stream=not body)
        if body:
            connection.send_data(stream, body, end_stream=True)
        sock.sendall(connection.data_to_send())
        status: int | None = None
        got: dict[str, str] = {}
        out, done = b"", False
        while not done:
            data = sock.recv(65536)
            if not data:
                break
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    got = {str(k): str(v) for k, v in event.headers}
                    status = int(got[":status"])
                elif isinstance(event, h2.events.DataReceived):
                    out += event.data
                    connection.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, h2.events.StreamEnded):
                    done = True
                elif isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
                    status, done = None, True
            sock.sendall(connection.data_to_send())
        return Reply(status, got, out)


def common(authorization: str | None, session: str) -> list[tuple[str, str]]:
    out = [("mcp-protocol-version", REVISION), ("mcp-session-id", session)]
    if authorization is not None:
        out.append(("authorization", authorization))
    return out


#: Every kind of request a caller makes in a session: (HTTP method, extra headers, body).
KINDS: dict[str, tuple[str, list[tuple[str, str]], bytes]] = {
    "message": ("POST", [], rpc("tools/list", None, 7)),
    "tool-call": ("POST", [], rpc("tools/call", {"name": "echo", "arguments": {}}, 8)),
    "ping": ("POST", [], rpc("ping", None, 9)),
    "notification": ("POST", [], rpc("notifications/initialized", None, None)),
    "cancel-notification": (
        "POST",
        [],
        rpc("notifications/cancelled", {"requestId": 1}, None),
    ),
    "response": ("POST", [], b'{"jsonrpc":"2.0","id":0,"result":{"action":"accept"}}'),
    "error-response": (
        "POST",
        [],
        b'{"jsonrpc":"2.0","id":0,"error":{"code":-1,"message":"no"}}',
    ),
    "batch": ("POST", [], b'[{"jsonrpc":"2.0","id":0,"result":{}}]'),
    "post-without-body": ("POST", [], b""),
    "get-stream": ("GET", [], b""),
    "get-replay": ("GET", [("last-event-id", "1")], b""),
    "delete": ("DELETE", [], b""),
}

#: Kinds toolgate refuses whoever sends them (a batch; a POST that is no JSON): 400 for alice,
#: and for another caller's session 404 before that.
REFUSED_FOR_ALL = {"batch", "post-without-body"}

# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sidecar() -> Iterator[Sidecar]:
    if envoy_executable() is None:
        pytest.skip("needs envoy")
    with Sidecar(POLICY) as running:
        yield running


@pytest.fixture(scope="module")
def recorded(sidecar: Sidecar) -> Iterator[tuple[Envoy, RecordingUpstream]]:
    with (
        RecordingUpstream() as upstream,
        deployed(EXT_PROC, sidecar.port, upstream.port, patient=True) as envoy,
    ):
        yield envoy, upstream


@pytest.fixture(scope="module")
def everything(sidecar: Sidecar) -> Iterator[Envoy]:
    if node_executable() is None:
        pytest.skip("needs node")
    with (
        EverythingServer() as server,
        deployed(EXT_PROC, sidecar.port, server.port, patient=True) as envoy,
    ):
        yield envoy


def alices_session(envoy: Envoy) -> str:
    """A fresh session id, held by alice: her first request names it, and reaches the
    server."""
    session = "s-" + uuid.uuid4().hex
    reply = h1(envoy, "POST", common(ALICE, session), rpc("ping", None, 1))
    assert reply.status == 200, (reply.status, reply.body)
    assert reply.json()["id"] == 1, reply.body
    return session


def refused(reply: Reply | tuple[int | None, bytes], statuses: tuple[int | None, ...]) -> None:
    """The reply is one of ``statuses`` (404 only with toolgate's exact body)."""
    status, body = (reply.status, reply.body) if isinstance(reply, Reply) else reply
    assert status in statuses, (status, body)
    if status == 404:
        assert json.loads(body) == NOT_FOUND, body


def never_reached(upstream: RecordingUpstream, probe: str) -> None:
    got = upstream.probed(probe)
    assert not got, [(s.method, s.headers, s.body) for s in got]


# --- mallory on each kind of request -----------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("who", [MALLORY, None, "Bearer ALICE", "Bearer alice=", "Bearer alicE"])
def test_another_caller_gets_404_on_every_request(
    recorded: tuple[Envoy, RecordingUpstream], kind: str, who: str | None
) -> None:
    """Mallory (and callers whose token only looks like alice's) on every request kind of
    alice's session: 404 Session not found, and the server never sees it."""
    envoy, upstream = recorded
    session = alices_session(envoy)
    method, extra, body = KINDS[kind]
    probe = uuid.uuid4().hex
    reply = h1(envoy, method, [*common(who, session), *extra, ("x-probe", probe)], body)
    assert reply.status == 404, (reply.status, reply.body)
    assert reply.json() == NOT_FOUND
    never_reached(upstream, probe)


@pytest.mark.parametrize("method", ["PUT", "PATCH", "OPTIONS", "HEAD"])
def test_another_caller_gets_nothing_by_other_http_methods(
    recorded: tuple[Envoy, RecordingUpstream], method: str
) -> None:
    envoy, upstream = recorded
    session = alices_session(envoy)
    probe = uuid.uuid4().hex
    reply = h1(envoy, method, [*common(MALLORY, session), ("x-probe", probe)], rpc("ping"))
    assert reply.status == 404, (reply.status, reply.body)
    if method != "HEAD":
        assert reply.json() == NOT_FOUND
    never_reached(upstream, probe)


def test_another_caller_over_http2_gets_404(recorded: tuple[Envoy, RecordingUpstream]) -> None:
    envoy, upstream = recorded
    session = alices_session(envoy)
    for method, extra, body in KINDS.values():
        probe = uuid.uuid4().hex
        headers = [*common(MALLORY, session), *extra, ("x-probe", probe)]
        refused(h2c(envoy, method, headers, body), (404,))
        never_reached(upstream, probe)


# --- the header spelled otherwise --------------------------------------------------------------


def test_other_spellings_of_the_header_name_are_the_same_header(
    recorded: tuple[Envoy, RecordingUpstream],
) -> None:
    envoy, upstream = recorded
    session = alices_session(envoy)
    for name in ("Mcp-Session-Id", "MCP-SESSION-ID", "mCp-SeSsIoN-iD"):
        probe = uuid.uuid4().hex
        head = (
            f"POST /mcp HTTP/1.1\r\nHost: x\r\nAuthorization: {MALLORY}\r\n{name}: {session}\r\n"
            f"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
            f"X-Probe: {probe}\r\nContent-Length: {len(rpc('ping'))}\r\nConnection: close\r\n\r\n"
        ).encode()
        refused(raw_h1(envoy, head, rpc("ping")), (404,))
        never_reached(upstream, probe)


@pytest.mark.parametrize(
    "values",
    [
        ["{s}", "{s}"],
        ["", "{s}"],
        ["{s}", ""],
        ["other", "{s}"],
        ["{s}", "other"],
        ["{s},other"],
        ["other,{s}"],
        [",{s}"],
        ["{s},"],
        ["{s}, {s}"],
    ],
    ids=lambda v: "|".join(v),
)
@pytest.mark.parametrize("version", ["h1", "h2"])
def test_two_instances_or_a_comma_are_refused(
    recorded: tuple[Envoy, RecordingUpstream], values: list[str], version: str
) -> None:
    """A second instance (empty or not, before or after), or a comma, is a 400 (or, where
    Envoy folds it to alice's id alone, a 404): never the server's."""
    envoy, upstream = recorded
    session = alices_session(envoy)
    probe = uuid.uuid4().hex
    headers = [("mcp-protocol-version", REVISION), ("authorization", MALLORY)]
    headers += [("mcp-session-id", v.format(s=session)) for v in values]
    headers.append(("x-probe", probe))
    send = h1 if version == "h1" else h2c
    refused(send(envoy, "POST", headers, rpc("ping")), (400, 404, None))
    never_reached(upstream, probe)


@pytest.mark.parametrize(
    "value",
    [" {s}", "{s} ", "\t{s}", "{s}\t", " \t{s} \t", "  {s}  "],
    ids=repr,
)
def test_whitespace_around_the_id_over_http1_is_the_same_id(
    recorded: tuple[Envoy, RecordingUpstream], value: str
) -> None:
    """HTTP/1.1 trims whitespace around a value (RFC 9110 §5.5): Envoy reads alice's id."""
    envoy, upstream = recorded
    session = alices_session(envoy)
    probe = uuid.uuid4().hex
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: x\r\nAuthorization: {MALLORY}\r\n"
        f"Mcp-Session-Id:{value.format(s=session)}\r\n"
        f"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        f"X-Probe: {probe}\r\nContent-Length: {len(rpc('ping'))}\r\nConnection: close\r\n\r\n"
    ).encode()
    refused(raw_h1(envoy, head, rpc("ping")), (400, 404))
    never_reached(upstream, probe)


def test_an_obs_folded_header_is_not_a_way_in(recorded: tuple[Envoy, RecordingUpstream]) -> None:
    envoy, upstream = recorded
    session = alices_session(envoy)
    probe = uuid.uuid4().hex
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: x\r\nAuthorization: {MALLORY}\r\n"
        f"Mcp-Session-Id:\r\n {session}\r\n"
        f"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        f"X-Probe: {probe}\r\nContent-Length: {len(rpc('ping'))}\r\nConnection: close\r\n\r\n"
    ).encode()
    refused(raw_h1(envoy, head, rpc("ping")), (400, 404, None))
    never_reached(upstream, probe)


@pytest.mark.parametrize(
    "value",
    [" {s}", "{s} ", "\t{s}", "{s}\t", " {s} "],
    ids=repr,
)
def test_whitespace_around_the_id_over_http2_does_not_reach_the_server(
    everything: Envoy, value: str
) -> None:
    """HTTP/2 carries a value as sent; Envoy passes it on to the server over HTTP/1.1, whose
    parser (Node's) trims it to alice's id. Toolgate must not read it as another session."""
    alice = mcp_initialize(everything, ALICE)
    assert ok(h1(everything, "POST", common(ALICE, alice), rpc("ping", None, 2)))
    headers = [
        ("mcp-protocol-version", REVISION),
        ("authorization", MALLORY),
        ("mcp-session-id", value.format(s=alice)),
    ]
    reply = h2c(everything, "POST", headers, rpc("tools/list", None, 3))
    assert not ok(reply), (reply.status, reply.body)
    refused(reply, (400, 404, None))


def test_a_padded_id_of_no_session_is_the_servers_to_refuse(everything: Envoy) -> None:
    """The control of the test above: a padded id that pads no session is not one the server
    knows (its own 400), so what mallory reads there is alice's session."""
    headers = [
        ("mcp-protocol-version", REVISION),
        ("authorization", MALLORY),
        ("mcp-session-id", f" s-{uuid.uuid4().hex} "),
    ]
    reply = h2c(everything, "POST", headers, rpc("tools/list", None, 3))
    assert not ok(reply), (reply.status, reply.body)


def test_a_padded_id_over_http2_cannot_end_alices_session(everything: Envoy) -> None:
    alice = mcp_initialize(everything, ALICE)
    headers = [("authorization", MALLORY), ("mcp-session-id", f"{alice} ")]
    h2c(everything, "DELETE", headers)
    reply = h1(everything, "POST", common(ALICE, alice), rpc("tools/list", None, 5))
    assert ok(reply), (reply.status, reply.body)


def test_whitespace_around_the_id_over_http2_against_the_recorder(
    recorded: tuple[Envoy, RecordingUpstream],
) -> None:
    """The same spelling against the recording upstream: nothing carrying alice's id, padded
    or not, reaches the server from mallory (Envoy forwards the padding as sent)."""
    envoy, upstream = recorded
    session = alices_session(envoy)
    for value in (f" {session}", f"{session} ", f"{session}\t"):
        probe = uuid.uuid4().hex
        headers = [*common(MALLORY, value), ("x-probe", probe)]
        refused(h2c(envoy, "POST", headers, rpc("ping")), (400, 404, None))
        never_reached(upstream, probe)


def test_an_upper_case_name_over_http2_is_not_a_way_in(
    recorded: tuple[Envoy, RecordingUpstream],
) -> None:
    """HTTP/2 forbids upper-case names; Envoy must not pass one on as another header."""
    envoy, upstream = recorded
    session = alices_session(envoy)
    probe = uuid.uuid4().hex
    headers = [
        ("mcp-protocol-version", REVISION),
        ("authorization", MALLORY),
        ("Mcp-Session-Id", session),
        ("x-probe", probe),
    ]
    refused(h2c(envoy, "POST", headers, rpc("ping")), (400, 404, None))
    never_reached(upstream, probe)


def test_a_body_past_envoys_limit_is_refused(recorded: tuple[Envoy, RecordingUpstream]) -> None:
    envoy, upstream = recorded
    session = alices_session(envoy)
    probe = uuid.uuid4().hex
    padding = "x" * (1 << 20)
    body = rpc("tools/call", {"name": "echo", "arguments": {"pad": padding}}, 4)
    reply = h1(envoy, "POST", [*common(MALLORY, session), ("x-probe", probe)], body)
    refused(reply, (404, 413))
    never_reached(upstream, probe)


# --- credentials -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling", ["Bearer alice", "bearer alice", "BEARER alice", "Bearer  alice"]
)
def test_alices_spellings_of_her_credential_are_hers(
    recorded: tuple[Envoy, RecordingUpstream], spelling: str
) -> None:
    envoy, upstream = recorded
    session = alices_session(envoy)
    probe = uuid.uuid4().hex
    reply = h1(envoy, "POST", [*common(spelling, session), ("x-probe", probe)], rpc("ping"))
    assert reply.status == 200, (reply.status, reply.body)
    assert len(upstream.probed(probe)) == 1


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic YWxpY2U6",
        "alice",
        "Bearer",
        "Bearer alice mallory",
        "Bearer alice,Bearer mallory",
        "Bearer\talice",
    ],
)
def test_credentials_that_are_not_one_do_not_reach_the_session(
    recorded: tuple[Envoy, RecordingUpstream], authorization: str
) -> None:
    envoy, upstream = recorded
    session = alices_session(envoy)
    probe = uuid.uuid4().hex
    headers = [*common(authorization, session), ("x-probe", probe)]
    reply = h1(envoy, "POST", headers, rpc("ping"))
    assert reply.status in (400, 401, 403, 404), (reply.status, reply.body)
    never_reached(upstream, probe)


def test_two_authorization_headers_do_not_reach_the_session(
    recorded: tuple[Envoy, RecordingUpstream],
) -> None:
    envoy, upstream = recorded
    session = alices_session(envoy)
    for pair in ((MALLORY, ALICE), (ALICE, MALLORY)):
        probe = uuid.uuid4().hex
        headers = [("mcp-session-id", session), ("x-probe", probe)]
        headers += [("authorization", a) for a in pair]
        reply = h1(envoy, "POST", headers, rpc("ping"))
        assert reply.status in (400, 401, 403, 404), (reply.status, reply.body)
        never_reached(upstream, probe)


def test_the_server_header_cannot_move_the_session_elsewhere(
    recorded: tuple[Envoy, RecordingUpstream],
) -> None:
    """The server id comes from the route (context_extensions): a client's x-mcp-server does
    not give mallory a fresh namespace in which she would be first to use alice's id."""
    envoy, upstream = recorded
    session = alices_session(envoy)
    probe = uuid.uuid4().hex
    headers = [*common(MALLORY, session), ("x-mcp-server", "other"), ("x-probe", probe)]
    refused(h1(envoy, "POST", headers, rpc("ping")), (400, 404))
    never_reached(upstream, probe)


# --- first use ---------------------------------------------------------------------------------


def race(
    envoy: Envoy, session: str, probe: str, callers: list[str]
) -> list[tuple[str, int | None]]:
    """Each of ``callers`` sends ``session`` first at once; (caller, status) of each."""
    results: list[tuple[str, int | None]] = [("", None)] * len(callers)
    start = threading.Barrier(len(callers))

    def one(i: int) -> None:
        start.wait()
        headers = [*common(callers[i], session), ("x-probe", f"{probe}-{callers[i]}")]
        results[i] = (callers[i], h1(envoy, "POST", headers, rpc("ping", None, i)).status)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(callers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_a_racing_first_use_is_won_by_one_caller_only(
    recorded: tuple[Envoy, RecordingUpstream],
) -> None:
    """Alice and mallory send a fresh id at once, many times: whoever is first holds it,
    every request of the other is refused, and none of them reaches the server."""
    envoy, upstream = recorded
    for _ in range(3):
        session = "s-" + uuid.uuid4().hex
        probe = uuid.uuid4().hex
        results = race(envoy, session, probe, [ALICE, MALLORY] * 4)
        winners = {who for who, status in results if status == 200}
        assert len(winners) == 1, results
        (winner,) = winners
        for who, status in results:
            assert status == (200 if who == winner else 404), results
        loser = MALLORY if winner == ALICE else ALICE
        never_reached(upstream, f"{probe}-{loser}")
        assert len(upstream.probed(f"{probe}-{winner}")) == 4


def test_alices_own_racing_first_requests_all_pass(
    recorded: tuple[Envoy, RecordingUpstream],
) -> None:
    envoy, _ = recorded
    results = race(envoy, "s-" + uuid.uuid4().hex, uuid.uuid4().hex, [ALICE] * 6)
    assert [status for _, status in results] == [200] * 6


def test_an_empty_id_is_held_by_no_one(recorded: tuple[Envoy, RecordingUpstream]) -> None:
    """An empty ``Mcp-Session-Id`` is no session: it is not claimed for its first caller."""
    envoy, _ = recorded
    first = h1(envoy, "POST", common(ALICE, ""), rpc("ping"))
    second = h1(envoy, "POST", common(MALLORY, ""), rpc("ping"))
    assert (first.status, second.status) == (200, 200)


# --- alice keeps working -----------------------------------------------------------------------


def test_alice_reaches_her_session_with_every_request_after_the_attacks(
    recorded: tuple[Envoy, RecordingUpstream],
) -> None:
    envoy, upstream = recorded
    init = h1(envoy, "POST", [("authorization", ALICE)], rpc("initialize", {}, 0))
    assert init.status == 200, init.body
    session = init.headers["mcp-session-id"]
    assert h1(envoy, "POST", common(ALICE, session), rpc("ping")).status == 200
    for method, extra, body in KINDS.values():
        h1(envoy, method, [*common(MALLORY, session), *extra], body)
        h1(envoy, method, [*common(None, session), *extra], body)
    for kind, (method, extra, body) in KINDS.items():
        if kind in REFUSED_FOR_ALL:
            reply = h1(envoy, method, [*common(ALICE, session), *extra], body)
            assert reply.status == 400, (kind, reply.status, reply.body)
            continue
        if kind == "delete":
            continue
        probe = uuid.uuid4().hex
        reply = h1(envoy, method, [*common(ALICE, session), *extra, ("x-probe", probe)], body)
        assert reply.status in (200, 202), (kind, reply.status, reply.body)
        assert len(upstream.probed(probe)) == 1, kind
        if kind.startswith("get"):
            assert reply.messages(), (kind, reply.body)
    probe = uuid.uuid4().hex
    reply = h1(envoy, "DELETE", [*common(ALICE, session), ("x-probe", probe)])
    assert reply.status == 200, reply.body
    assert len(upstream.probed(probe)) == 1
    # ...and mallory, who could not use it, holds a session of her own.
    own = "s-" + uuid.uuid4().hex
    assert h1(envoy, "POST", common(MALLORY, own), rpc("ping")).status == 200


def test_alice_over_http2_reaches_her_session(recorded: tuple[Envoy, RecordingUpstream]) -> None:
    envoy, upstream = recorded
    session = alices_session(envoy)
    for kind, (method, extra, body) in KINDS.items():
        if kind in REFUSED_FOR_ALL:
            continue
        probe = uuid.uuid4().hex
        reply = h2c(envoy, method, [*common(ALICE, session), *extra, ("x-probe", probe)], body)
        assert reply.status in (200, 202), (kind, reply.status, reply.body)
        assert len(upstream.probed(probe)) == 1, kind


# --- against the reference server --------------------------------------------------------------


def mcp_initialize(envoy: Envoy, authorization: str) -> str:
    """A session of server-everything, initialized by ``authorization``; its id."""
    init = {
        "protocolVersion": REVISION,
        "capabilities": {},
        "clientInfo": {"name": "sessions-attacks", "version": "1"},
    }
    headers = [("mcp-protocol-version", REVISION), ("authorization", authorization)]
    reply = h1(envoy, "POST", headers, rpc("initialize", init, 1))
    assert reply.status == 200, reply.body
    session = reply.headers["mcp-session-id"]
    note = rpc("notifications/initialized", None, None)
    assert h1(envoy, "POST", common(authorization, session), note).status == 202
    return session


def ok(reply: Reply) -> bool:
    """Whether the reply carries a JSON-RPC result: the server answered in the session."""
    if reply.status not in (200, 202):
        return False
    try:
        return any(isinstance(m, dict) and "result" in m for m in reply.messages())
    except ValueError:
        return False


def test_mallory_cannot_use_or_end_alices_real_session(everything: Envoy) -> None:
    session = mcp_initialize(everything, ALICE)
    for who in (MALLORY, None):
        for method, extra, body in KINDS.values():
            reply = h1(everything, method, [*common(who, session), *extra], body)
            refused(reply, (404,))
    # Alice's session is still alive: the DELETE never reached the server.
    assert ok(h1(everything, "POST", common(ALICE, session), rpc("tools/list", None, 5)))
    reply = h1(everything, "DELETE", common(ALICE, session))
    assert reply.status == 200, (reply.status, reply.body)
