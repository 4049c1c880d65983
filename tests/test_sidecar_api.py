"""The sidecar's gRPC API, through a real ``toolgate serve`` process: Decide, DecideBatch,
Release, dry runs, health, reflection, and ``toolgate decide --target``."""

from __future__ import annotations

import itertools
from typing import Any

import grpc
import pytest
import toolgate
from conftest import EXAMPLES, POLICYLAYER_CREATE_AMI
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sidecar import Sidecar, decision_lines, free_port, toolgate_cli
from toolgate.cli import exits

POLICY = EXAMPLES / "policy.json"
REVISION = toolgate.Policy.from_file(POLICY).revision

ALLOW, DENY, REQUIRE_APPROVAL = "ALLOW", "DENY", "REQUIRE_APPROVAL"

_names = itertools.count()


def fresh(prefix: str) -> str:
    """A grant/session/agent name no other test uses, so tests sharing a server don't share
    counters."""
    return f"{prefix}-{next(_names)}"


@pytest.fixture(scope="module")
def sc():
    with Sidecar(POLICY) as s:
        yield s


def comparable(d: dict[str, Any]) -> dict[str, Any]:
    """A decision without what depends on the moment (reset_in_ms) or on the engine's history
    (the reservation's number: only whether there is one), nor on whether it runs approvals
    (the sidecar does: an approval's id, and the sentence about it after the rule's reason)."""
    d = dict(d)
    d["limits"] = [{k: v for k, v in lim.items() if k != "reset_in_ms"} for lim in d["limits"]]
    d["reservation"] = d["reservation"] is not None
    d["approval_id"] = d["approval_id"] is not None
    d["reason"] = d["reason"].split(" Approval apr_")[0]
    return d


# --- Decide ------------------------------------------------------------------------------------


def test_policylayer_create_ami_30_per_minute_per_grant(sc):
    """PolicyLayer's example policy: 30 calls allowed per grant in a minute, the 31st
    rate-limited with a retry-after, and another grant unaffected."""
    alice, bob = fresh("alice"), fresh("bob")
    for i in range(30):
        r = sc.client.decide("create-ami", grant=alice)
        assert (r.verdict, r.code) == (ALLOW, "ALLOWED"), (i, r)
        assert r.rule == "/tools/create-ami"
        assert r.revision == REVISION
        assert r.reservation is not None
        [limit] = r.limits
        assert (limit.counter, limit.scope, limit.max) == ("create-ami_rate", "grant", 30)
        assert limit.rule == "/tools/create-ami/limits/0"
        assert limit.remaining == 29 - i

    denied = sc.client.decide("create-ami", grant=alice)
    assert (denied.verdict, denied.code) == (DENY, "RATE_LIMITED")
    assert denied.rule == "/tools/create-ami/limits/0"
    assert denied.retry_after_ms is not None
    # The whole window (one minute plus at most one sub-bucket of 5 s) at most.
    assert 0 < denied.retry_after_ms <= 65_000
    assert "create-ami_rate" in denied.reason
    assert denied.reservation is None
    assert [lim.remaining for lim in denied.limits] == [0]

    other = sc.client.decide("create-ami", grant=bob)
    assert (other.verdict, other.code) == (ALLOW, "ALLOWED")
    assert other.limits[0].remaining == 29
    # Still denied for the first grant.
    assert sc.client.decide("create-ami", grant=alice).code == "RATE_LIMITED"


def test_policylayer_example_policy_text_served_verbatim(tmp_path):
    """The example's JSON, exactly as PolicyLayer's documentation prints it, served as a file."""
    path = tmp_path / "example.json"
    path.write_text(POLICYLAYER_CREATE_AMI)
    with Sidecar(path, metrics=False) as s:
        codes = [s.client.decide("create-ami", grant="g").code for _ in range(31)]
        assert codes == ["ALLOWED"] * 30 + ["RATE_LIMITED"]
        assert s.client.decide("create-ami", grant="h").code == "ALLOWED"
        assert s.client.decide("create_access_key", grant="g").code == "DEFAULT_DENY"


CALLS: list[dict[str, Any]] = [
    {"tool": "describe_instances", "agent": "a"},
    {"tool": "list_buckets"},
    {"tool": "delete_bucket", "grant": "g"},
    {"tool": "vm_destroy"},
    {"tool": "no_such_tool"},
    {"tool": "terminate_instances", "session": "s"},
    {"tool": "run_command", "session": "s", "arguments": {"command": "rm -rf /"}},
    {"tool": "run_command", "session": "s", "arguments": {"command": "ls -l"}},
    {"tool": "run_command", "session": "s", "arguments": {"command": 7}},
    {"tool": "transfer_funds", "agent": "x", "arguments": {"amount": 250, "currency": "USD"}},
    {"tool": "transfer_funds", "agent": "x", "arguments": {"amount": 250, "currency": "EUR"}},
    {"tool": "transfer_funds", "agent": "x", "arguments": {"amount": 1e6, "currency": "USD"}},
    {"tool": "transfer_funds", "agent": "x", "arguments": '{"amount": 1, "currency": "USD"}'},
    {"tool": "transfer_funds", "agent": None, "arguments": {"amount": 1, "currency": "USD"}},
    {"tool": "create-ami"},
    {"tool": "create-ami", "grant": "g", "attributes": {"team": "t"}},
]


