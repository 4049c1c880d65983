"""The command-line options that describe one tool call, shared by ``toolgate decide`` and
``toolgate explain``: the tool, the MCP server, the caller and the call's arguments."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from toolgate.cli import exits


def add_call_options(parser: argparse.ArgumentParser) -> None:
    """``--tool`` (required), ``--server``, ``--grant``, ``--session``, ``--agent``,
    ``--attr KEY=VALUE`` (repeatable) and ``--args JSON``."""
    parser.add_argument("--tool", required=True, metavar="NAME", help="the tool called")
    parser.add_argument(
        "--server", metavar="ID", help="the MCP server id (its section of the policy)"
    )
    parser.add_argument("--grant", metavar="G", help="the credential the agent presents")
    parser.add_argument("--session", metavar="S", help="the MCP session id")
    parser.add_argument("--agent", metavar="A", help="the agent's id")
    parser.add_argument(
        "--attr",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a subject attribute (subject.attributes.KEY), for conditions; repeatable",
    )
    parser.add_argument("--args", metavar="JSON", help="the call's arguments as a JSON object")


def parse_attributes(pairs: Sequence[str], command: str) -> dict[str, str]:
    """``KEY=VALUE`` options as a dict; a malformed one ends the command with a message."""
    attributes = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            print(f"toolgate {command}: --attr expects KEY=VALUE, got {pair!r}", file=sys.stderr)
            raise SystemExit(exits.UNUSABLE)
        attributes[key] = value
    return attributes


def parse_arguments(text: str | None) -> dict[str, Any] | None:
    """``--args`` as a JSON object (None when not given); ValueError says what is wrong."""
    if text is None:
        return None
    try:
        # A key given twice is refused, not resolved: the decision would be on one value and
        # a server keeping the other (decoders differ) would run another.
        arguments = json.loads(
            text, object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant
        )
    except json.JSONDecodeError as err:
        raise ValueError(f"--args is not valid JSON: {err}") from None
    if not isinstance(arguments, dict):
        raise ValueError("--args must be a JSON object")
    return arguments


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f"--args has the key {key!r} twice")
        seen.add(key)
    return dict(pairs)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"--args holds {name}, which is not JSON")
