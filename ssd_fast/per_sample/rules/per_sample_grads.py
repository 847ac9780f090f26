"""Per-sample gradients themselves, [samples, *param.shape], for layers whose weight is shared.

A tied weight (GPT-2's lm_head and wte) or a layer called twice reaches the loss more
than once, so its per-sample gradient is the sum of each use's per-sample gradient,
and only that sum may be squared. These functions give each use's per-sample gradient
for the slice of samples they are handed; the engine sums the uses and squares the sum
a slice at a time (see per_sample/_deferred), so memory stays bounded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _tokens(t: torch.Tensor) -> torch.Tensor:
    """[B, ..., d] as [B, tokens, d] (a 2-d input is one token per sample)."""
    return t.reshape(t.shape[0], -1, t.shape[-1])


def linear_grad_sample(module: nn.Linear, x: torch.Tensor, dy: torch.Tensor) -> dict[str, torch.Tensor]:
    x, dy = _tokens(x.float()), _tokens(dy.float())
    grads = {"weight": torch.bmm(dy.transpose(1, 2), x)}
    if module.bias is not None:
        grads["bias"] = dy.sum(1)
    return grads


def embedding_grad_sample(module: nn.Embedding, idx: torch.Tensor, dy: torch.Tensor) -> dict[str, torch.Tensor]:
    """Scatter each sample's output gradients into its own [vocab, dim] slab."""
    n, vocab = idx.shape[0], module.num_embeddings
    idx = idx.reshape(n, -1).long()
    dy = dy.float().reshape(idx.numel(), -1)
    keys = (torch.arange(n, device=idx.device).unsqueeze(1) * vocab + idx).reshape(-1)
    if module.padding_idx is not None:  # the padding row never receives a gradient
        keep = idx.reshape(-1) != module.padding_idx
        keys, dy = keys[keep], dy[keep]
    grad = torch.zeros(n * vocab, dy.shape[1], device=dy.device).index_add_(0, keys, dy)
    return {"weight": grad.reshape(n, vocab, -1)}


def layer_norm_grad_sample(module: nn.LayerNorm, x: torch.Tensor, dy: torch.Tensor) -> dict[str, torch.Tensor]:
    x, dy = x.float(), dy.float()
    norm_dims = tuple(range(x.dim() - len(module.normalized_shape), x.dim()))
    var, mean = torch.var_mean(x, dim=norm_dims, unbiased=False, keepdim=True)
    xhat = (x - mean) * torch.rsqrt(var + module.eps)
    reduce_dims = tuple(range(1, norm_dims[0]))
    grads = {}
    if module.weight is not None:
        grads["weight"] = (dy * xhat).sum(reduce_dims) if reduce_dims else dy * xhat
    if module.bias is not None:
        grads["bias"] = dy.sum(reduce_dims) if reduce_dims else dy
    return grads


_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def _unfoldable(module: nn.Conv1d | nn.Conv2d, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """x padded as the module pads it, as 4-d (Conv1d gets height 1), and unfold's geometry."""
    padding = tuple(module.padding) if not isinstance(module.padding, str) else None
    if padding is None or module.padding_mode != "zeros":  # "same" or a non-zero mode: pad explicitly first
        x = F.pad(x, module._reversed_padding_repeated_twice, mode=_PAD_MODES[module.padding_mode])
        padding = (0,) * (x.dim() - 2)
    geometry = {
        "kernel_size": module.kernel_size,
        "dilation": module.dilation,
        "padding": padding,
        "stride": module.stride,
    }
    if x.dim() == 3:
        x = x.unsqueeze(2)
        geometry = {k: ((0,) if k == "padding" else (1,)) + tuple(v) for k, v in geometry.items()}
    return x, geometry


def conv_grad_sample(module: nn.Conv1d | nn.Conv2d, x: torch.Tensor, dy: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per group, dY_i [out/G, L] times the unfolded input U_i [L, in/G * k]."""
    n, groups = x.shape[0], module.groups
    dy = dy.float().reshape(n, dy.shape[1], -1)
    x2d, geometry = _unfoldable(module, x.float())
    length = dy.shape[2]
    cols = F.unfold(x2d, **geometry).reshape(n * groups, -1, length).transpose(1, 2)
    weight = torch.bmm(dy.reshape(n * groups, -1, length), cols).reshape(n, *module.weight.shape)
    grads = {"weight": weight}
    if module.bias is not None:
        grads["bias"] = dy.sum(2)
    return grads


def _affine(
    weight, bias, xhat: torch.Tensor, dy: torch.Tensor, reduce_dims: tuple[int, ...]
) -> dict[str, torch.Tensor]:
    grads = {}
    if weight is not None:
        grads["weight"] = (dy * xhat).sum(reduce_dims) if reduce_dims else dy * xhat
    if bias is not None:
        grads["bias"] = dy.sum(reduce_dims) if reduce_dims else dy
    return grads


def batch_norm_grad_sample(
    module: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, dy: torch.Tensor
) -> dict[str, torch.Tensor]:
    if module.training or module.running_mean is None:
        raise RuntimeError(f"per-sample importance needs BatchNorm in eval mode with running statistics ({module})")
    shape = (1, -1) + (1,) * (x.dim() - 2)
    x, dy = x.float(), dy.float()
    xhat = (x - module.running_mean.float().view(shape)) * torch.rsqrt(
        module.running_var.float().view(shape) + module.eps
    )
    return _affine(module.weight, module.bias, xhat, dy, tuple(range(2, x.dim())))


def group_norm_grad_sample(module: nn.GroupNorm, x: torch.Tensor, dy: torch.Tensor) -> dict[str, torch.Tensor]:
    x, dy = x.float(), dy.float()
    grouped = x.reshape(x.shape[0], module.num_groups, -1)
    var, mean = torch.var_mean(grouped, dim=2, unbiased=False, keepdim=True)
    xhat = ((grouped - mean) * torch.rsqrt(var + module.eps)).reshape(x.shape)
    return _affine(module.weight, module.bias, xhat, dy, tuple(range(2, x.dim())))


def rms_norm_grad_sample(module: nn.Module, x: torch.Tensor, dy: torch.Tensor) -> dict[str, torch.Tensor]:
    eps = module.eps if module.eps is not None else torch.finfo(x.dtype).eps
    x, dy = x.float(), dy.float()
    norm_dims = tuple(range(x.dim() - len(module.normalized_shape), x.dim()))
    xhat = x * torch.rsqrt(x.square().mean(norm_dims, keepdim=True) + eps)
    return _affine(module.weight, None, xhat, dy, tuple(range(1, norm_dims[0])))
