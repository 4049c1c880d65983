"""``toolgate validate``: check policy files: ``FILE: ok`` on stdout for each valid one, one
line per error on stderr (and notes of limits a client can dodge, also on stderr)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from toolgate import Policy, PolicyError
from toolgate.sidecar.envoy_authz import CheckSettings, format_subject_source, parse_subject_source


def _run(args: argparse.Namespace) -> int:
    verified = []
    for option, text in (("--agent-from", args.agent_from), ("--session-from", args.session_from)):
        try:
            verified.append(parse_subject_source(text) is not None)
        except ValueError as err:
            print(f"toolgate validate: {option}: {err}", file=sys.stderr)
            return 2
    failed = False
    for path in args.files:
        try:
            policy = Policy.from_file(path)
        except PolicyError as err:
            failed = True
            for e in err.errors:
                pointer = e.pointer or "/"
                where = f" (line {e.line})" if e.line is not None else ""
                print(f"{path}: {pointer}: {e.message}{where}", file=sys.stderr)
        else:
            if not args.quiet:
                # Not errors: limits, marks and conditions a client can dodge by what it says.
                for note in policy.self_asserted(*verified):
                    print(f"{path}: {note.pointer}: note: {note.message}", file=sys.stderr)
                print(f"{path}: ok")
    return 1 if failed else 0


def add_command(sub: Any) -> None:
    """Register ``toolgate validate`` on the CLI's subparsers."""
    validate = sub.add_parser(
        "validate",
        help="check policy files; one line per error: FILE: /pointer: message (and notes of "
        "limits a client can dodge by the session or agent id it sends)",
    )
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.add_argument(
        "-q", "--quiet", action="store_true", help="print nothing for valid files"
    )
    validate.add_argument(
        "--agent-from",
        default=format_subject_source(CheckSettings().agent_claim),
        metavar="SOURCE",
        help="where the sidecar takes the agent from, as `toolgate serve --agent-from`: with "
        "'jwt:CLAIM' (a verified token), limits and conditions on the agent are not pointed "
        "out as ones a client can dodge (default: %(default)s)",
    )
    validate.add_argument(
        "--session-from",
        default=format_subject_source(CheckSettings().session_claim),
        metavar="SOURCE",
        help="where the sidecar takes the session from, as `toolgate serve --session-from` "
        "(default: %(default)s)",
    )
    validate.set_defaults(run=_run)
