"""RESULTS.md records a release build's figures only (bench/harness ``publish``): scripts/test
installs the extension built fast (opt-level 1), and a bench run on it prints its figures but
writes none; ``$TOOLGATE_EXE`` names another build, which its caller vouches for."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import harness as h
from toolgate import _core


@pytest.fixture
def results(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n")
    monkeypatch.setattr(h, "RESULTS", path)
    monkeypatch.setattr(h, "TARGET", tmp_path / "target")
    monkeypatch.delenv("TOOLGATE_EXE", raising=False)
    return path


def test_the_extension_says_how_it_was_optimised():
    assert _core.OPT_LEVEL in {"0", "1", "2", "3", "s", "z"}


@pytest.mark.parametrize("level", ["0", "1", "2", "s"])
def test_figures_of_a_build_not_released_are_printed_and_not_written(
    level, results, monkeypatch, capsys
):
    monkeypatch.setattr(_core, "OPT_LEVEL", level)
    with pytest.raises(SystemExit) as refused:
        h.publish("x", "| a | 1 |", "x.py", "## X", write=True, figures={"a": 1})
    assert f"opt-level {level}" in str(refused.value)
    assert "| a | 1 |" in capsys.readouterr().out
    assert results.read_text() == "# Results\n"


def test_a_release_builds_figures_are_written(results, monkeypatch):
    monkeypatch.setattr(_core, "OPT_LEVEL", "3")
    h.publish("x", "| a | 1 |", "x.py", "## X", write=True)
    assert "| a | 1 |" in results.read_text()


def test_another_build_named_by_toolgate_exe_is_its_callers_word(results, monkeypatch):
    monkeypatch.setattr(_core, "OPT_LEVEL", "1")
    monkeypatch.setenv("TOOLGATE_EXE", "/elsewhere/toolgate")
    h.publish("x", "| a | 1 |", "x.py", "## X", write=True)
    assert "| a | 1 |" in results.read_text()
