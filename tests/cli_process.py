"""Running ``toolgate`` as a process in tests: its status and output, a process stopped at
its first traceback, and files written for it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sidecar import PATIENCE

CLI = [sys.executable, "-m", "toolgate.cli"]


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
