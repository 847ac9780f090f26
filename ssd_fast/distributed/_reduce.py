"""Summing importance sums and counts over ranks in ONE all_reduce.

The sums (fp32) and the integer counts travel in one flat fp32 buffer. A count does not
fit fp32 exactly past 2**24, so each count is split into limbs small enough that the sum
over every rank of one limb stays below 2**24, where fp32 holds every integer exactly.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist

_EXACT_BITS = 24  # fp32 represents every integer below 2**24


def _limb_bits(world: int) -> int:
    return max(1, _EXACT_BITS - world.bit_length())


def _encode(counts: list[int], bits: int) -> list[float]:
    limbs = math.ceil(63 / bits)
    mask = (1 << bits) - 1
    return [float((c >> (k * bits)) & mask) for c in counts for k in range(limbs)]


def _decode(values: list[float], n_counts: int, bits: int) -> list[int]:
    limbs = math.ceil(63 / bits)
    return [sum(int(values[i * limbs + k]) << (k * bits) for k in range(limbs)) for i in range(n_counts)]


def all_reduce_sums(sums: list[torch.Tensor], counts: list[int], device: torch.device) -> list[int]:
    """Every tensor in `sums` becomes its sum over ranks, in place; returns the summed counts.

    One collective whatever the number of tensors. `device` holds the buffer (the
    backend's device: CUDA for NCCL); the sums may live anywhere.
    """
    for c in counts:
        if c < 0 or c >= 1 << 63:
            raise ValueError(f"count {c} out of range for the reduction")
    bits = _limb_bits(dist.get_world_size())
    header = torch.tensor(_encode(counts, bits), dtype=torch.float32, device=device)
    flat = torch.cat([header] + [s.reshape(-1).to(device, torch.float32) for s in sums])
    dist.all_reduce(flat)
    offset = header.numel()
    for s in sums:
        n = s.numel()
        s.copy_(flat[offset : offset + n].view_as(s))
        offset += n
    return _decode(flat[: header.numel()].tolist(), len(counts), bits)
