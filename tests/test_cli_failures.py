"""Every way a command can fail is one sentence and an exit status, never a traceback, for every
command of the parser: Ctrl-C (SIGINT to the real process's group, as a terminal sends it), a
reader that closed stdout (``| head``), a file that does not exist, a server that is down, a
port in use, an optional package that is not installed, a mistyped option; and every option
of a command with actions is taken before the action and after it.

The cases are generated: ``INVOCATIONS`` says how each command runs when all is well, with its
inputs as placeholders (``{policy}``, ``{target}``...), and a test checks that it names every
command the parser has. Each failure is then made at each placeholder of its kind: every file
missing in turn, every server down in turn, every path the command writes put where it cannot
be written (under a file, a file where a directory goes or the reverse, a read-only place, a
missing parent); Ctrl-C arrives while the command waits on each input (a file that is a FIFO
nobody writes, a server that accepts and never answers). Each class ends with its one exit
status (``toolgate.cli.exits``, the table in docs/sidecar.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcp_servers import ExampleServer
from sidecar import TOOLGATE, Sidecar, free_port
from toolgate.cli import exits
from toolgate.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
MCP_CALL = EXAMPLES / "mcp_call.py"

#: What each placeholder of an invocation stands for.
FILES = {"policy", "tools", "token", "testfile", "log", "intercept", "tokens", "secret"}
SERVERS = {"target", "admin", "url"}
LISTENERS = {"listen", "metrics", "admin_listen"}
#: Paths a command writes, and whether each is a directory (else a file).
WRITTEN = {
    "serve_state": True,
    "decisions": False,
    "pins": False,
    "save": False,
    "output": False,
    "junit": False,
}

#: How long anything may take to happen on a busy machine before the test gives up: a bound
#: on waiting, never a measurement.
PATIENCE = 120


@dataclass(frozen=True)
class Invocation:
    """One way to run a command: its arguments, with ``{placeholders}`` for its inputs."""

    name: str
    argv: tuple[str, ...]
    #: The command only ends when stopped (serve).
    serves: bool = False
    #: It writes its output to a file it is given, nothing to stdout.
    to_file: bool = False

    @property
    def command(self) -> tuple[str, ...]:
        """The parser's path to the command (``("approvals", "list")``): the words that
        name a subcommand of the one before."""
        path: tuple[str, ...] = ()
        for word in self.argv:
            if word in _choices(PARSERS[path]):
                path = (*path, word)
        return path

    def action_at(self) -> int:
        """Where the innermost command's name is in ``argv``."""
        return max(i for i, w in enumerate(self.argv) if w in self.command)

    def placeholders(self) -> list[str]:
        return [m for a in self.argv for m in re.findall(r"\{(\w+)\}", a)]

    def fill(self, values: dict[str, Any]) -> list[str]:
        """The arguments with each placeholder's value; a list (a command line) stands for
        several arguments."""
        out: list[str] = []
        for arg in self.argv:
            whole = re.fullmatch(r"\{(\w+)\}", arg)
            if whole and isinstance(values[whole.group(1)], list):
                out += values[whole.group(1)]
            else:
                out.append(re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]), arg))
        return out


#: How long a command that asks a sidecar waits for one to answer, here: a server that is down
#: is one in every case, and the default (5 s) would only make each case slower.
WAIT = ("--wait", "1")


def _admin(*rest: str) -> tuple[str, ...]:
    return ("approvals", "--target", "{admin}", "--token-file", "{token}", *WAIT, *rest)


