"""SUPREME's SSD family, computed by ssd_fast: one call registers all five through SUPREME's registry.

    import ssd_fast.integrations.supreme
    ssd_fast.integrations.supreme.register()   # before SUPREME runs a method

After it, SUPREME's `ssd`, `lfssd`, `ssd_det`, `lfssd_det` and `assd` resolve to the
functions below (SUPREME's `register_unlearning_method`, its public API; no SUPREME file
changes). They take SUPREME's arguments (fabric, model, forget_train_dataloader,
full_train_dataloader, dampening_constant = lambda, selection_weighting = alpha, ...),
read its (x, _, y) batches and return the model, as its own do. SUPREME keeps its names
in-process only: call `register()` in every process that runs a method.

What is the same, and what differs (see README, "Using ssd_fast from other tools"):
- one process: `ssd` and `assd` give SUPREME's weights bit for bit; `ssd_det` and
  `lfssd_det` run ssd_fast's per-sample engine (no backward pass per sample) and agree
  up to float rounding; `lfssd` squares the output as `out.square().sum(1)`, SUPREME as
  `torch.norm(out, "fro", dim=1).pow(2)`: the same function, rounded differently.
- under DDP, SUPREME's backward all-reduces each batch gradient before squaring it, so
  its importance is the squared mean gradient over ranks and changes with the world size
  (in its -det methods only each batch's first sample is averaged: DDP reduces the first
  backward pass after a forward). By default ssd_fast squares each rank's gradients and
  sums once, the one-process result over all the ranks' data.
  `register(ddp_gradients="averaged")` reproduces SUPREME's estimate instead, bit for bit
  (a slow loop, for comparing with results it produced).
- `assd` reads |Df| and |D| as the samples importance() saw (over all ranks); SUPREME
  reads `len(loader.dataset)`. They differ when a DistributedSampler pads or a loader
  drops its last batch; `register(assd_counts="dataset")` uses SUPREME's.
- under FSDP or DeepSpeed SUPREME turns sharding off for these methods and passes the
  replicated model; these functions dampen whatever model they are given (a DDP or
  Fabric-wrapped one, or an FSDP2-sharded one, in place).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

from .. import Importances, dampen, importance
from ._averaged import averaged_importance

DDP_GRADIENTS = ("per_rank", "averaged")
ASSD_COUNTS = ("seen", "dataset")


@dataclass(frozen=True)
class Method:
    """How one SUPREME method computes importances."""

    per_sample: bool
    label_free: bool
    auto_alpha: bool = False


METHODS = {
    "ssd": Method(per_sample=False, label_free=False),
    "lfssd": Method(per_sample=False, label_free=True),
    "ssd_det": Method(per_sample=True, label_free=False),
    "lfssd_det": Method(per_sample=True, label_free=True),
    "assd": Method(per_sample=False, label_free=False, auto_alpha=True),
}


@dataclass(frozen=True)
class Settings:
    ddp_gradients: str = "per_rank"
    assd_counts: str = "seen"
    progress: bool = True


_settings = Settings()


def register(
    methods: Iterable[str] = tuple(METHODS),
    *,
    ddp_gradients: str = "per_rank",
    assd_counts: str = "seen",
    progress: bool = True,
) -> list[str]:
    """Register ssd_fast's implementations of SUPREME's SSD methods under SUPREME's names.

    Args:
        methods: which of "ssd", "lfssd", "ssd_det", "lfssd_det", "assd" (default all).
        ddp_gradients: "per_rank" (default): under DDP each rank squares its own gradients
            and one all_reduce sums them, the one-process result over all the data.
            "averaged": SUPREME's estimate, gradients averaged over ranks as its DDP
            backward does before they are squared (it changes with the world size); a
            slow loop, for comparisons with results SUPREME produced.
        assd_counts: "seen" (default): ASSD's |Df| and |D| are the samples read (over
            all ranks); "dataset": SUPREME's `len(loader.dataset)`.
        progress: progress bars while importances are computed (rank 0 only).

    The settings hold for every method this module runs in this process, those registered
    by an earlier call included. Returns the names registered. Needs the `supreme`
    package (supreme-unlearning).
    """
    methods = [methods] if isinstance(methods, str) else list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"methods must be some of {tuple(METHODS)}, got {methods!r}")
    if ddp_gradients not in DDP_GRADIENTS:
        raise ValueError(f"ddp_gradients must be one of {DDP_GRADIENTS}, got {ddp_gradients!r}")
    if assd_counts not in ASSD_COUNTS:
        raise ValueError(f"assd_counts must be one of {ASSD_COUNTS}, got {assd_counts!r}")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {progress!r}")
    try:
        import supreme
    except ImportError as e:
        raise ImportError("ssd_fast.integrations.supreme.register needs SUPREME: pip install supreme-unlearning") from e
    global _settings
    _settings = Settings(ddp_gradients, assd_counts, progress)
    for name in methods:
        supreme.register_unlearning_method(name, f"{__name__}:{name}")
    return methods


def _supreme_batch(batch: Any) -> tuple[Any, Any]:
    """SUPREME's batches are (inputs, coarse label, label); its SSD methods use the first and last."""
    if not (isinstance(batch, (tuple, list)) and len(batch) == 3):
        kind = f"{len(batch)} elements" if isinstance(batch, (tuple, list)) else type(batch).__name__
        raise TypeError(f"SUPREME's loaders yield (x, coarse_label, y) batches; got a batch of {kind}")
    return batch[0], batch[2]


