"""An outside review of tasks (MCP's task extension): caller "mallory" knows the id of a task
caller "alice" created, and tries to reach it through toolgate anyway.

Each test asserts what toolgate promises (docs/policy.md, "Tasks"): a task is reached only by
the caller (grant) whose call created it, another caller is answered as for a task that does
not exist, even in the creator's session, and a task list shows the caller its own tasks. A
failing test is a way around it.

End to end through a real Envoy (deploy/envoy/mcp-ext-authz-ext-proc.yaml), a real
``toolgate serve`` and the reference server-everything, whose ``simulate-research-query``
runs only as a task (four stages of a second; an ambiguous topic waits for the client's
elicitation answer, up to a minute). server-everything keeps each session's tasks apart, so
mallory sends alice's ``Mcp-Session-Id`` as the tests of tests/test_envoy_tasks.py do; a
server without sessions (MCP 2026-07-28) needs not even that. agentgateway's ExtMCP hook is
spoken to directly (tests/ext_mcp.py).
"""

from __future__ import annotations

import http.client
import json
import time
from typing import Any

import pytest
from conftest import policy
from envoy_proxy import DEPLOY, Envoy, deployed, envoy_executable
from ext_mcp import ExtMcp, outcome
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp_servers import EverythingServer, node_executable
from sidecar import Sidecar
from test_envoy_ext_proc import ScriptedUpstream

EXT_PROC = DEPLOY / "mcp-ext-authz-ext-proc.yaml"
RESEARCH = "simulate-research-query"
REVISION = "2025-11-25"
RELATED = "io.modelcontextprotocol/related-task"
NOT_FOUND = {"code": -32602, "message": "Task not found"}
#: Tasks one caller may have noted in a day (toolgate_core::tasks::MAX_PER_CALLER).
MAX_PER_CALLER = 1000

POLICY = policy({RESEARCH: {}, "echo": {}}, methods={"tasks/*": {}})

# --- talking to Envoy --------------------------------------------------------------------------