INVOCATIONS = [
    Invocation("validate", ("validate", "{policy}")),
    Invocation(
        "decide --policy",
        (
            "decide",
            "--policy",
            "{policy}",
            "--tool",
            "create-ami",
            "--grant",
            "a",
            "--repeat",
            "40",
        ),
    ),
    Invocation(
        "decide --target",
        ("decide", "--target", "{target}", *WAIT, "--tool", "list_images", "--repeat", "40"),
    ),
    Invocation("health", ("health", "--target", "{target}", *WAIT, "--timeout", str(PATIENCE))),
    Invocation(
        "serve",
        (
            "serve",
            "--policy",
            "{policy}",
            "--listen",
            "{listen}",
            "--metrics-listen",
            "{metrics}",
            "--admin-listen",
            "{admin_listen}",
            "--admin-tokens",
            "{tokens}",
            "--approval-webhook",
            "http://127.0.0.1:9/hook",
            "--approval-webhook-secret",
            "{secret}",
            "--state-dir",
            "{serve_state}",
            "--decision-log",
            "{decisions}",
        ),
        serves=True,
    ),
    Invocation("scan --file", ("scan", "--file", "{tools}", "--save", "{save}")),
    Invocation("scan --url", ("scan", "--url", "{url}", "--timeout", str(PATIENCE))),
    Invocation("scan -- COMMAND", ("scan", "--timeout", str(PATIENCE), "--", "{program}")),
    Invocation("suggest --file", ("suggest", "-q", "--file", "{tools}")),
    Invocation(
        "suggest -o", ("suggest", "-q", "--file", "{tools}", "-o", "{output}"), to_file=True
    ),
    Invocation("suggest --url", ("suggest", "-q", "--url", "{url}", "--timeout", str(PATIENCE))),
    Invocation("pin --file", ("pin", "--pins", "{pins}", "--file", "{tools}")),
    Invocation(
        "pin --url", ("pin", "--pins", "{pins}", "--url", "{url}", "--timeout", str(PATIENCE))
    ),
    Invocation("approvals list", _admin("--timeout", str(PATIENCE), "list")),
    Invocation("approvals show", _admin("--timeout", str(PATIENCE), "show", "{approval}")),
    Invocation("approvals approve", _admin("--timeout", str(PATIENCE), "approve", "{approval}")),
    Invocation("approvals deny", _admin("--timeout", str(PATIENCE), "deny", "{approval}")),
    Invocation("approvals watch", _admin("watch")),
    Invocation("log verify", ("log", "verify", "{log}")),
    Invocation("log digest", ("log", "digest", "--state-dir", "{state}", '{"name": "web"}')),
    Invocation("test", ("test", "{testfile}", "--junit", "{junit}")),
    Invocation(
        "explain",
        ("explain", "--policy", "{policy}", "--tool", "create-ami", "--grant", "a", "--json"),
    ),
    Invocation("import intercept", ("import", "intercept", "{intercept}")),
    Invocation(
        "import intercept -o",
        ("import", "intercept", "{intercept}", "-q", "-o", "{output}"),
        to_file=True,
    ),
]


def _parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def _has_actions(parser: argparse.ArgumentParser) -> bool:
    return any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)


def _choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return {
        name: sub
        for a in parser._actions
        if isinstance(a, argparse._SubParsersAction)
        for name, sub in a.choices.items()
    }


PARSERS = dict(_parsers(build_parser()))
LEAVES = sorted(path for path, p in PARSERS.items() if path and not _has_actions(p))


def test_every_command_has_an_invocation():
    assert sorted({i.command for i in INVOCATIONS}) == LEAVES


# --- the world the commands run in ------------------------------------------------------------


