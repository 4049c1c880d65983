"""Each admin token's share of the admin listener (toolgate.sidecar.approvals.capacity):
checked against a model over generated sequences of calls from several tokens, and, with
threads, that a call over its share waits for one of its token's calls to end.

No assertion on time: a waiting call is seen waiting through the capacity's own count, and
released by the test."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sidecar import PATIENCE, wait_for
from toolgate.sidecar.approvals.capacity import (
    CALLS_PER_TOKEN,
    MAX_THREADS,
    SPARE_THREADS,
    WAITING_PER_TOKEN,
    WATCHES_PER_TOKEN,
    Exhausted,
    TokenCapacity,
    threads_for,
)

TOKENS = ["alice", "bob", "carol"]
# (token, watch, open: True opens a call, False ends the token's oldest of that kind)
steps = st.lists(st.tuples(st.sampled_from(TOKENS), st.booleans(), st.booleans()), max_size=60)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_a_token_is_served_up_to_its_share_whatever_the_others_hold(sequence):
    """With no wait: a call is served exactly when its token has room of its kind, however
    many calls the other tokens hold."""
    capacity = TokenCapacity(wait_s=0)
    held: dict[tuple[str, bool], list[contextlib.ExitStack]] = {}
    model: Counter[tuple[str, bool]] = Counter()
    for token, watch, opening in sequence:
        key = (token, watch)
        if not opening:
            if held.get(key):
                held[key].pop(0).close()
                model[key] -= 1
            continue
        limit = WATCHES_PER_TOKEN if watch else CALLS_PER_TOKEN
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(capacity.hold(token, watch))
        except Exhausted as err:
            assert model[key] == limit, (key, model)
            assert token in str(err)
        else:
            assert model[key] < limit, (key, model)
            model[key] += 1
            held.setdefault(key, []).append(stack)
        for t in TOKENS:
            assert capacity.held(t) == (model[(t, False)], model[(t, True)], 0)
            assert capacity.admits(t)  # nothing waits: every token may still ask


@pytest.mark.parametrize("watch", [False, True], ids=["call", "watch"])
def test_a_call_over_its_share_waits_for_its_tokens_call_to_end(watch: bool):
    capacity = TokenCapacity(wait_s=PATIENCE)
    limit = WATCHES_PER_TOKEN if watch else CALLS_PER_TOKEN
    with contextlib.ExitStack() as share:
        releases = []
        for _ in range(limit):
            inner = contextlib.ExitStack()
            inner.enter_context(capacity.hold("bob", watch))
            releases.append(inner)
        share.callback(lambda: [r.close() for r in releases])
        # And every call of the other kind: bob's whole share is held.
        other = WATCHES_PER_TOKEN if not watch else CALLS_PER_TOKEN
        for _ in range(other):
            share.enter_context(capacity.hold("bob", not watch))

        served = threading.Event()

        def over() -> None:
            with capacity.hold("bob", watch):
                served.set()

        waiters = [threading.Thread(target=over) for _ in range(WAITING_PER_TOKEN)]
        for w in waiters:
            w.start()
        wait_for(lambda: capacity.held("bob")[2] == WAITING_PER_TOKEN)
        # Past the waiting calls: refused at once, and refused before a thread (admits).
        with pytest.raises(Exhausted, match="waiting already"), capacity.hold("bob", watch):
            pass
        assert not capacity.admits("bob")
        # Another token is served at once, and is admitted.
        assert capacity.admits("alice")
        with capacity.hold("alice", watch):
            pass
        assert not served.is_set()
        # One of bob's calls ends: a waiting call is served.
        releases.pop().close()
        assert served.wait(PATIENCE)
        releases.clear()
        for w in waiters:
            w.join(PATIENCE)
    assert capacity.held("bob") == (0, 0, 0)


def test_a_call_that_waits_in_vain_is_refused_and_holds_nothing():
    capacity = TokenCapacity(wait_s=0.01)
    with contextlib.ExitStack() as share:
        for _ in range(CALLS_PER_TOKEN):
            share.enter_context(capacity.hold("bob", False))
        with pytest.raises(Exhausted, match="none ended"), capacity.hold("bob", False):
            pass
        assert capacity.held("bob") == (CALLS_PER_TOKEN, 0, 0)
    assert capacity.held("bob") == (0, 0, 0)


@given(st.integers(1, 500))
def test_the_threads_fit_every_tokens_share_up_to_the_cap(tokens: int):
    per_token = CALLS_PER_TOKEN + WATCHES_PER_TOKEN + WAITING_PER_TOKEN
    threads = threads_for(tokens)
    assert threads <= MAX_THREADS
    if tokens * per_token + SPARE_THREADS <= MAX_THREADS:
        assert threads >= tokens * per_token + SPARE_THREADS
