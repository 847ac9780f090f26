"""Pairing importance tensors with a model's parameters, by name, refusing any mismatch.

The published code zips importances and parameters by position, so a reordered or
edited model silently dampens the wrong tensors. We pair by name and say exactly what
does not line up.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch
from torch import nn

from ._parallel import unwrap


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of the parameter names, shapes and dtypes, in registration order.

    Names are the unwrapped module's (see ssd_fast.distributed.unwrap), so a DDP-wrapped
    or compiled model has the plain model's fingerprint."""
    h = hashlib.sha256()
    for name, p in unwrap(model).named_parameters():
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype};".encode())
    return h.hexdigest()[:16]


def named_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The model's parameters by the names importances use: the unwrapped module's
    (DDP, DataParallel and torch.compile add a prefix; see ssd_fast.distributed.unwrap)."""
    return dict(unwrap(model).named_parameters())


def _preview(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def pair_with_model(
    model: nn.Module | Mapping[str, nn.Parameter],
    tensors: Mapping[str, torch.Tensor],
    what: str,
    *,
    check_device: bool,
) -> list[tuple[str, nn.Parameter, torch.Tensor]]:
    """(name, parameter, importance) for every trainable parameter, or a ValueError.

    `model` may also be its `dict(named_parameters())`, so that callers pairing several
    importances walk the module tree once. A wrapped model (DDP, DataParallel,
    torch.compile) pairs by its inner module's names. Frozen parameters (requires_grad=False) may be
    present or absent in `tensors`; they are never dampened. Names the model does not
    have are an error.
    """
    params = named_parameters(model) if isinstance(model, nn.Module) else model
    extra = [n for n in tensors if n not in params]
    missing = [n for n, p in params.items() if p.requires_grad and n not in tensors]
    if extra or missing:
        parts = []
        if missing:
            parts.append(f"missing for parameters {_preview(missing)}")
        if extra:
            parts.append(f"given for names the model does not have: {_preview(extra)}")
        raise ValueError(f"{what} importances do not match the model: " + "; ".join(parts))
    pairs = []
    for name, p in params.items():
        if name not in tensors:
            continue
        t = tensors[name]
        if tuple(t.shape) != tuple(p.shape):
            raise ValueError(
                f"{what} importance for {name!r} has shape {tuple(t.shape)}, the parameter has {tuple(p.shape)}"
            )
        if check_device and t.device != p.device:
            raise ValueError(
                f"{what} importance for {name!r} is on {t.device}, the parameter is on {p.device}; "
                f"move it with .to({str(p.device)!r})"
            )
        if p.requires_grad:
            pairs.append((name, p, t))
    return pairs