def _local(engine: toolgate.Engine, call: dict[str, Any]) -> dict[str, Any]:
    call = dict(call)
    return engine.decide(call.pop("tool"), **call).to_dict()


def test_decisions_match_the_local_engine():
    """Every kind of outcome, decided over gRPC, equals the in-process engine's decision on
    the same policy and the same sequence of calls."""
    engine = toolgate.Engine.from_file(POLICY)
    with Sidecar(POLICY, metrics=False) as s:
        remote = [s.client.decide(**call).to_dict() for call in CALLS]
    local = [_local(engine, call) for call in CALLS]
    for d in local:  # the local engine runs no approvals: it opens none
        d["approval_id"] = d["approval_id"] or (d["code"] == "APPROVAL_REQUIRED" or None)
    assert [comparable(d) for d in remote] == [comparable(d) for d in local]
    codes = {d["code"] for d in remote}
    assert codes == {
        "ALLOWED",
        "HIDDEN",
        "DEFAULT_DENY",
        "APPROVAL_REQUIRED",
        "CONDITION_FAILED",
        "INVALID_REQUEST",
    }


def test_spend_limit_over_grpc(sc):
    grant = fresh("spender")
    spend = {"currency": "USD"}
    amounts = [900, 900, 900, 900, 900, 900]  # 5400 > the 5000 a day
    codes = [
        sc.client.decide("transfer_funds", grant=grant, arguments={**spend, "amount": a}).code
        for a in amounts
    ]
    assert codes == ["ALLOWED"] * 5 + ["RATE_LIMITED"]
    last = sc.client.decide("transfer_funds", grant=grant, arguments={**spend, "amount": 500})
    assert last.code == "ALLOWED"
    assert last.limits[0].remaining == 0


def test_require_approval_consumes_nothing(sc):
    r = sc.client.decide("terminate_instances", grant=fresh("g"))
    assert (r.verdict, r.code) == (REQUIRE_APPROVAL, "APPROVAL_REQUIRED")
    assert r.reason.startswith("Terminating instances needs a human's approval. Approval apr_")
    assert r.approval_id in r.reason
    assert r.reservation is None


# --- DecideBatch -------------------------------------------------------------------------------


def test_batch_answers_in_order_each_on_its_own(sc):
    grant, other = fresh("batch"), fresh("batch")
    calls = [
        {"tool": "create-ami", "grant": grant},
        {"tool": "delete_everything", "grant": grant},
        {"tool": "describe_x"},
        {"tool": "create-ami"},  # no grant: INVALID_REQUEST, does not stop the others
        {"tool": "terminate_instances"},
        {"tool": "create-ami", "grant": other},
        {"tool": "nope"},
        {"tool": "create-ami", "grant": grant},
    ]
    responses = sc.client.decide_batch(calls)
    assert [r.code for r in responses] == [
        "ALLOWED",
        "HIDDEN",
        "ALLOWED",
        "INVALID_REQUEST",
        "APPROVAL_REQUIRED",
        "ALLOWED",
        "DEFAULT_DENY",
        "ALLOWED",
    ]
    assert [r.rule for r in responses] == [
        "/tools/create-ami",
        "/hide/0",
        "/tools/describe_*",
        "/tools/create-ami/limits/0",
        "/tools/terminate_instances",
        "/tools/create-ami",
        "/default",
        "/tools/create-ami",
    ]
    # The two calls for `grant` counted in order; `other` has its own counter.
    assert responses[0].limits[0].remaining == 29
    assert responses[7].limits[0].remaining == 28
    assert responses[5].limits[0].remaining == 29
    assert all(r.revision == REVISION for r in responses)
    # Each allowed call has its own reservation.
    held = [r.reservation for r in responses if r.reservation]
    assert len(held) == len(set(held)) == 3


def test_batch_over_the_limit_denies_only_the_calls_without_room(sc):
    grant = fresh("batch")
    calls = [{"tool": "create-ami", "grant": grant}] * 32 + [{"tool": "describe_y"}]
    codes = [r.code for r in sc.client.decide_batch(calls)]
    assert codes == ["ALLOWED"] * 30 + ["RATE_LIMITED"] * 2 + ["ALLOWED"]
    assert sc.client.decide("create-ami", grant=grant).code == "RATE_LIMITED"


