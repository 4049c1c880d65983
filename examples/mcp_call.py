"""Call one MCP tool through a proxy with the official MCP client, and print each result.

    python examples/mcp_call.py http://127.0.0.1:10000/mcp create-ami '{"name": "web"}' \\
        --token alice --repeat 31

One session (the initialize handshake), ``--repeat`` calls; a denial shows its reason and the
decision toolgate put under ``_meta``. ``--list`` first prints the tools the server lists
(every page). ``--confirm yes|no`` speaks MCP 2026-07-28 instead, as a client whose user
answers every question (an elicitation form) with yes or no: each question is printed with
the answer. Needs ``pip install mcp``. A proxy that cannot be reached, or Ctrl-C, ends it
with one line on stderr.

Exits 0 when every call ran, 1 when one was denied or failed, 3 when the proxy could not be
reached, 130 on Ctrl-C (as ``toolgate``'s commands do).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import anyio
import httpx2
import mcp.types as types
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


def messages_after_close(record: logging.LogRecord) -> bool:
    """Whether to log ``record``: not the MCP client's traceback for a message the server sent
    as the session closed (a notification from a server that sends them on its own), which no
    one was reading any more."""
    error = record.exc_info[1] if record.exc_info else None
    return not isinstance(error, anyio.BrokenResourceError | anyio.ClosedResourceError)


logging.getLogger("mcp.client.streamable_http").addFilter(messages_after_close)


def user_who_says(answer: str):
    """An elicitation handler: prints each question and answers it ``answer``."""

    async def handler(context, params: types.ElicitRequestParams) -> types.ElicitResult:
        print(f"asked: {params.message} -> {answer}")
        if answer == "yes":
            return types.ElicitResult(action="accept", content={"approve": True})
        return types.ElicitResult(action="decline")

    return handler


async def run_confirming(url: str, tool: str, arguments: dict, token: str, answer: str) -> bool:
    headers = {"authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0)) as http:
        transport = streamable_http_client(url, http_client=http)
        client = Client(transport, mode="2026-07-28", elicitation_callback=user_who_says(answer))
        async with client:
            try:
                result = await client.call_tool(tool, arguments)
            except MCPError as err:
                print(f"1: error {err.code}: {err.message}")
                return False
            return show(1, result)


def show(i: int, result: types.CallToolResult) -> bool:
    """Print one call's result; whether it ran."""
    text = " ".join(c.text for c in result.content if c.type == "text")
    if result.is_error:
        decision = (result.meta or {}).get("toolgate/decision", {})
        print(f"{i}: DENIED {decision.get('code')}: {text}")
        return False
    print(f"{i}: ok: {text}")
    return True


async def run(url: str, tool: str, arguments: dict, token: str, repeat: int, listing: bool) -> bool:
    headers = {"authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0)) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        if listing:
            names, cursor = [], None
            while True:
                params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
                page = await session.list_tools(params=params)
                names += [t.name for t in page.tools]
                if (cursor := page.next_cursor) is None:
                    break
            print("tools:", " ".join(names))
        ran = True
        for i in range(1, repeat + 1):
            try:
                result = await session.call_tool(tool, arguments)
            except MCPError as err:
                print(f"{i}: error {err.code}: {err.message}")
                ran = False
                continue
            ran = show(i, result) and ran
        return ran


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("tool")
    parser.add_argument("arguments", nargs="?", default="{}", help="a JSON object")
    parser.add_argument("--token", default="alice", help="sent as Authorization: Bearer TOKEN")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--list", action="store_true", help="print the listed tools first")
    parser.add_argument(
        "--confirm",
        choices=["yes", "no"],
        help="speak MCP 2026-07-28, the user answering every question so",
    )
    args = parser.parse_args()
    arguments = json.loads(args.arguments)
    try:
        if args.confirm:
            ran = anyio.run(
                run_confirming, args.url, args.tool, arguments, args.token, args.confirm
            )
        else:
            ran = anyio.run(run, args.url, args.tool, arguments, args.token, args.repeat, args.list)
    except KeyboardInterrupt:
        print("mcp_call.py: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as err:
        print(f"mcp_call.py: {args.url}: {innermost(err)}", file=sys.stderr)
        sys.exit(3)
    sys.exit(0 if ran else 1)


def innermost(err: BaseException) -> str:
    """The first error inside the task groups the MCP client nests it in, in one line."""
    while isinstance(err, BaseExceptionGroup) and err.exceptions:
        err = err.exceptions[0]
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


if __name__ == "__main__":
    main()
