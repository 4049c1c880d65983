"""The ``toolgate`` command line: serve decisions, try them, validate policies. Each command
is a module of this folder; this one puts them together."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import threading
from collections.abc import Sequence

from toolgate import __version__
from toolgate.cli import exits
from toolgate.cli.parser import Parser


def version() -> str:
    """``toolgate 0.2.0``, and the source revision it was built from when known."""
    from toolgate._core import __revision__

    return f"toolgate {__version__}" + (f" ({__revision__[:12]})" if __revision__ else "")


#: Each command, as typed, and the module of this folder that defines it (its
#: ``add_command``), in the order ``toolgate --help`` lists them.
COMMANDS = {
    "validate": "validate",
    "decide": "decide",
    "health": "health",
    "serve": "serve",
    # Reading a server's tools, classifying them, a starter policy.
    "scan": "scan",
    "suggest": "suggest",
    "pin": "pin",
    "approvals": "approvals",
    "log": "decision_log",
    # Writing policies: test files of cases, the trace of one decision, importing Intercept's.
    "test": "policy_tests",
    "explain": "explain",
    "import": "import_policy",
}


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser for the arguments ``argv``. When they start with a command's name, only
    that command is loaded: a sidecar lives for weeks, and the other commands' imports
    (protobuf's JSON, the scanner, the policy tools) would hold ~5 MiB of it for nothing.
    Anything else (``--help``, no command, a mistyped one) loads every command, so help and
    errors list them all. Loaded here, inside main()'s handling of Ctrl-C, not when the
    console script imports this module."""
    named = [argv[0]] if argv and argv[0] in COMMANDS else list(COMMANDS)
    parser = Parser(
        prog="toolgate",
        description="Decide whether an AI agent's MCP tool calls may run: serve decisions to a "
        "proxy, try them, check policies. 'toolgate COMMAND --help' lists a command's options.",
    )
    parser.add_argument("--version", action="version", version=version())
    # Not required: a bare `toolgate` prints this help (main()).
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in named:
        importlib.import_module(f"toolgate.cli.{COMMANDS[name]}").add_command(sub)
    return parser


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of command ``name`` alone (``serve``'s: the owner of its options, from
    which its reference page and the Helm chart's schema are made)."""
    top = build_parser([name])
    (sub,) = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[name]


#: Python packages of the optional extras, and the extra that installs each (the MCP SDK
#: and what it is used with, for reading servers' tools).
EXTRAS = {"mcp": "scan", "anyio": "scan", "httpx2": "scan", "pydantic": "scan"}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` names. Whatever stops it early is one line on stderr and an
    exit status (``exits``), never a traceback: Ctrl-C, a reader that closed our stdout, a
    sidecar that never answered, a package the command needs that is not installed."""
    name = "toolgate"
    try:
        words = sys.argv[1:] if argv is None else list(argv)
        parser = build_parser(words)
        args = parser.parse_args(words)
        # The words as given: a command whose options also come from elsewhere (serve's
        # --config and environment) tells which ones the command line gave.
        args.words = words
        if args.command is None:
            parser.print_help()
            return 0
        name = args.command_name
        return int(args.run(args))
    except KeyboardInterrupt:
        _forget_stdout()
        _quiet_threads()
        print(f"{name}: interrupted", file=sys.stderr)
        return exits.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`toolgate decide ... | head -1`): nothing more to say to it.
        _forget_stdout()
        return exits.CLOSED_OUTPUT
    except ConnectionError as err:
        # A sidecar that never answered within --wait (toolgate.client.NotListening).
        print(f"{name}: {err}", file=sys.stderr)
        return exits.UNREACHABLE
    except OSError as err:
        # A path no command said more of: the file and what the system said, no traceback.
        where = f"{err.filename}: " if err.filename else ""
        print(f"{name}: {where}{err.strerror or err}", file=sys.stderr)
        return exits.UNUSABLE
    except ModuleNotFoundError as err:
        top = (err.name or "").partition(".")[0]
        if top in sys.stdlib_module_names:
            # A Python built without one of its own modules (ssl, sqlite3 need their libraries).
            module = top.lstrip("_")
            print(
                f"{name}: this Python was built without its standard {module!r} module, "
                f"which toolgate needs: use a Python that has it (import {module})",
                file=sys.stderr,
            )
            return exits.UNUSABLE
        extra = EXTRAS.get(top)
        how = (
            f"which toolgate's '{extra}' extra installs: pip install 'toolgate[{extra}]'"
            if extra
            else "which toolgate depends on: reinstall toolgate"
        )
        print(f"{name}: needs the Python package {top!r}, {how}", file=sys.stderr)
        return exits.UNUSABLE


def _quiet_threads() -> None:
    """Say nothing of an exception in another thread from here on: a library's thread (gRPC's,
    watching a channel being closed) may fail while the interrupted process ends, and its
    traceback, cut short by the exit, is not the user's business."""
    threading.excepthook = lambda args: None


def _forget_stdout() -> None:
    """Point stdout at /dev/null, so that what is still buffered for a closed pipe is not
    written at exit (which would print an exception of its own)."""
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
