"""Exit statuses (toolgate.cli.exits, the table in docs/sidecar.md) and the paths commands read
and write: ``serve --state-dir/--decision-log``, ``log digest --state-dir``, ``pin --pins``,
``test --junit``. Each mistake is one sentence and a documented status, never a traceback,
and nothing a command is pointed at (a FIFO, an endless device) blocks it.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from cli_process import CLI, no_traceback, run, write
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sidecar import PATIENCE, Sidecar, free_port


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
