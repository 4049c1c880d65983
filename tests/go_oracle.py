"""How a Go MCP server reads a request body: tests/go_oracle (stdlib only), built once per test
session by ``build_go_oracle`` and driven as one long-lived subprocess by ``GoOracle``.

``GoOracle.read(body)`` answers with the oracle's reading (see tests/go_oracle/main.go):
``ok``, ``error``, ``kind`` (``request``, ``notification``, ``response``, ``invalid``),
``jsonrpc``, ``id``, ``method``, ``name`` (tools/call only), ``arguments`` (the map its handler
gets, or None), ``arguments_type``, ``arguments_bound`` (the arguments as a handler binding them
to structs sees them: keys that fold alike are one field with the last value), ``has_params``,
``ambiguous`` and ``ambiguous_where``.
``GoOracle.folds()`` lists every ``(rune, fold)`` pair that encoding/json matches as one.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

#: The oracle's source.
GO_ORACLE = Path(__file__).resolve().parent / "go_oracle"


def go_executable() -> str | None:
    """``go`` on PATH, else the official tarball's /usr/local/go/bin/go, else None."""
    found = shutil.which("go")
    if found is None and Path("/usr/local/go/bin/go").exists():
        found = "/usr/local/go/bin/go"
    return found


def _go(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``go args...`` in tests/go_oracle. Fails, never skips, without Go: CI has it, and a
    skipped oracle would pass every differential test."""
    go = go_executable()
    if go is None:
        raise AssertionError(
            "no `go` executable: the Go toolchain (1.22 or newer) is needed to build "
            f"{GO_ORACLE}, the differential tests' model of a Go MCP server; install it and "
            "put `go` on PATH"
        )
    env = {
        **os.environ,
        # Stdlib only: nothing to download and no C compiler needed.
        "CGO_ENABLED": "0",
        "GOTOOLCHAIN": "local",
        # No VCS stamping: the work tree may not be a repository git trusts.
        "GOFLAGS": "-buildvcs=false",
    }
    # Go needs a build cache; a stable one makes every later session's build near-instant.
    env.setdefault("GOCACHE", str(Path.home() / ".cache" / "go-build"))
    done = subprocess.run(
        [go, *args], cwd=GO_ORACLE, env=env, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        command = " ".join(["go", *args])
        raise AssertionError(f"{command} in {GO_ORACLE} failed:\n{done.stdout}{done.stderr}")
    return done


def build_go_oracle(out_dir: Path) -> Path:
    """``go build`` tests/go_oracle into ``out_dir``; the executable's path."""
    binary = out_dir / "go_oracle"
    _go("build", "-o", str(binary), ".")
    return binary


def run_go_oracle_tests() -> str:
    """``go test`` tests/go_oracle: its fold table and struct binding checked against
    encoding/json itself. Its output; AssertionError if a test fails."""
    return _go("test", "-count=1", ".").stdout


class GoOracle:
    """The oracle at ``binary``, started once; ``read`` is one line out and one line back."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self._proc = subprocess.Popen(
            [str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin: IO[bytes] = self._proc.stdin
        self._stdout: IO[bytes] = self._proc.stdout

    def read(self, body: bytes) -> dict[str, Any]:
        """How the Go server reads ``body``."""
        self._stdin.write(base64.b64encode(body) + b"\n")
        self._stdin.flush()
        line = self._stdout.readline()
        if not line:
            code = self._proc.wait(timeout=10)
            raise AssertionError(f"the Go oracle exited ({code}) reading {body!r}")
        reading: dict[str, Any] = json.loads(line)
        return reading

    def folds(self) -> list[tuple[int, int]]:
        """Every ``(rune, fold)`` with ``fold != rune`` that encoding/json matches as equal."""
        done = subprocess.run(
            [str(self.binary), "-folds"], capture_output=True, text=True, check=True, timeout=60
        )
        pairs: list[tuple[int, int]] = []
        for line in done.stdout.splitlines():
            rune, fold = line.split()
            pairs.append((int(rune), int(fold)))
        return pairs

    def close(self) -> None:
        if self._proc.poll() is None:
            self._stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._stdout.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
