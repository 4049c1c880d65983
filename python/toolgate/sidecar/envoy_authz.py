"""How the sidecar reads Envoy's external authorization requests
(``envoy.service.auth.v3.Authorization/Check``) on MCP Streamable HTTP traffic: who is
calling comes from configured headers or from the claims of a JWT that Envoy verified.

Envoy sends each request's headers and body (``with_request_body``, ``pack_as_bytes``); the
Rust data plane reads the JSON-RPC body, decides a ``tools/call`` and, when the call may not
run, writes the JSON-RPC answer that Envoy sends to the client instead of forwarding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from toolgate._core import (
    DEFAULT_AGENT_HEADER,
    DEFAULT_GRANT_HEADER,
    DEFAULT_JWT_PAYLOAD_KEY,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_SERVER_HEADER,
    DEFAULT_SESSION_HEADER,
)


@dataclass(frozen=True)
class SubjectHeaders:
    """Which request header means what. Names are lower case, as Envoy sends them.

    ``grant``: the credential; for ``authorization`` the token of a ``Bearer`` value, read
    strictly (RFC 6750), any other value refused. ``session``: the MCP session. ``agent``:
    the calling agent. ``server``: the MCP server id when the route sets no ``server``
    context extension.
    """

    grant: str = DEFAULT_GRANT_HEADER
    session: str = DEFAULT_SESSION_HEADER
    agent: str = DEFAULT_AGENT_HEADER
    server: str = DEFAULT_SERVER_HEADER

    def __post_init__(self) -> None:
        for name, header in vars(self).items():
            if not header or header != header.lower():
                raise ValueError(f"header for {name} must be a non-empty lower-case name")


@dataclass(frozen=True)
class CheckSettings:
    """How ``Check`` requests are read.

    ``grant_claim``/``session_claim``/``agent_claim``: take the grant/session/agent from this
    claim of the JWT that Envoy's ``jwt_authn`` filter verified (its ``payload_in_metadata`` is
    ``jwt_payload_key``) instead of a header. ``max_request_bytes``: Envoy's
    ``with_request_body.max_request_bytes``; a body of that size without ``content-length``
    may have been cut there and is refused.
    """

    headers: SubjectHeaders = field(default_factory=SubjectHeaders)
    grant_claim: str | None = None
    session_claim: str | None = None
    agent_claim: str | None = None
    jwt_payload_key: str = DEFAULT_JWT_PAYLOAD_KEY
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES


def parse_subject_source(text: str) -> str | None:
    """``--grant-from``/``--session-from``/``--agent-from``: ``header`` (the configured
    header) → None, or ``jwt:CLAIM`` → the claim."""
    if text == "header":
        return None
    kind, sep, claim = text.partition(":")
    if kind != "jwt" or not sep or not claim:
        raise ValueError(f"expected 'header' or 'jwt:CLAIM', got {text!r}")
    return claim


def format_subject_source(claim: str | None) -> str:
    """The ``--grant-from``/``--session-from``/``--agent-from`` text for a claim (None: the
    header)."""
    return "header" if claim is None else f"jwt:{claim}"
