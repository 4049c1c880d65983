"""``toolgate serve --store redis://...`` and Redis's ``maxmemory-policy`` (docs/redis.md,
"Memory"), against real ``redis-server`` and ``toolgate serve`` processes.

- A policy that can evict counter keys (any but ``noeviction``), or one Redis will not tell,
  is refused at start, naming ``--store-accept-eviction``: directly, through Sentinel, and
  over TLS. ``CONFIG`` renamed, the policy is read from
  ``INFO``.
- ``noeviction`` serves, reported as 0 in ``toolgate_store_counters_evictable``.
- With ``--store-accept-eviction`` it serves, warns, and reports 1 with the policy: the
  finding's example, where a full ``volatile-ttl`` Redis evicts a spent daily counter and the
  limit allows again, is what the metric (and the alert on it) tells the operator.
- A policy changed while serving, a failover to a primary set up otherwise, and a Redis that
  was unreachable at start are read again and reported.
- A full Redis under ``noeviction`` refuses writes: calls that need a new count are denied
  (STORE_UNAVAILABLE), and no count is forgotten.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import limit, policy
from redis_server import RedisServer, SentinelServer
from sidecar import Sidecar, free_port, toolgate_cli, wait_for
from test_redis import code, decide

ROOT = Path(__file__).resolve().parent.parent
METRIC = "toolgate_store_counters_evictable"
#: A daily limit of 2 per grant: once spent, only an evicted counter would allow again.
DAILY = policy({"create-ami": {"limits": [limit("ami", 2, window="day")]}})
#: Read the policy again this often, so a change shows within a poll.
QUICK_CHECKS = ("--store-eviction-check-interval", "0.1")


@pytest.fixture
def redis() -> Any:
    with RedisServer() as server:
        yield server


def store_args(url: str, *extra: str) -> list[str]:
    return ["--store", url, "--store-timeout-ms", "1000", *extra]


def refused_at_start(url: str, *extra: str) -> str:
    """Start ``toolgate serve`` on ``url``; it must exit 2 before serving. Its stderr."""
    listen = ["--listen", f"127.0.0.1:{free_port()}", "--metrics-listen", "off"]
    out = toolgate_cli("serve", *listen, *store_args(url, *extra), timeout=30)
    assert out.returncode == 2, out.stderr
    return out.stderr


def evicted_by_a_write(redis: RedisServer) -> bool:
    """Write (which a full Redis refuses once it has evicted what it may): True when no
    counter or reservation of toolgate's is left."""
    redis.cli("SET", "filler", "x")
    left = redis.keys()
    return not any(k.startswith(("toolgate:c:", "toolgate:r:")) for k in left)


def counters(redis: RedisServer) -> set[str]:
    """toolgate's counter keys in ``redis``."""
    return set(filter(lambda k: k.startswith("toolgate:c:"), redis.keys()))


def spend(sc: Sidecar, grant: str = "alice") -> list[str]:
    return [code(decide(sc.target, "create-ami", grant=grant)) for _ in range(3)]


@pytest.mark.parametrize("evicting", ["volatile-ttl", "allkeys-lru"])
def test_a_redis_that_can_evict_counters_is_refused_at_start(evicting: str) -> None:
    with RedisServer(config=("--maxmemory-policy", evicting)) as redis:
        stderr = refused_at_start(redis.url)
    assert f"its maxmemory-policy is {evicting}" in stderr, stderr
    assert "Set maxmemory-policy noeviction" in stderr and "--store-accept-eviction" in stderr


def test_noeviction_serves_and_reports_0(redis: RedisServer) -> None:
    with Sidecar(DAILY, *store_args(redis.url)) as sc:
        assert spend(sc) == ["ALLOWED", "ALLOWED", "RATE_LIMITED"]
        assert sc.series(METRIC) == {frozenset({("policy", "noeviction")}): 0}


