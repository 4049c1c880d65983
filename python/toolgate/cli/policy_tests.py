"""``toolgate test``: run policy test files and report the results."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from toolgate import Engine, Policy, PolicyError
from toolgate.authoring.listed_names import unlisted
from toolgate.authoring.policy_tests.cases import BadTestFile, TestFile, read_test_file
from toolgate.authoring.policy_tests.report import report_json, report_junit, report_text
from toolgate.authoring.policy_tests.run import run
from toolgate.cli import exits, written
from toolgate.cli.scan import failed as scan_failed
from toolgate.cli.validate import add_listing_options, server_listings
from toolgate.scanner.scan import ScanError


def _run(args: argparse.Namespace) -> int:
    files: list[TestFile] = []
    broken = False
    for name in args.files:
        try:
            files.append(read_test_file(name))
        except BadTestFile as err:
            broken = True
            print(err, file=sys.stderr)
    policies = [Path(p) for p in args.policy]
    for f in files:
        if not policies and not f.policies:
            broken = True
            print(
                f"{f.path}: names no policy: add `policy: FILE`, or give --policy", file=sys.stderr
            )
    try:
        listings = server_listings(args.tools, args.url)
    except (ScanError, argparse.ArgumentTypeError) as err:
        return scan_failed(err)
    unlisted_rules = False
    for policy in dict.fromkeys(policies + [p for f in files for p in f.policies]):
        try:
            Engine.from_file(policy)
            # Rules naming a tool their server does not list fail the run (a typo).
            for u in unlisted(Policy.from_file(policy), listings):
                unlisted_rules = True
                print(f"{policy}: {u.message()}", file=sys.stderr)
        except PolicyError as err:
            broken = True
            for e in err.errors:
                where = f" (line {e.line})" if e.line is not None else ""
                print(f"{policy}: {e.pointer or '/'}: {e.message}{where}", file=sys.stderr)
        except (OSError, ValueError) as err:
            broken = True
            print(f"{policy}: {err}", file=sys.stderr)
    if broken:
        return exits.UNUSABLE
    results = run(files, policies)
    if args.format == "json":
        sys.stdout.write(report_json(results))
    else:
        sys.stdout.write(report_text(results, quiet=args.quiet, explain=not args.no_explain))
    if args.junit and written.write("test", "--junit", args.junit, report_junit(results)):
        return exits.UNUSABLE
    passed = all(c.passed for r in results for c in r.cases)
    return exits.OK if passed and not unlisted_rules else exits.FAILED


def add_command(sub: Any) -> None:
    """Register ``toolgate test`` on the CLI's subparsers."""
    test = sub.add_parser(
        "test",
        help="run policy test files (YAML/JSON cases of calls and expected decisions); "
        "exit 1 if a case fails, 2 if a file cannot be read",
    )
    test.add_argument("files", nargs="+", metavar="TESTFILE")
    test.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="FILE",
        help="run every case against this policy instead of the files' own (repeatable)",
    )
    test.add_argument(
        "--format", choices=["text", "json"], default="text", help="how to report the results"
    )
    test.add_argument(
        "-q", "--quiet", action="store_true", help="print only failures and the summary"
    )
    test.add_argument(
        "--no-explain", action="store_true", help="do not show how a failing call was decided"
    )
    test.add_argument("--junit", metavar="FILE", help="also write the results as JUnit XML")
    add_listing_options(test)
    test.set_defaults(run=_run)
