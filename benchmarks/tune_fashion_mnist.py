"""Per-class full-class forgetting on Fashion-MNIST: ssd_fast.tune vs fixed alpha 10 vs alpha="auto".

    .venv/bin/python benchmarks/tune_fashion_mnist.py [--classes 0 1 ...] [--json out.json]

The model is the small CNN trained as the main job trains it (ssd_fast.eval.models, 2
epochs, Adam 1e-3, batch 64; cached after the first run), but with `--holdout` images
per class (default 600) kept out of training: a validation slice of the TRAINING data.
The full importance is batch mode at batch size 64 on every image the model trained on,
computed once and shared by every deletion request; the forget set is every trained-on
image of the class. For each class, tune scores its trials on the validation slice only
(500 images of the class, 2,000 of the others); the test set is used only afterwards,
to judge: forget accuracy = test accuracy on the class, retain accuracy = test accuracy
on the other nine. "ok" means forget <= 5% and retain at most 2 points below the
original model's. `--holdout 0` trains on all 60k and scores tune on trained-on images
instead, which misleads it (see ssd_fast/eval/data/validation.py). `--label-free` uses
LFSSD importances (the gradient of the squared output norm, no labels) for D and Df, and
so for tune, alpha 10 and auto alike. Times are on whatever machine runs it (print shows it).

Cost: `tune`'s wall time is also given in full scoring passes: one pass is the forward of
the model over both evaluation sets (the fastest of 5, measured in the same process), so
the figure compares across machines and loads. `--old-search C ...` also runs, on those
classes, the search as it was before issue 22 (every grid point scored, bisection six
rounds deep; its code is read from git, commit `OLD_SEARCH_COMMIT`), on the same model and
importances, one after the other in the same process.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import types

import torch
from torch.utils.data import DataLoader, TensorDataset

import ssd_fast
from ssd_fast.eval.data import load_fashion_mnist, split_validation
from ssd_fast.eval.models import build_model
from ssd_fast.eval.training import train

# The module's function, whether or not ssd_fast/__init__ exports `tune` yet.
tune_fn = importlib.import_module("ssd_fast.tune._search").tune

OLD_SEARCH_COMMIT = "549ee11"  # the last commit before issue 22's search
_OLD_FILES = (
    "__init__.py",
    "_search.py",
    "_alpha_grid.py",
    "_evaluation.py",
    "_target.py",
    "_layer_starts.py",
    "_mia.py",
)


def old_tune_fn():
    """The pre-issue-22 `tune`, loaded from git as the package `ssd_fast._tune_before_22`
    (relative imports resolve by package name, so it uses today's core)."""
    name = "ssd_fast._tune_before_22"
    if name in sys.modules:
        return sys.modules[name + "._search"].tune
    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True)
    folder = tempfile.mkdtemp(prefix="tune_before_22_")
    for f in _OLD_FILES:
        text = subprocess.run(
            ["git", "show", f"{OLD_SEARCH_COMMIT}:ssd_fast/tune/{f}"],
            capture_output=True,
            text=True,
            check=True,
            cwd=root.stdout.strip(),
        ).stdout
        with open(os.path.join(folder, f), "w") as fh:
            fh.write(text)
    package = types.ModuleType(name)
    package.__path__ = [folder]
    sys.modules[name] = package
    return importlib.import_module(name + "._search").tune


@torch.no_grad()
def scoring_pass_seconds(model, loaders, repeats: int = 5) -> float:
    """One full scoring pass: the model's forward over every batch of `loaders`; the fastest of `repeats`."""
    model.eval()
    batches = [(x, y) for loader in loaders for x, y in loader]
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for x, _ in batches:
            model(x).argmax(1)
        best = min(best, time.perf_counter() - t0)
    return best


def _loader(x: torch.Tensor, y: torch.Tensor, batch_size: int = 64, shuffle: bool = False, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=g)


def _trained_model(
    x: torch.Tensor, y: torch.Tensor, cache: str, epochs: int, batch_size: int, seed: int
) -> torch.nn.Module:
    """The CNN trained on (x, y) as the main job trains it, or loaded from `cache`."""
    torch.manual_seed(seed)
    model = build_model("cnn", num_classes=10, in_channels=1)
    if os.path.isfile(cache):
        model.load_state_dict(torch.load(cache, weights_only=True))
        return model.eval()
    train(model, _loader(x, y, batch_size, shuffle=True, seed=seed), epochs, progress=False)
    torch.save(model.state_dict(), cache)
    return model.eval()


def _cache_stem(args: argparse.Namespace) -> str:
    """The cache files' common prefix: a cache belongs to one training setting."""
    return f"{args.cache}_e{args.epochs}_bs{args.batch_size}_h{args.holdout}_s{args.seed}"


