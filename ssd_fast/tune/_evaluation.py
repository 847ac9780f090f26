"""Small evaluation sets held as tensors on the model's device, and accuracy on them.

`tune` scores every trial on these, so they are materialised once: each trial then
costs only the forward passes.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .. import _checks
from .._batches import Unpack, call_model, eval_mode, to_device, unpack_batch


class EvalSet:
    """Up to `limit` (inputs, labels) samples from `data`, kept as a list of device batches."""

    def __init__(
        self, data: Iterable, name: str, device: torch.device, *, limit: int | None = None, unpack: Unpack | None = None
    ):
        _checks.batches(data, name, "a DataLoader or an iterable of (inputs, labels) batches")
        self.name = name
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []
        count = 0
        for batch in data:
            x, y = unpack_batch(batch, unpack, label_free=False)
            if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
                raise TypeError(f"{name}: batches must hold an input tensor and a label tensor")
            if limit is not None:
                x, y = x[: limit - count], y[: limit - count]
            self.batches.append((to_device(x, device), to_device(y, device)))
            count += len(y)
            if limit is not None and count >= limit:
                break
        if count == 0:
            raise ValueError(f"{name} holds no samples; tune needs a small evaluation subset here")
        self.size = count

    def labels(self) -> set[int]:
        return {int(v) for _, y in self.batches for v in y.unique()}

    @torch.no_grad()
    def accuracy(self, model: nn.Module) -> float:
        """Top-1 accuracy in eval mode; the model's own modes are restored afterwards."""
        return self.score(model)[0]

    @torch.no_grad()
    def score(
        self, model: nn.Module, *, max_correct: float | None = None, max_wrong: float | None = None
    ) -> tuple[float, bool]:
        """(accuracy, complete): stops early once more than `max_correct` samples are right
        or more than `max_wrong` are wrong, because the trial has then failed whatever the
        rest holds. After an early stop the accuracy is over the part scored only."""
        correct = seen = 0
        with eval_mode(model):
            for x, y in self.batches:
                correct += int((call_model(model, x).argmax(dim=1) == y).sum())
                seen += len(y)
                over = max_correct is not None and correct > max_correct
                under = max_wrong is not None and seen - correct > max_wrong
                if (over or under) and seen < self.size:
                    return correct / seen, False
        return correct / self.size, True

    @torch.no_grad()
    def num_outputs(self, model: nn.Module) -> int:
        with eval_mode(model):
            x, _ = self.batches[0]
            return int(call_model(model, x[:1]).shape[1])
