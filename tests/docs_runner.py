"""Running the documentation's examples as a reader would: the shell blocks of a Markdown file,
in order, in one bash session, in a scratch directory, with real processes.

What a block is:

- A fenced block tagged ``sh`` is commands. In a block with ``$ `` prompts, each prompt line
  (and its ``\\`` continuations) is a command and the lines after it, up to the next prompt,
  the output the document shows for it; in a block without prompts, every line that is not a
  comment is a command (a heredoc's lines go with its command). Blocks tagged otherwise
  (``text`` for a synopsis, a diagram untagged) are not commands.
- An HTML comment on the line before a block says how it is run: none, run here;
  ``<!-- docs: packaging -->``, run by the packaging tests (podman, as root);
  ``<!-- docs: not run: REASON -->``, not run (a cluster, a registry), only parsed: each
  ``toolgate`` command by toolgate's own parser, each Envoy config by ``envoy --mode
  validate``, each other program's subcommands by their ``--help`` (a program the reason
  names, which this machine may not have, may be missing).

How it is run (``DocShell``): one ``bash`` for the whole document, as one terminal, in a
network namespace of its own (``unshare --net``: the documents' fixed ports, 50051, 9191,
10000..., are free there and nothing else on the machine sees them), in a scratch directory
holding the repository's top-level files (as links), ``toolgate`` and ``python`` being this
environment's. The commands run as one pasted script would: a command ending in ``&`` is
started as a job and the next command runs at once, with no wait for what the job serves to
listen, so a document waits for its servers itself where a reader would need to (toolgate's
clients wait for a sidecar that is starting: ``--wait``). A command that runs until stopped
(a server, ``approvals watch``) without ``&`` is let run until it listens or has printed what
the document shows, then stopped with Ctrl-C (SIGINT to its process group), as a reader
would. Installing (``pip``, a venv) and the project's test scripts are not run
(``NOT_RUN``): this environment is installed already.

Shown output is compared by shape (``same_output``): a line ``...`` stands for any number of
lines, ``...`` in a line for anything, a number for any number (a retry time differs from run
to run), a run of hex digits for any hex of that length (ids, digests, revisions), and a JSON
object key by key (``...}``: more keys follow). An id a document shows in one command's output
and then types in a later command (whole, or its first characters and ``…``) is typed as it
was printed in this run (``as_printed``), as a reader copies it.
"""

from __future__ import annotations

import contextlib
import doctest
import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: How long anything may take on a busy machine before the runner gives up: a bound on
#: waiting, never a measurement.
PATIENCE = 300.0

#: Commands not run here, and why.
NOT_RUN = {
    r"(python3? -m )?pip install\b": "installs packages: the tests use this environment's",
    r"python3? -m venv\b": "makes a virtual environment: the tests run in one",
    r"\. \S+/activate\b": "enters a virtual environment: the tests run in one",
    r"bash scripts/test(-packaging)?\b": "runs this very test suite",
}

SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}


@dataclass
class Command:
    line: int  # in the document
    text: str  # as bash is given it (continuations and heredocs included)
    shown: list[str] | None = None  # the output the document shows, if any

    @property
    def first(self) -> str:
        return self.text.splitlines()[0] if self.text else ""

    def not_run(self) -> str | None:
        """Why this command is not run here, or None."""
        return next((why for pattern, why in NOT_RUN.items() if re.match(pattern, self.text)), None)


@dataclass
class Block:
    doc: Path
    line: int  # of the block's first content line
    language: str
    text: str
    #: "run", "packaging" or "not run"
    mode: str = "run"
    reason: str = ""
    commands: list[Command] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT).as_posix()}:{self.line}"


_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
_DIRECTIVE = re.compile(r"<!--\s*docs:\s*(packaging|not run)(?::\s*(.*?))?\s*-->\s*$")


def blocks(doc: Path) -> list[Block]:
    """Every fenced block of ``doc``, with its directive and, for shell blocks, commands."""
    text = doc.read_text()
    out = []
    for m in _FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        directive = _DIRECTIVE.search(before)
        line = text.count("\n", 0, m.start(2)) + 1
        block = Block(doc, line, m.group(1), m.group(2))
        if directive:
            block.mode, block.reason = directive.group(1), directive.group(2) or ""
        if block.language in SHELL_LANGUAGES:
            block.commands = commands(block.text, line)
        out.append(block)
    return out


