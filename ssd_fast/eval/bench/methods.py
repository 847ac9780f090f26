"""Each benchmarked method, run on a copy of the trained model and timed the same way.

A method's time covers the unlearning step only: copying the model before and scoring
it after are excluded for every method alike. SSD's full-data importance is computed
once after training (cached with the checkpoint), so it is reported as its own step and
not in SSD's per-request time, exactly as the paper's Figure 2 separates it. ssd_tune's
time is a request's: the forget importance and every trial of the search, scoring included.
Each SSD variant's `steps` split its request's wall time into the forget importance, the
dampening (ssd_tune: the search) and "rest" (building the loader, Python between the steps).
On CUDA every timed step ends with a synchronize, so a time is the GPU's, not the launches'.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ... import reference
from ...dampen import AUTO, dampen
from ...importance import importance
from ...tune import tune
from ..baselines import finetune, retrain
from ..baselines.fisher import capped_indices, fisher_diagonal, fisher_noise
from ..data.scenarios import Splits, make_loader
from .config import BenchConfig, per_sample_batch_size
from .tuning import TuneSets


@dataclass
class Context:
    """What every method may use: the trained model, the splits, and the cached full importances."""

    config: BenchConfig
    seed: int
    splits: Splits
    model: nn.Module
    full: dict = field(
        default_factory=dict
    )  # "ssd" (ssd_fast, shared by its variants) or "ssd_reference" -> full importance
    tune_sets: TuneSets | None = None  # held-out evaluation data for ssd_tune


@dataclass
class MethodRun:
    """An unlearned model and its cost. `seconds` is extrapolated when `extrapolated` is True."""

    model: nn.Module
    seconds: float
    extrapolated: bool = False
    measured_seconds: float | None = None
    steps: dict[str, float] = field(default_factory=dict)
    notes: str = ""
    details: dict = field(default_factory=dict)  # method-specific facts for results.json (e.g. tune's choice)


def _sync() -> None:
    # CUDA kernels run asynchronously: without this a step's time would stop at its last launch.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    _sync()
    start = time.perf_counter()
    out = fn()
    _sync()
    return out, time.perf_counter() - start


def _request_steps(total: float, **parts: float) -> dict[str, float]:
    """A request's timing breakdown: its named parts, plus "rest" (the request's wall time not in
    any part: building the loader, deep-copy excluded, Python between the steps)."""
    return {**parts, "rest": max(total - sum(parts.values()), 0.0)}


def run_baseline(ctx: Context) -> MethodRun:
    """The original model, unchanged: the 'before' row."""
    return MethodRun(ctx.model, 0.0, measured_seconds=0.0)


def run_retrain(ctx: Context) -> MethodRun:
    c = ctx.config
    model, seconds = _timed(
        lambda: retrain(
            ctx.model,
            ctx.splits,
            epochs=c.epochs,
            batch_size=c.batch_size,
            lr=c.lr,
            seed=ctx.seed,
            progress=c.progress,
            pin_memory=c.pin(),
        )
    )
    return MethodRun(model, seconds, measured_seconds=seconds)


def run_finetune(ctx: Context) -> MethodRun:
    c = ctx.config
    model, seconds = _timed(
        lambda: finetune(
            ctx.model,
            ctx.splits,
            epochs=c.finetune_epochs,
            batch_size=c.batch_size,
            seed=ctx.seed,
            progress=c.progress,
            pin_memory=c.pin(),
        )
    )
    return MethodRun(model, seconds, measured_seconds=seconds)


def _fisher_run(ctx: Context, diagonal: Callable[[int | None], dict], label: str) -> MethodRun:
    """Time the Fisher estimate (capped) and the noise step; extrapolate a capped estimate linearly."""
    c, splits = ctx.config, ctx.splits
    n_retain = len(splits.retain)
    n_used = len(capped_indices(n_retain, c.fisher_max_samples, ctx.seed))
    fisher, t_fisher = _timed(lambda: diagonal(c.fisher_max_samples))
    model, t_noise = _timed(
        lambda: fisher_noise(
            ctx.model, fisher, num_classes=splits.num_classes, forget_class=splits.forget_class, seed=ctx.seed
        )
    )
    capped = n_used < n_retain
    # The estimate is a loop of identical per-sample steps, so its cost is linear in the samples.
    estimate = t_fisher * n_retain / n_used if capped else t_fisher
    notes = f"{label} on {n_used} of {n_retain} retain samples" + (
        f"; time extrapolated x{n_retain / n_used:.1f}" if capped else ""
    )
    return MethodRun(
        model,
        estimate + t_noise,
        extrapolated=capped,
        measured_seconds=t_fisher + t_noise,
        steps={"fisher diagonal": t_fisher, "noise": t_noise},
        notes=notes,
    )


def run_fisher(ctx: Context) -> MethodRun:
    c = ctx.config
    return _fisher_run(
        ctx,
        lambda cap: fisher_diagonal(ctx.model, ctx.splits.retain, max_samples=cap, seed=ctx.seed, progress=c.progress),
        "bs-1 loop",
    )


def run_fisher_fast(ctx: Context) -> MethodRun:
    from ..baselines.fisher_fast import fisher_diagonal_fast

    c = ctx.config
    return _fisher_run(
        ctx,
        lambda cap: fisher_diagonal_fast(
            ctx.model,
            ctx.splits.retain,
            batch_size=c.importance_batch_size or per_sample_batch_size(c.device),
            max_samples=cap,
            seed=ctx.seed,
            progress=c.progress,
            pin_memory=c.pin(),
        ),
        "per-sample engine",
    )


def _forget_importance(ctx: Context, model: nn.Module):
    """The per-request forget importance, timed; the same mode and batch size as the full one."""
    c = ctx.config
    loader = make_loader(ctx.splits.forget, c.forget_batch_size(), pin_memory=c.pin())
    return _timed(lambda: importance(model, loader, mode=c.importance_mode, progress=c.progress))


def _ssd_at(ctx: Context, alpha: float | str) -> MethodRun:
    """ssd_fast at a given alpha (a number, or "auto" for ASSD): forget importance, then dampen.

    Its time is the whole request's wall time, split into forget importance, dampen and the rest."""
    model = copy.deepcopy(ctx.model)

    def request():
        forget, t_imp = _forget_importance(ctx, model)
        report, t_damp = _timed(lambda: dampen(model, forget, ctx.full["ssd"], alpha=alpha, lam=ctx.config.lam))
        return report, t_imp, t_damp

    (report, t_imp, t_damp), total = _timed(request)
    return MethodRun(
        model,
        total,
        measured_seconds=total,
        steps=_request_steps(total, **{"forget importance": t_imp, "dampen": t_damp}),
        notes=f"alpha {report.alpha:.4g}, backend {report.backend}, {report.fraction:.3%} selected",
    )


