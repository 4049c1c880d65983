"""The ``toolgate`` command line: validate policies and try decisions."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from toolgate import Engine, Policy, PolicyError


def _validate(args: argparse.Namespace) -> int:
    failed = False
    for path in args.files:
        try:
            Policy.from_file(path)
        except PolicyError as err:
            failed = True
            for e in err.errors:
                pointer = e.pointer or "/"
                where = f" (line {e.line})" if e.line is not None else ""
                print(f"{path}: {pointer}: {e.message}{where}")
        else:
            if not args.quiet:
                print(f"{path}: ok", file=sys.stderr)
    return 1 if failed else 0


def _attributes(pairs: Sequence[str]) -> dict[str, str]:
    attributes = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"toolgate decide: --attr expects KEY=VALUE, got {pair!r}")
        attributes[key] = value
    return attributes


def _decide(args: argparse.Namespace) -> int:
    try:
        engine = Engine.from_file(args.policy)
    except PolicyError as err:
        for e in err.errors:
            print(f"{args.policy}: {e.pointer or '/'}: {e.message}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"toolgate decide: {err}", file=sys.stderr)
        return 1
    arguments = None
    if args.args is not None:
        try:
            arguments = json.loads(args.args)
        except json.JSONDecodeError as err:
            print(f"toolgate decide: --args is not valid JSON: {err}", file=sys.stderr)
            return 1
        if not isinstance(arguments, dict):
            print("toolgate decide: --args must be a JSON object", file=sys.stderr)
            return 1
    if args.repeat < 1:
        print("toolgate decide: --repeat must be at least 1", file=sys.stderr)
        return 1
    for _ in range(args.repeat):
        decision = engine.decide(
            args.tool,
            server=args.server,
            grant=args.grant,
            session=args.session,
            agent=args.agent,
            attributes=_attributes(args.attr),
            arguments=arguments,
            dry_run=args.dry_run,
        )
        print(json.dumps(decision.to_dict()), flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toolgate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    validate = sub.add_parser(
        "validate", help="check policy files; one line per error: FILE: /pointer: message"
    )
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.add_argument(
        "-q", "--quiet", action="store_true", help="print nothing for valid files"
    )
    validate.set_defaults(run=_validate)

    decide = sub.add_parser(
        "decide", help="decide tool calls locally; one JSON object per decision"
    )
    decide.add_argument("--policy", required=True, metavar="FILE")
    decide.add_argument("--tool", required=True, metavar="NAME")
    decide.add_argument("--server", metavar="ID")
    decide.add_argument("--grant", metavar="G")
    decide.add_argument("--session", metavar="S")
    decide.add_argument("--agent", metavar="A")
    decide.add_argument("--attr", action="append", default=[], metavar="KEY=VALUE")
    decide.add_argument("--args", metavar="JSON", help="the call's arguments as a JSON object")
    decide.add_argument("--repeat", type=int, default=1, metavar="N", help="decide N times")
    decide.add_argument(
        "--dry-run", action="store_true", help="evaluate without consuming counters"
    )
    decide.set_defaults(run=_decide)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
