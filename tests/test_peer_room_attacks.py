"""Attacks on the room per network address (docs/counters.md "Room per address"): other
spellings of one address, networks larger than one address, addresses a client could choose
(X-Forwarded-For through the rate-limit service), addresses toolgate cannot read, and counts
left behind by keys whose windows expired. Each attack is a test of the guarantee that holds.

Most tests drive an in-process sidecar (the one ``toolgate serve`` assembles) on a manual
clock, so expiry needs no waiting; some run real Envoy with the shipped configs. Addresses are
bucketed by a keyed hash with a per-process secret: assertions use several addresses and
require most of them to behave, or compare totals with margins no rare collision crosses.

Table: 256 slots, 128 for keys a client chose, pressed from 96, then 2 per address.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import test_envoy_authz_api as api
import toolgate
from conftest import START, limit, policy
from envoy.service.auth.v3 import external_auth_pb2
from envoy_proxy import DEPLOY, RATELIMIT, deployed, envoy_executable
from google.rpc import code_pb2
from mcp_servers import ExampleServer
from sidecar import Sidecar
from test_peer_room import post
from toolgate._core import Sidecar as NativeSidecar
from toolgate._core import SidecarSettings
from toolgate.sidecar.metrics import value
from toolgate.v1 import decider_pb2

CAPACITY = 256
SHARE, PRESSED, PER_ADDRESS = 128, 96, 2
DOC = policy({"list_images": {"limits": [limit("images", 1000, window="minute")]}})
SESSION_DOC = policy(
    {"list_images": {"limits": [limit("images_s", 1000, window="minute", scope="session")]}}
)
DECIDE = "/toolgate.v1.Decider/Decide"
DECIDE_BATCH = "/toolgate.v1.Decider/DecideBatch"


# --- an in-process sidecar on a manual clock ---------------------------------------------------


class Native:
    """A sidecar assembled in this process, serving gRPC on 127.0.0.1, on a manual clock."""

    def __init__(self, document: Any) -> None:
        self.clock = toolgate.ManualClock(START)
        settings = SidecarSettings(capacity=CAPACITY, listen="127.0.0.1:0")
        self.sidecar = NativeSidecar(document, settings, clock=self.clock)
        self.channel = grpc.insecure_channel(self.sidecar.serve())
        self._decide = self.channel.unary_unary(
            DECIDE,
            request_serializer=decider_pb2.DecideRequest.SerializeToString,
            response_deserializer=decider_pb2.DecideResponse.FromString,
        )
        self._batch = self.channel.unary_unary(
            DECIDE_BATCH,
            request_serializer=decider_pb2.DecideBatchRequest.SerializeToString,
            response_deserializer=decider_pb2.DecideBatchResponse.FromString,
        )
        self._check = self.channel.unary_unary(
            api.CHECK,
            request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
            response_deserializer=external_auth_pb2.CheckResponse.FromString,
        )

    def close(self) -> None:
        self.channel.close()
        self.sidecar.stop(1.0)

    def metric(self, name: str) -> float:
        return value(self.sidecar.engine.metrics(), name)

    def request(
        self, grant: str = "", address: str = "", session: str = ""
    ) -> decider_pb2.DecideRequest:
        subject = decider_pb2.Subject(grant=grant, session=session, peer_address=address)
        return decider_pb2.DecideRequest(tool="list_images", subject=subject)

    def decide(self, grant: str = "", address: str = "", session: str = "") -> str:
        """The decision's code name."""
        response = self._decide(self.request(grant, address, session), timeout=30)
        return decider_pb2.Code.Name(response.code)

    def decide_raw(self, request: decider_pb2.DecideRequest) -> decider_pb2.DecideResponse:
        return self._decide(request, timeout=30)

    def batch(self, requests: list[decider_pb2.DecideRequest]) -> list[str]:
        response = self._batch(decider_pb2.DecideBatchRequest(requests=requests), timeout=30)
        return [decider_pb2.Code.Name(r.code) for r in response.responses]

    def given(self, address: str, tag: str, tokens: int, scope: str = "grant") -> int:
        """New made-up keys from ``address``: how many were let in."""
        codes = [self.decide(address=address, **{scope: f"{tag}-{n}"}) for n in range(tokens)]
        assert set(codes) <= {"ALLOWED", "RATE_LIMITED", "INVALID_REQUEST"}, codes
        return codes.count("ALLOWED")

    def check(self, token: str, source: Any = None, headers: dict[str, str] | None = None) -> bool:
        """An ext_authz Check of a ``tools/call`` with bearer ``token``, its
        ``attributes.source`` set by ``source(peer)`` when given: whether it was let through
        (False: refused as the table being full)."""
        request = api.check_request(
            api.call_body("list_images", {}),
            headers={**api.bearer(token), **(headers or {})},
        )
        if source is not None:
            source(request.attributes.source)
        r = self._check(request, timeout=30)
        if r.status.code == code_pb2.OK:
            return True
        assert r.status.code == code_pb2.PERMISSION_DENIED, r
        assert "counter table is full" in r.denied_response.body, r.denied_response.body
        return False


