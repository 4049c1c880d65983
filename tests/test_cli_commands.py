"""The command line loads the command it runs, not every command: ``toolgate serve`` holds
none of the authoring tools' imports for its life, while ``--help`` and a mistyped command
still list every command."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
from toolgate.cli.main import COMMANDS, build_parser, main

#: Modules only the authoring and client commands need.
OTHERS = ("toolgate.authoring", "toolgate.scanner", "google.protobuf.json_format")


def commands(parser: argparse.ArgumentParser) -> list[str]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(sub.choices)


@pytest.mark.parametrize("name", COMMANDS)
def test_a_command_given_loads_that_command_under_its_own_name(name):
    # The table's name is the one the command's module gives itself, or it would never run.
    assert commands(build_parser([name, "--help"])) == [name]


@pytest.mark.parametrize("argv", [[], ["--help"], ["--version"], ["serv"], ["-x", "serve"]])
def test_anything_else_loads_every_command_in_the_table_order(argv):
    assert commands(build_parser(argv)) == list(COMMANDS)


def test_a_mistyped_command_is_told_every_choice(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["serv"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'serv'" in err
    assert all(name in err for name in COMMANDS)


def loaded_after(argv: list[str], also: str = "") -> set[str]:
    """The modules of OTHERS a fresh Python holds after parsing argv (and importing also)."""
    code = (
        "import sys\n"
        "from toolgate.cli.main import build_parser\n"
        f"build_parser({argv!r}).parse_args({argv!r})\n"
        + (f"import {also}\n" if also else "")
        + f"print('\\n'.join(m for m in sys.modules if m.startswith({OTHERS!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_serve_loads_none_of_the_other_commands_imports():
    # The sidecar's own modules included: what `toolgate serve` runs.
    assert loaded_after(["serve"], also="toolgate.sidecar.serve") == set()


def test_the_others_are_loaded_when_every_command_is():
    # The check above can fail: the full parser does load them.
    assert loaded_after([]) >= {"toolgate.authoring", "toolgate.scanner"}
