"""Chunking over samples, so that no rule ever holds [batch x layer params] at once.

A rule that must materialise per-sample gradients (tokens, convolutions, label-free |g|)
works on `chunk` samples at a time. The chunk is sized so that the temporary per-sample
tensors stay within max(budget, the layer's own activations): peak extra memory is then
O(one layer's activations + params), whatever the batch size.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

DEFAULT_BUDGET = 1 << 25  # elements (128 MiB of fp32): chunks of >= ~8 samples even for 512x512x3x3 convs,
# which on CPU is where batched matmul stops being dominated by per-call overhead


def chunk_size(per_sample_numel: int, n_samples: int, *, budget: int, activations: int = 0) -> int:
    """How many samples fit in max(budget, activations) elements of per-sample temporaries."""
    room = max(budget, activations)
    return max(1, min(n_samples, room // max(1, per_sample_numel)))


def sample_chunks(n_samples: int, size: int) -> Iterator[slice]:
    for start in range(0, n_samples, size):
        yield slice(start, min(start + size, n_samples))


def add_power_sum_(out: torch.Tensor, per_sample: torch.Tensor, *, absolute: bool, owned: bool = False) -> None:
    """out += sum over dim 0 of per_sample**2 (or |per_sample| for label-free), in fp32.

    `owned=True` says per_sample is a temporary of the caller's: it is then squared in
    place, which saves one pass over memory on the largest tensors the rules form.
    """
    g = per_sample.float()
    if owned and g.data_ptr() == per_sample.data_ptr():
        power = g.abs_() if absolute else g.square_()
    else:
        power = g.abs() if absolute else g.square()
    out.add_(power.sum(0).reshape(out.shape))
