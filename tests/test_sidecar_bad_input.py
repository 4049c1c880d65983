"""Bad input against a real ``toolgate serve`` process: it never crashes or wedges the server
and never allows what the policy denies. After every case the server still answers a normal
Decide correctly."""

from __future__ import annotations

import threading
from typing import Any

import grpc
import pytest
import toolgate
import toolgate.client
from conftest import cond, limit, policy
from sidecar import Sidecar
from toolgate.v1 import decider_pb2

ALLOW, DENY = "ALLOW", "DENY"
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT

MAX_ARGUMENT_BYTES = 4096

POLICY = policy(
    {
        "ok": {},
        "secret": {"action": "deny", "reason": "no secrets"},
        "limited": {"limits": [limit("limited_rate", 3, "hour", "grant")]},
        "spend": {"limits": [limit("budget", 100, "hour", "agent", cost="args.amount")]},
        "guarded": {
            "require": [cond("args.path", "starts_with", "/tmp/")],
            "deny_if": [{"all": [cond("args.force", "exists"), cond("args.force", "eq", True)]}],
        },
        "team_only": {"require": [cond("subject.attributes.team", "eq", "infra")]},
    },
    hide=["delete_*"],
    servers={"github": {"default": "allow", "tools": {"secret": {"action": "deny"}}}},
)
REVISION = toolgate.Policy.from_dict(POLICY).revision


@pytest.fixture(scope="module")
def sc():
    with Sidecar(POLICY, "--max-argument-bytes", str(MAX_ARGUMENT_BYTES)) as s:
        yield s


@pytest.fixture
def served(sc):
    """The module's server, checked after the test: still up and deciding correctly."""
    yield sc
    assert_still_serving(sc)


def assert_still_serving(sc: Sidecar) -> None:
    assert sc.alive, sc.stderr
    ok = sc.client.decide("ok")
    assert (ok.verdict, ok.code, ok.rule, ok.revision) == (
        ALLOW,
        "ALLOWED",
        "/tools/ok",
        REVISION,
    )
    denied = sc.client.decide("secret")
    assert (denied.verdict, denied.code, denied.reason) == (
        DENY,
        "RULE_DENY",
        "no secrets",
    )
    assert "Traceback" not in sc.stderr
    assert "panicked" not in sc.stderr


# --- raw protobuf ------------------------------------------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def vi(field: int, n: int) -> bytes:
    """A varint field (wire type 0)."""
    return varint(field << 3) + varint(n)


def request_bytes(tool: str, **fields: Any) -> bytes:
    return toolgate.client._request(tool, **fields).SerializeToString()


# --- malformed arguments -----------------------------------------------------------------------

NOT_JSON = "arguments are not valid JSON"
NOT_OBJECT = "arguments must be a JSON object"
TOO_BIG = f"more than the limit of {MAX_ARGUMENT_BYTES}"
TWO_WAYS = "arguments could be read two ways"

BAD_ARGUMENTS = [
    (b"{bad", NOT_JSON),
    (b"{", NOT_JSON),
    (b"\xff\xfe", NOT_JSON),
    (b'{"a": "\xff"}', NOT_JSON),
    (b'{"a": 1} trailing', NOT_JSON),
    (b'{"a": 1}{"b": 2}', NOT_JSON),
    (b'{"a": NaN}', NOT_JSON),
    (b'{"a": 1e999}', NOT_JSON),
    (b'{"a": "\\ud800"}', NOT_JSON),
    (b"{'a': 1}", NOT_JSON),
    (b'{"a":' + b"[" * 2000 + b"]" * 2000 + b"}", NOT_JSON),
    (b"[1]", NOT_OBJECT),
    (b"[]", NOT_OBJECT),
    (b'"text"', NOT_OBJECT),
    (b"1", NOT_OBJECT),
    (b"null", NOT_OBJECT),
    (b"true", NOT_OBJECT),
    (b'{"x": "' + b"a" * MAX_ARGUMENT_BYTES + b'"}', TOO_BIG),
    # Read differently by the tool's server's decoder than by toolgate's.
    (b'{"path": "/tmp/x", "path": "/etc/x"}', TWO_WAYS),
    (b'{"path": "/tmp/x", "PATH": "/etc/x"}', TWO_WAYS),
    (b'{"force": false, "\\u0046orce": true}', TWO_WAYS),
    ('{"path": "/tmp/x", "\u017fub": {"a": 1, "A": 2}}'.encode(), TWO_WAYS),
    (b'{"amount": 9007199254740993}', TWO_WAYS),
]


