"""The documentation is executable: every shell block of README.md, docs/*.md and the deploy
READMEs that a reader is meant to run is run, in order, in a scratch directory, with real
processes, and prints what the document shows where it shows it (tests/docs_runner.py says
how). Blocks that cannot run here say so (``<!-- docs: not run: REASON -->``) and are parsed:
each toolgate command by toolgate's parser, other programs' subcommands by their --help.
Blocks marked ``<!-- docs: packaging -->`` run with the packaging tests.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import uuid
from itertools import dropwhile
from pathlib import Path

import pytest
import toolgate
import yaml
from docs_runner import (
    ROOT,
    SHELL_LANGUAGES,
    Block,
    Command,
    DocShell,
    Seen,
    as_printed,
    blocks,
    can_run_docs,
    match_output,
    same_line,
    same_output,
    scratch_directory,
)
from toolgate.cli.main import build_parser

DOCS = [
    ROOT / "README.md",
    *sorted(ROOT.glob("docs/*.md")),
    *sorted(ROOT.glob("deploy/**/README.md")),
    ROOT / "bench" / "README.md",
]
IDS = [d.relative_to(ROOT).as_posix() for d in DOCS]
ALL_BLOCKS = [b for d in DOCS for b in blocks(d)]


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


# --- comparing by shape -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shown", "got", "same"),
    [
        ('{"a": 1, "b": "x 2s", ...}', '{"a": 5, "b": "x 3.5s", "c": null}', True),
        ('{"a": 1, "b": "x 2s"}', '{"a": 5, "b": "x 3.5s", "c": null}', False),
        ('{"a": "DENY", ...}', '{"a": "ALLOW"}', False),
        ('{"b": 1, "a": 2, ...}', '{"a": 2, "b": 1}', False),
        ('{"a": 1, "c": 2, ...}', '{"a": 1, "b": 0, "c": 2, "d": 3}', True),
        ("f: /x: bad ... (line 6)", "f: /x: bad window (line 16)", True),
        ("f: /x: bad ... (line 6)", "g: /x: bad window (line 6)", False),
        ("exit 1", "exit 0", True),  # a number is any number...
        ("exit 1", "exit", False),  # ...but it must be there
        ("OK 48,213 lines", "OK 7 lines", True),
        ("apr_0988d98d3019a8007b1e3795ac07a661  PENDING", "apr_" + "ab12" * 8 + "  PENDING", True),
        ("revision ac40c01b2736efba", "revision 0123456789abcdef", True),
        ("revision ac40c01b2736efba", "revision 0123456789abcde", False),  # hex of that length
    ],
)
def test_lines_are_compared_by_shape(shown: str, got: str, same: bool):
    assert same_line(shown, got) is same


def test_ids_shown_are_typed_as_printed():
    """A reader copies an id from one command's output into the next: so does the runner."""
    shown = ["apr_0988d98d3019a8007b1e3795ac07a661  PENDING"]
    printed = ["apr_" + "1234abcd" * 4 + "  PENDING"]
    seen = match_output(shown, printed)
    assert seen == {"0988d98d3019a8007b1e3795ac07a661": "1234abcd" * 4}
    assert (
        as_printed("approve apr_0988d98d… --reason x", seen) == "approve apr_1234abcd… --reason x"
    )
    assert as_printed("show apr_0988d98d3019a8007b1e3795ac07a661", seen) == (
        "show apr_" + "1234abcd" * 4
    )
    assert as_printed("show apr_ffff…", seen) == "show apr_ffff…"


def test_a_line_of_dots_stands_for_any_lines():
    assert same_output(["a", "...", "z"], ["a", "z"])
    assert same_output(["a", "...", "z"], ["a", "b", "c", "z"])
    assert not same_output(["a", "...", "z"], ["a", "b"])
    assert not same_output(["a"], ["a", "b"])


def test_blocks_are_read_as_described(tmp_path: Path):
    doc = tmp_path / "d.md"
    doc.write_text(
        "```sh\n$ echo a \\\n    b\na b\n\n$ true\n```\n\n"
        "<!-- docs: not run: needs a cluster -->\n```sh\nkubectl apply -k .\n# a comment\n"
        "cat > f <<'EOF'\nx\n# kept\nEOF\n```\n\n```text\nnot commands\n```\n"
    )
    first, second, third = blocks(doc)
    assert [(c.text, c.shown) for c in first.commands] == [
        ("echo a \\\n    b", ["a b"]),
        ("true", []),
    ]
    assert (second.mode, second.reason) == ("not run", "needs a cluster")
    assert [c.text for c in second.commands] == [
        "kubectl apply -k .",
        "cat > f <<'EOF'\nx\n# kept\nEOF",
    ]
    assert third.commands == []