def _full_importance(model, data, stem: str, label_free: bool) -> ssd_fast.Importances:
    """The full importance on every trained-on image (batch 64), computed once per cache stem."""
    path = stem + ("_full_importance_lf" if label_free else "_full_importance") + ".safetensors"
    if os.path.isfile(path):
        return ssd_fast.Importances.load(path, model=model)
    t0 = time.perf_counter()
    full_imp = ssd_fast.importance(model, _loader(data.train_x, data.train_y), label_free=label_free, progress=False)
    print(f"full importance ({len(data.train_y)} images, bs 64): {time.perf_counter() - t0:.1f} s")
    full_imp.save(path)
    return full_imp


@torch.no_grad()
def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in _loader(x, y, 1000))
    return correct / len(y)


def _test_scores(model, data, cls: int) -> tuple[float, float]:
    keep = data.test_y == cls
    return _accuracy(model, data.test_x[keep], data.test_y[keep]), _accuracy(
        model, data.test_x[~keep], data.test_y[~keep]
    )


def _eval_subsets(
    pool: TensorDataset, cls: int, n_forget: int, n_retain: int, seed: int
) -> tuple[DataLoader, DataLoader]:
    """Random subsets of `pool` (training data: held out, or trained on): the class, and the others."""
    x, y = pool.tensors
    g = torch.Generator().manual_seed(seed + cls)
    forget_idx = torch.nonzero(y == cls).flatten()
    retain_idx = torch.nonzero(y != cls).flatten()
    forget_idx = forget_idx[torch.randperm(len(forget_idx), generator=g)[:n_forget]]
    retain_idx = retain_idx[torch.randperm(len(retain_idx), generator=g)[:n_retain]]

    def sub(idx):
        return _loader(x[idx], y[idx], 500)

    return sub(forget_idx), sub(retain_idx)


def run_class(model, data, eval_pool: TensorDataset, full_imp, cls: int, args) -> dict:
    keep = data.train_y == cls
    t0 = time.perf_counter()
    forget_imp = ssd_fast.importance(
        model, _loader(data.train_x[keep], data.train_y[keep]), label_free=args.label_free, progress=False
    )
    forget_seconds = time.perf_counter() - t0
    row = {"class": cls, "name": data.classes[cls], "forget_importance_s": forget_seconds}
    row["original_forget"], row["original_retain"] = _test_scores(model, data, cls)

    tuned = copy.deepcopy(model)
    forget_eval, retain_eval = _eval_subsets(eval_pool, cls, args.forget_eval, args.retain_eval, args.seed)
    pass_s = scoring_pass_seconds(model, (forget_eval, retain_eval))
    eval_size = sum(len(y) for loader in (forget_eval, retain_eval) for _, y in loader)
    row["pass_s"], row["eval_size"] = pass_s, eval_size
    result = tune_fn(
        tuned,
        forget_imp,
        full_imp,
        forget_eval=forget_eval,
        retain_eval=retain_eval,
        max_retain_drop=args.max_retain_drop,
        progress=False,
    )
    f, r = _test_scores(tuned, data, cls)
    if cls in args.old_search:
        old = copy.deepcopy(model)
        old_result = old_tune_fn()(
            old,
            forget_imp,
            full_imp,
            forget_eval=forget_eval,
            retain_eval=retain_eval,
            max_retain_drop=args.max_retain_drop,
        )
        of, orr = _test_scores(old, data, cls)
        row["old"] = {
            "forget": of,
            "retain": orr,
            "alpha": old_result.alpha,
            "lam": old_result.lam,
            "trials": len(old_result.trials),
            "seconds": old_result.seconds,
            "passes": old_result.seconds / pass_s,
            "first_layer": old_result.first_layer,
            "ok": of <= 0.05 and orr >= row["original_retain"] - 0.02,
        }
    row["tune"] = {
        "forget": f,
        "retain": r,
        "alpha": result.alpha,
        "lam": result.lam,
        "trials": len(result.trials),
        "seconds": result.seconds,
        "trials_per_s": result.trials_per_second,
        "satisfied": result.satisfied,
        "eval_forget": result.forget_acc,
        "eval_retain": result.retain_acc,
        "first_layer": result.first_layer,
        "timing": dict(result.timing),
        "samples": result.samples_scored,
        "passes": result.seconds / pass_s,
        "sample_passes": result.samples_scored / eval_size,
        "cached_batches": result.cached_batches,
    }

    for key, alpha in (("alpha10", 10.0), ("auto", "auto")) if args.fixed else ():
        m = copy.deepcopy(model)
        t0 = time.perf_counter()
        report = ssd_fast.dampen(m, forget_imp, full_imp, alpha=alpha, lam=1.0)
        seconds = time.perf_counter() - t0
        f, r = _test_scores(m, data, cls)
        row[key] = {"forget": f, "retain": r, "alpha": report.alpha, "lam": 1.0, "trials": 1, "seconds": seconds}
    for key in ("tune", "alpha10", "auto") if args.fixed else ("tune",):
        cell = row[key]
        cell["ok"] = cell["forget"] <= 0.05 and cell["retain"] >= row["original_retain"] - 0.02
    return row