def test_empty_batch(sc):
    assert sc.client.decide_batch([]) == []


# --- Release -----------------------------------------------------------------------------------


def test_release_gives_the_room_back_once(sc):
    grant = fresh("release")
    reservations = [sc.client.decide("create-ami", grant=grant).reservation for _ in range(30)]
    assert all(reservations) and len(set(reservations)) == 30
    denied = sc.client.decide("create-ami", grant=grant)
    assert denied.code == "RATE_LIMITED"
    assert denied.reservation is None

    assert sc.client.release(reservations[-1]) is True
    again = sc.client.decide("create-ami", grant=grant)
    assert again.code == "ALLOWED"
    assert again.limits[0].remaining == 0
    assert sc.client.decide("create-ami", grant=grant).code == "RATE_LIMITED"

    # A second release of the same reservation gives nothing back.
    assert sc.client.release(reservations[-1]) is False
    assert sc.client.decide("create-ami", grant=grant).code == "RATE_LIMITED"


@pytest.mark.parametrize("reservation", [0, 2**64 - 1, 2**63, 987_654_321])
def test_release_of_an_unknown_reservation_is_false(sc, reservation):
    assert sc.client.release(reservation) is False


def test_release_of_a_reservation_the_log_has_forgotten_is_false():
    """With a reservation log of 4 entries, the 5th reserving call reuses the 1st entry: the
    1st reservation can no longer be released, the 5th can."""
    with Sidecar(POLICY, "--reservations", "4", metrics=False) as s:
        held = [s.client.decide("create-ami", grant="g").reservation for _ in range(5)]
        assert all(held) and len(set(held)) == 5
        assert s.client.release(held[0]) is False
        assert s.client.decide("create-ami", grant="g").limits[0].remaining == 24
        assert s.client.release(held[4]) is True
        assert s.client.decide("create-ami", grant="g", dry_run=True).limits[0].remaining == 24


def test_release_of_a_spend_gives_the_amount_back(sc):
    grant = fresh("spender")
    call = {"currency": "USD", "amount": 999}
    held = [sc.client.decide("transfer_funds", grant=grant, arguments=call) for _ in range(5)]
    assert [d.limits[0].remaining for d in held] == [4001, 3002, 2003, 1004, 5]
    assert sc.client.decide("transfer_funds", grant=grant, arguments=call).code == "RATE_LIMITED"
    assert sc.client.release(held[2].reservation) is True
    after = sc.client.decide("transfer_funds", grant=grant, arguments=call)
    assert after.code == "ALLOWED"
    assert after.limits[0].remaining == 5


# --- dry run -----------------------------------------------------------------------------------


def test_dry_run_does_not_consume(sc):
    grant = fresh("dry")
    for _ in range(40):
        r = sc.client.decide("create-ami", grant=grant, dry_run=True)
        assert r.code == "ALLOWED"
        assert r.reservation is None
        assert r.limits[0].remaining == 29
    codes = [sc.client.decide("create-ami", grant=grant).code for _ in range(31)]
    assert codes == ["ALLOWED"] * 30 + ["RATE_LIMITED"]
    # A dry run tells the truth about a full counter, and still consumes nothing.
    dry = sc.client.decide("create-ami", grant=grant, dry_run=True)
    assert dry.code == "RATE_LIMITED"
    assert dry.retry_after_ms > 0


def test_dry_run_in_a_batch(sc):
    grant = fresh("dry")
    calls = [{"tool": "create-ami", "grant": grant, "dry_run": True}] * 35
    assert {r.code for r in sc.client.decide_batch(calls)} == {"ALLOWED"}
    assert sc.client.decide("create-ami", grant=grant).limits[0].remaining == 29


# --- health and reflection ---------------------------------------------------------------------


@pytest.mark.parametrize("service", ["", "toolgate.v1.Decider"])
def test_health_serving(sc, service):
    assert sc.health(service) == health_pb2.HealthCheckResponse.SERVING


def test_health_of_an_unknown_service_is_not_found(sc):
    assert sc.health("no.such.Service") == grpc.StatusCode.NOT_FOUND


def _reflect(sc: Sidecar, request: reflection_pb2.ServerReflectionRequest):
    stub = reflection_pb2_grpc.ServerReflectionStub(sc.channel())
    [response] = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
    return response


def test_reflection_lists_the_services(sc):
    response = _reflect(sc, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in response.list_services_response.service}
    assert {"toolgate.v1.Decider", "grpc.health.v1.Health"} <= names


ENVOY_SERVICES = {
    "envoy.service.auth.v3.Authorization": ["Check"],
    "envoy.service.ext_proc.v3.ExternalProcessor": ["Process"],
    "envoy.service.ratelimit.v3.RateLimitService": ["ShouldRateLimit"],
}


