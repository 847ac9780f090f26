"""When a prefix of an evaluation set already decides a trial: exact finite-population bounds.

A trial asks yes/no questions about a whole evaluation set of N samples: "are at most c of
them right?" (forget) or "are at least c right?" (retain). `tune` scores the set in a fixed
random order, one growing prefix at a time, and stops as soon as the prefix answers.

Why exact and finite: the question is about the N samples themselves, not about a
distribution they were drawn from. A prefix of n samples of a uniformly random order is a
draw without replacement, so the number right in it, X, is hypergeometric given the
unknown number right in the whole set, K. We answer "K <= c" when
    P(X <= k | K = c + 1) <= risk,   (so few right would be rare were K above c)
answer "K > c" when
    P(X >= k | K = c) <= risk,
and otherwise score more. Both tails are monotone in K, so testing the one K at the
boundary covers every K beyond it. A wrong answer needs an event of probability at most
`risk`. At n = N nothing is left to chance: the answer is the whole set's.

When a sample counts several units (token accuracy on sequences with several labelled
positions), the question is sum(hits) <= theta * sum(units). Each sample then contributes
z = hits - theta * units, which lies in an interval of width M (the most units a sample
has), and Hoeffding's inequality, which holds for draws without replacement (Hoeffding 1963,
section 6), bounds the prefix mean of z around the whole set's mean.
"""

from __future__ import annotations

import math


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _hypergeom_log_pmf(big_n: int, big_k: int, n: int, x: int) -> float:
    return _log_choose(big_k, x) + _log_choose(big_n - big_k, n - x) - _log_choose(big_n, n)


def hypergeom_cdf(big_n: int, big_k: int, n: int, k: int) -> float:
    """P(X <= k) for X the number of marked items in n draws without replacement from
    big_n items of which big_k are marked."""
    low, high = max(0, n - (big_n - big_k)), min(n, big_k)
    if k < low:
        return 0.0
    if k >= high:
        return 1.0
    return min(1.0, sum(math.exp(_hypergeom_log_pmf(big_n, big_k, n, x)) for x in range(low, k + 1)))


def hypergeom_sf(big_n: int, big_k: int, n: int, k: int) -> float:
    """P(X >= k), as `hypergeom_cdf` (summed directly: 1 - cdf would lose the small tails)."""
    low, high = max(0, n - (big_n - big_k)), min(n, big_k)
    if k <= low:
        return 1.0
    if k > high:
        return 0.0
    return min(1.0, sum(math.exp(_hypergeom_log_pmf(big_n, big_k, n, x)) for x in range(k, high + 1)))


def at_most(size: int, scored: int, hits: int, limit: int, risk: float) -> bool | None:
    """Whether at most `limit` of the `size` samples are hits, from the first `scored` of
    them in a uniformly random order, `hits` of which are; None when more are needed.

    A True or False before the whole set is scored is wrong with probability at most `risk`.
    """
    if hits > limit:  # already over: certain
        return False
    if hits + (size - scored) <= limit:  # even if every unscored sample were a hit: certain
        return True
    if scored >= size:
        return hits <= limit
    if hypergeom_cdf(size, limit + 1, scored, hits) <= risk:
        return True
    if hypergeom_sf(size, limit, scored, hits) <= risk:
        return False
    return None


def at_least(size: int, scored: int, hits: int, limit: int, risk: float) -> bool | None:
    """Whether at least `limit` of the `size` samples are hits; as `at_most`."""
    below = at_most(size, scored, hits, limit - 1, risk)
    return None if below is None else not below


def mean_at_most(
    size: int, scored: int, hits: float, units: float, theta: float, widest: float, risk: float
) -> bool | None:
    """Whether the whole set's hits are at most `theta` times its units, from the first
    `scored` samples (`hits` and `units` summed over them), each sample holding at most
    `widest` units; None when more are needed. Hoeffding: wrong with probability <= `risk`."""
    if scored >= size:
        return hits <= theta * units + 1e-9
    if scored == 0 or widest <= 0:
        return None
    mean = (hits - theta * units) / scored
    width = widest * math.sqrt(math.log(1.0 / risk) / (2.0 * scored))
    if mean + width <= 0:
        return True
    if mean - width > 0:
        return False
    return None


def looks(size: int, first: int = 32) -> list[int]:
    """The prefix sizes at which a decision may be taken: doubling from `first`, then `size`.

    Doubling keeps the samples scored within twice what the decision needed, and the
    number of looks, which the error budget is split over, logarithmic in the set's size."""
    points, n = [], first
    while n < size:
        points.append(n)
        n *= 2
    return points + [size]


def risk_per_look(error_rate: float, settings: int, looks_per_setting: int) -> float:
    """The union bound: `settings` decisions (each setting, each set), each with up to
    `looks_per_setting` early looks, share `error_rate` evenly."""
    return error_rate / max(1, settings * looks_per_setting)
