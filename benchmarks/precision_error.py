"""The error of each importance(precision=...) against the fp64 batch-size-1 loop.

On the paper's CIFAR ResNet18 (synthetic CIFAR-shaped inputs, random weights and
randomised BatchNorm statistics), per_sample mode is compared with the definition,
(1/N) sum_i (grad loss_i)^2 computed one sample at a time in float64; batch mode with the
same mean of squared batch gradients computed in float64. Two measures, over all
tensors: the worst tensor's max |error| / max |value|, and the whole model's relative L2
error ||got - want|| / ||want||. Even exact fp32 can show an isolated larger entry
error: a pre-activation within rounding of 0 may take the other sign than in fp64, and the
ReLU after it then passes the other gradient. Not part of CI.

    python benchmarks/precision_error.py                      # CPU, about a minute
    python benchmarks/precision_error.py --device cuda --samples 64 --json $OUT/precision.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ssd_fast  # noqa: E402
from ssd_fast.eval.models import cifar_resnet18  # noqa: E402


def fp64_importance(model, batches) -> dict[str, torch.Tensor]:
    """Mean over batches of the squared gradient of each batch's mean loss, in float64.

    With batches of one sample this is the per-sample definition."""
    m64 = copy.deepcopy(model).double().eval()
    params = dict(m64.named_parameters())
    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    for x, y in batches:
        grads = torch.autograd.grad(F.cross_entropy(m64(x.double()), y), list(params.values()))
        for n, g in zip(params, grads):
            sums[n] += g.square()
    return {n: (s / len(batches)).float() for n, s in sums.items()}


def errors(got, want) -> dict[str, float]:
    worst = max(float((got[k] - want[k]).abs().max() / want[k].abs().max().clamp_min(1e-30)) for k in want)
    num = sum(float((got[k].double() - want[k].double()).square().sum()) for k in want)
    den = sum(float(want[k].double().square().sum()) for k in want)
    return {"worst_tensor_max_entry": worst, "model_l2": (num / den) ** 0.5}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--batch", type=int, default=8, help="batch size of the batch-mode rows")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.manual_seed(0)
    model = cifar_resnet18(100).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    x, y = torch.randn(args.samples, 3, 32, 32), torch.randint(0, 100, (args.samples,))
    ones = [(x[i : i + 1], y[i : i + 1]) for i in range(args.samples)]
    batches = [(x[i : i + args.batch], y[i : i + args.batch]) for i in range(0, args.samples, args.batch)]
    want = {"per_sample": fp64_importance(model, ones), "batch": fp64_importance(model, batches)}
    model = model.to(args.device)
    rows = []
    for mode, data in (("per_sample", batches), ("batch", batches)):
        for precision in ("exact", "tf32", "bf16"):
            got = ssd_fast.importance(model, data, mode=mode, precision=precision, device=args.device, progress=False)
            got = {k: v.cpu() for k, v in got.items()}
            rows.append({"mode": mode, "precision": precision, **errors(got, want[mode])})
            r = rows[-1]
            print(
                f"{mode:10s} {precision:5s} worst tensor {r['worst_tensor_max_entry']:.2e}  model L2 {r['model_l2']:.2e}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": args.device, "samples": args.samples, "batch": args.batch, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