def test_accepted_eviction_serves_warns_and_reports_the_policy_an_evicted_limit_allows_again(
    redis: RedisServer,
) -> None:
    """The finding: volatile-ttl with a full Redis evicts a spent daily counter, and the limit
    allows again. With the flag toolgate serves, and the metric and its alert say so."""
    redis.cli("CONFIG", "SET", "maxmemory-policy", "volatile-ttl")
    with Sidecar(DAILY, *store_args(redis.url, "--store-accept-eviction")) as sc:
        assert "WARNING" in sc.stderr and "its maxmemory-policy is volatile-ttl" in sc.stderr
        assert sc.series(METRIC) == {frozenset({("policy", "volatile-ttl")}): 1}
        assert spend(sc) == ["ALLOWED", "ALLOWED", "RATE_LIMITED"]
        # Redis full: a write makes it evict what it may, the keys with an expiry (toolgate's
        # counters and reservations; the epoch has none, so no loss is noticed)...
        redis.cli("CONFIG", "SET", "maxmemory", "1")
        wait_for(lambda: evicted_by_a_write(redis))
        redis.cli("CONFIG", "SET", "maxmemory", "0")
        left = redis.keys()
        assert "toolgate:epoch" in left, left
        # ...and the day's spent limit allows again.
        assert code(decide(sc.target, "create-ami", grant="alice")) == "ALLOWED"
    # What tells the operator: the shipped alert fires on exactly that sample.
    alerts = yaml.safe_load((ROOT / "deploy/kubernetes/monitoring/alerts.yaml").read_text())
    rules = {r["alert"]: r for g in alerts["groups"] for r in g["rules"]}
    assert rules["ToolgateRedisCanEvictCounters"]["expr"] == f"{METRIC} == 1"


def test_a_full_redis_under_noeviction_denies_new_counts_and_forgets_none(
    redis: RedisServer,
) -> None:
    with Sidecar(DAILY, *store_args(redis.url)) as sc:
        assert spend(sc) == ["ALLOWED", "ALLOWED", "RATE_LIMITED"]
        redis.cli("CONFIG", "SET", "maxmemory", "1")
        # A call that must write a count is refused by Redis (OOM): denied, never allowed
        # uncounted; a spent limit needs no write and stays spent.
        d = decide(sc.target, "create-ami", grant="bob")
        assert code(d) == "STORE_UNAVAILABLE" and "counter store" in d.reason
        assert (sc.metric("toolgate_store_errors_total", kind="reply") or 0) >= 1
        assert code(decide(sc.target, "create-ami", grant="alice")) == "RATE_LIMITED"
        redis.cli("CONFIG", "SET", "maxmemory", "0")
        assert spend(sc, "bob") == ["ALLOWED", "ALLOWED", "RATE_LIMITED"]
        assert code(decide(sc.target, "create-ami", grant="alice")) == "RATE_LIMITED"


