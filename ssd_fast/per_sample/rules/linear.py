"""nn.Linear: the sum over samples of squared per-sample weight and bias gradients.

With one row per sample, the per-sample weight gradient is the outer product
dY_i X_i^T, so its elementwise square is (dY_i^2)(X_i^2)^T and the batch sum is one
matmul: (dY*dY)^T (X*X). The label-free |g| works the same way, because |a b^T| = |a||b|^T.
Over tokens (inputs [B, T..., in]) the per-sample gradient is a sum over tokens, which
must be formed before squaring: the compiled op `per_sample_sq_tokens_` does it in cache
without forming it (see _fused); the reference and fallback is a bmm per chunk of samples.
"""

from __future__ import annotations

import torch
from torch import nn

from ... import _ops
from .._chunks import add_power_sum_, chunk_size, sample_chunks
from .._fused import choose


def linear_rule(
    module: nn.Linear, x: torch.Tensor, dy: torch.Tensor, out: dict[str, torch.Tensor], *, absolute: bool, budget: int
) -> None:
    if x.dim() == 2:
        _rows(x.float(), dy.float(), out, absolute=absolute)
    else:
        n = x.shape[0]
        _tokens(x.reshape(n, -1, x.shape[-1]), dy.reshape(n, -1, dy.shape[-1]), out, absolute=absolute, budget=budget)


def _rows(x: torch.Tensor, dy: torch.Tensor, out: dict[str, torch.Tensor], *, absolute: bool) -> None:
    """One row per sample: one matmul, no per-sample tensor at all."""
    dy_p = dy.abs() if absolute else dy.square()
    if "weight" in out:
        x_p = x.abs() if absolute else x.square()
        out["weight"].addmm_(dy_p.t(), x_p)
    if "bias" in out:
        out["bias"].add_(dy_p.sum(0))


def _tokens(x: torch.Tensor, dy: torch.Tensor, out: dict[str, torch.Tensor], *, absolute: bool, budget: int) -> None:
    """x [B, T, in], dy [B, T, out]: per-sample dY_i^T X_i, chunked over samples.

    The fused op reads x and dy in their own dtype (bf16 under autocast) and accumulates
    in fp32; the torch path works on fp32 copies."""
    if "bias" in out:
        add_power_sum_(out["bias"], dy.float().sum(1), absolute=absolute)
    if "weight" not in out:
        return
    precision = choose("tokens", out["weight"], dy, x, (x.shape[0], dy.shape[-1], x.shape[-1], x.shape[1]))
    if precision is not None:
        _ops.per_sample_sq_tokens_(out["weight"], dy, x, 1.0, absolute, precision)
        return
    x, dy = x.float(), dy.float()
    n, _, d_in = x.shape
    d_out = dy.shape[-1]
    size = chunk_size(d_out * d_in, n, budget=budget, activations=x.numel() + dy.numel())
    for s in sample_chunks(n, size):
        add_power_sum_(out["weight"], torch.bmm(dy[s].transpose(1, 2), x[s]), absolute=absolute, owned=True)