def _heredoc_end(line: str) -> str | None:
    m = re.search(r"<<-?\s*(['\"]?)(\w+)\1", line)
    return m.group(2) if m else None


def commands(body: str, first_line: int) -> list[Command]:
    lines = body.splitlines()
    prompted = any(line.startswith("$ ") for line in lines)
    out: list[Command] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        number = first_line + i
        if prompted and not line.startswith("$ "):
            if out and out[-1].shown is not None:
                out[-1].shown.append(line)
            i += 1
            continue
        if not prompted and (not line.strip() or line.lstrip().startswith("#")):
            i += 1
            continue
        text = line[2:] if prompted else line.strip()
        # Continuations, then a heredoc's lines, belong to the command.
        while text.endswith("\\") and i + 1 < len(lines):
            i += 1
            text += "\n" + lines[i]
        end = _heredoc_end(text)
        if end is not None:
            while i + 1 < len(lines):
                i += 1
                text += "\n" + lines[i]
                if lines[i].strip() == end:
                    break
        out.append(Command(number, text, [] if prompted else None))
        i += 1
    for c in out:
        if c.shown is not None:
            while c.shown and not c.shown[-1].strip():
                c.shown.pop()
    return out


# --- comparing output by shape ------------------------------------------------------------

#: A run of hex digits (with a digit and a letter: an id, a digest, a revision), or a number.
_TOKEN = re.compile(
    r"(?P<hex>(?<![0-9A-Za-z])(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}(?![0-9A-Za-z]))"
    r"|(?P<number>-?\d+(?:[.,]\d+)*)"
)
_ANY_NUMBER = r"-?\d+(?:[.,]\d+)*"

#: What a line the document shows stands for: the hex runs it shows, each as what was printed
#: in its place (a reader copies an id from one command's output into the next command).
Seen = dict[str, str]


def _line_pattern(shown: str) -> tuple[str, list[str]]:
    """A regex for the line, with a group for each hex run; and those runs, in order."""
    parts, runs = [], []
    for piece in shown.split("..."):
        out, at = [], 0
        for m in _TOKEN.finditer(piece):
            out.append(re.escape(piece[at : m.start()]))
            if m.group("hex"):
                out.append(f"([0-9a-f]{{{len(m.group())}}})")
                runs.append(m.group())
            else:
                out.append(_ANY_NUMBER)
            at = m.end()
        out.append(re.escape(piece[at:]))
        parts.append("".join(out))
    return ".*".join(parts), runs


def _merge(*seen: Seen | None) -> Seen | None:
    out: Seen = {}
    for s in seen:
        if s is None:
            return None
        for k, v in s.items():
            out.setdefault(k, v)
    return out


def _match_json(shown: Any, got: Any, more: bool = False) -> Seen | None:
    if isinstance(shown, dict):
        if not isinstance(got, dict):
            return None
        keys = iter(got)
        # The keys shown, in their order; with "...}", others may come between and after.
        in_order = all(k in keys for k in shown)
        if not in_order or (not more and list(got) != list(shown)):
            return None
        return _merge(*(_match_json(v, got[k]) for k, v in shown.items()))
    if isinstance(shown, list):
        if not isinstance(got, list):
            return None
        return _merge({}, *(_match_json(s, g) for s, g in zip(shown, got, strict=False)))
    if isinstance(shown, bool) or shown is None:
        return {} if shown == got else None
    if isinstance(shown, int | float):
        return {} if isinstance(got, int | float) and not isinstance(got, bool) else None
    return match_line(shown, got) if isinstance(got, str) else None


