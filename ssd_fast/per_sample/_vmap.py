"""The vmap path: torch.func vmap(grad) over the whole model, for a few parameters only.

Parameters that no rule covers get their per-sample gradients the general way: the
model is re-run per sample under vmap, differentiating only those parameters, a chunk
of samples at a time. The chunk is sized so that [chunk x vmap params] stays within
the budget, so memory still does not scale with batch x total params. It costs one more
forward and backward per batch, which is why the engine warns, naming the modules.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils._pytree import tree_flatten, tree_unflatten

from .._batches import call_model
from ._chunks import add_power_sum_, chunk_size, sample_chunks
from ._targets import Seed

LossesFn = Callable[[torch.Tensor, Any], torch.Tensor]


class ModelCall(nn.Module):
    """model called the way importance() calls it, so functional_call can swap its tensors."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: Any) -> torch.Tensor:
        return call_model(self.model, inputs)


def _batched(t: Any, n: int) -> bool:
    return isinstance(t, torch.Tensor) and t.dim() >= 1 and t.shape[0] == n


def vmap_accumulate_(
    caller: ModelCall,
    params: dict[str, nn.Parameter],
    inputs: Any,
    seeds: list[Seed],
    losses_fn: LossesFn,
    sums: dict[str, torch.Tensor],
    *,
    n: int,
    absolute: bool,
    budget: int,
) -> None:
    """Add the batch's sum of squared per-sample gradients of `params` into `sums`."""
    detached = {f"model.{name}": p.detach() for name, p in params.items()}
    size = chunk_size(sum(p.numel() for p in params.values()), n, budget=budget)
    device = next(iter(detached.values())).device
    for seed in seeds:
        scale = seed.scale if seed.scale is not None else torch.ones(n, device=device)
        fn, batched = _per_sample_grad(caller, (inputs, seed.targets), losses_fn, n)
        for s in sample_chunks(n, size):
            grads = fn(detached, [leaf[s] for leaf in batched], scale[s])
            for key, g in grads.items():
                add_power_sum_(sums[key[len("model."):]], g, absolute=absolute)


def _per_sample_grad(caller: ModelCall, data: Any, losses_fn: LossesFn, n: int):
    """vmap(grad(loss of one sample)) over the leaves of (inputs, targets) whose leading dim is n.

    Returns the function and the batched leaves; the other leaves (a shared mask, a
    Python flag) are captured as they are.
    """
    leaves, spec = tree_flatten(data)
    is_batched = [_batched(leaf, n) for leaf in leaves]

    def sample_loss(p: dict[str, torch.Tensor], batched: list[torch.Tensor], s: torch.Tensor) -> torch.Tensor:
        # Inside vmap each batched leaf has lost its batch dim; restore a batch of one.
        rows = iter(batched)
        full = [next(rows).unsqueeze(0) if b else leaf for leaf, b in zip(leaves, is_batched)]
        x, y = tree_unflatten(full, spec)
        return losses_fn(caller_call(caller, p, x), y)[0] * s

    return vmap(grad(sample_loss), in_dims=(None, 0, 0)), [leaf for leaf, b in zip(leaves, is_batched) if b]


def caller_call(caller: ModelCall, p: dict[str, torch.Tensor], x: Any) -> torch.Tensor:
    return functional_call(caller, p, (x,), strict=False)
