#!/usr/bin/env python3
"""Resource check of every CUDA kernel at sm_90: registers, spills, shared memory, occupancy.

Compiles csrc/cuda/kernels/ptxas_instantiations.cu (every kernel instantiation the
extension launches) with ``nvcc -arch=sm_90 -cubin -Xptxas -v`` and the extension's
flags, reads ptxas's report for each kernel, computes its theoretical occupancy on an
sm_90 multiprocessor, and compares with csrc/cuda/kernels/ptxas_baseline.json.

Fails (exit 1) when a kernel
- spills (more spill stores or loads than its baseline entry, which is normally 0);
- has a lower theoretical occupancy than its baseline entry (more registers or shared
  memory than the occupancy step allows);
- is new (not in the baseline) or a baseline entry is no longer compiled.
A register increase that keeps the occupancy is reported, not failed.

To accept new figures, update the baseline in the same commit, with a reason:

    python scripts/ptxas_check.py --update --reason "tokens kernel: double-buffered staging"

ctest runs the check (test ``ptxas_check``) when nvcc is found.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "csrc/cuda/kernels/ptxas_instantiations.cu"
BASELINE = ROOT / "csrc/cuda/kernels/ptxas_baseline.json"
ARCH = "sm_90"
# The extension's nvcc flags (setup.py) and those torch's BuildExtension adds.
FLAGS = [
    "-O3",
    "--fmad=false",
    "-std=c++20",
    "-D__CUDA_NO_HALF_OPERATORS__",
    "-D__CUDA_NO_HALF_CONVERSIONS__",
    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-D__CUDA_NO_HALF2_OPERATORS__",
    "--expt-relaxed-constexpr",
]

# An sm_90 multiprocessor (CUDA C Programming Guide, compute capability 9.0).
SM_REGISTERS = 65536
SM_THREADS = 2048
SM_BLOCKS = 32
SM_SHARED = 228 * 1024
SHARED_RESERVED_PER_BLOCK = 1024  # the runtime's own share of each block's shared memory
SHARED_GRANULE = 128
REGISTER_GRANULE = 256  # registers are allocated per warp in units of 256


def occupancy(registers: int, shared: int, threads: int) -> tuple[int, float, str]:
    """(resident blocks per SM, fraction of the SM's 64 warps, the limiting resource)."""
    warps = math.ceil(threads / 32)
    limits = {"blocks": SM_BLOCKS, "threads": SM_THREADS // (warps * 32)}
    if registers > 0:
        per_warp = math.ceil(registers * 32 / REGISTER_GRANULE) * REGISTER_GRANULE
        limits["registers"] = (SM_REGISTERS // per_warp) // warps
    per_block = math.ceil((shared + SHARED_RESERVED_PER_BLOCK) / SHARED_GRANULE) * SHARED_GRANULE
    limits["shared memory"] = SM_SHARED // per_block
    blocks = min(limits.values())
    order = ["threads", "blocks", "registers", "shared memory"]  # which to name on a tie
    limiter = min(limits, key=lambda k: (limits[k], order.index(k)))
    return blocks, blocks * warps / (SM_THREADS // 32), limiter


def nvcc_path() -> str:
    import os
    import shutil

    home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    candidate = Path(home) / "bin" / "nvcc"
    found = str(candidate) if candidate.exists() else shutil.which("nvcc")
    if not found:
        sys.exit("ptxas_check: nvcc not found (set CUDA_HOME)")
    return found


def torch_include() -> list[str]:
    from torch.utils.cpp_extension import include_paths

    return include_paths()[:1]


def demangle(names: list[str]) -> dict[str, str]:
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return dict(zip(names, out.splitlines()))


def short_name(demangled: str) -> str:
    """The kernel and its template arguments, without namespaces and parameter list."""
    name = demangled.replace("ssd_fast::cuda::", "").replace("(anonymous namespace)::", "")
    name = name.removeprefix("void ")  # a template's demangled name starts with its return type
    depth = 0
    for i, ch in enumerate(name):  # cut the parameter list: the first '(' outside <...>
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "(" and depth == 0:
            return name[:i]
    return name


def threads_per_kernel(source: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"ptxas-threads:\s*(\w+)\s+(\d+)", source)}


def compile_report(nvcc: str, includes: list[str]) -> tuple[dict[str, dict], str]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [nvcc, f"-arch={ARCH}", "-cubin", "-Xptxas", "-v", *FLAGS, *(f"-I{i}" for i in includes)]
        cmd += ["-o", str(Path(tmp) / "kernels.cubin"), str(SOURCE)]
        r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"ptxas_check: nvcc failed:\n{r.stdout}{r.stderr}")
    report = r.stdout + r.stderr
    kernels: dict[str, dict] = {}
    current = None
    for line in report.splitlines():
        if m := re.search(r"Compiling entry function '(\w+)' for '(\w+)'", line):
            current = m.group(1)
            kernels[current] = {"registers": 0, "stack": 0, "spill_stores": 0, "spill_loads": 0, "smem": 0}
        elif current and (
            m := re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        ):
            kernels[current] |= {"stack": int(m.group(1)), "spill_stores": int(m.group(2)), "spill_loads": int(m.group(3))}  # fmt: skip
        elif current and (m := re.search(r"Used (\d+) registers", line)):
            kernels[current]["registers"] = int(m.group(1))
            if s := re.search(r"(\d+) bytes smem", line):
                kernels[current]["smem"] = int(s.group(1))
    names = demangle(list(kernels))
    threads = threads_per_kernel(SOURCE.read_text())
    result = {}
    for mangled, figures in kernels.items():
        name = short_name(names[mangled])
        base = re.split(r"[<(]", name)[0]
        if base not in threads:
            sys.exit(f"ptxas_check: no 'ptxas-threads: {base} N' line in {SOURCE.name}")
        blocks, occ, limiter = occupancy(figures["registers"], figures["smem"], threads[base])
        result[name] = figures | {
            "threads": threads[base],
            "blocks_per_sm": blocks,
            "occupancy": round(occ, 4),
            "limited_by": limiter,
        }
    version = re.search(r"release [\d.]+, V([\d.]+)", subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout)  # fmt: skip
    return result, version.group(1) if version else "?"


def compare(current: dict[str, dict], baseline: dict[str, dict]) -> tuple[list[str], list[str]]:
    failures, notes = [], []
    for name, now in current.items():
        was = baseline.get(name)
        if was is None:
            failures.append(f"{name}: new kernel, not in the baseline")
            continue
        spills = now["spill_stores"] + now["spill_loads"]
        if spills > was["spill_stores"] + was["spill_loads"]:
            failures.append(f"{name}: spills {now['spill_stores']} B stores / {now['spill_loads']} B loads")
        if now["occupancy"] < was["occupancy"]:
            failures.append(
                f"{name}: occupancy {was['occupancy']:.1%} -> {now['occupancy']:.1%} "
                f"(registers {was['registers']} -> {now['registers']}, smem {was['smem']} -> {now['smem']} B)"
            )
        elif now["registers"] != was["registers"] or now["smem"] != was["smem"]:
            notes.append(
                f"{name}: registers {was['registers']} -> {now['registers']}, smem {was['smem']} -> {now['smem']} B, "
                f"occupancy {was['occupancy']:.1%} -> {now['occupancy']:.1%}"
            )
    for name in baseline:
        if name not in current:
            failures.append(f"{name}: in the baseline but no longer compiled")
    return failures, notes


def table(current: dict[str, dict]) -> str:
    rows = [f"{'kernel':100s} regs spill smem  occ   limit"]
    for name, k in sorted(current.items()):
        spill = k["spill_stores"] + k["spill_loads"]
        rows.append(
            f"{name:100s} {k['registers']:4d} {spill:5d} {k['smem']:5d} {k['occupancy']:5.1%} {k['limited_by']}"
        )
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--update", action="store_true", help="write the current figures to the baseline")
    ap.add_argument("--reason", help="why the figures changed (required with --update when anything changed)")
    ap.add_argument("--include", action="append", help="torch's include directory (default: from the torch package)")
    ap.add_argument("--json", help="also write the current figures here")
    args = ap.parse_args()

    current, version = compile_report(nvcc_path(), args.include or torch_include())
    print(table(current))
    if args.json:
        Path(args.json).write_text(json.dumps(current, indent=1) + "\n")
    stored = json.loads(BASELINE.read_text()) if BASELINE.exists() else {"kernels": {}}
    baseline = stored["kernels"]
    if args.update:
        changed = [n for n, k in current.items() if {**k, "reason": None} != {**baseline.get(n, {}), "reason": None}]
        changed += [n for n in baseline if n not in current]
        if changed and not args.reason:
            sys.exit("ptxas_check: --update changes " + ", ".join(changed) + ": say why with --reason")
        kernels = {
            n: k | {"reason": args.reason if n in changed else baseline[n]["reason"]} for n, k in current.items()
        }
        out = {
            "arch": ARCH,
            "nvcc": version,
            "flags": FLAGS,
            "sm": {"registers": SM_REGISTERS, "threads": SM_THREADS, "blocks": SM_BLOCKS, "shared_bytes": SM_SHARED},
            "kernels": dict(sorted(kernels.items())),
        }
        BASELINE.write_text(json.dumps(out, indent=1) + "\n")
        print(f"baseline updated: {len(changed)} entr{'y' if len(changed) == 1 else 'ies'} changed")
        return 0
    if stored.get("nvcc") not in (None, version):
        print(f"note: baseline from nvcc {stored['nvcc']}, this is {version}")
    failures, notes = compare(current, baseline)
    for n in notes:
        print("note:", n)
    for f in failures:
        print("FAIL:", f)
    if failures:
        print('accept new figures with: python scripts/ptxas_check.py --update --reason "..."')
        return 1
    print(f"ptxas check passed: {len(current)} kernels, no spills, occupancy as in the baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
