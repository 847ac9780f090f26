"""Adding a layer tensor's unsharded sums into the ranks' Shard(0) shards: one reduce-scatter.

FSDP2 shards dim 0 like torch.chunk: chunks of ceil(rows / world) rows, the last ones
shorter or empty. The sums are formed in a buffer padded to world equal chunks, so the
buffer itself is the reduce-scatter's input, with no copy: every rank receives the sum
over ranks of its own chunk and adds its rows into its shard.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

# torch 2.14 renamed reduce_scatter_tensor to reduce_scatter_single; older ones have only the first.
_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def check_shardable(name: str, param: torch.Tensor) -> None:
    """Raise unless `param` is a DTensor sharded Shard(0) over a 1-D mesh (FSDP2's default)."""
    from torch.distributed.tensor import Shard

    placements = tuple(getattr(param, "placements", ()))
    if param.device_mesh.ndim != 1 or placements != (Shard(0),) or param.dim() == 0:
        raise NotImplementedError(
            f"per_sample importance of a sharded model supports Shard(0) over a 1-D mesh (fully_shard's default); "
            f"{name!r} is {placements} over a {param.device_mesh.ndim}-D mesh"
        )


def padded_zeros(param: torch.Tensor, device: torch.device) -> torch.Tensor:
    """fp32 zeros of `param`'s global shape, with dim 0 padded to world equal chunks."""
    world = param.device_mesh.size()
    chunk = math.ceil(param.shape[0] / world)
    return torch.zeros((chunk * world, *param.shape[1:]), dtype=torch.float32, device=device)


def reduce_scatter_add_(shard: torch.Tensor, padded: torch.Tensor, group: dist.ProcessGroup) -> None:
    """shard += this rank's rows of (`padded` summed over ranks); every rank calls it."""
    received = padded.new_empty((padded.shape[0] // dist.get_world_size(group), *padded.shape[1:]))
    _reduce_scatter(received, padded, group=group)
    shard.add_(received[: shard.shape[0]])
