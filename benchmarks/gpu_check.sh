#!/usr/bin/env bash
# The one script for the lent GPU machine (H100/H200, no network): build against that
# machine's torch, check the CUDA kernels (the CUDA tests, the GPU's bits against the
# emulator's, compute-sanitizer), then run the GPU benchmarks; everything goes under $OUT.
# The whole run keeps within GPU_CHECK_BUDGET_S (default 500 s), so that it fits one
# 9-minute device call with the machine's start and the transfers: every step's timeout is
# cut to what is left, verification first, benchmarks after.
#
#   device run:  bash benchmarks/gpu_check.sh        (writes $OUT/verdict.json)
#
# The verdict (last line, and $OUT/verdict.json) is PASS only when the extension built
# with its CUDA kernels, the test suite passed, every fp32 case gave the emulator's bits,
# and compute-sanitizer found nothing. This script changes no source file. When it
# passes, a person flips the switch by hand, in the same commit as this run's output
# (verdict.json, bits.json, tests.xml, the card named in device.txt):
#   ssd_fast/per_sample/_fused.py:   CUDA_VERIFIED = False   ->   CUDA_VERIFIED = True
# and updates the tests that pin it (tests/per_sample/test_fused.py asserts it is False)
# and the README's note on it (grep -rn CUDA_VERIFIED).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/ssd_fast_gpu}
mkdir -p "$OUT"
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET_S:-500}
START=$SECONDS

step() { echo "== $* ($(date +%T), $((SECONDS - START)) s of $BUDGET)"; }
# left WANT: WANT seconds, or what is left of the budget if less (0: skip the step)
left() {
  local rest=$((BUDGET - (SECONDS - START)))
  if ((rest < 10)); then echo 0; elif ((rest < $1)); then echo "$rest"; else echo "$1"; fi
}
# run_step WANT CMD...: CMD under a timeout of left WANT; 124 when skipped or cut
run_step() {
  local t
  t=$(left "$1")
  shift
  if ((t == 0)); then echo "(skipped: the budget is spent)"; return 124; fi
  timeout "$t" "$@"
}

build_rc=1 tests_rc=1 bits_rc=1 sanitizer_rc=1

step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/device.txt"
$PY -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())' | tee -a "$OUT/device.txt"

step "build: the extension, and the emulator's bits program beside it"
# g++ builds the emulated kernels (a few seconds) while pip builds the extension
(g++ -std=c++20 -O2 -ffp-contract=off -pthread -Icsrc/emulator tests/emulator/emulator_bits.cpp \
  -o "$OUT/emulator_bits" > "$OUT/emulator_build.log" 2>&1) &
emu_pid=$!
if run_step 300 $PY -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 &&
  $PY -c 'from ssd_fast import _ops; assert _ops.has_kernel("cuda"), _ops.LOAD_ERROR; print("CUDA kernels loaded")'; then
  build_rc=0
else
  tail -40 "$OUT/build.log"
fi
wait "$emu_pid" || { echo "emulator build failed:"; tail -20 "$OUT/emulator_build.log"; }

