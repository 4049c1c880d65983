"""The ``toolgate scan`` and ``toolgate suggest`` commands.

toolgate scan --url http://127.0.0.1:3001/mcp          # classification table
toolgate scan --format json -- uvx mcp-server-time     # the same as JSON
toolgate scan --save tools.json -- python -m mcp_server_git
toolgate suggest --file tools.json > policy.json       # starter policy; table on stderr
toolgate suggest --format yaml --url http://127.0.0.1:3001/mcp
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from toolgate import Policy, PolicyError
from toolgate.authoring.suggest import TREATMENTS, Options, suggest, to_json, to_yaml
from toolgate.scanner.classify import (
    CATEGORIES,
    RISK,
    SENSITIVE_READ_RISK,
    Category,
    Classification,
    Evidence,
    classify_all,
)
from toolgate.scanner.scan import DEFAULT_TIMEOUT, Scan, ScanError, scan_file, scan_stdio, scan_url


def _category(text: str) -> Category:
    for c in CATEGORIES:
        if c.lower() == text.strip().lower():
            return c
    raise argparse.ArgumentTypeError(f"no category {text!r} (one of {', '.join(CATEGORIES)})")


def _pairs(values: Sequence[str], what: str, *, last: bool = False) -> list[tuple[str, str]]:
    """``KEY=VALUE`` strings split at the first ``=`` (at the last, with ``last``)."""
    pairs = []
    for value in values:
        key, sep, rest = value.rpartition("=") if last else value.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"{what} expects KEY=VALUE, got {value!r}")
        pairs.append((key, rest))
    return pairs


def _add_source(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group(
        "where the tools come from (exactly one)",
        "a running server's Streamable HTTP endpoint, a saved tools/list, or a stdio server "
        "started after --",
    )
    source.add_argument("--url", metavar="URL", help="e.g. http://127.0.0.1:3001/mcp")
    source.add_argument("--file", metavar="FILE", help="a saved tools/list result (JSON)")
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


def _read(args: argparse.Namespace, prog: str) -> Scan:
    chosen = [x for x in (args.url, args.file, args.command or None) if x is not None]
    if len(chosen) != 1:
        raise ScanError(f"{prog}: give exactly one of --url URL, --file FILE or -- COMMAND ...")
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
        env = dict(_pairs(args.env, "--env"))
        result = scan_stdio(args.command, env=env, timeout=args.timeout)
    if args.save:
        Path(args.save).write_text(json.dumps(result.tools_list(), indent=2) + "\n")
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


def run_scan(args: argparse.Namespace) -> int:
    try:
        result = _read(args, "toolgate scan")
    except (ScanError, argparse.ArgumentTypeError) as err:
        print(err, file=sys.stderr)
        return 1
    classifications = classify_all(result.tools)
    if args.format == "json":
        print(json.dumps(_as_json(result, classifications), indent=2))
    else:
        sys.stdout.write(table(result, classifications))
    return 0


def _options(args: argparse.Namespace) -> Options:
    options = Options(default=args.default, window=args.window, scope=args.scope)
    for name, treatment in _pairs(args.treat, "--treat"):
        if treatment not in TREATMENTS:
            raise argparse.ArgumentTypeError(
                f"--treat {name}={treatment}: one of {', '.join(TREATMENTS)}"
            )
        if name.strip().lower() == "sensitive":
            options.sensitive_read = treatment  # type: ignore[assignment]
        else:
            options.treatment[_category(name)] = treatment
    for name, value in _pairs(args.max, "--max"):
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--max {name}={value}: not a whole number") from None
        if name.strip().lower() == "sensitive":
            options.sensitive_max = n
        else:
            options.max_calls[_category(name)] = n
    options.__post_init__()
    return options


def _override(
    classifications: list[Classification], overrides: list[tuple[str, str]]
) -> list[Classification]:
    wanted = {name: _category(category) for name, category in overrides}
    unknown = set(wanted) - {c.name for c in classifications}
    if unknown:
        raise argparse.ArgumentTypeError(
            f"--set names no scanned tool: {', '.join(sorted(unknown))}"
        )
    out = []
    for c in classifications:
        if c.name in wanted:
            category = wanted[c.name]
            given = Evidence("default", category, "set by --set")
            # A tool set to Read still reads secrets if it did; set to anything else, it is
            # treated as that category.
            sensitive = c.sensitive and category == "Read"
            c = replace(
                c,
                category=category,
                risk=SENSITIVE_READ_RISK if sensitive else RISK[category],
                sensitive=sensitive,
                reason=f"set by --set (classified {c.category}: {c.reason})",
                confidence="high",
                evidence=(*c.evidence, given),
            )
        out.append(c)
    return out


def run_suggest(args: argparse.Namespace) -> int:
    try:
        options = _options(args)
        result = _read(args, "toolgate suggest")
        classifications = _override(
            classify_all(result.tools), _pairs(args.set, "--set", last=True)
        )
    except (ScanError, argparse.ArgumentTypeError, ValueError) as err:
        print(err, file=sys.stderr)
        return 1
    policy = suggest(classifications, options)
    try:
        Policy.from_dict(policy)
    except PolicyError as err:  # an option made it invalid (say, --window 5x)
        for e in err.errors:
            print(f"toolgate suggest: {e.pointer}: {e.message}", file=sys.stderr)
        return 1
    text = to_yaml(policy, classifications) if args.format == "yaml" else to_json(policy)
    if not args.quiet:
        sys.stderr.write(table(result, classifications))
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def add_commands(sub: Any) -> None:
    """Add ``scan`` and ``suggest`` to the ``toolgate`` command's subparsers."""
    scan = sub.add_parser(
        "scan",
        help="read an MCP server's tools and classify each one's risk",
        description="Read an MCP server's tools and classify each: Read, Write, Execute, "
        "Destructive or Financial, with a risk, a reason and a confidence.",
    )
    _add_source(scan)
    scan.add_argument(
        "--format", choices=["table", "json"], default="table", help="how the tools are shown"
    )
    scan.set_defaults(run=run_scan)

    suggest_ = sub.add_parser(
        "suggest",
        help="scan an MCP server and print a starter policy for its tools",
        description="Scan an MCP server and print a starter policy (stdout) and the "
        "classification (stderr). Defaults: default deny; Read allowed; Write 30 and Execute "
        "10 calls per minute per grant; Destructive hidden; Financial require approval.",
    )
    _add_source(suggest_)
    suggest_.add_argument(
        "--format", choices=["json", "yaml"], default="json", help="the policy's format"
    )
    suggest_.add_argument("-o", "--output", metavar="FILE", help="write the policy here")
    suggest_.add_argument("-q", "--quiet", action="store_true", help="no table on stderr")
    rules = suggest_.add_argument_group("the policy")
    rules.add_argument(
        "--default",
        choices=["deny", "allow"],
        default="deny",
        help="for tools the policy does not name",
    )
    rules.add_argument(
        "--treat",
        action="append",
        default=[],
        metavar="CATEGORY=HOW",
        help=f"how a category's tools are handled: {', '.join(TREATMENTS)}; "
        "'sensitive' for reads of secrets (default require_approval)",
    )
    rules.add_argument(
        "--max",
        action="append",
        default=[],
        metavar="CATEGORY=N",
        help="calls per window for a limited category (Write=30, Execute=10, sensitive=5)",
    )
    rules.add_argument("--window", default="minute", help="of the limits")
    rules.add_argument(
        "--scope",
        default="grant",
        choices=["grant", "session", "agent", "server", "global"],
        help="whose counter a limit is",
    )
    rules.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="TOOL=CATEGORY",
        help="classify this tool so, whatever the evidence",
    )
    suggest_.set_defaults(run=run_suggest)
