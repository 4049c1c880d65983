"""``toolgate explain``: how one call is decided, step by step (a dry run unless
``--consume``)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from toolgate import Engine, PolicyError
from toolgate.authoring.explain import marks_line, render
from toolgate.cli.call_options import add_call_options, parse_arguments, parse_attributes


def _run(args: argparse.Namespace) -> int:
    try:
        engine = Engine.from_file(args.policy)
    except PolicyError as err:
        for e in err.errors:
            where = f" (line {e.line})" if e.line is not None else ""
            print(f"{args.policy}: {e.pointer or '/'}: {e.message}{where}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"toolgate explain: {err}", file=sys.stderr)
        return 2
    try:
        arguments = parse_arguments(args.args)
    except ValueError as err:
        print(f"toolgate explain: {err}", file=sys.stderr)
        return 2
    if args.after < 0:
        print("toolgate explain: --after must be at least 0", file=sys.stderr)
        return 2
    call = {
        "server": args.server,
        "grant": args.grant,
        "session": args.session,
        "agent": args.agent,
        "attributes": parse_attributes(args.attr, "explain"),
        "arguments": arguments,
    }
    # The same call decided (and counted) first, to see where the limits then stand.
    for _ in range(args.after):
        engine.decide(args.tool, **call)
    for tool in args.before:
        engine.decide(tool, **{**call, "arguments": None})
    explanation = engine.explain(
        args.tool, dry_run=not args.consume, can_confirm=args.client_confirms, **call
    )
    if args.json:
        print(json.dumps(explanation.to_dict(), indent=2, ensure_ascii=False))
    else:
        counted = "counted" if args.consume else "a dry run: nothing counted"
        print(f"{args.policy} (revision {engine.revision}), tool {args.tool!r}, {counted}")
        sys.stdout.write(render(explanation.steps))
        marks = marks_line(explanation.decision.marks, dry_run=not args.consume)
        if marks is not None:
            print(marks)
    return 0


def add_command(sub: Any) -> None:
    """Register ``toolgate explain`` on the CLI's subparsers."""
    explain = sub.add_parser(
        "explain",
        help="how one call is decided: section, rule and why, each condition's value, each "
        "limit's count, the decision (a dry run)",
    )
    explain.add_argument(
        "--policy", required=True, metavar="FILE", help="the policy (JSON or YAML)"
    )
    add_call_options(explain)
    explain.add_argument("--json", action="store_true", help="the steps as JSON")
    explain.add_argument(
        "--after",
        type=int,
        default=0,
        metavar="N",
        help="decide the same call N times first, counting them (e.g. to see a limit deny)",
    )
    explain.add_argument(
        "--before",
        action="append",
        default=[],
        metavar="TOOL",
        help="decide a call of TOOL first, by the same caller and counted (repeatable): e.g. "
        "--before crm_read to see the marks it sets read",
    )
    explain.add_argument(
        "--client-confirms",
        action="store_true",
        help="the client can be asked to confirm the call (MCP 2026-07-28 with form "
        "elicitation): show the question a require_confirmation rule asks, not its fallback",
    )
    explain.add_argument(
        "--consume",
        action="store_true",
        help="count the call as a decision would (default: a dry run that counts nothing)",
    )
    explain.set_defaults(run=_run)
