"""The benchmarks' confidence interval for a median ratio (bench/harness): it covers
the true median at least as often as it says, and is the narrowest interval that does."""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from harness import median_ci


def below(n: int, j: int) -> float:
    """P(Binomial(n, 1/2) < j): the chance that fewer than j of n draws fall under the
    median, i.e. that the j-th smallest value lies above it."""
    return sum(math.comb(n, k) for k in range(j)) / 2**n


@given(st.integers(min_value=6, max_value=200))
def test_interval_is_the_tightest_pair_of_order_statistics_with_95_percent_coverage(n):
    low, high = median_ci([float(i) for i in range(n)])
    j = int(low) + 1  # the j-th smallest of 0..n-1 is j - 1
    assert high == n - j, "the interval is symmetric in rank"
    assert 1 - 2 * below(n, j) >= 0.95
    assert 1 - 2 * below(n, j + 1) < 0.95, "one rank narrower would still cover 95%"


@pytest.mark.parametrize("n", [0, 1, 2, 5])
def test_too_few_values_give_no_interval(n):
    assert median_ci([1.0] * n) is None


@pytest.mark.parametrize("n", [9, 21, 51])
def test_the_interval_covers_a_known_median_at_least_95_percent_of_the_time(n):
    rng = random.Random(n)
    trials = 4000
    covered = 0
    for _ in range(trials):
        # Skewed ratios, as run-to-run spread is: lognormal with median exactly 1.05.
        xs = [1.05 * math.exp(rng.gauss(0, 0.2)) for _ in range(n)]
        low, high = median_ci(xs)
        assert low <= sorted(xs)[n // 2] <= high
        covered += low <= 1.05 <= high
    # Exact coverage is >= 95%; 4000 trials put the observed rate within ~1% of it.
    assert covered / trials >= 0.935
