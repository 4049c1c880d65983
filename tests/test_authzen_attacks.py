"""The AuthZEN listener (``toolgate serve --authzen-listen``) against a hostile client: other
spellings of what the policy denies, another subject smuggled in, the credential spelled
otherwise, floods and stalls, limits and release tokens, and text that must stay inert.
Each test runs a real sidecar on 127.0.0.1 and bounds every wait with a socket timeout."""

from __future__ import annotations

import json
import os
import select
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from authzen_client import authzen_address, send
from sidecar import free_port, wait_for
from test_approvals import TOKENS, approve_with_cli
from test_authzen import MCP_POLICY, TOKEN, call, serving

EVALUATION, EVALUATIONS = "/access/v1/evaluation", "/access/v1/evaluations"
RELEASE = "/toolgate/v1/release"
POLICY: dict[str, Any] = {
    **MCP_POLICY,
    "tools": {
        **MCP_POLICY["tools"],
        "anything": {},
        "weird": {"action": "deny", "reason": "no\r\nX-Injected: 1 <b>\"'</b>"},
    },
}
OPS = {"properties": {"team": "ops"}}
RM = {"cmd": "rm -rf /"}
BEARER = b"Authorization: Bearer " + TOKEN.encode()


@pytest.fixture(scope="module")
def listening():
    with serving(POLICY) as sc:
        yield authzen_address(sc)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory):
    """A listener whose callers present a token of a file written with CRLF, tabs, blanks."""
    tokens = tmp_path_factory.mktemp("tokens") / "tokens"
    tokens.write_bytes(f"# gateways\r\n\r\n  gateway\t{TOKEN}  \r\n".encode())
    with serving(POLICY, "--authzen-tokens", str(tokens)) as sc:
        yield authzen_address(sc)


def connect(address: str, timeout: float = 20) -> socket.socket:
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout)


def request(path: str, body: Any = None, *headers: bytes, method: bytes = b"POST") -> bytes:
    """One HTTP/1.1 request's bytes, the body JSON unless already bytes."""
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
    head = [method + b" " + path.encode() + b" HTTP/1.1", b"Host: toolgate", *headers]
    if body is not None:
        head += [b"Content-Type: application/json", b"Content-Length: %d" % len(body)]
    return b"\r\n".join(head) + b"\r\n\r\n" + (body or b"")


def exchange(address: str, data: bytes, timeout: float = 20) -> bytes:
    """One request, ``Connection: close`` added, on a new connection: what came back."""
    with connect(address, timeout) as s:
        s.sendall(data.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))
        return read_until_closed(s)


def read_until_closed(s: socket.socket) -> bytes:
    got = b""
    try:
        while chunk := s.recv(1 << 16):
            got += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    return got


def readable(sockets: list[socket.socket], timeout: float) -> list[socket.socket]:
    """The sockets with something to read (or closed) within ``timeout`` seconds."""
    poll, by_fd = select.poll(), {s.fileno(): s for s in sockets}
    for fd in by_fd:
        poll.register(fd, select.POLLIN)
    return [by_fd[fd] for fd, _ in poll.poll(timeout * 1000)]


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.") else 0


def body_of(response: bytes) -> Any:
    return json.loads(response.split(b"\r\n\r\n", 1)[1] or b"null")


def decision(address: str, *headers: bytes) -> Any:
    """An allowed call's decision on a new connection; None if the listener gave none."""
    try:
        answer = body_of(exchange(address, request(EVALUATION, call("anything"), *headers), 5))
    except (OSError, ValueError, IndexError):
        return None
    return answer.get("decision") if isinstance(answer, dict) else None


