"""nn.Conv1d / nn.Conv2d with any stride, padding, dilation, groups and padding mode.

The per-sample weight gradient of a convolution is, per group, dY_i [out/G, L] times the
unfolded input U_i [L, in/G * k] (im2col). Unfolding multiplies the input size by the
kernel size, so it is done a chunk of samples at a time. Conv1d is run as a Conv2d
with a height-1 kernel. Non-zero padding modes and string paddings ("same") are applied
explicitly first, exactly as the module does, so unfold itself never pads asymmetrically.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ... import _ops
from .._chunks import add_power_sum_, chunk_size, sample_chunks
from .._fused import choose

_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def _as_2d(module: nn.Conv1d | nn.Conv2d, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The input, explicitly padded, as 4-d, plus unfold's geometry."""
    explicit = isinstance(module.padding, str) or module.padding_mode != "zeros"
    if explicit:
        x = F.pad(x, module._reversed_padding_repeated_twice, mode=_PAD_MODES[module.padding_mode])
        padding = (0,) * (x.dim() - 2)
    else:
        padding = tuple(module.padding)
    geometry = dict(kernel_size=module.kernel_size, dilation=module.dilation, padding=padding, stride=module.stride)
    if x.dim() == 3:  # Conv1d: height 1
        x = x.unsqueeze(2)
        geometry = {k: (1 if k != "padding" else 0,) + tuple(v) for k, v in geometry.items()}
    return x, geometry


def conv_rule(
    module: nn.Conv1d | nn.Conv2d,
    x: torch.Tensor,
    dy: torch.Tensor,
    out: dict[str, torch.Tensor],
    *,
    absolute: bool,
    budget: int,
) -> None:
    n = x.shape[0]
    if "bias" in out:
        add_power_sum_(out["bias"], dy.float().reshape(n, dy.shape[1], -1).sum(2), absolute=absolute)
    if "weight" not in out:
        return
    length = math.prod(dy.shape[2:])
    kernel_inputs = module.in_channels // module.groups * math.prod(module.kernel_size)
    precision = choose("conv2d", out["weight"], dy, x, (n, dy.shape[1], kernel_inputs, length))
    if precision is not None:
        _fused_weight(module, x, dy, out["weight"], absolute=absolute, precision=precision)
    else:
        _torch_weight(module, x, dy, out["weight"], absolute=absolute, budget=budget)


def _fused_weight(
    module: nn.Conv1d | nn.Conv2d,
    x: torch.Tensor,
    dy: torch.Tensor,
    out: torch.Tensor,
    *,
    absolute: bool,
    precision: str,
) -> None:
    """The compiled op, reading the input in place through its implicit im2col."""
    x, geometry = _as_2d(module, x)
    if dy.dim() == 3:  # Conv1d: height 1, like the input
        dy, out = dy.unsqueeze(2), out.unsqueeze(2)  # a view of the sums: the op adds into them
    _ops.per_sample_sq_conv2d_(
        out,
        dy,
        x,
        geometry["stride"],
        geometry["padding"],
        geometry["dilation"],
        module.groups,
        1.0,
        absolute,
        precision,
    )


def _torch_weight(
    module: nn.Conv1d | nn.Conv2d, x: torch.Tensor, dy: torch.Tensor, out: torch.Tensor, *, absolute: bool, budget: int
) -> None:
    """Unfold + bmm a chunk of samples at a time: the reference for the fused op."""
    n = x.shape[0]
    dy = dy.float().reshape(n, dy.shape[1], -1)  # [B, out, L]
    x, geometry = _as_2d(module, x.float())
    groups, c_out, length = module.groups, dy.shape[1], dy.shape[2]
    kernel = math.prod(module.kernel_size)
    per_sample = x.shape[1] * kernel * length + module.weight.numel()  # unfolded input + gradient
    size = chunk_size(per_sample, n, budget=budget, activations=x.numel() + dy.numel())
    for s in sample_chunks(n, size):
        c = s.stop - s.start
        cols = F.unfold(x[s], **geometry)  # [c, in * k, L], channel-major so groups are contiguous
        cols = cols.reshape(c * groups, -1, length).transpose(1, 2)  # [c*G, L, in/G * k]
        g = torch.bmm(dy[s].reshape(c * groups, c_out // groups, length), cols)  # [c*G, out/G, in/G * k]
        add_power_sum_(out, g.reshape(c, -1), absolute=absolute, owned=True)
