"""``toolgate serve``: the decision sidecar.

One process: the ``toolgate.v1.Decider`` gRPC service, Envoy's ext_authz and rate limit
services, ``grpc.health.v1.Health`` and server reflection on one port, Prometheus
``/metrics`` on another, hot reload of the policy file on change and on SIGHUP, and a
graceful stop on SIGTERM (NOT_SERVING for a drain period while still answering, then refuse
new calls, finish in-flight ones, exit 0).
"""

from __future__ import annotations

import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from toolgate import envoy_authz, envoy_ratelimit, logs
from toolgate._core import Engine, Policy
from toolgate.envoy_authz import CheckSettings
from toolgate.metrics import ReloadCounts, serve_metrics
from toolgate.reload import PolicyWatcher, file_digest
from toolgate.service import SERVICE_NAME, decider_handler
from toolgate.v1 import decider_pb2

log = logging.getLogger("toolgate.serve")

#: The policy served when none is given: nothing is allowed.
DENY_EVERYTHING = {"version": "1", "default": "deny"}


@dataclass
class ServeOptions:
    policy: Path | None = None
    listen: str = "127.0.0.1:50051"
    metrics_listen: str | None = "127.0.0.1:9464"
    threads: int = 8
    capacity: int = 1 << 16
    reservations: int = 1 << 16
    max_argument_bytes: int = 1 << 20
    reload_interval: float = 1.0
    drain: float = 1.0
    grace: float = 10.0
    log_format: str = "text"
    log_level: str = "info"
    metrics_per_tool: bool = False
    #: How ext_authz Check requests are read (subject headers, JWT claims, body limit).
    check: CheckSettings = field(default_factory=CheckSettings)
    #: Worker processes on one port; more than 1 runs a supervisor (toolgate.workers).
    workers: int = 1
    #: Set by the supervisor in each worker: the shared state file and this worker's index.
    shared: Path | None = None
    worker_index: int | None = None


def split_host_port(address: str) -> tuple[str, int]:
    """``127.0.0.1:9464`` or ``[::1]:9464`` → (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def load_policy(opts: ServeOptions) -> tuple[Policy, str | None]:
    """The policy to serve, and the digest of its file taken before it was read (so an edit
    made in between is seen as new)."""
    digest = file_digest(opts.policy) if opts.policy else None
    policy = Policy.from_file(opts.policy) if opts.policy else Policy.from_dict(DENY_EVERYTHING)
    return policy, digest


def serve(opts: ServeOptions) -> int:
    if opts.reload_interval <= 0 or opts.drain < 0 or opts.grace < 0:
        raise ValueError("--reload-interval must be positive; --drain and --grace not negative")
    if opts.workers < 1:
        raise ValueError("--workers must be at least 1")
    if opts.workers > 1 and opts.shared is None:
        from toolgate.workers import supervise

        return supervise(opts)
    if opts.shared is not None:
        from toolgate.workers import die_with_supervisor

        die_with_supervisor()
    policy, digest = load_policy(opts)
    engine = Engine(
        policy,
        capacity=opts.capacity,
        reservations=opts.reservations,
        max_argument_bytes=opts.max_argument_bytes,
        shared=opts.shared,
        worker=opts.worker_index,
    )
    engine.set_per_tool_metrics(opts.metrics_per_tool)
    logs.configure(opts.log_format, opts.log_level, lambda: engine.revision)
    if opts.policy is None:
        log.warning("no --policy given: serving the built-in deny-everything policy")

    reloads = ReloadCounts()
    # No SO_REUSEPORT for a lone sidecar: a second one on the same port must fail, not
    # share it silently. Workers of one supervisor share the port on purpose.
    reuseport = 1 if opts.shared is not None else 0
    server = grpc.server(
        ThreadPoolExecutor(max_workers=opts.threads, thread_name_prefix="grpc"),
        options=[("grpc.so_reuseport", reuseport)],
    )
    server.add_generic_rpc_handlers(
        (
            decider_handler(engine),
            envoy_authz.authorization_handler(engine, opts.check),
            envoy_ratelimit.rate_limit_handler(engine),
        )
    )
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    decider_name = decider_pb2.DESCRIPTOR.services_by_name["Decider"].full_name
    assert decider_name == SERVICE_NAME
    services = (SERVICE_NAME, envoy_authz.SERVICE_NAME, envoy_ratelimit.SERVICE_NAME)
    reflection.enable_server_reflection(
        (*services, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        port = server.add_insecure_port(opts.listen)
    except RuntimeError as err:
        log.error("cannot listen on %s: %s", opts.listen, err)
        return 2
    if port == 0:
        log.error("cannot listen on %s", opts.listen)
        return 2

    if opts.metrics_listen:
        host, metrics_port = split_host_port(opts.metrics_listen)
        try:
            serve_metrics(engine, reloads, host, metrics_port, per_tool=opts.metrics_per_tool)
        except OSError as err:
            log.error("cannot serve metrics on %s: %s", opts.metrics_listen, err)
            return 2

    watcher = None
    if opts.policy is not None:
        watcher = PolicyWatcher(
            opts.policy, engine, reloads, interval=opts.reload_interval, loaded_digest=digest
        )
        watcher.start()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if watcher is not None:
        signal.signal(signal.SIGHUP, lambda *_: watcher.trigger())
    else:
        # SIGHUP's default action would kill the sidecar; with no file there is nothing to
        # reload, so say so and keep serving.
        signal.signal(
            signal.SIGHUP, lambda *_: log.warning("SIGHUP ignored: no --policy file to reload")
        )

    server.start()
    for service in ("", *services):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "serving %s on %s (metrics on %s), policy %s",
        ", ".join(services),
        opts.listen,
        opts.metrics_listen or "off",
        opts.policy or "built-in deny-everything",
    )

    while not stop.wait(1.0):
        pass
    # NOT_SERVING first, while still answering, so health checkers see it and proxies stop
    # sending; then refuse new calls and let in-flight ones finish.
    log.info("stopping: NOT_SERVING for %.1fs, then finishing in-flight calls", opts.drain)
    health_servicer.enter_graceful_shutdown()
    stop.clear()
    stop.wait(opts.drain)
    server.stop(opts.grace).wait()
    if watcher is not None:
        watcher.stop()
    log.info("stopped")
    return 0
