"""Chunking over samples, so that no rule ever holds [batch x layer params] at once.

A rule that must materialise per-sample gradients (tokens, convolutions, label-free |g|)
works on `chunk` samples at a time. The chunk is sized so that the temporary per-sample
tensors stay within max(budget, the layer's own activations): peak extra memory is then
O(one layer's activations + params), whatever the batch size.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch

DEFAULT_BUDGET = 1 << 23  # elements (32 MiB of fp32): big enough for fast bmm, small beside activations


def chunk_size(per_sample_numel: int, n_samples: int, *, budget: int, activations: int = 0) -> int:
    """How many samples fit in max(budget, activations) elements of per-sample temporaries."""
    room = max(budget, activations)
    return max(1, min(n_samples, room // max(1, per_sample_numel)))


def sample_chunks(n_samples: int, size: int) -> Iterator[slice]:
    for start in range(0, n_samples, size):
        yield slice(start, min(start + size, n_samples))


def add_power_sum_(out: torch.Tensor, per_sample: torch.Tensor, *, absolute: bool) -> None:
    """out += sum over dim 0 of per_sample**2 (or |per_sample| for label-free), in fp32."""
    g = per_sample.float()
    power = g.abs() if absolute else g.square()
    out.add_(power.sum(0).reshape(out.shape))
