"""Summing importance sums and counts over ranks in ONE all_reduce, with no copy.

Inside a process group, the sums are views into one flat fp32 buffer that starts with a
small header for the integer counts, so the final all_reduce runs on that buffer as it
is (no flattening copy of a model-sized tensor). A count does not fit fp32 exactly past
2**24, so each is split into limbs small enough that the sum over every rank of one limb
stays below 2**24, where fp32 holds every integer exactly. Sums that cannot share one
buffer (parameters on several devices) are copied into one for the collective instead.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from ._group import active, world_size
from ._sharded import any_dtensor, fp32_zeros_like

_EXACT_BITS = 24  # fp32 represents every integer below 2**24
N_COUNTS = 3  # samples, batches, batch size


def _limb_bits(world: int) -> int:
    return max(1, _EXACT_BITS - world.bit_length())


def _limbs(world: int) -> int:
    return math.ceil(63 / _limb_bits(world))


def _encode(counts: list[int], world: int) -> list[float]:
    bits, mask = _limb_bits(world), (1 << _limb_bits(world)) - 1
    for c in counts:
        if not 0 <= c < 1 << 63:
            raise ValueError(f"count {c} out of range for the reduction")
    return [float((c >> (k * bits)) & mask) for c in counts for k in range(_limbs(world))]


def _decode(values: list[float], world: int) -> list[int]:
    bits, limbs = _limb_bits(world), _limbs(world)
    return [sum(int(values[i * limbs + k]) << (k * bits) for k in range(limbs)) for i in range(len(values) // limbs)]


class FlatSums(dict):
    """Importance sums (name -> fp32 tensor) that are views into `flat`, after the counts' header."""

    def __init__(self, flat: torch.Tensor, header: int, views: dict[str, torch.Tensor]):
        super().__init__(views)
        self.flat = flat
        self.header = header


def importance_sums(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fp32 zeros shaped like each parameter: views of one buffer inside a process group
    (plain parameters on one device), else one tensor each (sharded like a DTensor parameter)."""
    devices = {p.device for p in params.values()}
    if not active() or any_dtensor(params.values()) or len(devices) != 1:
        return {n: fp32_zeros_like(p) for n, p in params.items()}
    header = N_COUNTS * _limbs(world_size())
    flat = torch.zeros(header + sum(p.numel() for p in params.values()), dtype=torch.float32, device=devices.pop())
    views, offset = {}, header
    for name, p in params.items():
        views[name] = flat[offset : offset + p.numel()].view(p.shape)
        offset += p.numel()
    return FlatSums(flat, header, views)


def all_reduce_sums(sums: list[torch.Tensor] | FlatSums, counts: list[int], device: torch.device) -> list[int]:
    """Every sum becomes its sum over ranks, in place; returns the `counts` summed over ranks.

    One collective whatever the number of tensors. `device` holds the buffer when one has
    to be built (the backend's device: CUDA for NCCL).
    """
    world = dist.get_world_size()
    header = _encode(counts, world)
    if isinstance(sums, FlatSums) and sums.header == len(header):
        sums.flat[: len(header)] = torch.tensor(header, dtype=torch.float32)
        dist.all_reduce(sums.flat)
        return _decode(sums.flat[: len(header)].tolist(), world)
    tensors = list(sums.values()) if isinstance(sums, dict) else sums
    flat = torch.cat(
        [torch.tensor(header, dtype=torch.float32, device=device)]
        + [s.reshape(-1).to(device, torch.float32) for s in tensors]
    )
    dist.all_reduce(flat)
    offset = len(header)
    for s in tensors:
        s.copy_(flat[offset : offset + s.numel()].view_as(s))
        offset += s.numel()
    return _decode(flat[: len(header)].tolist(), world)