def memory(pid: int, key: str = "VmRSS") -> int:
    """A line of /proc/PID/status, in KiB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(key)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def evaluate(address: str, body: Any, path: str = EVALUATION) -> tuple[int, Any]:
    got, _, answer = send(address, "POST", path, body)
    return got, answer


def not_allowed(got: int, answer: Any) -> bool:
    """A 400, or a decision that is a denial: never ``decision: true``."""
    return got == 400 or (got == 200 and answer["decision"] is False)


def mcp(method: str, kind: str, id: str, params: Any = None) -> dict:
    asked = {
        "subject": {"type": "identity", "id": "alice"},
        "action": {"name": method},
        "resource": {"type": kind, "id": id},
    }
    return asked if params is None else {**asked, "context": {"params": params}}


# --- allowing what the policy denies -----------------------------------------------------

LISTENED = {"resourceSubscriptions": ["file:///public/a", "file:///etc/x"]}
SPELLINGS = [
    *map(call, ["Secret_x", "SECRET_X", "secret_x ", "\u017fecret_x", "secret_x\u200b"]),
    *(call(t, arguments=RM) for t in ["run_command", "Run_Command", "run_command\t"]),
    *(call(t, arguments=RM) for t in ["run_command ", "run_c\u043emmand", "\uff52un_command"]),
    *(
        mcp(m, "mcp_server", "s", {"name": "run_command", "arguments": RM})
        for m in ["Tools/Call", "TOOLS/CALL", "tools/call ", "tools/ call", "tools/call\u017f"]
    ),
    *(mcp(m, "tool", "run_command") for m in ["tools\u2215call", "tools\\call", "run_command"]),
    mcp("Notifications/cancelled", "mcp_server", "s", {"name": "secret_x"}),
    *(
        mcp("resources/read", "resource", uri)
        for uri in ["file:///public/../etc/passwd", "file:///public/%2e%2e/x", "FILE:///public/a"]
    ),
    mcp("subscriptions/listen", "mcp_server", "s", {"notifications": LISTENED}),
]


@pytest.mark.parametrize("asked", SPELLINGS)
def test_other_spellings_of_a_denied_tool_method_or_resource_are_never_allowed(
    listening: str, asked: dict
):
    assert not_allowed(*evaluate(listening, asked)), asked


@pytest.mark.parametrize("method", ["tools/list", "prompts/list"])
def test_a_list_is_not_a_bare_allow_under_a_policy_whose_lists_are_filtered(
    listening: str, method: str
):
    """Lists pass undecided elsewhere because toolgate filters their answers (docs/policy.md);
    an AuthZEN enforcement point's answer never passes through toolgate, so the answer says
    where the list's answer is filtered for its caller."""
    got, answer = evaluate(listening, mcp(method, "mcp_server", "s"))
    assert got == 200 and answer["decision"] is True
    assert answer["context"]["toolgate"]["filter"] == "/toolgate/v1/filter"


NAMED_TWICE = [
    *({"name": name} for name in [["run_command"], 1, None, {"name": "run_command"}]),
    *({"name": name} for name in ["run_command ", "secret_x"]),
    *({"name": "run_command", "arguments": arguments} for arguments in [["rm"], "rm -rf /"]),
    {"name": "run_command", "arguments": {"cmd": "ls", "CMD": "rm -rf /"}},
    {"name": "run_command", "arguments": {"cmd": "ls"}, "argument\u017f": RM},
    {"name": "run_command", "arguments": {"cmd": "ls"}, "Name": "secret_x"},
]


@pytest.mark.parametrize("params", NAMED_TWICE)
def test_a_call_named_or_argued_two_ways_is_refused_or_denied(listening: str, params: dict):
    asked = call("run_command", f"ambiguous-{NAMED_TWICE.index(params)}")
    asked["context"]["params"] = params
    assert not_allowed(*evaluate(listening, asked)), params


def test_the_subject_is_the_evaluations_own_never_one_named_in_params_or_context(
    listening: str,
):
    team = {"attributes": {"team": "ops"}}
    for where in [
        {"params": {"name": "lookup", "_meta": {"subject": team}}},
        {"params": {"name": "lookup", "arguments": {"subject": team}}},
        {"params": {"name": "lookup"}, "subject": {"type": "identity", "id": "x", **OPS}},
    ]:
        assert not_allowed(*evaluate(listening, {**call("lookup", "mallory"), "context": where}))
    for _ in range(2):
        assert evaluate(listening, call("run_command", "hank", {"cmd": "ls"}))[1]["decision"]
    for meta in [{"grant": "someone-else"}, {"subject": "someone-else"}]:
        asked = call("run_command", "hank", {"cmd": "ls"})
        asked["context"]["params"]["_meta"] = meta
        got, answer = evaluate(listening, asked)
        assert (got, answer["context"]["toolgate"]["code"]) == (200, "RATE_LIMITED"), meta


