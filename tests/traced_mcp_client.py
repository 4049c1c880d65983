"""An agent that traces its own MCP calls, as a user's would: the official MCP client, with
OpenTelemetry's SDK exporting its spans over OTLP/gRPC. Its turn is one span, passed on as
every HTTP request's ``traceparent``; the SDK puts each call's own span in ``_meta``.

    python tests/traced_mcp_client.py URL OTLP_ENDPOINT TOOL ARGUMENTS_JSON

Prints ``{"trace_id": ..., "protocol": ..., "is_error": ..., "error": ...}`` once its spans
are exported (``protocol``: the revision the session agreed on, which its requests declare):
``error`` the JSON-RPC error's code where the call was refused with one (as agentgateway
refuses), else ``is_error`` the result's."""

from __future__ import annotations

import json
import sys

import anyio
import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor


async def turn(url: str, tool: str, arguments: dict[str, object]) -> dict[str, object]:
    tracer = trace.get_tracer("agent")
    with tracer.start_as_current_span("agent turn") as root:
        headers: dict[str, str] = {}
        propagate.inject(headers)
        async with httpx2.AsyncClient(headers=headers, timeout=30.0) as http:
            transport = streamable_http_client(url, http_client=http)
            async with transport as (read, write), ClientSession(read, write) as session:
                with anyio.fail_after(60):
                    initialized = await session.initialize()
                    try:
                        result = await session.call_tool(tool, arguments)
                        answer: dict[str, object] = {"is_error": result.is_error, "error": None}
                    except MCPError as e:
                        answer = {"is_error": None, "error": e.error.code}
        trace_id = format(root.get_span_context().trace_id, "032x")
    return {"trace_id": trace_id, "protocol": initialized.protocol_version, **answer}


def main() -> None:
    url, otlp, tool, arguments = sys.argv[1:5]
    provider = TracerProvider(resource=Resource.create({"service.name": "agent"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(otlp, insecure=True)))
    trace.set_tracer_provider(provider)
    done = anyio.run(turn, url, tool, json.loads(arguments))
    provider.shutdown()
    print(json.dumps(done))


if __name__ == "__main__":
    main()
