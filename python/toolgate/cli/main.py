"""The ``toolgate`` command line: serve decisions, try them, validate policies. Each command
is a module of this folder; this one puts them together."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from toolgate import __version__
from toolgate.cli import (
    approvals,
    decide,
    decision_log,
    explain,
    health,
    import_policy,
    policy_tests,
    scan,
    serve,
    suggest,
    validate,
)
from toolgate.cli.parser import Parser


def version() -> str:
    """``toolgate 0.1.0``, and the source revision it was built from when known."""
    from toolgate._core import __revision__

    return f"toolgate {__version__}" + (f" ({__revision__[:12]})" if __revision__ else "")


def build_parser() -> argparse.ArgumentParser:
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
    approvals.add_command(sub)
    decision_log.add_command(sub)
    # Writing policies: test files of cases, the trace of one decision, importing Intercept's.
    policy_tests.add_command(sub)
    explain.add_command(sub)
    import_policy.add_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return int(args.run(args))