def test_a_batch_entrys_subject_replaces_the_default_wholly_and_adds_nothing(listening: str):
    mallory = {"type": "identity", "id": "mallory"}
    batch = {
        **call("lookup", "ida", subject_extra=OPS),
        "evaluations": [
            {},
            {"subject": mallory},
            {"subject": OPS},
            {"Subject": {**mallory, **OPS}},
            {"subject": {**mallory, **OPS}, "evaluations": [{}]},
        ],
    }
    answers = evaluate(listening, batch, EVALUATIONS)[1]["evaluations"]
    assert [e["decision"] for e in answers] == [True, False, False, False, False]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"subject":{"type":"identity","id":"a"},"subject":{"type":"identity","id":"b"}}',
        b'{"evaluations":[{}],"Evaluations":[{}]}',
        b'{"options":{"evaluations_semantic":"execute_all","Evaluations_Semantic":"x"}}',
        '{"evaluations":[{"resource":{"type":"tool","id":"a"},"re\u017fource":{}}]}'.encode(),
        b'{"context":{"params":{"arguments":{"n":9007199254740993}}}}',
        b'{"context":{"params":{"arguments":{"n":-9007199254740993}}}}',
        b'{"context":{"params":{"arguments":{"n":1e400}}}}',
        b'{"context":{"params":{"arguments":{"s":"\\ud800"}}}}',
        b'{"context":' + b"[" * 200 + b"]" * 200 + b"}",
        b'{"context":{"a":[' + b"0," * 300_000 + b"0]}}",  # over 250 000 values
        b'{"context":{}}garbage',
        b'\xef\xbb\xbf{"context":{}}',
    ],
)
def test_json_read_two_ways_or_too_large_is_a_400_wherever_it_is(listening: str, raw):
    for path in [EVALUATION, EVALUATIONS]:
        got, answer = evaluate(listening, raw, path)
        assert got == 400 and "decision" not in answer and "evaluations" not in answer, raw


def test_arguments_nested_deeper_than_the_gate_reads_are_denied_not_allowed(listening: str):
    deep: Any = 1
    for _ in range(124):
        deep = {"a": deep}
    asked = {**mcp("anything", "x", "y"), "context": {"deep": deep}}
    got, answer = evaluate(listening, asked)
    assert (got, answer["decision"]) == (200, False)
    assert answer["context"]["toolgate"]["code"] == "INVALID_REQUEST"


def test_subjects_of_different_types_are_different_callers(listening: str):
    """AuthZEN 1.0 §5.1: a subject's id is "scoped to the type". A service that happens to be
    called "ivan" must not spend the user ivan's limits (nor pass his subject.grant rules)."""
    for _ in range(2):
        assert evaluate(listening, call("run_command", "ivan", {"cmd": "ls"}))[1]["decision"]
    service = call("run_command", "ivan", {"cmd": "ls"})
    service["subject"]["type"] = "service"
    got, answer = evaluate(listening, service)
    # Either a type toolgate does not take, or another caller with limits of its own.
    assert got == 400 or answer["decision"] is True, answer


# --- limits, release tokens, approvals ---------------------------------------------------