@pytest.fixture
def native() -> Iterator[Native]:
    n = Native(DOC)
    try:
        yield n
    finally:
        n.close()


def flood_to_pressure(n: Native, address: str = "198.51.100.7") -> None:
    """One address takes its three quarters of the share."""
    assert n.given(address, "flood", SHARE) == PRESSED
    assert n.metric("toolgate_counter_table_client_slots") == PRESSED


def socket(address: str):
    def set_source(peer: Any) -> None:
        peer.address.socket_address.address = address
        peer.address.socket_address.port_value = 40000

    return set_source


# --- spellings of one address ------------------------------------------------------------------


#: Every way a proxy might write 198.51.100.7 that parses: the same address's part.
SAME_IPV4 = [
    "::ffff:198.51.100.7",
    "::FFFF:198.51.100.7",
    "::ffff:c633:6407",
    "0:0:0:0:0:ffff:c633:6407",
    "0000:0000:0000:0000:0000:FFFF:C633:6407",
]
#: Spellings two parsers could read apart (or not addresses at all): refused, never taken as
#: "no address" (which would fall back to the share-only bound).
ODD = [
    "198.51.100.7.",
    "198.51.100.07",
    "0198.51.100.7",
    "0xc6.51.100.7",
    "3325256711",
    "198.51.100",
    "198.51.100.7:443",
    "[::ffff:198.51.100.7]",
    "198.51.100.7/32",
    "198.51.100.7\n",
    "\t198.51.100.7",
    "198.51.100.7\x00",
    "::ffff:198.51.100.7%0",
    "fe80::1%25eth0",
    "\u0661\u0669\u0668.\u0665\u0661.\u0661\u0660\u0660.\u0667",  # Arabic-Indic digits
    "\uff11\uff19\uff18.\uff15\uff11.\uff11\uff10\uff10.\uff17",  # fullwidth digits
    "localhost",
    "unix:/run/envoy.sock",
    "2001:db8::1::2",
    "x" * 100_000,
]


def test_every_spelling_of_a_flooding_ipv4_address_counts_as_it(native):
    flood_to_pressure(native)
    for n, text in enumerate(SAME_IPV4):
        assert native.decide(f"spelled-{n}", text) == "RATE_LIMITED", text
    assert native.metric("toolgate_counter_table_client_slots") == PRESSED


def test_every_spelling_of_one_ipv6_network_counts_as_one(native):
    flood_to_pressure(native, "2001:db8:7:7::1")
    for n, text in enumerate(
        [
            "2001:DB8:7:7::1",
            "2001:0db8:0007:0007:0000:0000:0000:0001",
            "2001:db8:7:7:ffff:ffff:ffff:ffff",
            "2001:db8:7:7::198.51.100.7",
        ]
    ):
        assert native.decide(f"v6-{n}", text) != "ALLOWED", text
    assert native.metric("toolgate_counter_table_client_slots") == PRESSED


@pytest.mark.parametrize("text", ODD, ids=range(len(ODD)))
def test_decide_refuses_an_odd_peer_address_instead_of_ignoring_it(native, text):
    flood_to_pressure(native)
    response = native.decide_raw(native.request("odd-one", text))
    assert decider_pb2.Code.Name(response.code) == "INVALID_REQUEST", text
    assert "peer_address is not an IP address" in response.reason
    # Refused before counting: no slot taken; and the sidecar still answers.
    assert native.metric("toolgate_counter_table_client_slots") == PRESSED
    assert native.decide("flood-0", "198.51.100.7") == "ALLOWED"


def test_decide_batch_judges_each_peer_address_on_its_own(native):
    flood_to_pressure(native)
    requests = [
        native.request("b-0", "not an address"),
        native.request("b-1", "::ffff:198.51.100.7"),
        native.request("b-2", "203.0.113.9"),
        native.request("b-3", "198.51.100.7%eth0"),
        native.request("b-4", ""),
        native.request("flood-1", "192.0.2.1"),
    ]
    assert native.batch(requests) == [
        "INVALID_REQUEST",
        "RATE_LIMITED",
        "ALLOWED",
        "INVALID_REQUEST",
        "ALLOWED",
        "ALLOWED",
    ]


