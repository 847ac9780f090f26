"""ASSD's automatic alpha: pick the selection threshold from the data instead of by hand.

Source: Schoepf, Foster and Brintrup, "Parameter-tuning-free data entry error
unlearning with adaptive selective synaptic dampening" (2024). ASSD sets alpha to a high
percentile of the per-parameter ratio f/d (forget importance over full importance):

    alpha = percentile_p( f/d over every finite ratio ),  p = 100 - ln(1 + 100 * |Df| / |D|)

The larger the forget set is relative to the full set, the lower the percentile, so
more parameters are selected. |Df| and |D| are the sample counts recorded in the
`Importances` metadata (`n_samples`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from . import _checks, _parallel
from .importances import Importances


def assd_percentile(n_forget: int, n_full: int) -> float:
    """The percentile (0..100) ASSD reads alpha from, for |Df| = n_forget and |D| = n_full."""
    for name, value in (("n_forget", n_forget), ("n_full", n_full)):
        _checks.count(value, name, minimum=1, optional=False)
    return 100.0 - math.log1p(100.0 * n_forget / n_full)


def _sample_counts(forget: Importances, full: Importances) -> tuple[int, int]:
    if not isinstance(forget, Importances) or not isinstance(full, Importances):
        raise TypeError("alpha='auto' needs Importances objects, which carry the sample counts")
    missing = [what for what, imp in (("forget", forget), ("full", full)) if imp.n_samples is None]
    if missing:
        raise ValueError(
            f"alpha='auto' needs |Df| and |D|, but the {' and '.join(missing)} importances carry no "
            "n_samples; compute them with ssd_fast.importance(), or build them with "
            "Importances(tensors, n_samples=...)"
        )
    return forget.n_samples, full.n_samples


def _finite_ratios(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """f/d for every element where it is finite (d > 0), as one flat fp32 tensor on the CPU.

    d == 0 gives inf (f > 0) or NaN (f == 0); ASSD leaves those out of the percentile.
    """
    chunks = []
    for f, d in pairs:
        ratio = f.float() / d.float()
        chunks.append(ratio[torch.isfinite(ratio)].cpu())
    if not chunks:
        return torch.empty(0)
    return torch.cat(chunks)


def _percentile(values: torch.Tensor, q: float) -> float:
    """Linear-interpolation percentile (numpy's default). kthvalue, unlike torch.quantile,
    has no input size limit, so this works for ViT-sized models."""
    n = values.numel()
    position = q / 100.0 * (n - 1)
    lo, hi = math.floor(position), math.ceil(position)
    low = values.kthvalue(lo + 1).values.item()
    if hi == lo:
        return float(low)
    high = values.kthvalue(hi + 1).values.item()
    return float(low + (high - low) * (position - lo))


def resolve_auto_alpha(
    forget: Importances, full: Importances, pairs: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> float:
    """ASSD's alpha for these importances, over the (forget, full) tensor pairs given.

    Raises ValueError when the sample counts are missing, when no ratio is finite, or
    when the percentile is not a usable threshold (<= 0, which would select every
    parameter with any forget importance).
    """
    n_forget, n_full = _sample_counts(forget, full)
    q = assd_percentile(n_forget, n_full)
    pairs = list(pairs)
    if _parallel.any_dtensor(t for pair in pairs for t in pair):
        alpha = _parallel.sharded_percentile(pairs, q)  # exact, over every rank's shards
    else:
        ratios = _finite_ratios(pairs)
        alpha = _percentile(ratios, q) if ratios.numel() else None
    if alpha is None:
        raise ValueError("alpha='auto': no parameter has a finite f/d ratio (every full importance is 0)")
    if not (alpha > 0 and math.isfinite(alpha)):
        raise ValueError(
            f"alpha='auto' resolved to {alpha!r} (the {q:.3f}th percentile of f/d), which is not a "
            "usable threshold; pass a number instead"
        )
    return alpha


def auto_alpha(forget: Importances, full: Importances) -> float:
    """ASSD's alpha for two Importances, over every name they share (for inspection)."""
    if not isinstance(forget, Importances) or not isinstance(full, Importances):
        raise TypeError("auto_alpha needs two Importances objects, which carry the sample counts")
    names = [n for n in forget if n in full]
    return resolve_auto_alpha(forget, full, [(forget[n], full[n]) for n in names])
