"""Property tests against simple reference models: tool-name matching precedence, and the
sliding-window guarantee and worst case (docs/counters.md)."""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass

import toolgate
from conftest import START, limit, make_engine, policy
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

# --- the matcher -------------------------------------------------------------------------------

# A small alphabet, so exact names, globs and tool names collide often.
LETTERS = "ab_"
names = st.text(LETTERS, min_size=1, max_size=4)
patterns = st.text(LETTERS + "*?", min_size=1, max_size=4)


def literal_prefix(pattern: str) -> str:
    for i, c in enumerate(pattern):
        if c in "*?":
            return pattern[:i]
    return pattern


def is_glob(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


def best_match(name: str, entries: list[str]) -> int | None:
    """Index of the entry that decides for ``name``: an exact name first (the first written),
    then the glob with the longest literal prefix, then the most literal characters, then the
    first written."""
    for i, entry in enumerate(entries):
        if not is_glob(entry) and entry == name:
            return i
    globs = [
        (-len(literal_prefix(entry)), -sum(c not in "*?" for c in entry), i)
        for i, entry in enumerate(entries)
        if is_glob(entry) and fnmatch.fnmatchcase(name, entry)
    ]
    return min(globs)[2] if globs else None


def reference_rule(name: str, hide: list[str], tools: list[str]) -> tuple[str, str]:
    """(code, rule) the precedence of docs/policy.md gives under ``default: deny``."""
    h = best_match(name, hide)
    if h is not None:
        return "HIDDEN", f"/hide/{h}"
    t = best_match(name, tools)
    if t is not None:
        return "ALLOWED", f"/tools/{tools[t]}"
    return "DEFAULT_DENY", "/default"


@settings(max_examples=300, deadline=None)
@given(
    hide=st.lists(patterns, max_size=3),
    tools=st.lists(patterns, max_size=8, unique=True),
    calls=st.lists(names, min_size=1, max_size=10),
)
def test_matcher_follows_the_reference_precedence(hide, tools, calls):
    doc = policy({t: {} for t in tools}, hide=hide)
    # JSON text keeps the document order that breaks ties.
    engine = make_engine(toolgate.Policy.from_str(json.dumps(doc)))
    for name in calls:
        d = engine.decide(name)
        assert (d.code, d.rule) == reference_rule(name, hide, tools), (name, hide, tools)


@settings(max_examples=100, deadline=None)
@given(tools=st.lists(patterns, min_size=1, max_size=6, unique=True), name=names)
def test_matcher_exact_names_always_win(tools, name):
    doc = policy({t: {} for t in [*tools, name] if t != name} | {name: {}})
    d = make_engine(toolgate.Policy.from_str(json.dumps(doc))).decide(name)
    assert d.rule == f"/tools/{name}"


# --- counters ----------------------------------------------------------------------------------

WINDOW_MS = 10_000
MAX = 5
# A sub-bucket: the window is cut into 12 of ceil(W / 12).
BUCKET_NS = -(-WINDOW_MS * 1_000_000 // 12)
START_NS = int(START * 1e9)

LIMIT_POLICY = policy({"t": {"limits": [limit("c", MAX, window="10s")]}})


@dataclass
class Call:
    at_ns: int
    allowed: bool
    remaining: float


def run(steps: list[int]) -> list[Call]:
    """Advance by each step (ms) and make one call; return every call."""
    clock = toolgate.ManualClock(START)
    engine = make_engine(LIMIT_POLICY, clock)
    now_ns = START_NS
    calls = []
    for step_ms in steps:
        clock.advance(step_ms / 1000)
        now_ns += step_ms * 1_000_000
        assert abs(clock.now - now_ns / 1e9) < 1e-6
        d = engine.decide("t", grant="g")
        assert d.code in ("ALLOWED", "RATE_LIMITED")
        calls.append(Call(now_ns, d.allowed, d.limits[0].remaining))
    return calls


def allowed_in(calls: list[Call], start_ns: int, end_ns: int) -> int:
    """Allowed calls with start_ns <= at_ns <= end_ns."""
    return sum(1 for c in calls if c.allowed and start_ns <= c.at_ns <= end_ns)


# Steps in whole ms: bursts (0), steps inside a sub-bucket, and slides past whole windows.
steps_ms = st.lists(
    st.one_of(
        st.just(0),
        st.integers(0, 1_000),
        st.integers(0, 4_000),
        st.integers(9_000, 12_000),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps_ms)
def test_never_more_than_max_in_any_window(steps):
    calls = run(steps)
    for c in calls:
        if c.allowed:
            # every closed interval of length W that starts at an allowed call
            assert allowed_in(calls, c.at_ns, c.at_ns + WINDOW_MS * 1_000_000) <= MAX


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps_ms)
def test_denied_only_when_the_last_window_plus_a_bucket_is_full(steps):
    calls = run(steps)
    worst_ns = WINDOW_MS * 1_000_000 + BUCKET_NS
    for i, c in enumerate(calls):
        # allowed calls before this one (earlier calls at the same instant included)
        recent = sum(1 for p in calls[:i] if p.allowed and c.at_ns - p.at_ns < worst_ns)
        if not c.allowed:
            assert recent >= MAX, (c, [p for p in calls if p.allowed])
        # what is reported left never exceeds what the reference leaves
        in_window = allowed_in(calls[: i + 1], c.at_ns - WINDOW_MS * 1_000_000, c.at_ns)
        assert c.remaining <= MAX - min(in_window, MAX)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps_ms)
def test_retry_after_is_exact(steps):
    clock = toolgate.ManualClock(START)
    engine = make_engine(LIMIT_POLICY, clock)
    for step_ms in steps:
        clock.advance(step_ms / 1000)
        engine.decide("t", grant="g")
    # Fill the window, then check the retry-after of the first denial.
    while (d := engine.decide("t", grant="g")).allowed:
        pass
    retry = d.retry_after_ms
    assert retry is not None
    assert 0 < retry <= WINDOW_MS + BUCKET_NS // 1_000_000 + 1
    if retry > 1:
        clock.advance((retry - 1) / 1000)
        assert engine.decide("t", grant="g", dry_run=True).code == "RATE_LIMITED"
        clock.advance(0.001)
    else:
        clock.advance(retry / 1000)
    assert engine.decide("t", grant="g").code == "ALLOWED"


@settings(max_examples=150, deadline=None)
@example(millis=[497_993, 2_007])  # 2.007 * 1000 is 2007.0000000000002 in floating point
@given(millis=st.lists(st.integers(0, 300_000), max_size=20))
def test_spend_limit_is_exact_to_a_thousandth(millis):
    """Costs are fixed-point, exact to 1/1000: a call is allowed exactly when its cost fits in
    what is left of the budget."""
    doc = policy(
        {"pay": {"limits": [limit("spend", 500, window="day", scope="agent", cost="args.amount")]}}
    )
    engine = make_engine(doc)
    spent = 0  # in thousandths
    for m in millis:
        d = engine.decide("pay", agent="a", arguments={"amount": m / 1000})
        fits = spent + m <= 500_000
        assert d.code == ("ALLOWED" if fits else "RATE_LIMITED"), (m / 1000, spent / 1000)
        if fits:
            spent += m
        assert d.limits[0].remaining == (500_000 - spent) / 1000


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    history=st.lists(st.tuples(st.integers(0, 3_000), st.integers(0, 10)), max_size=30),
    amount=st.integers(1, 10),
)
def test_retry_after_is_exact_for_costs(history, amount):
    """After a denial, the same cost fits exactly retry_after_ms later, and not 1 ms sooner."""
    doc = policy(
        {"pay": {"limits": [limit("spend", 10, window="10s", scope="agent", cost="args.amount")]}}
    )
    clock = toolgate.ManualClock(START)
    engine = make_engine(doc, clock)
    for step_ms, cost in history:
        clock.advance(step_ms / 1000)
        engine.decide("pay", agent="a", arguments={"amount": cost})
    d = engine.decide("pay", agent="a", arguments={"amount": amount}, dry_run=True)
    if d.allowed:
        return
    retry = d.retry_after_ms
    assert retry is not None and retry > 0
    assert retry <= WINDOW_MS + BUCKET_NS // 1_000_000 + 1
    if retry > 1:
        clock.advance((retry - 1) / 1000)
        assert not engine.decide(
            "pay", agent="a", arguments={"amount": amount}, dry_run=True
        ).allowed
        clock.advance(0.001)
    else:
        clock.advance(retry / 1000)
    assert engine.decide("pay", agent="a", arguments={"amount": amount}).allowed