def _importance(model: nn.Module, loader: Iterable, method: Method) -> Importances:
    if _settings.ddp_gradients == "averaged":
        return averaged_importance(
            model, loader, per_sample=method.per_sample, label_free=method.label_free, unpack=_supreme_batch
        )
    mode = "per_sample" if method.per_sample else "batch"
    return importance(
        model, loader, mode=mode, label_free=method.label_free, unpack=_supreme_batch, progress=_settings.progress
    )


def _dataset_size(loader: Any, which: str) -> int:
    dataset = getattr(loader, "dataset", None)
    if dataset is None or not hasattr(dataset, "__len__"):
        raise TypeError(f"assd_counts='dataset' reads len({which}.dataset), but that loader has no sized dataset")
    return len(dataset)


def _with_count(imp: Importances, n_samples: int) -> Importances:
    return Importances(dict(imp), **{**imp.metadata(), "n_samples": n_samples})


def run(
    name: str,
    model: nn.Module,
    forget_train_dataloader: Iterable,
    full_train_dataloader: Iterable,
    dampening_constant: float,
    selection_weighting: float,
) -> nn.Module:
    """SUPREME method `name` on ssd_fast: importances of Df then D, then one dampen, in place.

    `dampening_constant` is lambda and `selection_weighting` alpha (ASSD ignores it and
    takes ASSD's percentile). Returns `model`, left in eval mode as SUPREME leaves it.
    """
    method = METHODS[name]
    forget = _importance(model, forget_train_dataloader, method)
    full = _importance(model, full_train_dataloader, method)
    if method.auto_alpha and _settings.assd_counts == "dataset":
        forget = _with_count(forget, _dataset_size(forget_train_dataloader, "forget_train_dataloader"))
        full = _with_count(full, _dataset_size(full_train_dataloader, "full_train_dataloader"))
    alpha = "auto" if method.auto_alpha else selection_weighting
    dampen(model, forget, full, alpha=alpha, lam=dampening_constant)
    return model.eval()


# SUPREME's own signature (it calls with keywords, and passes more, which **kwargs takes);
# fabric, num_gpus and wandb_logging_flag are not needed: ssd_fast finds the process group itself.
def ssd(
    fabric,
    num_gpus,
    wandb_logging_flag,
    model,
    forget_train_dataloader,
    full_train_dataloader,
    dampening_constant,
    selection_weighting,
    **kwargs,
):
    """SUPREME's `ssd`: batch-mode importances (the published SSD)."""
    return run("ssd", model, forget_train_dataloader, full_train_dataloader, dampening_constant, selection_weighting)


def lfssd(
    fabric,
    num_gpus,
    wandb_logging_flag,
    model,
    forget_train_dataloader,
    full_train_dataloader,
    dampening_constant,
    selection_weighting,
    **kwargs,
):
    """SUPREME's `lfssd`: label-free batch-mode importances (|gradient| of the squared output norm)."""
    return run("lfssd", model, forget_train_dataloader, full_train_dataloader, dampening_constant, selection_weighting)


def ssd_det(
    fabric,
    num_gpus,
    wandb_logging_flag,
    model,
    forget_train_dataloader,
    full_train_dataloader,
    dampening_constant,
    selection_weighting,
    **kwargs,
):
    """SUPREME's `ssd_det`: per-sample importances (the empirical Fisher diagonal)."""
    return run(
        "ssd_det", model, forget_train_dataloader, full_train_dataloader, dampening_constant, selection_weighting
    )


def lfssd_det(
    fabric,
    num_gpus,
    wandb_logging_flag,
    model,
    forget_train_dataloader,
    full_train_dataloader,
    dampening_constant,
    selection_weighting,
    **kwargs,
):
    """SUPREME's `lfssd_det`: label-free per-sample importances."""
    return run(
        "lfssd_det", model, forget_train_dataloader, full_train_dataloader, dampening_constant, selection_weighting
    )


def assd(
    fabric,
    num_gpus,
    wandb_logging_flag,
    model,
    forget_train_dataloader,
    full_train_dataloader,
    dampening_constant,
    selection_weighting,
    **kwargs,
):
    """SUPREME's `assd`: batch-mode importances and ASSD's alpha from the f/d percentile."""
    return run("assd", model, forget_train_dataloader, full_train_dataloader, dampening_constant, selection_weighting)
