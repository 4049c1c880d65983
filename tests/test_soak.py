"""bench/soak.py, the soak under load: a short run through real Envoy, the sidecar and its
upstream keeps every invariant (each call answered as the model says, the client's tallies,
toolgate's metrics and Envoy's counters agreeing sample by sample, every reload loaded, the
pending approvals as many as the distinct calls), and the checker finds a count that is off
or a call answered wrongly. Nothing here judges speed: the run is at a small rate with
generous deadlines (``--check``), and only its counts are asserted. The 5-minute run on Redis
is in scripts/test, beside pytest.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import soak  # noqa: E402

#: The short soak: 6 samples of 5 s at 60 calls/s, a reload every 2 s.
SAMPLES, SAMPLE_S, RATE, CAP = 6, 5, 60, 20


def test_a_short_soak_keeps_every_invariant(tmp_path):
    out = tmp_path / "soak.json"
    cmd = [
        sys.executable, str(ROOT / "bench" / "soak.py"), "--store", "local",
        "--minutes", str(SAMPLES * SAMPLE_S / 60), "--sample", str(SAMPLE_S), "--reload", "2",
        "--rate", str(RATE), "--cap", str(CAP), "--check", "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-6000:]
    result = json.loads(out.read_text())
    samples = result["samples"]
    assert len(samples) == SAMPLES
    assert result["problems"] == []
    totals: Counter = Counter()
    for s in samples:
        assert s["errors"] == 0 and s["problems"] == [], s
        assert s["sent"] == RATE * SAMPLE_S + 5 * 4  # the calls, and 5 warm-up calls a conn
        assert sum(s["counts"].values()) == s["sent"]
        # The same calls three ways: the client's tallies, toolgate's metrics, Envoy's.
        by_code: Counter = Counter()
        for key, n in s["counts"].items():
            by_code[key.split(":")[1]] += n
        assert s["toolgate"] == {f"decisions:{code}": n for code, n in by_code.items()}
        assert s["envoy"]["http.mcp.ext_authz.ok"] == by_code["ALLOWED"]
        assert s["envoy"]["upstream:http.upstream.downstream_rq_2xx"] == by_code["ALLOWED"]
        assert s["envoy"]["http.mcp.ext_authz.denied"] == s["sent"] - by_code["ALLOWED"]
        totals.update(s["counts"])
    # Every class answered, each as the model says; the cap exactly, over reloads.
    assert set(totals) == {
        "allowed:ALLOWED",
        "denied:CONDITION_FAILED",
        "unknown:DEFAULT_DENY",
        "capped:ALLOWED",
        "capped:RATE_LIMITED",
        "sliding:ALLOWED",
        "sliding:RATE_LIMITED",
        "approval:APPROVAL_REQUIRED",
    }
    assert totals["capped:ALLOWED"] == CAP
    assert result["reloads_written"] >= 10
    assert result["revisions"] == result["reloads_written"] + 1
    assert result["final"]["reloads_loaded"] == result["reloads_written"]
    assert result["final"]["approvals"] == {"PENDING": soak.APPROVAL_CALLS} | {
        k: 0 for k in result["final"]["approvals"] if k != "PENDING"
    }
    invariants = {k: a for k, a in result["aims"].items() if not a["speed"]}
    assert all(a["met"] for a in invariants.values()), invariants


def rows(*spec: tuple[int, str, int, str, int]) -> list[dict]:
    return [
        {"body": b, "value": v, "status": st, "end": end, "count": n} for b, v, st, end, n in spec
    ]


def test_answers_the_model_does_not_allow_are_errors():
    classes = ["allowed", "capped", "approval"]
    counts, errors = soak.classify(
        rows(
            (0, "ALLOWED", 200, "ok", 10),
            (1, "RATE_LIMITED", 200, "ok", 3),
            (2, "APPROVAL_REQUIRED", 200, "ok", 2),
            (0, "-", 503, "ok", 1),  # Envoy's answer when toolgate did not
            (1, "ALLOWED", 0, "timeout", 1),
            (2, "ALLOWED", 200, "ok", 1),  # an approval call let through
            (0, "-", 0, "reset", 1),
        ),
        classes,
    )
    assert counts == Counter(
        {
            ("allowed", "ALLOWED"): 10,
            ("capped", "RATE_LIMITED"): 3,
            ("approval", "APPROVAL_REQUIRED"): 2,
        }
    )
    assert len(errors) == 4
    assert "HTTP 503" in errors[0] and "timeout" in errors[1] and "reset" in errors[3]
    assert errors[2].startswith("1 x approval: HTTP 200, x-toolgate-code ALLOWED")


def test_the_model_counts_the_cap_over_the_whole_run():
    model = soak.Model(cap=5, sliding=2)
    assert model.check(Counter({("capped", "ALLOWED"): 3}), 1.0) == []
    assert (
        model.check(Counter({("capped", "ALLOWED"): 2, ("capped", "RATE_LIMITED"): 4}), 1.0) == []
    )
    # The cap is used up: one more call allowed (a reload that lost the counter) is caught.
    (problem,) = model.check(
        Counter({("capped", "ALLOWED"): 1, ("capped", "RATE_LIMITED"): 5}), 1.0
    )
    assert problem.startswith("capped: 1 ALLOWED of 6 (want 0")
    # ...and so is one refused too soon.
    model = soak.Model(cap=5, sliding=2)
    (problem,) = model.check(
        Counter({("capped", "ALLOWED"): 4, ("capped", "RATE_LIMITED"): 1}), 1.0
    )
    assert "want 5" in problem


def test_the_model_bounds_the_sliding_window():
    model = soak.Model(cap=5, sliding=2)
    # 10 s: at most 2 x (10 + 1) allowed.
    assert model.check(Counter({("sliding", "ALLOWED"): 22}), 10.0) == []
    (problem,) = model.check(Counter({("sliding", "ALLOWED"): 23}), 10.0)
    assert "at most 22" in problem
    (problem,) = model.check(Counter({("sliding", "RATE_LIMITED"): 40}), 10.0)
    assert "does not slide" in problem


def test_a_counter_one_off_is_a_mismatch():
    counts = Counter({("allowed", "ALLOWED"): 10, ("denied", "CONDITION_FAILED"): 4})
    want = soak.envoy_want(counts)
    got = dict(want)
    assert soak.compare("Envoy", want, got) == []
    got["cluster.mcp.upstream_rq_total"] += 1  # one denied call reached the upstream
    (problem,) = soak.compare("Envoy", want, got)
    assert problem == "Envoy cluster.mcp.upstream_rq_total +11 (want 10)"
    tg = soak.toolgate_want(counts)
    assert tg["decisions:ALLOWED"] == 10 and tg["decisions:CONDITION_FAILED"] == 4
    assert soak.compare("toolgate", tg, {**tg, "store_fallbacks": 1}) != []


def sample(
    i: int, errors: int = 0, problems=(), rss=40.0, p99=1000.0, fds=30, deciding=0, redis=20
) -> dict:
    return {
        "index": i,
        "errors": errors,
        "problems": list(problems),
        "rss_mib": {"toolgate": rss},
        "p99_us": p99,
        "fds": {"toolgate": fds, "redis": redis, "envoy": 35},
        "deciding_threads": deciding,
    }


def test_invariants_set_the_exit_status_and_speed_only_without_check():
    steady = [sample(i) for i in range(10)]
    result = {"aims": soak.aims(steady, 2)}
    assert soak.failed(result, check=False) == []
    # An error in one sample, fds that grow: invariants, failed with --check too.
    bad = [*steady[:5], sample(5, errors=1), *steady[6:9], sample(9, fds=40)]
    result = {"aims": soak.aims(bad, 2)}
    assert soak.failed(result, check=True) == ["errors", "fds"]
    # RSS and p99 that grow: speed aims, which --check leaves out of the exit status.
    slow = [*steady[:7], *(sample(i, rss=44.0, p99=1300.0) for i in range(7, 10))]
    result = {"aims": soak.aims(slow, 2)}
    assert soak.failed(result, check=False) == ["rss_growth", "p99_drift"]
    # The drift is between the medians it names, not the first and last samples alone.
    drift = result["aims"]["p99_drift"]
    assert (drift["from_us"], drift["to_us"]) == (1000.0, 1300.0)
    assert drift["value"] == pytest.approx(0.3)
    assert soak.failed(result, check=True) == []


def test_deciding_threads_may_add_their_redis_connections_and_nothing_more():
    steady = [sample(i) for i in range(10)]
    # A slow spell of Redis: 7 more deciding threads, each with its connection, on both ends.
    grown = [*steady[:6], *(sample(i, fds=37, redis=27, deciding=7) for i in range(6, 10))]
    assert soak.aims(grown, 2)["fds"]["met"]
    # More fds than the threads explain (beyond the slack), on either end: a leak.
    over = 7 + soak.FD_SLACK + 1
    for leak in ({"fds": 30 + over}, {"redis": 20 + over}):
        leaky = [*steady[:9], sample(9, **({"fds": 37, "redis": 27, "deciding": 7} | leak))]
        assert not soak.aims(leaky, 2)["fds"]["met"], leak
    # Envoy's fds are its own: deciding threads do not excuse them.
    fds = {"toolgate": 30, "redis": 20, "envoy": 44}
    envoy = [*steady[:9], {**sample(9, deciding=9), "fds": fds}]
    assert soak.aims(envoy, 2)["fds"]["value"] == {"envoy": 44}
