"""`tune`'s fallback: dampen only the later layers, from some weight layer onwards.

SSD dampens every layer. For some classes no (alpha, lambda) then forgets while keeping
retain accuracy, yet dampening only the later layers does. On Fashion-MNIST (small CNN,
2 epochs, scored on held-out images) Bag kept 10% forget accuracy with every layer in
play, and fell to 0% with retain accuracy kept when only the dense head was dampened.
The early convolutions likely hold features every class shares, so dampening them costs
retain accuracy before it costs Bag's. (The published SSD parameters carry `min_layer` for the
same idea, unused by its code.)

A start is a weight layer (a parameter with two or more dimensions: conv, linear,
embedding) after the first; dampening "from" it allows every parameter from it onwards
in `named_parameters()` order, so a conv's BatchNorm goes with the conv. Deep models get
at most `limit` starts, evenly spaced in depth, the last weight layer always among them.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .._pairing import named_parameters
from ..importances import Importances


def layer_starts(model: nn.Module, names: Mapping[str, torch.Tensor], limit: int = 4) -> list[str]:
    """Names of the weight layers the fallback may start dampening from, shallowest first.

    Only parameters present in `names` (the importances' keys) count.
    """
    weights = [n for n, p in named_parameters(model).items() if n in names and p.dim() >= 2][1:]
    if len(weights) <= limit:
        return weights
    picks = sorted({round(j * (len(weights) - 1) / (limit - 1)) for j in range(limit)})
    return [weights[i] for i in picks]


def dampen_only_from(model: nn.Module, forget: Importances, start: str) -> Importances:
    """`forget` with zero importance before `start`: SSD selects f > alpha * d, never f = 0,
    so those parameters are left bit-for-bit as they are."""
    order = [n for n in named_parameters(model) if n in forget]  # a wrapped model by its inner names
    if start not in order:
        raise ValueError(f"{start!r} is not a parameter with an importance")
    before = set(order[: order.index(start)])
    tensors = {n: torch.zeros_like(t) if n in before else t for n, t in forget.items()}
    return Importances(tensors, **forget.metadata())
