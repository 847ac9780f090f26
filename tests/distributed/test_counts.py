"""Counts ride in the fp32 buffer of the one all_reduce: exact however large, for any world size."""

from __future__ import annotations

import pytest
import torch

from ssd_fast.distributed._reduce import _decode, _encode


@pytest.mark.parametrize("world", [2, 3, 8, 1000])
def test_counts_summed_in_fp32_come_back_exact(world):
    g = torch.Generator().manual_seed(world)
    per_rank = [[int(torch.randint(0, 2**62 // world, (), generator=g)), 2**24 + 1, r] for r in range(world)]
    summed = torch.stack([torch.tensor(_encode(c, world), dtype=torch.float32) for c in per_rank]).sum(0)
    assert _decode(summed.tolist(), world) == [sum(c[i] for c in per_rank) for i in range(3)]


def test_a_negative_count_is_refused():
    with pytest.raises(ValueError, match="out of range"):
        _encode([-1], 2)