class World:
    """Every input a command may take, in working order: files, a sidecar with an admin
    listener, an MCP server; ``values()`` fills an invocation's placeholders."""

    def __init__(self, work: Path, sidecar: Sidecar, admin: str, mcp_url: str) -> None:
        self.work, self.sidecar, self.admin, self.mcp_url = work, sidecar, admin, mcp_url
        self.files = {
            "policy": str(work / "policy.json"),
            "tools": str(work / "tools.json"),
            "pins": str(work / "pins.json"),
            "token": str(work / "alice.token"),
            "tokens": str(work / "admin-tokens"),
            "secret": str(work / "webhook.secret"),
            "testfile": str(work / "policy.tests.yaml"),
            "log": str(work / "decisions.jsonl"),
            "intercept": str(ROOT / "tests" / "data" / "intercept" / "payments.yaml"),
        }
        self._opened = self._written = 0

    def approval(self) -> str:
        """A new pending approval's id."""
        self._opened += 1
        decision = self.sidecar.client.decide(
            "terminate_instances", grant="cli", arguments={"ids": [f"i-{self._opened}"]}
        )
        assert decision.approval_id, decision
        return decision.approval_id

    def values(self, invocation: Invocation) -> dict[str, Any]:
        out: dict[str, Any] = {**self.files}
        out["target"] = self.sidecar.target
        out["admin"] = self.admin
        out["url"] = self.mcp_url
        out["state"] = str(self.work / "state")
        # What a command writes: new places each time.
        self._written += 1
        for name, directory in WRITTEN.items():
            if name != "pins":
                written = self.work / "written" / f"{name}-{self._written}"
                out[name] = str(written if directory else written.with_suffix(".out"))
        out["program"] = [sys.executable, "-m", "mcp_server_time"]
        for name in ("listen", "metrics", "admin_listen"):
            out[name] = "127.0.0.1:0"
        if "approval" in invocation.placeholders():
            out["approval"] = self.approval()
        return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    work = tmp_path_factory.mktemp("cli-world")
    shutil.copy(EXAMPLES / "policy.json", work / "policy.json")
    (work / "tools.json").write_text(
        json.dumps({"tools": [{"name": "list_files", "description": "List the files."}]})
    )
    token = "t" * 32
    (work / "admin-tokens").write_text(f"alice {token}\n")
    (work / "alice.token").write_text(token + "\n")
    (work / "webhook.secret").write_text("s" * 32 + "\n")
    (work / "policy.tests.yaml").write_text(
        textwrap.dedent(
            """\
            policy: policy.json
            cases:
              - name: create-ami is allowed
                steps:
                  - call: {tool: create-ami, subject: {grant: a}}
                    expect: {verdict: ALLOW}
            """
        )
    )
    # A decision log, written whole: by a sidecar that has stopped.
    with Sidecar(
        EXAMPLES / "policy.json", "--decision-log", str(work / "decisions.jsonl")
    ) as logging_sidecar:
        logging_sidecar.client.decide("create-ami", grant="a")
    admin = f"127.0.0.1:{free_port()}"
    with (
        Sidecar(
            EXAMPLES / "policy.json",
            "--admin-listen",
            admin,
            "--admin-tokens",
            str(work / "admin-tokens"),
            "--state-dir",
            str(work / "state"),
        ) as sidecar,
        ExampleServer(work / "mcp-requests.jsonl") as mcp,
    ):
        yield World(work, sidecar, admin, mcp.url)


