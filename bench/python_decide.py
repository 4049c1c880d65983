"""Per-call cost of ``Engine.decide`` from Python (the pyo3 binding, no transport).

Each scenario times a loop of ``engine.decide(tool, grant=g, arguments=args)`` with
``time.perf_counter_ns``: ``--iterations`` calls per repeat, ``--repeats`` repeats (run
round-robin over the scenarios), and reports the median and the minimum ns per call over the
repeats. The loop overhead is included; the
``floor`` row runs the same loop against an empty Python method with the same signature, so
``- floor`` is what the decision adds over the cheapest possible Python call.

The arguments dict is built once and reused (building it is the caller's cost, not
toolgate's). The garbage collector is off while timing. Scenarios mirror the Rust benches in
rust/core/benches/decide.rs:

- one_limit_one_regex: a rule with one limit (per grant, max 1e9 a minute, so it never
  denies) and one ``deny_if`` regex on ``args.command``; allow path, dry run, and both deny
  paths (the regex matches; the limit is used up).
- no_limit: a bare rule, and the regex alone, for reference.
- keys: 1 active counter key vs ``--keys`` (default 1,000,000) in a 2^21-slot table; with
  many keys each call uses the next grant, so its slot is almost never in cache.
- tools: 10 vs 10,000 tools (exact names, then globs with distinct literal prefixes).

Run: ``.venv/bin/python bench/python_decide.py`` (prints a markdown table).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import toolgate
from toolgate import Engine

REGEX = r"(^|\s)(rm|mkfs|dd)\s"
SAFE = {"command": "ls -la /var/log/nginx"}
BAD = {"command": "sudo rm -rf /"}
BIG_MAX = 1_000_000_000
MANY_KEYS_CAPACITY = 1 << 21


def rule(counter: str, max_calls: int = BIG_MAX) -> dict[str, Any]:
    return {
        "deny_if": [{"path": "args.command", "op": "regex", "value": REGEX}],
        "limits": [{"counter": counter, "window": "minute", "max": max_calls, "scope": "grant"}],
    }


def policy(tools: dict[str, Any]) -> dict[str, Any]:
    return {"version": "1", "default": "deny", "tools": tools}


def single(r: dict[str, Any]) -> dict[str, Any]:
    return policy({"run_command": r})


def many_tools(n: int, name: Callable[[int], str]) -> dict[str, Any]:
    return policy({name(i): rule(f"rate_{i:05}") for i in range(n)})


class Floor:
    """Stands in for an engine: a method with decide's signature that does nothing."""

    def decide(
        self,
        tool: str,
        *,
        server: str | None = None,
        grant: str | None = None,
        arguments: dict[str, Any] | None = None,
        dry_run: bool = False,
    ) -> None:
        return None


@dataclass
class Scenario:
    name: str
    engine: Any
    tool: str
    args: dict[str, Any]
    grants: list[str] | None = None  # rotate through these; default: the one grant "g"
    dry_run: bool = False
    expect: str | None = "ALLOWED"


def loop(engine: Any, tool: str, seq: list[str], args: dict[str, Any]) -> int:
    t0 = time.perf_counter_ns()
    for g in seq:
        engine.decide(tool, grant=g, arguments=args)
    return time.perf_counter_ns() - t0


def loop_dry(engine: Any, tool: str, seq: list[str], args: dict[str, Any]) -> int:
    t0 = time.perf_counter_ns()
    for g in seq:
        engine.decide(tool, grant=g, arguments=args, dry_run=True)
    return time.perf_counter_ns() - t0


def measure_once(s: Scenario, iterations: int, r: int) -> float:
    """One repeat: ns per call over `iterations` calls (repeat `r` picks the grants)."""
    timer = loop_dry if s.dry_run else loop
    if s.grants is None:
        seq = ["g"] * iterations
    else:
        start = (r * iterations) % len(s.grants)
        seq = (s.grants[start:] + s.grants[:start])[:iterations]
    gc.collect()
    gc.disable()
    try:
        elapsed = timer(s.engine, s.tool, seq, s.args)
    finally:
        gc.enable()
    return elapsed / len(seq)


