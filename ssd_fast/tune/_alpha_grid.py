"""Which (alpha, lambda) to try next: a log-spaced grid, then bisection where outcomes flip.

For a fixed lambda the selected set only shrinks as alpha grows (f > alpha * d), so
forget and retain accuracy move (nearly) monotonically with alpha. Between two grid
points where "forgets enough" or "keeps retain" flips, bisection in log(alpha) finds
the boundary; where both neighbours selected the same number of parameters the sets
are identical, so there is nothing in between to find.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol


class Outcome(Protocol):
    alpha: float
    lam: float
    selected: int
    meets_forget: bool
    meets_retain: bool


def default_alphas(low: float = 0.1, high: float = 300.0, per_decade: int = 6) -> list[float]:
    """Log-spaced alphas from `low` to `high` inclusive, `per_decade` per factor of ten."""
    steps = round(math.log10(high / low) * per_decade)
    return [low * (high / low) ** (i / steps) for i in range(steps + 1)]


def bisection_points(outcomes: Sequence[Outcome], lam: float, *, min_ratio: float = 1.05) -> list[float]:
    """Midpoints (in log alpha) of neighbouring trials at `lam` whose outcomes differ."""
    row = sorted((o for o in outcomes if o.lam == lam), key=lambda o: o.alpha)
    points = []
    for lo, hi in zip(row, row[1:]):
        flips = lo.meets_forget != hi.meets_forget or lo.meets_retain != hi.meets_retain
        if flips and lo.selected != hi.selected and hi.alpha / lo.alpha > min_ratio:
            points.append(math.sqrt(lo.alpha * hi.alpha))
    return points