def test_a_batch_reserves_limits_only_for_what_it_allows_and_each_token_releases_once(
    listening: str,
):
    for _ in range(3):
        denied = evaluate(listening, call("run_command", "gina", RM))[1]
        assert denied["context"]["toolgate"]["code"] == "CONDITION_FAILED"
    batch = {**call("run_command", "gina", {"cmd": "ls"}), "evaluations": [{}, {}, {}]}
    answers = evaluate(listening, batch, EVALUATIONS)[1]["evaluations"]
    told = [(e["decision"], "release" in e["context"]["toolgate"]) for e in answers]
    assert told == [(True, True), (True, True), (False, False)]
    token = answers[0]["context"]["toolgate"]["release"]

    def release(token: str, failure: str = "error", address: str = listening) -> tuple:
        return evaluate(address, {"release": token, "failure": failure}, RELEASE)

    reservation = int(token[:16], 16)
    for forged in [
        token.upper(),
        token + " ",
        token[:16] + "01" + token[18:],  # claims its rule gives back on a tool's error too
        f"{reservation + 1:016x}{token[16:]}",  # the next reservation, the same tag
        f"{reservation - 1:016x}{token[16:]}",
    ]:
        assert release(forged, "tool_error")[0] == 400 and release(forged)[0] == 400, forged
    with serving(POLICY) as another:
        got, answer = release(token, address=authzen_address(another))
        assert got == 400 and "not a release token" in answer["error"]
    assert release(token) == (200, {"released": True})
    assert release(token) == (200, {"released": False})
    again = [evaluate(listening, call("run_command", "gina", {"cmd": "ls"}))[1] for _ in "12"]
    assert [a["decision"] for a in again] == [True, False]


def test_an_approval_is_spent_once_by_its_own_call_only_even_within_a_batch(tmp_path: Path):
    (tmp_path / "tokens").write_text("".join(f"{n} {t}\n" for n, t in TOKENS.items()))
    (tmp_path / "alice.token").write_text(TOKENS["alice"])
    admin, state = free_port(), str(tmp_path / "state")
    extra = ["--admin-listen", f"127.0.0.1:{admin}", "--admin-tokens", str(tmp_path / "tokens")]
    with serving(POLICY, "--state-dir", state, *extra) as sc:
        address = authzen_address(sc)
        asked = evaluate(address, call("terminate", "alice", {"id": "i-1"}))[1]
        approval = asked["context"]["toolgate"]["approval_id"]
        approve_with_cli(admin, tmp_path / "alice.token", approval)
        for other in [
            call("terminate", "bob", {"id": "i-1"}),
            call("terminate", "alice", {"id": "i-2"}),
            call("terminate", "alice", {"id": "i-1"}, session="another"),
        ]:
            assert evaluate(address, other)[1]["decision"] is False, other
        batch = {**call("terminate", "alice", {"id": "i-1"}), "evaluations": [{}, {}, {}]}
        answers = evaluate(address, batch, EVALUATIONS)[1]["evaluations"]
        assert [e["decision"] for e in answers] == [True, False, False]


# --- the credential ----------------------------------------------------------------------

REFUSED_CREDENTIALS = [
    BEARER + b"\r\n" + BEARER,
    b"Authorization: Bearer wrong-token-0123456789\r\n" + BEARER,
    BEARER.replace(b"Bearer ", b"Bearer  "),
    BEARER.replace(b"Bearer ", b"Bearer\t"),
    BEARER.replace(b"Bearer ", b"Bearer\r\n "),  # folded across two lines
    BEARER.replace(b"Authorization:", b"Authorization :"),
    BEARER + b", Basic eDp5",
    BEARER + b"\x00",
    BEARER[:-1],
    b"Authorization: Bearer gateway",
    b"Proxy-" + BEARER,
    b"X-" + BEARER,
]


@pytest.mark.parametrize("header", REFUSED_CREDENTIALS)
def test_every_other_spelling_of_the_credential_is_refused(guarded: str, header: bytes):
    answer = exchange(guarded, request(EVALUATION, call("anything"), header))
    assert status_of(answer) in (400, 401) and b"decision" not in answer, answer[:200]