def test_reflection_lists_envoys_services(sc):
    response = _reflect(sc, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in response.list_services_response.service}
    assert set(ENVOY_SERVICES) <= names


@pytest.mark.parametrize("symbol", sorted(ENVOY_SERVICES))
def test_reflection_describes_envoys_services_and_what_they_import(sc, symbol):
    """Each, and the files it imports, so a client (grpcurl) can build its messages."""
    from google.protobuf import descriptor_pb2

    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
    response = _reflect(sc, request)
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]
    package, _, name = symbol.rpartition(".")
    (service,) = [s for f in files if f.package == package for s in f.service if s.name == name]
    assert [m.name for m in service.method] == ENVOY_SERVICES[symbol]
    # Every file it imports, transitively, can be had by name (as grpcurl asks for them).
    have = {f.name: f for f in files}
    wanted = [d for f in files for d in f.dependency]
    while wanted:
        name = wanted.pop()
        if name in have:
            continue
        by_name = reflection_pb2.ServerReflectionRequest(file_by_filename=name)
        raw = _reflect(sc, by_name).file_descriptor_response.file_descriptor_proto
        got = [descriptor_pb2.FileDescriptorProto.FromString(r) for r in raw]
        assert name in {g.name for g in got}, f"{name} is not served"
        for g in got:
            have[g.name] = g
            wanted.extend(g.dependency)


def test_reflection_describes_the_decider(sc):
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="toolgate.v1.Decider")
    response = _reflect(sc, request)
    from google.protobuf import descriptor_pb2

    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]
    decider = next(f for f in files if f.package == "toolgate.v1")
    [service] = decider.service
    assert [m.name for m in service.method] == ["Decide", "DecideBatch", "Release"]


# --- toolgate decide --target ------------------------------------------------------------------

CLI_CASES = [
    ["--tool", "create-ami", "--grant", "cli", "--repeat", "3"],
    ["--tool", "describe_things", "--attr", "team=a", "--attr", "env=prod"],
    ["--tool", "delete_x"],
    ["--tool", "terminate_instances", "--dry-run"],
    ["--tool", "transfer_funds", "--agent", "cli", "--args", '{"amount": 12.5, "currency": "USD"}'],
    ["--tool", "run_command", "--session", "cli", "--args", '{"command": "rm -rf /"}'],
    ["--tool", "create-ami"],
]


def _shape(value: Any) -> Any:
    """The JSON shape of a value: its keys and value types, recursively."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__


@pytest.mark.parametrize("args", CLI_CASES, ids=lambda a: a[1])
def test_cli_decide_target_prints_the_local_shape(args):
    """``toolgate decide --target`` prints, line for line, what ``--policy`` prints locally:
    the same keys, types and values (but for the moment-dependent reset_in_ms)."""
    with Sidecar(POLICY, metrics=False) as s:
        remote = toolgate_cli("decide", "--target", s.target, *args)
    local = toolgate_cli("decide", "--policy", POLICY, *args)
    assert remote.returncode == local.returncode == 0, remote.stderr + local.stderr
    remote_lines, local_lines = decision_lines(remote.stdout), decision_lines(local.stdout)
    assert len(remote_lines) == len(local_lines) >= 1
    for r, lo in zip(remote_lines, local_lines, strict=True):
        assert list(r) == list(lo)  # same keys, same order
        assert _shape(r) == _shape(lo)
        assert comparable(r) == comparable(lo)
        assert r["reservation"] == lo["reservation"]


def test_cli_decide_target_unreachable_fails_cleanly():
    target = f"127.0.0.1:{free_port()}"
    result = toolgate_cli("decide", "--target", target, "--wait", "0.5", "--tool", "x")
    assert result.returncode == exits.UNREACHABLE
    assert result.stdout == ""
    assert result.stderr.startswith(f"toolgate decide: nothing answered at {target} within 0.5s")
    assert "Traceback" not in result.stderr


# --- toolgate health ---------------------------------------------------------------------------


def test_toolgate_health_exits_0_only_when_serving(sc):
    ok = toolgate_cli("health", "--target", sc.target, "--service", "toolgate.v1.Decider")
    assert (ok.returncode, ok.stdout.strip()) == (0, f"{sc.target} toolgate.v1.Decider: SERVING")
    whole = toolgate_cli("health", "--target", sc.target)
    assert whole.returncode == 0 and whole.stdout.strip().endswith("(server): SERVING")
    unknown = toolgate_cli("health", "--target", sc.target, "--service", "no.such.Service")
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr
    nobody = toolgate_cli("health", "--target", f"127.0.0.1:{free_port()}", "--timeout", "1")
    assert nobody.returncode == exits.UNREACHABLE and "UNAVAILABLE" in nobody.stderr
