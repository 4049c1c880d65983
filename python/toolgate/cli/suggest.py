"""``toolgate suggest``: scan an MCP server and write a starter policy for its tools.

toolgate suggest --file tools.json > policy.json       # starter policy; table on stderr
toolgate suggest --format yaml --url http://127.0.0.1:3001/mcp
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any

from toolgate import Policy, PolicyError
from toolgate.authoring.policy_text import to_json
from toolgate.authoring.suggest import SCOPES, TREATMENTS, Options, suggest, to_yaml
from toolgate.cli import exits, written
from toolgate.cli.scan import add_source, category_named, failed, pairs, read_source, table
from toolgate.scanner.categories import RISK, SENSITIVE_READ_RISK
from toolgate.scanner.classify import Classification, classify_all
from toolgate.scanner.evidence import Evidence
from toolgate.scanner.scan import ScanError


def _options(args: argparse.Namespace) -> Options:
    options = Options(
        default=args.default,
        window=args.window,
        scope=args.scope,
        flow_rules=not args.no_flow_rules,
        mark_ttl=args.mark_ttl,
    )
    for name, treatment in pairs(args.treat, "--treat"):
        if treatment not in TREATMENTS:
            raise argparse.ArgumentTypeError(
                f"--treat {name}={treatment}: one of {', '.join(TREATMENTS)}"
            )
        if name.strip().lower() == "sensitive":
            options.sensitive_read = treatment  # type: ignore[assignment]
        else:
            options.treatment[category_named(name)] = treatment
    for name, value in pairs(args.max, "--max"):
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--max {name}={value}: not a whole number") from None
        if name.strip().lower() == "sensitive":
            options.sensitive_max = n
        else:
            options.max_calls[category_named(name)] = n
    options.__post_init__()
    return options


def _override(
    classifications: list[Classification], overrides: list[tuple[str, str]]
) -> list[Classification]:
    wanted = {name: category_named(category) for name, category in overrides}
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


def _run(args: argparse.Namespace) -> int:
    try:
        options = _options(args)
        result = read_source(args, "toolgate suggest")
        classifications = _override(classify_all(result.tools), pairs(args.set, "--set", last=True))
    except (ScanError, argparse.ArgumentTypeError, ValueError) as err:
        return failed(err)
    annotations = {t["name"]: t["annotations"] for t in result.tools}
    policy = suggest(classifications, options, annotations)
    try:
        Policy.from_dict(policy)
    except PolicyError as err:  # an option made it invalid (say, --window 5x)
        for e in err.errors:
            print(f"toolgate suggest: {e.pointer}: {e.message}", file=sys.stderr)
        return exits.UNUSABLE
    text = to_yaml(policy, classifications) if args.format == "yaml" else to_json(policy)
    if not args.quiet:
        sys.stderr.write(table(result, classifications))
    if args.output:
        return written.write("suggest", "--output", args.output, text)
    else:
        sys.stdout.write(text)
    return 0


def add_command(sub: Any) -> None:
    """Register ``toolgate suggest`` on the CLI's subparsers; the policy's defaults are
    Options'."""
    defaults = Options()
    suggest_ = sub.add_parser(
        "suggest",
        help="scan an MCP server and print a starter policy for its tools",
        description="Scan an MCP server and print a starter policy (stdout) and the "
        "classification (stderr). Defaults: default deny; Read allowed; Write 30 and Execute "
        "10 calls per minute per grant; Destructive hidden; Financial require approval.",
    )
    add_source(suggest_)
    suggest_.add_argument(
        "--format", choices=["json", "yaml"], default="json", help="the policy's format"
    )
    suggest_.add_argument("-o", "--output", metavar="FILE", help="write the policy here")
    suggest_.add_argument("-q", "--quiet", action="store_true", help="no table on stderr")
    rules = suggest_.add_argument_group("the policy")
    rules.add_argument(
        "--default",
        choices=["deny", "allow"],
        default=defaults.default,
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
    rules.add_argument("--window", default=defaults.window, help="of the limits")
    rules.add_argument(
        "--scope",
        default=defaults.scope,
        choices=SCOPES,
        help="whose counter a limit is",
    )
    rules.add_argument(
        "--no-flow-rules",
        action="store_true",
        help="do not mark callers that read private data, nor keep open-world writers from them",
    )
    rules.add_argument(
        "--mark-ttl",
        default=defaults.mark_ttl,
        metavar="DURATION",
        help="how long a caller stays marked after reading private data (default %(default)s)",
    )
    rules.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="TOOL=CATEGORY",
        help="classify this tool so, whatever the evidence",
    )
    suggest_.set_defaults(run=_run)