def test_a_policy_changed_while_serving_is_logged_and_reported(redis: RedisServer) -> None:
    with Sidecar(DAILY, *store_args(redis.url, *QUICK_CHECKS)) as sc:
        assert sc.series(METRIC) == {frozenset({("policy", "noeviction")}): 0}
        redis.cli("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
        wait_for(lambda: sc.series(METRIC) == {frozenset({("policy", "allkeys-lru")}): 1})
        wait_for(lambda: "ERROR" in sc.stderr and "maxmemory-policy is allkeys-lru" in sc.stderr)
        redis.cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
        wait_for(lambda: sc.series(METRIC) == {frozenset({("policy", "noeviction")}): 0})


@pytest.mark.parametrize("outage", ["deny", "local"])
@pytest.mark.parametrize("evicting", ["volatile-ttl", "allkeys-lru"])
def test_while_redis_may_evict_counters_limits_follow_the_outage_behaviour(
    redis: RedisServer, evicting: str, outage: str
) -> None:
    """A policy set to evict while serving: no call is counted in a Redis that may evict
    its counter (whose loss would allow a spent limit again) until noeviction is back; the
    calls then follow ``--store-unavailable``: denied, or counted in the sidecar's table."""
    args = store_args(redis.url, *QUICK_CHECKS, "--store-unavailable", outage)
    with Sidecar(DAILY, *args) as sc:
        assert spend(sc) == ["ALLOWED", "ALLOWED", "RATE_LIMITED"]
        redis.cli("CONFIG", "SET", "maxmemory-policy", evicting)
        wait_for(lambda: "limits follow the store's outage behaviour" in sc.stderr)
        if outage == "deny":
            assert spend(sc, "dave") == ["STORE_UNAVAILABLE"] * 3
            assert code(decide(sc.target, "create-ami")) == "STORE_UNAVAILABLE"
        else:
            # Counted in the sidecar's own table.
            assert spend(sc, "dave") == ["ALLOWED", "ALLOWED", "RATE_LIMITED"]
        before = counters(redis)
        spend(sc, "erin")
        assert counters(redis) == before
        redis.cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
        wait_for(lambda: "maxmemory-policy noeviction now" in sc.stderr)
        assert code(decide(sc.target, "create-ami", grant="frank")) == "ALLOWED"
        # Alice's spent limit was never lost: Redis still has it.
        assert code(decide(sc.target, "create-ami", grant="alice")) == "RATE_LIMITED"


def test_a_redis_unreachable_at_start_is_read_once_it_answers() -> None:
    with RedisServer(config=("--maxmemory-policy", "allkeys-random")) as redis:
        redis.kill()
        with Sidecar(DAILY, *store_args(redis.url, *QUICK_CHECKS)) as sc:
            assert "cannot read its maxmemory-policy yet" in sc.stderr
            assert sc.series(METRIC) == {}
            redis.start()
            wait_for(lambda: sc.series(METRIC) == {frozenset({("policy", "allkeys-random")}): 1})
            wait_for(lambda: "ERROR" in sc.stderr and "allkeys-random" in sc.stderr)


def test_through_sentinel_the_primary_is_read_and_a_failover_to_an_evicting_one_reported() -> None:
    with (
        RedisServer(config=("--maxmemory-policy", "volatile-ttl")) as primary,
        RedisServer(replica_of=primary.port, config=("--maxmemory-policy", "volatile-lru")) as r,
        SentinelServer(primary.port) as sentinel,
    ):
        assert "its maxmemory-policy is volatile-ttl" in refused_at_start(sentinel.url)
        primary.cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
        with Sidecar(DAILY, *store_args(sentinel.url, *QUICK_CHECKS)) as sc:
            # The primary's policy, not the replica's.
            assert sc.series(METRIC) == {frozenset({("policy", "noeviction")}): 0}
            primary.kill()
            wait_for(lambda: sentinel.primary() == r.port or None)
            wait_for(lambda: sc.series(METRIC) == {frozenset({("policy", "volatile-lru")}): 1})


def test_over_tls_the_policy_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    with RedisServer(tls=True, config=("--maxmemory-policy", "allkeys-lfu")) as server:
        monkeypatch.setenv("SSL_CERT_FILE", str(server.ca))
        assert "its maxmemory-policy is allkeys-lfu" in refused_at_start(server.tls_url)
        server.cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
        with Sidecar(DAILY, *store_args(server.tls_url)) as sc:
            assert sc.series(METRIC) == {frozenset({("policy", "noeviction")}): 0}


def test_without_config_the_policy_is_read_from_info() -> None:
    renamed = ("--rename-command", "CONFIG", "", "--maxmemory-policy", "volatile-random")
    with RedisServer(config=renamed) as redis:
        assert "its maxmemory-policy is volatile-random" in refused_at_start(redis.url)


def test_a_redis_that_will_not_tell_its_policy_is_refused_unless_accepted() -> None:
    silent = ("--rename-command", "CONFIG", "", "--rename-command", "INFO", "")
    with RedisServer(config=silent) as redis:
        stderr = refused_at_start(redis.url)
        assert "its maxmemory-policy cannot be read" in stderr, stderr
        assert "--store-accept-eviction" in stderr
        with Sidecar(DAILY, *store_args(redis.url, "--store-accept-eviction")) as sc:
            assert sc.series(METRIC) == {frozenset({("policy", "unreadable")}): 1}
            assert spend(sc) == ["ALLOWED", "ALLOWED", "RATE_LIMITED"]


def test_the_check_interval_must_be_positive(redis: RedisServer) -> None:
    for interval in ("0", "nan"):
        stderr = refused_at_start(redis.url, "--store-eviction-check-interval", interval)
        assert "--store-eviction-check-interval must be positive" in stderr
