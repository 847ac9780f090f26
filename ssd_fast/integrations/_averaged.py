"""SUPREME's importance under DDP, rebuilt: gradients all-reduced as DDP does before squaring.

SUPREME backpropagates through the DDP-wrapped model, so DDP all-reduces (averages over
ranks) the gradient before SUPREME squares it: its `ssd`/`lfssd`/`assd` importance is the
mean over steps of the squared mean-over-ranks batch gradient, and changes with the world
size. Its -det methods call backward once per sample on one forward pass; DDP reduces
only the first backward pass after a forward, so the first sample of each batch is
averaged over ranks and the others stay the rank's own. `ssd_fast.importance` instead
squares each rank's own gradients and sums once, the one-process result over all the
ranks' data. This module reproduces SUPREME's numbers (bit for bit in the 2-rank test),
for users comparing with results it produced; it is a plain loop with one all_reduce per
batch, as SUPREME's, not the fast path.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn

from .. import Importances, distributed
from .._batches import eval_mode, model_device, to_device
from .._pairing import model_fingerprint


def _losses(out: torch.Tensor, y: torch.Tensor, label_free: bool) -> torch.Tensor:
    """Per-sample losses in SUPREME's forms: cross-entropy, or the squared Frobenius norm of the output."""
    if label_free:
        return torch.norm(out, p="fro", dim=1).pow(2)
    return nn.functional.cross_entropy(out, y, reduction="none")


def _mean_over_ranks_(grads: list[torch.Tensor], world: int) -> None:
    if world == 1:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    for g, part in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))


def _check_equal_batches(data: Iterable, device: torch.device, world: int) -> None:
    """Every rank must run the same number of backward passes, or the all_reduces would hang;
    checked on the number of batches, where the data knows it (a DataLoader does)."""
    if world == 1 or not hasattr(data, "__len__"):
        return
    steps = len(data)
    counts = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world)]
    dist.all_gather(counts, torch.tensor([steps], dtype=torch.int64, device=device))
    found = [int(c) for c in counts]
    if len(set(found)) > 1:
        raise ValueError(
            f"averaged gradients need the same number of batches on every rank, found {found}; "
            "use a DistributedSampler (which pads every rank to the same length) with the same batch size"
        )


def averaged_importance(model: nn.Module, data: Iterable, *, per_sample: bool, label_free: bool, unpack) -> Importances:
    """SUPREME's importance on DDP ranks: mean over its units (batches, or samples when
    `per_sample`) of (gradient averaged over ranks)^2, or |.| when `label_free`.

    Every rank must call it with the same number of batches of the same sizes.
    """
    inner = distributed.unwrap(model)
    params = {n: p for n, p in inner.named_parameters() if p.requires_grad}
    sums = {n: torch.zeros(p.shape, dtype=torch.float32, device=p.device) for n, p in params.items()}
    device = model_device(inner)
    world = distributed.world_size()
    _check_equal_batches(data, device, world)
    n_samples = n_batches = steps = 0
    batch_size = None
    with eval_mode(inner), torch.enable_grad():
        for batch in data:
            x, y = unpack(batch)
            x, y = to_device(x, device), to_device(y, device)
            losses = _losses(inner(x), y, label_free)
            units = list(losses) if per_sample else [losses.mean()]
            for k, unit in enumerate(units):
                found = torch.autograd.grad(
                    unit, list(params.values()), retain_graph=k < len(units) - 1, allow_unused=True
                )
                grads = [torch.zeros_like(p) if g is None else g.float() for p, g in zip(params.values(), found)]
                if k == 0:  # DDP all-reduces only the first backward pass after a forward (see above)
                    _mean_over_ranks_(grads, world)
                for s, g in zip(sums.values(), grads):
                    s.add_(g.abs() if label_free else g.square())
            n_samples += int(x.shape[0])
            n_batches += 1
            steps += len(units)
            batch_size = batch_size or int(x.shape[0])
    if steps == 0:
        raise ValueError("data yielded no samples, so there is nothing to estimate importance from")
    for s in sums.values():
        s /= steps
        if world > 1:
            dist.all_reduce(s)  # SUPREME's mean over ranks (equal values by now, as every gradient was)
            s /= world
    return Importances(
        sums,
        mode="per_sample" if per_sample else "batch",
        label_free=label_free,
        n_samples=n_samples * world,
        n_batches=n_batches,  # each a step of the union of the ranks' batches
        batch_size=batch_size,
        fingerprint=model_fingerprint(inner),
    )
