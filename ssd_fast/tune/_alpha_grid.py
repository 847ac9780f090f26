"""Which alphas to try: the values where the selected set changes, spaced evenly in log(count).

A parameter is selected when f > alpha * d, so the selected set only shrinks as alpha grows,
and it changes only where alpha crosses a ratio f/d. Sorting the ratios once gives, for any
count k, the alpha that selects the k parameters with the largest ratios: the grid below
takes counts k growing by a factor `resolution` from 1 to every parameter, so neighbouring
alphas always select different sets and no two grid points ask the same question twice.
Parameters with d = 0 < f are selected at every alpha, and f = 0 never.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def default_alphas(low: float = 0.1, high: float = 300.0, per_decade: int = 6) -> list[float]:
    """Log-spaced alphas from `low` to `high` inclusive, `per_decade` per factor of ten."""
    steps = round(math.log10(high / low) * per_decade)
    return [low * (high / low) ** (i / steps) for i in range(steps + 1)]


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t  # a DTensor: the whole tensor


def sorted_ratios(
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], *, max_sorted: int = 1 << 24
) -> tuple[torch.Tensor, float]:
    """The finite positive ratios f/d (f, d > 0), descending, on the CPU, and how many
    parameters each stands for (1, or more when a model this large is subsampled evenly)."""
    ratios = []
    for f, d in pairs:
        f, d = _local(f).detach().flatten().float(), _local(d).detach().flatten().float()
        keep = (f > 0) & (d > 0)
        ratios.append((f[keep] / d[keep]).cpu())
    flat = torch.cat(ratios) if ratios else torch.empty(0)
    weight = 1.0
    if flat.numel() > max_sorted:  # one sort of every ratio would cost more than the search gains
        step = math.ceil(flat.numel() / max_sorted)
        flat, weight = flat[::step], float(step)
    return flat.sort(descending=True).values, weight


def selection_alphas(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], resolution: float = 1.05) -> list[float]:
    """Ascending alphas that select about 1, r, r^2, ... and finally every parameter with a
    finite ratio (r = `resolution`), one alpha per distinct selected set."""
    desc, _ = sorted_ratios(pairs)
    n = desc.numel()
    if n == 0:
        return []
    counts, k = set(), 1.0
    while k < n:
        counts.add(min(int(round(k)), n - 1))
        k = max(k * resolution, k + 1)
    alphas = {float(desc[c]) for c in counts}  # desc[c]: exactly the c largest ratios lie above it
    alphas.add(float(desc[-1]) / 2)  # every finite ratio above it
    return sorted(a for a in alphas if a > 0 and math.isfinite(a))


def largest_ratio(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """max f/d over elements with d > 0: every alpha at or above it selects the same set
    (only the d == 0 elements), so one such alpha stands for all of them."""
    largest = 0.0
    for f, d in pairs:
        ratio = _local(f) / _local(d)
        finite = ratio[torch.isfinite(ratio)]
        if finite.numel():
            largest = max(largest, float(finite.max()))
    return largest


def given_alphas(alphas: Sequence[float], pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[float]:
    """A caller's grid, ascending, with the alphas above the largest ratio collapsed to one."""
    grid = sorted(set(alphas))
    ceiling = largest_ratio(pairs)
    above = [a for a in grid if a >= ceiling]
    return [a for a in grid if a < ceiling] + above[:1]
