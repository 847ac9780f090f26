#!/usr/bin/env bash
# The test command: set up (venv, data, build with every kernel, CUDA ones included), then the
# C++ test, the Python tests, and the linter and formatter checks (ruff, configured in pyproject.toml).
# CUDA tests skip without a GPU; nothing here depends on timing or the network.
# Lint runs first and pytest last, whatever lint gave, so that a formatting slip never hides
# a test result, pytest's summary closes the run, and the exit status fails if any step did.
#
# SSD_FAST_TEST_CPU_CAPABILITIES=1 (or a list such as "default avx2") runs pytest once per CPU
# vector width instead, to show that no test depends on the CPU's vector width or vendor:
# ATEN_CPU_CAPABILITY picks ATen's kernels, ONEDNN_MAX_CPU_ISA oneDNN's and
# MKL_ENABLE_INSTRUCTIONS MKL's. It runs the suite twice, so it is not part of CI.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export SSD_FAST_KERNELS=${SSD_FAST_KERNELS:-all}  # CI compiles the CUDA kernels too (see scripts/setup.sh)
source scripts/setup.sh

capabilities=${SSD_FAST_TEST_CPU_CAPABILITIES:-}
if [ -n "$capabilities" ]; then
  [ "$capabilities" = 1 ] && capabilities="default avx2"
  echo "test: CPU: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
  status=0
  results=()
  for cap in $capabilities; do
    case "$cap" in
      default) isa=SSE41 mkl=SSE4_2 ;;
      avx2) isa=AVX2 mkl=AVX2 ;;
      avx512) isa=AVX512_CORE mkl=AVX512 ;;
      *) echo "test: unknown CPU capability '$cap' (default, avx2 or avx512)" >&2; exit 2 ;;
    esac
    echo "test: pytest under ATEN_CPU_CAPABILITY=$cap ONEDNN_MAX_CPU_ISA=$isa MKL_ENABLE_INSTRUCTIONS=$mkl" \
      "(torch reports $(ATEN_CPU_CAPABILITY=$cap python -c 'import torch; print(torch.backends.cpu.get_cpu_capability())'))"
    if ATEN_CPU_CAPABILITY=$cap ONEDNN_MAX_CPU_ISA=$isa MKL_ENABLE_INSTRUCTIONS=$mkl python -m pytest -q tests "$@"; then
      results+=("$cap: passed")
    else
      results+=("$cap: FAILED")
      status=1
    fi
  done
  printf 'test: ATEN_CPU_CAPABILITY=%s\n' "${results[@]}"
  exit "$status"
fi

bash scripts/cmake_test.sh cmake-build
status=0
python -m ruff check . || status=1
python -m ruff format --check . || status=1
python -m pytest -q tests "$@" || status=$?
exit "$status"
