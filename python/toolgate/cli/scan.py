"""``toolgate scan``: read an MCP server's tools and classify each; where the tools come from
(``--url``, ``--file`` or a stdio server), as ``toolgate suggest`` reads them too.

toolgate scan --url http://127.0.0.1:3001/mcp          # classification table
toolgate scan --format json -- uvx mcp-server-time     # the same as JSON
toolgate scan --save tools.json -- python -m mcp_server_git
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

from toolgate.cli import exits
from toolgate.cli.written import write_file
from toolgate.scanner.categories import CATEGORIES, Category
from toolgate.scanner.classify import Classification, classify_all
from toolgate.scanner.scan import (
    DEFAULT_TIMEOUT,
    Scan,
    ScanError,
    ScanUnreachable,
    scan_file,
    scan_stdio,
    scan_url,
)


def category_named(text: str) -> Category:
    for c in CATEGORIES:
        if c.lower() == text.strip().lower():
            return c
    raise argparse.ArgumentTypeError(f"no category {text!r} (one of {', '.join(CATEGORIES)})")


def pairs(values: Sequence[str], what: str, *, last: bool = False) -> list[tuple[str, str]]:
    """``KEY=VALUE`` strings split at the first ``=`` (at the last, with ``last``)."""
    pairs = []
    for value in values:
        key, sep, rest = value.rpartition("=") if last else value.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"{what} expects KEY=VALUE, got {value!r}")
        pairs.append((key, rest))
    return pairs


def add_source(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group(
        "where the tools come from (exactly one)",
        "a running server's Streamable HTTP endpoint, a saved tools/list, or a stdio server "
        "started after --",
    )
    source.add_argument("--url", metavar="URL", help="e.g. http://127.0.0.1:3001/mcp")
    source.add_argument("--file", metavar="FILE", help="a saved tools/list result (JSON)")
    source.add_argument(
        "--stdio", metavar="CMD", help="start this stdio server, e.g. --stdio 'uvx X' (or -- CMD)"
    )
    source.add_argument(
        "command", nargs="*", metavar="-- COMMAND", help="start this stdio server, e.g. -- uvx X"
    )
    parser.add_argument(
        "--header", action="append", default=[], metavar="NAME:VALUE", help="with --url"
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="for a stdio server"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="for the whole scan (default: %(default)s)",
    )
    parser.add_argument(
        "--save", metavar="FILE", help="also write the tools/list read, for --file later"
    )


def read_source(args: argparse.Namespace, prog: str) -> Scan:
    chosen = [x for x in (args.url, args.file, args.stdio, args.command or None) if x is not None]
    if len(chosen) != 1:
        raise ScanError(
            f"{prog}: give exactly one of --url URL, --file FILE, --stdio CMD or -- COMMAND ..."
        )
    if args.stdio is not None:
        args.command = shlex.split(args.stdio)
    if args.file is not None:
        result = scan_file(args.file)
    elif args.url is not None:
        headers = {}
        for header in args.header:
            name, sep, value = header.partition(":")
            if not sep or not name.strip():
                raise ScanError(f"{prog}: --header expects NAME:VALUE, got {header!r}")
            headers[name.strip()] = value.strip()
        result = scan_url(args.url, headers=headers, timeout=args.timeout)
    else:
        env = dict(pairs(args.env, "--env"))
        result = scan_stdio(args.command, env=env, timeout=args.timeout)
    if args.save:
        try:
            write_file(args.save, json.dumps(result.tools_list(), indent=2) + "\n")
        except OSError as err:
            raise ScanError(f"{prog}: --save {args.save}: {err.strerror or err}") from err
    return result


def table(scan: Scan, classifications: Sequence[Classification]) -> str:
    """The classification as an aligned text table, with a heading and a count per category."""
    server = f" ({scan.server['name']} {scan.server['version']})" if scan.server else ""
    lines = [f"{scan.source}{server}: {len(classifications)} tools"]
    rows = [("TOOL", "CATEGORY", "RISK", "CONFIDENCE", "REASON")]
    rows += [(c.name, c.category, c.risk, c.confidence, c.reason) for c in classifications]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[4]]).rstrip())
    counts = Counter(c.category for c in classifications)
    sensitive = sum(c.sensitive for c in classifications)
    summary = ", ".join(f"{c} {counts[c]}" for c in CATEGORIES if counts[c])
    lines.append(
        summary + (f" ({sensitive} sensitive read{'s' * (sensitive != 1)})" if sensitive else "")
    )
    lines.extend(f"note: {note}" for note in scan.notes)
    return "\n".join(lines) + "\n"


def _as_json(scan: Scan, classifications: Sequence[Classification]) -> dict[str, Any]:
    return {
        "source": scan.source,
        "server": scan.server,
        "pages": scan.pages,
        "notes": scan.notes,
        "tools": [c.to_dict() for c in classifications],
    }


def failed(err: Exception) -> int:
    """Say why reading the tools (or an option) failed; the exit status for it."""
    print(err, file=sys.stderr)
    return exits.UNREACHABLE if isinstance(err, ScanUnreachable) else exits.UNUSABLE


def _run(args: argparse.Namespace) -> int:
    try:
        result = read_source(args, "toolgate scan")
    except (ScanError, argparse.ArgumentTypeError) as err:
        return failed(err)
    classifications = classify_all(result.tools)
    if args.format == "json":
        print(json.dumps(_as_json(result, classifications), indent=2))
    else:
        sys.stdout.write(table(result, classifications))
    return 0


def add_command(sub: Any) -> None:
    """Register ``toolgate scan`` on the CLI's subparsers."""
    scan = sub.add_parser(
        "scan",
        help="read an MCP server's tools and classify each one's risk",
        description="Read an MCP server's tools and classify each: Read, Write, Execute, "
        "Destructive or Financial, with a risk, a reason and a confidence.",
    )
    add_source(scan)
    scan.add_argument(
        "--format", choices=["table", "json"], default="table", help="how the tools are shown"
    )
    scan.set_defaults(run=_run)
