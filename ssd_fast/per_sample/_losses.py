"""Per-sample losses: the objective whose gradient, per sample, is squared.

They mirror ssd_fast._loss sample by sample, so that per-sample importance at batch
size 1 equals batch-mode importance at batch size 1:
- cross-entropy (class indices, or probabilities for soft labels), averaged over any
  extra output positions (e.g. tokens), as the batch mean does;
- a transformers model's own loss, scored on each sample alone: a causal LM's
  token-mean cross-entropy over its shifted labels with -100 ignored (a sample with no
  scored token has loss 0), a classifier's cross-entropy (or MSE / BCE) of its label;
- label-free: ||f(x_i)||_2^2, over the positions its attention mask keeps;
- a user `loss_fn(outputs, targets)` must return a [B] tensor of per-sample losses.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .._hf import Task
from .._loss import LossFn, check_class_targets, label_free_losses, task_loss_terms


def per_sample_losses(
    outputs: torch.Tensor,
    targets: Any,
    *,
    label_free: bool,
    loss_fn: LossFn | None,
    task: Task | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    n = outputs.shape[0]
    if label_free:
        return label_free_losses(outputs, mask)
    if loss_fn is not None:
        losses = loss_fn(outputs, targets)
        if not (isinstance(losses, torch.Tensor) and tuple(losses.shape) == (n,)):
            shape = list(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
            raise TypeError(
                f"in per_sample mode loss_fn must return one loss per sample, a [{n}] tensor "
                f"(e.g. use reduction='none'); it returned {shape}"
            )
        return losses
    if task is not None:
        sums, counts = task_loss_terms(task, outputs, targets)
        return sums / counts.clamp_min(1)
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"cross-entropy needs tensor targets, got {type(targets).__name__}")
    check_class_targets(outputs, targets)
    return F.cross_entropy(outputs, targets, reduction="none").reshape(n, -1).mean(1)
