"""RMSNorm classes of any name (LlamaRMSNorm, T5LayerNorm, MistralRMSNorm, GemmaRMSNorm, ...).

Most libraries define their own RMSNorm: one 1-d `weight`, an epsilon attribute, and
y = scale * x / sqrt(mean(x^2) + eps), where scale is `weight` (Llama and most others)
or `1 + weight` (Gemma). Such a module is recognised by its structure (one 1-d
parameter named weight, an eps attribute, no submodules) and then by what it computes:
it is run once on a random input and must match one of the two formulas, otherwise it
gets no rule (and goes to vmap). The per-sample gradient of the weight is
sum over positions of dY * xhat, a [B, dim] tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .._chunks import add_power_sum_

_EPS_NAMES = ("variance_epsilon", "eps", "epsilon")


def _eps(module: nn.Module) -> float | None:
    for name in _EPS_NAMES:
        value = getattr(module, name, None)
        if isinstance(value, float) and value >= 0:
            return value
    return None


def _xhat(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + _eps(module))


def _weight_grads(module: nn.Module, x: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """[B, dim]: each sample's sum over positions of dY * xhat (the same for weight and 1 + weight)."""
    g = dy.float() * _xhat(module, x)
    return g.reshape(g.shape[0], -1, g.shape[-1]).sum(1)


def rms_like_rule(
    module: nn.Module, x: torch.Tensor, dy: torch.Tensor, out: dict[str, torch.Tensor], *, absolute: bool, budget: int
) -> None:
    if "weight" in out:
        add_power_sum_(out["weight"], _weight_grads(module, x, dy), absolute=absolute, owned=True)


def rms_like_grad_sample(module: nn.Module, x: torch.Tensor, dy: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"weight": _weight_grads(module, x, dy)}


def _looks_like_rms_norm(module: nn.Module) -> bool:
    params = dict(module.named_parameters())
    if set(params) != {"weight"} or params["weight"].dim() != 1 or _eps(module) is None:
        return False
    return not any(True for _ in module.children())


@torch.no_grad()
def _computes_rms_norm(module: nn.Module) -> bool:
    """Run it on a random [2, 3, dim] input: does it compute weight * xhat or (1 + weight) * xhat?"""
    w = module.weight
    generator = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(2, 3, w.shape[0], generator=generator).to(device=w.device, dtype=w.dtype)
    try:
        y = module(x)
    except Exception:
        return False
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        return False
    xhat = _xhat(module, x)
    tol = dict(rtol=1e-3, atol=1e-5) if w.dtype != torch.float64 else dict(rtol=1e-7, atol=1e-9)
    y = y.float()
    return torch.allclose(y, w.float() * xhat, **tol) or torch.allclose(y, (1 + w.float()) * xhat, **tol)


_verdicts: dict[type, bool] = {}


def rms_like_entry(module: nn.Module, make_entry: Callable):
    """An entry for an RMSNorm-like module, or None. The probe runs once per class."""
    if not _looks_like_rms_norm(module):
        return None
    cls = type(module)
    if cls not in _verdicts:
        _verdicts[cls] = _computes_rms_norm(module)
    return make_entry(rms_like_rule, rms_like_grad_sample) if _verdicts[cls] else None
