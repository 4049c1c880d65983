"""How much of the admin listener one admin token may hold.

Every token has calls of its own: ``CALLS_PER_TOKEN`` List, Get, Approve and Deny calls and
``WATCHES_PER_TOKEN`` Watch streams at once, so no holder of one token, however many calls it
opens, keeps another token's approver from being answered. A call over its token's share
waits up to ``WAIT_S`` for one of that token's calls to end (a script's burst is served,
not refused); at most ``WAITING_PER_TOKEN`` wait at once, and a call past that, or one that
waited in vain, is refused with RESOURCE_EXHAUSTED. The listener's threads are sized so that
every token's share, waiting calls included, fits at once (``threads_for``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

CALLS_PER_TOKEN = 4
WATCHES_PER_TOKEN = 2
WAITING_PER_TOKEN = 4
#: Seconds a call over its token's share waits for one of the token's calls to end.
WAIT_S = 2.0
#: Threads beyond the tokens' shares: the ones that answer calls refused at once.
SPARE_THREADS = 8
#: Most threads, however many tokens: past 100 tokens or so, tokens share this many.
MAX_THREADS = 1024


class Exhausted(Exception):
    """The token's share is taken and no room came free in time: the message says which."""


@dataclass
class _Held:
    calls: int = 0
    watches: int = 0
    waiting: int = 0

    def open(self, watch: bool) -> int:
        return self.watches if watch else self.calls


def threads_for(tokens: int) -> int:
    """Threads (and calls served at once) the listener needs so that every token's share fits."""
    per_token = CALLS_PER_TOKEN + WATCHES_PER_TOKEN + WAITING_PER_TOKEN
    return min(tokens * per_token + SPARE_THREADS, MAX_THREADS)


class TokenCapacity:
    """The calls each admin token holds, by the token's name."""

    def __init__(self, wait_s: float = WAIT_S) -> None:
        self._wait_s = wait_s
        self._changed = threading.Condition()
        # One entry per token name that called: as many as the tokens file holds.
        self._held: dict[str, _Held] = {}

    def admits(self, name: str) -> bool:
        """Whether a call of ``name`` may take a thread at all: false once its share and its
        waiting calls are all taken (read before the call is given a thread)."""
        with self._changed:
            h = self._held.get(name)
            if h is None:
                return True
            per_token = CALLS_PER_TOKEN + WATCHES_PER_TOKEN + WAITING_PER_TOKEN
            return h.calls + h.watches + h.waiting < per_token

    def held(self, name: str) -> tuple[int, int, int]:
        """``name``'s calls, Watch streams and waiting calls now."""
        with self._changed:
            h = self._held.get(name, _Held())
            return h.calls, h.watches, h.waiting

    @contextmanager
    def hold(self, name: str, watch: bool) -> Iterator[None]:
        """Hold one of ``name``'s calls (a Watch stream with ``watch``) for the block's
        length; Exhausted if none comes free within the wait."""
        limit = WATCHES_PER_TOKEN if watch else CALLS_PER_TOKEN
        what = "Watch streams" if watch else "calls"
        with self._changed:
            h = self._held.setdefault(name, _Held())
            if h.open(watch) >= limit:
                if h.waiting >= WAITING_PER_TOKEN:
                    raise Exhausted(
                        f"admin token {name} has {limit} {what} open and"
                        f" {WAITING_PER_TOKEN} waiting already"
                    )
                h.waiting += 1
                try:
                    freed = self._changed.wait_for(
                        lambda: h.open(watch) < limit, timeout=self._wait_s
                    )
                finally:
                    h.waiting -= 1
                if not freed:
                    raise Exhausted(
                        f"admin token {name} has {limit} {what} open; none ended within"
                        f" {self._wait_s:g}s"
                    )
            if watch:
                h.watches += 1
            else:
                h.calls += 1
        try:
            yield
        finally:
            with self._changed:
                if watch:
                    h.watches -= 1
                else:
                    h.calls -= 1
                self._changed.notify_all()
