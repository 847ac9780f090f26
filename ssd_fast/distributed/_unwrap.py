"""One name per parameter, whatever wraps the model.

DDP and DataParallel register the model as `module`, and torch.compile as `_orig_mod`,
so the same parameter is `0.weight`, `module.0.weight` or `_orig_mod.0.weight`. Keying
importances by the innermost module's names lets one stored importance serve the plain,
wrapped and compiled model alike. FSDP2 (`fully_shard`) keeps the module's own names,
so it needs nothing here.
"""

from __future__ import annotations

from torch import nn


def _wrapped(model: nn.Module) -> nn.Module | None:
    """The module inside a known wrapper, or None when `model` wraps nothing we know."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    if isinstance(model, (DataParallel, DistributedDataParallel)):
        return model.module
    inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
    if isinstance(inner, nn.Module) and type(model).__name__ == "OptimizedModule":
        return inner
    return None


def unwrap(model: nn.Module) -> nn.Module:
    """The innermost module under any nesting of DDP, DataParallel and torch.compile."""
    while (inner := _wrapped(model)) is not None:
        model = inner
    return model