def test_ipv4_compatible_addresses_share_one_part_and_multiply_nothing(native):
    """``::a.b.c.d`` (deprecated IPv4-compatible) is not read as a.b.c.d, but every such
    address is one network (::/48): spelling the flooder's addresses this way gains at most
    one part in all, however many IPv4 addresses are embedded."""
    flood_to_pressure(native)
    taken = sum(native.given(f"::198.51.100.{n}", f"compat-{n}", 2) for n in range(1, 30))
    assert taken <= PER_ADDRESS


# --- IPv6 networks larger than a /64 -----------------------------------------------------------


def test_one_ipv6_site_is_one_address_whatever_its_subnets(native):
    flood_to_pressure(native, "2001:db8:7:700::1")
    # The same /56, another /64 each time.
    more = sum(native.given(f"2001:db8:7:7{n:02x}::1", f"sub-{n}", 4) for n in range(1, 40))
    assert more <= PER_ADDRESS, more
    # A new caller somewhere else still finds room.
    assert native.given("192.0.2.50", "victim", PER_ADDRESS) == PER_ADDRESS


def test_6to4_gives_one_ipv4_address_one_part(native):
    flood_to_pressure(native)
    # 198.51.100.7 = c633:6407; 2002:c633:6407:N::/64 are all that host's.
    more = sum(native.given(f"2002:c633:6407:{n:x}::1", f"6to4-{n}", 4) for n in range(1, 40))
    assert more <= PER_ADDRESS, more


def test_nat64_clients_count_as_their_ipv4_addresses(native):
    flood_to_pressure(native, "64:ff9b::c633:6407")  # 198.51.100.7 translated
    others = [
        native.given(f"64:ff9b::cb00:71{n:02x}", f"nat64-{n}", PER_ADDRESS) for n in range(1, 9)
    ]
    # Each other IPv4 client should find its own part (allow one bucket collision).
    assert sorted(others)[1] == PER_ADDRESS, others


# --- counts as keys leave the table -------------------------------------------------------------


def test_an_address_whose_keys_expired_finds_room_again(native):
    flood_to_pressure(native)
    native.clock.advance(3600)  # every one-minute window long expired
    assert native.given("198.51.100.7", "later", 4) >= 1


def test_an_expired_flood_presses_no_other_address(native):
    flood_to_pressure(native)
    native.clock.advance(3600)
    assert native.given("192.0.2.77", "fresh", 10) > PER_ADDRESS


def test_once_the_half_is_swept_the_flooder_finds_room_again(native):
    """No count leaks for good: once others fill the share, the sweep frees the expired
    slots and every address's count with them."""
    flood_to_pressure(native)
    for n in range(1, 60):
        native.given(f"192.0.2.{n}", f"other-{n}", 3)
    assert native.metric("toolgate_counter_table_client_slots") == SHARE
    native.clock.advance(3600)
    assert native.given("198.51.100.7", "back", PRESSED) == PRESSED
    # The sweep freed the flood's old slots too: counted from nothing, held to the same bound.
    assert native.metric("toolgate_counter_table_client_slots") == PRESSED
    assert native.given("198.51.100.7", "back-more", 4) == 0


def test_swept_counts_start_again_from_what_is_held(native):
    """Round after round of floods that expire and are swept: every address's count follows
    the slots it holds now; none drifts upward until it is locked out."""
    flood_to_pressure(native)
    for round in range(4):
        for n in range(1, 60):
            native.given(f"192.0.2.{n}", f"fill-{round}-{n}", 3)
        assert native.metric("toolgate_counter_table_client_slots") == SHARE
        native.clock.advance(3600)
        # Swept: a flood from a new address takes three quarters again...
        given = native.given("203.0.113.5", f"r{round}", SHARE)
        assert given == PRESSED, (round, given)
        # ...and the old flooder is not held by slots it no longer has: its part, no less.
        assert native.given("198.51.100.7", f"flood-r{round}", 4) == PER_ADDRESS, round


# --- sessions, refused requests -----------------------------------------------------------------


def test_session_ids_honour_the_bound():
    n = Native(SESSION_DOC)
    try:
        assert n.given("198.51.100.7", "sess", SHARE, scope="session") == PRESSED
        assert n.given("198.51.100.7", "sess-more", 10, scope="session") == 0
        others = sorted(
            n.given(f"192.0.2.{k}", f"s-{k}", PER_ADDRESS + 2, scope="session") for k in range(1, 5)
        )
        assert others[1:] == [PER_ADDRESS] * 3, others
    finally:
        n.close()


def test_a_refused_request_takes_no_slot(native):
    flood_to_pressure(native)
    before = native.metric("toolgate_counter_table_client_slots")
    for k in range(20):
        assert native.decide(f"refused-{k}", "198.51.100.7") == "RATE_LIMITED"
        assert native.decide(f"odd-{k}", "198.51.100.7 ") == "INVALID_REQUEST"
    assert native.metric("toolgate_counter_table_client_slots") == before
    assert native.metric("toolgate_counter_table_peer_refusals") >= 20


