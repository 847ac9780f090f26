#!/usr/bin/env bash
# Prepares a fresh machine of this kind: a venv in .venv with requirements.txt, the
# Fashion-MNIST package, and the compiled extension. Idempotent: a second run only
# rebuilds what changed. Source it or run it; it leaves .venv active when sourced.
#
# SSD_FAST_KERNELS says which kernels to build:
#   all       (default; what scripts/test.sh and CI use) the CPU kernels, and the CUDA kernels
#             whenever torch is a CUDA build and nvcc is found, with or without a GPU
#   runnable  (scripts/main.sh) only what this machine can run: the CUDA kernels only when a
#             GPU is visible, so a machine without one skips the long CUDA compile
# The kind built is recorded in .cache/setup/kernels; a CPU-only build is rebuilt when all
# kernels are asked for, while a full build serves a "runnable" request as it is.
# Logs go to .cache/setup/ in this checkout (build.log, apt.log), never to shared paths.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
logs=.cache/setup
mkdir -p "$logs"

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --disable-pip-version-check -r requirements.txt
# SUPREME pins a GPU stack (torchaudio, wandb, ...); its SSD methods, which the tests run
# against ssd_fast's, need only torch, numpy and Lightning: install it without its pins.
python -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt

fmnist=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -e "$fmnist" ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: installing Fashion-MNIST (apt package dataset-fashion-mnist; log: $logs/apt.log)"
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >"$logs/apt.log" 2>&1 || true
  fi
  # Report what is there now, not apt's exit status: another setup on this machine may have
  # installed the package while this one's apt waited for the lock and failed.
  if [ -e "$fmnist" ]; then
    echo "setup: Fashion-MNIST is installed ($(dirname "$fmnist"))"
  else
    echo "setup: Fashion-MNIST is NOT installed (see $logs/apt.log if apt ran); data tests and the benchmark use the digits fallback or skip"
  fi
fi

# torch guesses CUDA_HOME from the nvcc on PATH, which links wrongly here; name the toolkit.
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDA_HOME=/usr/local/cuda
fi

gpu_visible() {
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 &&
    python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null
}
case "${SSD_FAST_KERNELS:-all}" in
  all) want=all ;;
  runnable) if gpu_visible; then want=all; else want=cpu; fi ;;
  *) echo "setup: SSD_FAST_KERNELS must be 'all' or 'runnable', got '${SSD_FAST_KERNELS}'" >&2; exit 2 ;;
esac
built=$(cat "$logs/kernels" 2>/dev/null || echo none)

# pip builds editable installs in a fresh temporary folder, so skip it when the compiled
# library is already newer than every source it is built from, and of a kind that serves.
so=$(ls ssd_fast/_C*.so 2>/dev/null | head -1 || true)
if [ -n "$so" ] && [ -z "$(find csrc setup.py -newer "$so" -type f | head -1)" ] &&
  { [ "$built" = all ] || [ "$built" = "$want" ]; } &&
  python -c 'import importlib.metadata as m; m.version("ssd_fast")' 2>/dev/null; then
  echo "setup: ssd_fast is built and up to date ($so, kernels: $built)"
  python -c 'from ssd_fast import _ops; print("setup: kernels for", [d for d in ("cpu", "cuda") if _ops.has_kernel(d)])'
  return 0 2>/dev/null || exit 0
fi
force_cpu=${SSD_FAST_FORCE_CPU:-0}
if [ "$want" = cpu ]; then
  force_cpu=1
  echo "setup: no GPU visible, so building the CPU kernels only (SSD_FAST_KERNELS=runnable)"
fi
echo "setup: building ssd_fast (kernels: $want, CUDA_HOME=${CUDA_HOME:-unset}; log: $logs/build.log)"
rm -f "$logs/kernels" ssd_fast/_C*.so  # a library left in place could pass as up to date and skip the build
SSD_FAST_FORCE_CPU=$force_cpu python -m pip install -v --disable-pip-version-check --no-build-isolation --no-deps -e . \
  >"$logs/build.log" 2>&1 ||
  { tail -60 "$logs/build.log"; echo "setup: build failed (full log: $logs/build.log)"; exit 1; }
if [ "$force_cpu" = 1 ]; then echo cpu >"$logs/kernels"; else echo all >"$logs/kernels"; fi
grep "^ *ssd_fast:" "$logs/build.log" | sort -u | sed "s/^ */setup: /" || true
python -c 'from ssd_fast import _ops; print("setup: kernels for", [d for d in ("cpu", "cuda") if _ops.has_kernel(d)])'
