"""Per-sample importance of a sharded (FSDP2) model: square first, then reduce-scatter.

The engine's layer rules need the layer's unsharded tensors, which FSDP2 all-gathers for
the backward pass anyway. For each layer, the rule adds this rank's sum over its samples
of g_i^2 into temporary buffers of the layer's unsharded shapes (padded so that each is
the reduce-scatter's input as it is); one reduce-scatter per tensor adds the sum over
ranks into each rank's shard, and the buffer is freed. So a rank holds its shards plus
one layer's unsharded sums at a time, and never forms a parameter gradient. Layers no
rule covers once per forward (vmap units, bare parameters, tied or reused weights, recurrent
layers) are refused here, before anything is accumulated.
"""

from __future__ import annotations

import torch
from torch import nn

from .._loss import LossFn
from ..per_sample import PerSampleAccumulator
from ._reduce_scatter import check_shardable, padded_zeros, reduce_scatter_add_
from ._sharded import local


class ShardedPerSampleAccumulator(PerSampleAccumulator):
    """PerSampleAccumulator whose layer sums land in DTensor shards through a reduce-scatter."""

    global_batches = False  # each rank's batches are batches of their own

    def __init__(self, model: nn.Module, params: dict[str, nn.Parameter], *, label_free: bool, loss_fn: LossFn | None):
        for name, p in params.items():
            check_shardable(name, p)
        self._group = next(iter(params.values())).device_mesh.get_group(0)
        super().__init__(model, params, label_free=label_free, loss_fn=loss_fn)

    def _install(self, plan, reasons=None) -> None:
        super()._install(plan, reasons)
        others = sorted(set(plan.bare) | _not_by_a_plain_rule(plan))
        if others:
            self.close()
            raise NotImplementedError(
                "per_sample importance of a sharded model needs a layer rule for every parameter, each layer "
                f"used once per forward; these would need vmap, a per-sample copy, shared-use summing or a "
                f"recurrent rule: {others[:5]}"
            )

    def _layer_callback(self, layer, x: torch.Tensor):
        add_layer_sums = super()._layer_callback(layer, x)  # adds into self._sums[full name]

        def on_grad(dy: torch.Tensor) -> None:
            shards = self._sums
            names = list(layer.params.values())
            padded = {n: padded_zeros(self.params[n], dy.device) for n in names}
            self._sums = {n: padded[n][: self.params[n].shape[0]] for n in names}  # unsharded rows
            try:
                add_layer_sums(dy)
            finally:
                self._sums = shards
            with torch.no_grad():
                for n in names:  # in the same order on every rank
                    reduce_scatter_add_(local(shards[n]), padded.pop(n), self._group)

        return on_grad


def _not_by_a_plain_rule(plan) -> set[str]:
    """Parameters whose sums do not come from `_layer_callback`: vmap units, layers whose
    uses are summed before squaring (tied or called twice), and recurrent output rules."""
    names = {n for unit in plan.units for n in unit.params.values()}
    for layer in plan.layers:
        if layer.deferred or layer.entry.output_rule is not None:
            names |= set(layer.params.values())
    return names