def test_the_token_is_taken_with_the_whitespace_http_allows_and_guards_releases_too(
    guarded: str,
):
    spaced = BEARER.replace(b": ", b":   ") + b" \t"
    assert decision(guarded, BEARER) is True and decision(guarded, spaced) is True
    ok = {"authorization": f"Bearer {TOKEN}"}
    _, _, allowed = send(guarded, "POST", EVALUATION, call("run_command", "jo", {"cmd": "ls"}), ok)
    token = {"release": allowed["context"]["toolgate"]["release"], "failure": "error"}
    # A release without the token is refused, and gives nothing back.
    assert send(guarded, "POST", RELEASE, token)[0] == 401
    assert send(guarded, "POST", RELEASE, token, ok)[2] == {"released": True}


def test_the_bearer_scheme_is_matched_without_regard_to_case_as_http_says(guarded: str):
    """RFC 9110 §11.1: the auth-scheme is a case-insensitive token (low severity: refusing is
    fail-closed, but an enforcement point that writes "bearer" is refused every call)."""
    for scheme in [b"bearer", b"BEARER"]:
        assert decision(guarded, BEARER.replace(b"Bearer", scheme)) is True, scheme


def test_a_byte_order_mark_does_not_make_a_commented_out_token_live(tmp_path: Path):
    revoked = "revoked-0123456789abcdef"
    tokens = tmp_path / "tokens"
    tokens.write_bytes(f"\ufeff#old {revoked}\ngateway {TOKEN}\n".encode())
    try:
        sc = serving(POLICY, "--authzen-tokens", str(tokens))
    except AssertionError as refused:  # refusing such a file is as good
        assert "--authzen-tokens" in str(refused)
        return
    with sc:
        address = authzen_address(sc)
        assert decision(address, BEARER) is True
        assert decision(address, b"Authorization: Bearer " + revoked.encode()) is None, (
            "a commented-out token was accepted"
        )


# --- floods and stalls -------------------------------------------------------------------


def test_stalled_and_idle_connections_are_cut_off_while_others_get_decisions(listening: str):
    closed: dict[str, bytes] = {}

    def trickle(name: str, head: bytes, drip: bytes) -> None:
        with connect(listening, 30) as s:
            s.sendall(head)
            for _ in range(60):
                if readable([s], 0.5):
                    closed[name] = read_until_closed(s) or b"closed"
                    return
                try:
                    s.sendall(drip)
                except OSError:
                    closed[name] = b"closed"
                    return

    post = b"POST /access/v1/evaluation HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    cases = {
        "idle": (b"", b""),
        "slow headers": (post, b"X-Slow: 1\r\n"),
        "body never sent": (post + b"Content-Length: 100\r\n\r\n{", b""),
        "chunks never end": (post + b"Transfer-Encoding: chunked\r\n\r\n", b"1\r\n \r\n"),
        "idle after an answer": (request(EVALUATION, call("anything")), b""),
    }
    threads = [threading.Thread(target=trickle, args=(n, *c)) for n, c in cases.items()]
    for t in threads:
        t.start()
    assert decision(listening) is True
    for t in threads:
        t.join(timeout=40)
    assert set(closed) == set(cases), closed
    assert status_of(closed["body never sent"]) == 408


def test_connections_over_the_cap_are_closed_and_the_listener_recovers():
    with serving(POLICY, "--threads", "1") as sc:
        address, before = authzen_address(sc), memory(sc.proc.pid)
        flood = [connect(address, 5) for _ in range(600)]

        def gone(s: socket.socket) -> bool:
            try:
                return not s.recv(1, socket.MSG_PEEK)
            except OSError:
                return True

        def shut() -> int:
            return sum(1 for s in readable(flood, 0.2) if gone(s))

        try:
            # Well within the 10 s a connection has to send its headers: the cap closed these.
            assert wait_for(lambda: shut() >= 600 - 512 or None, timeout=8)
            assert memory(sc.proc.pid) - before < 64 << 10
        finally:
            for s in flood:
                s.close()
        assert wait_for(lambda: decision(address), timeout=15) is True


