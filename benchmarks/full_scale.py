"""The full-scale unlearning benchmark (issue 13, item 2): ResNet18 on all of Fashion-MNIST,
the class, sub-class and random scenarios, several seeds, every method, in one device call.

    device:  bash benchmarks/full_scale.sh            (builds if needed, then this with --budget)
    CPU:     python benchmarks/full_scale.py --tiny --out /tmp/full_scale   (digits fallback, ~20 s)

Writes $OUT/full_scale.json (settings, every record with its per-request time breakdown, the
summary) and $OUT/full_scale.md (per scenario: mean ± std over seeds of forget / retain /
test accuracy, MIA and time per request, one column per method; then the breakdown). Both
are rewritten after every unit, so a run killed from outside keeps what it finished.

Stages (--stages): "main", one unit per scenario and seed with every method, and "speed",
the speed variants of issue 13 item 3 on the first seed's class model. Units run
seed-major (seed 0: class, random, subclass; then the speed variants; then seed 1, ...),
so a budget that runs out costs the last seeds, not a scenario. A unit is one
scenario and one seed with every method (`ssd_fast.eval.bench.run_bench`). The class and
random scenarios train on the same labels, so they share one trained model and one full
importance per seed (cached under --cache-dir); sub-class trains its own on the
superclasses. Before a unit starts, its cost is predicted (the last unit of its kind, else
the estimate below) and the unit is skipped if it would not fit in what is left of
--budget; a unit running past --unit-timeout or the budget is cut (SIGALRM), keeping the
methods it finished.

Estimate for the default settings on one H200 (NOT measured: derived from the measured
figures in /work/shared/ANCHORS.md and issue 13: ResNet18 fwd+bwd about 14 ms per batch of
256 (about 18k img/s; 10k img/s at batch 64, launch-bound), batch-mode importance 5.5 s per
50k images at batch 64, SSD's forget importance 0.64 s for 6,000 images, the bs-1 Fisher
loop 59 ms per retain sample over 10 classes, tune 2-10 s per request; evaluation is a
forward pass over test + retain + forget, about 69k images, 1-1.5 s with the MIA fit):

| stage (per seed) | pieces (seconds) | seconds |
|---|---|---|
| class (T-shirt/top) | train 55k images x 2 epochs at batch 128 (8), full importance (6.5), retrain (8), finetune 2 epochs (7), fisher on 100 samples (6), fisher_fast (0.5), ssd + ssd_auto (1.4), ssd_tune (0.7 + 2-10), 8 evaluations (12) | ~60 |
| random (100 samples) | model and full importance cached by class; retrain (8.5), finetune (7.5), fisher (6), ssd + ssd_auto (0.1), ssd_tune (~250 trials at 30-40 a second: 8), 8 evaluations (12) | ~45 |
| subclass (Sneaker) | as class, on 5 superclasses (fisher 3) | ~55 |
| speed variants (seed 0 only) | class model, ssd + ssd_auto and their evaluations (3 each): unpinned loaders (~5); batch mode at 256, full importance at ~18k img/s (3) plus 2 x 0.35 (~7); per_sample at batch 256, full importance at ~3.5k img/s (16) plus 2 x 1.7 (~25) | ~40 |

So about 160 s a seed and about 520 s for 3 seeds with the speed variants, plus about 15 s
to start (imports, CUDA, data); `--dry-run` prints this plan against --budget.
full_scale.sh gives this script what is left of 540 s after the build (about 40 s): a
budget of about 490 s. If the estimate is right, seed 2's sub-class unit is skipped; the
report says which, and the budget adapts to the measured cost of each kind of unit. Left out of the default to fit: the paper's 5 finetune epochs (about
10 s more a unit, 95 s for 3 seeds) and ssd_reference (the same unlearning as ssd, at the
published code's speed: about 11 s a model for its full importance plus 2.5 s a unit).
Run them in a second call (--methods, --seeds, --first-seed), not the first.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `ssd_fast` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.full_scale_report import write  # noqa: E402
from ssd_fast.eval.bench import METHODS, BenchConfig, run_bench  # noqa: E402
from ssd_fast.eval.bench.runner import BenchResult  # noqa: E402
from ssd_fast.eval.data import SCENARIOS, load_dataset  # noqa: E402

# What a default full-scale run uses; --tiny swaps in the second set (small CNN, tiny data).
FULL = dict(
    model="resnet18",
    train_subset=None,
    test_subset=None,
    epochs=2,
    batch_size=128,
    finetune_epochs=2,
    val_per_class=500,
    tune_eval_limit=2000,
    fisher_max_samples=100,
    threads=0,
)
TINY = dict(
    model="cnn",
    train_subset=300,
    test_subset=200,
    epochs=1,
    batch_size=64,
    finetune_epochs=1,
    val_per_class=10,
    tune_eval_limit=200,
    fisher_max_samples=3,
    threads=1,
)
# Run order: cheapest and most wanted first, so that a unit cut by its time limit keeps the
# SSD rows; retraining and finetuning, the costliest, come last. ssd_reference is left out
# (see the module docstring). The report orders its columns as METHODS does.
DEFAULT_METHODS = ("baseline", "ssd", "ssd_auto", "ssd_tune", "fisher_fast", "fisher", "retrain", "finetune")
STAGES = ("main", "speed")
SCENARIO_ORDER = ("class", "random", "subclass")  # random reuses class's cached model right after it
# The speed variants of issue 13 item 3, run on seed 0's class model with the SSD methods only.
# batch256: batch mode at a batch the GPU is not launch-bound at (a different estimate, so alpha
# 10 means something else; ssd_auto picks its own); per_sample: the same estimate at any batch.
SPEED_VARIANTS = {
    "unpinned": {"pin_memory": False},
    "batch256": {"importance_batch_size": 256},
    "per_sample": {"importance_mode": "per_sample"},
}
SPEED_METHODS = ("ssd", "ssd_auto")
# Predicted seconds per unit on an H200 before one of its kind has run (the table above).
ESTIMATE_H200 = {"class": 60, "random": 45, "subclass": 55, "unpinned": 5, "batch256": 10, "per_sample": 25}


class UnitTimeout(Exception):
    """A unit ran past its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise UnitTimeout in the main thread after `seconds` (no limit: None or no SIGALRM)."""
    if seconds is None or not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum, frame):
        raise UnitTimeout(f"cut after {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def plan(scenarios: list[str], seeds: list[int], stages: list[str]) -> list[dict]:
    """The units in run order: seed-major, the speed variants after the first seed."""
    ordered = [s for s in SCENARIO_ORDER if s in scenarios] if "main" in stages else []
    units = []
    for i, seed in enumerate(seeds):
        units += [{"scenario": s, "seed": seed, "variant": ""} for s in ordered]
        if i == 0 and "speed" in stages:
            units += [{"scenario": "class", "seed": seed, "variant": v} for v in SPEED_VARIANTS]
    return units


def unit_config(args: argparse.Namespace, unit: dict, out: str) -> BenchConfig:
    """The BenchConfig of one unit: the preset, the flags, and the variant's changes."""
    preset = TINY if args.tiny else FULL
    config = BenchConfig(
        scenario=unit["scenario"],
        n_forget=args.n_forget,
        seeds=1,
        first_seed=unit["seed"],
        methods=tuple(args.methods),
        out=out,
        data_dir=args.data_dir,
        cache_dir=args.cache_dir,
        device=args.device,
        progress=False,
        importance_batch_size=args.importance_batch_size,
        **preset,
    )
    if unit["variant"]:
        config = replace(config, methods=SPEED_METHODS, **SPEED_VARIANTS[unit["variant"]])
    return config


