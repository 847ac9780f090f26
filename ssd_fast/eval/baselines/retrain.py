"""Retrain: the gold model, trained from scratch on the retain set only."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..data.scenarios import Splits, make_loader
from ..training import train


def fresh_copy(model: nn.Module, seed: int) -> nn.Module:
    """A copy of `model` with every parameter and buffer re-initialised (seeded).

    Calls `reset_parameters` on each module that has one (Conv, Linear and BatchNorm,
    which also resets its running statistics), so the architecture needs no factory.
    """
    clone = copy.deepcopy(model)
    torch.manual_seed(seed)
    for module in clone.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
    return clone


def retrain(
    model: nn.Module,
    splits: Splits,
    *,
    epochs: int = 2,
    batch_size: int = 128,
    lr: float = 1e-3,
    optimizer: str = "adam",
    seed: int = 0,
    progress: bool = True,
    pin_memory: bool = False,
) -> nn.Module:
    """Train a freshly initialised copy of `model` on `splits.retain`; `model` is untouched.

    Use the same epochs, batch size and optimiser as the original training, so that the
    result is the model that would exist had the forget set never been seen. `pin_memory`
    pins the loader's batches, for a model on CUDA (see `make_loader`).
    """
    gold = fresh_copy(model, seed)
    loader = make_loader(splits.retain, batch_size, shuffle=True, seed=seed, pin_memory=pin_memory)
    return train(gold, loader, epochs, lr=lr, optimizer=optimizer, progress=progress)
