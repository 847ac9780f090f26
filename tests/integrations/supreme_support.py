"""Running SUPREME's own SSD methods and ours on the same model and data (importable by spawned ranks).

SUPREME (supreme-unlearning 0.1.5) is installed with --no-deps; its SSD modules import
only torch, numpy, Lightning Fabric and wandb. wandb is used only when logging is on, so
a stand-in module is put in its place when it is not installed.
"""

from __future__ import annotations

import copy
import importlib
import sys
import types

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tests.tune.support import CLASSES, blobs, fit

METHODS = ("ssd", "lfssd", "ssd_det", "lfssd_det", "assd")
ALPHA, LAM = 2.0, 1.0


def stand_in_wandb() -> None:
    """A `wandb` module for SUPREME's imports, when the real one is absent (logging stays off)."""
    try:
        import wandb  # noqa: F401
    except ImportError:
        stub = types.ModuleType("wandb")
        stub.config = types.SimpleNamespace(update=lambda *a, **k: None)
        sys.modules["wandb"] = stub


def supreme_own(name: str):
    """SUPREME's own implementation of method `name`, straight from its module."""
    stand_in_wandb()
    return getattr(importlib.import_module(f"supreme.methods.unlearning_methods.{name}"), name)


def resolved(name: str):
    """What SUPREME's registry resolves `name` to now (as its unlearn_main does)."""
    from supreme.registry import resolve_method_location

    module, attr = resolve_method_location(name)
    return getattr(importlib.import_module(module), attr)


def trained_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, CLASSES))
    return fit(model, *blobs(200, 1))


def loaders(n: int = 64, batch_size: int = 16, **kwargs) -> tuple[DataLoader, DataLoader]:
    """(forget, full) loaders of SUPREME's (x, coarse label, y) batches; Df is class 0."""
    x, y = blobs(n, 2)
    coarse = y // 2
    full = TensorDataset(x, coarse, y)
    keep = y == 0
    forget = TensorDataset(x[keep], coarse[keep], y[keep])
    return DataLoader(forget, batch_size=batch_size, **kwargs), DataLoader(full, batch_size=batch_size, **kwargs)


def call(method, fabric, model: nn.Module, forget, full, **extra) -> nn.Module:
    """Call a SUPREME-style method with the keyword arguments SUPREME's unlearn_main passes."""
    kwargs = dict(
        fabric=fabric,
        wandb_logging_flag=False,
        type_of_unlearning_strategy="fullclass",
        model=model,
        model_name="MLP",
        num_gpus=1,
        distributed_strategy_name="ddp",
        num_labels=CLASSES,
        forget_label_id=0,
        forget_train_dataloader=forget,
        full_train_dataloader=full,
        dampening_constant=LAM,
        selection_weighting=ALPHA,
    )
    return method(**(kwargs | extra))


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    inner = getattr(model, "module", model)  # a _FabricModule's original module
    inner = getattr(inner, "module", inner)  # inside DDP
    return {n: t.detach().clone() for n, t in inner.state_dict().items()}


def fresh(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)