def device_name(device: str) -> str:
    """The card's name on CUDA; the processor and core count otherwise."""
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def run_unit(args: argparse.Namespace, unit: dict, dataset, limit: float | None, tmp: str) -> dict:
    """One unit under a time limit; its records, once-per-model steps, status and duration."""
    config = unit_config(args, unit, tmp)
    collected = BenchResult(config=config, data_name="", forget_name="")
    start = time.perf_counter()
    status = "done"
    try:
        with time_limit(limit):
            run_bench(config, dataset, into=collected)
    except UnitTimeout as err:
        status = f"{err}; kept the {len(collected.records)} method(s) it finished"
    except Exception as err:  # one broken unit must not lose the others: report it and go on
        traceback.print_exc()
        status = f"failed: {type(err).__name__}: {err}; kept {len(collected.records)} method(s)"
    return {
        **unit,
        "status": status,
        "seconds": time.perf_counter() - start,
        "forget_name": collected.forget_name,
        "data": collected.data_name,
        "records": collected.records,
        "steps": collected.steps,
    }


def predicted_cost(unit: dict, history: dict[str, float], estimates: dict[str, float]) -> float:
    key = unit["variant"] or unit["scenario"]
    return history.get(key, estimates.get(key, 0.0))


def settings(args: argparse.Namespace) -> dict:
    preset = TINY if args.tiny else FULL
    return {
        **preset,
        "seeds": args.seeds,
        "first_seed": args.first_seed,
        "scenarios": args.scenarios,
        "methods": list(args.methods),
        "n_forget": args.n_forget,
        "alpha": BenchConfig.alpha,
        "lam": BenchConfig.lam,
        "importance_mode": "batch",
        "importance_batch_size": args.importance_batch_size,
        "tiny": args.tiny,
        "stages": args.stages,
    }


