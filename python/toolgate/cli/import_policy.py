"""``toolgate import intercept``: convert another tool's policy to policy v1."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from toolgate.authoring.intercept.convert import convert_file, to_yaml_with_notes
from toolgate.authoring.intercept.read import InterceptError
from toolgate.cli import exits, written


def _run(args: argparse.Namespace) -> int:
    try:
        conv = convert_file(args.file)
    except InterceptError as err:
        for e in err.errors:
            print(f"{args.file}: {e}", file=sys.stderr)
        return exits.UNUSABLE
    if args.format == "json":
        text = json.dumps(conv.policy, indent=2, ensure_ascii=False) + "\n"
    else:
        text = to_yaml_with_notes(conv, args.file)
    if args.output:
        if written.write("import", "--output", args.output, text) != exits.OK:
            return exits.UNUSABLE
    else:
        sys.stdout.write(text)
    if not args.quiet:
        for n in conv.notes:
            print(f"{args.file}: {n}", file=sys.stderr)
        exact = "exactly" if conv.exact else "with the approximations above"
        print(f"{args.file}: converted {exact}", file=sys.stderr)
    return exits.FAILED if args.strict and not conv.exact else exits.OK


def add_command(sub: Any) -> None:
    """Register ``toolgate import intercept`` on the CLI's subparsers."""
    imp = sub.add_parser("import", help="convert another tool's policy to policy v1")
    formats = imp.add_subparsers(dest="source", required=True)
    intercept = formats.add_parser(
        "intercept",
        help="a policy of PolicyLayer's Intercept (YAML); what cannot be said exactly is "
        "reported on stderr and as comments",
    )
    intercept.add_argument("file", metavar="FILE")
    intercept.add_argument("-o", "--output", metavar="OUT", help="write the policy here")
    intercept.add_argument(
        "--format", choices=["yaml", "json"], default="yaml", help="the converted policy's format"
    )
    intercept.add_argument("-q", "--quiet", action="store_true", help="do not list the notes")
    intercept.add_argument(
        "--strict", action="store_true", help="exit 1 when anything was approximated"
    )
    intercept.set_defaults(run=_run)