def _fmt(cell: dict) -> str:
    lam = "-" if cell["lam"] is None else f"{cell['lam']:g}"
    alpha = "-" if cell["alpha"] is None else f"{cell['alpha']:.3g}"
    if cell.get("first_layer"):  # tune's later-layers fallback
        lam += f" from {cell['first_layer']}"
    return (
        f"{100 * cell['forget']:.1f} / {100 * cell['retain']:.1f} | {alpha}, {lam} | {cell['trials']} | "
        f"{cell['seconds']:.2f} | {'yes' if cell['ok'] else 'no'}"
    )


def print_table(rows: list[dict]) -> None:
    head = "forget / retain | alpha, lambda | trials | s | ok"
    keys = [k for k in ("tune", "old", "alpha10", "auto") if all(k in r for r in rows)]
    print("| class | orig retain | " + " | ".join(f"{k}: {head}" for k in keys) + " |")
    print("|" + "---|" * (2 + 5 * len(keys)))
    for row in rows:
        print(
            f"| {row['class']} {row['name']} | {100 * row['original_retain']:.1f} | "
            + " | ".join(_fmt(row[k]) for k in keys)
            + " |"
        )
    for key in keys:
        print(
            f"{key}: {sum(r[key]['ok'] for r in rows)}/{len(rows)} classes forgotten (forget <= 5%, retain drop <= 2 pts)"
        )
    trials = sum(r["tune"]["trials"] for r in rows)
    seconds = sum(r["tune"]["seconds"] for r in rows)
    print(
        f"tune: {trials} trials in {seconds:.1f} s = {trials / seconds:.1f} trials/s "
        f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"kernel built: {ssd_fast._ops.is_built()})"
    )
    split = {k: sum(r["tune"]["timing"].get(k, 0.0) for r in rows) for k in ("apply", "restore", "score")}
    print(
        "tune time split: "
        + ", ".join(f"{k} {v:.2f} s ({100 * v / seconds:.0f}%)" for k, v in split.items())
        + f"; per trial: apply {1e3 * split['apply'] / trials:.2f} ms, restore {1e3 * split['restore'] / trials:.2f} ms"
    )


