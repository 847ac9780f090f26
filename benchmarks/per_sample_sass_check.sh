#!/usr/bin/env bash
# The per-sample kernels' design targets, checked from the compiler alone (no GPU needed):
# compiles csrc/cuda/kernels/per_sample_sq*.cuh for sm_90 with the extension's nvcc flags,
# prints ptxas's registers / spills / shared memory per instantiation and the theoretical
# occupancy, and fails when
#   - a per_sample_sq_kernel spills or needs more than 64 registers (4 blocks of 256
#     threads per multiprocessor = 50% occupancy at sm_90),
#   - its SASS calls a subroutine (a 64-bit division or remainder is such a call),
#   - a tensor-core variant (SqMmaMath) holds no HMMA instruction, or the fp32 one does.
# Usage: bash benchmarks/per_sample_sass_check.sh            (needs nvcc; cuobjdump from CUDA or triton)
#        bash benchmarks/per_sample_sass_check.sh ssd_fast/_C*.so   (the SASS checks on a built extension)
set -euo pipefail
cd "$(dirname "$0")/.."
cuda_home=${CUDA_HOME:-/usr/local/cuda}
nvcc="$cuda_home/bin/nvcc"
cuobjdump=$(command -v cuobjdump || true)
[ -z "$cuobjdump" ] && [ -x "$cuda_home/bin/cuobjdump" ] && cuobjdump="$cuda_home/bin/cuobjdump"
if [ -z "$cuobjdump" ]; then
  cuobjdump=$(python -c 'import triton, os; print(os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump"))' 2>/dev/null || true)
fi
built_so=${1:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -z "$built_so" ]; then
cat > "$work/kernels.cu" <<'EOF'
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include "csrc/cuda/kernels/per_sample_sq.cuh"
#include "csrc/cuda/kernels/per_sample_sq_loaders.cuh"
#include "csrc/cuda/kernels/per_sample_sq_mma.cuh"
using namespace ssd_fast::cuda;
using Tf32 = SqMmaMath<SqTensorCore::kTf32>;
using Bf16 = SqMmaMath<SqTensorCore::kBf16>;
void* kernels[] = {
    (void*)per_sample_sq_kernel<true, true, ConvGradLoad<float>, Im2colLoad<float>>,
    (void*)per_sample_sq_kernel<false, false, TokenLoad<float>, TokenLoad<float>>,
    (void*)per_sample_sq_kernel<true, true, ConvGradLoad<__nv_bfloat16>, Im2colLoad<__nv_bfloat16>>,
    (void*)per_sample_sq_kernel<false, false, TokenLoad<__nv_bfloat16>, TokenLoad<__nv_bfloat16>>,
    (void*)per_sample_sq_kernel<true, true, ConvGradLoad<float>, Im2colLoad<float>, Tf32>,
    (void*)per_sample_sq_kernel<false, false, TokenLoad<float>, TokenLoad<float>, Tf32>,
    (void*)per_sample_sq_kernel<true, true, ConvGradLoad<__nv_bfloat16>, Im2colLoad<__nv_bfloat16>, Bf16>,
    (void*)per_sample_sq_kernel<false, false, TokenLoad<__nv_bfloat16>, TokenLoad<__nv_bfloat16>, Bf16>,
    (void*)add_slices_kernel,
};
EOF
"$nvcc" -std=c++17 -O3 --fmad=false --expt-relaxed-constexpr -arch=sm_90 -cubin -Xptxas -v -I. \
  "$work/kernels.cu" -o "$work/kernels.cubin" 2> "$work/ptxas.txt"
python - "$work/ptxas.txt" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
failed = False
for name, body in re.findall(r"Compiling entry function '(\w+)' for 'sm_90'\n(.*?)(?=Compile time|\Z)", text, re.S):
    regs = int(re.search(r"Used (\d+) registers", body).group(1))
    spill = sum(map(int, re.findall(r"(\d+) bytes spill (?:stores|loads)", body)))
    smem = int((re.search(r"(\d+) bytes smem", body) or [0, 0])[1]) if "smem" in body else 0
    threads = 256
    alloc = -(-regs // 8) * 8  # registers are allocated per warp in units of 256 = 8 per thread
    blocks = min(65536 // (alloc * threads), 2048 // threads, 32, (233472 // smem) if smem else 32)
    occupancy = blocks * threads / 2048
    short = re.sub(r"_ZN8ssd_fast4cuda\d+", "", name)[:70]
    print(f"{short:70s} regs={regs:3d} spill={spill:3d}B smem={smem:6d}B blocks/SM={blocks} occupancy={occupancy:.1%}")
    if "per_sample_sq_kernel" in name and (spill > 0 or regs > 64):
        print("  FAIL: the per-sample kernel must use at most 64 registers without spilling")
        failed = True
sys.exit(1 if failed else 0)
EOF
else
  cp "$built_so" "$work/kernels.cubin"  # a built extension: the SASS checks only, on its machine code
fi
if [ -n "$cuobjdump" ] && [ -x "$cuobjdump" ]; then
  "$cuobjdump" -sass "$work/kernels.cubin" > "$work/sass.txt"
  python - "$work/sass.txt" <<'EOF'
import re, sys
failed = False
kinds = set()
for name, body in re.findall(r"Function : (\S+)\n(.*?)(?=Function :|\Z)", open(sys.argv[1]).read(), re.S):
    if "per_sample_sq_kernel" not in name:
        continue
    calls = len(re.findall(r"\bCALL\b", body))
    lds128 = len(re.findall(r"LDS\.128", body))
    ffma = len(re.findall(r"\bFFMA\b", body))
    hmma = len(re.findall(r"\bHMMA\.", body))
    tensor_core = "SqMmaMath" in name
    kinds.add(tensor_core)
    print(f"{name[:70]:70s} calls={calls} LDS.128={lds128} FFMA={ffma} HMMA={hmma}")
    if calls:
        print("  FAIL: a subroutine call (a 64-bit division?) in the per-sample kernel")
        failed = True
    if tensor_core != (hmma > 0):
        print("  FAIL: HMMA instructions belong to the tensor-core variants and only to them")
        failed = True
if kinds != {False, True}:
    print("FAIL: expected both fp32 and tensor-core per_sample_sq_kernel variants in the SASS")
    failed = True
sys.exit(1 if failed else 0)
EOF
else
  echo "cuobjdump not found: SASS checks skipped"
fi