def match_line(shown: str, got: str) -> Seen | None:
    """What the line ``got`` printed in place of each hex run ``shown`` shows, if ``got`` is
    the line the document shows, by shape; None if it is not."""
    if shown.startswith("{") and not shown.endswith("...") and got.startswith("{"):
        more = shown.endswith(", ...}")
        try:
            template = json.loads(shown[: -len(", ...}")] + "}" if more else shown)
            actual = json.loads(got)
        except ValueError:
            pass
        else:
            return _match_json(template, actual, more)
    pattern, runs = _line_pattern(shown)
    m = re.fullmatch(pattern, got)
    if m is None:
        return None
    return _merge({}, *({run: value} for run, value in zip(runs, m.groups(), strict=True)))


def same_line(shown: str, got: str) -> bool:
    return match_line(shown, got) is not None


#: A line a terminal shows but no program prints: the echo of Ctrl-C.
ECHOED = {"^C"}


def match_output(shown: list[str], got: list[str]) -> Seen | None:
    """``match_line`` for lines: a shown line ``...`` matches any number of lines (fewest
    first)."""
    shown = [line for line in shown if line not in ECHOED]
    if not shown:
        return {} if not got else None
    if shown[0].strip() == "...":
        for i in range(len(got) + 1):
            found = match_output(shown[1:], got[i:])
            if found is not None:
                return found
        return None
    if not got:
        return None
    first = match_line(shown[0], got[0])
    return None if first is None else _merge(first, match_output(shown[1:], got[1:]))


def same_output(shown: list[str], got: list[str]) -> bool:
    return match_output(shown, got) is not None


_SHORTENED = re.compile(r"(?<![0-9A-Za-z])([0-9a-f]{4,})(…|\.\.\.)")


def as_printed(text: str, seen: Seen) -> str:
    """A command as a reader types it: every id shown before (in full, or its first
    characters and an ellipsis) as it was printed in this run."""
    for shown, printed in seen.items():
        text = text.replace(shown, printed)

    def shortened(m: re.Match[str]) -> str:
        owners = [(k, v) for k, v in seen.items() if k.startswith(m.group(1)) and k != m.group(1)]
        if len(owners) != 1:
            return m.group(0)
        return owners[0][1][: len(m.group(1))] + m.group(2)

    return _SHORTENED.sub(shortened, text)


# --- when a server is ready -----------------------------------------------------------------


def _option(words: list[str], name: str) -> str | None:
    for i, w in enumerate(words):
        if w == name and i + 1 < len(words):
            return words[i + 1]
        if w.startswith(name + "="):
            return w.split("=", 1)[1]
    return None


def _port(address: str) -> int | None:
    if address.startswith("unix:") or address == "off":
        return None
    return int(address.rpartition(":")[2])


def _toolgate_ports(words: list[str]) -> list[int]:
    from toolgate.cli.main import build_parser

    args = build_parser().parse_args(words[1:])
    ports = [_port(args.listen)]
    if args.metrics_listen:
        ports.append(_port(args.metrics_listen))
    if args.admin_tokens:
        ports.append(_port(args.admin_listen))
    return [p for p in ports if p]


def _envoy_ports(words: list[str], cwd: Path) -> list[int]:
    import yaml

    config = yaml.safe_load((cwd / (_option(words, "-c") or "")).read_text())
    addresses = [config["admin"]["address"]]
    addresses += [listener["address"] for listener in config["static_resources"]["listeners"]]
    return [a["socket_address"]["port_value"] for a in addresses if "socket_address" in a]


def listening_ports(text: str, cwd: Path) -> list[int] | None:
    """The TCP ports a server command listens on once it is ready, or None if this is not a
    command the runner knows to be a server."""
    words = shlex.split(text.replace("\\\n", " "), comments=True)
    if not words:
        return None
    program = Path(words[0]).name
    if program == "toolgate" and words[1:2] == ["serve"]:
        return _toolgate_ports(words)
    if program == "envoy" and "-c" in words and "--mode" not in words:
        return _envoy_ports(words, cwd)
    if program == "redis-server":
        return [int(_option(words, "--port") or 6379)]
    if program.startswith("python") and len(words) > 1 and _option(words, "--port"):
        return [int(_option(words, "--port") or 0)]
    return None


