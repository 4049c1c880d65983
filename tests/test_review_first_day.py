"""Outside review (security and first-day usability) of four surfaces, through real processes:

1. One caller's share of the counter table (rust/core/src/owner.rs ``per_caller``,
   engine.rs ``note_owner``, cap -> claim -> note), and the other paths that reserve slots
   for one caller: require_confirmation's nonces (engine.rs ``confirmation_gate``), task
   notes through ExtMcp, sessions of callers without a credential. Driven through
   ``toolgate serve``'s ext_authz ``Check`` and ExtMcp services; the table is read from
   ``/metrics``.
2. ``--wait`` of ``decide --target``, ``health`` and ``approvals``
   (toolgate.client.wait_until_listening) and ``health``'s ``--timeout``.
3. Exit statuses (toolgate.cli.exits, the table in docs/sidecar.md) and the paths commands
   read and write: ``serve --state-dir/--decision-log``, ``log digest --state-dir``,
   ``pin --pins``, ``test --junit``.
4. ``validate --tools/--url [SERVER=]SOURCE`` and ``test --tools``
   (toolgate.authoring.listed_names).

What holds is asserted as behaviour. Each weakness found is a strict xfail that passes once
it is fixed. No assertion on wall-clock time: where a command could block, the test looks at
what the process is blocked in (``/proc/PID/wchan``), or only bounds how long it waits before
calling it stuck.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from confirming import CAPABLE
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from ext_mcp import ExtMcp
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sidecar import PATIENCE, Sidecar, free_port
from test_envoy_authz_api import Authz

CLI = [sys.executable, "-m", "toolgate.cli"]
Ctx = attribute_context_pb2.AttributeContext

# --- helpers --------------------------------------------------------------------------------


def run(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``toolgate ARGS`` as a process: its status, stdout and stderr."""
    return subprocess.run(
        [*CLI, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def run_watching(args: list[str | Path], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``run``, but a process that printed a traceback is stopped there (after one, grpcio's
    polling thread may keep it alive): its status is then -9."""
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [*CLI, *map(str, args)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )
    try:
        deadline = time.monotonic() + PATIENCE
        while proc.poll() is None and time.monotonic() < deadline:
            if "Traceback" in err_path.read_text(errors="replace"):
                proc.kill()
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
        code = proc.wait(timeout=PATIENCE)
    return subprocess.CompletedProcess(args, code, "", err_path.read_text(errors="replace"))


def no_traceback(p: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in p.stderr, p.stderr
    assert "Traceback" not in p.stdout, p.stdout


def write(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document))
    return path


class Gate(Authz):
    """ext_authz ``Check`` calls to a sidecar, as Envoy sends them (the body whole)."""

    def check(self, grant: str | None, body: str, session: str | None = None) -> tuple[bool, Any]:
        """(forwarded, the JSON-RPC message answered otherwise)."""
        raw = body.encode()
        headers = {"content-type": "application/json", "content-length": str(len(raw))}
        if grant is not None:
            headers["authorization"] = f"Bearer {grant}"
        if session is not None:
            headers["mcp-session-id"] = session
        http = Ctx.HttpRequest(method="POST", path="/mcp", headers=headers, raw_body=raw)
        attributes = Ctx(request=Ctx.Request(http=http), context_extensions={"server": "example"})
        r = self.stub(external_auth_pb2.CheckRequest(attributes=attributes), timeout=30)
        if r.status.code == code_pb2.OK:
            return True, None
        return False, json.loads(r.denied_response.body)

    def slots(self) -> float:
        """Counter-table slots that hold a key."""
        value = self.sidecar.metric("toolgate_counter_table_slots_used")
        assert value is not None
        return value

    def client_slots(self) -> float:
        value = self.sidecar.metric("toolgate_counter_table_client_slots")
        assert value is not None
        return value


def call(tool: str, arguments: dict[str, Any], answers: str | None = None) -> str:
    """A tools/call from a client that can be asked (MCP 2026-07-28, form elicitation)."""
    extra = "" if answers is None else f',"inputResponses":{answers}'
    params = (
        f'{{"name":"{tool}","arguments":{json.dumps(arguments)},'
        f'"_meta":{json.dumps(CAPABLE)}{extra}}}'
    )
    return f'{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{params}}}'


def confirm(gate: Gate, grant: str, n: int) -> str:
    """Ask a confirmed call and answer it yes, as a client that confirms its own calls does:
    ``RAN`` or the decision's code."""
    args = {"id": f"ami-{grant}-{n}"}
    forwarded, message = gate.check(grant, call("delete_image", args))
    assert not forwarded
    ((token, _),) = message["result"]["inputRequests"].items()
    yes = json.dumps({token: {"action": "accept", "content": {"approve": True}}})
    forwarded, message = gate.check(grant, call("delete_image", args, yes))
    if forwarded:
        return "RAN"
    return message["result"]["_meta"]["toolgate/decision"]["code"]


CONFIRMING = {
    "version": "1",
    "default": "allow",
    "tools": {
        "delete_image": {
            "action": "require_confirmation",
            "confirmation": {"message": "Delete image {args.id}?"},
        },
        "search": {
            "action": "allow",
            "limits": [{"counter": "searches", "max": 100, "window": "1m", "scope": "grant"}],
        },
    },
}

# --- 1. one caller's share of the counter table ---------------------------------------------


def test_sessions_past_the_cap_or_anothers_take_no_slot() -> None:
    """A 4,096-slot table: one caller holds 64 sessions (a 64th of the slots), and neither
    new sessions past that nor another caller's session take a slot, however often asked."""
    with Sidecar(CONFIRMING, "--capacity", "4096") as sidecar:
        gate = Gate(sidecar)
        held = [gate.check("mallory", call("other", {}), f"m-{i}")[0] for i in range(64)]
        assert all(held)
        assert gate.check("alice", call("other", {}), "alices")[0]
        before = gate.slots()
        for i in range(64, 200):
            forwarded, message = gate.check("mallory", call("other", {}), f"m-{i}")
            assert not forwarded and message["error"]["code"] == -32001
        for _ in range(50):
            forwarded, message = gate.check("mallory", call("other", {}), "alices")
            assert not forwarded and message["error"]["message"] == "Session not found"
        assert gate.slots() == before
        # Alice still reaches hers, and a new caller gets one.
        assert gate.check("alice", call("other", {}), "alices")[0]
        assert gate.check("carol", call("other", {}), "carols")[0]


def test_a_confirmation_refused_at_the_callers_cap_takes_no_slot() -> None:
    """A 4,096-slot table: one caller's confirmed calls are capped at a 64th of it (64), and a
    yes refused past that takes no slot."""
    with Sidecar(CONFIRMING, "--capacity", "4096") as sidecar:
        gate = Gate(sidecar)
        ran = [confirm(gate, "mallory", n) for n in range(64)]
        assert ran.count("RAN") == 64
        before = gate.client_slots()
        refused = [confirm(gate, "mallory", n) for n in range(64, 104)]
        assert set(refused) == {"RATE_LIMITED"}, refused
        assert gate.client_slots() == before


def test_one_callers_confirmations_leave_room_for_the_next_caller() -> None:
    with Sidecar(CONFIRMING, "--capacity", "64") as sidecar:
        gate = Gate(sidecar)
        for n in range(40):
            confirm(gate, "mallory", n)
        forwarded, message = gate.check("bob", call("search", {"q": "x"}))
        assert forwarded, message


def test_one_anonymous_client_cannot_refuse_every_anonymous_session() -> None:
    with Sidecar(CONFIRMING, "--capacity", "4096") as sidecar:
        gate = Gate(sidecar)
        for i in range(64):
            gate.check(None, call("other", {}), f"flood-{i}")
        forwarded, message = gate.check(None, call("other", {}), "a-real-clients-session")
        assert forwarded, message


def test_one_callers_sessions_and_tasks_hold_what_the_docs_say() -> None:
    """Sessions a 32nd of the slots, tasks a 64th, and a slot counting each."""
    slots = 4096
    with (
        Sidecar(CONFIRMING, "--capacity", str(slots)) as sidecar,
        ExtMcp(sidecar.target) as gw,
    ):
        gate = Gate(sidecar)
        empty = gate.slots()
        for i in range(100):
            gate.check("mallory", call("other", {}), f"m-{i}")
        for i in range(100):
            result = {"task": {"taskId": f"t-{i}"}}
            gw.response("tools/call", result, metadata={"authorization": "Bearer mallory"})
        assert gate.slots() - empty <= slots // 32 + slots // 64 + 2


# --- 2. --wait and --timeout ------------------------------------------------------------------


@pytest.fixture(scope="module")
def live() -> Iterator[Sidecar]:
    with Sidecar(None) as sidecar:
        yield sidecar


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("not-a-token\n")
    return path


def closed_port() -> int:
    return free_port()


@pytest.mark.parametrize("command", ["health", "decide", "approvals"])
def test_nothing_listening_is_one_line_and_status_3(command: str, token_file: Path) -> None:
    target = f"127.0.0.1:{closed_port()}"
    args = {
        "health": ["health", "--target", target],
        "decide": ["decide", "--target", target, "--tool", "t"],
        "approvals": ["approvals", "--target", target, "--token-file", token_file, "list"],
    }[command]
    p = run(*args, "--wait", "0.5")
    no_traceback(p)
    assert p.returncode == 3, p
    assert "nothing answered at" in p.stderr and len(p.stderr.splitlines()) == 1, p.stderr


@pytest.mark.parametrize("wait", ["nan", "-1", "-inf"])
def test_a_wait_that_is_no_duration_is_refused(wait: str) -> None:
    p = run("health", "--target", "127.0.0.1:1", "--wait", wait)
    no_traceback(p)
    assert p.returncode == 2 and "--wait" in p.stderr, p


def test_a_port_that_accepts_but_never_speaks_is_not_waited_on_forever() -> None:
    """A TCP listener that accepts and says nothing: the command gives up after --wait."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        target = f"127.0.0.1:{listener.getsockname()[1]}"
        for args in (["health"], ["decide", "--tool", "t"]):
            p = run(*args, "--target", target, "--wait", "0.5", timeout=30)
            no_traceback(p)
            assert p.returncode == 3, p
    finally:
        listener.close()
        for s in accepted:
            s.close()


@pytest.mark.parametrize("command", ["health", "decide", "approvals"])
@pytest.mark.parametrize("wait", ["inf", "1e10"])
def test_a_long_wait_for_a_serving_sidecar_is_no_traceback(
    live: Sidecar, command: str, wait: str, token_file: Path, tmp_path: Path
) -> None:
    args = {
        "health": ["health", "--target", live.target],
        "decide": ["decide", "--target", live.target, "--tool", "t"],
        # The decider port has no Approvals service: the call fails (3), after the wait.
        "approvals": ["approvals", "--target", live.target, "--token-file", token_file, "list"],
    }[command]
    p = run_watching([*args, "--wait", wait], tmp_path)
    no_traceback(p)
    assert p.returncode in (0, 2, 3), p


# The OverflowError leaves grpcio's polling thread watching the channel close() then closes:
# 'Cannot monitor channel state: Channel closed!' in that thread (wait_until_listening does
# not cancel the future it gives up on; `toolgate health --wait` can print the same).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_the_clients_wait_takes_an_unbounded_wait(live: Sidecar) -> None:
    from toolgate.client import Client

    client = Client(live.target)
    try:
        client.wait_until_listening(float("inf"))
    finally:
        client.close()


def test_the_async_clients_wait_does_not_call_a_serving_sidecar_absent(live: Sidecar) -> None:
    import asyncio

    from toolgate.client import AsyncClient, NotListening

    async def wait() -> None:
        client = AsyncClient(live.target)
        try:
            await client.wait_until_listening(float("nan"))
        except ValueError:
            pass  # refusing a NaN is fine too
        finally:
            await client.close()

    try:
        asyncio.run(wait())
    except NotListening as err:
        raise AssertionError(f"a serving sidecar reported absent: {err}") from None


@pytest.mark.parametrize("timeout", ["nan", "-1", "inf"])
def test_health_timeout_that_is_no_duration(live: Sidecar, timeout: str) -> None:
    p = run("health", "--target", live.target, "--timeout", timeout, "--wait", "0")
    no_traceback(p)
    assert p.returncode in (0, 2), p


@pytest.mark.parametrize("command", ["health", "decide"])
def test_a_unix_target_too_long_is_an_unusable_option(command: str, tmp_path: Path) -> None:
    target = f"unix:{tmp_path}/{'s' * 120}.sock"
    args = ["health"] if command == "health" else ["decide", "--tool", "t"]
    p = run(*args, "--target", target, "--wait", "0.2")
    no_traceback(p)
    assert p.returncode == 2, p


@pytest.mark.xfail(
    strict=True,
    reason="open: with --wait, a target that answers in HTTP/1 (the sidecar's own /metrics "
    "port, a first-day mix-up) is reported as 'nothing answered ... is the sidecar running'; "
    "gRPC's own reason (an HTTP/1 server) is dropped (client.py wait_until_listening)",
)
def test_a_target_that_answers_http1_is_not_reported_as_nothing(live: Sidecar) -> None:
    p = run("health", "--target", f"127.0.0.1:{live.metrics_port}", "--wait", "1")
    no_traceback(p)
    assert p.returncode == 3, p
    assert "nothing answered" not in p.stderr, p.stderr


# --- 3. exit statuses and paths -------------------------------------------------------------


@pytest.fixture
def odd(tmp_path: Path) -> dict[str, Path]:
    """Odd places: a FIFO, a symlink loop, a regular file, a path too long for the system."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    (tmp_path / "file").write_text("x")
    return {
        "devnull": Path("/dev/null"),
        "fifo": fifo,
        "loop": tmp_path / "loop-a",
        "under-loop": tmp_path / "loop-a" / "sub",
        "file": tmp_path / "file",
        "under-file": tmp_path / "file" / "sub",
        "long": tmp_path / ("d" * 300),
    }


STATE_DIRS = ["devnull", "fifo", "loop", "under-loop", "file", "under-file", "long"]


@pytest.mark.parametrize("where", STATE_DIRS)
def test_serve_state_dir_in_odd_places_is_one_sentence_and_2(
    odd: dict[str, Path], where: str
) -> None:
    p = run(
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "off",
        "--state-dir",
        odd[where],
        timeout=30,
    )
    no_traceback(p)
    assert p.returncode == 2, p
    assert "--state-dir" in p.stderr, p.stderr


@pytest.mark.parametrize("where", STATE_DIRS)
def test_log_digest_state_dir_in_odd_places_is_2(odd: dict[str, Path], where: str) -> None:
    p = run("log", "digest", "--state-dir", odd[where], '{"a": 1}')
    no_traceback(p)
    assert p.returncode == 2, p


def test_pin_pins_at_a_directory_and_junit_at_dev_full_are_2(tmp_path: Path) -> None:
    tools = write(tmp_path / "tools.json", {"tools": [{"name": "read_file"}]})
    p = run("pin", "--file", tools, "--pins", tmp_path)
    no_traceback(p)
    assert p.returncode == 2, p
    policy = write(tmp_path / "p.json", {"version": "1", "default": "allow"})
    cases = tmp_path / "p.tests.yaml"
    cases.write_text(
        f"policy: {policy}\ncases:\n  - name: x\n    call: {{tool: t}}\n"
        "    expect: {verdict: ALLOW}\n"
    )
    p = run("test", cases, "--junit", "/dev/full")
    no_traceback(p)
    assert p.returncode == 2 and "--junit /dev/full" in p.stderr, p


def wchan(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return ""


def serving(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        try:
            reply = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(), timeout=0.5
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def stuck_on_a_fifo(args: list[str | Path], port: int | None = None) -> str | None:
    """Run ``toolgate ARGS``: None if it exits 2 without a traceback, or (``port``) serves;
    otherwise what is wrong (blocked opening a FIFO nothing reads or writes, ...)."""
    proc = subprocess.Popen(
        [*CLI, *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                err = proc.stderr.read() if proc.stderr else ""
                if code == 2 and "Traceback" not in err:
                    return None
                return f"exit {code}: {err[-500:]}"
            if wchan(proc.pid) == "wait_for_partner":
                return "blocked opening a FIFO with no one at the other end"
            if port is not None and serving(port):
                return None
            time.sleep(0.05)
        return "still running, not serving"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=PATIENCE)
        if proc.stderr:
            proc.stderr.close()


@pytest.mark.parametrize("command", ["serve-log", "serve-key", "digest-key", "pin", "junit"])
def test_a_fifo_never_blocks_a_command(tmp_path: Path, command: str) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    state = tmp_path / "state"
    state.mkdir()
    port = free_port()
    serve = ["serve", "--listen", f"127.0.0.1:{port}", "--metrics-listen", "off"]
    if command == "serve-log":
        args = [*serve, "--state-dir", state, "--decision-log", fifo]
    elif command in ("serve-key", "digest-key"):
        os.mkfifo(state / "grant.key")
        args = (
            [*serve, "--state-dir", state]
            if command == "serve-key"
            else ["log", "digest", "--state-dir", state, "{}"]
        )
    elif command == "pin":
        tools = write(tmp_path / "tools.json", {"tools": [{"name": "read_file"}]})
        args = ["pin", "--file", tools, "--pins", fifo]
    else:
        policy = write(tmp_path / "p.json", {"version": "1", "default": "allow"})
        cases = tmp_path / "p.tests.yaml"
        cases.write_text(
            f"policy: {policy}\ncases:\n  - name: x\n    call: {{tool: t}}\n"
            "    expect: {verdict: ALLOW}\n"
        )
        args = ["test", cases, "--junit", fifo]
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    wrong = stuck_on_a_fifo(args, port if command.startswith("serve") else None)
    assert wrong is None, wrong


def test_pins_at_an_endless_device_is_an_unusable_path(tmp_path: Path) -> None:
    tools = write(tmp_path / "tools.json", {"tools": [{"name": "read_file"}]})
    limited = (
        "import resource, runpy, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "sys.argv = ['toolgate', *sys.argv[1:]]\n"
        "runpy.run_module('toolgate.cli', run_name='__main__')\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", limited, "pin", "--file", str(tools), "--pins", "/dev/zero"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    no_traceback(p)
    assert p.returncode == 2, p


def test_junit_under_a_file_says_what_is_wrong(tmp_path: Path) -> None:
    policy = write(tmp_path / "p.json", {"version": "1", "default": "allow"})
    cases = tmp_path / "p.tests.yaml"
    cases.write_text(
        f"policy: {policy}\ncases:\n  - name: x\n    call: {{tool: t}}\n"
        "    expect: {verdict: ALLOW}\n"
    )
    (tmp_path / "file").write_text("x")
    p = run("test", cases, "--junit", tmp_path / "file" / "report.xml")
    assert p.returncode == 2, p
    assert "File exists" not in p.stderr, p.stderr


def test_log_digest_refuses_a_key_serve_refuses(tmp_path: Path) -> None:
    (tmp_path / "grant.key").write_bytes(b"short\n")
    served = run(
        "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--state-dir", tmp_path
    )
    assert served.returncode == 2, served
    p = run("log", "digest", "--state-dir", tmp_path, "{}")
    no_traceback(p)
    assert p.returncode == 2, p


@pytest.mark.xfail(
    strict=True,
    reason="open: a decision line the log cannot write (ENOSPC) is said on stderr only: "
    "toolgate_decision_log_lines counts it and no metric counts it lost "
    "(runtime decision_log/writer.rs report)",
)
def test_a_decision_the_log_could_not_write_is_counted() -> None:
    with Sidecar(None, "--decision-log", "/dev/full") as sidecar:
        sidecar.client.decide("t")
        deadline = time.monotonic() + PATIENCE
        while "No space left" not in sidecar.stderr and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "No space left" in sidecar.stderr
        lost = {
            name: value
            for (name, _), value in sidecar.samples().items()
            if name.startswith("toolgate_decision_log_")
            and not name.startswith("toolgate_decision_log_lines")
            and not name.endswith("_created")
        }
        assert any(v >= 1 for v in lost.values()), lost


# --- 4. rules checked against a server's listing --------------------------------------------


@pytest.fixture
def listing(tmp_path: Path) -> Path:
    return write(
        tmp_path / "github.json",
        {"tools": [{"name": "delete_repo"}, {"name": "read_file"}, {"name": "create_issue"}]},
    )


def test_a_misspelt_rule_is_reported_with_the_nearest_name(tmp_path: Path, listing: Path) -> None:
    policy = write(
        tmp_path / "p.json",
        {"version": "1", "default": "allow", "tools": {"delete_repoo": {"action": "deny"}}},
    )
    p = run("validate", policy, "--tools", listing)
    no_traceback(p)
    assert p.returncode == 1, p
    assert "/tools/delete_repoo" in p.stderr and "nearest listed: delete_repo)" in p.stderr
    # The section of a server is checked against that server's listing.
    section = write(
        tmp_path / "s.json",
        {
            "version": "1",
            "default": "allow",
            "servers": {"github": {"default": "allow", "tools": {"delet_repo": {}}}},
        },
    )
    p = run("validate", section, "--tools", f"github={listing}")
    assert p.returncode == 1 and "/servers/github/tools/delet_repo" in p.stderr, p


def test_a_hostile_listings_names_are_shown_inert(tmp_path: Path) -> None:
    """A server's names (control characters, a newline, bidi overrides) printed as the
    nearest listed name cannot write to the terminal or forge a line."""
    names = [
        "delete_repo\x1b[2J\x1b[31mowned",
        "delete_repo\np.json: ok",
        "delete_rep\u202eo",
        "delete_re\x00po",
    ]
    hostile = write(tmp_path / "hostile.json", {"tools": [{"name": n} for n in names]})
    policy = write(
        tmp_path / "p.json",
        {"version": "1", "default": "allow", "tools": {"delete_repoo": {"action": "deny"}}},
    )
    p = run("validate", policy, "--tools", hostile)
    assert p.returncode == 1, p
    out = p.stdout + p.stderr
    assert len(p.stderr.splitlines()) == 1, p.stderr
    for raw in ("\x1b", "\u202e", "\x00", "p.json: ok"):
        assert raw not in out, out


@pytest.mark.parametrize("command", ["validate", "test"])
def test_a_misspelt_hide_is_reported(tmp_path: Path, listing: Path, command: str) -> None:
    hide = {"version": "1", "default": "allow", "hide": ["delet_repo"]}
    policy = write(tmp_path / "p.json", hide)
    if command == "validate":
        p = run("validate", policy, "--tools", listing)
    else:
        cases = tmp_path / "p.tests.yaml"
        cases.write_text(
            "policy: p.json\ncases:\n  - name: x\n    call: {tool: read_file}\n"
            "    expect: {verdict: ALLOW}\n"
        )
        p = run("test", cases, "--tools", listing)
    assert p.returncode == 1, p
    assert "delet_repo" in p.stderr, p.stderr


def test_a_listing_for_a_server_the_policy_does_not_name_is_said(
    tmp_path: Path, listing: Path
) -> None:
    policy = write(
        tmp_path / "p.json",
        {
            "version": "1",
            "default": "allow",
            "servers": {"github": {"default": "allow", "tools": {"delete_repoo": {}}}},
        },
    )
    p = run("validate", policy, "--tools", f"githb={listing}")
    assert p.returncode != 0 or "githb" in p.stderr, p


def test_any_server_id_of_the_policy_can_be_given_a_listing(tmp_path: Path, listing: Path) -> None:
    policy = write(
        tmp_path / "p.json",
        {
            "version": "1",
            "default": "allow",
            "servers": {"github:prod": {"default": "allow", "tools": {"delete_repoo": {}}}},
        },
    )
    p = run("validate", policy, "--tools", f"github:prod={listing}")
    assert p.returncode == 1, p
    assert "/servers/github:prod/tools/delete_repoo" in p.stderr, p.stderr


@pytest.mark.parametrize("timeout", ["nan", "-1"])
def test_validate_timeout_that_is_no_duration_is_2(tmp_path: Path, timeout: str) -> None:
    policy = write(tmp_path / "p.json", {"version": "1", "default": "allow"})
    url = f"http://127.0.0.1:{closed_port()}/mcp"
    p = run("validate", policy, "--url", url, "--timeout", timeout)
    no_traceback(p)
    assert p.returncode == 2, p
