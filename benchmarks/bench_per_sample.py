"""Per-sample Fisher: ssd_fast's per-layer rules against torch.func vmap(grad), side by side.

Each method runs in its own process on the same synthetic batch, so that every peak
memory figure is that method's own: peak RSS above the process's footprint after setup
(CPU), or peak allocated CUDA memory above what the model and data hold (GPU). The
table reports throughput, the ratio to one plain forward+backward at the same batch
size, and peak extra memory. Methods:
- plain:      one forward+backward of the batch-mean loss (the cost floor);
- per_sample: ssd_fast.per_sample.PerSampleAccumulator on the batch, with the fused ops
              (per_sample_sq_conv2d_ / per_sample_sq_tokens_) where the device has them;
- per_sample_torch: the same, with every rule on its pure-PyTorch path (unfold + bmm);
- vmap:       torch.func vmap(grad) over all parameters, squared and summed;
- loop:       a batch-size-1 loop with autograd.grad and _foreach_addcmul_.
Every method runs inside the precision scope importance(precision=...) uses, so each row
is timed with the arithmetic it would have there: the plain names are "exact" (IEEE fp32:
no autocast, no TF32, even where PyTorch's defaults would let cuDNN use TF32), and a
suffix picks another: plain_bf16 / per_sample_bf16 (forward and backward under bf16
autocast), plain_tf32 / per_sample_tf32 (TF32 tensor cores on CUDA; the same as exact
on a CPU).
On CUDA the fused ops are off by default until verified on a GPU; --fused-cuda turns them
on for the per_sample rows (benchmarks/gpu_check.sh does).

--layers adds a per-layer breakdown for each model: every conv and token-Linear layer's
weight-gradient cost in a plain backward (the floor), against its rule with the fused op
and with the torch path, on the layer's own input and output gradient.

    python benchmarks/bench_per_sample.py                         # CPU defaults, a few minutes
    python benchmarks/bench_per_sample.py --models resnet18 --methods plain,per_sample,per_sample_torch,loop --layers
    python benchmarks/bench_per_sample.py --models resnet18 --batch 256 --device cuda --fused-cuda --json $OUT/ps.json
    python benchmarks/bench_per_sample.py --models resnet18 --methods plain,per_sample,plain_bf16,per_sample_bf16
It runs on CUDA when available (--device auto). Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PRECISIONS = {"_bf16": "bf16", "_tf32": "tf32"}  # method-name suffix -> importance(precision=...)
METHODS = ("plain", "per_sample", "per_sample_torch", "vmap", "loop") + tuple(
    f"{m}{suffix}" for m in ("plain", "per_sample") for suffix in PRECISIONS
)


def split_method(method: str) -> tuple[str, str]:
    """("per_sample", "bf16") for "per_sample_bf16"; a name without a suffix is "exact"."""
    for suffix, precision in PRECISIONS.items():
        if method.endswith(suffix):
            return method[: -len(suffix)], precision
    return method, "exact"


# ---- models ------------------------------------------------------------------------------
class Block(nn.Module):
    """Pre-norm transformer block: attention through SDPA, then a GELU MLP."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """ViT with a conv patch embedding, a cls token and a learned position embedding.

    ViT-S/16 is dim 384, depth 12, 6 heads (22M parameters at 224x224).
    """

    def __init__(
        self, image: int = 224, patch: int = 16, dim: int = 384, depth: int = 12, heads: int = 6, classes: int = 100
    ):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim).normal_(std=0.02))
        self.pos_embed = nn.Parameter(torch.zeros(1, (image // patch) ** 2 + 1, dim).normal_(std=0.02))
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def build(name: str, args: argparse.Namespace) -> tuple[nn.Module, tuple[int, ...]]:
    if name == "resnet18":
        from ssd_fast.eval.models import cifar_resnet18

        return cifar_resnet18(100), (3, 32, 32)
    if name == "vit_s16":
        return ViT(image=args.vit_image, depth=args.vit_depth), (3, args.vit_image, args.vit_image)
    if name == "tv_resnet18":  # torchvision's ImageNet ResNet18 (7x7 stem, max-pool) at 64x64, as a new user runs it
        from torchvision.models import resnet18  # optional: only this row needs torchvision

        return resnet18(num_classes=100), (3, 64, 64)
    raise ValueError(f"unknown model {name!r}")


# ---- methods -----------------------------------------------------------------------------
def run_plain(model, params, x, y):
    torch.autograd.grad(F.cross_entropy(model(x), y), list(params.values()))


def run_per_sample(model, params, x, y, sums):
    from ssd_fast.per_sample import PerSampleAccumulator

    acc = PerSampleAccumulator(model, params)
    try:
        acc(x, y, sums)
    finally:
        acc.close()


def run_vmap(model, params, x, y, sums):
    from torch.func import functional_call, grad, vmap

    def loss(p, xi, yi):
        return F.cross_entropy(functional_call(model, p, (xi.unsqueeze(0),)), yi.unsqueeze(0))

    grads = vmap(grad(loss), in_dims=(None, 0, 0))({n: p.detach() for n, p in params.items()}, x, y)
    for n, g in grads.items():
        sums[n].add_(g.square().sum(0))


def run_loop(model, params, x, y, sums):
    names, tensors = list(params), list(params.values())
    acc = [sums[n] for n in names]
    for i in range(len(x)):
        g = torch.autograd.grad(F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]), tensors)
        torch._foreach_addcmul_(acc, g, g)


def _choose_path(args: argparse.Namespace) -> bool:
    """Set the rules' path for this process; True when the fused ops will be used."""
    from ssd_fast import _ops
    from ssd_fast.per_sample import _fused

    base, _ = split_method(args.method)
    _fused.enabled = base != "per_sample_torch"
    _fused.CUDA_VERIFIED = args.fused_cuda
    return base.startswith("per_sample") and _fused.use_fused(torch.zeros(1, device=args.device)) and _ops.is_built()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(args: argparse.Namespace) -> dict:
    """One method on one model, in this process: time and peak extra memory."""
    from ssd_fast._precision import effective_precision, precision_scope

    torch.manual_seed(0)
    device = torch.device(args.device)
    model, shape = build(args.model, args)
    model = model.to(device).eval()
    params = dict(model.named_parameters())
    batch = args.vit_batch if args.model == "vit_s16" else args.batch
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, 100, (batch,), device=device)
    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    fused = _choose_path(args)
    base, precision = split_method(args.method)
    fn = {
        "plain": lambda: run_plain(model, params, x, y),
        "per_sample": lambda: run_per_sample(model, params, x, y, sums),
        "per_sample_torch": lambda: run_per_sample(model, params, x, y, sums),
        "vmap": lambda: run_vmap(model, params, x, y, sums),
        "loop": lambda: run_loop(model, params, x, y, sums),
    }[base]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        sync()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _rss_bytes()
    times = []
    with torch.enable_grad(), precision_scope(precision, device.type):
        for _ in range(args.repeats + 1):  # the first run warms up and is not timed
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    best = min(times[1:]) if args.repeats else times[0]
    return {
        "model": args.model,
        "method": args.method,
        "precision": effective_precision(precision, device.type),
        "batch": batch,
        "device": str(device),
        "fused": fused,
        "seconds": best,
        "samples_per_s": batch / best,
        "peak_extra_mb": max(peak, 0) / 2**20,
        "params_m": sum(p.numel() for p in params.values()) / 1e6,
    }


