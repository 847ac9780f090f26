"""Finishing an importance() call inside a process group: one all_reduce over ranks.

Every rank accumulates its own batches locally, into sums laid out for the collective
(see _reduce.importance_sums); then one collective sums the plain (replicated-parameter)
sums and the sample, batch and batch-size counts, so every rank holds the global result. Sums of sharded (DTensor) parameters are not reduced: each
rank's shard already holds the global value (see _sharded_batch).
"""

from __future__ import annotations

import torch

from .._parallel import Counts
from ._group import active, world_size
from ._reduce import FlatSums, all_reduce_sums
from ._sharded import is_dtensor, local


def _buffer_device(sums: list[torch.Tensor]) -> torch.device:
    import torch.distributed as dist

    if sums:
        return local(sums[0]).device
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def reduce_importance(
    sums: dict[str, torch.Tensor], counts: Counts, *, global_batches: bool, extra: list[torch.Tensor] = ()
) -> Counts:
    """Sum the local sums and counts over ranks, in place and in one all_reduce.

    Outside a process group, returns `counts` untouched. `global_batches` says that each
    local batch was already one step of a gradient synchronised over ranks (FSDP2), so
    the batch count is the local one and the batch size the union's. `extra` tensors are
    summed over ranks in the same collective (a checkpoint probe's `PositionRead.parts`).
    """
    if not active():
        return counts
    if isinstance(sums, FlatSums):
        # Flat sums mean every parameter is replicated, so nothing sharded has parts to add.
        assert not extra, "extra tensors ride only with sums of sharded parameters"
        plain = sums
    else:
        plain = [s for s in sums.values() if not is_dtensor(s)] + list(extra)
    n_samples, n_batches, first = all_reduce_sums(
        plain, [counts.n_samples, counts.n_batches, counts.batch_size or 0], _buffer_device(list(sums.values()))
    )
    if global_batches:
        return Counts(n_samples, n_batches // world_size(), first or None)
    return Counts(n_samples, n_batches, counts.batch_size)
