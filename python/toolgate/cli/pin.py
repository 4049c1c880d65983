"""``toolgate pin``: record the definitions of a server's tools, as reviewed, in a pins file
that a policy's ``pins`` holds the server to; with ``--diff``, say what changed since.

toolgate pin --pins pins.json --server crm --url http://127.0.0.1:3001/mcp
toolgate pin --pins pins.json --diff --stdio 'python -m my_server'   # exit 1 when changed
toolgate pin --pins pins.json --tool send_email --file tools.json    # re-pin one tool
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from toolgate._core import inert
from toolgate.authoring import pins
from toolgate.cli import exits
from toolgate.cli.scan import add_source, failed, read_source
from toolgate.scanner.scan import ScanError


def _report(changes: list[pins.Change]) -> str:
    lines = []
    for c in changes:
        if c.kind == "same":
            continue
        what = {
            "changed": "changed since it was pinned",
            "new": "listed, not pinned",
            "gone": "pinned, no longer listed",
        }[c.kind]
        lines.append(f"{inert(c.name)}: {what}")
        lines.extend(c.lines)
    same = sum(c.kind == "same" for c in changes)
    lines.append(f"{same} of {len(changes)} tools as pinned")
    return "\n".join(lines) + "\n"


def _run(args: argparse.Namespace) -> int:
    path = Path(args.pins)
    try:
        listed = pins.by_name(read_source(args, "toolgate pin").listed)
        document = pins.read(path)
        changes = pins.compare(pins.section(document, args.server), listed)
        if args.diff:
            sys.stdout.write(_report(changes))
            return exits.FAILED if any(c.kind != "same" for c in changes) else exits.OK
        pins.write(path, pins.pinned(document, args.server, listed, args.tool))
    except (ScanError, pins.PinsError, argparse.ArgumentTypeError) as err:
        return failed(err)
    counts = {k: sum(c.kind == k for c in changes) for k in ("same", "changed", "new", "gone")}
    if args.tool:
        counts = {k: sum(c.kind == k and c.name in args.tool for c in changes) for k in counts}
    whose = f"server {inert(args.server)}" if args.server else "calls naming no server"
    print(
        f"{path}: pins of {whose}: {counts['new']} added, {counts['changed']} changed, "
        f"{counts['gone']} dropped, {counts['same']} unchanged"
    )
    return 0


def add_command(sub: Any) -> None:
    """Register ``toolgate pin`` on the CLI's subparsers."""
    pin = sub.add_parser(
        "pin",
        help="record a server's tool definitions as reviewed (or, --diff, what changed since)",
        description="Record a digest and a copy of each tool a server lists in a pins file, "
        "which a policy's pins names: a tool listed unlike its pin is hidden and its calls "
        "denied until it is pinned again. With --diff, show what changed instead (exit 1 "
        "when something did).",
    )
    add_source(pin)
    pin.add_argument("--pins", required=True, metavar="FILE", help="the pins file to write")
    pin.add_argument(
        "--server",
        metavar="ID",
        help="the server's id as calls name it (Envoy's route, agentgateway's target); "
        "without it, the pins of calls that name no server",
    )
    pin.add_argument(
        "--tool",
        action="append",
        default=[],
        metavar="NAME",
        help="pin (or drop) only this tool, after reviewing its change (repeatable)",
    )
    pin.add_argument("--diff", action="store_true", help="write nothing; show what changed")
    pin.set_defaults(run=_run)
