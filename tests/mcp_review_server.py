"""Review scratch server (official Python SDK, stateful Streamable HTTP at /mcp): ``pay`` is a
slow sync tool that appends each payment to ``--runs`` *before* taking 0.5 s to confirm, so a
test can count what actually ran. ``--json`` answers POSTs with JSON instead of SSE."""
import argparse
import time

import uvicorn
from mcp.server.mcpserver import MCPServer

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--runs", required=True)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    server = MCPServer("review-slow", log_level="WARNING")

    @server.tool()
    def pay(amount: float) -> str:
        """Pay (records the payment, then takes a while to confirm)."""
        with open(a.runs, "a") as f:
            f.write(f"{amount}\n")
        time.sleep(0.5)
        return f"paid {amount}"

    @server.tool()
    def list_images() -> str:
        """List images."""
        return "ami-1"

    @server.tool()
    def delete_image(id: str) -> str:
        """Delete an image."""
        return f"deleted {id}"

    app = server.streamable_http_app(streamable_http_path="/mcp", json_response=a.json, host="127.0.0.1")
    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning", lifespan="on")

if __name__ == "__main__":
    main()
