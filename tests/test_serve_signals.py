"""SIGTERM and Ctrl-C while ``toolgate serve`` starts, at each of its steps: the start stops,
what it made for the run (a temporary state directory) is removed, a second signal changes
nothing, and the handlers that were there before are put back. The signal is sent to this
process from inside each step (the step wrapped), so it lands at that step every time, not
by timing; tests/test_cli_failures.py sends them to a real process from outside."""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLES
from toolgate._core import SidecarSettings
from toolgate.cli import exits
from toolgate.sidecar import serve
from toolgate.sidecar.approvals.runtime import StateDir
from toolgate.sidecar.options import ServeOptions

#: The steps of a start, in order, each as the name serve calls it by.
STEPS = ["load_policy", "StateDir", "Sidecar", "_announce"]
SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}
HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def signalled(step: Callable[..., Any], signum: int, times: int = 1) -> Callable[..., Any]:
    """``step``, with ``signum`` sent to this process ``times`` in the middle of it."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        made = step(*args, **kwargs)
        for _ in range(times):
            os.kill(os.getpid(), signum)
        return made

    return wrapped


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where a temporary state directory is made; the logging serve sets up is left alone."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(serve.logs, "configure", lambda *_: None)
    return tmp_path


def options() -> ServeOptions:
    return ServeOptions(
        policy=EXAMPLES / "policy.json",
        sidecar=SidecarSettings(listen="127.0.0.1:0"),
        metrics_listen=None,
        drain=0,
    )


@pytest.mark.parametrize("times", [1, 2])
@pytest.mark.parametrize("name", SIGNALS)
@pytest.mark.parametrize("step", STEPS)
def test_a_signal_at_any_step_of_the_start_stops_it_and_leaves_nothing(
    scratch: Path, monkeypatch: pytest.MonkeyPatch, step: str, name: str, times: int
):
    signum = SIGNALS[name]
    monkeypatch.setattr(serve, step, signalled(getattr(serve, step), signum, times))
    before = {s: signal.getsignal(s) for s in HANDLED}
    if signum == signal.SIGINT:
        with pytest.raises(KeyboardInterrupt):
            serve.serve(options())
    else:
        assert serve.serve(options()) == exits.OK
    assert not list(scratch.glob("toolgate-state-*"))
    assert {s: signal.getsignal(s) for s in HANDLED} == before


def test_a_second_signal_during_the_cleanup_does_not_cut_it_short(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(serve, "Sidecar", signalled(serve.Sidecar, signal.SIGTERM))
    remove = StateDir.remove_if_temporary
    monkeypatch.setattr(StateDir, "remove_if_temporary", signalled(remove, signal.SIGTERM, times=2))
    assert serve.serve(options()) == exits.OK
    assert not list(scratch.glob("toolgate-state-*"))


def test_handlers_are_put_back_when_the_start_fails(scratch: Path):
    before = {s: signal.getsignal(s) for s in HANDLED}
    refused = ServeOptions(policy=EXAMPLES / "policy.json", metrics_listen="not an address")
    with pytest.raises(ValueError):
        serve.serve(refused)
    assert {s: signal.getsignal(s) for s in HANDLED} == before


def test_the_start_notes_a_signal_once_it_has_made_something():
    starting = serve.Starting()
    with pytest.raises(serve.StoppedWhileStarting):
        starting.handle(signal.SIGTERM, None)
    starting.handle(signal.SIGTERM, None)  # the second changes nothing
    noted = serve.Starting()
    noted.making = True
    noted.handle(signal.SIGINT, None)
    noted.handle(signal.SIGTERM, None)
    with pytest.raises(KeyboardInterrupt):
        noted.check()
