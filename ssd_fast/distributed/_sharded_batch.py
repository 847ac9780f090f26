"""Batch-mode importance for a sharded (FSDP2) model: square the sharded gradients.

FSDP2 computes with unsharded copies of the parameters, so `torch.autograd.grad` with
respect to the sharded parameters finds nothing. The gradient exists only as what FSDP2's
backward reduce-scatters into each parameter's `.grad`: the mean over ranks of every
rank's batch gradient, sharded like the parameter. So under FSDP2 one "batch" is the
union of the ranks' batches at that step (with equal per-rank batch sizes, its gradient
is that of the mean loss over the union), and each rank squares its own shard of it.
The caller's `.grad` fields are set aside at the start and put back by `close()`.
"""

from __future__ import annotations

import torch
from torch import nn

from .._batches import call_model
from .._loss import LossFn, batch_loss
from ..per_sample import PerClass, Weighted
from ._sharded import is_dtensor, local


class ShardedBatchAccumulator:
    """Adds the square (or |.|) of each step's reduce-scattered gradient shard into `sums`."""

    global_batches = True  # each step's gradient already covers every rank's batch

    def __init__(self, model: nn.Module, params: dict[str, nn.Parameter], *, label_free: bool, loss_fn: LossFn | None):
        plain = [n for n, p in params.items() if not is_dtensor(p)]
        if plain:
            raise ValueError(
                "batch-mode importance of a sharded model needs every trainable parameter sharded (a DTensor, "
                f"e.g. by fully_shard on the root module); these are not: {plain[:5]}"
            )
        self.model = model
        self.params = dict(params)
        self.label_free = label_free
        self.loss_fn = loss_fn
        self._saved = {n: p.grad for n, p in self.params.items()}
        for p in self.params.values():
            p.grad = None

    def __call__(self, inputs: object, targets: object, sums: dict[str, torch.Tensor]) -> None:
        from ..importance import accumulate_squares_  # loaded only when a sharded model is seen

        if isinstance(targets, (Weighted, PerClass)):
            raise ValueError(f"{type(targets).__name__} targets need mode='per_sample'")
        loss = batch_loss(call_model(self.model, inputs), targets, label_free=self.label_free, loss_fn=self.loss_fn)
        loss.backward()
        used = [(local(sums[n]), local(p.grad)) for n, p in self.params.items() if p.grad is not None]
        if used:
            with torch.no_grad():
                accumulate_squares_([s for s, _ in used], [g for _, g in used], absolute=self.label_free)
        for p in self.params.values():
            p.grad = None

    def close(self) -> None:
        """Put the caller's `.grad` fields back."""
        for n, p in self.params.items():
            p.grad = self._saved[n]
