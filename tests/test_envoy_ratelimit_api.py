"""Envoy's rate limit service ``ShouldRateLimit`` against a real ``toolgate serve`` process,
with requests built from Envoy's published protos (xds-protos).

The mapping under test: ``domain`` is the MCP server id (its policy section), each descriptor
is one call (entries ``tool``, ``grant``, ``session``, ``agent``, others as attributes),
``hits_addend`` is what each limit counts; the answer is OK or OVER_LIMIT, never UNKNOWN.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from conftest import cond, limit, policy
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf import wrappers_pb2
from sidecar import Sidecar

Response = rls_pb2.RateLimitResponse
OK, OVER = Response.OK, Response.OVER_LIMIT
Descriptor = ratelimit_pb2.RateLimitDescriptor

POLICY = policy(
    {
        "create-ami": {"limits": [limit("ami", 3, scope="grant")]},
        "spend": {"limits": [limit("budget", 100, window="day", scope="agent")]},
        "free": {},
        "team_only": {"require": [cond("subject.attributes.team", "eq", "infra")]},
        "never": {"action": "deny", "reason": "No."},
        "ninety": {"limits": [limit("ninety", 2, window="90s", scope="grant")]},
    },
    servers={"billing": policy({"create-ami": {"limits": [limit("billing_ami", 1)]}})},
)

_grants = itertools.count()


def fresh() -> str:
    return f"g{next(_grants)}"


def descriptor(hits: int | None = None, **entries: str) -> Descriptor:
    d = Descriptor(entries=[Descriptor.Entry(key=k, value=v) for k, v in entries.items()])
    if hits is not None:
        d.hits_addend.CopyFrom(wrappers_pb2.UInt64Value(value=hits))
    return d


@pytest.fixture(scope="module")
def rls():
    with Sidecar(POLICY) as s:
        stub = s.channel().unary_unary(
            "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
            request_serializer=rls_pb2.RateLimitRequest.SerializeToString,
            response_deserializer=Response.FromString,
        )

        def ask(*descriptors: Descriptor, domain: str = "example", hits: int = 0) -> Any:
            request = rls_pb2.RateLimitRequest(
                domain=domain, descriptors=list(descriptors), hits_addend=hits
            )
            return stub(request, timeout=30)

        yield ask


def headers(r: Any) -> dict[str, str]:
    return {h.key: h.value for h in r.response_headers_to_add}


def test_limit_reached_is_over_limit_with_descriptor_status(rls):
    g = fresh()
    for remaining in (2, 1, 0):
        r = rls(descriptor(tool="create-ami", grant=g))
        assert r.overall_code == OK
        (status,) = r.statuses
        assert status.code == OK
        assert status.current_limit.name == "ami"
        assert status.current_limit.requests_per_unit == 3
        assert status.current_limit.unit == Response.RateLimit.MINUTE
        assert status.limit_remaining == remaining
        assert 0 < status.duration_until_reset.seconds <= 65
    r = rls(descriptor(tool="create-ami", grant=g))
    assert r.overall_code == OVER
    assert r.statuses[0].code == OVER
    assert r.statuses[0].limit_remaining == 0
    h = headers(r)
    assert h["x-toolgate-code"] == "RATE_LIMITED"
    assert 0 < int(h["retry-after"]) <= 65
    assert b"rate limit" in r.raw_body
    # Another grant has its own counter.
    assert rls(descriptor(tool="create-ami", grant=fresh())).overall_code == OK


def test_domain_selects_the_server_section(rls):
    g = fresh()
    assert rls(descriptor(tool="create-ami", grant=g), domain="billing").overall_code == OK
    r = rls(descriptor(tool="create-ami", grant=g), domain="billing")
    assert r.overall_code == OVER
    assert r.statuses[0].current_limit.name == "billing_ami"
    # The top-level policy's counter for the same grant is untouched.
    assert rls(descriptor(tool="create-ami", grant=g)).statuses[0].limit_remaining == 2


def test_hits_addend_is_the_cost(rls):
    agent = fresh()
    r = rls(descriptor(tool="spend", agent=agent), hits=60)
    assert (r.overall_code, r.statuses[0].limit_remaining) == (OK, 40)
    assert r.statuses[0].current_limit.unit == Response.RateLimit.DAY
    assert rls(descriptor(tool="spend", agent=agent), hits=41).overall_code == OVER
    # A descriptor's own hits_addend overrides the request's; 0 means 1.
    r = rls(descriptor(hits=40, tool="spend", agent=agent), hits=99)
    assert (r.overall_code, r.statuses[0].limit_remaining) == (OK, 0)
    assert rls(descriptor(tool="spend", agent=fresh()), hits=0).statuses[0].limit_remaining == 99


def test_policy_denials_and_undecidable_descriptors_are_over_limit_never_unknown(rls):
    cases = [
        (descriptor(tool="never", grant="g"), "RULE_DENY"),
        (descriptor(tool="not_listed", grant="g"), "DEFAULT_DENY"),
        (descriptor(grant="g"), "INVALID_REQUEST"),
        (descriptor(tool="", grant="g"), "INVALID_REQUEST"),
        (descriptor(tool="create-ami"), "INVALID_REQUEST"),
        (
            Descriptor(
                entries=[
                    Descriptor.Entry(key="tool", value="free"),
                    Descriptor.Entry(key="tool", value="never"),
                ]
            ),
            "INVALID_REQUEST",
        ),
    ]
    for d, code in cases:
        r = rls(d)
        assert r.overall_code == OVER, d
        assert r.statuses[0].code == OVER
        assert headers(r)["x-toolgate-code"] == code, d
    assert rls(descriptor(tool="free")).overall_code == OK
    assert rls().overall_code == OK  # nothing asked, nothing limited


def test_other_entries_are_subject_attributes(rls):
    assert rls(descriptor(tool="team_only", team="infra")).overall_code == OK
    assert rls(descriptor(tool="team_only", team="web")).overall_code == OVER
    assert rls(descriptor(tool="team_only")).overall_code == OVER


def test_descriptors_are_all_or_nothing(rls):
    g, spent = fresh(), fresh()
    rls(descriptor(tool="spend", agent=spent), hits=100)
    r = rls(descriptor(tool="create-ami", grant=g), descriptor(tool="spend", agent=spent))
    assert r.overall_code == OVER
    assert [s.code for s in r.statuses] == [OK, OVER]
    # The create-ami counter gave back what the first descriptor reserved.
    assert rls(descriptor(tool="create-ami", grant=g)).statuses[0].limit_remaining == 2


def test_a_window_without_an_envoy_unit_reports_unknown_unit(rls):
    r = rls(descriptor(tool="ninety", grant=fresh()))
    assert r.overall_code == OK
    assert r.statuses[0].current_limit.unit == Response.RateLimit.UNKNOWN
    assert r.statuses[0].current_limit.requests_per_unit == 2


def test_remote_address_is_the_peer_and_also_an_attribute(rls):
    """Envoy's ``remote_address`` action: the client's address, by which room for made-up
    credentials is shared out (docs/counters.md); an entry that is no IP address is refused."""
    for address in ("192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1"):
        r = rls(descriptor(tool="create-ami", grant=fresh(), remote_address=address))
        assert r.overall_code == OK, address
    for address in ("192.0.2.01", "host.example", "fe80::1%eth0", ""):
        r = rls(descriptor(tool="create-ami", grant=fresh(), remote_address=address))
        assert r.overall_code == OVER, address
        assert headers(r)["x-toolgate-code"] == "INVALID_REQUEST", address
        assert b'entry "remote_address" is not an IP address' in r.raw_body, address