if ((build_rc == 0)); then
  step "bits: the real CUDA ops against the emulated kernels, fp32, bit for bit"
  if [ -x "$OUT/emulator_bits" ]; then
    run_step 90 $PY benchmarks/gpu_vs_emulator.py --device cuda --emulator "$OUT/emulator_bits" \
      --json "$OUT/bits.json" 2>&1 | tail -15
    bits_rc=${PIPESTATUS[0]}
  fi

  step "compute-sanitizer memcheck: the fused per-sample ops' CUDA tests"
  SANITIZER=$(command -v compute-sanitizer || echo "$CUDA_HOME/bin/compute-sanitizer")
  run_step 60 "$SANITIZER" --tool memcheck --error-exitcode 3 $PY -m pytest -q -p no:cacheprovider \
    tests/ops/test_per_sample_sq.py -k "cuda and (batch_1 or groups or one_token or odd_tiles)" 2>&1 | tail -15
  sanitizer_rc=${PIPESTATUS[0]}

  step "tests: the whole suite, since this machine's torch differs from CI's"
  run_step 180 $PY -m pytest -q -p no:cacheprovider tests --junitxml="$OUT/tests.xml" 2>&1 | tail -25
  tests_rc=${PIPESTATUS[0]}

  step "per-sample benchmark: fused ops (CUDA kernels forced on: unverified until this script passes) vs torch path"
  run_step 110 $PY benchmarks/bench_per_sample.py --device cuda --fused-cuda --models resnet18,vit_s16 \
    --methods plain,per_sample,per_sample_torch,plain_bf16,per_sample_bf16 --batch 256 --vit-batch 32 --layers \
    --json "$OUT/per_sample.json" 2>&1 | tail -60

  # ---- per-sample kernels: SASS of the built extension, fraction of peak per layer, routing calibration (issue 19)
  step "per-sample kernels: HMMA in the tensor-core variants, fraction of peak per layer, calibration"
  so=$(ls ssd_fast/_C*.so | head -1)
  run_step 20 bash benchmarks/per_sample_sass_check.sh "$so" 2>&1 | tee "$OUT/per_sample_sass.txt" | tail -12
  run_step 90 $PY benchmarks/per_sample_peak.py --device cuda --repeats 3 --json "$OUT/per_sample_peak.json" \
    --calibration "$OUT/per_sample_calibration.json" 2>&1 | tee "$OUT/per_sample_peak.txt" | tail -80
  # ---- end of the per-sample kernels step

  step "kernel benchmarks"
  run_step 60 $PY benchmarks/kernel_bench.py --device cuda --repeats 30 --json "$OUT/kernels.json" 2>&1 |
    tee "$OUT/kernels.txt" | tail -30

  step "precision: exact / tf32 / bf16 importances against fp64"
  run_step 30 $PY benchmarks/precision_error.py --device cuda --json "$OUT/precision.json" 2>&1 | tail -8

  step "per-sample on transformers: GPT-2-small-sized (12x768) at sequence length 512"
  run_step 60 $PY benchmarks/bench_per_sample_hf.py --models gpt2 bert lstm --preset gpt2-small --seq 512 --batch 8 \
    --repeats 5 --device cuda --json "$OUT/per_sample_hf.json" 2>&1 | tail -6

  step "raw-op errors, one process per case (each must raise RuntimeError, not crash)"
  { c++ --version | head -1; run_step 20 $PY benchmarks/raw_op_errors.py --diagnose; } 2>&1 | tee "$OUT/raw_op_errors.txt"
  for device in cpu cuda; do
    for case in short_forget float64_importance accumulate_lengths negative_alpha selected_size; do
      out=$(run_step 15 $PY benchmarks/raw_op_errors.py "$case" "$device" 2>&1); rc=$?
      echo "${out##*$'\n'} (exit $rc; 139 is a segmentation fault)" | tee -a "$OUT/raw_op_errors.txt"
    done
  done
fi

verdict=FAIL
if ((build_rc == 0 && tests_rc == 0 && bits_rc == 0 && sanitizer_rc == 0)); then verdict=PASS; fi
cat > "$OUT/verdict.json" << EOF
{"verdict": "$verdict", "build": $build_rc, "tests": $tests_rc, "bits": $bits_rc, "compute_sanitizer": $sanitizer_rc,
 "seconds": $((SECONDS - START)), "budget_s": $BUDGET, "device": "$(head -2 "$OUT/device.txt" | tail -1 | cut -d, -f1)"}
EOF
step "done"
echo "VERDICT: $verdict (exit codes: build $build_rc, tests $tests_rc, bits $bits_rc, compute-sanitizer $sanitizer_rc)"
if [ "$verdict" = PASS ]; then
  echo "To enable the CUDA kernels: set CUDA_VERIFIED = True in ssd_fast/per_sample/_fused.py by hand, committed with $OUT's files."
fi
[ "$verdict" = PASS ]
