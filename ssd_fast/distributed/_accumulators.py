"""Which accumulator importance() uses for a sharded (DTensor) model, by mode.

Imported lazily: the accumulators build on the per-sample engine, which a process that
never shards a model need not load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from ._group import refuse_rank_local

if TYPE_CHECKING:
    from .._loss import LossFn


def sharded_accumulator(
    mode: str, model: nn.Module, params: dict[str, nn.Parameter], *, label_free: bool, loss_fn: LossFn | None
):
    """The batch or per_sample accumulator for a model whose parameters are DTensors."""
    refuse_rank_local("importance")
    if mode == "batch":
        from ._sharded_batch import ShardedBatchAccumulator

        return ShardedBatchAccumulator(model, params, label_free=label_free, loss_fn=loss_fn)
    from ._sharded_per_sample import ShardedPerSampleAccumulator

    return ShardedPerSampleAccumulator(model, params, label_free=label_free, loss_fn=loss_fn)
