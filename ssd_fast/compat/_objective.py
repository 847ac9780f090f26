"""The published importance objectives, to the bit.

SSD: the batch's mean cross-entropy, the same as `ssd_fast.importance`'s (so the shared
accumulator serves it). LFSSD: the published code writes the mean squared L2 norm of the
outputs as `torch.norm(out, p="fro", dim=1).pow(2).mean()`, while `ssd_fast.importance`
uses `out.square().sum(1).mean()` (the same function, faster and defined for outputs of
any rank). The two round differently (importances differ by up to about 1e-5 relative),
so compat computes the published expression itself, and its LFSSD importances are the
published ones bit for bit.
"""

from __future__ import annotations

import torch
from torch import nn

from .._batches import call_model
from ..importance import BatchGradientAccumulator, accumulate_squares_


def published_label_free_loss(outputs: torch.Tensor) -> torch.Tensor:
    """LFSSD's objective exactly as the published code writes it."""
    return torch.norm(outputs, p="fro", dim=1).pow(2).mean()


class PublishedAccumulator(BatchGradientAccumulator):
    """Batch-mode importance with the published objective: cross-entropy, or LFSSD's norm."""

    def __init__(self, model: nn.Module, params: dict[str, nn.Parameter], *, label_free: bool) -> None:
        super().__init__(model, params, label_free=label_free, loss_fn=None)

    def __call__(self, inputs: object, targets: object, sums: dict[str, torch.Tensor]) -> None:
        if not self.label_free:
            super().__call__(inputs, targets, sums)
            return
        loss = published_label_free_loss(call_model(self.model, inputs))
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        used = [(sums[n], g) for n, g in zip(self.names, grads) if g is not None]
        if used:
            accumulate_squares_([s for s, _ in used], [g for _, g in used], absolute=True)
