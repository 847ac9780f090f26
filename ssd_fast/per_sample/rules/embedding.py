"""nn.Embedding: per-sample gradients are scatter-adds of output gradients into rows.

A sample's gradient for row v is the sum of dY over that sample's positions holding
index v. Keying each (sample, index) pair, summing dY per key, squaring and then
adding each key's square into its row gives the batch sum without a [B x vocab x dim]
tensor: the temporaries are at most the size of dY.
"""

from __future__ import annotations

import torch
from torch import nn


def embedding_rule(
    module: nn.Embedding,
    idx: torch.Tensor,
    dy: torch.Tensor,
    out: dict[str, torch.Tensor],
    *,
    absolute: bool,
    budget: int,
) -> None:
    if "weight" not in out:
        return
    n, vocab = idx.shape[0], module.num_embeddings
    idx = idx.reshape(n, -1).long()
    dy = dy.float().reshape(idx.numel(), -1)
    sample = torch.arange(n, device=idx.device).unsqueeze(1).expand_as(idx)
    keys = (sample * vocab + idx).reshape(-1)
    if module.padding_idx is not None:  # the padding row never receives a gradient
        keep = idx.reshape(-1) != module.padding_idx
        keys, dy = keys[keep], dy[keep]
    unique, inverse = torch.unique(keys, return_inverse=True)
    per_key = torch.zeros(unique.numel(), dy.shape[1], device=dy.device).index_add_(0, inverse, dy)
    power = per_key.abs() if absolute else per_key.square()
    out["weight"].index_add_(0, unique % vocab, power)