def test_pipelined_requests_are_answered_in_order_and_unread_answers_hold_no_memory(
    listening: str,
):
    asked = [call("lookup", "kim", subject_extra=OPS), call("lookup", "kim")]
    data = b"".join(
        request(EVALUATION, asked[i % 2], b"X-Request-ID: r-%d" % i) for i in range(200)
    )
    with connect(listening) as s:
        s.sendall(data)
        got = b""
        while got.count(b"HTTP/1.1 ") < 200 or not got.endswith(b"}"):
            chunk = s.recv(1 << 16)
            assert chunk, f"closed after {got.count(b'HTTP/1.1 ')} answers"
            got += chunk
    for i, answer in enumerate(got.split(b"HTTP/1.1 ")[1:]):
        assert b"x-request-id: r-%d\r\n" % i in answer
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["decision"] is (i % 2 == 0)
    with serving(POLICY, "--threads", "1") as sc:
        address, before = authzen_address(sc), memory(sc.proc.pid)
        greedy = [connect(address) for _ in range(10)]
        for s in greedy:  # pipelining until the server stops reading, never reading an answer
            s.setblocking(False)
            try:
                for _ in range(4000):
                    s.send(data)
            except BlockingIOError:
                pass
        assert decision(address) is True
        assert memory(sc.proc.pid) - before < 64 << 10
        for s in greedy:
            s.close()


def test_http_1_0_and_expect_100_continue_are_decided_and_unknown_callers_send_nothing(
    guarded: str,
):
    answer = exchange(
        guarded, request(EVALUATION, call("anything"), BEARER).replace(b"1.1", b"1.0", 1)
    )
    assert answer.startswith(b"HTTP/1.0 200") and body_of(answer)["decision"] is True
    with connect(guarded) as s:
        expecting = request(EVALUATION, b"", b"Expect: 100-continue")
        s.sendall(expecting.replace(b"Content-Length: 0", b"Content-Length: 1000000"))
        refused = s.recv(1 << 16)
        assert status_of(refused) == 401, refused  # no "100 Continue" first
    body = json.dumps(call("anything")).encode()
    with connect(guarded) as s:
        expecting = request(EVALUATION, body, BEARER, b"Expect: 100-continue", b"Connection: close")
        s.sendall(expecting[: -len(body)])
        assert s.recv(1 << 16).startswith(b"HTTP/1.1 100 Continue")
        s.sendall(body)
        assert body_of(read_until_closed(s))["decision"] is True


def test_unauthenticated_clients_cannot_crowd_out_a_caller_with_a_token(tmp_path: Path):
    """A serving thread holds 512 connections; one without a token is kept alive after its
    401 (and by the public configuration), so a client with no token can hold every slot."""
    (tmp_path / "tokens").write_text(f"gateway {TOKEN}\n")
    with serving(POLICY, "--threads", "1", "--authzen-tokens", str(tmp_path / "tokens")) as sc:
        address = authzen_address(sc)
        crowd = [connect(address, 10) for _ in range(512)]
        try:
            for s in crowd:
                s.sendall(request(EVALUATION, b""))
            assert {status_of(s.recv(1 << 16)) for s in crowd} <= {401, 0}
            assert wait_for(lambda: decision(address, BEARER), timeout=3) is True
        finally:
            for s in crowd:
                s.close()


@pytest.mark.parametrize(
    "defaults",
    [
        # Each entry is refused for the default subject's key, which the answer quotes.
        {"subject": {"type": "identity", "id": "a", "k" * 300_000: 1}},
        # Each entry is denied for the default method, which its reason quotes (twice).
        {"action": {"name": "NOTIFICATIONS/" + "a" * 300_000}},
    ],
    ids=["refused-entry", "denied-entry"],
)
def test_a_batch_quoting_its_defaults_in_every_answer_stays_small(defaults: dict):
    batch = {**mcp("tools/call", "mcp_server", "s"), **defaults, "evaluations": [{}] * 256}
    with serving(POLICY) as sc:
        address, peak = authzen_address(sc), memory(sc.proc.pid, "VmHWM")
        with connect(address, 60) as s:
            s.sendall(request(EVALUATIONS, batch))
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(1 << 16)
                assert chunk, f"closed without an answer: {head[:200]!r}"
                head += chunk
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        assert status_of(head) in (200, 400, 413)
        # 256 answers of a few hundred bytes each, not 256 copies of the request.
        assert length < 4 << 20, f"a {len(json.dumps(batch))} byte batch got {length} bytes"
        assert memory(sc.proc.pid, "VmHWM") - peak < 128 << 10