def runs_until_stopped(text: str) -> bool:
    """Whether the command serves or streams until it is stopped."""
    words = shlex.split(text.replace("\\\n", " "), comments=True)
    return bool(words) and (
        (Path(words[0]).name == "toolgate" and words[-1:] == ["watch"])
        or listening_ports(text, ROOT) is not None
    )


def _family(pid: int) -> set[int]:
    """``pid`` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        found.add(p)
        todo += children.get(p, [])
    return found


def _listening(pid: int) -> set[int]:
    """The TCP ports ``pid`` (or a process it started) listens on: its sockets in LISTEN
    state, not another process's on the same port."""
    inodes = set()
    for p in _family(pid):
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{p}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    ports = set()
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]:
                fields = row.split()
                if fields[3] == "0A" and fields[9] in inodes:
                    ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --- the shell -----------------------------------------------------------------------------


class DocFailure(AssertionError):
    pass


def _strip_comment(text: str) -> str:
    """``text`` without a trailing ``# comment`` (outside quotes), on its last line."""
    head, _, last = text.rpartition("\n")
    quote, out = "", []
    for i, ch in enumerate(last):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or last[i - 1].isspace()):
            break
        out.append(ch)
    stripped = "".join(out).rstrip()
    return f"{head}\n{stripped}" if head else stripped


def _namespace_command() -> list[str] | None:
    if shutil.which("unshare") is None:
        return None
    if os.geteuid() == 0:
        return ["unshare", "--net", "--"]
    return ["unshare", "--map-root-user", "--net", "--"]


