"""How `toolgate serve` serves: unix sockets, calls whose deadline has passed, the thread
count, connections dealt to every serving thread, what it loads, and gRPC errors counted by
API and status."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import grpc
import pytest
import toolgate
from conftest import EXAMPLES
from h2_client import RawGrpc
from sidecar import PATIENCE, TOOLGATE, Sidecar, dies_with_parent
from toolgate._core import SidecarSettings
from toolgate.v1 import decider_pb2


def test_serves_on_a_unix_socket(tmp_path: Path):
    path = tmp_path / "toolgate.sock"
    args = [
        *TOOLGATE,
        "serve",
        "--policy",
        str(EXAMPLES / "policy.json"),
        "--listen",
        f"unix:{path}",
        "--metrics-listen",
        "off",
    ]
    proc = subprocess.Popen(dies_with_parent(args), stderr=subprocess.PIPE)
    try:
        client = toolgate.Client(f"unix:{path}")
        deadline = time.monotonic() + PATIENCE
        while True:
            try:
                decision = client.decide("create-ami", grant="unix")
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline, "never answered on the unix socket"
                time.sleep(0.05)
        assert decision.verdict == "ALLOW"
    finally:
        proc.terminate()
        proc.wait(timeout=PATIENCE)
    assert proc.returncode == 0


def grpc_call(port: int, path: str, message: bytes, headers: list[tuple[str, str]]) -> dict:
    """One unary call over a raw HTTP/2 connection (gRPC clients do not let a test send any
    ``grpc-timeout``); its response headers and trailers merged."""
    with RawGrpc(port) as conn:
        return conn.call(path, message, headers)


def test_a_call_whose_deadline_has_passed_is_not_decided():
    """A proxy that has given up (its deadline passed while the call waited) must not have
    the call counted: it never runs. A 1 ns timeout has always passed by the time a handler
    runs."""
    with Sidecar(EXAMPLES / "policy.json") as s:
        request = decider_pb2.DecideRequest(
            tool="create-ami", subject=decider_pb2.Subject(grant="late")
        ).SerializeToString()
        path = "/toolgate.v1.Decider/Decide"
        late = grpc_call(s.port, path, request, [("grpc-timeout", "1n")])
        assert late["grpc-status"] == str(grpc.StatusCode.DEADLINE_EXCEEDED.value[0])
        assert s.metric(
            "toolgate_decisions_total", api="decider", verdict="ALLOW", code="ALLOWED"
        ) in (None, 0)
        on_time = grpc_call(s.port, path, request, [("grpc-timeout", "10S")])
        assert on_time["grpc-status"] == "0"
        assert (
            s.metric("toolgate_decisions_total", api="decider", verdict="ALLOW", code="ALLOWED")
            == 1
        )


def serving_threads(pid: int) -> dict[str, int]:
    """The sidecar's serving threads by name, each with the nanoseconds it has run."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        name = (task / "comm").read_text().strip()
        if name.startswith("toolgate-grpc"):
            out[name] = int((task / "schedstat").read_text().split()[0])
    return out


@pytest.mark.parametrize("threads", [1, 3])
def test_connections_are_dealt_to_every_serving_thread(threads: int):
    """Each serving thread serves the connections dealt to it, in turn: with a connection
    per call, every thread decides calls, and every call is answered."""
    with Sidecar(EXAMPLES / "policy.json", "--threads", str(threads)) as s:
        assert s.proc is not None
        before = serving_threads(s.proc.pid)
        assert len(before) == threads, before
        calls = 10 * threads
        for n in range(calls):
            request = decider_pb2.DecideRequest(
                tool="create-ami", subject=decider_pb2.Subject(grant=f"g{n}")
            ).SerializeToString()
            answer = grpc_call(s.port, "/toolgate.v1.Decider/Decide", request, [])
            assert answer["grpc-status"] == "0", answer
        ran = {name: n - before[name] for name, n in serving_threads(s.proc.pid).items()}
        assert all(ns > 0 for ns in ran.values()), ran
        decided = s.metric(
            "toolgate_decisions_total", api="decider", verdict="ALLOW", code="ALLOWED"
        )
        assert decided == calls


