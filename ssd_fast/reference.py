"""The oracle: SSD in plain PyTorch, written to read like the algorithm, not to be fast.

Every fast path in ssd_fast is tested against these two functions on the same inputs.
They follow DESIGN.md section 1 line by line: a Python loop over parameter tensors,
`.grad` from `backward()`, and `torch.where` for the select-and-dampen rule.
Nothing here is validated beyond what the arithmetic needs; `ssd_fast.dampen` validates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from ._batches import Unpack, eval_mode, model_device, to_device, unpack_batch
from ._hf import task_of
from ._loss import LossFn, model_batch_loss


def importance(
    model: nn.Module,
    data: Iterable,
    *,
    label_free: bool = False,
    loss_fn: LossFn | None = None,
    unpack: Unpack | None = None,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """Batch-mode importance: the mean over batches of the squared batch gradient.

    With `label_free=True` the objective is the mean of ||f(x)||^2 and |g| is
    accumulated instead of g^2 (LFSSD). Overwrites the parameters' `.grad` fields.
    """
    device = torch.device(device) if device is not None else model_device(model)
    params = dict(model.named_parameters())
    imp = {name: torch.zeros(p.shape, dtype=torch.float32, device=p.device) for name, p in params.items()}
    n_batches = 0
    with eval_mode(model):
        for batch in data:
            inputs, targets = unpack_batch(batch, unpack, label_free=label_free)
            inputs, targets = to_device(inputs, device), to_device(targets, device)
            model.zero_grad(set_to_none=True)
            loss = model_batch_loss(model, inputs, targets, label_free=label_free, loss_fn=loss_fn, task=task_of(model))
            loss.backward()
            for name, p in params.items():
                if p.grad is not None:
                    g = p.grad.detach().float()
                    imp[name] += g.abs() if label_free else g.pow(2)
            n_batches += 1
    model.zero_grad(set_to_none=True)
    if n_batches == 0:
        raise ValueError("data yielded no batches")
    return {name: t / n_batches for name, t in imp.items()}


@torch.no_grad()
def dampen(
    model: nn.Module,
    forget: Mapping[str, torch.Tensor],
    full: Mapping[str, torch.Tensor],
    *,
    alpha: float,
    lam: float,
) -> dict[str, int]:
    """Select f > alpha*d and scale those parameters by min(lam*d/f, 1), in place.

    Parameters with requires_grad=False are skipped. Returns the number of selected
    elements per parameter name.
    """
    return {
        name: dampen_tensor_(p, forget[name], full[name], alpha=alpha, lam=lam)
        for name, p in model.named_parameters()
        if p.requires_grad
    }


@torch.no_grad()
def dampen_tensor_(p: torch.Tensor, forget: torch.Tensor, full: torch.Tensor, *, alpha: float, lam: float) -> int:
    """The rule on one tensor, in place; returns how many elements were selected."""
    f = forget.float()
    d = full.float()
    chosen = f > alpha * d
    beta = torch.clamp(lam * d / f, max=1.0)
    p.copy_(torch.where(chosen, p * beta, p))
    return int(chosen.sum())


def selection_mask(forget: torch.Tensor, full: torch.Tensor, alpha: float) -> torch.Tensor:
    """The selected set for one tensor, for tests that compare sets rather than values."""
    return forget.float() > alpha * full.float()


__all__ = ["importance", "dampen", "dampen_tensor_", "selection_mask"]
