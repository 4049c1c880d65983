"""``toolgate log verify``: check a decision log's hash chain, across its rotated files.
``toolgate log digest``: the keyed digest a line holds of known arguments, to check it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from toolgate._core import argument_digest
from toolgate.cli import exits
from toolgate.sidecar.decision_log import log_files, parse_head, verify


def _verify(args: argparse.Namespace) -> int:
    path = Path(args.file)
    files = [path] if args.only else log_files(path)
    if not files:
        print(f"toolgate log verify: no such log: {path}", file=sys.stderr)
        return 2
    try:
        head = parse_head(args.head) if args.head else None
    except ValueError as err:
        print(f"toolgate log verify: {err}", file=sys.stderr)
        return 2
    result = verify(files, from_start=not args.partial, head=head)
    if result.problem is not None:
        print(f"BROKEN {result.problem}")
        return 1
    print(
        f"OK {result.lines} lines in {len(files)} file(s): {result.decisions} decisions"
        + (
            f", {result.dropped} dropped by the sidecar (noted in the log)"
            if result.dropped
            else ""
        )
        + (f", {len(result.breaks)} break(s) noted at restarts" if result.breaks else "")
    )
    for noted in result.breaks:
        print(f"break {noted}")
    return 0


def _digest(args: argparse.Namespace) -> int:
    from toolgate.sidecar.approvals.grant_labels import read_key

    key_file = Path(args.state_dir) / "grant.key"
    try:
        # The key serve would take, refused as serve refuses it.
        digest = argument_digest(read_key(key_file), args.arguments)
    except OSError as err:
        print(f"toolgate log digest: cannot read {key_file}: {err.strerror}", file=sys.stderr)
        return exits.UNUSABLE
    except ValueError as err:
        print(f"toolgate log digest: {err}", file=sys.stderr)
        return exits.UNUSABLE
    print(digest)
    return exits.OK


def add_command(sub: Any) -> None:
    """Register ``toolgate log`` on the CLI's subparsers."""
    p = sub.add_parser("log", help="work with a decision log (--decision-log)")
    actions = p.add_subparsers(dest="action", required=True)
    v = actions.add_parser(
        "verify",
        help="check a decision log's hash chain, across its rotated files",
        description="Check the hash chain of a decision log: FILE.1, FILE.2, …, then FILE. "
        "Exit 0 if whole, 1 at the first broken or missing line (which it prints).",
    )
    v.add_argument("file", metavar="FILE")
    v.add_argument("--only", action="store_true", help="FILE alone, not its rotated files")
    v.add_argument(
        "--partial",
        action="store_true",
        help="the oldest files were deleted: the chain may start at any line",
    )
    v.add_argument(
        "--head",
        metavar="SEQ:SHA256",
        help="the head the sidecar logged ('decision log head'): the log must reach that "
        "line, unchanged",
    )
    v.set_defaults(run=_verify)
    d = actions.add_parser(
        "digest",
        help="the digest a line holds of known arguments (args.digest), to check it",
        description="Print the keyed digest the decision log, the approvals store and "
        "webhooks write of ARGUMENTS (JSON), under the sidecar's key (STATE_DIR/grant.key): "
        "equal to a line's args.digest if and only if the call's arguments were these.",
    )
    d.add_argument("arguments", metavar="ARGUMENTS", help="the arguments, JSON: '{\"pin\": 1234}'")
    d.add_argument("--state-dir", required=True, help="the sidecar's --state-dir")
    d.set_defaults(run=_digest)
