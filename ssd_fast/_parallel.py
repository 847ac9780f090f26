"""Where torch.distributed support plugs into the core: three small interfaces.

The core computes importances and dampens one process's model. Everything that changes
when a model is wrapped, replicated over ranks or sharded is asked of these interfaces:
- `Naming`: the module whose parameter names importances use (wrappers stripped);
- `Reduction`: how importance sums are laid out and summed over processes, and which
  process prints and writes files;
- `Sharding`: how parameters split over processes (DTensors) are read and written.

Each default is the single-process behaviour. `ssd_fast.distributed` subclasses them and
calls `register` when it is imported (ssd_fast/__init__ imports it), so the core works
on DDP, Fabric and FSDP2 models without importing that package: the import goes one way.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, NamedTuple

import torch
from torch import nn


class Counts(NamedTuple):
    """What an importance() call counted: reduced over processes with its sums."""

    n_samples: int
    n_batches: int
    batch_size: int | None


class Naming:
    """Which module's parameter names importances use."""

    def unwrap(self, model: nn.Module) -> nn.Module:
        """The module inside any wrappers (DDP, Fabric, torch.compile): its names are the keys."""
        return model


class Reduction:
    """Importance sums over processes; a single process keeps its own."""

    def is_main(self) -> bool:
        """The process that prints progress and writes files."""
        return True

    def barrier(self) -> None:
        """Wait for every process (after a file is written, so any can read it)."""

    def importance_sums(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """fp32 zeros shaped like each parameter, to accumulate into."""
        return {n: torch.zeros(p.shape, dtype=torch.float32, device=p.device) for n, p in params.items()}

    def reduce_importance(
        self, sums: dict[str, torch.Tensor], counts: Counts, *, global_batches: bool, extra: Iterable = ()
    ) -> Counts:
        """Sum `sums` (in place), `counts` and `extra` tensors over processes; return the counts."""
        return counts


class Sharding:
    """Parameters split over processes (DTensor); none exist in a single process."""

    def any_dtensor(self, tensors: Iterable[object]) -> bool:
        return False

    def local(self, t: torch.Tensor) -> torch.Tensor:
        """This process's part of `t`, sharing storage."""
        return t

    def local_pairs(self, pairs: list[tuple]) -> list[tuple]:
        """(name, parameter, forget, full) with each tensor replaced by its local part."""
        return pairs

    def global_selected(self, params: list[torch.Tensor], counts: list[int]) -> list[int]:
        """Per-parameter selected counts over every shard."""
        return counts

    def accumulator(self, mode: str, model: nn.Module, params: dict, *, label_free: bool, loss_fn: Any):
        raise NotImplementedError("sharded parameters need ssd_fast.distributed")

    def position_read(self, items: list[tuple[torch.Tensor, list[int]]]) -> Any:
        raise NotImplementedError("sharded parameters need ssd_fast.distributed")

    def read_positions(self, items: list[tuple[torch.Tensor, list[int]]]) -> list[list[float]]:
        return [t.detach().reshape(-1)[positions].double().tolist() for t, positions in items]

    def sharded_percentile(self, pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], q: float) -> float | None:
        raise NotImplementedError("sharded parameters need ssd_fast.distributed")

    def save_sharded(self, tensors: dict[str, torch.Tensor], meta: dict, path: str | os.PathLike) -> None:
        raise NotImplementedError("sharded importances need ssd_fast.distributed")

    def load_sharded(self, path: str | os.PathLike, model: nn.Module | None, device) -> tuple[dict, dict]:
        raise NotImplementedError("sharded importance folders need ssd_fast.distributed")


_naming, _reduction, _sharding = Naming(), Reduction(), Sharding()


def register(*, naming: Naming | None = None, reduction: Reduction | None = None, sharding: Sharding | None = None):
    """Install implementations of the interfaces (ssd_fast.distributed does, on import)."""
    global _naming, _reduction, _sharding
    _naming = naming or _naming
    _reduction = reduction or _reduction
    _sharding = sharding or _sharding


# The core calls these; each asks whatever implementation is registered now.
def unwrap(model: nn.Module) -> nn.Module:
    return _naming.unwrap(model)


def is_main() -> bool:
    return _reduction.is_main()


def barrier() -> None:
    _reduction.barrier()


def importance_sums(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return _reduction.importance_sums(params)


def reduce_importance(sums, counts: Counts, *, global_batches: bool, extra: Iterable = ()) -> Counts:
    return _reduction.reduce_importance(sums, counts, global_batches=global_batches, extra=extra)


def any_dtensor(tensors: Iterable[object]) -> bool:
    return _sharding.any_dtensor(tensors)


def local(t: torch.Tensor) -> torch.Tensor:
    return _sharding.local(t)


def local_pairs(pairs: list[tuple]) -> list[tuple]:
    return _sharding.local_pairs(pairs)


def global_selected(params: list[torch.Tensor], counts: list[int]) -> list[int]:
    return _sharding.global_selected(params, counts)


def sharded_accumulator(mode: str, model: nn.Module, params: dict, *, label_free: bool, loss_fn: Any):
    return _sharding.accumulator(mode, model, params, label_free=label_free, loss_fn=loss_fn)


def position_read(items: list[tuple[torch.Tensor, list[int]]]) -> Any:
    return _sharding.position_read(items)


def read_positions(items: list[tuple[torch.Tensor, list[int]]]) -> list[list[float]]:
    return _sharding.read_positions(items)


def sharded_percentile(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], q: float) -> float | None:
    return _sharding.sharded_percentile(pairs, q)


def save_sharded(tensors: dict[str, torch.Tensor], meta: dict, path: str | os.PathLike) -> None:
    _sharding.save_sharded(tensors, meta, path)


def load_sharded(path: str | os.PathLike, model: nn.Module | None, device) -> tuple[dict, dict]:
    return _sharding.load_sharded(path, model, device)
