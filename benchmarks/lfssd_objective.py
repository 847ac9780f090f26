"""LFSSD's objective, two ways: the main API's `out.square().sum(1)` against the published
`torch.norm(out, p="fro", dim=1).pow(2)` (which ssd_fast.compat uses, to match the published
importances bit for bit). Times forward + backward of the batch mean on model-output-sized
tensors, interleaved, best of --repeats; ratios are within one run.

    python benchmarks/lfssd_objective.py [--threads 1] [--repeats 200]
"""

from __future__ import annotations

import argparse
import time

import torch


def square_sum(out: torch.Tensor) -> torch.Tensor:
    return out.square().sum(1).mean()


def fro_norm(out: torch.Tensor) -> torch.Tensor:
    return torch.norm(out, p="fro", dim=1).pow(2).mean()


def _time(fn, out: torch.Tensor, inner: int) -> float:
    start = time.perf_counter()
    for _ in range(inner):
        (g,) = torch.autograd.grad(fn(out), out)
    return (time.perf_counter() - start) / inner


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=200)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, best of {args.repeats}; times per forward+backward of the objective")
    print("| outputs [B, C] | square().sum(1) | norm(fro).pow(2) | norm / square |")
    print("|---|---|---|---|")
    for b, c in ((64, 10), (256, 100), (256, 1000), (64, 32000)):
        out = torch.randn(b, c, requires_grad=True)
        inner = max(1, 2_000_000 // (b * c))
        best = {square_sum: float("inf"), fro_norm: float("inf")}
        for _ in range(args.repeats):
            for fn in best:  # interleaved, so load changes hit both
                best[fn] = min(best[fn], _time(fn, out, inner))
        a, n = best[square_sum], best[fro_norm]
        print(f"| [{b}, {c}] | {a * 1e6:.1f} us | {n * 1e6:.1f} us | {n / a:.2f}x |")


if __name__ == "__main__":
    main()
