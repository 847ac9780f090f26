"""One name per parameter, whatever wraps the model: every wrapper ssd_fast knows, in one place.

DDP and DataParallel register the model as `module`, torch.compile as `_orig_mod`, and
Lightning Fabric's `_FabricModule` as `_forward_module` (itself a DDP, or the module),
so the same parameter is `0.weight`, `module.0.weight`, `_orig_mod.0.weight` or
`_forward_module.module.0.weight`. Keying importances by the innermost module's names
lets one stored importance serve the plain, wrapped and compiled model alike, and
ssd_fast runs the innermost module itself, so DDP's gradient all-reduce never runs.
FSDP2 (`fully_shard`, also Fabric's ModelParallelStrategy) keeps the module's own names,
so it needs nothing here. FSDP1 (`FullyShardedDataParallel`, Fabric's FSDPStrategy)
flattens parameters into shards that no name maps to, so it is refused with what to use.
"""

from __future__ import annotations

import sys

from torch import nn


def _is_fabric_module(model: nn.Module) -> bool:
    """Lightning Fabric's wrapper (lightning.fabric or the standalone lightning_fabric),
    recognised without importing Lightning."""
    return any(
        cls.__name__ == "_FabricModule" and cls.__module__.split(".")[0] in ("lightning", "lightning_fabric")
        for cls in type(model).__mro__
    )


def _refuse_fsdp1(model: nn.Module) -> None:
    fsdp = sys.modules.get("torch.distributed.fsdp")  # not loaded: no model can be wrapped in it
    if fsdp is not None and isinstance(model, fsdp.FullyShardedDataParallel):
        raise TypeError(
            "the model is wrapped in FSDP1 (torch.distributed.fsdp.FullyShardedDataParallel, which Lightning "
            "Fabric's FSDPStrategy uses); its flattened shards have no per-parameter names, so ssd_fast cannot "
            "pair importances with them. Shard with FSDP2 instead (torch.distributed.fsdp.fully_shard, or "
            "Fabric's ModelParallelStrategy), which ssd_fast dampens in place, or use DDP or the unwrapped model"
        )


def _wrapped(model: nn.Module) -> nn.Module | None:
    """The module inside a known wrapper, or None when `model` wraps nothing we know."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    _refuse_fsdp1(model)
    if isinstance(model, (DataParallel, DistributedDataParallel)):
        return model.module
    if _is_fabric_module(model):
        return model._forward_module
    inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
    if isinstance(inner, nn.Module) and type(model).__name__ == "OptimizedModule":
        return inner
    return None


def unwrap(model: nn.Module) -> nn.Module:
    """The innermost module under any nesting of DDP, DataParallel, torch.compile and Fabric."""
    while (inner := _wrapped(model)) is not None:
        model = inner
    return model
