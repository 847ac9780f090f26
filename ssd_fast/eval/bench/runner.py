"""Running the benchmark: for each seed, train (or load) the model, then every method."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..._batches import eval_mode
from ...importances import Importances
from ..data import ImageData, load_dataset, make_loader, make_scenario, split_validation, subsample_test
from ..metrics import evaluate, fraction_changed
from ..models import build_model
from ..training import train
from .checkpoint import Checkpoints, cache_root, checkpoint_key
from .config import BenchConfig
from .methods import FULL_IMPORTANCE_OF, RUNNERS, Context, full_importance
from .tuning import held_out_splits, tune_sets


@dataclass
class BenchResult:
    """What a run produced: one record per method and seed, plus the once-per-model steps."""

    config: BenchConfig
    data_name: str
    forget_name: str
    records: list[dict] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)  # per seed: training and full-importance times


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


def _cpu(seconds: float | None) -> str:
    return "" if seconds is None else f" (CPU {seconds:.2f} s)"


def _log(text: str) -> None:
    print(text, flush=True)


def _labels_key(config: BenchConfig) -> str:
    # "class" and "random" train on the original labels; "subclass" on superclasses.
    return "superclass" if config.scenario == "subclass" else "class"


def _train_model(
    config: BenchConfig, splits, seed: int, data_name: str, in_channels: int
) -> tuple[torch.nn.Module, Checkpoints, float, bool]:
    torch.manual_seed(seed)
    model = build_model(config.model, num_classes=splits.num_classes, in_channels=in_channels).to(config.device)
    key = checkpoint_key(
        data=data_name,
        model=config.model,
        labels=_labels_key(config),
        seed=seed,
        subset=config.train_subset,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        held_out_per_class=config.val_per_class,
    )
    ckpt = Checkpoints(cache_root(config.cache_dir), key, enabled=config.use_cache)
    loader = make_loader(splits.train, config.batch_size, shuffle=True, seed=seed, pin_memory=config.pin())
    model, seconds, cached = ckpt.model(
        model, lambda m: train(m, loader, config.epochs, lr=config.lr, progress=config.progress)
    )
    return model.to(config.device), ckpt, seconds, cached


def _full_importances(ctx: Context, ckpt: Checkpoints) -> dict:
    """Full importances for the SSD variants asked for, cached with the checkpoint; logs their times."""
    times = {}
    c = ctx.config
    needed = {FULL_IMPORTANCE_OF[m] for m in c.methods if m in FULL_IMPORTANCE_OF}
    for method in ("ssd", "ssd_reference"):
        if method not in needed:
            continue
        if method == "ssd":
            name = f"full-ssd-{c.importance_mode}-bs{c.full_batch_size()}"
        else:
            name = f"full-ssd_reference-bs{c.reference_batch_size()}"
        compute = lambda m=method: full_importance(m, ctx.model, ctx.splits, ctx.config)  # noqa: E731
        if method == "ssd":
            name += ".safetensors"
            value, seconds, cached = ckpt.value(
                name, compute, save=lambda v, p: v.save(p), load=lambda p: Importances.load(p)
            )
        else:
            name += ".pt"
            value, seconds, cached = ckpt.value(name, compute)
        ctx.full[method] = value if method == "ssd_reference" else value.to(ctx.config.device)
        times[method] = (seconds, ckpt.cpu_seconds(name), cached)
    return times


def _warm_up(model: torch.nn.Module, splits, device: str) -> None:
    """One untimed forward+backward at batch 64 and at batch 1, so that no method pays the
    one-off costs (allocator, kernel selection) of running first."""
    params = [p for p in model.parameters() if p.requires_grad]
    with eval_mode(model), torch.enable_grad():
        for n in (64, 1):
            x, y = splits.train.tensors[0][:n].to(device), splits.train.tensors[1][:n].to(device)
            torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y), params)


def _record(method: str, seed: int, run, scores: dict, changed: float) -> dict:
    return {
        "method": method,
        "seed": seed,
        **scores,
        "seconds": run.seconds,
        "extrapolated": run.extrapolated,
        "measured_seconds": run.measured_seconds,
        "params_changed": changed,
        "steps": run.steps,
        "notes": run.notes,
        "details": run.details,
    }


def _run_seed(config: BenchConfig, data, held_out, seed: int, result: BenchResult) -> None:
    splits = make_scenario(
        data,
        config.scenario,
        config.forget_target(),
        n_forget=config.n_forget,
        train_subset=config.train_subset,
        seed=seed,
    )
    result.forget_name = splits.forget_name
    if config.scenario != "random":
        # With a test subset, make sure the forgotten (sub)class is still represented.
        if splits.test_forget_mask is not None and not bool(splits.test_forget_mask.any()):
            raise ValueError(f"the test subset has no images of {splits.forget_name}; raise --test-subset")
    _log(
        f"[seed {seed}] {data.name}, {config.scenario} forgetting of {splits.forget_name}: "
        f"train {len(splits.train)}, forget {len(splits.forget)}, retain {len(splits.retain)}, test {len(splits.test)}"
    )
    model, ckpt, train_seconds, cached = _train_model(config, splits, seed, data.name, data.image_shape[0])
    _log(
        f"[seed {seed}] trained {config.model} ({config.epochs} epochs): {train_seconds:.1f} s"
        + (" (measured then; loaded from cache)" if cached else "")
    )
    _warm_up(model, splits, config.device)
    ctx = Context(config=config, seed=seed, splits=splits, model=model)
    if held_out is not None:
        ctx.tune_sets = tune_sets(splits, held_out_splits(data, held_out, config.scenario, config.forget_target()))
    full_times = _full_importances(ctx, ckpt)
    if full_times:
        _log(
            f"[seed {seed}] full-data importance, once per model: "
            + " | ".join(
                f"{m} {s:.2f} s{_cpu(cpu)}" + (" (cached)" if c else "") for m, (s, cpu, c) in full_times.items()
            )
        )
    result.steps.append(
        {
            "seed": seed,
            "train_seconds": train_seconds,
            "train_cached": cached,
            "full_importance_seconds": {m: s for m, (s, _, _) in full_times.items()},
            "full_importance_cpu_seconds": {m: cpu for m, (_, cpu, _) in full_times.items()},
        }
    )
    for method in config.methods:
        torch.manual_seed(seed)
        run = RUNNERS[method](ctx)
        start = time.perf_counter()
        scores = evaluate(run.model, splits)
        changed = fraction_changed(model, run.model)
        result.records.append(_record(method, seed, run, scores, changed))
        steps = ", ".join(f"{k} {v:.3f} s" for k, v in run.steps.items())
        _log(
            f"[seed {seed}] {method:<13} forget {_pct(scores['forget_acc'])}  retain {_pct(scores['retain_acc'])}  "
            f"MIA {_pct(scores['mia'])}  time {run.seconds:9.3f} s{' (extrapolated)' if run.extrapolated else ''}"
            f"{'  [' + steps + ']' if steps else ''}  (scored in {time.perf_counter() - start:.1f} s)"
            f"{'  ' + run.notes if run.notes and method.startswith('ssd') else ''}"
        )


def _hold_out(data, per_class: int):
    """Hold `per_class` training images per class out of training (fixed seed 0, like the test
    subset), for ssd_tune to score on; the same for every seed and method. 0 holds none out."""
    if per_class < 0:
        raise ValueError(f"--val-per-class must be >= 0, got {per_class}")
    if per_class == 0:
        return data, None
    smallest = int(torch.bincount(data.train_y, minlength=data.num_classes).min())
    if per_class > smallest // 5:  # small data (the digits fallback): keep 80% of each class for training
        per_class = max(1, smallest // 5)
        _log(f"holding out {per_class} training images per class for ssd_tune (the data is small)")
    return split_validation(data, per_class, seed=0)


def run_bench(config: BenchConfig, dataset: ImageData | None = None, into: BenchResult | None = None) -> BenchResult:
    """Run every seed and method of `config`; returns the records (writing is separate).

    For a caller running many configs in one process (benchmarks/full_scale.py):
    `dataset` is the data as `load_dataset` returns it (by default loaded from
    `config.data_dir`), and `into` collects the records as they come, so that a run cut
    short (a time limit) keeps the methods it finished."""
    if "ssd_tune" in config.methods and config.val_per_class <= 0:
        raise ValueError("ssd_tune scores its trials on held-out training images: --val-per-class must be > 0")
    previous = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        # The test subset is fixed (seed 0) so that every seed is scored on the same images.
        data = subsample_test(
            dataset if dataset is not None else load_dataset(config.data_dir), config.test_subset, seed=0
        )
        data, held_out = _hold_out(data, config.val_per_class)
        result = into if into is not None else BenchResult(config=config, data_name="", forget_name="")
        result.data_name = data.name
        for seed in range(config.first_seed, config.first_seed + config.seeds):
            _run_seed(config, data, held_out, seed, result)
    finally:
        torch.set_num_threads(previous)  # callers in the same process keep their own setting
    Path(config.out).mkdir(parents=True, exist_ok=True)
    return result