def test_every_shell_block_is_run_or_says_why_not():
    """No shell block is left out silently: it runs, runs with the packaging tests, or says
    why it cannot run here."""
    shell = [b for b in ALL_BLOCKS if b.language in SHELL_LANGUAGES]
    assert shell
    for block in shell:
        assert block.mode in ("run", "packaging", "not run"), block.id
        if block.mode == "not run":
            assert block.reason, f"{block.id}: say why it is not run"
    # The blocks run here are most of them.
    assert sum(b.mode == "run" for b in shell) > 2 * sum(b.mode != "run" for b in shell)


# --- running them -----------------------------------------------------------------------------


def check(block: Block, command: Command, status: int, output: str) -> Seen:
    """That a command did what the document says; what it printed for the ids shown."""
    where = f"{block.doc.relative_to(ROOT)}:{command.line}: {command.first}"
    got = output.rstrip("\n").splitlines() if output.strip() else []
    assert "Traceback" not in output, f"{where}\n{output[-3000:]}"
    if command.shown:
        seen = match_output(command.shown, got)
        assert seen is not None, (
            f"{where}\nthe document shows\n  "
            + "\n  ".join(command.shown)
            + "\nit printed\n  "
            + "\n  ".join(got)
        )
        return seen
    assert status == 0, f"{where}: exit {status}\n{output[-3000:]}"
    return {}


def run_document(
    doc: Path, mode: str, tmp_path: Path, *, isolate: bool = True, env: dict[str, str] | None = None
) -> int:
    """Run ``doc``'s blocks of ``mode`` in one shell; the number of commands run."""
    scratch = scratch_directory(tmp_path / "scratch")
    shell = DocShell(scratch, isolate_network=isolate, env=env)
    ran = 0
    seen: Seen = {}
    try:
        for block in blocks(doc):
            if block.mode != mode:
                continue
            if block.language in SHELL_LANGUAGES:
                for command in block.commands:
                    if command.not_run():
                        continue
                    outcome = shell.run(command, seen)
                    try:
                        for shown, printed in check(
                            block, command, outcome.status, outcome.output
                        ).items():
                            seen.setdefault(shown, printed)
                    except AssertionError as err:
                        raise AssertionError(f"{err}\n{shell.job_logs()}") from None
                    ran += 1
            elif block.language == "python" and ">>>" in block.text and mode == "run":
                # A doctest, run by the reader's Python in the same place (the servers the
                # document started are there).
                path = scratch / ".docs" / f"block-{block.line}.py"
                path.write_text(block.text)
                command = Command(block.line, f"python tests/docs_runner.py {path}")
                outcome = shell.run(command)
                assert outcome.status == 0, f"{block.id}\n{outcome.output}\n{shell.job_logs()}"
                ran += 1
    finally:
        shell.close()
    return ran


RUN = [pytest.param(d, id=i) for d, i in zip(DOCS, IDS, strict=True)]


@pytest.mark.parametrize("doc", RUN)
def test_the_document_runs_as_written(doc: Path, tmp_path: Path):
    if not any(b.mode == "run" and (b.commands or ">>>" in b.text) for b in blocks(doc)):
        pytest.skip("no commands to run")
    reason = can_run_docs()
    if reason:
        unavailable(reason)
    assert run_document(doc, "run", tmp_path) > 0


@pytest.mark.packaging
@pytest.mark.parametrize(
    "doc", [d for d in RUN if any(b.mode == "packaging" for b in blocks(d.values[0]))]
)
def test_the_documents_packaging_blocks_run(doc: Path, tmp_path: Path):
    if os.geteuid() != 0:
        unavailable("the packaging blocks run podman as root")
    # The pod's names are this test's (another checkout may play the same manifests).
    env = {"TOOLGATE_KUBE_PLAY_PREFIX": f"d{uuid.uuid4().hex[:6]}-"}
    assert run_document(doc, "packaging", tmp_path, isolate=False, env=env) > 0


# --- blocks that are not run here are parsed ------------------------------------------------

NOT_RUN = [
    pytest.param(b, c, id=f"{b.id} {c.first[:50]}")
    for b in ALL_BLOCKS
    if b.mode == "not run"
    for c in b.commands
    if not c.not_run()
]

#: Where the programs are: this environment's first (toolgate, envoy), then the machine's.
PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"

#: kubectl's options that take a value (the words after them are not subcommands).
VALUED = {"-n", "--namespace", "-k", "-f", "-o", "-l", "-c", "-t", "--context"}


def simple_commands(text: str) -> list[list[str]]:
    """The simple commands of a command line, as words."""
    words = shlex.split(text.replace("\\\n", " "), comments=True, posix=True)
    out, current = [], []
    for w in [*words, ";"]:
        if w in ("&&", "||", ";", "|", "&"):
            if current:
                out.append(current)
            current = []
        elif w.endswith("&") and not w.endswith("&&"):
            current.append(w[:-1])
            out.append(current)
            current = []
        else:
            current.append(w)
    # Leading NAME=VALUE words set the command's environment.
    out = [list(dropwhile(lambda w: re.fullmatch(r"[A-Za-z_]\w*=.*", w), c)) for c in out]
    return [c for c in out if c]


