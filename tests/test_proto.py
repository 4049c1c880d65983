"""The generated code must match what scripts/gen_proto makes: the Python code for
proto/toolgate/v1, and Envoy's services' descriptors that the native server's reflection
serves (from the xds-protos package, a test dependency)."""

import filecmp
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GENERATED = [
    f"{name}{suffix}"
    for name in ("decider_pb2", "approvals_pb2")
    for suffix in (".py", ".pyi", "_grpc.py")
]


def test_generated_code_is_current(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools is a test dependency")
    env = {**os.environ, "PYTHON": sys.executable}
    descriptors = tmp_path / "envoy_services.binpb"
    subprocess.run(
        [str(ROOT / "scripts/gen_proto"), str(tmp_path), str(descriptors)], check=True, env=env
    )
    committed = ROOT / "rust/server/envoy_services.binpb"
    assert descriptors.read_bytes() == committed.read_bytes(), (
        f"{committed} is stale: run scripts/gen_proto and commit the result"
    )
    for name in GENERATED:
        fresh = tmp_path / "toolgate/v1" / name
        committed = ROOT / "python/toolgate/v1" / name
        assert filecmp.cmp(fresh, committed, shallow=False), (
            f"{committed} is stale: run scripts/gen_proto and commit the result"
        )


def test_rust_and_python_agree_on_the_wire() -> None:
    """A request built by the generated Python code is decided by the Rust server, and its
    response parses back with every field set."""
    import grpc
    from native import DECIDE, RELEASE, call, served
    from toolgate.v1 import decider_pb2

    engine = served(
        {
            "version": "1",
            "tools": {
                "pay": {
                    "require": [{"path": "subject.attributes.team", "op": "eq", "value": "ops"}],
                    "limits": [
                        {
                            "counter": "spend",
                            "window": "day",
                            "max": 100,
                            "scope": "agent",
                            "cost": "args.amount",
                        }
                    ],
                }
            },
        }
    ).engine
    request = decider_pb2.DecideRequest(
        server="billing",
        tool="pay",
        subject=decider_pb2.Subject(grant="g", agent="a", session="s", attributes={"team": "ops"}),
        arguments_json=b'{"amount": 40}',
    )
    response = decider_pb2.DecideResponse.FromString(
        call(engine, DECIDE, request.SerializeToString())
    )
    assert response.verdict == decider_pb2.ALLOW
    assert response.code == decider_pb2.ALLOWED
    assert response.rule == "/tools/pay"
    assert response.revision == engine.revision
    assert response.reservation > 0
    assert not response.HasField("retry_after_ms")
    (limit,) = response.limits
    assert (limit.counter, limit.scope, limit.max, limit.remaining) == ("spend", "agent", 100, 60)

    request.arguments_json = b'{"amount": 61}'
    denied = decider_pb2.DecideResponse.FromString(
        call(engine, DECIDE, request.SerializeToString())
    )
    assert denied.verdict == decider_pb2.DENY
    assert denied.code == decider_pb2.RATE_LIMITED
    assert denied.HasField("retry_after_ms") and denied.retry_after_ms > 0

    release = decider_pb2.ReleaseRequest(reservation=response.reservation)
    released = decider_pb2.ReleaseResponse.FromString(
        call(engine, RELEASE, release.SerializeToString())
    )
    assert released.released

    with pytest.raises(grpc.RpcError) as refused:
        call(engine, DECIDE, b"\x12\x02\xff\xfe")  # field 2 (tool) holding invalid UTF-8
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
