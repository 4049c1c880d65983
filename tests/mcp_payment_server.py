"""An MCP server whose one payment tool acts, then waits: ``pay`` appends the payment to the
``--runs`` file (it has happened) and then waits until the file ``--runs`` + ``.go`` exists
before it confirms. A test can so do something (cancel the call, end the session) while the
tool is known to have acted and not yet answered. Official Python SDK, stateful Streamable
HTTP at ``/mcp`` on 127.0.0.1; ``--json`` answers POSTs with JSON, not SSE.

    python tests/mcp_payment_server.py --port 8000 --runs /tmp/runs
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import uvicorn
from mcp.server.mcpserver import MCPServer

#: The longest a payment waits for the test's go-ahead before it confirms anyway.
PATIENCE = 30.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--json", action="store_true", help="answer POSTs with JSON, not SSE")
    args = parser.parse_args()
    go = args.runs.with_name(args.runs.name + ".go")
    server = MCPServer("payments", log_level="WARNING")

    @server.tool()
    def pay(amount: float) -> str:
        """Pay: the payment is made at once, and confirmed once the test says so."""
        with args.runs.open("a") as runs:
            runs.write(f"{amount}\n")
        deadline = time.monotonic() + PATIENCE
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return f"paid {amount}"

    app = server.streamable_http_app(
        streamable_http_path="/mcp", json_response=args.json, host="127.0.0.1"
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