def scenarios(keys: int) -> list[tuple[str, Callable[[], Scenario]]]:
    """(name, builder): builders run lazily, so --filter skips expensive setup."""

    def limited() -> Engine:
        e = Engine(single(rule("run_command_rate", 1)))
        assert e.decide("run_command", grant="g", arguments=SAFE).code == "ALLOWED"
        return e

    def filled() -> Scenario:
        e = Engine(single(rule("run_command_rate")), capacity=MANY_KEYS_CAPACITY)
        grants = [f"grant-{i:07}" for i in range(keys)]
        for g in grants:
            e.decide("run_command", grant=g, arguments=SAFE)
        return Scenario(f"keys/{keys}", e, "run_command", SAFE, grants=grants)

    def tools(n: int, glob: bool) -> Scenario:
        if glob:
            e = Engine(many_tools(n, lambda i: f"tool_{i:05}_*"))
            return Scenario(f"tools/globs/{n}", e, f"tool_{n // 2:05}_run", SAFE)
        e = Engine(many_tools(n, lambda i: f"tool_{i:05}"))
        return Scenario(f"tools/{n}", e, f"tool_{n // 2:05}", SAFE)

    def allow_engine() -> Engine:
        return Engine(single(rule("run_command_rate")))

    return [
        ("floor", lambda: Scenario("floor", Floor(), "run_command", SAFE, expect=None)),
        (
            "one_limit_one_regex/allow",
            lambda: Scenario("one_limit_one_regex/allow", allow_engine(), "run_command", SAFE),
        ),
        (
            "one_limit_one_regex/allow_dry_run",
            lambda: Scenario(
                "one_limit_one_regex/allow_dry_run",
                allow_engine(),
                "run_command",
                SAFE,
                dry_run=True,
            ),
        ),
        (
            "one_limit_one_regex/deny_condition",
            lambda: Scenario(
                "one_limit_one_regex/deny_condition",
                allow_engine(),
                "run_command",
                BAD,
                expect="CONDITION_FAILED",
            ),
        ),
        (
            "one_limit_one_regex/deny_rate_limited",
            lambda: Scenario(
                "one_limit_one_regex/deny_rate_limited",
                limited(),
                "run_command",
                SAFE,
                expect="RATE_LIMITED",
            ),
        ),
        (
            "no_limit/bare",
            lambda: Scenario("no_limit/bare", Engine(single({})), "run_command", SAFE),
        ),
        (
            "no_limit/one_regex",
            lambda: Scenario(
                "no_limit/one_regex",
                Engine(single({"deny_if": rule("x")["deny_if"]})),
                "run_command",
                SAFE,
            ),
        ),
        (
            "keys/1",
            lambda: Scenario(
                "keys/1",
                Engine(single(rule("run_command_rate")), capacity=MANY_KEYS_CAPACITY),
                "run_command",
                SAFE,
            ),
        ),
        (f"keys/{keys}", filled),
        ("tools/10", lambda: tools(10, glob=False)),
        ("tools/10000", lambda: tools(10_000, glob=False)),
        ("tools/globs/10", lambda: tools(10, glob=True)),
        ("tools/globs/10000", lambda: tools(10_000, glob=True)),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", "--iterations", type=int, default=100_000, help="calls per repeat")
    p.add_argument("-r", "--repeats", type=int, default=15, help="repeats per scenario")
    p.add_argument("--keys", type=int, default=1_000_000, help="active keys for keys/N")
    p.add_argument("-k", "--filter", default="", help="only scenarios whose name contains this")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON here")
    a = p.parse_args(argv)

    print(
        f"Python {platform.python_version()} ({sys.implementation.name}), "
        f"toolgate {toolgate.__version__}, {a.iterations} calls x {a.repeats} repeats\n"
    )
    built: list[Scenario] = []
    for name, build in scenarios(a.keys):
        if a.filter not in name and name != "floor":
            continue
        s = build()
        if s.expect is not None:
            grant = s.grants[0] if s.grants else "g"
            d = s.engine.decide(s.tool, grant=grant, arguments=s.args, dry_run=s.dry_run)
            assert d.code == s.expect, f"{name}: {d.code} ({d.reason})"
        built.append(s)

    # Round-robin: each repeat runs every scenario once, so a burst of load from elsewhere
    # spreads over the scenarios instead of spoiling one of them.
    samples: dict[str, list[float]] = {s.name: [] for s in built}
    for r in range(a.repeats):
        for s in built:
            samples[s.name].append(measure_once(s, a.iterations, r))

    print("| scenario | median ns/call | min ns/call | median - floor |")
    print("|---|---:|---:|---:|")
    floor = statistics.median(samples["floor"])
    results: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    for name, xs in samples.items():
        med = statistics.median(xs)
        results[name] = med
        rows.append({"name": name, "median_ns": med, "min_ns": min(xs), "samples": xs})
        extra = "" if name == "floor" else f"{med - floor:,.0f}"
        print(f"| {name} | {med:,.0f} | {min(xs):,.0f} | {extra} |")

    if a.json:
        meta = {
            "python": platform.python_version(),
            "toolgate": toolgate.__version__,
            "iterations": a.iterations,
            "repeats": a.repeats,
        }
        with open(a.json, "w") as f:
            json.dump({"meta": meta, "results": rows}, f, indent=1)
    target = results.get("one_limit_one_regex/allow")
    if target is not None:
        verdict = "met" if target <= 1000 else "missed"
        print(f"\ntarget <= 1,000 ns (one limit + one regex, allow): {target:,.0f} ns, {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
