"""The gRPC server the sidecar answers on: the Rust data plane in the extension (tonic on
threads of its own, one per CPU); no Python runs on the request path.

It serves ``toolgate.v1.Decider``, Envoy's ``Authorization``, ``ExternalProcessor`` and
``RateLimitService``, ``grpc.health.v1.Health`` and server reflection on one address.
"""

from __future__ import annotations

from envoy.service.auth.v3 import external_auth_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor

from toolgate._core import SERVICES, Engine, EnvoyAuthz, NativeServer
from toolgate.sidecar.envoy_authz import CheckSettings

__all__ = ["SERVICES", "envoy_descriptors", "start"]


def start(engine: Engine, check: CheckSettings, listen: str, threads: int) -> NativeServer:
    """Bind ``listen`` and serve, reporting NOT_SERVING until told otherwise. ValueError for
    a bad address, OSError if it cannot bind."""
    return NativeServer(
        engine, _authz(check), listen, threads=threads, descriptors=[envoy_descriptors()]
    )


def envoy_descriptors() -> bytes:
    """Envoy's ext_authz, ext_proc and rate limit services and every file they import, as
    one encoded FileDescriptorSet, for the native server's reflection."""
    files = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            add(dependency)
        file.CopyToProto(files.file.add())

    add(external_auth_pb2.DESCRIPTOR)
    add(external_processor_pb2.DESCRIPTOR)
    add(rls_pb2.DESCRIPTOR)
    return files.SerializeToString()


def _authz(check: CheckSettings) -> EnvoyAuthz:
    h = check.headers
    return EnvoyAuthz(
        grant_header=h.grant,
        session_header=h.session,
        agent_header=h.agent,
        server_header=h.server,
        grant_claim=check.grant_claim,
        agent_claim=check.agent_claim,
        jwt_payload_key=check.jwt_payload_key,
        max_request_bytes=check.max_request_bytes,
    )
