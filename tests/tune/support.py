"""Shared by the tune tests: separable blobs, and a small classifier trained on them."""

from __future__ import annotations

import torch
from torch import nn

CLASSES = 4


def blobs(n: int, seed: int, *, noise: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` 12-dimensional points around CLASSES fixed centres (labels cycle through the classes)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % CLASSES
    centers = torch.randn(CLASSES, 12, generator=torch.Generator().manual_seed(99)) * 2
    return centers[y] + noise * torch.randn(n, 12, generator=g), y


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """150 full-batch Adam steps of cross-entropy; returned in eval mode."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()
