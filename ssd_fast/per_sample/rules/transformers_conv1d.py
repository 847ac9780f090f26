"""transformers' Conv1D (GPT-2, GPT, ...): a Linear with its weight stored transposed.

y = x W + b with W of shape [in, out]: the per-sample weight gradient is X_i^T dY_i,
the transpose of nn.Linear's. One row per sample gives (X^2)^T (dY^2) in one matmul;
over tokens the per-sample gradient is a sum over tokens, formed (in chunks of samples)
before squaring.
"""

from __future__ import annotations

import torch
from torch import nn

from .._chunks import add_power_sum_, chunk_size, sample_chunks


def conv1d_rule(
    module: nn.Module, x: torch.Tensor, dy: torch.Tensor, out: dict[str, torch.Tensor], *, absolute: bool, budget: int
) -> None:
    x, dy = x.float(), dy.float()
    power = torch.abs if absolute else torch.square
    if x.dim() == 2:
        if "weight" in out:
            out["weight"].addmm_(power(x).t(), power(dy))
        if "bias" in out:
            out["bias"].add_(power(dy).sum(0))
        return
    n = x.shape[0]
    x, dy = x.reshape(n, -1, x.shape[-1]), dy.reshape(n, -1, dy.shape[-1])
    if "bias" in out:
        add_power_sum_(out["bias"], dy.sum(1), absolute=absolute)
    if "weight" not in out:
        return
    size = chunk_size(x.shape[-1] * dy.shape[-1], n, budget=budget, activations=x.numel() + dy.numel())
    for s in sample_chunks(n, size):
        add_power_sum_(out["weight"], torch.bmm(x[s].transpose(1, 2), dy[s]), absolute=absolute, owned=True)


def conv1d_grad_sample(module: nn.Module, x: torch.Tensor, dy: torch.Tensor) -> dict[str, torch.Tensor]:
    n = x.shape[0]
    x, dy = x.float().reshape(n, -1, x.shape[-1]), dy.float().reshape(n, -1, dy.shape[-1])
    return {"weight": torch.bmm(x.transpose(1, 2), dy), "bias": dy.sum(1)}
