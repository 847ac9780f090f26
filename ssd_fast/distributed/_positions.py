"""Reading a few elements of sharded tensors, by position in the whole tensor: one all_reduce.

A check that reads "element j of parameter p" (such as a checkpoint probe) must see the
same values on a sharded model as on the whole one. Each rank reads the positions that
fall in its own block, the others add 0, and one all_reduce of all the values, for all
the tensors at once, gives every rank every value. Plain tensors are read directly.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ._group import active
from ._sharded import is_dtensor, local, owns


def _block_bounds(t: torch.Tensor) -> tuple[tuple[int, ...], tuple[int, ...]]:
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    shape, offset = compute_local_shape_and_global_offset(t.shape, t.device_mesh, t.placements)
    return tuple(shape), tuple(offset)


def _unravel(position: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        position, rest = divmod(position, size)
        index.append(rest)
    return tuple(reversed(index))


def _from_block(t: torch.Tensor, positions: list[int]) -> torch.Tensor:
    """float64 values at `positions` (flat, in the global tensor) held by this rank, else 0."""
    out = torch.zeros(len(positions), dtype=torch.float64)
    if not owns(t):
        return out
    shape, offset = _block_bounds(t)
    block = local(t)
    for k, position in enumerate(positions):
        index = _unravel(position, tuple(t.shape))
        inside = [i - o for i, o in zip(index, offset)]
        if all(0 <= i < n for i, n in zip(inside, shape)):
            out[k] = float(block[tuple(inside)])
    return out


class PositionRead:
    """`read_positions` in two steps, so that its all_reduce can ride on another collective.

    `parts` are this rank's values of the sharded tensors (0 where another rank holds the
    element): sum them over ranks, in place, in any all_reduce, then call `values()`.
    """

    @torch.no_grad()  # on the methods: decorating the class is deprecated (a FutureWarning on import)
    def __init__(self, items: list[tuple[torch.Tensor, list[int]]]):
        self._items = items
        self._sharded = [i for i, (t, _) in enumerate(items) if is_dtensor(t)]
        self.parts = [_from_block(*items[i]) for i in self._sharded]
        # where a collective over the parts must run (CUDA under NCCL): beside the sharded tensors
        self.device = local(items[self._sharded[0]][0]).device if self._sharded else torch.device("cpu")

    @torch.no_grad()
    def values(self) -> list[list[float]]:
        """For each (tensor, flat positions), the values there, as a whole tensor would give them."""
        values: list[list[float] | None] = [None] * len(self._items)
        for i, (t, positions) in enumerate(self._items):
            if i not in self._sharded:
                values[i] = t.detach().reshape(-1)[positions].double().tolist()
        for i, part in zip(self._sharded, self.parts):
            values[i] = part.tolist()
        return values


def read_positions(items: list[tuple[torch.Tensor, list[int]]]) -> list[list[float]]:
    """For each (tensor, flat positions), the values there, as a whole tensor would give them."""
    read = PositionRead(items)
    if read.parts and active():
        flat = torch.cat(read.parts).to(read.device)
        dist.all_reduce(flat)
        for part, summed in zip(read.parts, flat.cpu().split([p.numel() for p in read.parts])):
            part.copy_(summed)
    return read.values()
