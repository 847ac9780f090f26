"""The GPU's bits against the emulator's, on the fp32 paths of every CUDA kernel.

fp32 fma and add are correctly rounded on both the GPU and the CPU (the emulator is built
with -ffp-contract=off and keeps denormals), and every kernel sums in a fixed order, so
the real CUDA ops (torch.ops.ssd_fast.*) and the emulated kernels (tests/emulator/
emulator_bits.cpp, the same device code compiled by g++) must give the same bits on the
same inputs, the per-sample ops included once the emulator plans with the GPU's
multiprocessor count.

Writes fixed-seed cases into --dir (cases.txt and raw tensors), runs them through the ops
on --device, runs the emulator binary on the same files, and compares bit for bit.

    python benchmarks/gpu_vs_emulator.py --emulator build/emulator_bits --json out.json

--device cpu checks the plumbing without a GPU: the CPU ops of select_dampen_ and
sq_accumulate_ promise the same bits, while the CPU per-sample ops sum in another order,
so those are only required to agree within 1e-5 relative to the row's largest value.
Exits 0 when every case passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

import ssd_fast  # noqa: F401  (registers torch.ops.ssd_fast.*)


def f32_hex(x: float) -> str:
    """x rounded to fp32, as an exact C hex float."""
    return f32(x).hex()


def f32(x: float) -> float:
    return torch.tensor(x, dtype=torch.float32).item()


def raw(path: Path, t: torch.Tensor) -> None:
    path.write_bytes(bytes(t.detach().cpu().contiguous().clone().untyped_storage()))


def read_raw(path: Path, dtype: torch.dtype) -> torch.Tensor:
    return torch.frombuffer(bytearray(path.read_bytes()), dtype=dtype)


@dataclass
class Case:
    kind: str
    name: str
    line: str  # its cases.txt line
    device_out: torch.Tensor  # the op's output, flattened, on the CPU
    device_counts: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)


def tensor_list(
    gen: torch.Generator, sizes: list[int], device: str, kind: str
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Tensors of `sizes` on device, every third one misaligned for the vector path (a view
    one element into a larger buffer), and their values concatenated on the CPU."""
    values = []
    for n in sizes:
        if kind == "normal":
            values.append(torch.randn(n, generator=gen))
        else:
            values.append(torch.rand(n, generator=gen))
    tensors = []
    for i, v in enumerate(values):
        if i % 3 == 2:
            buffer = torch.zeros(v.numel() + 1, device=device)
            buffer[1:] = v.to(device)
            tensors.append(buffer[1:])
        else:
            tensors.append(v.to(device).clone())
    return tensors, torch.cat(values) if values else torch.zeros(0)


SIZES = [0, 1, 5, 4099, 8195, 300, 17, 2 * 8192 + 3]


def select_case(gen: torch.Generator, directory: Path, device: str) -> Case:
    alpha, lam = 10.0, 1.0
    p, p_all = tensor_list(gen, SIZES, device, "normal")
    d, d_all = tensor_list(gen, SIZES, device, "uniform")
    u = torch.rand(d_all.numel(), generator=gen)
    f_all = d_all * alpha * (0.5 + u)  # about half selected
    f_all[::29] = 0.0
    d_all[7::31] = 0.0  # selected and zeroed
    f_all[11::37] = torch.nextafter(torch.tensor(alpha), torch.tensor(float("inf")))
    d_all[11::37] = 1.0
    f, d, at = [], [], 0
    for i, n in enumerate(SIZES):
        # the importances on the device, aligned like their parameters
        for src, out in ((f_all, f), (d_all, d)):
            v = src[at : at + n]
            if i % 3 == 2:
                buffer = torch.zeros(n + 1, device=device)
                buffer[1:] = v.to(device)
                out.append(buffer[1:])
            else:
                out.append(v.to(device).clone())
        at += n
    for name, t in (("p", p_all), ("f", f_all), ("d", d_all)):
        raw(directory / f"select.{name}.bin", t)
    selected = torch.zeros(len(SIZES), dtype=torch.long, device=device)
    torch.ops.ssd_fast.select_dampen_(p, f, d, alpha, lam, selected)
    line = f"select select {f32_hex(alpha)} {f32_hex(lam)} {len(SIZES)} " + " ".join(map(str, SIZES))
    out = torch.cat([t.cpu() for t in p])
    return Case("select", "select", line, out, selected.cpu())


