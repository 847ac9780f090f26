"""The published dampening rule with its two extra knobs, in plain PyTorch.

ssd_fast's kernel computes theta * min(lambda * d / f, 1) on f > alpha * d. The published
code computes theta * min((lambda * d / f) ** exponent, lower_bound), which is the same
only when exponent == 1 and lower_bound == 1 (the values every published experiment
uses). For any other values, and for alpha == 0, which the kernel refuses, this
faithful torch path runs instead.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def published_dampen_(
    pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    *,
    alpha: float,
    lam: float,
    exponent: float,
    lower_bound: float,
) -> int:
    """In place over (param, forget, full) triples; returns the number of elements selected."""
    selected = 0
    for p, f, d in pairs:
        f, d = f.to(p.device, torch.float32), d.to(p.device, torch.float32)
        chosen = f > alpha * d
        weight = (lam * d / f).pow(exponent)
        # Published: values above lower_bound are set to it (the "bound by 1" clamp).
        weight = torch.where(weight > lower_bound, torch.full_like(weight, lower_bound), weight)
        p.copy_(torch.where(chosen, p * weight.to(p.dtype), p))
        selected += int(chosen.sum())
    return selected
