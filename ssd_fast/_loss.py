"""The objective whose gradient defines importance.

SSD squares the gradient of the mean cross-entropy of a batch; LFSSD (label-free) uses
the mean squared L2 norm of the model's outputs instead, and needs no targets.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, Any], torch.Tensor]


def label_free_loss(outputs: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ||f(x)||_2^2."""
    return outputs.flatten(1).float().pow(2).sum(dim=1).mean()


def check_class_targets(outputs: Any, targets: Any) -> None:
    """A clear message for labels shaped [B, 1], which cross-entropy refuses with a terse one."""
    if (
        isinstance(targets, torch.Tensor)
        and isinstance(outputs, torch.Tensor)
        and targets.dim() == 2
        and targets.shape[1] == 1
        and outputs.dim() == 2
        and not targets.is_floating_point()
    ):
        raise ValueError(
            f"targets have shape {list(targets.shape)}, but cross-entropy takes class indices of shape "
            f"[{targets.shape[0]}]; squeeze them in the dataset or pass unpack=lambda b: (b[0], b[1].squeeze(1))"
        )


def batch_loss(outputs: torch.Tensor, targets: Any, *, label_free: bool, loss_fn: LossFn | None) -> torch.Tensor:
    if label_free:
        return label_free_loss(outputs)
    if loss_fn is not None:
        loss = loss_fn(outputs, targets)
        if not (isinstance(loss, torch.Tensor) and loss.dim() == 0):
            raise TypeError("loss_fn must return a scalar tensor (the mean loss of the batch)")
        return loss
    check_class_targets(outputs, targets)
    return F.cross_entropy(outputs, targets)


def check_loss_options(label_free: bool, loss_fn: LossFn | None) -> None:
    if label_free and loss_fn is not None:
        raise ValueError("label_free=True defines its own objective (mean ||f(x)||^2); do not pass loss_fn too")
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
