"""Pairing importance dicts with parameters the way the published code can, but safely.

The published `modify_weight` zips importances with `named_parameters()` by position and
never looks at the keys. We pair by name when the keys are the model's names (the
normal case, since `calc_importance` builds them that way). When the keys differ but
the count and every shape line up, we pair by position as the published code would,
with a warning. Anything else is an error, where the published zip would silently
truncate or crash halfway through writing.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch
from torch import nn


def rekey_by_model(model: nn.Module, tensors: object, what: str) -> dict[str, torch.Tensor]:
    """`tensors` re-keyed by the model's parameter names, or a clear error."""
    if not isinstance(tensors, Mapping):
        raise TypeError(f"{what} must be a dict of tensors (as calc_importance returns), got {type(tensors).__name__}")
    for key, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{what}[{key!r}] is a {type(t).__name__}, not a tensor")
    names = [n for n, _ in model.named_parameters()]
    if set(tensors) == set(names):
        return dict(tensors)
    params = list(model.parameters())
    values = list(tensors.values())
    if len(values) != len(params):
        raise ValueError(
            f"{what} has {len(values)} tensors and neither its keys nor its length match the model's "
            f"{len(params)} parameters"
        )
    for i, (name, p, t) in enumerate(zip(names, params, values)):
        if tuple(t.shape) != tuple(p.shape):
            raise ValueError(
                f"{what}: entry {i} ({list(tensors)[i]!r}) has shape {tuple(t.shape)} but parameter {i} "
                f"({name!r}) has {tuple(p.shape)}"
            )
    warnings.warn(
        f"{what} keys are not the model's parameter names; pairing by position, as the published code does",
        UserWarning,
        stacklevel=3,
    )
    return dict(zip(names, values))
