"""Every example in README.md runs as written, and prints what the README shows.

- ``sh`` blocks: a line ``$ COMMAND`` is followed by the output the README shows for it (up to
  a blank line); other lines are commands shown without output, which must succeed. Commands
  run with bash in the repository's root, ``toolgate`` being this environment's. Installing
  (``pip install``, a venv) and the project's scripts (``bash scripts/...``, which run this very
  suite) are not run here: the installed package is what the tests use.
- ``toolgate serve`` is started for real (on free ports: the addresses the README uses,
  127.0.0.1:50051 and :9464, are rewritten to them in the commands and code that follow).
- ``python`` blocks are doctests; ``json`` blocks are policies, which must load.

Shown output is compared by shape: ``...`` stands for anything, numbers for any number (a
retry time differs from run to run), JSON lines key by key (``...}``: more keys follow).
"""

from __future__ import annotations

import doctest
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import toolgate
from sidecar import Sidecar

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

#: The addresses the README's examples use, as ``toolgate serve`` defaults them.
GRPC_DEFAULT, METRICS_DEFAULT = "127.0.0.1:50051", "127.0.0.1:9464"

#: Commands not run here, and why.
NOT_RUN = {
    r"(python3? -m )?pip install\b": "installs the package: the tests use the one installed",
    r"python3? -m venv\b": "makes a virtual environment",
    r"\. \S+/activate$": "enters a virtual environment",
    r"bash scripts/": "the project's scripts (scripts/test runs this suite)",
}


@dataclass
class Example:
    kind: str  # "sh", "python", "json"
    line: int  # where it starts in the README
    text: str
    shown: list[str] | None = field(default=None)  # sh: the output shown, if any

    @property
    def id(self) -> str:
        first = self.text.splitlines()[0] if self.text else ""
        return f"L{self.line} {first[:60]}"


def _fences(text: str) -> list[tuple[str, int, str]]:
    """(language, line of its first content line, content) of each fenced block."""
    out = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S):
        out.append((m.group(1), text.count("\n", 0, m.start(2)) + 1, m.group(2)))
    return out


def _sh_examples(start: int, body: str) -> list[Example]:
    lines = body.splitlines()
    # A backslash at the end continues the command on the next line.
    joined: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        if joined and joined[-1][1].endswith("\\"):
            joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + line.strip())
        else:
            joined.append((start + i, line))
    out: list[Example] = []
    prompted = any(line.startswith("$ ") for _, line in joined)
    current: Example | None = None
    for number, line in joined:
        if line.startswith("$ "):
            current = Example("sh", number, line[2:], shown=[])
            out.append(current)
        elif prompted:
            if not line.strip():
                current = None
            elif current is not None and current.shown is not None:
                current.shown.append(line)
        elif line.strip() and not line.lstrip().startswith("#"):
            out.append(Example("sh", number, line.strip()))
    return out


def readme_examples() -> list[Example]:
    out: list[Example] = []
    for kind, line, body in _fences(README.read_text()):
        if kind == "sh":
            out += _sh_examples(line, body)
        elif kind in ("python", "json"):
            out.append(Example(kind, line, body))
    return out


EXAMPLES = readme_examples()


def not_run(command: str) -> str | None:
    """Why ``command`` is not run here, or None."""
    return next((why for pattern, why in NOT_RUN.items() if re.match(pattern, command)), None)


def commands(example: Example) -> list[str]:
    """An example's commands, split at ``&&``."""
    return [part.strip() for part in example.text.split(" && ")]


# --- comparing output by shape ---------------------------------------------------------------

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _without_numbers(text: str) -> str:
    return _NUMBER.sub("N", text)


def _same_json_shape(shown: Any, got: Any, more: bool = False) -> bool:
    if isinstance(shown, dict):
        if not isinstance(got, dict):
            return False
        keys = list(got)
        if keys[: len(shown)] != list(shown) or (not more and len(keys) != len(shown)):
            return False
        return all(_same_json_shape(v, got[k]) for k, v in shown.items())
    if isinstance(shown, list):
        return isinstance(got, list) and all(
            _same_json_shape(s, g) for s, g in zip(shown, got, strict=False)
        )
    if isinstance(shown, bool) or shown is None:
        return shown == got
    if isinstance(shown, int | float):
        return isinstance(got, int | float) and not isinstance(got, bool)
    return isinstance(got, str) and _without_numbers(shown) == _without_numbers(got)


def same_shape(shown: str, got: str) -> bool:
    """Whether the line ``got`` is the line the README ``shown``, by shape."""
    if shown.startswith("{"):
        more = shown.endswith(", ...}")
        try:
            template = json.loads(shown[: -len(", ...}")] + "}" if more else shown)
            actual = json.loads(got)
        except ValueError:
            return False
        return _same_json_shape(template, actual, more)
    parts = [_NUMBER.sub("\0", re.escape(p)) for p in shown.split("...")]
    pattern = ".*".join(parts).replace("\0", _NUMBER.pattern)
    return re.fullmatch(pattern, got) is not None