def sq_case(gen: torch.Generator, directory: Path, device: str, name: str, scale: float, absolute: bool) -> Case:
    imp, imp_all = tensor_list(gen, SIZES, device, "uniform")
    g, g_all = tensor_list(gen, SIZES, device, "normal")
    g_all_dev = g_all.clone()
    g_all_dev[4::31] = 1e-30  # squares that underflow to denormals or zero
    at = 0
    for t, n in zip(g, SIZES):
        t.copy_(g_all_dev[at : at + n].to(device))
        at += n
    raw(directory / f"{name}.imp.bin", imp_all)
    raw(directory / f"{name}.g.bin", g_all_dev)
    torch.ops.ssd_fast.sq_accumulate_(imp, g, scale, absolute)
    line = f"sq {name} {f32_hex(scale)} {int(absolute)} {len(SIZES)} " + " ".join(map(str, SIZES))
    return Case("sq", name, line, torch.cat([t.cpu() for t in imp]))


def tokens_case(gen, directory, device, sms, name, b, t, k, o, transposed=False, absolute=False, scale=1.0) -> Case:
    if transposed:  # stored [B, F, T]
        x_base, dy_base = torch.randn(b, k, t, generator=gen), torch.randn(b, o, t, generator=gen)
    else:
        x_base, dy_base = torch.randn(b, t, k, generator=gen), torch.randn(b, t, o, generator=gen)
    out0 = torch.rand(o, k, generator=gen)
    for suffix, tensor in (("x", x_base), ("dy", dy_base), ("out0", out0)):
        raw(directory / f"{name}.{suffix}.bin", tensor)
    out = out0.to(device)
    xd = x_base.to(device).transpose(1, 2) if transposed else x_base.to(device)
    dyd = dy_base.to(device).transpose(1, 2) if transposed else dy_base.to(device)
    torch.ops.ssd_fast.per_sample_sq_tokens_(out, dyd, xd, f32(scale), absolute)
    line = f"tokens {name} {b} {t} {k} {o} {int(transposed)} {sms} {int(absolute)} {f32_hex(scale)}"
    return Case("tokens", name, line, out.cpu().flatten())