def can_run_docs() -> str | None:
    """Why the documents cannot be run here, or None."""
    command = _namespace_command()
    if command is None:
        return "no unshare (util-linux)"
    done = subprocess.run([*command, "true"], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return f"cannot make a network namespace: {done.stderr.strip()}"
    if shutil.which("ip") is None:
        return "no ip (iproute2), to bring up the namespace's loopback"
    return None


@dataclass
class Outcome:
    command: Command
    status: int
    output: str


class DocShell:
    """One bash session in a network namespace of its own, in ``scratch``."""

    def __init__(
        self, scratch: Path, *, isolate_network: bool = True, env: dict[str, str] | None = None
    ) -> None:
        """``isolate_network``: in a network namespace of its own (else the machine's, for
        commands that need its network, such as image builds)."""
        self.scratch = scratch
        self.logs = scratch / ".docs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self._n = 0
        bin_dir = Path(sys.executable).parent
        env = {**os.environ, **(env or {}), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
        env.pop("VIRTUAL_ENV", None)
        command = _namespace_command() if isolate_network else []
        assert command is not None
        self._stderr = open(self.logs / "shell.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*command, "bash", "--noprofile", "--norc"],
            cwd=scratch,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        up = "ip link set lo up; " if isolate_network else ""
        self._send(f"set -m; {up}__rc() {{ return $1; }}; __status=0; echo __done__ 0")
        self._wait_done()
        self.jobs: list[tuple[Command, int, Path]] = []

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def _marker(self, kind: str, timeout: float = PATIENCE) -> int:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise DocFailure(f"no answer from the shell within {timeout:.0f}s") from None
        if line is None:
            raise DocFailure(f"the shell exited: {(self.logs / 'shell.log').read_text()}")
        got, _, value = line.partition(" ")
        assert got == kind, line
        return int(value)

    def _wait_done(self, timeout: float = PATIENCE) -> int:
        return self._marker("__done__", timeout)

    def run(self, command: Command, seen: Seen | None = None) -> Outcome:
        """Run one command as the document shows it (with the ids ``seen`` so far as they
        were printed), and wait as a reader would."""
        self._n += 1
        out = self.logs / f"{self._n:03d}.out"
        text = _strip_comment(as_printed(command.text.rstrip(), seen or {}))
        background = text.endswith("&") and not text.endswith("&&")
        if background:
            text = text[:-1].rstrip()
        # A simple command keeps its own words as its job's name (`kill %envoy`); anything
        # with its own redirections, pipes or lists goes in braces, run by this shell.
        simple = not re.search(r"[|;<>&\n]", text)
        braced = f"{{ {text}\n}} > {out} 2>&1 < /dev/null"
        target = f"{text} > {out} 2>&1 < /dev/null" if simple else braced
        self._send("__rc $__status")
        if background:
            # As pasted: the next command runs at once, whether or not the job listens yet.
            self._send(f'{target} &\necho "__pid__ $!"; echo "__done__ 0"')
            pid = self._marker("__pid__")
            self._wait_done()
            self.jobs.append((command, pid, out))
            return Outcome(command, 0, "")
        if runs_until_stopped(text):
            self._send(
                f'{target} &\n__pid=$!; echo "__pid__ $__pid"; wait $__pid; __status=$?; '
                'echo "__done__ $__status"'
            )
            pid = self._marker("__pid__")
            self._wait_ready(command, text, pid, out)
            # Done with it, as a reader is: Ctrl-C.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGINT)
            status = self._wait_done()
            return Outcome(command, status, out.read_text(errors="replace"))
        self._send(f'{braced}\n__status=$?; echo "__done__ $__status"')
        status = self._wait_done()
        return Outcome(command, status, out.read_text(errors="replace"))

    def _wait_ready(self, command: Command, text: str, pid: int, out: Path) -> None:
        ports = listening_ports(text, self.scratch)
        shown = [
            s for s in command.shown or [] if not s.endswith(": interrupted") and s not in ECHOED
        ]
        if ports is None and not shown:
            raise DocFailure(
                f"line {command.line}: the docs runner does not know when {command.first!r} "
                "is ready: show its output, or teach listening_ports() about it"
            )
        deadline = time.monotonic() + PATIENCE
        while True:
            if ports is not None and set(ports) <= _listening(pid):
                return
            printed = out.read_text(errors="replace") if out.exists() else ""
            if ports is None and len(printed.splitlines()) >= len(shown):
                return
            if not _alive(pid):
                raise DocFailure(
                    f"line {command.line}: {command.first!r} exited before it was ready:\n"
                    + out.read_text(errors="replace")[-3000:]
                )
            if time.monotonic() > deadline:
                raise DocFailure(f"line {command.line}: {command.first!r} never became ready")
            time.sleep(0.05)

    def job_logs(self) -> str:
        return "\n".join(
            f"--- {c.first} (line {c.line})\n{log.read_text(errors='replace')[-2000:]}"
            for c, _, log in self.jobs
        )

    def close(self) -> None:
        """Stop every job (SIGTERM, then SIGKILL), then the shell; and anything else left in
        its network namespace."""
        namespace = _netns(self.proc.pid)
        for _, pid, _ in self.jobs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for _, pid, _ in self.jobs) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in _in_netns(namespace):
            if pid != self.proc.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(BrokenPipeError, OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


def _netns(pid: int) -> str | None:
    with contextlib.suppress(OSError):
        # The shell itself is unshare's child once unshare has exec'd bash: same pid.
        return os.readlink(f"/proc/{pid}/ns/net")
    return None


def _in_netns(namespace: str | None) -> list[int]:
    if namespace is None or namespace == os.readlink("/proc/self/ns/net"):
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "ns" / "net") == namespace:
                    found.append(int(entry.name))
    return found


def scratch_directory(where: Path) -> Path:
    """A directory holding the repository's top-level files and folders (as links), where
    a document's commands run and write what they write."""
    where.mkdir(parents=True, exist_ok=True)
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for top in sorted({t.split("/", 1)[0] for t in tracked}):
        (where / top).symlink_to(ROOT / top)
    return where


# --- blocks that are not commands --------------------------------------------------------


def run_doctest(path: Path) -> str | None:
    """Run the doctest in ``path`` (a Python block's text); the report if it failed."""
    parser = doctest.DocTestParser()
    test = parser.get_doctest(path.read_text(), {}, path.name, str(path), 0)
    out: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    result = runner.run(test, out=out.append)
    return "".join(out) if result.failed else None


if __name__ == "__main__":  # python tests/docs_runner.py FILE: the doctest in FILE
    report = run_doctest(Path(sys.argv[1]))
    if report:
        print(report)
    sys.exit(1 if report else 0)