def print_cost(rows: list[dict]) -> None:
    """tune's cost per class: trials, samples scored, wall time in full scoring passes; the old search's beside it."""
    print("| class | trials | samples scored (passes) | wall time, passes | old search: trials | old: passes | ratio |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        t, o = row["tune"], row.get("old")
        old = f"{o['trials']} | {o['passes']:.1f} | {o['passes'] / t['passes']:.1f}x" if o else "- | - | -"
        print(
            f"| {row['class']} {row['name']} | {t['trials']} | {t['samples']} ({t['sample_passes']:.1f}) | "
            f"{t['passes']:.1f} | {old} |"
        )
    print(
        f"one pass = forward over {rows[0]['eval_size']} images, {1e3 * min(r['pass_s'] for r in rows):.0f}-"
        f"{1e3 * max(r['pass_s'] for r in rows):.0f} ms (fastest of 5, per class); most passes: "
        f"{max(r['tune']['passes'] for r in rows):.1f}"
    )


def _reached_aim(cell: dict, tolerance: float = 0.01) -> bool:
    """tune met its target within `tolerance` of the aim (0 for a class), on held-out data only."""
    return cell["satisfied"] and cell["eval_forget"] <= tolerance


def _preferred(loss: dict, label_free: dict) -> tuple[str, dict]:
    """The recipe for a class that resists: tune on the loss's importances; only when that
    falls short of the aim, tune again on LFSSD importances and keep the better result by
    tune's own rule (target met, then nearer the aim, then retain), judged on held-out data."""
    if _reached_aim(loss):
        return "loss", loss
    key = {
        name: (c["satisfied"], -c["eval_forget"], c["eval_retain"]) for name, c in (("loss", loss), ("lf", label_free))
    }
    name = max(key, key=key.get)
    return name, loss if name == "loss" else label_free


def combine(loss_path: str, label_free_path: str) -> None:
    """Apply `_preferred` per class to a loss run and a --label-free run on the same model.

    The --label-free run needs only the classes where the loss run fell short of the aim."""
    with open(loss_path) as fh:
        loss_rows = {r["class"]: r for r in json.load(fh)}
    with open(label_free_path) as fh:
        lf_rows = {r["class"]: r for r in json.load(fh)}
    ok = 0
    print("| class | orig retain | loss: test forget / retain | LFSSD: test forget / retain | used | ok |")
    print("|---|---|---|---|---|---|")
    for cls, row in sorted(loss_rows.items()):
        lo, lf = row["tune"], lf_rows.get(cls, {}).get("tune")
        if lf is None and not _reached_aim(lo):
            raise SystemExit(f"class {cls}: the loss run fell short of the aim, and {label_free_path} lacks it")
        used, cell = _preferred(lo, lf) if lf is not None else ("loss", lo)
        ok += cell["ok"]
        cells = [
            "-" if c is None else f"{100 * c['forget']:.1f} / {100 * c['retain']:.1f} {'ok' if c['ok'] else 'no'}"
            for c in (lo, lf)
        ]
        print(
            f"| {cls} {row['name']} | {100 * row['original_retain']:.1f} | {cells[0]} | {cells[1]} | {used} | "
            f"{'ok' if cell['ok'] else 'no'} |"
        )
    print(f"loss, then LFSSD where the loss falls short of the aim: {ok}/{len(loss_rows)} classes")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, nargs="*", default=list(range(10)))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64, help="training batch size (the main job's)")
    p.add_argument(
        "--holdout",
        type=int,
        default=600,
        help="training images per class kept out of training, for tune to score on (0: score on trained-on images)",
    )
    p.add_argument("--forget-eval", type=int, default=600, help="held-out images of the class tune scores on")
    p.add_argument("--retain-eval", type=int, default=2000, help="held-out images of the other classes tune scores on")
    p.add_argument("--max-retain-drop", type=float, default=0.02)
    p.add_argument(
        "--label-free",
        action="store_true",
        help="LFSSD importances (|grad| of the squared output norm) for both D and Df, instead of the loss's",
    )
    p.add_argument(
        "--old-search", type=int, nargs="*", default=[], help="classes to also run the pre-issue-22 search on"
    )
    p.add_argument(
        "--no-fixed", dest="fixed", action="store_false", help="skip the fixed alpha 10 and alpha='auto' rows"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: as the issue measured)")
    p.add_argument("--cache", default="/tmp/ssd_fast_fmnist_cnn")
    p.add_argument("--json", default=None)
    p.add_argument(
        "--combine",
        nargs=2,
        metavar=("LOSS_JSON", "LFSSD_JSON"),
        help="no run: per class, keep the loss run's tune result, or the --label-free run's where the loss "
        "fell short of the aim on held-out data (both runs on the same cached model)",
    )
    args = p.parse_args()
    if args.combine:
        combine(*args.combine)
        return

    torch.set_num_threads(args.threads)
    data, held_out = split_validation(load_fashion_mnist(), args.holdout, seed=args.seed)
    eval_pool = held_out if args.holdout else TensorDataset(data.train_x, data.train_y)
    stem = _cache_stem(args)
    model = _trained_model(data.train_x, data.train_y, stem + ".pt", args.epochs, args.batch_size, args.seed)
    print(
        f"model: {len(data.train_y)} training images, test accuracy {100 * _accuracy(model, data.test_x, data.test_y):.1f}%; "
        f"tune scores on {'held-out' if args.holdout else 'trained-on'} training images"
    )
    full_imp = _full_importance(model, data, stem, args.label_free)
    rows = []
    for cls in args.classes:
        rows.append(run_class(model, data, eval_pool, full_imp, cls, args))
        t = rows[-1]["tune"]
        print(
            f"class {cls}: tune alpha={t['alpha']} lam={t['lam']} from={t['first_layer']} test forget {100 * t['forget']:.1f} "
            f"retain {100 * t['retain']:.1f} ({t['trials']} trials, {t['samples']} samples, {t['seconds']:.1f} s "
            f"= {t['passes']:.1f} passes of {rows[-1]['pass_s']:.3f} s)"
            + (
                f"; old search: {o['trials']} trials, {o['seconds']:.1f} s = {o['passes']:.1f} passes, test forget "
                f"{100 * o['forget']:.1f} retain {100 * o['retain']:.1f}"
                if (o := rows[-1].get("old"))
                else ""
            ),
            flush=True,
        )
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(rows, fh, indent=1)
    print_table(rows)
    print_cost(rows)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