def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
    """The real ``toolgate`` in a process group of its own (as a terminal's job is)."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(
        [*TOOLGATE, *argv],
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        **kwargs,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=PATIENCE)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"still running after {PATIENCE}s:\n{err}") from None
    return proc.returncode, out or "", err or ""


def run(argv: list[str], **kwargs: Any) -> tuple[int, str, str]:
    return finish(spawn(argv, **kwargs))


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def assert_one_sentence(code: int, err: str, *, serves: bool = False) -> str:
    """A failure: a non-zero status, no traceback, and one line on stderr (for serve, whose
    stderr is its log: the last line). Returns that line."""
    assert code != 0, err
    assert "Traceback" not in err and "Exception" not in err, err
    said = lines(err)
    assert said, "nothing on stderr"
    if not serves:
        assert len(said) == 1, err
    return said[-1]


def cases(kinds: set[str], *, serves: bool | None = None) -> list[Any]:
    """(invocation, placeholder) for every placeholder of ``kinds`` of every invocation."""
    return [
        pytest.param(i, p, id=f"{i.name} {{{p}}}")
        for i in INVOCATIONS
        for p in dict.fromkeys(i.placeholders())
        if p in kinds and (serves is None or i.serves == serves)
    ]


# --- a file that does not exist ---------------------------------------------------------------


@pytest.mark.parametrize(("invocation", "placeholder"), cases(FILES))
def test_a_missing_file_is_one_line_naming_it(world: World, invocation, placeholder, tmp_path):
    values = world.values(invocation)
    missing = str(tmp_path / f"no-such-{placeholder}")
    values[placeholder] = missing
    code, _, err = run(invocation.fill(values))
    said = assert_one_sentence(code, err, serves=invocation.serves)
    assert missing in said, err
    assert code == exits.UNUSABLE, err


def test_a_missing_stdio_server_program_is_one_line(world: World, tmp_path):
    missing = str(tmp_path / "no-such-server")
    code, _, err = run(["scan", "--", missing])
    assert missing in assert_one_sentence(code, err)


# --- a server that is down --------------------------------------------------------------------


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port nothing listens on, and nothing can take meanwhile: bound, never listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.mark.parametrize(("invocation", "placeholder"), cases(SERVERS))
def test_a_server_that_is_down_is_one_line(world: World, invocation, placeholder):
    values = world.values(invocation)
    with closed_port() as port:
        address = f"127.0.0.1:{port}"
        values[placeholder] = f"http://{address}/mcp" if placeholder == "url" else address
        code, _, err = run(invocation.fill(values))
    said = assert_one_sentence(code, err)
    assert address in said or "UNAVAILABLE" in said, said
    assert code == exits.UNREACHABLE, said


# --- a port in use ----------------------------------------------------------------------------


@pytest.mark.parametrize(("invocation", "placeholder"), cases(LISTENERS))
def test_a_port_in_use_is_one_line_naming_it(world: World, invocation, placeholder):
    values = world.values(invocation)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        values[placeholder] = address
        code, _, err = run(invocation.fill(values))
    said = assert_one_sentence(code, err, serves=True)
    assert address in said and "in use" in said, err
    assert code == exits.UNUSABLE, err


# --- a path that cannot be written -------------------------------------------------------------


def unwritable(kind: str, directory: bool, work: Path) -> str:
    """A path of ``kind`` where a command cannot write what ``directory`` says it writes."""
    work.mkdir(parents=True, exist_ok=True)
    a_file, a_directory = work / "a-file", work / "a-directory"
    a_file.write_text("x\n")
    a_directory.mkdir(exist_ok=True)
    if kind == "under a file":
        return str(a_file / "x")
    if kind == "the other kind":
        return str(a_file if directory else a_directory)
    # Read-only: root writes through any mode bits, not into sysfs.
    if os.geteuid() == 0:
        return f"/sys/toolgate-test-{os.urandom(4).hex()}/x"
    read_only = work / "read-only"
    read_only.mkdir(exist_ok=True)
    read_only.chmod(0o555)
    return str(read_only / "x")


@pytest.mark.parametrize("kind", ["under a file", "the other kind", "read-only"])
@pytest.mark.parametrize(("invocation", "placeholder"), cases(set(WRITTEN)))
def test_a_path_that_cannot_be_written_is_one_line_naming_it(
    world: World, invocation, placeholder, kind, tmp_path
):
    values = world.values(invocation)
    bad = unwritable(kind, WRITTEN[placeholder], tmp_path)
    values[placeholder] = bad
    code, _, err = run(invocation.fill(values))
    said = assert_one_sentence(code, err, serves=invocation.serves)
    assert bad in said or str(Path(bad).parent) in said, err
    assert code == exits.UNUSABLE, err


@pytest.mark.parametrize(("invocation", "placeholder"), cases(set(WRITTEN)))
def test_a_path_whose_directory_is_missing_is_made(world: World, invocation, placeholder, tmp_path):
    values = world.values(invocation)
    path = tmp_path / "missing" / "parents" / "x"
    values[placeholder] = str(path)
    if not invocation.serves:
        code, _, err = run(invocation.fill(values))
        assert "Traceback" not in err, err
        assert path.exists(), err
        return
    proc = spawn(invocation.fill(values))
    try:
        deadline = time.monotonic() + PATIENCE
        while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.exists(), proc.poll()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        code, _, err = finish(proc)
    assert code == 0 and "Traceback" not in err, err


# --- SIGTERM while starting -------------------------------------------------------------------


#: When the SIGTERM is sent: as soon as something starting makes appears, or after a delay
#: (the delays spread it over imports, the policy, and the listeners).
MOMENTS = ["state directory made", "decision log made"] + [f"{n * 0.2:.1f}s" for n in range(8)]


@pytest.mark.parametrize("moment", MOMENTS)
def test_a_sigterm_at_any_moment_of_starting_stops_cleanly(moment, tmp_path):
    """A pod deleted as it starts: whenever SIGTERM lands, serve exits 0 with no traceback and
    leaves no temporary state directory; or it came before serve began, met the default
    action, and nothing had been made."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    decisions = tmp_path / "decisions.log"
    argv = ["serve", "--policy", str(EXAMPLES / "policy.json")]
    argv += ["--listen", f"127.0.0.1:{free_port()}", "--metrics-listen", "127.0.0.1:0"]
    argv += ["--drain", "0", "--decision-log", str(decisions)]
    proc = spawn(argv, env={**os.environ, "TMPDIR": str(scratch)})
    made = {
        "state directory made": lambda: any(scratch.iterdir()),
        "decision log made": decisions.exists,
    }.get(moment)
    if made is None:
        time.sleep(float(moment.removesuffix("s")))
    else:
        deadline = time.monotonic() + PATIENCE
        while not made() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
    os.killpg(proc.pid, signal.SIGTERM)
    code, _, err = finish(proc)
    assert "Traceback" not in err, err
    if code == -signal.SIGTERM:
        assert made is None and not decisions.exists() and not any(scratch.iterdir()), err
    else:
        assert code == exits.OK, err
        assert not list(scratch.glob("toolgate-state-*")), err