# --- ext_authz Check: the address Envoy gives ----------------------------------------------------


def test_check_counts_the_source_socket_address(native):
    for k in range(SHARE):
        native.check(f"flood-{k}", socket("198.51.100.7"))
    assert native.metric("toolgate_counter_table_client_slots") == PRESSED
    assert not native.check("mapped", socket("::ffff:198.51.100.7"))
    others = sorted(
        sum(native.check(f"o{k}-{i}", socket(f"192.0.2.{k}")) for i in range(4))
        for k in range(1, 5)
    )
    assert others[1:] == [PER_ADDRESS] * 3, others


def test_headers_do_not_choose_the_checks_address(native):
    """Headers a client writes (X-Forwarded-For, X-Envoy-External-Address, X-Real-IP) do not
    reach the count: only the Check's source does."""
    for k in range(SHARE):
        native.check(f"flood-{k}", socket("198.51.100.7"))
    spoofed = sum(
        native.check(
            f"spoof-{k}",
            socket("198.51.100.7"),
            headers={
                "x-forwarded-for": f"10.9.{k}.1",
                "x-envoy-external-address": f"10.8.{k}.1",
                "x-real-ip": f"10.7.{k}.1",
                "forwarded": f"for=10.6.{k}.1",
            },
        )
        for k in range(20)
    )
    assert spoofed == 0


@pytest.mark.parametrize(
    "source",
    [
        socket("fe80::1%2"),
        lambda peer: setattr(peer.address.envoy_internal_address, "server_listener_name", "x"),
    ],
    ids=["zone-id", "internal-listener"],
)
def test_a_check_source_with_a_zone_or_no_ip_address_is_still_one_address(native, source):
    for k in range(SHARE):
        native.check(f"flood-{k}", socket("198.51.100.7"))
    # A zone is left out; an internal listener is one opaque address: each held to a part.
    assert sum(native.check(f"unreadable-{k}", source) for k in range(20)) <= PER_ADDRESS


# --- real Envoy: what a client can set -----------------------------------------------------------


def test_envoy_ext_authz_ignores_x_forwarded_for(tmp_path: Path):
    """The shipped ext_authz config sets no ``use_remote_address``, so Envoy takes the
    stream's remote address from X-Forwarded-For; ext_authz's ``source`` is the
    connection's peer all the same, so a client cannot pick it."""
    if envoy_executable() is None:
        pytest.skip("no envoy executable")
    with (
        ExampleServer(tmp_path / "requests.jsonl", stateless=True) as server,
        Sidecar(DOC, "--capacity", str(CAPACITY)) as sidecar,
        deployed(DEPLOY / "mcp-ext-authz.yaml", sidecar.port, server.port, patient=True) as envoy,
    ):
        assert envoy.port is not None
        headers = [
            {
                "authorization": f"Bearer xff-{k}",
                "x-forwarded-for": f"10.{k // 250}.{k % 250}.9",
                "x-envoy-external-address": f"10.{k // 250}.{k % 250}.8",
            }
            for k in range(SHARE)
        ]
        assert sum(post(envoy.port, "127.0.0.2", h) for h in headers) == PRESSED


RLS_DOC = policy(
    {},
    servers={"example": policy({"list_images": {"limits": [limit("rls_images", 1000)]}})},
)


@pytest.mark.parametrize("forwarded", [False, True], ids=["plain", "x-forwarded-for"])
def test_envoy_rate_limit_counts_the_connection_address(tmp_path: Path, forwarded: bool):
    """Through the shipped rate-limit config, a flood of made-up grants from one connection
    is held to three quarters of the share, with or without a new X-Forwarded-For on each
    request (the config sets use_remote_address: the address is the connection's)."""
    if envoy_executable() is None:
        pytest.skip("no envoy executable")
    with (
        ExampleServer(tmp_path / "example.jsonl", json=True, stateless=True) as example,
        Sidecar(RLS_DOC, "--capacity", str(CAPACITY)) as sidecar,
        deployed(RATELIMIT, sidecar.port, example.port, patient=True) as envoy,
    ):
        assert envoy.port is not None
        headers = [
            {"mcp-name": "list_images", "x-grant": f"grant-{k}"}
            | ({"x-forwarded-for": f"10.{k // 250}.{k % 250}.9"} if forwarded else {})
            for k in range(SHARE)
        ]
        taken = sum(post(envoy.port, "127.0.0.2", h) for h in headers)
        assert taken == PRESSED
        assert sidecar.metric("toolgate_counter_table_client_slots") == taken