@pytest.mark.parametrize(
    ("shown", "got", "same"),
    [
        ('{"a": 1, "b": "x 2s", ...}', '{"a": 5, "b": "x 3.5s", "c": null}', True),
        ('{"a": 1, "b": "x 2s"}', '{"a": 5, "b": "x 3.5s", "c": null}', False),
        ('{"a": "DENY", ...}', '{"a": "ALLOW"}', False),
        ('{"b": 1, "a": 2, ...}', '{"a": 2, "b": 1}', False),
        ("f: /x: bad ... (line 6)", "f: /x: bad window (line 16)", True),
        ("f: /x: bad ... (line 6)", "g: /x: bad window (line 6)", False),
        ("exit 1", "exit 0", True),  # a number is any number...
        ("exit 1", "exit", False),  # ...but it must be there
    ],
)
def test_shapes_are_compared_as_described(shown: str, got: str, same: bool):
    assert same_shape(shown, got) is same


# --- running them -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def addresses() -> Any:
    """The README's sidecar, started as its first ``toolgate serve`` says (on free ports), and
    the address rewrites that point the examples at it."""
    serves = [c for e in EXAMPLES if e.kind == "sh" for c in commands(e)]
    serves = [c for c in serves if c.startswith("toolgate serve")]
    if not serves:
        yield {}
        return
    args = shlex.split(serves[0])[2:]
    assert not {"--listen", "--metrics-listen"} & set(args), "rewrite the README's own ports"
    with Sidecar(None, *args) as sidecar:
        assert sidecar.metrics_port is not None
        yield {GRPC_DEFAULT: sidecar.target, METRICS_DEFAULT: f"127.0.0.1:{sidecar.metrics_port}"}


def rewrite(text: str, addresses: dict[str, str]) -> str:
    for readme, real in addresses.items():
        text = text.replace(readme, real)
    return text


def run(command: str) -> subprocess.CompletedProcess[str]:
    """``command`` in bash, in the repository's root, this environment's ``toolgate`` first on
    PATH; stdout and stderr together, as a terminal shows them."""
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    return subprocess.run(
        ["bash", "-c", f"export PATH={shlex.quote(path)}; {command}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )


SH = [e for e in EXAMPLES if e.kind == "sh"]
#: The shell examples run here: those with a command that is not in NOT_RUN.
RUN = [e for e in SH if any(not not_run(c) for c in commands(e))]


def test_the_readme_has_examples_of_each_kind():
    assert {e.kind for e in EXAMPLES} == {"sh", "python", "json"}
    assert any(e.shown for e in SH)
    # Every command is run here unless it is one of the known kinds that are not.
    skipped = [c for e in SH for c in commands(e) if not_run(c)]
    assert all(re.match(r"(pip|python|\.|bash scripts/)", c) for c in skipped), skipped


@pytest.mark.parametrize("example", RUN, ids=[e.id for e in RUN])
def test_command(example: Example, addresses: dict[str, str]):
    for command in commands(example):
        if not_run(command):
            continue
        if command.startswith("toolgate serve"):
            # Started by the `addresses` fixture, as written: it answers.
            done = run(f"toolgate health --target {addresses[GRPC_DEFAULT]}")
            assert done.returncode == 0 and "SERVING" in done.stdout, done.stdout
            continue
        done = run(rewrite(command, addresses))
        if example.shown:
            got = done.stdout.splitlines()
            assert len(got) == len(example.shown), done.stdout
            for shown, line in zip(example.shown, got, strict=True):
                assert same_shape(shown, line), f"README shows\n  {shown}\nran\n  {line}"
        else:
            assert done.returncode == 0, done.stdout


PYTHON = [e for e in EXAMPLES if e.kind == "python"]


@pytest.mark.parametrize("example", PYTHON, ids=[e.id for e in PYTHON])
def test_python(example: Example, addresses: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(ROOT)
    parser = doctest.DocTestParser()
    test = parser.get_doctest(
        rewrite(example.text, addresses), {}, "README.md", str(README), example.line
    )
    assert test.examples, "a python block in the README should be a doctest (>>>)"
    out: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    result = runner.run(test, out=out.append)
    assert result.failed == 0, "".join(out)


JSON = [e for e in EXAMPLES if e.kind == "json"]


@pytest.mark.parametrize("example", JSON, ids=[e.id for e in JSON])
def test_json_policies_load(example: Example):
    toolgate.Policy.from_str(example.text, format="json")


def test_the_quickstart_policy_does_what_the_readme_says():
    """ "`create-ami` may run 30 times in any minute per grant; every other tool is denied.\""""
    (first, *_) = JSON
    engine = toolgate.Engine(json.loads(first.text), clock=toolgate.ManualClock(1000.0))
    codes = [engine.decide("create-ami", grant="alice").code for _ in range(31)]
    assert codes == ["ALLOWED"] * 30 + ["RATE_LIMITED"]
    assert engine.decide("create-ami", grant="bob").code == "ALLOWED"
    assert engine.decide("delete_image", grant="bob").code == "DEFAULT_DENY"
