"""Calls a raw op with one bad argument and says whether it raised RuntimeError.

Run one case per process (benchmarks/gpu_check.sh does): on the GPU machine's torch 2.11,
checks whose message carried a number once killed the process instead of raising, so a
crash must not take the other cases with it.

    python benchmarks/raw_op_errors.py short_forget cuda
    python benchmarks/raw_op_errors.py --diagnose    # the C++ runtime libraries in the process
"""

from __future__ import annotations

import sys

import torch

import ssd_fast  # noqa: F401  (loads the ops)

CASES = {
    "short_forget": lambda p, f, d, s: torch.ops.ssd_fast.select_dampen_(p, f[:0], d, 1.0, 1.0, s),
    "float64_importance": lambda p, f, d, s: torch.ops.ssd_fast.select_dampen_(p, [f[0].double()], d, 1.0, 1.0, s),
    "accumulate_lengths": lambda p, f, d, s: torch.ops.ssd_fast.sq_accumulate_(f, [], 1.0, False),
    "negative_alpha": lambda p, f, d, s: torch.ops.ssd_fast.select_dampen_(p, f, d, -1.0, 1.0, s),
    "selected_size": lambda p, f, d, s: torch.ops.ssd_fast.select_dampen_(p, f, d, 1.0, 1.0, s.repeat(3)),
}


def diagnose() -> None:
    """What the process runs on: the libraries a std::string or iostream could come from."""
    print("torch", torch.__version__, "cxx11 abi", torch._C._GLIBCXX_USE_CXX11_ABI)
    with open("/proc/self/maps") as maps:
        libs = sorted(
            {line.split()[-1] for line in maps if "libstdc++" in line or "libgcc_s" in line or "libgomp" in line}
        )
    print("mapped:", *libs, sep="\n  ")


def main(case: str, device: str) -> int:
    params, forget, full = (
        [torch.ones(4, device=device)],
        [torch.ones(4, device=device)],
        [torch.ones(4, device=device)],
    )
    selected = torch.zeros(1, dtype=torch.int64, device=device)
    try:
        CASES[case](params, forget, full, selected)
    except RuntimeError as e:
        print(f"{case} on {device}: RuntimeError: {str(e).splitlines()[0][:100]}")
        return 0
    print(f"{case} on {device}: no error raised")
    return 1


if __name__ == "__main__":
    if sys.argv[1] == "--diagnose":
        diagnose()
        sys.exit(0)
    sys.exit(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "cpu"))