def load(args: argparse.Namespace):
    """Fashion-MNIST; only --tiny may fall back to the digits (a full-scale table on them would mislead)."""
    return load_dataset(args.data_dir, fallback=args.tiny)


def dry_run(args: argparse.Namespace) -> list[dict]:
    """The plan with each unit's predicted H200 seconds and whether it fits the budget (runs nothing)."""
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    total, rows = 0.0, []
    for unit in plan(args.scenarios, seeds, args.stages):
        cost = predicted_cost(unit, {}, ESTIMATE_H200)
        fits = total + cost <= args.budget
        total += cost if fits else 0.0
        rows.append({**unit, "predicted": cost, "fits": fits})
        variant = f" ({unit['variant']})" if unit["variant"] else ""
        print(
            f"seed {unit['seed']} {unit['scenario']}{variant}: ~{cost:.0f} s, "
            + (f"total ~{total:.0f} s" if fits else "SKIPPED")
        )
    return rows


def main(argv: list[str] | None = None) -> dict:
    """Run the planned units within the budget; write and return the collected run."""
    args = parse_args(argv)
    if args.dry_run:
        return {"plan": dry_run(args)}
    start = time.perf_counter()
    dataset = load(args)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    estimates = {} if args.tiny else ESTIMATE_H200
    run = {
        "device": device_name(args.device),
        "torch": torch.__version__,
        "data": dataset.name,
        "budget": args.budget,
        "settings": settings(args),
        "units": [],
        "skipped": [],
        "forget_names": {},
        "elapsed": 0.0,
    }
    history: dict[str, float] = {}
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        for unit in plan(args.scenarios, seeds, args.stages):
            left = args.budget - (time.perf_counter() - start)
            cost = predicted_cost(unit, history, estimates)
            if cost > left:
                run["skipped"].append({**unit, "why": f"predicted {cost:.0f} s, {left:.0f} s of the budget left"})
                print(f"== skip {unit}: predicted {cost:.0f} s > {left:.0f} s left", flush=True)
                continue
            print(f"== unit {unit} ({left:.0f} s of the budget left)", flush=True)
            done = run_unit(args, unit, dataset, min(args.unit_timeout, left), tmp)
            history[unit["variant"] or unit["scenario"]] = done["seconds"]
            run["units"].append(done)
            if not unit["variant"] and done["forget_name"]:
                run["forget_names"][unit["scenario"]] = done["forget_name"]
            run["elapsed"] = time.perf_counter() - start
            paths = write(run, out)
            print(f"== {done['status']} in {done['seconds']:.1f} s; wrote {paths['table']}", flush=True)
    run["elapsed"] = time.perf_counter() - start
    paths = write(run, out)
    print("\n" + paths["table"].read_text())
    print(f"wrote {paths['json']} and {paths['table']} ({run['elapsed']:.0f} s)")
    return run


def _list(choices: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        names = [t.strip() for t in text.split(",") if t.strip()]
        unknown = [n for n in names if n not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {', '.join(choices)}")
        return names

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--tiny", action="store_true", help="small CNN on tiny data (CPU smoke run; digits if no Fashion-MNIST)"
    )
    p.add_argument("--out", default=os.environ.get("OUT", "runs/full_scale"), help="output folder (default: $OUT)")
    p.add_argument("--data-dir", default=None, help="folder with the four Fashion-MNIST .gz files")
    p.add_argument("--cache-dir", default=None, help="trained models and full importances (default: .cache/ssd_fast)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--scenarios", type=_list(SCENARIOS), default=list(SCENARIO_ORDER), help="comma list")
    p.add_argument("--methods", type=_list(METHODS), default=list(DEFAULT_METHODS), help="comma list")
    p.add_argument("--n-forget", type=int, default=100, help="random scenario: samples forgotten (default 100)")
    p.add_argument(
        "--importance-batch-size", type=int, default=None, help="batch mode's batch size (default: the published 64)"
    )
    p.add_argument(
        "--stages",
        type=_list(STAGES),
        default=list(STAGES),
        help="main: every scenario and method per seed; speed: the speed variants on the first seed (default: both)",
    )
    p.add_argument("--budget", type=float, default=480.0, help="seconds for the whole run (default 480)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and its H200 estimate; run nothing")
    p.add_argument("--unit-timeout", type=float, default=200.0, help="seconds one unit may take (default 200)")
    return p.parse_args(argv)


if __name__ == "__main__":
    main()
