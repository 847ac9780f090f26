#!/usr/bin/env bash
# The one script for the lent GPU machine (H100/H200, torch 2.11 cu130, no network):
# build against that machine's torch, run the CUDA tests, run the GPU benchmarks, and
# write everything under $OUT. Every step has a timeout; the whole fits one 10-minute device call.
#
#   device run:  bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/ssd_fast_gpu}
mkdir -p "$OUT"
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

step() { echo "== $* ($(date +%T))"; }

step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/device.txt"
$PY -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())' | tee -a "$OUT/device.txt"

step "build"
if ! $PY -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"; exit 1
fi
$PY -c 'from ssd_fast import _ops; assert _ops.has_kernel("cuda"), _ops.LOAD_ERROR; print("CUDA kernels loaded")'

step "raw-op errors, one process per case (each must raise RuntimeError, not crash)"
{ c++ --version | head -1; $PY benchmarks/raw_op_errors.py --diagnose; } 2>&1 | tee "$OUT/raw_op_errors.txt"
for device in cpu cuda; do
  for case in short_forget float64_importance accumulate_lengths negative_alpha selected_size; do
    out=$($PY benchmarks/raw_op_errors.py "$case" "$device" 2>&1); rc=$?
    echo "${out##*$'\n'} (exit $rc; 139 is a segmentation fault)" | tee -a "$OUT/raw_op_errors.txt"
  done
done

step "tests: the whole suite, since this machine's torch differs from CI's"
timeout 240 $PY -m pytest -q -p no:cacheprovider tests --junitxml="$OUT/tests.xml" 2>&1 | tail -25
tests_rc=${PIPESTATUS[0]}

step "kernel benchmarks"
timeout 150 $PY benchmarks/kernel_bench.py --device cuda --repeats 50 --json "$OUT/kernels.json" 2>&1 | tee "$OUT/kernels.txt"

step "per-sample benchmark: fused ops (CUDA kernels forced on: unverified until this script passes) vs torch path"
timeout 150 $PY benchmarks/bench_per_sample.py --device cuda --fused-cuda --models resnet18,vit_s16 \
  --methods plain,per_sample,per_sample_torch,plain_bf16,per_sample_bf16 --batch 256 --vit-batch 32 --layers \
  --json "$OUT/per_sample.json" 2>&1 | tail -60

# ---- per-sample kernels: SASS of the built extension, fraction of peak per layer, routing calibration (issue 19)
step "per-sample kernels: HMMA in the tensor-core variants, fraction of peak per layer, calibration"
so=$(ls ssd_fast/_C*.so | head -1)
bash benchmarks/per_sample_sass_check.sh "$so" 2>&1 | tee "$OUT/per_sample_sass.txt" | tail -12
timeout 120 $PY benchmarks/per_sample_peak.py --device cuda --repeats 3 --json "$OUT/per_sample_peak.json" \
  --calibration "$OUT/per_sample_calibration.json" 2>&1 | tee "$OUT/per_sample_peak.txt" | tail -80
# ---- end of the per-sample kernels step

step "precision: exact / tf32 / bf16 importances against fp64"
timeout 45 $PY benchmarks/precision_error.py --device cuda --json "$OUT/precision.json" 2>&1 | tail -8

step "compute-sanitizer memcheck: the fused per-sample ops' CUDA tests"
SANITIZER=$(command -v compute-sanitizer || echo "$CUDA_HOME/bin/compute-sanitizer")
timeout 60 "$SANITIZER" --tool memcheck --error-exitcode 3 $PY -m pytest -q -p no:cacheprovider \
  tests/ops/test_per_sample_sq.py -k "cuda and (batch_1 or groups or one_token or odd_tiles)" 2>&1 | tail -15

step "per-sample on transformers: GPT-2-small-sized (12x768) at sequence length 512"
timeout 90 $PY benchmarks/bench_per_sample_hf.py --models gpt2 bert lstm --preset gpt2-small --seq 512 --batch 8 --repeats 5 --device cuda --json "$OUT/per_sample_hf.json" 2>&1 | tail -6

step "done: tests exit $tests_rc"
exit "$tests_rc"
