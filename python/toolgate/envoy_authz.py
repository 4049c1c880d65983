"""Envoy's external authorization API (``envoy.service.auth.v3.Authorization/Check``) on MCP
Streamable HTTP traffic.

Envoy sends each request's headers and body (``with_request_body``, ``pack_as_bytes``); the
Rust core reads the JSON-RPC body, decides a ``tools/call`` and, when the call may not run,
writes the JSON-RPC answer that Envoy sends to the client instead of forwarding. Which header
carries the grant, session, agent and server is configuration (:class:`SubjectHeaders`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from google.rpc import code_pb2

from toolgate._core import Engine
from toolgate.service import read_request

SERVICE_NAME = "envoy.service.auth.v3.Authorization"

#: The context extension (set per route in Envoy) naming the MCP server behind the route.
SERVER_EXTENSION = "server"

#: Envoy marks a body it cut at ``max_request_bytes`` (``allow_partial_message``) this way.
PARTIAL_BODY_HEADER = "x-envoy-auth-partial-body"

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD

#: Serialized OK answers kept (one per rule, in practice); emptied when full.
_FORWARD_CACHE_SIZE = 4096


@dataclass(frozen=True)
class SubjectHeaders:
    """Which request header means what. Names are lower case, as Envoy sends them.

    ``grant``: the credential; for ``authorization`` the token after ``Bearer `` is used.
    ``session``: the MCP session. ``agent``: the calling agent. ``server``: the MCP server id
    when the route sets no ``server`` context extension.
    """

    grant: str = "authorization"
    session: str = "mcp-session-id"
    agent: str = "x-agent-id"
    server: str = "x-mcp-server"

    def __post_init__(self) -> None:
        for field, name in vars(self).items():
            if not name or name != name.lower():
                raise ValueError(f"header for {field} must be a non-empty lower-case name")


def bearer_token(value: str | None) -> str | None:
    """The credential in an ``Authorization`` value: the token of ``Bearer <token>``, or the
    whole value for any other scheme (so a different scheme is still one grant per value)."""
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer":
        return token.strip() or None
    return value


def _truncated(headers: Mapping[str, str], body: bytes) -> bool:
    """Envoy cut the body, or sent less of it than the request declared."""
    if headers.get(PARTIAL_BODY_HEADER, "").lower() == "true":
        return True
    declared = headers.get("content-length")
    if declared is None:
        return False
    try:
        return int(declared) != len(body)
    except ValueError:
        return True


class AuthorizationService:
    """Answers ``Check`` from ``engine``."""

    def __init__(self, engine: Engine, headers: SubjectHeaders | None = None) -> None:
        self.engine = engine
        self.headers = headers or SubjectHeaders()
        self._forwards: dict[tuple[tuple[str, str], ...], bytes] = {}

    def check(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        req = read_request(external_auth_pb2.CheckRequest, request, context)
        http = req.attributes.request.http
        headers = http.headers
        body = http.raw_body or http.body.encode()
        names = self.headers
        grant = headers.get(names.grant)
        if names.grant == "authorization":
            grant = bearer_token(grant)
        server = req.attributes.context_extensions.get(SERVER_EXTENSION) or headers.get(
            names.server
        )
        answer = self.engine.check_http(
            body,
            http_method=http.method or "POST",
            truncated=_truncated(headers, body),
            server=server or None,
            grant=grant or None,
            session=headers.get(names.session) or None,
            agent=headers.get(names.agent) or None,
            mcp_method=headers.get("mcp-method"),
            mcp_name=headers.get("mcp-name"),
        )
        if answer.forward:
            return self._forward(tuple(answer.headers))
        reason = answer.decision.reason if answer.decision is not None else "refused"
        response = external_auth_pb2.CheckResponse()
        response.status.code = code_pb2.PERMISSION_DENIED
        response.status.message = reason
        denied = response.denied_response
        denied.status.code = answer.status
        _add_headers(denied.headers, answer.headers)
        denied.body = answer.body.decode()
        return response.SerializeToString()

    def _forward(self, headers: tuple[tuple[str, str], ...]) -> bytes:
        """An OK answer adding ``headers`` to the response. Allowed calls differ only by
        rule (and shadow), so the serialized answers are kept: building protobuf messages
        costs more than the decision."""
        cached = self._forwards.get(headers)
        if cached is None:
            response = external_auth_pb2.CheckResponse()
            response.status.code = code_pb2.OK
            response.ok_response.SetInParent()
            _add_headers(response.ok_response.response_headers_to_add, headers)
            cached = response.SerializeToString()
            if len(self._forwards) >= _FORWARD_CACHE_SIZE:
                self._forwards.clear()
            self._forwards[headers] = cached
        return cached


def _add_headers(options: Any, headers: Iterable[tuple[str, str]]) -> None:
    for key, value in headers:
        option = options.add()
        option.header.key = key
        option.header.value = value
        option.append_action = _OVERWRITE


def authorization_handler(service: AuthorizationService) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE_NAME, {"Check": grpc.unary_unary_rpc_method_handler(service.check)}
    )
