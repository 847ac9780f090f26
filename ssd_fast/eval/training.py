"""Training a classifier with cross-entropy: used for the original model, retrain and finetune.

model = train(build_model("cnn"), make_loader(splits.train, 128, shuffle=True), epochs=2)
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn import functional as F

OPTIMIZERS = ("adam", "sgd")


def make_optimizer(
    params: Iterable[nn.Parameter], name: str, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    """Adam, or SGD with momentum, over `params`."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def train(
    model: nn.Module,
    loader: Iterable,
    epochs: int,
    *,
    lr: float = 1e-3,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> nn.Module:
    """Train `model` in place with mean cross-entropy, and return it.

    Args:
        model: any classifier returning logits; moved to `device` if one is given.
        loader: iterable of (inputs, int64 targets) batches; shuffle it yourself (seeded,
            e.g. `ssd_fast.eval.data.make_loader(ds, 128, shuffle=True, seed=s)`) for repeatable runs.
        epochs: passes over `loader`; 0 leaves the weights as they are.
        lr, optimizer, weight_decay, momentum: "adam" (default, lr 1e-3) or "sgd"
            (momentum applies to SGD only). The learning rate is constant.
        device: where to train; defaults to the model's parameters' device.
        progress: a tqdm bar per epoch showing the running loss.

    Returns:
        The same model object, left in eval mode (ready for importance and metrics).
    """
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    if device is not None:
        model.to(device)
    device = next(model.parameters()).device
    opt = make_optimizer(model.parameters(), optimizer, lr, weight_decay, momentum)
    model.train()
    for epoch in range(epochs):
        _train_epoch(model, loader, opt, device, progress, desc=f"train epoch {epoch + 1}/{epochs}")
    model.eval()
    return model


def _train_epoch(
    model: nn.Module, loader: Iterable, opt: torch.optim.Optimizer, device: torch.device, progress: bool, desc: str
) -> float:
    """One pass; returns the mean training loss (over batches)."""
    batches = loader
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(loader, desc=desc, leave=False, unit="batch")
    total, count = 0.0, 0
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total, count = total + loss.item(), count + 1
        if progress and count % 20 == 0:
            batches.set_postfix(loss=f"{total / count:.3f}")
    return total / max(count, 1)
