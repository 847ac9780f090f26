"""Models and a LightningModule shared by the Fabric tests (importable by spawned ranks)."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from tests.tune.support import CLASSES, blobs, fit


class LitNet(L.LightningModule):
    """A LightningModule as users write them: the network is an attribute, forward calls it."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):  # what Lightning needs; ssd_fast never calls it
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)


def make_plain() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, CLASSES))


def make_lit() -> LitNet:
    return LitNet(make_plain())


def trained(make) -> nn.Module:
    """`make()` fitted to the blobs, so that dampening has something to forget."""
    return fit(make(), *blobs(300, 1))
