"""The worked example's second MCP server (official Python SDK, Streamable HTTP at ``/mcp`` on
127.0.0.1): one tool, ``send_mail``, a way out for data that another server let the agent
read. Nothing is sent anywhere.

    python examples/crm/mail_server.py --port 8001
"""

from __future__ import annotations

import argparse

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations


def build_server() -> MCPServer:
    server = MCPServer("toolgate-mail-example", version="1.0.0", log_level="WARNING")

    @server.tool(annotations=ToolAnnotations(readOnlyHint=False, openWorldHint=True))
    def send_mail(to: str, subject: str, body: str) -> str:
        """Send a mail to anyone."""
        return f"mailed {subject!r} to {to}"

    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    app = build_server().streamable_http_app(json_response=True)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
