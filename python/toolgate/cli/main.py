"""The ``toolgate`` command line: serve decisions, try them, validate policies. Each command
is a module of this folder; this one puts them together."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from toolgate import __version__
from toolgate.cli.parser import Parser


def version() -> str:
    """``toolgate 0.1.0``, and the source revision it was built from when known."""
    from toolgate._core import __revision__

    return f"toolgate {__version__}" + (f" ({__revision__[:12]})" if __revision__ else "")


def build_parser() -> argparse.ArgumentParser:
    # The commands' modules (protobuf, the policy tools...) are loaded here, inside main()'s
    # handling of Ctrl-C, not when the console script imports this module.
    from toolgate.cli import (
        approvals,
        decide,
        decision_log,
        explain,
        health,
        import_policy,
        pin,
        policy_tests,
        scan,
        serve,
        suggest,
        validate,
    )

    parser = Parser(
        prog="toolgate",
        description="Decide whether an AI agent's MCP tool calls may run: serve decisions to a "
        "proxy, try them, check policies. 'toolgate COMMAND --help' lists a command's options.",
    )
    parser.add_argument("--version", action="version", version=version())
    # Not required: a bare `toolgate` prints this help (main()).
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    validate.add_command(sub)
    decide.add_command(sub)
    health.add_command(sub)
    serve.add_command(sub)
    # Reading a server's tools, classifying them, a starter policy.
    scan.add_command(sub)
    suggest.add_command(sub)
    pin.add_command(sub)
    approvals.add_command(sub)
    decision_log.add_command(sub)
    # Writing policies: test files of cases, the trace of one decision, importing Intercept's.
    policy_tests.add_command(sub)
    explain.add_command(sub)
    import_policy.add_command(sub)
    return parser


#: Python packages of the optional extras, and the extra that installs each (the MCP SDK
#: and what it is used with, for reading servers' tools).
EXTRAS = {"mcp": "scan", "anyio": "scan", "httpx2": "scan", "pydantic": "scan"}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` names. Whatever stops it early is one line on stderr and an
    exit status, never a traceback: Ctrl-C (130), a reader that closed our stdout (141, as
    SIGPIPE would), a package the command needs that is not installed (1)."""
    name = "toolgate"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        name = args.command_name
        return int(args.run(args))
    except KeyboardInterrupt:
        _forget_stdout()
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`toolgate decide ... | head -1`): nothing more to say to it.
        _forget_stdout()
        return 141
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
            return 1
        extra = EXTRAS.get(top)
        how = (
            f"which toolgate's '{extra}' extra installs: pip install 'toolgate[{extra}]'"
            if extra
            else "which toolgate depends on: reinstall toolgate"
        )
        print(f"{name}: needs the Python package {top!r}, {how}", file=sys.stderr)
        return 1


def _forget_stdout() -> None:
    """Point stdout at /dev/null, so that what is still buffered for a closed pipe is not
    written at exit (which would print an exception of its own)."""
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
