"""Side-by-side timings of select-and-dampen and squared-gradient accumulation.

Every implementation in benchmarks/impls.py runs on the same parameter list in one
process, next to a measured memory-copy bandwidth, so that the figures are ratios taken
in one run, and the floor (bytes that must move / copy bandwidth) is measured, not assumed.

    python benchmarks/kernel_bench.py --device cpu --models resnet18 --json out.json

Beside the implementations, the public API on the same tensors: `Dampener.apply` (prepared
once) and one-shot `ssd_fast.dampen`, timed call by call in turn with the raw op, and given
as ratios to it from that same interleaved run.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

import ssd_fast
from ssd_fast._checkpoint import take_probe
from ssd_fast.eval.models import cifar_resnet18

try:
    from . import impls
    from .workloads import SHAPES, Workload, make_workload
except ImportError:  # run as a script
    import impls  # type: ignore[no-redef]
    from workloads import SHAPES, Workload, make_workload  # type: ignore[no-redef]

ALPHA, LAM = 10.0, 1.0


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_once(fn: Callable[[], None], setup: Callable[[], None], device: str) -> float:
    """Seconds of one fn(), with setup() run (untimed) first."""
    setup()
    sync(device)
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_median(fn: Callable[[], None], setup: Callable[[], None], device: str, repeats: int, warmup: int = 2) -> float:
    """Median seconds of fn(), with setup() run (untimed) before each call."""
    return time_interleaved({"fn": fn}, setup, device, repeats, warmup)["fn"]


def time_interleaved(
    fns: dict[str, Callable[[], None]],
    setup: Callable[[], None],
    device: str,
    repeats: int,
    warmup: int = 2,
    stat: Callable[[list[float]], float] = statistics.median,
) -> dict[str, float]:
    """`stat` (median by default) of each fn's seconds, taking turns call by call, so that a
    busy machine slows them alike and their ratios hold even when the absolute times drift."""
    for _ in range(warmup):
        for fn in fns.values():
            time_once(fn, setup, device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(time_once(fn, setup, device))
    return {name: stat(t) for name, t in times.items()}


def copy_bandwidth(device: str, repeats: int) -> float:
    """Bytes per second of a large device copy, counting bytes read plus bytes written.

    The fastest of several copies: the floor is the best this machine gave in this run,
    so ratios against it err on the side of looking slower.
    """
    n = 64 * 2**20  # 256 MB of fp32: far beyond any cache
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    seconds = min(time_median(lambda: dst.copy_(src), lambda: None, device, 3) for _ in range(max(3, repeats // 3)))
    return 2 * src.numel() * src.element_size() / seconds


def bench_dampen(model: str, device: str, repeats: int, skip: set[str]) -> dict[str, float]:
    w = make_workload(model, device)
    out = {}
    for name, fn in impls.DAMPEN.items():
        if name in skip:
            continue
        out[name] = time_median(partial(fn, w.params, w.forget, w.full, ALPHA, LAM), w.restore, device, repeats)
    out.update(bench_api(model, w, device, repeats))
    return out


def _module_over(model: str, w) -> nn.Module:
    """An nn.Module whose parameters are the workload's own tensors (the real ResNet18 module
    for resnet18, so that name walking costs what it does in use; a flat holder for ViT-B/16)."""
    module = cifar_resnet18(100) if model == "resnet18" else nn.ParameterList([nn.Parameter(p) for p in w.params])
    for p, t in zip(module.parameters(), w.params):
        p.data = t  # share storage: w.restore() restores the module too
    return module


def _api_calls(model: str, w) -> dict[str, Callable[[], None]]:
    """The raw op, a prepared Dampener's apply (the per-trial cost of a search), and one-shot
    dampen() with validated Importances (prepare and apply, report included; the counts are
    not read, as a caller who does not print the report would not), on the same tensors."""
    w.restore()  # earlier runs left the tensors dampened
    module = _module_over(model, w)
    names = [n for n, _ in module.named_parameters()]
    probe = take_probe(module)  # as importance() records it, so dampen() pays for the checkpoint check
    forget = ssd_fast.Importances(dict(zip(names, w.forget)), checkpoint_probe=probe)
    full = ssd_fast.Importances(dict(zip(names, w.full)), checkpoint_probe=probe)
    dampener = ssd_fast.prepare(module, forget, full)
    return {
        "raw op (interleaved)": partial(impls.ssd_fast_dampen, w.params, w.forget, w.full, ALPHA, LAM),
        "Dampener.apply": partial(dampener.apply, ALPHA, LAM),
        "ssd_fast.dampen (API)": partial(ssd_fast.dampen, module, forget, full, alpha=ALPHA, lam=LAM),
    }


def bench_api(model: str, w, device: str, repeats: int) -> dict[str, float]:
    """The API calls beside the raw op, interleaved: medians, and the fastest call of each
    (the better estimate on a machine other work keeps busy). Then the same calls on one
    element per tensor, where the kernel costs next to nothing: the Python around it."""
    out = time_interleaved(_api_calls(model, w), w.restore, device, repeats)
    fastest = time_interleaved(_api_calls(model, w), w.restore, device, repeats, stat=min)
    out.update({f"{name} (fastest)": t for name, t in fastest.items()})
    tiny = Workload(w.name, *[[t.reshape(-1)[:1].clone() for t in ts] for ts in (w.params, w.forget, w.full)], [])
    tiny.pristine = [p.clone() for p in tiny.params]
    overhead = time_interleaved(_api_calls(model, tiny), tiny.restore, device, 10 * repeats, stat=min)
    out.update({f"{name} (1 element per tensor)": t for name, t in overhead.items()})
    return out


def bench_accumulate(model: str, device: str, repeats: int) -> dict[str, float]:
    w = make_workload(model, device)
    imps = [torch.zeros_like(f) for f in w.forget]
    return {
        name: time_median(partial(fn, imps, w.params), lambda: None, device, repeats)
        for name, fn in impls.ACCUMULATE.items()
    }


def _api_ratios(times: dict[str, float]) -> list[str]:
    lines = []
    for suffix in ("", " (fastest)", " (1 element per tensor)"):
        raw = times["raw op (interleaved)" + suffix]
        apply, once = times["Dampener.apply" + suffix], times["ssd_fast.dampen (API)" + suffix]
        lines.append(
            f"  vs the raw op{suffix or ' (medians)'}: Dampener.apply {apply / raw:.2f}x ({1e6 * (apply - raw):+.0f} us), "
            f"dampen() {once / raw:.2f}x ({1e6 * (once - raw):+.0f} us)"
        )
    return lines


def report(results: dict, bandwidth: float, numel: dict[str, int]) -> str:
    lines = [f"copy bandwidth: {bandwidth / 1e9:.1f} GB/s (read + write)"]
    for model, kinds in results.items():
        floor_dampen = 16 * numel[model] / bandwidth  # read p, f, d; write p (fp32)
        floor_acc = 12 * numel[model] / bandwidth  # read imp, g; write imp
        for kind, times in kinds.items():
            floor = floor_dampen if kind == "select_dampen" else floor_acc
            base = times.get("reference", math.nan)  # nan when --skip left the reference out
            lines.append(f"\n{kind} on {model} ({numel[model] / 1e6:.1f}M params), floor {floor * 1e3:.3f} ms")
            lines.append(f"  {'implementation':<24} {'ms':>10} {'vs reference':>13} {'vs floor':>9}")
            for name, t in times.items():
                lines.append(f"  {name:<24} {t * 1e3:>10.3f} {base / t:>12.1f}x {t / floor:>8.2f}x")
            if "Dampener.apply" in times:
                lines += _api_ratios(times)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="resnet18,vit_b16")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--skip", default="", help="comma list of implementations to leave out, e.g. torch.compile")
    parser.add_argument("--json", help="write the raw timings here")
    args = parser.parse_args()

    skip = {s for s in args.skip.split(",") if s}
    bandwidth = copy_bandwidth(args.device, args.repeats)
    results, numel = {}, {}
    for model in args.models.split(","):
        numel[model] = sum(math.prod(s) for s in SHAPES[model]())
        results[model] = {
            "select_dampen": bench_dampen(model, args.device, args.repeats, skip),
            "sq_accumulate": bench_accumulate(model, args.device, args.repeats),
        }
    print(report(results, bandwidth, numel))
    if args.json:
        device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
        meta = {
            "device": args.device,
            "device_name": device_name,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "copy_bandwidth_Bps": bandwidth,
            "numel": numel,
        }
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "seconds": results}, f, indent=2)


if __name__ == "__main__":
    main()
