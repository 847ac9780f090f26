#!/usr/bin/env bash
# Builds the C++ library and its test against the installed libtorch, then runs ctest.
# Usage: scripts/cmake_test.sh [build-dir]    (expects the venv's python on PATH)
set -euo pipefail
build=${1:-cmake-build}
site=$(python -c 'import site; print(site.getsitepackages()[0])')
cuda_lib="$site/nvidia/cu13/lib"
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
# a fixed arch list stops the torch CMake config from probing for GPUs with a test build
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
cmake -S . -B "$build" -G Ninja \
  -DCMAKE_PREFIX_PATH="$(python -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
  -DCUDA_TOOLKIT_ROOT_DIR="$CUDA_HOME" \
  -DCUDA_nvrtc_LIBRARY="$cuda_lib/libnvrtc.so.13" \
  -DSSD_FAST_CUDA="${SSD_FAST_CMAKE_CUDA:-OFF}" > "$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
cmake --build "$build" -j2
LD_LIBRARY_PATH="$cuda_lib:${LD_LIBRARY_PATH:-}" ctest --test-dir "$build" --output-on-failure
