"""Finetune: keep training the original model on the retain set, hoping it forgets the rest."""

from __future__ import annotations

import copy

from torch import nn

from ..data.scenarios import Splits, make_loader
from ..training import train


def finetune(
    model: nn.Module,
    splits: Splits,
    *,
    epochs: int = 5,
    batch_size: int = 128,
    lr: float = 0.02,
    optimizer: str = "sgd",
    seed: int = 0,
    progress: bool = True,
    pin_memory: bool = False,
) -> nn.Module:
    """Train a copy of `model` on `splits.retain` for `epochs` (5, as in the paper).

    The defaults follow the published SSD code's finetune baseline: SGD, lr 0.02,
    momentum 0.9. `model` itself is untouched. `pin_memory` pins the loader's batches, for a
    model on CUDA (see `make_loader`).
    """
    tuned = copy.deepcopy(model)
    loader = make_loader(splits.retain, batch_size, shuffle=True, seed=seed, pin_memory=pin_memory)
    return train(tuned, loader, epochs, lr=lr, optimizer=optimizer, progress=progress)