@pytest.mark.parametrize(
    ("arguments", "reason"),
    BAD_ARGUMENTS,
    ids=[f"{i}:{a[:12]!r}" for i, (a, _) in enumerate(BAD_ARGUMENTS)],
)
@pytest.mark.parametrize("tool", ["ok", "limited", "secret", "github-default"])
def test_bad_arguments_are_invalid_requests(served, tool, arguments, reason):
    """Arguments that are not a JSON object within the size limit deny the call as
    INVALID_REQUEST, whatever the tool (one the policy allows, one with a limit, one it denies,
    one a server section allows by default), and consume nothing."""
    server = "github" if tool == "github-default" else None
    grant = f"bad-args-{tool}-{hash(arguments)}"
    r = served.client.decide(tool, server=server, grant=grant, arguments=arguments)
    assert (r.verdict, r.code) == (DENY, "INVALID_REQUEST"), r
    assert reason in r.reason
    assert r.reservation is None
    assert list(r.limits) == []
    assert r.revision == REVISION
    if tool == "limited":
        after = served.client.decide("limited", grant=grant, dry_run=True)
        assert after.limits[0].remaining == 2  # the dry run's own 1 of 3: nothing consumed


def test_arguments_at_the_size_limit_are_decided(served):
    at_limit = b'{"x": "' + b"a" * (MAX_ARGUMENT_BYTES - 9) + b'"}'
    assert len(at_limit) == MAX_ARGUMENT_BYTES
    assert served.client.decide("ok", arguments=at_limit).code == "ALLOWED"
    over = at_limit[:-2] + b'a"}'
    r = served.client.decide("ok", arguments=over)
    assert r.code == "INVALID_REQUEST"
    assert f"arguments are {MAX_ARGUMENT_BYTES + 1} bytes" in r.reason


def test_duplicate_json_keys_are_refused_whichever_value_comes_first(served):
    """Decoders differ on which of two equal keys counts (the first, the last, or neither): a
    benign value cannot hide the other from the policy, in either order."""
    for arguments in (
        b'{"path": "/tmp/ok", "path": "/etc/passwd"}',
        b'{"path": "/etc/passwd", "path": "/tmp/ok"}',
        b'{"path": "/tmp/ok", "force": false, "force": true}',
        b'{"path": "/tmp/ok", "force": true, "force": false}',
    ):
        r = served.client.decide("guarded", arguments=arguments)
        assert (r.verdict, r.code) == (DENY, "INVALID_REQUEST"), arguments
        assert r.reason.startswith(TWO_WAYS), r.reason
    fine = b'{"path": "/tmp/ok", "force": false}'
    assert served.client.decide("guarded", arguments=fine).code == "ALLOWED"


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        ({"amount": -5}, "INVALID_REQUEST"),
        ({"amount": "5"}, "INVALID_REQUEST"),
        ({"amount": None}, "INVALID_REQUEST"),
        ({"amount": [5]}, "INVALID_REQUEST"),
        ({}, "INVALID_REQUEST"),
        ({"amount": 1e308}, "INVALID_REQUEST"),
        ({"amount": 1e6}, "RATE_LIMITED"),
        ({"amount": 100.001}, "RATE_LIMITED"),
    ],
    ids=repr,
)
def test_bad_spend_amounts_deny_and_consume_nothing(served, arguments, code):
    agent = f"spender-{hash(repr(arguments))}"
    r = served.client.decide("spend", agent=agent, arguments=arguments)
    assert (r.verdict, r.code) == (DENY, code), r
    assert r.reservation is None
    if code == "RATE_LIMITED":
        # More than the whole budget: it will never fit, so there is no retry-after.
        assert r.retry_after_ms is None
    full = served.client.decide("spend", agent=agent, arguments={"amount": 100})
    assert full.code == "ALLOWED"
    assert full.limits[0].remaining == 0


# --- requests the policy must not misread ------------------------------------------------------


def test_empty_tool_name_is_invalid(served):
    for server in (None, "github", "nosuch"):
        r = served.client.decide("", server=server, grant="g")
        assert (r.verdict, r.code) == (DENY, "INVALID_REQUEST")
        assert r.reason == "tool name is empty"


