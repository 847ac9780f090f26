"""Selected counts of a dampen over a sharded model: this rank's shards, summed over ranks."""

from __future__ import annotations

import torch
import torch.distributed as dist

from ._group import active
from ._sharded import any_dtensor, local, owns


def global_selected(params: list[torch.Tensor], counts: list[int]) -> list[int]:
    """Per-parameter selected counts over the whole model.

    For DTensor parameters each rank counted its local shard, so the counts are summed
    over ranks (one all_reduce), each element once (see `owns`). Plain parameters are
    identical on every rank and keep their local count.
    """
    if not (active() and any_dtensor(params)):
        return counts
    mine = [c if owns(p) else 0 for p, c in zip(params, counts)]
    total = torch.tensor(mine, dtype=torch.int64, device=local(params[0]).device)
    dist.all_reduce(total)
    return [int(t) for t in total.tolist()]
