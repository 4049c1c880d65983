"""Write the fuzz targets' seed corpus (rust/fuzz/seeds/TARGET/): MCP bodies, policies and
gRPC request messages of every method, built from the project's own examples and Envoy's
published protos. Run from the repository root with the project's venv:
``.venv/bin/python rust/fuzz/make_seeds.py``."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from envoy.config.core.v3 import base_pb2
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf import struct_pb2, wrappers_pb2
from toolgate.v1 import decider_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from conftest import POLICYLAYER_EXAMPLES  # the policies of PolicyLayer's documentation

ROOT = Path(__file__).resolve().parents[2]
SEED_DIR = ROOT / "rust" / "fuzz" / "seeds"

BODIES = [
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "create-ami", "arguments": {"name": "web", "tags": ["a", {"b": 1.5}]}},
    },
    {
        "jsonrpc": "2.0",
        "id": "x",
        "method": "tools/call",
        "params": {
            "name": "transfer_funds",
            "arguments": {"amount": 250, "currency": "USD"},
            "_meta": {"progressToken": 3},
        },
    },
    {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": 3, "result": {"action": "accept"}},
]
RAW_BODIES = [
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":'
    b'{"amount":5,"Amount":5000}}}',
    '{"jsonrpc":"2.0","id":1,"method":"tools/call","param\u017f":{"name":"x"},'
    '"params":{"name":"t"}}'.encode(),
    b'{"a":"\\u00e9\\ud83d\\ude00","n":[1e5,-0,0.5,9007199254740991]}',
    b"[" * 130 + b"]" * 130,
]


def call_check(body: bytes, headers: dict[str, str]) -> bytes:
    ctx = attribute_context_pb2.AttributeContext
    http = ctx.HttpRequest(method="POST", path="/mcp", headers=headers, raw_body=body)
    payload = struct_pb2.Struct()
    payload.update({"sub": "alice", "aud": "mcp"})
    metadata = base_pb2.Metadata()
    metadata.filter_metadata["envoy.filters.http.jwt_authn"].update({"jwt_payload": {"sub": "a"}})
    request = external_auth_pb2.CheckRequest(
        attributes=ctx(
            request=ctx.Request(http=http),
            context_extensions={"server": "seed"},
            metadata_context=metadata,
        )
    )
    return request.SerializeToString()


def wire_seeds() -> list[bytes]:
    """The first byte picks the method (see fuzz_targets/wire_decoder.rs)."""
    decide = decider_pb2.DecideRequest(
        tool="transfer_funds",
        server="seed",
        subject=decider_pb2.Subject(grant="g", agent="a", attributes={"team": "infra"}),
        arguments_json=b'{"amount": 250}',
    )
    batch = decider_pb2.DecideBatchRequest(requests=[decide, decider_pb2.DecideRequest(tool="x")])
    release = decider_pb2.ReleaseRequest(reservation=12345)
    body = json.dumps(BODIES[0]).encode()
    descriptor = ratelimit_pb2.RateLimitDescriptor(
        entries=[
            ratelimit_pb2.RateLimitDescriptor.Entry(key="tool", value="create-ami"),
            ratelimit_pb2.RateLimitDescriptor.Entry(key="grant", value="g"),
        ],
        hits_addend=wrappers_pb2.UInt64Value(value=2),
    )
    rls = rls_pb2.RateLimitRequest(domain="seed", descriptors=[descriptor], hits_addend=1)
    return [
        b"\x00" + decide.SerializeToString(),
        b"\x01" + batch.SerializeToString(),
        b"\x02" + release.SerializeToString(),
        b"\x03" + call_check(body, {"authorization": "Bearer t", "content-length": str(len(body))}),
        b"\x03" + call_check(body, {"x-envoy-auth-partial-body": "true"}),
        b"\x04" + rls.SerializeToString(),
    ]


def write(target: str, seeds: list[bytes]) -> None:
    directory = SEED_DIR / target
    directory.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        (directory / hashlib.sha1(seed).hexdigest()[:16]).write_bytes(seed)


def main() -> None:
    write("body_reader", [json.dumps(b).encode() for b in BODIES] + RAW_BODIES)
    policies = [p.read_bytes() for p in sorted((ROOT / "examples").glob("policy.*"))]
    policies += [text.encode() for text, _, _, _ in POLICYLAYER_EXAMPLES]
    write("policy_loader", policies)
    write("wire_decoder", wire_seeds())


if __name__ == "__main__":
    main()
