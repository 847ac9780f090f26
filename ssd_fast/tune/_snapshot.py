"""One saved copy of the parameters a search may change, for exact restores between trials.

Only tensors that some trial could select are copied: a tensor where no element has
f > alpha_min * d is never written by any alpha >= alpha_min, so it needs no copy.
Restoring is a plain `copy_`, so a restored tensor is bit-for-bit the original.
"""
from __future__ import annotations

import torch
from torch import nn


class ParameterSnapshot:
    """Copies of `model`'s changeable trainable parameters; `restore()` writes them back."""

    def __init__(self, model: nn.Module, forget: dict[str, torch.Tensor], full: dict[str, torch.Tensor], alpha_min: float):
        self._saved: dict[str, tuple[nn.Parameter, torch.Tensor]] = {}
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not p.requires_grad or name not in forget:
                    continue
                if bool((forget[name] > alpha_min * full[name]).any()):
                    self._saved[name] = (p, p.detach().clone())

    @property
    def names(self) -> list[str]:
        return list(self._saved)

    @property
    def numel(self) -> int:
        return sum(copy.numel() for _, copy in self._saved.values())

    @torch.no_grad()
    def restore(self) -> None:
        for p, copy in self._saved.values():
            p.copy_(copy)
