"""Each benchmarked method, run on a copy of the trained model and timed the same way.

A method's time covers the unlearning step only: copying the model before and scoring
it after are excluded for every method alike. SSD's full-data importance is computed
once after training (cached with the checkpoint), so it is reported as its own step and
not in SSD's per-request time, exactly as the paper's Figure 2 separates it.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from ... import reference
from ..baselines import finetune, retrain
from ..baselines.fisher import capped_indices, fisher_diagonal, fisher_noise
from ..data.scenarios import Splits, make_loader
from ...dampen import dampen
from ...importance import importance
from .config import BenchConfig


@dataclass
class Context:
    """What every method may use: the trained model, the splits, and the cached full importances."""

    config: BenchConfig
    seed: int
    splits: Splits
    model: nn.Module
    full: dict = field(default_factory=dict)  # method name ("ssd", "ssd_reference") -> full importance


@dataclass
class MethodRun:
    """An unlearned model and its cost. `seconds` is extrapolated when `extrapolated` is True."""

    model: nn.Module
    seconds: float
    extrapolated: bool = False
    measured_seconds: float | None = None
    steps: dict[str, float] = field(default_factory=dict)
    notes: str = ""


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run_baseline(ctx: Context) -> MethodRun:
    """The original model, unchanged: the 'before' row."""
    return MethodRun(ctx.model, 0.0, measured_seconds=0.0)


def run_retrain(ctx: Context) -> MethodRun:
    c = ctx.config
    model, seconds = _timed(lambda: retrain(ctx.model, ctx.splits, epochs=c.epochs, batch_size=c.batch_size, lr=c.lr, seed=ctx.seed, progress=c.progress))
    return MethodRun(model, seconds, measured_seconds=seconds)


def run_finetune(ctx: Context) -> MethodRun:
    c = ctx.config
    model, seconds = _timed(lambda: finetune(ctx.model, ctx.splits, epochs=c.finetune_epochs, batch_size=c.batch_size, seed=ctx.seed, progress=c.progress))
    return MethodRun(model, seconds, measured_seconds=seconds)


def _fisher_run(ctx: Context, diagonal: Callable[[int | None], dict], label: str) -> MethodRun:
    """Time the Fisher estimate (capped) and the noise step; extrapolate a capped estimate linearly."""
    c, splits = ctx.config, ctx.splits
    n_retain = len(splits.retain)
    n_used = len(capped_indices(n_retain, c.fisher_max_samples, ctx.seed))
    fisher, t_fisher = _timed(lambda: diagonal(c.fisher_max_samples))
    model, t_noise = _timed(lambda: fisher_noise(ctx.model, fisher, num_classes=splits.num_classes, forget_class=splits.forget_class, seed=ctx.seed))
    capped = n_used < n_retain
    # The estimate is a loop of identical per-sample steps, so its cost is linear in the samples.
    estimate = t_fisher * n_retain / n_used if capped else t_fisher
    notes = f"{label} on {n_used} of {n_retain} retain samples" + (f"; time extrapolated x{n_retain / n_used:.1f}" if capped else "")
    return MethodRun(
        model, estimate + t_noise, extrapolated=capped, measured_seconds=t_fisher + t_noise,
        steps={"fisher diagonal": t_fisher, "noise": t_noise}, notes=notes,
    )


def run_fisher(ctx: Context) -> MethodRun:
    c = ctx.config
    return _fisher_run(ctx, lambda cap: fisher_diagonal(ctx.model, ctx.splits.retain, max_samples=cap, seed=ctx.seed, progress=c.progress), "bs-1 loop")


def run_fisher_fast(ctx: Context) -> MethodRun:
    from ..baselines.fisher_fast import fisher_diagonal_fast

    c = ctx.config
    return _fisher_run(
        ctx,
        lambda cap: fisher_diagonal_fast(ctx.model, ctx.splits.retain, batch_size=c.importance_batch_size, max_samples=cap, seed=ctx.seed, progress=c.progress),
        "per-sample engine",
    )


def run_ssd(ctx: Context) -> MethodRun:
    """ssd_fast: forget importance, then dampen against the cached full importance."""
    c = ctx.config
    model = copy.deepcopy(ctx.model)
    loader = make_loader(ctx.splits.forget, c.importance_batch_size)
    forget, t_imp = _timed(lambda: importance(model, loader, progress=c.progress))
    report, t_damp = _timed(lambda: dampen(model, forget, ctx.full["ssd"], alpha=c.alpha, lam=c.lam))
    return MethodRun(
        model, t_imp + t_damp, measured_seconds=t_imp + t_damp,
        steps={"forget importance": t_imp, "dampen": t_damp}, notes=f"backend {report.backend}, {report.fraction:.3%} selected",
    )


def run_ssd_reference(ctx: Context) -> MethodRun:
    """The pure-PyTorch oracle (ssd_fast.reference), the published algorithm's shape."""
    c = ctx.config
    model = copy.deepcopy(ctx.model)
    loader = make_loader(ctx.splits.forget, c.importance_batch_size)
    forget, t_imp = _timed(lambda: reference.importance(model, loader))
    _, t_damp = _timed(lambda: reference.dampen(model, forget, ctx.full["ssd_reference"], alpha=c.alpha, lam=c.lam))
    return MethodRun(model, t_imp + t_damp, measured_seconds=t_imp + t_damp, steps={"forget importance": t_imp, "dampen": t_damp})


RUNNERS: dict[str, Callable[[Context], MethodRun]] = {
    "baseline": run_baseline,
    "retrain": run_retrain,
    "finetune": run_finetune,
    "fisher": run_fisher,
    "fisher_fast": run_fisher_fast,
    "ssd": run_ssd,
    "ssd_reference": run_ssd_reference,
}


def full_importance(method: str, model: nn.Module, splits: Splits, config: BenchConfig) -> dict:
    """The once-per-model full-data importance each SSD variant dampens against."""
    loader = make_loader(splits.train, config.importance_batch_size)
    if method == "ssd":
        return importance(model, loader, progress=config.progress)
    return reference.importance(model, loader)