# --- Ctrl-C -----------------------------------------------------------------------------------


class Blocker:
    """An input that holds the command up until the test has sent SIGINT."""

    value: Any  # what the placeholder becomes

    def reached(self) -> bool:
        """Whether the command is now waiting on this input."""
        raise NotImplementedError

    def release(self) -> None:
        """Let a read that a signal does not interrupt (one in Rust) return."""

    def close(self) -> None:
        pass


class Fifo(Blocker):
    """A named pipe: opening it blocks until a writer comes, and reading it until one writes
    or closes. The writer opens once the command has opened it, and never writes."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.value = str(path)
        self._writer: int | None = None

    def reached(self) -> bool:
        try:
            # Succeeds only once a reader has the pipe open.
            self._writer = os.open(self.value, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return False
        return True

    def release(self) -> None:
        if self._writer is not None:
            os.close(self._writer)
            self._writer = None

    def close(self) -> None:
        self.release()


class Silent(Blocker):
    """A TCP server that accepts connections and never says anything."""

    def __init__(self, url: bool) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen()
        self._socket.setblocking(False)
        address = f"127.0.0.1:{self._socket.getsockname()[1]}"
        self.value = f"http://{address}/mcp" if url else address
        self._accepted: list[socket.socket] = []

    def reached(self) -> bool:
        try:
            conn, _ = self._socket.accept()
        except BlockingIOError:
            return False
        self._accepted.append(conn)
        return True

    def close(self) -> None:
        for conn in self._accepted:
            conn.close()
        self._socket.close()


class MuteProgram(Blocker):
    """A stdio server that starts, says so in a file, and never answers."""

    def __init__(self, work: Path) -> None:
        self._started = work / "started"
        code = (
            f"import pathlib, sys; pathlib.Path({str(self._started)!r}).touch(); sys.stdin.read()"
        )
        self.value = [sys.executable, "-c", code]  # type: ignore[assignment]

    def reached(self) -> bool:
        return self._started.exists()


def blocker(placeholder: str, work: Path) -> Blocker:
    if placeholder in FILES:
        return Fifo(work / f"fifo-{placeholder}")
    if placeholder in SERVERS:
        return Silent(url=placeholder == "url")
    assert placeholder == "program", placeholder
    return MuteProgram(work)


def interrupt(argv: list[str], block: Blocker) -> tuple[int, str, str]:
    """Run ``argv``, wait until it waits on ``block``, press Ctrl-C. A FIFO where a file is
    read whole is refused at once instead (a regular file only: it never waits on it)."""
    proc = spawn(argv)
    try:
        deadline = time.monotonic() + PATIENCE
        while not block.reached():
            if proc.poll() is not None:
                out, err = proc.communicate()
                if isinstance(block, Fifo) and "not a regular file" in err:
                    return proc.returncode, out, err
                raise AssertionError(f"exited with {proc.returncode} before waiting:\n{err}")
            assert time.monotonic() < deadline, "never came to wait on its input"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGINT)
        block.release()
        return finish(proc)
    finally:
        block.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize(("invocation", "placeholder"), cases(FILES | SERVERS | {"program"}))
def test_ctrl_c_while_waiting_is_one_line(world: World, invocation, placeholder, tmp_path):
    values = world.values(invocation)
    block = blocker(placeholder, tmp_path)
    values[placeholder] = block.value
    code, _, err = interrupt(invocation.fill(values), block)
    if "not a regular file" in err:
        said = assert_one_sentence(code, err, serves=invocation.serves)
        assert code == exits.UNUSABLE and str(block.value) in said, err
        return
    if invocation.serves and placeholder != "policy":
        # Read once serve has taken SIGINT as its signal to stop: it stops when it can, with
        # an error of the file if reading it failed, never a traceback.
        assert "Traceback" not in err, err
        return
    said = assert_one_sentence(code, err, serves=invocation.serves)
    assert code == 130, err
    assert said == f"toolgate {' '.join(invocation.command)}: interrupted", err


def test_ctrl_c_ends_approvals_watch_its_only_way_out(world: World):
    """``approvals watch`` streams until stopped: Ctrl-C, once it has shown the pending
    approvals, ends it with a sentence."""
    world.approval()
    invocation = next(i for i in INVOCATIONS if i.name == "approvals watch")
    proc = spawn(invocation.fill(world.values(invocation)))
    try:
        assert proc.stdout is not None
        lines_read: list[str] = []
        reader = threading.Thread(target=lambda: lines_read.append(proc.stdout.readline()))
        reader.start()
        reader.join(PATIENCE)  # a bound on waiting for the first row, not a measurement
        assert lines_read and lines_read[0].startswith("apr_"), lines_read
        os.killpg(proc.pid, signal.SIGINT)
        code, _, err = finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert (code, lines(err)) == (130, ["toolgate approvals watch: interrupted"])


# --- a closed stdout --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "invocation",
    [pytest.param(i, id=i.name) for i in INVOCATIONS if not i.serves and not i.to_file],
)
def test_a_closed_stdout_ends_the_command_quietly(world: World, invocation):
    """``toolgate decide ... | head -1``: the reader has gone before the command writes. The
    command stops as a program killed by SIGPIPE would (141), saying nothing."""
    values = world.values(invocation)
    read, write = os.pipe()
    os.close(read)
    try:
        argv = invocation.fill(values)
        if invocation.name == "approvals watch":
            world.approval()  # something to show
        code, _, err = run(argv, stdout=write)
    finally:
        os.close(write)
    assert "Traceback" not in err and "Exception" not in err, err
    assert (code, err) == (141, ""), err


def test_a_closed_stdout_does_not_stop_serve(world: World, tmp_path):
    """serve writes decisions to stdout with ``--decision-log -``: a reader that went away
    costs those lines (counted as dropped), not the sidecar."""
    read, write = os.pipe()
    os.close(read)
    try:
        with Sidecar(EXAMPLES / "policy.json", "--decision-log", "-", stdout=write) as sidecar:
            for _ in range(3):
                assert sidecar.client.decide("create-ami", grant="a").verdict == "ALLOW"
            assert sidecar.alive
        assert sidecar.returncode == 0, sidecar.stderr
        assert "Traceback" not in sidecar.stderr
    finally:
        os.close(write)


# --- an optional package that is not installed ------------------------------------------------

#: Makes the packages of the ``scan`` extra impossible to import, as if not installed.
WITHOUT_SCAN_EXTRA = """\
import importlib.abc, sys

