"""Normalisation layers: BatchNorm (eval), LayerNorm, GroupNorm, RMSNorm.

Each is y = xhat * weight + bias with xhat computed per sample (BatchNorm in eval mode
uses its running statistics, so it does too). The per-sample gradients are therefore
sum(dY * xhat) and sum(dY) over every axis the parameter is broadcast along, which are
[B x channels] tensors: small, and never a copy of the model's parameters per sample.
BatchNorm in train mode normalises with batch statistics, which mixes samples, so a
per-sample gradient is undefined there; it is refused.
"""

from __future__ import annotations

import torch
from torch import nn

from .._chunks import add_power_sum_


def _affine_grads(
    xhat: torch.Tensor, dy: torch.Tensor, reduce_dims: tuple[int, ...], out: dict[str, torch.Tensor], *, absolute: bool
) -> None:
    if "weight" in out:
        g = (dy * xhat).sum(reduce_dims) if reduce_dims else dy * xhat
        add_power_sum_(out["weight"], g, absolute=absolute)
    if "bias" in out:
        add_power_sum_(out["bias"], dy.sum(reduce_dims) if reduce_dims else dy, absolute=absolute)


def batch_norm_rule(
    module: nn.modules.batchnorm._BatchNorm,
    x: torch.Tensor,
    dy: torch.Tensor,
    out: dict[str, torch.Tensor],
    *,
    absolute: bool,
    budget: int,
) -> None:
    if module.training or module.running_mean is None:
        raise RuntimeError(
            f"per-sample importance needs BatchNorm in eval mode with running statistics ({module}); "
            "batch statistics mix samples, so per-sample gradients are undefined"
        )
    shape = (1, -1) + (1,) * (x.dim() - 2)
    x, dy = x.float(), dy.float()
    xhat = (x - module.running_mean.float().view(shape)) * torch.rsqrt(
        module.running_var.float().view(shape) + module.eps
    )
    _affine_grads(xhat, dy, tuple(range(2, x.dim())), out, absolute=absolute)


def layer_norm_rule(
    module: nn.LayerNorm,
    x: torch.Tensor,
    dy: torch.Tensor,
    out: dict[str, torch.Tensor],
    *,
    absolute: bool,
    budget: int,
) -> None:
    x, dy = x.float(), dy.float()
    norm_dims = tuple(range(x.dim() - len(module.normalized_shape), x.dim()))
    var, mean = torch.var_mean(x, dim=norm_dims, unbiased=False, keepdim=True)
    xhat = (x - mean) * torch.rsqrt(var + module.eps)
    _affine_grads(xhat, dy, tuple(range(1, norm_dims[0])), out, absolute=absolute)


def rms_norm_rule(
    module: nn.Module, x: torch.Tensor, dy: torch.Tensor, out: dict[str, torch.Tensor], *, absolute: bool, budget: int
) -> None:
    eps = module.eps if module.eps is not None else torch.finfo(x.dtype).eps
    x, dy = x.float(), dy.float()
    norm_dims = tuple(range(x.dim() - len(module.normalized_shape), x.dim()))
    xhat = x * torch.rsqrt(x.square().mean(norm_dims, keepdim=True) + eps)
    _affine_grads(xhat, dy, tuple(range(1, norm_dims[0])), out, absolute=absolute)


def group_norm_rule(
    module: nn.GroupNorm,
    x: torch.Tensor,
    dy: torch.Tensor,
    out: dict[str, torch.Tensor],
    *,
    absolute: bool,
    budget: int,
) -> None:
    x, dy = x.float(), dy.float()
    n, c = x.shape[:2]
    grouped = x.reshape(n, module.num_groups, -1)
    var, mean = torch.var_mean(grouped, dim=2, unbiased=False, keepdim=True)
    xhat = ((grouped - mean) * torch.rsqrt(var + module.eps)).reshape(x.shape)
    _affine_grads(xhat, dy, tuple(range(2, x.dim())), out, absolute=absolute)