def subcommands(words: list[str]) -> list[str]:
    """The subcommand words of ``PROGRAM [flags] SUB [SUB] ARGS...``."""
    rest, skip, out = words[1:], False, []
    for w in rest:
        if skip:
            skip = False
            continue
        if w.startswith("-"):
            skip = w in VALUED
            continue
        if not re.fullmatch(r"[a-z][a-z-]*", w) or len(out) == 2:
            break
        out.append(w)
    return out


@pytest.mark.parametrize(("block", "command"), NOT_RUN)
def test_commands_not_run_here_are_parsed(block: Block, command: Command):
    for words in simple_commands(command.text):
        program = Path(words[0]).name
        if program == "toolgate":
            build_parser().parse_args(words[1:])  # exits on anything it does not take
        elif program == "cd":
            assert (ROOT / words[1]).is_dir(), words
        elif program == "bash" and words[1].startswith("scripts/"):
            assert (ROOT / words[1]).is_file(), words
        elif program.startswith("python"):
            script = ROOT / words[1]
            assert script.is_file(), words
            done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True)
            assert done.returncode == 0, done.stderr
        elif program == "envoy":
            # A config is checked as Envoy would load it, without starting.
            config = words[words.index("-c") + 1]
            done = subprocess.run(
                [shutil.which("envoy", path=PATH) or "envoy", "--mode", "validate", "-c", config],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr[-2000:]
        else:
            path = shutil.which(words[0], path=PATH)
            if path is None and program in block.reason:
                continue  # what the block needs and this machine lacks, as it says
            assert path, f"{block.id}: {words[0]} is not installed here"
            sub = subcommands(words)
            done = subprocess.run(
                [path, *sub, "--help"], capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, f"{words[0]} {' '.join(sub)} --help: {done.stderr}"


# --- other blocks -------------------------------------------------------------------------------

JSON = [
    pytest.param(b, id=b.id)
    for b in ALL_BLOCKS
    # A policy, whole: a shortened one ("...") is an excerpt.
    if b.language == "json" and '"version"' in b.text and not re.search(r"\.\.\.|…", b.text)
]


@pytest.mark.parametrize("block", JSON)
def test_json_policies_load(block: Block):
    toolgate.Policy.from_str(block.text, format="json")


PYTHON = [pytest.param(b, id=b.id) for b in ALL_BLOCKS if b.language == "python"]


@pytest.mark.parametrize("block", PYTHON)
def test_python_blocks_compile(block: Block):
    """Doctests run with their document; every other Python block must at least compile
    (awaits at the top level allowed, as in an asyncio REPL)."""
    text = block.text
    if ">>>" in text:
        import doctest

        text = "\n".join(e.source for e in doctest.DocTestParser().get_examples(text))
    compile(text, block.id, "exec", flags=0x2000)  # ast.PyCF_ALLOW_TOP_LEVEL_AWAIT


YAML = [pytest.param(b, id=b.id) for b in ALL_BLOCKS if b.language in ("yaml", "yml")]


@pytest.mark.parametrize("block", YAML)
def test_yaml_blocks_parse(block: Block):
    assert list(yaml.safe_load_all(block.text.replace("...", "x")))


# --- the README's install ---------------------------------------------------------------------


def test_the_readme_installs_in_a_virtual_environment_and_names_rust():
    """Debian and Ubuntu refuse `pip install` outside a virtual environment: the README makes
    and enters one before installing, names the Rust version the build needs (the workspace's
    rust-version), and shows the build's progress."""
    (first, *_) = [b for b in blocks(ROOT / "README.md") if b.language == "sh"]
    texts = [c.text for c in first.commands]
    pip = next(i for i, t in enumerate(texts) if re.match(r"pip install", t))
    before = " && ".join(texts[:pip])
    assert "python3 -m venv .venv" in before and ". .venv/bin/activate" in before
    assert " -v " in f" {texts[pip]} "
    rust = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["rust-version"]
    assert f"Rust {rust} or newer" in first.text
    assert f"Rust {rust} or newer" in (ROOT / "README.md").read_text().split("## Quickstart")[0]


def test_the_quickstart_policy_does_what_the_readme_says():
    """ "`create-ami` may run 30 times in any minute per grant; every other tool is denied.\""""
    (first,) = [b for b in blocks(ROOT / "README.md") if b.language == "json"][:1]
    engine = toolgate.Engine(json.loads(first.text), clock=toolgate.ManualClock(1000.0))
    codes = [engine.decide("create-ami", grant="alice").code for _ in range(31)]
    assert codes == ["ALLOWED"] * 30 + ["RATE_LIMITED"]
    assert engine.decide("create-ami", grant="bob").code == "ALLOWED"
    assert engine.decide("delete_image", grant="bob").code == "DEFAULT_DENY"
