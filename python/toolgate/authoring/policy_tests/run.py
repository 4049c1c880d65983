"""Running policy test cases: each on a fresh engine whose clock moves only when the case
says so, every decision compared with what the case expects."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolgate import Engine, ManualClock
from toolgate.authoring.policy_tests.cases import Case, Step, TestFile

#: Where every case's clock starts, in seconds: far from zero, so no window reaches before it.
CLOCK_START = 1_000_000.0


@dataclass
class Failure:
    """One decision that was not what a step expected."""

    step: str
    call: int
    of: int
    tool: str
    mismatches: list[str]
    decision: dict[str, Any]
    steps: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "call": self.call,
            "of": self.of,
            "tool": self.tool,
            "mismatches": self.mismatches,
            "decision": self.decision,
            "explain": self.steps,
        }


@dataclass
class CaseResult:
    name: str
    failure: Failure | None = None

    @property
    def passed(self) -> bool:
        return self.failure is None


def _reported_limit(decision: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The limit a decision reports: the one that denied it, or the one with least room."""
    limits = decision["limits"]
    if decision["code"] == "RATE_LIMITED":
        for limit in limits:
            if limit["rule"] == decision["rule"]:
                return limit
    return min(limits, key=lambda limit: limit["remaining"], default=None)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


def compare(expect: Mapping[str, Any], decision: Mapping[str, Any]) -> list[str]:
    """What in ``decision`` differs from ``expect``, one line each."""
    out: list[str] = []
    for key in ("verdict", "code", "rule", "reason", "shadow"):
        if key in expect and decision[key] != expect[key]:
            out.append(f"{key}: expected {expect[key]!r}, got {decision[key]!r}")
    if "reason_contains" in expect and expect["reason_contains"] not in decision["reason"]:
        out.append(
            f"reason: expected to contain {expect['reason_contains']!r}, got {decision['reason']!r}"
        )
    if "retry_after_ms" in expect:
        want, got = expect["retry_after_ms"], decision["retry_after_ms"]
        if isinstance(want, dict):
            low, high = want.get("min", -math.inf), want.get("max", math.inf)
            if got is None or not low <= got <= high:
                out.append(f"retry_after_ms: expected within [{low}, {high}], got {got!r}")
        elif want != got:
            out.append(f"retry_after_ms: expected {want!r}, got {got!r}")
    if "remaining" in expect:
        want = expect["remaining"]
        if isinstance(want, dict):
            by_counter = {limit["counter"]: limit["remaining"] for limit in decision["limits"]}
            for counter, n in want.items():
                if counter not in by_counter:
                    out.append(f"remaining: the decision touched no limit {counter!r}")
                elif not _close(by_counter[counter], n):
                    out.append(f"remaining of {counter!r}: expected {n}, got {by_counter[counter]}")
        else:
            limit = _reported_limit(decision)
            if limit is None:
                out.append(f"remaining: expected {want}, but the decision touched no limit")
            elif not _close(limit["remaining"], want):
                out.append(
                    f"remaining ({limit['counter']}): expected {want}, got {limit['remaining']}"
                )
    if "marks_read" in expect or "marks_set" in expect:
        marks = decision.get("marks") or {"read": {}, "set": []}
        if "marks_read" in expect and marks["read"] != expect["marks_read"]:
            out.append(f"marks_read: expected {expect['marks_read']!r}, got {marks['read']!r}")
        if "marks_set" in expect and sorted(marks["set"]) != sorted(expect["marks_set"]):
            out.append(f"marks_set: expected {expect['marks_set']!r}, got {marks['set']!r}")
    return out


def compare_list(expect: Mapping[str, Any], shown: Sequence[tuple[str, str | None]]) -> list[str]:
    """What in a filtered list differs from ``expect``: the names shown, the codes of those
    removed."""
    out: list[str] = []
    names = [name for name, code in shown if code is None]
    removed = {name: code for name, code in shown if code is not None}
    if "shown" in expect and sorted(names) != sorted(expect["shown"]):
        out.append(f"shown: expected {sorted(expect['shown'])!r}, got {sorted(names)!r}")
    if "removed" in expect and removed != expect["removed"]:
        out.append(f"removed: expected {expect['removed']!r}, got {removed!r}")
    return out


def _list(engine: Engine, step: Step) -> Failure | None:
    """Filter a step's tool list as the sidecar would; a failure when it is not as expected."""
    assert step.listing is not None
    s = step.listing.subject
    shown = engine.list_tools(
        json.dumps(step.listing.tools),
        server=s.server,
        grant=s.grant,
        session=s.session,
        agent=s.agent,
        attributes=s.attributes,
        grant_verified=s.grant_verified,
    )
    mismatches = compare_list(step.expect, shown)
    if not mismatches:
        return None
    at = f"{step.where} ({step.name})" if step.name else step.where
    listed = {"tools": [{"name": n, "removed": c} for n, c in shown]}
    return Failure(at, 1, 1, "tools/list", mismatches, listed, [])


def run_case(case: Case, policy: Path) -> CaseResult:
    """Run one case on a fresh engine and clock; stops at the first unexpected decision."""
    clock = ManualClock(CLOCK_START)
    engine = Engine.from_file(policy, clock=clock)
    for step in case.steps:
        clock.advance(step.advance)
        if step.listing is not None:
            failure = _list(engine, step)
            if failure is not None:
                return CaseResult(case.name, failure)
        if step.call is None:
            continue
        c = step.call
        for i in range(step.repeat):
            if i > 0:
                clock.advance(step.every)
            explanation = engine.explain(
                c.tool,
                server=c.server,
                grant=c.grant,
                session=c.session,
                agent=c.agent,
                attributes=c.attributes,
                arguments=c.arguments,
                dry_run=step.dry_run,
                hits=c.hits,
                grant_verified=c.grant_verified,
                kind=c.kind,
            )
            decision = explanation.decision
            if step.release and decision.reservation is not None:
                engine.release(decision.reservation)
            as_dict = decision.to_dict()
            mismatches = compare(step.expect, as_dict)
            if mismatches:
                at = f"{step.where} ({step.name})" if step.name else step.where
                failure = Failure(
                    at, i + 1, step.repeat, c.tool, mismatches, as_dict, explanation.steps
                )
                return CaseResult(case.name, failure)
    return CaseResult(case.name)


@dataclass
class FileResult:
    path: str
    policy: str
    cases: list[CaseResult]


def run(files: Sequence[TestFile], policies: Sequence[Path] = ()) -> list[FileResult]:
    """Run every case of every file against ``policies`` (each file's own when empty)."""
    results = []
    for f in files:
        for policy in policies or f.policies:
            results.append(
                FileResult(str(f.path), str(policy), [run_case(c, policy) for c in f.cases])
            )
    return results
