"""DTensor parameters (FSDP2, tensor parallel): their local shards, with no communication.

An importance paired with a DTensor parameter is either a DTensor with the same mesh
and placements (computed on the sharded model), or a plain full tensor (computed on the
unsharded model and loaded whole); the latter is sliced to this rank's shard locally.
A rank "owns" its shard when it sits at coordinate 0 on every mesh dim the tensor is
replicated over, so that counts over all ranks see each element once.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist

from ._group import active, refuse_rank_local


def is_dtensor(t: object) -> bool:
    if not (dist.is_available() and isinstance(t, torch.Tensor)):
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def any_dtensor(tensors: Iterable[object]) -> bool:
    return any(is_dtensor(t) for t in tensors)


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of `t` (the tensor itself when it is not a DTensor); shares storage.

    Taken outside autograd: every caller reads or edits values in place, and a view with
    autograd history would tie those edits to the parameter's graph."""
    if not is_dtensor(t):
        return t
    with torch.no_grad():
        return t.to_local()


def fp32_zeros_like(p: torch.Tensor) -> torch.Tensor:
    """fp32 zeros with p's shape, device and, for a DTensor, its sharding (no communication)."""
    if is_dtensor(p):
        return torch.zeros_like(p, dtype=torch.float32)
    return torch.zeros(p.shape, dtype=torch.float32, device=p.device)


def owns(t: torch.Tensor) -> bool:
    """Whether this rank counts `t`'s local elements in a sum over all ranks."""
    if not is_dtensor(t):
        return not active() or dist.get_rank() == 0  # a plain tensor is the same on every rank
    mesh = t.device_mesh
    return all(mesh.get_local_rank(i) == 0 for i, pl in enumerate(t.placements) if pl.is_replicate())


def _slice_for(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The part of plain `full` that is this rank's shard of DTensor `like`."""
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    shape, offset = compute_local_shape_and_global_offset(like.shape, like.device_mesh, like.placements)
    index = tuple(slice(o, o + n) for o, n in zip(offset, shape))
    return full[index]


def shard_like(t: torch.Tensor, param: torch.Tensor, name: str) -> torch.Tensor:
    """The local tensor of importance `t` that lines up with parameter `param`'s local shard."""
    if not is_dtensor(param):
        if is_dtensor(t):
            raise ValueError(f"importance for {name!r} is sharded (a DTensor) but the parameter is not")
        return t
    if not is_dtensor(t):
        return _slice_for(t, param)
    if t.device_mesh != param.device_mesh or tuple(t.placements) != tuple(param.placements):
        raise ValueError(
            f"importance for {name!r} is sharded as {tuple(t.placements)} on {t.device_mesh}, the parameter as "
            f"{tuple(param.placements)} on {param.device_mesh}; compute it on the same sharded model"
        )
    return local(t)


def local_pairs(pairs: list[tuple]) -> list[tuple]:
    """(name, parameter, forget, full) tuples with every tensor replaced by its local shard.

    Raises before anything is written when an importance's sharding differs from its
    parameter's. The local parameter shares storage with the parameter, so in-place
    edits of it are edits of the model.
    """
    if not any(is_dtensor(t) for pair in pairs for t in pair[1:]):
        return pairs
    refuse_rank_local("dampen")
    return [(n, local(p), shard_like(f, p, n), shard_like(d, p, n)) for n, p, f, d in pairs]