# --- how many threads by default ------------------------------------------------------------


def test_by_default_one_thread_serves_per_cpu_the_process_may_use():
    """Without --threads, the sidecar serves on as many threads as CPUs its affinity (and
    cgroup quota) leaves it: pinned to one CPU, one thread."""
    assert 1 <= SidecarSettings().serving_threads() <= len(os.sched_getaffinity(0))
    assert SidecarSettings(threads=3).serving_threads() == 3
    # A child keeps the affinity of the process that starts it.
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        sidecar = Sidecar(EXAMPLES / "policy.json")
    finally:
        os.sched_setaffinity(0, before)
    with sidecar as s:
        assert len(serving_threads(s.proc.pid)) == 1
        assert "(1 threads)" in s.stderr


def test_the_sidecar_never_loads_grpcio():
    """The native data plane serves every API (and /metrics, reloads, health) without loading
    grpcio: ~11 MiB of an idle sidecar's memory that it does not need."""
    with Sidecar(EXAMPLES / "policy.json") as sidecar:
        assert sidecar.client.decide("create-ami", grant="maps").verdict == "ALLOW"
        assert (
            sidecar.metric(
                "toolgate_decisions_total", api="decider", verdict="ALLOW", code="ALLOWED"
            )
            == 1
        )
        assert sidecar.proc is not None
        maps = Path(f"/proc/{sidecar.proc.pid}/maps").read_text()
    assert "cygrpc" not in maps, maps


def test_metrics_name_the_api_of_each_decision_and_error():
    """Decisions carry the API that asked; gRPC errors are counted by API and status."""
    from envoy.service.auth.v3 import external_auth_pb2
    from envoy.service.ratelimit.v3 import rls_pb2

    with Sidecar(EXAMPLES / "policy.json") as s:
        decide = decider_pb2.DecideRequest(tool="nope").SerializeToString()
        check = external_auth_pb2.CheckRequest()
        check.attributes.request.http.method = "POST"
        check.attributes.request.http.raw_body = (
            b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"nope"}}'
        )
        limit = rls_pb2.RateLimitRequest(domain="d")
        entry = limit.descriptors.add().entries.add()
        entry.key, entry.value = "tool", "nope"
        calls = [
            ("/toolgate.v1.Decider/Decide", decide, []),
            ("/envoy.service.auth.v3.Authorization/Check", check.SerializeToString(), []),
            (
                "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
                limit.SerializeToString(),
                [],
            ),
            # Errors: bytes that are no message, a deadline already passed.
            ("/toolgate.v1.Decider/Decide", b"\xff\xff", []),
            ("/envoy.service.auth.v3.Authorization/Check", b"\x0a\x05\xff", []),
            ("/toolgate.v1.Decider/Decide", decide, [("grpc-timeout", "1n")]),
        ]
        for path, message, headers in calls:
            grpc_call(s.port, path, message, headers)
        decisions = s.series("toolgate_decisions_total")
        apis = {dict(labels)["api"] for labels, n in decisions.items() if n}
        assert apis == {"decider", "ext_authz", "ratelimit"}
        errors = {
            (dict(labels)["api"], dict(labels)["status"]): n
            for labels, n in s.series("toolgate_grpc_errors_total").items()
        }
        assert errors == {
            ("decider", "INVALID_ARGUMENT"): 1,
            ("ext_authz", "INVALID_ARGUMENT"): 1,
            ("decider", "DEADLINE_EXCEEDED"): 1,
        }
        # A message over gRPC's 4 MiB is refused before any handler runs, and counted.
        big = decider_pb2.DecideRequest(tool="x" * (5 << 20)).SerializeToString()
        with pytest.raises(grpc.RpcError) as info:
            s.raw("Decide")(big, timeout=30)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        over = s.metric("toolgate_grpc_errors_total", api="decider", status="RESOURCE_EXHAUSTED")
        assert over == 1
