"""Adding one layer's unsharded sums into the ranks' Shard(0) shards: one reduce-scatter.

FSDP2 shards dim 0 like torch.chunk: chunks of ceil(rows / world) rows, the last ones
shorter or empty. Each tensor is padded to world equal chunks, the chunks of all the
layer's tensors are laid side by side rank by rank, and one reduce_scatter_tensor (sum)
hands every rank the sum over ranks of its own chunks.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist


def check_shardable(name: str, param: torch.Tensor) -> None:
    """Raise unless `param` is a DTensor sharded Shard(0) over a 1-D mesh (FSDP2's default)."""
    from torch.distributed.tensor import Shard

    placements = tuple(getattr(param, "placements", ()))
    if param.device_mesh.ndim != 1 or placements != (Shard(0),):
        raise NotImplementedError(
            f"per_sample importance of a sharded model supports Shard(0) over a 1-D mesh (fully_shard's default); "
            f"{name!r} is {placements} over a {param.device_mesh.ndim}-D mesh"
        )


def _chunks(full: torch.Tensor, world: int) -> torch.Tensor:
    """[world, chunk elements]: `full` padded to world chunks of ceil(rows / world) rows."""
    rows = full.shape[0]
    chunk = math.ceil(rows / world)
    padded = full.new_zeros((chunk * world, *full.shape[1:]))
    padded[:rows] = full
    return padded.reshape(world, -1)


def reduce_scatter_add_(shards: list[torch.Tensor], fulls: list[torch.Tensor], group: dist.ProcessGroup) -> None:
    """shards[i] += this rank's rows of (fulls[i] summed over ranks), for every i, in one collective."""
    world = dist.get_world_size(group)
    chunks = [_chunks(full, world) for full in fulls]
    send = torch.cat(chunks, dim=1).reshape(-1)
    received = send.new_empty(send.numel() // world)
    dist.reduce_scatter_tensor(received, send, group=group)
    offset = 0
    for shard, chunk in zip(shards, chunks):
        width = chunk.shape[1]
        rows = received[offset : offset + width].view(-1, *shard.shape[1:])
        shard.add_(rows[: shard.shape[0]])
        offset += width
