"""The early stop's bounds: exact tails, certain cases, and an error rate within the risk taken."""

from __future__ import annotations

import math

import pytest
import torch

from ssd_fast.tune._bounds import at_least, at_most, hypergeom_cdf, hypergeom_sf, looks, mean_at_most, risk_per_look


@pytest.mark.parametrize(
    ("big_n", "big_k", "n"), [(500, 51, 32), (500, 5, 256), (2000, 1700, 512), (37, 0, 10), (37, 37, 5)]
)
def test_hypergeometric_tails_match_scipy(big_n, big_k, n) -> None:
    stats = pytest.importorskip("scipy.stats")
    for k in range(0, n + 1, max(1, n // 16)):
        assert hypergeom_cdf(big_n, big_k, n, k) == pytest.approx(
            stats.hypergeom.cdf(k, big_n, big_k, n), rel=1e-9, abs=1e-300
        )
        assert hypergeom_sf(big_n, big_k, n, k) == pytest.approx(
            stats.hypergeom.sf(k - 1, big_n, big_k, n), rel=1e-9, abs=1e-300
        )


def test_tails_by_enumeration_on_a_tiny_population() -> None:
    """Every subset of 4 out of 9 items, 3 marked: the exact distribution, counted."""
    from itertools import combinations

    marked = {0, 1, 2}
    counts = [len(marked & set(c)) for c in combinations(range(9), 4)]
    for k in range(5):
        assert hypergeom_cdf(9, 3, 4, k) == pytest.approx(sum(c <= k for c in counts) / len(counts))
        assert hypergeom_sf(9, 3, 4, k) == pytest.approx(sum(c >= k for c in counts) / len(counts))


def test_certain_answers_need_no_risk() -> None:
    assert at_most(500, 10, 6, 5, risk=0.0) is False  # already over the limit
    assert at_most(500, 498, 3, 5, risk=0.0) is True  # even two more hits stay under
    assert at_most(500, 500, 5, 5, risk=0.0) is True and at_most(500, 500, 6, 5, risk=0.0) is False
    assert at_most(500, 32, 0, 5, risk=1e-9) is None  # too few scored to say at that risk
    assert at_least(100, 100, 90, 90, risk=0.0) is True and at_least(100, 100, 89, 90, risk=0.0) is False


def test_answers_come_earlier_far_from_the_threshold() -> None:
    """Forget accuracy 90% against a 10% bound is decided from the first 32 samples."""
    assert at_most(500, 32, 29, 50, risk=1e-9) is False
    assert at_least(2000, 32, 32, 1500, risk=1e-9) is None  # 32 of 32 cannot show 75% of 2000 at 1e-9
    assert at_least(2000, 256, 256, 1500, risk=1e-9) is True


@pytest.mark.parametrize("truth_over", [True, False])
def test_wrong_answers_are_no_more_frequent_than_the_risk(truth_over) -> None:
    """A set just across the threshold, scored along 3,000 random orders: the early answers
    that differ from the whole set's are at most `risk` a look (plus sampling noise)."""
    size, limit, risk = 300, 30, 0.05
    right = limit + 1 if truth_over else limit  # whole-set answer to "at most 30 right?": False, True
    hits = torch.zeros(size, dtype=torch.bool)
    hits[:right] = True
    g = torch.Generator().manual_seed(0)
    wrong_by_look = {n: 0 for n in looks(size)[:-1]}
    trials = 3000
    for _ in range(trials):
        order = hits[torch.randperm(size, generator=g)]
        cumulative = order.cumsum(0)
        for n in wrong_by_look:
            answer = at_most(size, n, int(cumulative[n - 1]), limit, risk)
            if answer is not None and answer == truth_over:  # wrong: the truth is the opposite
                wrong_by_look[n] += 1
    sigma = math.sqrt(risk * (1 - risk) / trials)
    assert all(w / trials <= risk + 4 * sigma for w in wrong_by_look.values()), wrong_by_look


def test_hoeffding_for_several_units_a_sample() -> None:
    # 160 of 400 units right over 200 samples, at most 4 units each: clearly under 90%, at risk 1e-6.
    assert mean_at_most(1000, 200, 160.0, 400.0, 0.9, 4.0, 1e-6) is True
    assert mean_at_most(1000, 200, 380.0, 400.0, 0.3, 4.0, 1e-6) is False
    assert mean_at_most(1000, 50, 40.0, 100.0, 0.9, 4.0, 1e-6) is None  # too few for that risk
    assert mean_at_most(1000, 4, 2.0, 4.0, 0.5, 4.0, 1e-6) is None
    assert mean_at_most(50, 50, 45.0, 100.0, 0.45, 4.0, 1e-6) is True  # whole set: exact


def test_looks_double_and_the_budget_splits_evenly() -> None:
    assert looks(500) == [32, 64, 128, 256, 500]
    assert looks(20) == [20]
    assert risk_per_look(0.01, 100, 5) == pytest.approx(0.01 / 500)
