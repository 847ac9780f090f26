"""Weighted and per-class targets: how the true Fisher goes through the same engine.

Per-sample importance is (1/N) sum_i w_i * g_i^2 over "seeds" (a per-sample loss and a
per-sample weight). Plain targets are one seed with w = 1. Two wrappers, returned as the
targets by `unpack`, change the seeds:

- `Weighted(targets, weight)`: w_i = weight[i] >= 0, for any targets.
- `PerClass(weight)`: one seed per class c, with loss_i = CE(f(x_i), c) and
  w_i = weight[i, c]. `PerClass()` (no weight) uses the model's own predictive
  distribution softmax(f(x_i)), which gives the true Fisher diagonal
  (1/N) sum_i sum_c p(c | x_i) (grad CE(f(x_i), c))^2, as Fisher Forgetting uses.

Weights are folded into the backward pass: seeding it with s_i * loss_i gives per-sample
gradients s_i * g_i, so s_i = sqrt(w_i) yields w_i g_i^2, and s_i = w_i yields w_i |g_i|
for label-free importance. No rule needs to know about weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .._batches import to_device


@dataclass(frozen=True)
class Weighted:
    """Targets with a per-sample weight: importance = (1/N) sum_i weight[i] * g_i^2.

    `targets` is whatever the loss takes (class indices, soft-label probabilities, a
    PerClass, or None for label-free); `weight` is a [B] tensor of non-negative weights.
    N is still the number of samples, not the sum of the weights.
    """

    targets: Any
    weight: torch.Tensor


@dataclass(frozen=True)
class PerClass:
    """An expectation over classes: sample i counts sum_c weight[i, c] * (grad CE(f(x_i), c))^2.

    `weight` is [B, C]; None means softmax of the model's outputs (the true Fisher).
    """

    weight: torch.Tensor | None = None


@dataclass(frozen=True)
class Seed:
    """One backward pass: per-sample losses from `targets`, scaled by `scale` (or 1)."""

    targets: Any
    scale: torch.Tensor | None


def _check_weight(weight: Any, shape: tuple[int, ...], what: str) -> torch.Tensor:
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
        raise TypeError(f"{what} must be a floating tensor, got {type(weight).__name__}")
    if tuple(weight.shape) != shape:
        raise ValueError(f"{what} must have shape {list(shape)}, got {list(weight.shape)}")
    if not (torch.isfinite(weight).all() and (weight >= 0).all()):
        raise ValueError(f"{what} must be finite and >= 0")
    return weight.float()


def _times(a: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor:
    return b if a is None else a * b


def seeds_for(targets: Any, outputs: torch.Tensor, *, absolute: bool) -> list[Seed]:
    """The backward passes that `targets` asks for, on the outputs' device."""
    n = outputs.shape[0]
    targets = unwrap_to(targets, outputs.device)
    if isinstance(targets, Weighted):
        w = _check_weight(targets.weight, (n,), "Weighted.weight")
        s = w if absolute else w.sqrt()
        return [
            Seed(seed.targets, _times(seed.scale, s)) for seed in seeds_for(targets.targets, outputs, absolute=absolute)
        ]
    if isinstance(targets, PerClass):
        return _per_class_seeds(targets, outputs, absolute=absolute)
    return [Seed(targets, None)]


def _per_class_seeds(targets: PerClass, outputs: torch.Tensor, *, absolute: bool) -> list[Seed]:
    if outputs.dim() != 2:
        raise ValueError(f"PerClass needs [batch, classes] outputs, got shape {list(outputs.shape)}")
    n, classes = outputs.shape
    if targets.weight is None:
        w = torch.softmax(outputs.detach().float(), dim=1)
    else:
        w = _check_weight(targets.weight, (n, classes), "PerClass.weight")
    scale = w if absolute else w.sqrt()
    used = (w > 0).any(0).tolist()  # one host sync; classes nobody weighs cost no backward pass
    return [
        Seed(torch.full((n,), c, dtype=torch.long, device=outputs.device), scale[:, c])
        for c in range(classes)
        if used[c]
    ]


def unwrap_to(targets: Any, device: torch.device) -> Any:
    """Move the tensors inside the wrappers (importance() moves plain targets itself)."""
    if isinstance(targets, Weighted):
        return Weighted(unwrap_to(targets.targets, device), targets.weight.to(device))
    if isinstance(targets, PerClass):
        return PerClass(None if targets.weight is None else targets.weight.to(device))
    return to_device(targets, device)
