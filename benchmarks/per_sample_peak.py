"""Per layer of ResNet18 and ViT-S: the fused per-sample kernel's achieved fraction of peak,
next to the plain weight gradient's, per precision; and the calibration that routes layers.

For every conv and token-Linear layer (its own input and output gradient, captured from one
backward), and each precision:
- fused:  ssd_fast's fused op on the layer (exact: fp32 FMA kernel; tf32 / bf16: the
          tensor-core kernels), 2 B O K L flops (K = inputs per group x kernel taps,
          L = output positions or tokens);
- plain:  the layer's plain weight gradient (conv2d_weight, or dy^T x), the same flop count,
          under the same precision (IEEE fp32 / TF32 allowed / bf16 operands);
- torch:  the per-sample rule's torch path (unfold + bmm + square), for the calibration.
The fraction of peak divides the achieved flop rate by the device's peak for that
arithmetic. Peaks (dense, no sparsity) are the H100/H200 SXM datasheet figures quoted in
the device notes: fp32 FMA 67 TFLOP/s, TF32 495, bf16 990 (H100 and H200 share the chip);
pass --peak-* for another card. On a CPU the fractions are left out.

--calibration PATH writes the timings as the JSON that ssd_fast.per_sample._fused reads
(point SSD_FAST_PER_SAMPLE_CALIBRATION at it): per "<kind>/<precision>", rows of
{shape: [B, O, K, L], fused_s, torch_s}. benchmarks/gpu_check.sh runs this on the GPU.

    python benchmarks/per_sample_peak.py --device cuda --json $OUT/peak.json --calibration $OUT/cal.json
    python benchmarks/per_sample_peak.py --device cpu --batch 4 --vit-batch 2 --vit-depth 1   # a smoke run
Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_per_sample import build, capture_layers, make_timer  # noqa: E402  (the same models, layers and timer)

from ssd_fast import _ops  # noqa: E402
from ssd_fast._precision import precision_scope  # noqa: E402
from ssd_fast.per_sample import _fused  # noqa: E402
from ssd_fast.per_sample.rules.conv import conv_rule  # noqa: E402
from ssd_fast.per_sample.rules.linear import linear_rule  # noqa: E402

PRECISIONS = ("exact", "tf32", "bf16")


def problem(m: nn.Module, x: torch.Tensor, dy: torch.Tensor) -> tuple[str, tuple[int, int, int, int]]:
    """("conv2d" | "tokens", (B, O, K, L)) as the fused ops see the layer."""
    if isinstance(m, nn.Linear):
        return "tokens", (x.shape[0], m.out_features, m.in_features, math.prod(x.shape[1:-1]))
    return "conv2d", (
        x.shape[0],
        m.out_channels,
        m.in_channels // m.groups * math.prod(m.kernel_size),
        math.prod(dy.shape[2:]),
    )


def time_layer(m: nn.Module, x: torch.Tensor, dy: torch.Tensor, precision: str, best) -> dict[str, float]:
    """Seconds for the fused op, the plain weight gradient and the rule's torch path."""
    if precision == "bf16":
        x, dy = x.bfloat16(), dy.bfloat16()
    out = torch.zeros(m.weight.shape, device=x.device)
    conv = not isinstance(m, nn.Linear)
    with precision_scope("exact" if precision == "bf16" else precision, x.device.type):
        if conv:
            stride, padding, dilation = m.stride, m.padding, m.dilation
            if len(stride) == 1:  # Conv1d as a height-1 Conv2d, as the rule does
                x2, dy2, out2 = x.unsqueeze(2), dy.unsqueeze(2), out.unsqueeze(2)
                stride, padding, dilation = (1, *stride), (0, *padding), (1, *dilation)
            else:
                x2, dy2, out2 = x, dy, out
            fused = best(
                lambda: _ops.per_sample_sq_conv2d_(
                    out2, dy2, x2, stride, padding, dilation, m.groups, 1.0, False, precision
                )
            )
            plain = best(lambda: torch.nn.grad.conv2d_weight(x2, out2.shape, dy2, stride, padding, dilation, m.groups))
        else:
            xt, dyt = x.reshape(x.shape[0], -1, x.shape[-1]), dy.reshape(dy.shape[0], -1, dy.shape[-1])
            fused = best(lambda: _ops.per_sample_sq_tokens_(out, dyt, xt, 1.0, False, precision))
            plain = best(lambda: dyt.reshape(-1, dyt.shape[-1]).t() @ xt.reshape(-1, xt.shape[-1]))
        rule = conv_rule if conv else linear_rule
        _fused.enabled = False
        try:
            torch_path = best(lambda: rule(m, x, dy, {"weight": out}, absolute=False, budget=1 << 25))
        finally:
            _fused.enabled = True
    return {"fused_s": fused, "plain_s": plain, "torch_s": torch_path}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", default="resnet18,vit_s16")
    p.add_argument("--precisions", default=",".join(PRECISIONS))
    p.add_argument("--batch", type=int, default=256, help="ResNet18 batch (CIFAR 32x32)")
    p.add_argument("--vit-batch", type=int, default=32)
    p.add_argument("--vit-image", type=int, default=224)
    p.add_argument("--vit-depth", type=int, default=12)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--peak-fp32", type=float, default=67e12, help="fp32 FMA flop/s")
    p.add_argument("--peak-tf32", type=float, default=495e12, help="dense TF32 tensor-core flop/s")
    p.add_argument("--peak-bf16", type=float, default=990e12, help="dense bf16 tensor-core flop/s")
    p.add_argument("--json", type=Path, help="write the per-layer rows here")
    p.add_argument("--calibration", type=Path, help="write the routing calibration here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    device = torch.device(args.device)
    if not _ops.has_per_sample_kernel(device.type):
        raise SystemExit(f"no fused per-sample kernel for {device.type}: {_ops.LOAD_ERROR}")
    peaks = {"exact": args.peak_fp32, "tf32": args.peak_tf32, "bf16": args.peak_bf16}
    best = make_timer(device, args.repeats)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows, timings = [], {}
    print(f"device: {name}; fraction of peak = achieved flop/s over the peak for that arithmetic")
    print(
        f"{'model':9s} {'layer':28s} {'prec':5s} {'B,O,K,L':>22s} {'fused ms':>9s} {'plain ms':>9s} "
        f"{'fused %pk':>9s} {'plain %pk':>9s} {'torch ms':>9s}"
    )
    for model_name in args.models.split(","):
        torch.manual_seed(0)
        bargs = argparse.Namespace(vit_image=args.vit_image, vit_depth=args.vit_depth)
        model, shape = build(model_name, bargs)
        model = model.to(device).eval()
        batch = args.vit_batch if model_name == "vit_s16" else args.batch
        x = torch.randn(batch, *shape, device=device)
        y = torch.randint(0, 100, (batch,), device=device)
        for layer, m, lx, dy in capture_layers(model, x, y):
            kind, dims = problem(m, lx, dy)
            flops = 2.0 * math.prod(dims)
            for precision in args.precisions.split(","):
                t = time_layer(m, lx, dy, precision, best)
                on_gpu = device.type == "cuda"
                frac = {
                    k: flops / t[f"{k}_s"] / peaks[precision] if on_gpu else float("nan") for k in ("fused", "plain")
                }
                rows.append(
                    {
                        "model": model_name,
                        "layer": layer,
                        "kind": kind,
                        "precision": precision,
                        "shape": list(dims),
                        "flops": flops,
                        **t,
                        "fused_fraction_of_peak": frac["fused"],
                        "plain_fraction_of_peak": frac["plain"],
                    }
                )
                timings.setdefault(f"{kind}/{precision}", []).append(
                    {"shape": list(dims), "fused_s": t["fused_s"], "torch_s": t["torch_s"]}
                )
                print(
                    f"{model_name:9s} {layer[:28]:28s} {precision:5s} {','.join(map(str, dims)):>22s} "
                    f"{t['fused_s'] * 1e3:9.3f} {t['plain_s'] * 1e3:9.3f} {100 * frac['fused']:8.1f}% "
                    f"{100 * frac['plain']:8.1f}% {t['torch_s'] * 1e3:9.3f}"
                )
    if args.json:
        args.json.write_text(json.dumps({"device": name, "peaks": peaks, "rows": rows}, indent=1))
    if args.calibration:
        data = {"version": _fused.CALIBRATION_VERSION, "device": name, "torch": torch.__version__, "timings": timings}
        args.calibration.write_text(json.dumps(data, indent=1))
        print(
            f"calibration for {name!r} written to {args.calibration}; "
            f"set {_fused.CALIBRATION_ENV}={args.calibration} to route by it"
        )


if __name__ == "__main__":
    main()
