"""SUPREME's SSD family: its own implementation against ssd_fast behind its names, side by side.

One process, one run: for each method (ssd, lfssd, ssd_det, lfssd_det, assd), SUPREME's
own function and the one `ssd_fast.integrations.supreme.register()` puts behind that
name are called the way SUPREME's unlearn_main calls them (single-device Lightning
Fabric, the model wrapped by Fabric, loaders of (x, coarse label, y) batches), each on
a fresh copy of the same model. Each call is the whole method: importance of Df, then
of D, then the dampening. Reported: seconds for each, the speed-up, seconds per sample
read (|Df| + |D|), and how far the two dampened models are apart (identical, or the
largest absolute weight difference). The order of the two calls alternates by method.

Data: the first --n Fashion-MNIST training images (scikit-learn's digits where it is
missing), Df = one class among them; model: the harness's SmallCNN, freshly initialised
(the cost does not depend on the weights; the comparison of weights holds for any).

    python benchmarks/bench_supreme.py                      # 3,000 samples, CPU, about a minute
    python benchmarks/bench_supreme.py --n 1000 --json $OUT/supreme.json
Needs supreme-unlearning (pip install --no-deps supreme-unlearning==0.1.5) and lightning.
Not part of CI.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import sys
import time
import types

import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ssd_fast.integrations.supreme as ours  # noqa: E402
from ssd_fast.eval.data.datasets import load_dataset  # noqa: E402
from ssd_fast.eval.models import build_model  # noqa: E402

METHODS = tuple(ours.METHODS)


def _supreme_own(name: str):
    try:
        import wandb  # noqa: F401
    except ImportError:  # SUPREME imports it, and uses it only when logging is on
        stub = types.ModuleType("wandb")
        stub.config = types.SimpleNamespace(update=lambda *a, **k: None)
        sys.modules["wandb"] = stub
    return getattr(importlib.import_module(f"supreme.methods.unlearning_methods.{name}"), name)


def _loaders(n: int, forget_class: int, batch_size: int) -> tuple[DataLoader, DataLoader, str]:
    data = load_dataset()
    x, y = data.train_x[:n], data.train_y[:n]
    coarse = y // 2
    keep = y == forget_class
    forget = DataLoader(TensorDataset(x[keep], coarse[keep], y[keep]), batch_size=batch_size)
    full = DataLoader(TensorDataset(x, coarse, y), batch_size=batch_size)
    return forget, full, data.name


def _call(method, fabric, model, forget, full, alpha: float, lam: float) -> tuple[float, dict]:
    wrapped = fabric.setup_module(model)
    start = time.perf_counter()
    method(
        fabric=fabric,
        num_gpus=1,
        wandb_logging_flag=False,
        model=wrapped,
        forget_train_dataloader=forget,
        full_train_dataloader=full,
        dampening_constant=lam,
        selection_weighting=alpha,
        distributed_strategy_name="ddp",
    )
    seconds = time.perf_counter() - start
    return seconds, {k: v.detach().clone() for k, v in model.state_dict().items()}


def _apart(a: dict, b: dict) -> tuple[bool, float]:
    identical = all(torch.equal(a[k], b[k]) for k in a)
    return identical, max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].is_floating_point())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=3000, help="training samples in D (default 3000)")
    parser.add_argument("--forget-class", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--alpha", type=float, default=10.0)
    parser.add_argument("--lam", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", default=None, help="write the rows here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import lightning as L

    fabric = L.Fabric(accelerator="cpu", devices=1)
    fabric.launch()
    forget, full, data_name = _loaders(args.n, args.forget_class, args.batch_size)
    n_read = len(forget.dataset) + len(full.dataset)
    torch.manual_seed(0)
    base = build_model("cnn", num_classes=10, in_channels=1).eval()
    ours.register(progress=False)
    print(
        f"{data_name}: |D| = {len(full.dataset)}, |Df| = {len(forget.dataset)}, batch {args.batch_size}, "
        f"SmallCNN, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(
        f"{'method':<10} {'SUPREME s':>10} {'ssd_fast s':>11} {'speed-up':>9} {'SUPREME us/sample':>18} "
        f"{'ssd_fast us/sample':>19}  weights"
    )
    rows = []
    for i, name in enumerate(args.methods.split(",")):
        if name not in METHODS:
            raise SystemExit(f"--methods: {name!r} is not one of {METHODS}")
        runs = [("supreme", _supreme_own(name)), ("ssd_fast", getattr(ours, name))]
        if i % 2:
            runs.reverse()
        result = {}
        for who, method in runs:
            result[who] = _call(method, fabric, copy.deepcopy(base), forget, full, args.alpha, args.lam)
        (t_sup, w_sup), (t_ours, w_ours) = result["supreme"], result["ssd_fast"]
        identical, max_diff = _apart(w_sup, w_ours)
        row = {
            "method": name,
            "supreme_s": t_sup,
            "ssd_fast_s": t_ours,
            "speedup": t_sup / t_ours,
            "supreme_us_per_sample": 1e6 * t_sup / n_read,
            "ssd_fast_us_per_sample": 1e6 * t_ours / n_read,
            "identical": identical,
            "max_abs_weight_diff": max_diff,
        }
        rows.append(row)
        apart = "identical" if identical else f"max |diff| {max_diff:.1e}"
        print(
            f"{name:<10} {t_sup:>10.2f} {t_ours:>11.2f} {row['speedup']:>8.1f}x "
            f"{row['supreme_us_per_sample']:>18.0f} {row['ssd_fast_us_per_sample']:>19.0f}  {apart}"
        )
    if args.json:
        meta = {
            "data": data_name,
            "n_full": len(full.dataset),
            "n_forget": len(forget.dataset),
            "batch_size": args.batch_size,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        }
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