class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {"mcp", "anyio", "httpx2"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
"""


@pytest.mark.parametrize(
    "invocation", [pytest.param(i, id=i.name) for i in INVOCATIONS if not i.serves]
)
def test_without_the_scan_extra(world: World, invocation, tmp_path):
    """Only reading a server's tools needs the scan extra: those commands say so in one
    line, naming what to install; every other command works as before."""
    (tmp_path / "sitecustomize.py").write_text(WITHOUT_SCAN_EXTRA)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    if invocation.name == "approvals watch":
        pytest.skip("streams until stopped (its Ctrl-C has a test of its own)")
    if invocation.name == "approvals list":
        world.approval()  # something to list, whichever tests ran before
    values = world.values(invocation)
    code, out, err = run(invocation.fill(values), env=env)
    needs_sdk = invocation.name in {"scan --url", "scan -- COMMAND", "suggest --url", "pin --url"}
    if needs_sdk:
        said = assert_one_sentence(code, err)
        assert "pip install 'toolgate[scan]'" in said, said
    else:
        assert (code, "Traceback" in err) == (0, False), err
        assert Path(values["output"]).read_text() if invocation.to_file else out


#: A Python built without some of its own modules (as a Python built without OpenSSL's or
#: SQLite's headers is): importing them fails.
WITHOUT_STDLIB_MODULE = """\
import importlib.abc, sys

class _NotBuilt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, _NotBuilt())
"""


@pytest.mark.parametrize("module", ["_ssl", "_sqlite3"])
def test_a_python_without_a_standard_module_serve_needs(module, tmp_path):
    """Said as what it is, one sentence naming the module, not as a package to reinstall."""
    (tmp_path / "sitecustomize.py").write_text(WITHOUT_STDLIB_MODULE.format(module=module))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    argv = ["serve", "--policy", str(EXAMPLES / "policy.json"), "--listen", "127.0.0.1:0",
            "--metrics-listen", "off"]  # fmt: skip
    code, _, err = run(argv, env=env)
    said = assert_one_sentence(code, err, serves=True)
    assert f"built without its standard {module.lstrip('_')!r} module" in said, said
    assert "reinstall" not in said


# --- a mistyped option ------------------------------------------------------------------------


#: Values that parse, for the placeholders whose option checks its value.
DUMMY = {
    **{p: "127.0.0.1:1" for p in SERVERS | LISTENERS},
    "url": "http://127.0.0.1:1/mcp",
    "approval": "apr_" + "0" * 32,
}


def _typo(option: str) -> str:
    """``--policy`` → ``--plolicy``: one letter doubled and moved, matching no option."""
    name = option[2:]
    return f"--{name[0]}{name[1:2]}{name}"[: len(option) + 2]


def _typo_cases() -> list[Any]:
    out = []
    for invocation in INVOCATIONS:
        parser = PARSERS[invocation.command]
        for action in parser._actions:
            longs = [s for s in action.option_strings if s.startswith("--") and s != "--help"]
            if longs:
                out.append(pytest.param(invocation, longs[0], id=f"{invocation.name} {longs[0]}"))
    return out


@pytest.mark.parametrize(("invocation", "option"), _typo_cases())
def test_a_mistyped_option_is_reported_by_its_command(
    invocation, option, capsys: pytest.CaptureFixture[str]
):
    typo = _typo(option)
    parser = PARSERS[invocation.command]
    known = {s for a in parser._actions for s in a.option_strings}
    assert not any(k.startswith(typo) for k in known), typo  # not an abbreviation
    argv = invocation.fill({p: DUMMY.get(p, "x") for p in invocation.placeholders()})
    where = invocation.action_at() + 1  # right after the command's name
    with pytest.raises(SystemExit) as exit_:
        main([*argv[:where], typo, "x", *argv[where:]])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    prog = f"toolgate {' '.join(invocation.command)}"
    assert err.startswith(f"usage: {prog} "), err
    assert lines(err)[-1].startswith(f"{prog}: error: unrecognized arguments: {typo}"), err
    assert "Traceback" not in err


def test_a_mistyped_option_names_the_option_meant(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        main(["serve", "--polcy", "examples/policy.json"])
    err = capsys.readouterr().err
    assert lines(err) == [
        "usage: toolgate serve [options] ...; 'toolgate serve --help' lists them",
        "toolgate serve: error: unrecognized arguments: --polcy examples/policy.json "
        "(did you mean --policy?)",
    ]


# --- options before or after the action -------------------------------------------------------


def _placement_cases() -> list[Any]:
    out = []
    for path, parser in PARSERS.items():
        if not path or not _has_actions(parser):
            continue
        (actions,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        for option in parser._actions:
            if not option.option_strings or isinstance(option, argparse._HelpAction):
                continue
            for name in actions.choices:
                out.append(pytest.param(path, option, name, id=f"{path} {name} {option.dest}"))
    return out


@pytest.mark.parametrize(("path", "option", "action"), _placement_cases())
def test_an_option_is_taken_before_or_after_the_action(path, option, action):
    """``approvals --json list`` and ``approvals list --json`` are the same command."""
    flag = option.option_strings[-1]
    given = [] if option.nargs == 0 else ["127.0.0.1:1" if "target" in option.dest else "7"]
    rest = ["apr_1"] if action in ("show", "approve", "deny") else []
    before = build_parser().parse_args([*path, flag, *given, action, *rest])
    after = build_parser().parse_args([*path, action, *rest, flag, *given])
    assert getattr(before, option.dest) == getattr(after, option.dest)
    assert getattr(after, option.dest) != option.default
    # And what is not given keeps its default either way.
    plain = build_parser().parse_args([*path, action, *rest])
    assert getattr(plain, option.dest) == option.default


# --- examples/mcp_call.py ---------------------------------------------------------------------


def test_mcp_call_to_a_proxy_that_is_down_is_one_line():
    with closed_port() as port:
        done = subprocess.run(
            [sys.executable, str(MCP_CALL), f"http://127.0.0.1:{port}/mcp", "create-ami"],
            capture_output=True,
            text=True,
            timeout=PATIENCE,
        )
    said = assert_one_sentence(done.returncode, done.stderr)
    assert f"127.0.0.1:{port}" in said, said
    assert done.returncode == exits.UNREACHABLE, said


def test_mcp_call_ctrl_c_is_one_line(tmp_path):
    block = Silent(url=True)
    proc = subprocess.Popen(
        [sys.executable, str(MCP_CALL), block.value, "create-ami"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + PATIENCE
        while not block.reached():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGINT)
        code, _, err = finish(proc)
    finally:
        block.close()
    assert (code, lines(err)) == (130, ["mcp_call.py: interrupted"]), err
