"""``toolgate approvals``: list, show, approve and deny approvals on a running sidecar's
admin listener."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict

from toolgate._core import inert
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

    from toolgate.client import channel
    from toolgate.v1 import approvals_pb2_grpc

    try:
        token = Path(args.token_file).read_text().strip()
    except OSError as err:
        print(f"toolgate approvals: cannot read the token file: {err}", file=sys.stderr)
        return 2
    metadata = (("authorization", f"Bearer {token}"),)
    with channel(args.target) as ch:
        stub = approvals_pb2_grpc.ApprovalsStub(ch)
        try:
            return _act(args, stub, metadata)
        except grpc.RpcError as err:
            print(f"toolgate approvals: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1


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
        a = stub.Get(
            approvals_pb2.GetApprovalRequest(id=args.id), metadata=metadata, timeout=args.timeout
        )
        print(json.dumps(_dict(a), indent=None if args.json else 2))
    elif args.action in ("approve", "deny"):
        request = approvals_pb2.DecideApprovalRequest(id=args.id, reason=args.reason or "")
        call = stub.Approve if args.action == "approve" else stub.Deny
        emit(call(request, metadata=metadata, timeout=args.timeout))
    else:  # watch
        request = approvals_pb2.WatchApprovalsRequest(include_pending=True)
        for a in stub.Watch(request, metadata=metadata):
            emit(a)
            sys.stdout.flush()
    return 0


def add_command(sub: Any) -> None:
    """Register ``toolgate approvals`` on the CLI's subparsers."""
    p = sub.add_parser(
        "approvals", help="list, show, approve or deny approvals on a sidecar's admin listener"
    )
    p.add_argument(
        "--target",
        type=target_address,
        default=ApprovalOptions().admin_listen,
        metavar="HOST:PORT",
        help="the sidecar's --admin-listen (default: %(default)s)",
    )
    p.add_argument(
        "--token-file",
        required=True,
        metavar="FILE",
        help="a file holding your admin token (one of the sidecar's --admin-tokens)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per approval")
    p.add_argument(
        "--timeout", type=float, default=10.0, metavar="SECONDS", help="per call to the sidecar"
    )
    actions = p.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="approvals, newest first")
    listing.add_argument(
        "--state",
        choices=STATES,
        help="only approvals in this state (default: all)",
    )
    listing.add_argument("--limit", type=int, default=100, metavar="N", help="at most N")
    actions.add_parser("show", help="one approval, in full").add_argument("id")
    for action, what in (("approve", "let the call run once"), ("deny", "refuse the call")):
        a = actions.add_parser(action, help=what)
        a.add_argument("id")
        a.add_argument(
            "--reason", help="why: recorded with the decision, for approvers and auditors"
        )
    actions.add_parser("watch", help="pending approvals, then each one opened or changed")
    p.set_defaults(run=_run)