def test_a_batch_repeating_large_defaults_does_not_stall_other_callers():
    """The default context (~0.9 MiB, 90 000 keys) is copied, serialized and parsed again for
    each of 256 entries: tens of seconds of one serving thread per request."""
    context = {f"{i:x}": 0 for i in range(90_000)}
    batch = {**mcp("anything", "x", "y"), "context": context, "evaluations": [{}] * 256}
    hostile = request(EVALUATIONS, batch)
    assert len(hostile) < 1 << 20  # within the listener's limits
    with serving(POLICY, "--threads", "1") as sc:
        address, pid = authzen_address(sc), sc.proc.pid
        spent = cpu_seconds(pid)
        hostiles = [connect(address, 5) for _ in range(3)]
        try:
            for s in hostiles:
                s.sendall(hostile)
            wait_for(
                lambda: cpu_seconds(pid) - spent > 1 or bool(readable(hostiles, 0)), timeout=20
            )
            answer = exchange(address, request(EVALUATION, call("anything")), timeout=20)
            assert body_of(answer)["decision"] is True
        except TimeoutError:
            pytest.fail("another caller got no decision in 20 s while the batches ran")
        finally:
            for s in hostiles:
                s.close()
            sc.proc.kill()  # its serving thread may still be busy with the batches


# --- text that must stay inert -----------------------------------------------------------


def test_reasons_request_ids_and_hosts_are_never_reflected_as_headers(listening: str):
    answer = exchange(listening, request(EVALUATION, call("weird"), b"X-Request-ID: r-1"))
    head, body = answer.split(b"\r\n\r\n", 1)
    assert b"X-Injected" not in head and b"x-request-id: r-1\r\n" in head
    assert json.loads(body)["context"]["reason_user"]["en"].startswith("no\r\nX-Injected")
    for sent in [b"a\x80b", "é".encode(), b"a\tb", b"a\rSet-Cookie: x=1", b"a" * 257]:
        answer = exchange(
            listening, request(EVALUATION, call("anything"), b"X-Request-ID: " + sent)
        )
        assert status_of(answer) == 400 and sent not in answer and b"Set-Cookie" not in answer
        assert b"decision" not in answer
    split = request(EVALUATION, call("anything"), b"X-Request-ID: a", b"Set-Cookie: x=1")
    answer = exchange(listening, split)
    assert status_of(answer) == 200 and b"set-cookie" not in answer.lower()
    metadata = request("/.well-known/authzen-configuration", None, method=b"GET")
    answer = exchange(listening, metadata.replace(b"Host: toolgate", b"Host: evil.example"))
    assert b"evil.example" not in answer
    assert body_of(answer)["access_evaluation_endpoint"] == f"http://{listening}{EVALUATION}"


def test_bodies_announced_and_never_sent_hold_at_most_the_listeners_budget():
    """Each body's announced length is taken from one budget for the whole listener before a
    byte is read: past it a request is refused (503) rather than held, and the room comes
    back when the holders go."""
    head = (
        b"POST /access/v1/evaluation HTTP/1.1\r\nHost: toolgate\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1048576\r\n\r\n"
    )
    with serving(MCP_POLICY) as sc:
        address = authzen_address(sc)
        holders = [connect(address) for _ in range(64)]
        try:
            for s in holders:
                s.sendall(head)

            def refused() -> bool:
                return status_of(exchange(address, request(EVALUATION, {}))) == 503

            wait_for(refused, timeout=20)
        finally:
            for s in holders:
                s.close()
        # The room came back: a request is read and answered again.
        wait_for(lambda: status_of(exchange(address, request(EVALUATION, {}))) == 400)