def test_missing_scope_value_is_invalid(served):
    r = served.client.decide("limited")  # a grant-scoped limit, no grant
    assert (r.verdict, r.code) == (DENY, "INVALID_REQUEST")
    assert r.rule == "/tools/limited/limits/0"


@pytest.mark.parametrize("server", ["nosuch", "github ", "GitHub", "github\x00", "*", "ü" * 300])
def test_unknown_server_is_decided_by_the_top_level(served, server):
    ok = served.client.decide("ok", server=server)
    assert (ok.code, ok.rule) == ("ALLOWED", "/tools/ok")
    other = served.client.decide("other", server=server)
    assert (other.verdict, other.code, other.rule) == (DENY, "DEFAULT_DENY", "/default")
    assert served.client.decide("secret", server=server).code == "RULE_DENY"
    assert served.client.decide("delete_repo", server=server).code == "HIDDEN"


def test_known_server_uses_its_section(served):
    other = served.client.decide("other", server="github")
    assert (other.code, other.rule) == ("ALLOWED", "/servers/github/default")
    secret = served.client.decide("secret", server="github")
    assert (secret.code, secret.rule) == ("RULE_DENY", "/servers/github/tools/secret")


@pytest.mark.parametrize(
    "tool",
    [
        "ok\x00",
        "ok ",
        " ok",
        "OK",
        "o\u200bk",
        "secret\x00",
        "ｏｋ",  # noqa: RUF001 - fullwidth letters, deliberately
        "*",
        "ok*",
        "x" * 100_000,
        "\U0001f600",
        "../ok",
    ],
    ids=repr,
)
def test_odd_tool_names_are_never_allowed_by_accident(served, tool):
    """Near-misses of an allowed name are other names: denied by default."""
    r = served.client.decide(tool)
    assert r.verdict == DENY
    assert r.code in ("DEFAULT_DENY", "HIDDEN")


def test_attributes_cannot_be_spoofed_by_odd_keys(served):
    for attributes in (
        {"team ": "infra"},
        {"Team": "infra"},
        {"team": "infra "},
        {"team": "INFRA"},
        {"team\x00": "infra"},
        {f"k{i}": "v" for i in range(2000)},
    ):
        r = served.client.decide("team_only", attributes=attributes)
        assert (r.verdict, r.code) == (DENY, "CONDITION_FAILED"), attributes
    allowed = served.client.decide("team_only", attributes={"team": "infra"})
    assert allowed.code == "ALLOWED"


# --- bytes that are not a valid message --------------------------------------------------------

BAD_UTF8 = [b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"ok\x80"]

INVALID_UTF8_REQUESTS = {
    **{f"tool={bad!r}": ld(2, bad) for bad in BAD_UTF8},
    "server": ld(1, b"\xff") + ld(2, b"ok"),
    "grant": ld(2, b"ok") + ld(3, ld(1, b"\xff\xfe")),
    "agent": ld(2, b"ok") + ld(3, ld(2, b"\xff")),
    "session": ld(2, b"ok") + ld(3, ld(3, b"\xfe")),
    "attribute key": ld(2, b"ok") + ld(3, ld(4, ld(1, b"\xff") + ld(2, b"v"))),
    "attribute value": ld(2, b"ok") + ld(3, ld(4, ld(1, b"team") + ld(2, b"\xff"))),
}

GARBAGE = {
    "ff-ff-ff-ff": b"\xff\xff\xff\xff",
    "text": b"garbage!",
    "zero tag": b"\x00",
    "json": b'{"tool": "ok"}',
    "length past the end": b"\x12\x10ok",
    "truncated message": request_bytes("ok", grant="g", arguments={"a": 1})[:-3],
    "wrong wire type for tool": vi(2, 1),
    "varint too long": b"\x28" + b"\xff" * 10 + b"\x01",
    "end group without start": b"\x0c",
    "start group never ended": b"\x1b",
    "subject not a message": ld(2, b"ok") + ld(3, b"\xff\xff\xff"),
    "reserved field zero": b"\x02\x00",
}

