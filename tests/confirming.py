"""What the confirmation tests share: the MCP 2026-07-28 fields a client that can be asked
declares, toolgate's form key, and how many calls reached the example server."""

from __future__ import annotations

import json

from mcp_servers import ExampleServer

META = "toolgate/decision"
PREFIX = "toolgate.confirm."
REVISION = "2026-07-28"
VERSION_KEY = "io.modelcontextprotocol/protocolVersion"
CAPABILITIES_KEY = "io.modelcontextprotocol/clientCapabilities"
#: A request's `_meta` from a client that can be asked (form elicitation).
CAPABLE = {VERSION_KEY: REVISION, CAPABILITIES_KEY: {"elicitation": {"form": {}}}}


def ran(example: ExampleServer, marker: str) -> int:
    """How many tools/call messages holding ``marker`` (as sent) reached the server."""
    count = 0
    for r in example.requests():
        if marker in r["body"]:
            count += json.loads(r["body"]).get("method") == "tools/call"
    return count