def conv_case(gen, directory, device, sms, name, b, c, h, w, o, kh, kw, stride=(1, 1), padding=(0, 0),
              dilation=(1, 1), groups=1, channels_last=False, absolute=False, scale=1.0) -> Case:  # fmt: skip
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if channels_last:  # stored [B, H, W, C]
        x_base, dy_base = torch.randn(b, h, w, c, generator=gen), torch.randn(b, oh, ow, o, generator=gen)
        view = (0, 3, 1, 2)
    else:
        x_base, dy_base = torch.randn(b, c, h, w, generator=gen), torch.randn(b, o, oh, ow, generator=gen)
        view = (0, 1, 2, 3)
    out0 = torch.rand(o, c // groups, kh, kw, generator=gen)
    for suffix, tensor in (("x", x_base), ("dy", dy_base), ("out0", out0)):
        raw(directory / f"{name}.{suffix}.bin", tensor)
    out = out0.to(device)
    torch.ops.ssd_fast.per_sample_sq_conv2d_(
        out, dy_base.to(device).permute(view), x_base.to(device).permute(view), list(stride), list(padding),
        list(dilation), groups, f32(scale), absolute,
    )  # fmt: skip
    line = (
        f"conv {name} {b} {c} {h} {w} {o} {kh} {kw} {stride[0]} {stride[1]} {padding[0]} {padding[1]} "
        f"{dilation[0]} {dilation[1]} {groups} {int(channels_last)} {sms} {int(absolute)} {f32_hex(scale)}"
    )
    return Case("conv", name, line, out.cpu().flatten())


def make_cases(directory: Path, device: str, sms: int) -> list[Case]:
    gen = torch.Generator().manual_seed(20261206)
    at = (gen, directory, device, sms)
    return [
        select_case(gen, directory, device),
        sq_case(gen, directory, device, "sq_squares", 1 / 3, False),
        sq_case(gen, directory, device, "sq_abs", 0.25, True),
        tokens_case(*at, "tokens_edges", 5, 37, 67, 130),
        tokens_case(*at, "tokens_transposed_abs", 3, 9, 20, 33, True, True, 0.5),
        tokens_case(*at, "tokens_long", 2, 300, 64, 64, scale=1 / 7),
        conv_case(*at, "conv_sliced_pad1", 4, 8, 9, 9, 70, 3, 3, padding=(1, 1)),
        conv_case(*at, "conv_groups_stride_dilation", 3, 6, 11, 10, 4, 3, 3, (2, 2), (2, 2), (2, 2), groups=2),
        conv_case(*at, "conv_channels_last_abs", 2, 5, 7, 7, 9, 3, 3, channels_last=True, absolute=True, scale=0.25),
    ]


def compare(case: Case, directory: Path, exact: bool) -> dict:
    emu = read_raw(directory / f"{case.name}.emu.bin", torch.float32)
    dev = case.device_out.to(torch.float32).flatten()
    result = {"kind": case.kind, "name": case.name, "elements": int(dev.numel())}
    if emu.numel() != dev.numel():
        return result | {"pass": False, "why": f"emulator wrote {emu.numel()} values, the op {dev.numel()}"}
    eb, db = emu.view(torch.int32).long(), dev.view(torch.int32).long()
    differ = (eb != db) & ~(emu.isnan() & dev.isnan())
    ulps = (eb - db).abs()
    largest = max(dev.abs().nan_to_num().max().item() if dev.numel() else 0.0, 1e-30)
    diff = (emu - dev).abs().nan_to_num()
    rel = (diff.max().item() if dev.numel() else 0.0) / largest
    result |= {
        "bits_equal": bool(not differ.any()),
        "differing": int(differ.sum()),
        "max_ulps": int(ulps[differ].max()) if differ.any() else 0,
        "max_abs_diff_over_max": rel,
    }
    if case.device_counts is not None:
        counts = read_raw(directory / f"{case.name}.emu_counts.bin", torch.int64)
        result["counts_equal"] = bool(torch.equal(counts, case.device_counts))
    ok = result["bits_equal"] if exact else rel <= 1e-5
    result["pass"] = bool(ok and result.get("counts_equal", True))
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--emulator", required=True, help="the emulator_bits binary (tests/emulator/emulator_bits.cpp)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--dir", help="where to write the cases (default: a temporary directory)")
    ap.add_argument("--json", help="write the comparison here")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_vs_emulator: no CUDA device (use --device cpu to check the plumbing)")
    # the per-sample plan slices the batch by the multiprocessor count: the emulator must use the GPU's
    sms = torch.cuda.get_device_properties(0).multi_processor_count if args.device == "cuda" else 132
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(args.dir or tmp)
        directory.mkdir(parents=True, exist_ok=True)
        cases = make_cases(directory, args.device, sms)
        (directory / "cases.txt").write_text("".join(c.line + "\n" for c in cases))
        emu = subprocess.run([args.emulator, str(directory)], capture_output=True, text=True)
        if emu.returncode != 0:
            print(emu.stdout + emu.stderr)
            sys.exit(f"gpu_vs_emulator: the emulator failed (exit {emu.returncode})")
        # on the CPU only the multi-tensor ops promise the kernels' bits (see the docstring)
        results = [compare(c, directory, exact=args.device == "cuda" or c.kind in ("select", "sq")) for c in cases]
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    for r in results:
        print(
            f"{'PASS' if r['pass'] else 'FAIL'} {r['name']:30s} n={r['elements']:<6d} bits "
            f"{'equal' if r.get('bits_equal') else 'differ'} ({r.get('differing', '?')} differ, "
            f"max {r.get('max_ulps', '?')} ulps)" + ("" if r.get("counts_equal", True) else " COUNTS DIFFER")
        )
    passed = all(r["pass"] for r in results)
    summary = {"device": device_name, "sms": sms, "pass": passed, "cases": results}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    print(
        f"gpu_vs_emulator on {device_name}: {'PASS' if passed else 'FAIL'} ({sum(r['pass'] for r in results)}/{len(results)})"
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
