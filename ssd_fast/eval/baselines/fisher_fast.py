"""Fisher Forgetting with the Fisher diagonal from the per-sample engine instead of a bs-1 loop.

The same estimate as `fisher_diagonal`, (1/N) sum_i sum_y p(y|x_i) (grad CE(f(x_i), y))^2,
computed by `ssd_fast.importance(mode="per_sample")` with `PerClass()` targets (the model's
own softmax as the class weights) at any batch size; then the published noise step.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from ...importance import importance
from ..data.scenarios import Splits, make_loader
from .fisher import ALPHA, capped_indices, fisher_noise


def fisher_diagonal_fast(
    model: nn.Module,
    data: Dataset,
    *,
    batch_size: int = 64,
    max_samples: int | None = None,
    seed: int = 0,
    progress: bool = True,
    pin_memory: bool = False,
) -> dict[str, torch.Tensor]:
    """`fisher_diagonal`'s result through the per-sample engine (name -> fp32 tensor);
    `pin_memory` pins the loader's batches, for a model on CUDA."""
    from ...per_sample import PerClass

    if max_samples is not None:
        data = torch.utils.data.Subset(data, capped_indices(len(data), max_samples, seed).tolist())
    loader = make_loader(data, batch_size, pin_memory=pin_memory)
    imp = importance(model, loader, mode="per_sample", unpack=lambda b: (b[0], PerClass()), progress=progress)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {n: t for n, t in imp.items() if n in trainable}


def fisher_fast(
    model: nn.Module,
    splits: Splits,
    *,
    alpha: float = ALPHA,
    batch_size: int = 64,
    max_samples: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> nn.Module:
    """Fisher Forgetting on `splits` with the per-sample engine; returns a new model."""
    fisher = fisher_diagonal_fast(
        model, splits.retain, batch_size=batch_size, max_samples=max_samples, seed=seed, progress=progress
    )
    return fisher_noise(
        model, fisher, num_classes=splits.num_classes, forget_class=splits.forget_class, alpha=alpha, seed=seed
    )
