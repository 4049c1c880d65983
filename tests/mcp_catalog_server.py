"""An MCP server with a large, paginated tool catalogue, for the tests of what the agent sees
and of calls that fail upstream. Written with the official Python SDK's low-level server.

    python tests/mcp_catalog_server.py --port 8000 --tools 1000 --page-size 100

Tools: ``read_NNNN``, ``write_NNNN`` and ``delete_NNNN`` in turn (``--tools`` of them, listed
``--page-size`` at a time with ``nextCursor``), plus ``charge``, which takes ``amount`` and
``outcome``: ``ok`` (a result), ``tool_error`` (a result with ``isError: true``),
``jsonrpc_error`` (a JSON-RPC error raised before it runs: invalid params) or
``internal_error`` (a JSON-RPC internal error, which may come after it acted). ``--json``
answers POSTs with plain JSON, not SSE. ``tools/list`` results carry cache hints
(``cacheScope: "public"``) to clients of the 2026-07-28 protocol.
"""

from __future__ import annotations

import argparse
from typing import Any

import mcp.types as types
import uvicorn
from mcp.server.caching import CacheHint
from mcp.server.lowlevel.server import Server
from mcp.shared.exceptions import MCPError

KINDS = ("read", "write", "delete")


def tool_names(count: int) -> list[str]:
    return [f"{KINDS[i % 3]}_{i:04d}" for i in range(count)] + ["charge"]


def build_server(count: int, page_size: int) -> Server[Any]:
    names = tool_names(count)
    schema = {"type": "object", "properties": {"note": {"type": "string"}}}
    charge_schema = {
        "type": "object",
        "properties": {"amount": {"type": "number"}, "outcome": {"type": "string"}},
        "required": ["amount"],
    }

    async def list_tools(
        ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        start = int(params.cursor) if params and params.cursor else 0
        page = names[start : start + page_size]
        tools = [
            types.Tool(
                name=name,
                description=f"{name.split('_')[0]} something",
                input_schema=charge_schema if name == "charge" else schema,
            )
            for name in page
        ]
        more = start + page_size < len(names)
        return types.ListToolsResult(
            tools=tools, next_cursor=str(start + page_size) if more else None
        )

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        arguments = params.arguments or {}
        if params.name == "charge":
            outcome = arguments.get("outcome", "ok")
            if outcome == "jsonrpc_error":
                raise MCPError(code=-32602, message="the payment was refused: nothing charged")
            if outcome == "internal_error":
                raise MCPError(code=-32603, message="the payment provider is down")
            text = f"charged {arguments.get('amount')}"
            return types.CallToolResult(
                content=[
                    types.TextContent(type="text", text=text if outcome == "ok" else "declined")
                ],
                is_error=outcome == "tool_error",
            )
        if params.name not in names:
            raise MCPError(code=-32602, message=f"Unknown tool: {params.name}")
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=f"ran {params.name}")]
        )

    return Server(
        "toolgate-catalog",
        version="1.0.0",
        cache_hints={"tools/list": CacheHint(ttl_ms=60_000, scope="public")},
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tools", type=int, default=30)
    parser.add_argument("--page-size", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="answer POSTs with JSON, not SSE")
    args = parser.parse_args(argv)
    app = build_server(args.tools, args.page_size).streamable_http_app(
        streamable_http_path="/mcp", json_response=args.json, host="127.0.0.1"
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
