"""Per-sample importance on timm models: its cost against one plain forward+backward, side by side.

For each model (built from timm's config, pretrained=False: no download), in one process
and on one synthetic batch:
- plain:      one forward + backward of the batch-mean cross-entropy, parameter
              gradients included (the cost floor: what a training step's gradient costs);
- per_sample: one batch through ssd_fast's PerSampleAccumulator (sum over samples of the
              squared per-sample gradients of every parameter), after a first untimed
              batch that runs the one-off checks (the use trace; see per_sample/_coverage).
The two alternate, run after run, so that load from other processes on a shared machine
falls on both alike; the table gives the median of each and the ratio of the medians.
It also prints what, if anything, would run under vmap (ssd_fast.per_sample.coverage)
and the first batch's extra cost. --profile prints the per_sample run's top ops.

    python benchmarks/bench_per_sample_timm.py                          # vit_tiny, convnext_atto, batch 32, 224px
    python benchmarks/bench_per_sample_timm.py --models efficientnet_b0,resnet18,deit_tiny_patch16_224 --repeats 3
    python benchmarks/bench_per_sample_timm.py --models convnext_atto --profile
Not part of CI.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEFAULT_MODELS = "vit_tiny_patch16_224,convnext_atto"


def run_plain(model, params, x, y) -> None:
    torch.autograd.grad(F.cross_entropy(model(x), y), list(params.values()))


def measure(name: str, args: argparse.Namespace) -> dict:
    import timm

    from ssd_fast.per_sample import PerSampleAccumulator, coverage

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=100).eval()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    x = torch.randn(args.batch, 3, args.image, args.image)
    y = torch.randint(0, 100, (args.batch,))
    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    report = coverage(model, x[:2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        acc = PerSampleAccumulator(model, params)
        with torch.enable_grad():
            t0 = time.perf_counter()
            acc(x, y, sums)  # the first batch: the checks run once here
            first = time.perf_counter() - t0
            run_plain(model, params, x, y)  # warm-up
            plain, per_sample = [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                run_plain(model, params, x, y)
                plain.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                acc(x, y, sums)
                per_sample.append(time.perf_counter() - t0)
            if args.profile:
                from torch.profiler import ProfilerActivity, profile

                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    acc(x, y, sums)
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile))
    acc.close()
    vmap_warnings = [str(w.message) for w in caught if "vmap" in str(w.message)]
    return {
        "model": name,
        "params": sum(p.numel() for p in params.values()),
        "plain": statistics.median(plain),
        "per_sample": statistics.median(per_sample),
        "first": first,
        "fallbacks": report.fallback_modules,
        "warned": vmap_warnings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated timm model names")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each method (median reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--profile", type=int, default=0, help="print this many top ops of one per_sample run")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from ssd_fast import _ops

    print(
        f"batch {args.batch}, {args.image}x{args.image}, {torch.get_num_threads()} threads, "
        f"fused per-sample ops: {_ops.has_per_sample_kernel('cpu')}, median of {args.repeats} interleaved runs"
    )
    print("| model | parameters | plain forward+backward | per_sample | ratio | first batch | under vmap |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        r = measure(name, args)
        vmap = ", ".join(r["fallbacks"]) or "none"
        print(
            f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['plain']:.3f} s | {r['per_sample']:.3f} s | "
            f"{r['per_sample'] / r['plain']:.2f}x | {r['first']:.3f} s | {vmap} |",
            flush=True,
        )
        for message in r["warned"]:
            print(f"  warning: {message}")


if __name__ == "__main__":
    main()
