"""``toolgate approvals``: list, show, approve and deny approvals on a running sidecar's
admin listener."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict

from toolgate._core import inert
from toolgate.cli import exits
from toolgate.cli.parser import WAIT, add_wait, seconds
from toolgate.sidecar.addresses import target_address
from toolgate.sidecar.approvals.options import ApprovalOptions
from toolgate.sidecar.approvals.rows import STATES
from toolgate.v1 import approvals_pb2


def _dict(approval: approvals_pb2.Approval) -> dict[str, Any]:
    return MessageToDict(approval, preserving_proto_field_name=True)


def _line(a: approvals_pb2.Approval) -> str:
    """One row; every field an agent chose made inert, so a row is one line and shows only
    what it holds (a newline or an escape sequence in a tool name forges no row)."""
    who = inert(a.agent or a.grant or "-")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(a.created_ms / 1000))
    arguments = inert(a.arguments_json) + (" …(cut)" if a.arguments_cut else "")
    return f"{inert(a.id)}  {inert(a.state):<8}  {when}Z  {who}  {inert(a.tool)}  {arguments}"


def _run(args: argparse.Namespace) -> int:
    # grpcio is loaded by the command that needs it, not by every `toolgate` command.
    import grpc

    from toolgate.client import channel, wait_until_listening
    from toolgate.v1 import approvals_pb2_grpc

    if args.token_file is None:
        print(f"{args.command_name}: --token-file FILE is required", file=sys.stderr)
        return exits.UNUSABLE
    try:
        token = Path(args.token_file).read_text().strip()
    except OSError as err:
        print(f"{args.command_name}: cannot read the token file: {err}", file=sys.stderr)
        return exits.UNUSABLE
    metadata = (("authorization", f"Bearer {token}"),)
    with channel(args.target) as ch:
        wait_until_listening(ch, args.target, args.wait)
        stub = approvals_pb2_grpc.ApprovalsStub(ch)
        try:
            return _act(args, stub, metadata)
        except grpc.RpcError as err:
            print(f"{args.command_name}: {err.code().name}: {err.details()}", file=sys.stderr)
            return exits.for_rpc(err.code().name)
        except UnknownId as err:
            print(f"{args.command_name}: {err}", file=sys.stderr)
            return exits.UNUSABLE


#: What an approval id is made of: ``apr_`` and 32 hex digits.
FULL_ID = re.compile(r"apr_[0-9a-f]{32}")

ID_HELP = (
    "the approval's id, or its first characters when no other approval starts with them "
    "(apr_0988 or apr_0988…, as rows and webhooks shorten it)"
)


class UnknownId(Exception):
    """No approval, or more than one, starts with the id given."""


def _full_id(args: argparse.Namespace, stub: Any, metadata: Any) -> str:
    """The id ``args.id`` names: itself when whole, else the one approval whose id starts
    with it (an ellipsis at its end, ``…`` or ``...``, is not part of it)."""
    given = args.id.strip()
    if FULL_ID.fullmatch(given):
        return given
    prefix = given.removesuffix("…").removesuffix("...")
    if not prefix.startswith("apr_") or len(prefix) <= len("apr_"):
        raise UnknownId(f"{given!r} is not an approval id (apr_ and hex digits)")
    found: list[str] = []
    token = ""
    while True:
        page = stub.List(
            approvals_pb2.ListApprovalsRequest(limit=1000, page_token=token),
            metadata=metadata,
            timeout=args.timeout,
        )
        found += [a.id for a in page.approvals if a.id.startswith(prefix)]
        token = page.next_page_token
        if not token or len(found) > 1:
            break
    if not found:
        raise UnknownId(f"no approval's id starts with {prefix}")
    if len(found) > 1:
        raise UnknownId(f"several approvals' ids start with {prefix}: give more of it")
    return found[0]


def _act(args: argparse.Namespace, stub: Any, metadata: Any) -> int:
    emit = (lambda a: print(json.dumps(_dict(a)))) if args.json else (lambda a: print(_line(a)))
    if args.action == "list":
        # Page by page (each well within gRPC's message limit), up to --limit.
        left, token = args.limit, ""
        while left > 0:
            request = approvals_pb2.ListApprovalsRequest(
                state=args.state or "", limit=min(left, 1000), page_token=token
            )
            page = stub.List(request, metadata=metadata, timeout=args.timeout)
            for a in page.approvals[:left]:
                emit(a)
            left -= len(page.approvals)
            token = page.next_page_token
            if not token:
                break
    elif args.action == "show":
        approval_id = _full_id(args, stub, metadata)
        a = stub.Get(
            approvals_pb2.GetApprovalRequest(id=approval_id),
            metadata=metadata,
            timeout=args.timeout,
        )
        print(json.dumps(_dict(a), indent=None if args.json else 2))
    elif args.action in ("approve", "deny"):
        approval_id = _full_id(args, stub, metadata)
        request = approvals_pb2.DecideApprovalRequest(id=approval_id, reason=args.reason or "")
        call = stub.Approve if args.action == "approve" else stub.Deny
        emit(call(request, metadata=metadata, timeout=args.timeout))
    else:  # watch
        request = approvals_pb2.WatchApprovalsRequest(include_pending=True)
        for a in stub.Watch(request, metadata=metadata):
            emit(a)
            sys.stdout.flush()
    return 0


def _add_common(p: argparse.ArgumentParser, *, after_action: bool) -> None:
    """The options of every action, accepted before the action (``approvals --json list``)
    and after it (``approvals list --json``). After it they default to nothing, so that they
    leave what was given before the action as it is."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if after_action else value

    p.add_argument(
        "--target",
        type=target_address,
        default=default(ApprovalOptions().admin_listen),
        metavar="HOST:PORT",
        help=f"the sidecar's --admin-listen (default: {ApprovalOptions().admin_listen})",
    )
    p.add_argument(
        "--token-file",
        default=default(None),
        metavar="FILE",
        help="a file holding your admin token (one of the sidecar's --admin-tokens); required",
    )
    p.add_argument(
        "--json", action="store_true", default=default(False), help="one JSON object per approval"
    )
    p.add_argument(
        "--timeout",
        type=seconds,
        default=default(10.0),
        metavar="SECONDS",
        help="per call to the sidecar (default: 10.0)",
    )
    add_wait(p, default=default(WAIT))


def add_command(sub: Any) -> None:
    """Register ``toolgate approvals`` on the CLI's subparsers."""
    p = sub.add_parser(
        "approvals", help="list, show, approve or deny approvals on a sidecar's admin listener"
    )
    _add_common(p, after_action=False)
    actions = p.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="approvals, newest first")
    listing.add_argument(
        "--state",
        choices=STATES,
        help="only approvals in this state (default: all)",
    )
    listing.add_argument("--limit", type=int, default=100, metavar="N", help="at most N")
    show = actions.add_parser("show", help="one approval, in full")
    show.add_argument("id", help=ID_HELP)
    for action, what in (("approve", "let the call run once"), ("deny", "refuse the call")):
        a = actions.add_parser(action, help=what)
        a.add_argument("id", help=ID_HELP)
        a.add_argument(
            "--reason", help="why: recorded with the decision, for approvers and auditors"
        )
    actions.add_parser("watch", help="pending approvals, then each one opened or changed")
    for action_parser in actions.choices.values():
        _add_common(action_parser, after_action=True)
    p.set_defaults(run=_run)