MALFORMED = {**INVALID_UTF8_REQUESTS, **GARBAGE}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_decide_is_invalid_argument(served, raw):
    before = served.metric("toolgate_decision_duration_seconds_count")
    with pytest.raises(grpc.RpcError) as info:
        served.raw("Decide")(raw, timeout=5)
    assert info.value.code() == INVALID_ARGUMENT
    assert "malformed request" in info.value.details()
    # Not a decision: nothing counted.
    assert served.metric("toolgate_decision_duration_seconds_count") == before


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_request_inside_a_batch_is_invalid_argument(served, raw):
    batch = ld(1, request_bytes("ok")) + ld(1, raw) + ld(1, request_bytes("ok"))
    with pytest.raises(grpc.RpcError) as info:
        served.raw("DecideBatch")(batch, timeout=5)
    assert info.value.code() == INVALID_ARGUMENT


# Garbage as a DecideBatchRequest (whose only field is 1): what is not a message at all.
GARBAGE_BATCH = {
    k: GARBAGE[k]
    for k in (
        "ff-ff-ff-ff",
        "text",
        "zero tag",
        "json",
        "length past the end",
        "varint too long",
        "end group without start",
        "start group never ended",
        "reserved field zero",
    )
}


@pytest.mark.parametrize("raw", GARBAGE_BATCH.values(), ids=GARBAGE_BATCH.keys())
def test_garbage_batch_is_invalid_argument(served, raw):
    with pytest.raises(grpc.RpcError) as info:
        served.raw("DecideBatch")(raw, timeout=5)
    assert info.value.code() == INVALID_ARGUMENT


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xff\xff\xff", b"garbage!", ld(1, b"x"), b"\x08" + b"\xff" * 10 + b"\x01"],
    ids=["ff", "text", "wrong wire type", "varint too long"],
)
def test_garbage_release_is_invalid_argument(served, raw):
    with pytest.raises(grpc.RpcError) as info:
        served.raw("Release")(raw, timeout=5)
    assert info.value.code() == INVALID_ARGUMENT


def test_empty_message_is_an_empty_tool_name(served):
    r = toolgate.Decision.from_wire(served.raw("Decide")(b"", timeout=5))
    assert (r.verdict, r.code) == (DENY, "INVALID_REQUEST")
    batch = decider_pb2.DecideBatchResponse.FromString(served.raw("DecideBatch")(b"", timeout=5))
    assert list(batch.responses) == []
    released = decider_pb2.ReleaseResponse.FromString(served.raw("Release")(b"", timeout=5))
    assert released.released is False


# Valid encodings a lax or a strict parser might read differently: the sidecar must decide
# exactly what the reference protobuf implementation reads.
ODD_BUT_VALID = {
    "tool twice, last wins": ld(2, b"secret") + ld(2, b"ok"),
    "tool twice, denied last": ld(2, b"ok") + ld(2, b"secret"),
    "hidden last": ld(2, b"ok") + ld(2, b"delete_all"),
    "subject in two parts": ld(2, b"limited") + ld(3, ld(1, b"g-odd")) + ld(3, ld(2, b"a")),
    "grant twice": ld(2, b"limited") + ld(3, ld(1, b"g1") + ld(1, b"g-odd2")),
    "unknown fields": ld(2, b"ok")
    + ld(99, b"whatever")
    + vi(100, 7)
    + varint(101 << 3 | 5)
    + b"\x00\x00\x00\x00",
    "non-canonical varint tag": b"\x92\x00\x02ok",
    "dry_run as 2": ld(2, b"limited") + ld(3, ld(1, b"g-odd3")) + vi(5, 2),
    "attribute twice": ld(2, b"team_only")
    + ld(3, ld(4, ld(1, b"team") + ld(2, b"infra")) + ld(4, ld(1, b"team") + ld(2, b"x"))),
    "attribute twice, infra last": ld(2, b"team_only")
    + ld(3, ld(4, ld(1, b"team") + ld(2, b"x")) + ld(4, ld(1, b"team") + ld(2, b"infra"))),
    "server github then other": ld(1, b"github") + ld(1, b"nosuch") + ld(2, b"other"),
    "arguments twice": ld(2, b"guarded")
    + ld(4, b'{"path": "/tmp/x"}')
    + ld(4, b'{"path": "/etc/x"}'),
}


@pytest.mark.parametrize("raw", ODD_BUT_VALID.values(), ids=ODD_BUT_VALID.keys())
def test_odd_encodings_are_read_as_protobuf_reads_them(served, raw):
    reference = decider_pb2.DecideRequest.FromString(raw)
    got = decider_pb2.DecideResponse.FromString(served.raw("Decide")(raw, timeout=5))
    # The same request, re-encoded canonically, as a dry run so it consumes nothing.
    reference.dry_run = True
    expected = decider_pb2.DecideResponse.FromString(
        served.raw("Decide")(reference.SerializeToString(), timeout=5)
    )
    assert (got.verdict, got.code, got.rule, got.reason) == (
        expected.verdict,
        expected.code,
        expected.rule,
        expected.reason,
    )


