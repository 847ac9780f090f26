"""Parameters used more than once: sum each use's per-sample gradient, then square.

A tied weight, a layer called twice, or a unit (see _vmap) cannot square as it goes: a
sample's gradient is the sum over every use, and the square of a sum is not the sum of
squares. Their uses are recorded during the forward and backward passes (the input
and the output gradient of each call), and after the backward pass the sums are formed
a chunk of samples at a time: every use adds its [chunk, *param.shape] per-sample
gradient into one buffer per parameter, which is then squared and summed over the
chunk. Memory is the recorded activations plus one chunk of per-sample gradients,
bounded by the budget (one sample at a time at least), whatever the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from ._chunks import add_power_sum_, chunk_size, sample_chunks
from ._plan import Layer


class Use(Protocol):
    def per_sample_grads(self, s: slice, n: int) -> dict[str, torch.Tensor]: ...


@dataclass(eq=False)
class LayerCall:
    """One call of a rule layer whose parameters are shared: its input and output gradient."""

    layer: Layer
    x: torch.Tensor
    dy: torch.Tensor | None = None
    version: int = -1

    def __post_init__(self) -> None:
        self.version = self.x._version

    def per_sample_grads(self, s: slice, n: int) -> dict[str, torch.Tensor]:
        if self.dy is None:  # this call's output did not reach the loss
            return {}
        if self.x._version != self.version:
            raise RuntimeError(
                f"the input of {self.layer.name} was modified in place after the layer ran; "
                "per-sample importance needs it as it was"
            )
        grads = self.layer.entry.grad_sample(self.layer.module, self.x[s], self.dy[s])
        return {full: grads[local] for local, full in self.layer.params.items() if local in grads}


def flush_(
    uses: list[Use], sums: dict[str, torch.Tensor], *, n: int, absolute: bool, budget: int, numel: dict[str, int]
) -> None:
    """Add sum over samples of (sum over uses of the per-sample gradient)^2 into `sums`."""
    if not uses:
        return
    size = chunk_size(max(1, sum(numel.values())), n, budget=budget)
    for s in sample_chunks(n, size):
        total: dict[str, torch.Tensor] = {}
        for use in uses:
            for full, g in use.per_sample_grads(s, n).items():
                total[full] = g if full not in total else total[full] + g
        for full, g in total.items():
            add_power_sum_(sums[full], g, absolute=absolute)
