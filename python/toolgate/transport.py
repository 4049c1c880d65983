"""The gRPC servers a sidecar can answer on, behind one interface.

- ``native`` (the default): the Rust data plane in the extension (tonic on threads of its
  own); no Python runs on the request path.
- ``grpcio``: Python's grpcio server, each RPC's bytes handed to the same Rust code. The
  pure-Python reference: the same answers, with about 20x the CPU per call.

Both serve ``toolgate.v1.Decider``, Envoy's ``Authorization``, ``ExternalProcessor`` and
``RateLimitService``, ``grpc.health.v1.Health`` and server reflection on one address.
"""

from __future__ import annotations

from typing import Protocol

from envoy.service.auth.v3 import external_auth_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor

from toolgate import envoy_authz, envoy_ext_proc, envoy_ratelimit
from toolgate._core import Engine, EnvoyAuthz, NativeServer
from toolgate.envoy_authz import CheckSettings
from toolgate.service import SERVICE_NAME, decider_handler

TRANSPORTS = ("native", "grpcio")

#: The services a health check can name, besides "" (the whole server).
SERVICES = (
    SERVICE_NAME,
    envoy_authz.SERVICE_NAME,
    envoy_ext_proc.SERVICE_NAME,
    envoy_ratelimit.SERVICE_NAME,
)


class Transport(Protocol):
    address: str

    def set_serving(self, serving: bool) -> None:
        """SERVING or NOT_SERVING on grpc.health.v1; calls are answered either way."""

    def stop(self, grace: float) -> None:
        """Refuse new calls, let in-flight ones finish within ``grace`` seconds."""


def start(
    kind: str,
    engine: Engine,
    check: CheckSettings,
    listen: str,
    threads: int,
    reuse_port: bool,
) -> Transport:
    """Bind ``listen`` and serve, reporting NOT_SERVING until told otherwise. ValueError for
    a bad address, OSError if it cannot bind."""
    if kind == "native":
        return _Native(engine, check, listen, threads, reuse_port)
    if kind == "grpcio":
        return _Grpcio(engine, check, listen, threads, reuse_port)
    raise ValueError(f"--transport must be one of {', '.join(TRANSPORTS)}, not {kind!r}")


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


def _authz(engine: Engine, check: CheckSettings) -> EnvoyAuthz:
    h = check.headers
    return EnvoyAuthz(
        engine,
        grant_header=h.grant,
        session_header=h.session,
        agent_header=h.agent,
        server_header=h.server,
        grant_claim=check.grant_claim,
        agent_claim=check.agent_claim,
        jwt_payload_key=check.jwt_payload_key,
        max_request_bytes=check.max_request_bytes,
    )


class _Native:
    def __init__(
        self, engine: Engine, check: CheckSettings, listen: str, threads: int, reuse_port: bool
    ) -> None:
        self._server = NativeServer(
            engine,
            _authz(engine, check),
            listen,
            threads=threads,
            reuse_port=reuse_port,
            descriptors=[envoy_descriptors()],
        )
        self.address = self._server.address

    def set_serving(self, serving: bool) -> None:
        self._server.set_serving(serving)

    def stop(self, grace: float) -> None:
        self._server.stop(grace)


class _Grpcio:
    def __init__(
        self, engine: Engine, check: CheckSettings, listen: str, threads: int, reuse_port: bool
    ) -> None:
        # Imported here: the native transport never loads grpcio (~11 MiB of memory).
        from concurrent.futures import ThreadPoolExecutor

        import grpc
        from grpc_health.v1 import health, health_pb2_grpc
        from grpc_reflection.v1alpha import reflection

        # Reflection answers from protobuf's default pool: register toolgate.v1's files in it.
        from toolgate.v1 import decider_pb2  # noqa: F401

        if listen.startswith("unix:") and reuse_port:
            raise ValueError("a unix socket cannot be shared by worker processes")
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
            options=[("grpc.so_reuseport", 1 if reuse_port else 0)],
        )
        self._server.add_generic_rpc_handlers(
            (
                decider_handler(engine),
                envoy_authz.authorization_handler(_authz(engine, check), engine),
                envoy_ext_proc.external_processor_handler(engine),
                envoy_ratelimit.rate_limit_handler(engine),
            )
        )
        self._health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        try:
            port = self._server.add_insecure_port(listen)
        except RuntimeError as err:
            raise OSError(f"cannot listen on {listen}: {err}") from err
        if port == 0:
            raise OSError(f"cannot listen on {listen}")
        self.address = listen
        self.set_serving(False)
        self._server.start()

    def set_serving(self, serving: bool) -> None:
        from grpc_health.v1 import health_pb2

        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", *SERVICES):
            self._health.set(service, status)

    def stop(self, grace: float) -> None:
        self._server.stop(grace).wait()