def test_unknown_methods_are_unimplemented(served):
    for method in ("/toolgate.v1.Decider/Nope", "/toolgate.v2.Decider/Decide", "/x/y"):
        call = served.channel().unary_unary(method)
        with pytest.raises(grpc.RpcError) as info:
            call(request_bytes("ok"), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_message_over_the_grpc_limit_is_refused(served):
    huge = request_bytes("ok", arguments=b'{"x": "' + b"a" * (5 << 20) + b'"}')
    with pytest.raises(grpc.RpcError) as info:
        served.raw("Decide")(huge, timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_bad_input_mixed_with_good_under_concurrency(served):
    """Threads sending garbage, invalid UTF-8 and bad arguments do not disturb a thread's
    normal calls: every normal call gets the right decision."""
    wrong: list[Any] = []

    def attack(raws: list[bytes]) -> None:
        call = served.raw("Decide")
        for i in range(300):
            try:
                call(raws[i % len(raws)], timeout=5)
            except grpc.RpcError as err:
                if err.code() != INVALID_ARGUMENT:
                    wrong.append(err.code())

    def normal() -> None:
        with toolgate.Client(served.target) as client:
            for i in range(300):
                r = client.decide("ok" if i % 2 else "secret", arguments={"i": i})
                expected = "ALLOWED" if i % 2 else "RULE_DENY"
                if r.code != expected:
                    wrong.append(r)
                bad = client.decide("ok", arguments=b"[1]")
                if bad.code != "INVALID_REQUEST":
                    wrong.append(bad)

    threads = [
        threading.Thread(target=attack, args=(list(GARBAGE.values()),)),
        threading.Thread(target=attack, args=(list(INVALID_UTF8_REQUESTS.values()),)),
        threading.Thread(target=normal),
        threading.Thread(target=normal),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    assert wrong == []


# --- a full counter table ----------------------------------------------------------------------


def test_a_flood_of_sessions_fills_the_table_and_fails_closed():
    """With 64 counter slots, a flood of distinct sessions against a session-scoped limit
    fills the table; from then on a new session is denied (RATE_LIMITED, "table is full"),
    never allowed, and counted; sessions that hold a slot go on as before."""
    doc = policy(
        {"per_session": {"limits": [limit("per_session", 5, "hour", "session")]}, "ok": {}}
    )
    with Sidecar(doc, "--capacity", "64") as s:
        assert s.metric("toolgate_counter_table_slots_capacity") == 64
        decisions = [s.client.decide("per_session", session=f"s{i}") for i in range(200)]
        allowed = [i for i, d in enumerate(decisions) if d.verdict == ALLOW]
        full = [d for d in decisions if "full" in d.reason]
        assert 0 < len(allowed) <= 64
        assert allowed == list(range(len(allowed))), "once full, no new session is allowed"
        assert len(full) == 200 - len(allowed)
        for d in full:
            assert (d.verdict, d.code) == (DENY, "RATE_LIMITED")
            assert "counter table is full" in d.reason
            assert d.reservation is None
            assert d.retry_after_ms is not None

        assert s.metric("toolgate_counter_table_full_total") == len(full)
        assert s.metric("toolgate_counter_table_slots_used") == len(allowed)
        assert s.metric(
            "toolgate_decisions_total", api="decider", verdict="DENY", code="RATE_LIMITED"
        ) == len(full)

        # A session with a slot keeps its counter and its limit.
        again = [s.client.decide("per_session", session="s0").code for _ in range(5)]
        assert again == ["ALLOWED"] * 4 + ["RATE_LIMITED"]
        assert "full" not in s.client.decide("per_session", session="s0").reason
        # Still full for newcomers, in a batch too; tools without limits are unaffected.
        batch = s.client.decide_batch(
            [{"tool": "per_session", "session": "new"}, {"tool": "ok", "session": "new"}]
        )
        assert [r.code for r in batch] == ["RATE_LIMITED", "ALLOWED"]
        assert s.client.decide("ok").code == "ALLOWED"
        assert s.client.decide("nope").code == "DEFAULT_DENY"
        assert s.alive
