"""``toolgate validate``: check policy files: ``FILE: ok`` on stdout for each valid one, one
line per error on stderr (and notes of limits a client can dodge, also on stderr)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from toolgate import Policy, PolicyError
from toolgate._core import SidecarSettings, inert
from toolgate.authoring.listed_names import read_listings, sectionless, unlisted
from toolgate.cli import exits
from toolgate.cli.parser import seconds
from toolgate.cli.scan import failed as scan_failed
from toolgate.files import check_regular
from toolgate.scanner.scan import DEFAULT_TIMEOUT, Scan, ScanError, scan_file, scan_url


def _run(args: argparse.Namespace) -> int:
    try:
        # Read as the sidecar reads them.
        settings = SidecarSettings(agent_from=args.agent_from, session_from=args.session_from)
    except ValueError as err:
        print(f"toolgate validate: {err}", file=sys.stderr)
        return exits.UNUSABLE
    verified = settings.verified
    try:
        listings = server_listings(args.tools, args.url, args.timeout)
    except (ScanError, argparse.ArgumentTypeError) as err:
        return scan_failed(err)
    failed = unreadable = False
    for path in args.files:
        try:
            # A file that cannot be read is no policy to check (2), not one that fails (1).
            check_regular(path)
            with open(path, "rb"):
                pass
        except OSError as err:
            unreadable = True
            print(f"{path}: cannot read it: {err.strerror or err}", file=sys.stderr)
            continue
        try:
            policy = Policy.from_file(path)
        except PolicyError as err:
            failed = True
            for e in err.errors:
                pointer = e.pointer or "/"
                where = f" (line {e.line})" if e.line is not None else ""
                print(f"{path}: {pointer}: {e.message}{where}", file=sys.stderr)
        else:
            for server in sectionless(policy, listings):
                print(
                    f"{path}: note: server {inert(server)} has no section of its own: its "
                    "listing is checked against the top-level section",
                    file=sys.stderr,
                )
            missing = unlisted(policy, listings)
            for u in missing:
                print(f"{path}: {u.message()}", file=sys.stderr)
            if missing:
                failed = True
                continue
            if not args.quiet:
                # Not errors: limits, marks and conditions a client can dodge by what it says.
                for note in policy.self_asserted(*verified):
                    print(f"{path}: {note.pointer}: note: {note.message}", file=sys.stderr)
                print(f"{path}: ok")
    if unreadable:
        return exits.UNUSABLE
    return exits.FAILED if failed else exits.OK


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
        default=SidecarSettings().agent_from,
        metavar="SOURCE",
        help="where the sidecar takes the agent from, as `toolgate serve --agent-from`: with "
        "'jwt:CLAIM' (a verified token), limits and conditions on the agent are not pointed "
        "out as ones a client can dodge (default: %(default)s)",
    )
    validate.add_argument(
        "--session-from",
        default=SidecarSettings().session_from,
        metavar="SOURCE",
        help="where the sidecar takes the session from, as `toolgate serve --session-from` "
        "(default: %(default)s)",
    )
    add_listing_options(validate)
    validate.add_argument(
        "--timeout",
        type=seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="for reading a --url listing",
    )
    validate.set_defaults(run=_run)


def add_listing_options(parser: argparse.ArgumentParser) -> None:
    """``--tools [SERVER=]FILE`` and ``--url [SERVER=]URL``: the listings rules are checked
    against."""
    parser.add_argument(
        "--tools",
        action="append",
        default=[],
        metavar="[SERVER=]FILE",
        help="a server's saved tools/list (as `toolgate scan --save` writes): every rule of its "
        "section (SERVER's, or the top-level one) must name a tool it lists, else an error "
        "names the nearest; repeatable",
    )
    parser.add_argument(
        "--url",
        action="append",
        default=[],
        metavar="[SERVER=]URL",
        help="as --tools, the listing read from a running server (the 'scan' extra)",
    )


def server_listings(
    files: list[str], urls: list[str], timeout: float = DEFAULT_TIMEOUT
) -> dict[str | None, set[str]]:
    """The names each listing given holds, by server."""

    def names(scan: Scan) -> set[str]:
        return {t["name"] for t in scan.tools if isinstance(t.get("name"), str)}

    listings = read_listings(files, lambda f: names(scan_file(f)))
    for server, found in read_listings(urls, lambda u: names(scan_url(u, timeout=timeout))).items():
        listings.setdefault(server, set()).update(found)
    return listings