# ---- per-layer breakdown -----------------------------------------------------------------
def make_timer(device: torch.device, repeats: int):
    """best(fn): the fastest of `repeats` timed calls of fn after one warm-up, synchronising the GPU around each."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(max(1, repeats)):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        return min(times)

    return best


def capture_layers(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]]:
    """(name, module, input, output gradient) of every conv and token-Linear layer."""
    seen: dict[str, dict] = {}

    def keep(name):
        def hook(module, inputs, output):
            seen[name] = {"module": module, "x": inputs[0].detach()}
            output.register_hook(lambda g: seen[name].__setitem__("dy", g.detach()))

        return hook

    handles = [
        m.register_forward_hook(keep(n))
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))
    ]
    with torch.enable_grad():
        F.cross_entropy(model(x), y, reduction="sum").backward()
    for h in handles:
        h.remove()
    layers = []
    for name, rec in seen.items():
        if isinstance(rec["module"], nn.Linear) and rec["x"].dim() == 2:
            continue  # one row per sample: no per-sample product to fuse
        layers.append((name, rec["module"], rec["x"], rec["dy"]))
    return layers


def layer_breakdown(args: argparse.Namespace) -> list[dict]:
    """Each conv / token-Linear layer: plain weight gradient, fused rule, torch-path rule."""
    from ssd_fast.per_sample import _fused

    _fused.CUDA_VERIFIED = args.fused_cuda
    torch.manual_seed(0)
    device = torch.device(args.device)
    model, shape = build(args.model, args)
    model = model.to(device).eval()
    batch = args.vit_batch if args.model == "vit_s16" else args.batch
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, 100, (batch,), device=device)
    layers = capture_layers(model, x, y)
    best = make_timer(device, args.repeats)
    rows = []
    for name, m, lx, dy in layers:
        rows.append(
            {
                "model": args.model,
                "layer": name,
                "kind": type(m).__name__,
                "x": list(lx.shape),
                "weight": list(m.weight.shape),
                **_time_layer(m, lx, dy, best),
            }
        )
    return rows


def _time_layer(m: nn.Module, x: torch.Tensor, dy: torch.Tensor, best) -> dict[str, float]:
    from ssd_fast.per_sample import _fused
    from ssd_fast.per_sample.rules.conv import conv_rule
    from ssd_fast.per_sample.rules.linear import linear_rule

    conv = not isinstance(m, nn.Linear)
    rule = conv_rule if conv else linear_rule
    out = {"weight": torch.zeros(m.weight.shape, device=x.device)}
    times = {}
    for label, on in (("fused", True), ("torch_path", False)):
        _fused.enabled = on
        times[f"{label}_s"] = best(lambda: rule(m, x, dy, out, absolute=False, budget=1 << 25))
    if isinstance(m, nn.Conv2d) and m.padding_mode == "zeros" and not isinstance(m.padding, str):
        plain = best(
            lambda: torch.nn.grad.conv2d_weight(x, m.weight.shape, dy, m.stride, m.padding, m.dilation, m.groups)
        )
    elif conv:
        plain = float("nan")
    else:
        plain = best(lambda: dy.reshape(-1, dy.shape[-1]).t() @ x.reshape(-1, x.shape[-1]))
    return {"plain_weight_grad_s": plain, **times}


def _print_layers(rows: list[dict]) -> None:
    print(
        f"\n{'layer':24s} {'input':>20s} {'weight':>18s} {'plain wgrad':>12s} {'fused':>9s} {'torch path':>11s}  (ms)"
    )
    tot = {"plain_weight_grad_s": 0.0, "fused_s": 0.0, "torch_path_s": 0.0}
    for r in rows:
        for k in tot:
            tot[k] += r[k] if r[k] == r[k] else 0.0
        print(
            f"{r['layer'][:24]:24s} {str(tuple(r['x'])):>20s} {str(tuple(r['weight'])):>18s} "
            f"{r['plain_weight_grad_s'] * 1e3:12.1f} {r['fused_s'] * 1e3:9.1f} {r['torch_path_s'] * 1e3:11.1f}"
        )
    print(
        f"{'total':24s} {'':>20s} {'':>18s} {tot['plain_weight_grad_s'] * 1e3:12.1f} {tot['fused_s'] * 1e3:9.1f} "
        f"{tot['torch_path_s'] * 1e3:11.1f}   fused/plain {tot['fused_s'] / max(tot['plain_weight_grad_s'], 1e-12):.2f}x, "
        f"torch path/fused {tot['torch_path_s'] / max(tot['fused_s'], 1e-12):.2f}x"
    )


# ---- driver ------------------------------------------------------------------------------
def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="resnet18,vit_s16")
    p.add_argument("--methods", default="plain,per_sample,vmap")
    p.add_argument("--batch", type=int, default=64, help="ResNet18 batch size")
    p.add_argument("--vit-batch", type=int, default=8)
    p.add_argument("--vit-image", type=int, default=224)
    p.add_argument("--vit-depth", type=int, default=12)
    p.add_argument("--repeats", type=int, default=2, help="timed runs after one warm-up; the best is kept")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--layers", action="store_true", help="add a per-layer breakdown (fused op vs torch path)")
    p.add_argument(
        "--fused-cuda", action="store_true", help="use the fused ops on CUDA too (unverified until gpu_check)"
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--layer-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def main() -> None:
    args = parse()
    if args.child:
        print(json.dumps(layer_breakdown(args) if args.layer_child else child(args)))
        return
    sizes = {
        "--batch": args.batch,
        "--vit-batch": args.vit_batch,
        "--vit-image": args.vit_image,
        "--vit-depth": args.vit_depth,
        "--repeats": args.repeats,
        "--device": args.device,
    }
    forwarded = [str(v) for pair in sizes.items() for v in pair] + (["--fused-cuda"] if args.fused_cuda else [])
    results, layers = [], []
    for model in args.models.split(","):
        for method in args.methods.split(","):
            cmd = [sys.executable, __file__, *forwarded, "--child", "--model", model, "--method", method]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{model} {method}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(_row(results[-1], results), flush=True)
        _print_ratios(model, results)
        if args.layers:
            cmd = [sys.executable, __file__, *forwarded, "--child", "--layer-child", "--model", model]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{model} layers: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            else:
                layers += json.loads(done.stdout.strip().splitlines()[-1])
                _print_layers([r for r in layers if r["model"] == model])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device_name": _device_name(args.device), "results": results, "layers": layers}, f, indent=2)


def _row(r: dict, results: list[dict]) -> str:
    plain = next((q for q in results if q["model"] == r["model"] and q["method"] == "plain"), None)
    ratio = f"{r['seconds'] / plain['seconds']:.2f}x plain" if plain else ""
    return (
        f"{r['model']:9s} {r['method']:15s} bs {r['batch']:4d} {r['device']:5s} {r['seconds'] * 1e3:9.1f} ms "
        f"{r['samples_per_s']:9.1f} samples/s {ratio:>12s}  peak extra {r['peak_extra_mb']:8.1f} MB"
    )


def _print_ratios(model: str, results: list[dict]) -> None:
    t = {r["method"]: r["seconds"] for r in results if r["model"] == model}
    pairs = [
        ("per_sample", "plain"),
        ("per_sample_torch", "plain"),
        ("per_sample_bf16", "plain_bf16"),
        ("per_sample_bf16", "per_sample"),
        ("plain_bf16", "plain"),
        ("per_sample_tf32", "plain_tf32"),
        ("per_sample_torch", "per_sample"),
        ("loop", "per_sample"),
        ("vmap", "per_sample"),
    ]
    said = [f"{a}/{b} {t[a] / t[b]:.2f}x" for a, b in pairs if a in t and b in t]
    if said:
        print(f"{model}: " + ", ".join(said), flush=True)


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device.startswith("cuda") else f"cpu ({os.cpu_count()} cores)"


if __name__ == "__main__":
    main()