class Reply:
    """One HTTP exchange as the client saw it: status, the JSON-RPC messages of its body (a
    JSON body or each event's data), the event ids, and whether the body ended before the
    timeout."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes, ended: bool) -> None:
        self.status, self.headers, self.body, self.ended = status, headers, body, ended
        self.messages: list[Any] = []
        self.event_ids: list[str] = []
        text = body.decode(errors="replace")
        if text.lstrip()[:1] in ("{", "["):
            self.messages.append(json.loads(text))
            return
        for event in text.replace("\r\n", "\n").split("\n\n"):
            data = []
            for line in event.split("\n"):
                if line.startswith("id:"):
                    self.event_ids.append(line[3:].strip())
                elif line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
            if "".join(data).strip():
                self.messages.append(json.loads("\n".join(data)))

    def answer(self, message_id: Any) -> dict[str, Any] | None:
        for m in self.messages:
            if isinstance(m, dict) and m.get("id") == message_id and "method" not in m:
                return m
        return None


def exchange(
    envoy: Envoy,
    body: bytes,
    headers: list[tuple[str, str]],
    method: str = "POST",
    timeout: float = 30.0,
) -> Reply:
    """One request to Envoy's /mcp with ``headers`` (a name may repeat), read until the body
    ends or nothing comes for ``timeout`` seconds."""
    assert envoy.port is not None
    connection = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=timeout)
    try:
        connection.putrequest(method, "/mcp", skip_accept_encoding=True)
        sent = [
            ("accept", "application/json, text/event-stream"),
            ("content-type", "application/json"),
            *headers,
        ]
        if body:
            sent.append(("content-length", str(len(body))))
        for name, value in sent:
            connection.putheader(name, value)
        connection.endheaders(body or None)
        response = connection.getresponse()
        out, ended = b"", True
        try:
            while chunk := response.read1(65536):
                out += chunk
        except TimeoutError:
            ended = False
        headers = {k.lower(): v for k, v in response.getheaders()}
        return Reply(response.status, headers, out, ended)
    finally:
        connection.close()


class Peer:
    """A caller: its bearer token (None: no credential), in a session of its own or, with
    ``session``, in another's."""

    def __init__(
        self,
        envoy: Envoy,
        token: str | None,
        session: str | None = None,
        revision: str = REVISION,
        capabilities: dict[str, Any] | None = None,
        authorization: str | None = None,
    ) -> None:
        self.envoy, self.ids = envoy, 100
        self.headers = [("mcp-protocol-version", revision)]
        if authorization is not None:
            self.headers.append(("authorization", authorization))
        elif token is not None:
            self.headers.append(("authorization", f"Bearer {token}"))
        if session is None:
            init = {
                "protocolVersion": revision,
                "capabilities": capabilities or {},
                "clientInfo": {"name": "tasks-attacks", "version": "1"},
            }
            reply = self.send(rpc("initialize", init, 1))
            assert reply.answer(1) is not None, reply.body
            session = reply.headers["mcp-session-id"]
            self.headers.append(("mcp-session-id", session))
            self.send(rpc("notifications/initialized", None, None))
            time.sleep(0.4)  # server-everything registers its task tool once initialized
        else:
            self.headers.append(("mcp-session-id", session))
        self.session = session

    def send(self, body: bytes, *extra: tuple[str, str], **kw: Any) -> Reply:
        return exchange(self.envoy, body, [*self.headers, *extra], **kw)

    def ask(self, method: str, params: dict[str, Any] | None, **kw: Any) -> dict[str, Any]:
        """The answer to one request (an AssertionError if none came)."""
        self.ids += 1
        reply = self.send(rpc(method, params, self.ids), **kw)
        found = reply.answer(self.ids)
        assert found is not None, (reply.status, reply.body)
        return found

    def research(self, topic: str = "tasks", ambiguous: bool = False) -> str:
        """Create a research task; its id."""
        arguments = {"topic": topic, "ambiguous": ambiguous}
        params = {"name": RESEARCH, "arguments": arguments, "task": {"ttl": 120000}}
        return self.ask("tools/call", params)["result"]["task"]["taskId"]

    def status(self, task_id: str) -> str:
        return self.ask("tasks/get", {"taskId": task_id})["result"]["status"]

    def wait_status(self, task_id: str, status: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while (now := self.status(task_id)) != status:
            assert time.monotonic() < deadline, f"task {task_id} is {now}, not {status}"
            time.sleep(0.3)


def rpc(method: str, params: Any = None, message_id: Any = 1) -> bytes:
    """A JSON-RPC request (a notification for ``message_id=None``; no params for None)."""
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if message_id is not None:
        message["id"] = message_id
    if params is not None:
        message["params"] = params
    return json.dumps(message).encode()


def names_task(message: Any, task_id: str) -> bool:
    """Whether a JSON-RPC message is a result that tells anything of task ``task_id``."""
    return isinstance(message, dict) and "result" in message and task_id in json.dumps(message)


@pytest.fixture(scope="module")
def envoy() -> Any:
    if envoy_executable() is None or node_executable() is None:
        pytest.skip("needs envoy and node")
    with (
        EverythingServer() as everything,
        Sidecar(POLICY) as sidecar,
        deployed(EXT_PROC, sidecar.port, everything.port, patient=True) as envoy,
    ):
        yield envoy


def waiting_task(envoy: Envoy) -> tuple[Peer, str]:
    """Alice, and a task of hers that stays unfinished for about a minute: an ambiguous topic
    waits for her answer to its elicitation (asked on tasks/result, which she never calls)."""
    alice = Peer(envoy, "alice", capabilities={"elicitation": {}})
    task_id = alice.research("python", ambiguous=True)
    alice.wait_status(task_id, "input_required")
    return alice, task_id


# --- the task id spelled otherwise --------------------------------------------------------------


def test_no_spelling_of_the_request_reaches_anothers_task(envoy: Envoy) -> None:
    alice, tid = waiting_task(envoy)
    mallory = Peer(envoy, "mallory")
    own = mallory.research()
    assert mallory.ask("tasks/get", {"taskId": own})["result"]["taskId"] == own
    escaped = "".join(f"\\u{ord(c):04x}" for c in tid)
    bodies = []
    for method in ("tasks/get", "tasks/cancel", "tasks/result"):
        head = f'{{"jsonrpc":"2.0","id":7,"method":"{method}","params":'
        for params in (
            f'{{"taskId":"{escaped}"}}',
            f'{{"taskId":"\\u{ord(tid[0]):04x}{tid[1:]}"}}',
            f'{{"task\\u0049d":"{tid}"}}',
            f'{{"TaskId":"{tid}"}}',
            f'{{"taskID":"{tid}"}}',
            f'{{"taskid":"{tid}"}}',
            f'{{"taskId":"{own}","taskId":"{tid}"}}',
            f'{{"taskId":"{tid}","taskId":"{own}"}}',
            f'{{"taskId":"{own}","TaskId":"{tid}"}}',
            f'{{"_meta":{{"taskId":"{tid}"}}}}',
            f'{{"taskId":"{own}","_meta":{{"taskId":"{tid}"}}}}',
            f'["{tid}"]',
            f'"{tid}"',
            f'{{"taskId":["{tid}"]}}',
            f'{{"taskId":{{"taskId":"{tid}"}}}}',
            f'{{"taskId":"{tid}","task":{{}}}}',
        ):
            bodies.append(f"{head}{params}}}".encode())
    for body in bodies:
        reply = mallory.send(body, timeout=20)
        assert not any(names_task(m, tid) for m in reply.messages), body
    assert alice.status(tid) == "input_required"


def test_no_notification_batch_method_or_header_variant_reaches_anothers_task(
    envoy: Envoy,
) -> None:
    alice, tid = waiting_task(envoy)
    mallory = Peer(envoy, "mallory")
    own = mallory.research()
    cancel = {"jsonrpc": "2.0", "method": "tasks/cancel", "params": {"taskId": tid}}
    get_own = {"jsonrpc": "2.0", "id": 3, "method": "tasks/get", "params": {"taskId": own}}
    attempts: list[tuple[bytes, list[tuple[str, str]]]] = [
        # A notification: no id, so no answer to refuse with.
        (json.dumps(cancel).encode(), []),
        (json.dumps([{**cancel, "id": 1}]).encode(), []),
        (json.dumps([get_own, {**cancel, "id": 2}]).encode(), []),
        (json.dumps({**cancel, "id": 4, "method": "Tasks/Cancel"}).encode(), []),
        (json.dumps({**cancel, "id": 5, "method": "tasks/cancel "}).encode(), []),
        (json.dumps({**cancel, "id": 6}).encode(), [("mcp-method", "tasks/get")]),
        (json.dumps({**cancel, "id": 7}).encode(), [("mcp-method", "ping")]),
        (json.dumps({**get_own, "id": 8}).encode(), [("mcp-name", tid)]),
        (
            json.dumps({**get_own, "id": 9}).encode(),
            [("mcp-method", "tasks/cancel"), ("mcp-name", tid)],
        ),
        # The client's own x-toolgate-exchange is removed before the route is picked.
        (json.dumps({**cancel, "id": 10}).encode(), [("x-toolgate-exchange", "none")]),
    ]
    for body, extra in attempts:
        reply = mallory.send(body, *extra, timeout=20)
        assert not any(names_task(m, tid) for m in reply.messages), (body, extra)
    # None of them cancelled alice's task.
    assert alice.status(tid) == "input_required"


# --- the caller ---------------------------------------------------------------------------------


def test_a_credential_in_another_spelling_is_the_same_caller_and_never_another(
    envoy: Envoy,
) -> None:
    alice = Peer(envoy, "alice")
    tid = alice.research()
    # Alice in other spellings of her own credential: still alice.
    for spelling in ("bearer alice", "BEARER   alice"):
        again = Peer(envoy, None, session=alice.session, authorization=spelling)
        assert again.ask("tasks/get", {"taskId": tid})["result"]["taskId"] == tid, spelling
    # Mallory with no credential, a second Authorization header, or one that is no bearer
    # token: never alice.
    headers: list[list[tuple[str, str]]] = [
        [],
        [("authorization", "Bearer mallory"), ("authorization", "Bearer mallory2")],
        [("authorization", "Bearer mallory, Bearer x")],
        [("authorization", "Basic YWxpY2U6")],
        [("authorization", "Bearer")],
        [("authorization", "")],
    ]
    for extra in headers:
        mallory = Peer(envoy, None, session=alice.session)
        reply = mallory.send(rpc("tasks/get", {"taskId": tid}, 5), *extra)
        assert not any(names_task(m, tid) for m in reply.messages), extra


def test_callers_without_a_credential_are_one_caller_and_reach_no_other_task(
    envoy: Envoy,
) -> None:
    """Every caller without a credential is one grant, so one caller to whom every such
    task belongs (documented: "every caller without one is one caller"), and none of
    them reaches a task a caller with a credential created."""
    anonymous = Peer(envoy, None)
    tid = anonymous.research()
    other = Peer(envoy, None, session=anonymous.session)
    assert other.ask("tasks/get", {"taskId": tid})["result"]["taskId"] == tid
    alice = Peer(envoy, "alice")
    assert alice.ask("tasks/get", {"taskId": tid}).get("error") == NOT_FOUND
    theirs = alice.research()
    assert other.ask("tasks/get", {"taskId": theirs}).get("error") == NOT_FOUND


# --- the task reached another way than by its id ------------------------------------------------


def test_a_request_related_to_anothers_task_does_not_reach_it(envoy: Envoy) -> None:
    """MCP's ``_meta["io.modelcontextprotocol/related-task"]`` relates any request to a task:
    server-everything (the TypeScript SDK) looks the task up and queues the request's answer
    (and anything the handler sends) on that task's queue, delivered on its creator's
    tasks/result; for a task it does not find it answers "Task not found" at once. So
    mallory tells whether alice's task exists, and writes into its queue."""
    _alice, tid = waiting_task(envoy)
    mallory = Peer(envoy, "mallory")
    made_up = "0" * 32
    for method, params in (("ping", {}), ("tools/call", {"name": "echo", "arguments": {}})):
        replies = {}
        for task in (tid, made_up):
            related = {**params, "_meta": {RELATED: {"taskId": task}}}
            if method == "tools/call":
                related["arguments"] = {"message": "from mallory"}
            replies[task] = mallory.send(rpc(method, related, 11), timeout=5)
        theirs, none = replies[tid], replies[made_up]
        assert theirs.ended and theirs.answer(11) is not None, (
            f"{method} related to alice's task was queued on it, unanswered; to a made-up "
            f"one: {none.answer(11)}"
        )
        assert theirs.answer(11) == none.answer(11), method


class TaskKeeper:
    """A server that keeps tasks for no one in particular (as a 2026-07-28 server with no
    sessions may), lists them a page of ``page`` at a time, and makes its cursors of task
    ids: a cursor it does not know is an error, one it knows lists the tasks after it."""

    def __init__(self, page: int = 10) -> None:
        self.tasks: list[str] = []
        self.page = page

    def answer(self, message: dict[str, Any]) -> tuple[int, str, list[bytes]]:
        method, params = message.get("method"), message.get("params") or {}
        result: dict[str, Any]
        if method == "tools/call":
            self.tasks.append(f"t-{len(self.tasks)}")
            result = {"task": {"taskId": self.tasks[-1], "status": "working"}}
        elif method == "tasks/list":
            start = 0
            if "cursor" in params:
                if params["cursor"] not in self.tasks:
                    error = {"code": -32602, "message": "Invalid cursor"}
                    body = {"jsonrpc": "2.0", "id": message.get("id"), "error": error}
                    return 200, "application/json", [json.dumps(body).encode()]
                start = self.tasks.index(params["cursor"]) + 1
            page = self.tasks[start : start + self.page]
            entries = [{"taskId": t, "status": "working"} for t in page]
            result = {"tasks": entries}
            if start + self.page < len(self.tasks):
                result["nextCursor"] = page[-1]
        else:
            result = {}
        body = {"jsonrpc": "2.0", "id": message.get("id"), "result": result}
        return 200, "application/json", [json.dumps(body).encode()]


@pytest.fixture
def keeper() -> Any:
    if envoy_executable() is None:
        pytest.skip("needs envoy")
    server = TaskKeeper()
    with (
        ScriptedUpstream(server.answer) as upstream,
        Sidecar(POLICY) as sidecar,
        deployed(EXT_PROC, sidecar.port, upstream.port, patient=True) as envoy,
    ):
        yield envoy


def create(peer: Peer) -> str:
    params = {"name": RESEARCH, "arguments": {}, "task": {}}
    return peer.ask("tools/call", params)["result"]["task"]["taskId"]


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(made_up=st.text(max_size=40) | st.sampled_from(["toolgate.cursor.", "toolgate.cursor.00"]))
def test_a_task_list_cursor_tells_nothing_of_anothers_task(keeper: Envoy, made_up: str) -> None:
    """The server's cursors are its task ids. Whatever cursor mallory sends (alice's task id,
    one that names nothing, any text, the proxy's prefix), the answer is the same refusal,
    and the server never sees it."""
    alice = Peer(keeper, "alice", session="s-alice")
    tid = create(alice)
    mallory = Peer(keeper, "mallory", session="s-mallory")
    answers = [mallory.ask("tasks/list", {"cursor": c}) for c in (tid, "t-none", made_up)]
    errors = [a.get("error") for a in answers]
    assert all(e is not None and e["code"] == -32602 for e in errors), answers
    assert len({e["message"] for e in errors}) == 1, errors


def test_a_task_list_does_not_name_anothers_task_in_its_cursor(keeper: Envoy) -> None:
    alice = Peer(keeper, "alice", session="s-alice")
    mine = {create(alice) for _ in range(11)}
    mallory = Peer(keeper, "mallory", session="s-mallory")
    listed = mallory.ask("tasks/list", {})["result"]
    assert listed["tasks"] == []
    assert not any(t in listed.get("nextCursor", "") for t in mine), listed
    # The sealed cursor is mallory's to use, and tells only what the server would have told
    # mallory: the rest of the list, filtered for mallory.
    following = mallory.ask("tasks/list", {"cursor": listed["nextCursor"]})["result"]
    assert following["tasks"] == []


def test_a_sealed_cursor_pages_on_for_its_caller_only(keeper: Envoy) -> None:
    carol = Peer(keeper, "carol", session="s-carol")
    mine = [create(carol) for _ in range(13)]
    page = carol.ask("tasks/list", {})["result"]
    listed, cursors = [t["taskId"] for t in page["tasks"]], []
    while "nextCursor" in page:
        cursors.append(page["nextCursor"])
        page = carol.ask("tasks/list", {"cursor": cursors[-1]})["result"]
        listed += [t["taskId"] for t in page["tasks"]]
    assert sorted(listed) == sorted(mine)
    assert cursors and all(c.startswith("toolgate.cursor.") for c in cursors)
    assert not any(t in c for t in mine for c in cursors)
    # Another caller, or the same cursor with one character changed, is refused alike.
    mallory = Peer(keeper, "mallory", session="s-mallory")
    stolen = mallory.ask("tasks/list", {"cursor": cursors[0]})
    flipped = cursors[0][:-1] + ("0" if cursors[0][-1] != "0" else "1")
    altered = carol.ask("tasks/list", {"cursor": flipped})
    assert stolen["error"] == altered["error"] and stolen["error"]["code"] == -32602


def test_another_caller_cannot_answer_the_tasks_elicitation(envoy: Envoy) -> None:
    """An ambiguous research task asks its creator (elicitation/create, queued for
    tasks/result). The server's request ids count from 0 in each session, and a client's
    JSON-RPC answer passes toolgate untouched: mallory answers for alice."""
    alice, tid = waiting_task(envoy)
    mallory = Peer(envoy, "mallory", session=alice.session)
    for n in range(4):
        choice = {"action": "accept", "content": {"interpretation": "snake"}}
        answer = json.dumps({"jsonrpc": "2.0", "id": n, "result": choice}).encode()
        mallory.send(answer)
    time.sleep(1.5)
    status = alice.ask("tasks/get", {"taskId": tid})["result"]
    assert status["status"] == "input_required", status


def test_a_replayed_stream_does_not_carry_anothers_task(envoy: Envoy) -> None:
    """server-everything's event store replays, after a ``Last-Event-ID``, every later event
    of the session, whichever stream it was on. Mallory, knowing alice's session and an event
    id of it, resumes the stream: she is answered as for a session that does not exist, and
    nothing of alice's is replayed. (A 2025-11-25 stream opens with an empty priming event,
    which toolgate's filter refuses, ending a replay there; alice speaks 2025-06-18.)"""
    alice = Peer(envoy, "alice", revision="2025-06-18")
    before = alice.send(rpc("ping", None, "a1"))
    assert before.event_ids, before.body
    tid = alice.research()
    alice.wait_status(tid, "completed")
    result = alice.ask("tasks/result", {"taskId": tid})["result"]
    assert "Research Report" in result["content"][0]["text"]
    mallory = Peer(envoy, "mallory", session=alice.session, revision="2025-06-18")
    replay = mallory.send(b"", ("last-event-id", before.event_ids[-1]), method="GET", timeout=3)
    assert replay.status == 404, (replay.status, replay.body)
    assert not any(names_task(m, tid) for m in replay.messages), replay.body
    # Alice resumes her own stream.
    own = alice.send(b"", ("last-event-id", before.event_ids[-1]), method="GET", timeout=3)
    assert own.status == 200, (own.status, own.body)


def test_the_task_noted_is_the_one_the_client_reads_in_the_answer() -> None:
    """A server that keeps tasks for no one (it answers a tasks/get of any id) answers
    alice's call with an event stream: a notification and an answer to another request that
    name other tasks, then her answer with its JSON split over data lines. Only the task the
    client reads as its answer is alice's; mallory reaches none."""
    if envoy_executable() is None:
        pytest.skip("needs envoy")

    def answer(message: dict[str, Any]) -> tuple[int, str, list[bytes]]:
        if message.get("method") == "tools/call":
            rid = json.dumps(message["id"])
            chunks = [
                b'data: {"jsonrpc":"2.0","method":"notifications/tasks/status",'
                b'"params":{"task":{"taskId":"t-x"},"taskId":"t-x","status":"working"}}\n\n',
                b'data: {"jsonrpc":"2.0","id":"other","result":{"task":{"taskId":"t-y"}}}\n\n',
                b'data: {"jsonrpc":"2.0","id":%s,\ndata: "result":{"task":\n' % rid.encode(),
                b'data: {"taskId":"t-a","status":"working"}}}\n\n',
            ]
            return 200, "text/event-stream", chunks
        task = (message.get("params") or {}).get("taskId", "")
        result = {"taskId": task, "status": "working"}
        body = {"jsonrpc": "2.0", "id": message.get("id"), "result": result}
        return 200, "application/json", [json.dumps(body).encode()]

    with (
        ScriptedUpstream(answer) as upstream,
        Sidecar(POLICY) as sidecar,
        deployed(EXT_PROC, sidecar.port, upstream.port, patient=True) as envoy,
    ):
        alice = Peer(envoy, "alice", session="s-1")
        params = {"name": RESEARCH, "arguments": {}, "task": {}}
        created = alice.ask("tools/call", params)
        assert created["result"]["task"]["taskId"] == "t-a"
        assert alice.ask("tasks/get", {"taskId": "t-a"})["result"]["taskId"] == "t-a"
        mallory = Peer(envoy, "mallory", session="s-2")
        for task in ("t-a", "t-x", "t-y"):
            assert mallory.ask("tasks/get", {"taskId": task}).get("error") == NOT_FOUND, task
        for task in ("t-x", "t-y"):
            assert alice.ask("tasks/get", {"taskId": task}).get("error") == NOT_FOUND, task


# --- agentgateway's ExtMCP ----------------------------------------------------------------------

ALICE = {"authorization": "Bearer alice"}
MALLORY = {"authorization": "Bearer mallory"}


def get(gw: ExtMcp, task_id: str, caller: dict[str, Any]) -> str:
    """Whether the answer to ``caller``'s tasks/get of ``task_id`` passes."""
    answer = {"taskId": task_id, "status": "working"}
    return outcome(gw.response("tasks/get", answer, metadata=caller))


def test_extmcp_a_task_list_in_another_spelling_shows_no_one_elses_task() -> None:
    with Sidecar(POLICY) as sidecar, ExtMcp(sidecar.target) as gw:
        gw.response("tools/call", {"task": {"taskId": "t-a"}}, metadata=ALICE)
        assert get(gw, "t-a", ALICE) == "pass"
        for body in (
            b'{"tasks":[{"TaskId":"t-a"}]}',
            b'{"tasks":[{"taskID":"t-a"}]}',
            b'{"tasks":[{"taskid":"t-a"}]}',
            b'{"tasks":[{"task\\u0049d":"t-a"}]}',
            b'{"tasks":[{"taskId":"t-m","taskId":"t-a"}]}',
            b'{"tasks":[{"taskId":"t-a","TaskId":"t-m"}]}',
            b'{"tasks":[{"taskId":"t-m","taskId ":"t-a"}]}',
            b'{"Tasks":[{"taskId":"t-a"}]}',
            b'{"tasks":[],"Tasks":[{"taskId":"t-a"}]}',
            b'{"tasks":[],"tasks":[{"taskId":"t-a"}]}',
            b'{"tasks":{"0":{"taskId":"t-a"}}}',
            b'{"tasks":["t-a"]}',
        ):
            answer = gw.response("tasks/list", body, metadata=MALLORY)
            shown = answer.mutated if outcome(answer) == "mutated" else b""
            assert outcome(answer) != "pass" and b"t-a" not in shown, (body, answer)
        # A task's answer in another spelling is not mallory's either.
        for body in (
            b'{"TaskId":"t-a","status":"working"}',
            b'{"taskId":"t-m","taskId":"t-a"}',
            b'{"task\\u0049d":"t-a"}',
            b'{"taskId":["t-a"]}',
        ):
            assert outcome(gw.response("tasks/get", body, metadata=MALLORY)) == "error", body


def test_extmcp_an_answer_naming_its_task_twice_or_oddly_notes_none() -> None:
    with Sidecar(POLICY) as sidecar, ExtMcp(sidecar.target) as gw:
        for body in (
            b'{"task":{"taskId":"t-1","taskId":"t-2"}}',
            b'{"task":{"taskId":"t-3"},"task":{"taskId":"t-4"}}',
            b'{"task":{"taskId":5}}',
            b'{"task":{"TaskId":"t-6"}}',
        ):
            gw.response("tools/call", body, metadata=MALLORY)
        for task in ("t-1", "t-2", "t-3", "t-4", "5", "t-6"):
            assert get(gw, task, MALLORY) == "error", task


def test_a_flood_of_task_notes_does_not_lock_a_caller_out_of_its_task() -> None:
    """Each created task takes a slot of the counter table for a day. One caller notes at
    most MAX_PER_CALLER (1000) tasks, and no more than a 64th of the table's slots (64 of
    4096 here): past that, its tasks are no one's, and another caller's task is still
    noted. (Made-up credentials each have a share of their own: they fill at most the
    table's client-chosen half, as for every counter; docs/counters.md.)"""
    slots = 4096
    cap = min(MAX_PER_CALLER, slots // 64)
    with Sidecar(POLICY, "--capacity", str(slots)) as sidecar, ExtMcp(sidecar.target) as gw:
        noted = 0
        while noted <= 2 * cap:
            task = f"m-{noted}"
            gw.response("tools/call", {"task": {"taskId": task}}, metadata=MALLORY)
            if get(gw, task, MALLORY) != "pass":
                break
            noted += 1
        assert noted == cap
        gw.response("tools/call", {"task": {"taskId": "t-a"}}, metadata=ALICE)
        assert get(gw, "t-a", ALICE) == "pass", (
            f"after {noted} tasks of mallory's (a table of {slots} slots), alice's own task "
            "was not noted: Task not found"
        )


@pytest.mark.parametrize(
    "document",
    [
        policy({"research": {}}, default="allow"),
        policy({"research": {}}, methods={"tasks/get": {}, "tasks/cancel": {}, "tasks/result": {}}),
        policy({"research": {}}, methods={"*": {}}),
        policy({"research": {}}, methods={"tasks/*": {"mode": "shadow"}}),
    ],
    ids=["default-allow", "exact-names", "every-method", "rule-in-shadow"],
)
def test_extmcp_whatever_rule_allows_the_method_anothers_task_stays_hidden(
    document: dict[str, Any],
) -> None:
    """The request hook (as agentgateway would ask it), the task noted by alice's call."""
    alice, mallory = [("authorization", "Bearer alice")], [("authorization", "Bearer mallory")]
    with Sidecar(document) as sidecar, ExtMcp(sidecar.target) as gw:
        gw.response("tools/call", {"task": {"taskId": "t-a"}}, metadata=ALICE)
        for method in ("tasks/get", "tasks/cancel", "tasks/result"):
            assert outcome(gw.request(method, {"taskId": "t-a"}, headers=alice)) == "pass"
            for params in (
                {"taskId": "t-a"},
                b'{"task\\u0049d":"t-a"}',
                b'{"taskId":"t-\\u0061"}',
                b'{"taskId":"t-m","taskId":"t-a"}',
                b'{"TaskId":"t-a"}',
                b'{"_meta":{"taskId":"t-a"}}',
                b'["t-a"]',
                None,
            ):
                refused = gw.request(method, params, headers=mallory)
                assert outcome(refused) == "error", (method, params)
