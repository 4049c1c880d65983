"""Whether the counter store's Redis may evict counter keys (``toolgate serve --store``).

Only ``maxmemory-policy noeviction`` keeps every key. Under any other policy a full Redis
evicts keys, counters included (they carry expiries, so the ``volatile-*`` policies take them
too), and a limit whose counter is evicted allows its calls again (docs/redis.md, "Memory").
The sidecar reads the policy of the primary it counts on before it serves, and refuses to
start on any other (or on one Redis will not tell) unless ``--store-accept-eviction``; then
again every ``--store-eviction-check-interval`` seconds, on a thread of its own (never per
decision), so a ``CONFIG SET`` or a failover to a primary set up otherwise is logged and
reported in ``toolgate_store_counters_evictable``; and, unless accepted, limits follow the
store's outage behaviour (``--store-unavailable``) until Redis keeps every key again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from toolgate._core import read_maxmemory_policy
from toolgate.sidecar.background import Background

log = logging.getLogger("toolgate.store")

NO_EVICTION = "noeviction"
#: The ``policy`` label when Redis refuses to say (``CONFIG`` and ``INFO`` renamed or refused).
UNREADABLE = "unreadable"
#: The option that accepts a Redis that can evict counters.
ACCEPT_OPTION = "--store-accept-eviction"
#: How long one reading waits for Redis.
READ_WAIT_S = 2.0


@dataclass(frozen=True)
class Reading:
    """One look at Redis: its policy (``UNREADABLE`` when it would not say), or None when it
    did not answer; ``detail`` says why in those two cases."""

    policy: str | None
    detail: str = ""

    @property
    def evictable(self) -> bool:
        """Redis may evict counter keys, or that cannot be ruled out."""
        return self.policy is not None and self.policy != NO_EVICTION

    def risk(self) -> str:
        if self.policy == UNREADABLE:
            return (
                f"its maxmemory-policy cannot be read ({self.detail}), so toolgate cannot "
                "rule out that a full Redis evicts counter keys"
            )
        return (
            f"its maxmemory-policy is {self.policy}: a full Redis evicts keys, counter keys "
            "included, and a limit whose counter is evicted allows its calls again"
        )


def read(url: str, wait: float = READ_WAIT_S) -> Reading:
    """The policy of the primary ``url`` names now."""
    kind, text = read_maxmemory_policy(url, wait)
    if kind == "policy":
        return Reading(text)
    return Reading(UNREADABLE if kind == "unreadable" else None, text)


class EvictionWatch:
    """Reads the policy of the Redis at ``url`` (``where``: the URL without its password) at
    start and every ``every`` seconds; ``accepted``: ``--store-accept-eviction``.
    ``refuse_limits(True)`` is called when Redis comes to evict counter keys unaccepted (the
    store then treats limits as in an outage), ``refuse_limits(False)`` when it stops."""

    def __init__(
        self,
        url: str,
        where: str,
        *,
        accepted: bool,
        every: float,
        refuse_limits: Callable[[bool], None] = lambda _: None,
    ) -> None:
        self._url = url
        self._where = where
        self._accepted = accepted
        self._every = every
        self._refuse_limits = refuse_limits
        #: The last policy Redis told (None: it has not answered yet).
        self.last: Reading | None = None
        self._loop = Background(
            "toolgate-eviction", self.step, every, log, "counter store: reading its policy"
        )

    def check_at_start(self) -> None:
        """Read the policy before serving: ValueError, which refuses to start, when Redis can
        evict counters and that was not accepted."""
        reading = read(self._url)
        if reading.evictable and not self._accepted:
            raise ValueError(
                f"counter store {self._where}: {reading.risk()}. Set maxmemory-policy "
                f"noeviction on that Redis (docs/redis.md), or start with {ACCEPT_OPTION} to "
                "accept the risk"
            )
        if reading.policy is None:
            log.warning(
                "counter store %s: cannot read its maxmemory-policy yet (%s); reading it "
                "every %gs (toolgate_store_counters_evictable)",
                self._where,
                reading.detail,
                self._every,
            )
            return
        self.last = reading
        if reading.evictable:
            log.warning(
                "counter store %s: %s; serving anyway (%s)",
                self._where,
                reading.risk(),
                ACCEPT_OPTION,
            )
        else:
            log.info("counter store %s: maxmemory-policy %s", self._where, NO_EVICTION)

    def step(self) -> None:
        """Read the policy again and log a change. A Redis that does not answer leaves the
        last reading standing: the store's own errors report the outage."""
        reading = read(self._url)
        if reading.policy is None:
            return
        last, self.last = self.last, reading
        if last is not None and last.policy == reading.policy:
            return
        if not reading.evictable:
            log.info("counter store %s: maxmemory-policy %s now", self._where, NO_EVICTION)
            self._refuse_limits(False)
        elif self._accepted:
            log.warning("counter store %s: %s (%s)", self._where, reading.risk(), ACCEPT_OPTION)
        else:
            self._refuse_limits(True)
            log.error(
                "counter store %s: %s. Until maxmemory-policy is %s again on that Redis, "
                "limits follow the store's outage behaviour (--store-unavailable)",
                self._where,
                reading.risk(),
                NO_EVICTION,
            )

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()


class EvictionCollector(Collector):
    """``toolgate_store_counters_evictable``: no sample without a store, or before Redis has
    told its policy."""

    def __init__(self, watch: EvictionWatch | None) -> None:
        self._watch = watch

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "toolgate_store_counters_evictable",
            "1 if the counter store's Redis can evict counter keys: its maxmemory-policy "
            "(label policy; unreadable when Redis will not tell) is not noeviction; 0 for "
            "noeviction. Read at start and every --store-eviction-check-interval.",
            labels=["policy"],
        )
        last = self._watch.last if self._watch is not None else None
        if last is not None and last.policy is not None:
            gauge.add_metric([last.policy], 1 if last.evictable else 0)
        yield gauge
