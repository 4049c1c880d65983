"""agentgateway's ExtMCP as its client speaks it (crates/agentgateway/src/mcp/guardrails/
client.rs in agentgateway): the messages compiled from the repository's proto/agentgateway/
ext_mcp.proto, and a client that sends `CheckRequest` and `CheckResponse` the way the gateway
does (method, the server's unmuxed name, the JSON-RPC params or result as raw bytes, the
client's headers as raw bytes, and `metadata_context`, the values its CEL computed)."""

from __future__ import annotations

import importlib.util
import json
import tempfile
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"

_out = Path(tempfile.mkdtemp(prefix="toolgate-ext-mcp-"))
_include = str(Path(protoc.__file__).parent / "_proto")
_status = protoc.main(
    ["protoc", f"-I{PROTO}", f"-I{_include}", f"--python_out={_out}", "agentgateway/ext_mcp.proto"]
)
assert _status == 0, "proto/agentgateway/ext_mcp.proto does not compile"
# Loaded from its file, under a name of its own: on the tests' path `agentgateway` is
# tests/agentgateway.py (the gateway's runner), which a package import would find first.
_spec = importlib.util.spec_from_file_location(
    "toolgate_test_ext_mcp_pb2", _out / "agentgateway" / "ext_mcp_pb2.py"
)
assert _spec is not None and _spec.loader is not None
pb: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pb)

SERVICE = "/agentgateway.dev.ext_mcp.ExtMcp"
Code = pb.AuthorizationError.Code


def struct(values: dict[str, Any] | None) -> struct_pb2.Struct | None:
    if values is None:
        return None
    s = struct_pb2.Struct()
    s.update(values)
    return s


class ExtMcp:
    """A client of one sidecar's ExtMcp service, as agentgateway's processor is."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target)
        self._request = self.channel.unary_unary(
            f"{SERVICE}/CheckRequest",
            request_serializer=pb.McpRequest.SerializeToString,
            response_deserializer=pb.McpRequestResult.FromString,
        )
        self._response = self.channel.unary_unary(
            f"{SERVICE}/CheckResponse",
            request_serializer=pb.McpResponse.SerializeToString,
            response_deserializer=pb.McpResponseResult.FromString,
        )

    def __enter__(self) -> ExtMcp:
        return self

    def __exit__(self, *_: object) -> None:
        self.channel.close()

    def request(
        self,
        method: str,
        params: bytes | dict[str, Any] | None,
        *,
        servers: list[str] = ("srv",),
        headers: list[tuple[str, bytes | str]] = (),
        metadata: dict[str, Any] | None = None,
    ) -> Any:
        """``CheckRequest``: params as raw JSON (a dict is serialized as the gateway would)."""
        if isinstance(params, dict):
            params = json.dumps(params).encode()
        message = pb.McpRequest(
            service_names=list(servers),
            method=method,
            headers=[
                pb.McpHeader(key=k, value=v.encode() if isinstance(v, str) else v)
                for k, v in headers
            ],
        )
        if params is not None:
            message.mcp_request = params
        if metadata is not None:
            message.metadata_context.CopyFrom(struct(metadata))
        return self._request(message, timeout=30)

    def call(self, tool: str, arguments: dict[str, Any] | None = None, **kw: Any) -> Any:
        """The request hook of a ``tools/call``."""
        params: dict[str, Any] = {"name": tool}
        if arguments is not None:
            params["arguments"] = arguments
        return self.request("tools/call", params, **kw)

    def response(
        self,
        method: str,
        result: bytes | dict[str, Any],
        *,
        servers: list[str] = ("srv",),
        metadata: dict[str, Any] | None = None,
    ) -> Any:
        """``CheckResponse``: the upstream's JSON-RPC result as raw JSON."""
        if isinstance(result, dict):
            result = json.dumps(result).encode()
        message = pb.McpResponse(service_names=list(servers), method=method, mcp_response=result)
        if metadata is not None:
            message.metadata_context.CopyFrom(struct(metadata))
        return self._response(message, timeout=30)


def outcome(result: Any) -> str:
    """``pass``, ``mutated`` or ``error`` (the oneof's name)."""
    return str(result.WhichOneof("result"))


def error_data(result: Any) -> dict[str, Any]:
    """The JSON-RPC error's ``data`` an ``AuthorizationError`` carries (its ``mcp_error``)."""
    assert outcome(result) == "error", result
    return json.loads(result.error.mcp_error) if result.error.HasField("mcp_error") else {}


def decision(result: Any) -> dict[str, Any]:
    """The decision's details in a refusal's data."""
    return error_data(result)["toolgate/decision"]
