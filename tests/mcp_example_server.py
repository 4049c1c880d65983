"""An MCP server for the end-to-end tests, written with the official Python SDK (``mcp`` 2.x):
tools named like those of PolicyLayer's example policies, served over Streamable HTTP at
``/mcp`` on 127.0.0.1.

    python tests/mcp_example_server.py --port 8000 --log /tmp/mcp-requests.jsonl

Every HTTP request it receives is appended to the log file as one JSON line
``{"method", "path", "query", "headers", "body"}`` *before* the SDK sees it, so a test can prove
that a request (say, a malformed body) never reached the server. The tools do nothing real:
``run_command`` echoes its command, ``transfer_funds`` moves no money.

Stateful mode (``Mcp-Session-Id``, SSE answers, the GET stream), as MCP servers are usually
deployed: the proxy is tested on the hard case. ``--json`` answers POSTs with plain JSON and
``--stateless`` drops sessions, for tests that want them. ``--resumable`` keeps every event in
memory and replays a stream after ``Last-Event-ID`` (the SDK's ``event_store``); ``--gzip``
compresses answers for clients that accept it (Starlette's ``GZipMiddleware``), as servers
behind a compressing front end do.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.types import JSONRPCMessage, ToolAnnotations
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def build_server() -> MCPServer:
    server = MCPServer("toolgate-example", version="1.0.0", log_level="WARNING")

    @server.tool(name="create-ami", annotations=ToolAnnotations(destructiveHint=False))
    def create_ami(name: str) -> str:
        """Create a machine image (pretend): the id is derived from the name."""
        return f"created ami-{hashlib.sha256(name.encode()).hexdigest()[:17]}"

    @server.tool(annotations=ToolAnnotations(readOnlyHint=True))
    def list_images() -> str:
        """List the machine images."""
        return "ami-0123456789abcdef0 base\nami-0fedcba9876543210 web"

    @server.tool(annotations=ToolAnnotations(destructiveHint=False, openWorldHint=True))
    def transfer_funds(amount: float, currency: str) -> str:
        """Transfer money (pretend)."""
        return f"transferred {amount:.2f} {currency}"

    @server.tool(annotations=ToolAnnotations(destructiveHint=True, openWorldHint=True))
    def run_command(command: str) -> str:
        """Run a shell command. (Echoes it; runs nothing.)"""
        return f"echo: {command}"

    @server.tool(annotations=ToolAnnotations(destructiveHint=True))
    def delete_image(id: str) -> str:
        """Delete a machine image (pretend)."""
        return f"deleted {id}"

    @server.tool(annotations=ToolAnnotations(destructiveHint=True))
    def terminate_instances(ids: list[str]) -> str:
        """Terminate instances (pretend)."""
        return f"terminated {len(ids)} instance(s): {', '.join(ids)}"

    return server


class MemoryEventStore(EventStore):
    """Every event of every stream, in memory, numbered in order: enough to resume."""

    def __init__(self) -> None:
        self.events: list[tuple[StreamId, JSONRPCMessage | None]] = []

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        self.events.append((stream_id, message))
        return str(len(self.events))

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        if not last_event_id.isdigit() or not 0 < int(last_event_id) <= len(self.events):
            return None
        stream_id = self.events[int(last_event_id) - 1][0]
        for n, (stream, message) in enumerate(
            self.events[int(last_event_id) :], int(last_event_id) + 1
        ):
            if stream == stream_id and message is not None:
                await send_callback(EventMessage(message, str(n)))
        return stream_id


class RequestLog:
    """ASGI middleware: read the whole request body, append one JSON line for the request to
    ``path``, then hand the request (body replayed) to ``app``."""

    def __init__(self, app: ASGIApp, path: str) -> None:
        self.app = app
        # Line-buffered append: each line is written (and visible to readers) before the SDK runs.
        self.file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        pending: list[Message] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away mid-body
                pending.append(message)
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        entry = {
            "method": scope["method"],
            "path": scope["path"],
            "query": scope.get("query_string", b"").decode("latin-1"),
            "headers": {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            "body": body.decode("utf-8", errors="replace"),
        }
        self.file.write(json.dumps(entry) + "\n")
        if not pending:
            pending.append({"type": "http.request", "body": body, "more_body": False})

        async def replay() -> Message:
            return pending.pop(0) if pending else await receive()

        await self.app(scope, replay, send)


class RequireBearer:
    """ASGI middleware: HTTP 401 for a request whose ``Authorization`` is not ``Bearer`` and
    one of ``tokens``, as a server that checks the credential it is sent answers."""

    def __init__(self, app: ASGIApp, tokens: list[str]) -> None:
        self.app = app
        self.accepted = {f"Bearer {t}".encode() for t in tokens}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sent = dict(scope.get("headers", [])).get(b"authorization")
        if scope["type"] != "http" or sent in self.accepted:
            await self.app(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [(b"www-authenticate", b"Bearer"), (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--log",
        default=os.environ.get("MCP_EXAMPLE_LOG"),
        help="append one JSON line per HTTP request here (default: $MCP_EXAMPLE_LOG)",
    )
    parser.add_argument("--json", action="store_true", help="answer POSTs with JSON, not SSE")
    parser.add_argument("--stateless", action="store_true", help="no sessions")
    parser.add_argument("--resumable", action="store_true", help="replay after Last-Event-ID")
    parser.add_argument("--gzip", action="store_true", help="compress answers when accepted")
    parser.add_argument(
        "--bearer",
        action="append",
        default=[],
        metavar="TOKEN",
        help="accept only requests with this bearer token (repeatable); others get 401",
    )
    args = parser.parse_args(argv)
    if not args.log:
        parser.error("--log (or MCP_EXAMPLE_LOG) is required")

    host = "127.0.0.1"
    app: Any = build_server().streamable_http_app(
        streamable_http_path="/mcp",
        json_response=args.json,
        stateless_http=args.stateless,
        event_store=MemoryEventStore() if args.resumable else None,
        # Host/Origin checks allow 127.0.0.1:* and localhost:*, which covers Envoy on loopback
        # (it forwards the client's Host header unchanged).
        host=host,
    )
    if args.gzip:
        app = GZipMiddleware(app, minimum_size=100)
    if args.bearer:
        app = RequireBearer(app, args.bearer)
    uvicorn.run(
        RequestLog(app, args.log),
        host=host,
        port=args.port,
        log_level="warning",
        lifespan="on",  # the SDK's session manager runs in the Starlette lifespan
    )


if __name__ == "__main__":
    sys.exit(main())