def run_ssd(ctx: Context) -> MethodRun:
    """ssd_fast at the configured alpha (the paper's 10 by default) against the cached full importance."""
    return _ssd_at(ctx, ctx.config.alpha)


def run_ssd_auto(ctx: Context) -> MethodRun:
    """ssd_fast with ASSD's automatic alpha (`alpha="auto"`), lambda as configured."""
    return _ssd_at(ctx, AUTO)


def run_ssd_tune(ctx: Context) -> MethodRun:
    """ssd_fast with alpha and lambda chosen by `ssd_fast.tune`, scored on held-out training data.

    Its time is the forget importance plus the whole search: every trial's dampening and scoring.
    """
    c, sets = ctx.config, ctx.tune_sets
    if sets is None:
        raise ValueError("ssd_tune needs held-out training images to score its trials: use --val-per-class > 0")
    model = copy.deepcopy(ctx.model)

    def request():
        forget, t_imp = _forget_importance(ctx, model)
        result, t_tune = _timed(
            lambda: tune(
                model,
                forget,
                ctx.full["ssd"],
                forget_eval=sets.forget_eval,
                retain_eval=sets.retain_eval,
                unseen_eval=sets.unseen_eval,
                eval_limit=c.tune_eval_limit,
                progress=c.progress,
            )
        )
        return result, t_imp, t_tune

    (result, t_imp, t_tune), total = _timed(request)
    chosen = "none (model unchanged)" if result.alpha is None else f"alpha {result.alpha:.4g}, lambda {result.lam:g}"
    if result.first_layer is not None:
        chosen += f" from {result.first_layer} on"
    met = "target met" if result.satisfied else "TARGET NOT MET"
    notes = f"{chosen}; {met} on held-out data; {len(result.trials)} trials, {result.samples_scored} images scored"
    return MethodRun(
        model,
        total,
        measured_seconds=total,
        steps=_request_steps(total, **{"forget importance": t_imp, "tune": t_tune}),
        notes=notes,
        details={
            "alpha": result.alpha,
            "lam": result.lam,
            "trials": len(result.trials),
            "samples_scored": result.samples_scored,
            "satisfied": result.satisfied,
            "first_layer": result.first_layer,
        },
    )


def run_ssd_reference(ctx: Context) -> MethodRun:
    """The pure-PyTorch oracle (ssd_fast.reference), the published algorithm's shape."""
    c = ctx.config
    model = copy.deepcopy(ctx.model)

    def request():
        loader = make_loader(ctx.splits.forget, c.reference_batch_size(), pin_memory=c.pin())
        forget, t_imp = _timed(lambda: reference.importance(model, loader))
        _, t_damp = _timed(lambda: reference.dampen(model, forget, ctx.full["ssd_reference"], alpha=c.alpha, lam=c.lam))
        return t_imp, t_damp

    (t_imp, t_damp), total = _timed(request)
    steps = _request_steps(total, **{"forget importance": t_imp, "dampen": t_damp})
    return MethodRun(model, total, measured_seconds=total, steps=steps)


RUNNERS: dict[str, Callable[[Context], MethodRun]] = {
    "baseline": run_baseline,
    "retrain": run_retrain,
    "finetune": run_finetune,
    "fisher": run_fisher,
    "fisher_fast": run_fisher_fast,
    "ssd": run_ssd,
    "ssd_tune": run_ssd_tune,
    "ssd_auto": run_ssd_auto,
    "ssd_reference": run_ssd_reference,
}
# Which full importance each SSD method dampens against (computed once per model, cached).
FULL_IMPORTANCE_OF = {"ssd": "ssd", "ssd_tune": "ssd", "ssd_auto": "ssd", "ssd_reference": "ssd_reference"}


def full_importance(method: str, model: nn.Module, splits: Splits, config: BenchConfig) -> dict:
    """The once-per-model full-data importance each SSD variant dampens against."""
    if method == "ssd":
        loader = make_loader(splits.train, config.full_batch_size(), pin_memory=config.pin())
        return importance(model, loader, mode=config.importance_mode, progress=config.progress)
    return reference.importance(
        model, make_loader(splits.train, config.reference_batch_size(), pin_memory=config.pin())
    )
