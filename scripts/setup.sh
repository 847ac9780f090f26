#!/usr/bin/env bash
# Prepares a fresh machine of this kind: a venv in .venv with requirements.txt, the
# Fashion-MNIST package, and the compiled extension (CPU + CUDA kernels). Idempotent:
# a second run only rebuilds what changed. Source it or run it; it leaves .venv active
# when sourced.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --disable-pip-version-check -r requirements.txt
# SUPREME pins a GPU stack (torchaudio, wandb, ...); its SSD methods, which the tests run
# against ssd_fast's, need only torch, numpy and Lightning: install it without its pins.
python -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt

if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: installing Fashion-MNIST (apt package dataset-fashion-mnist)"
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/tmp/ssd_fast_apt.log 2>&1 ||
      echo "setup: could not install Fashion-MNIST (see /tmp/ssd_fast_apt.log); data tests will use the digits fallback or skip"
  else
    echo "setup: Fashion-MNIST is not installed and apt-get is unavailable; data tests will skip"
  fi
fi

# torch guesses CUDA_HOME from the nvcc on PATH, which links wrongly here; name the toolkit.
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDA_HOME=/usr/local/cuda
fi
# pip builds editable installs in a fresh temporary folder, so skip it when the compiled
# library is already newer than every source it is built from.
so=$(ls ssd_fast/_C*.so 2>/dev/null | head -1 || true)
if [ -n "$so" ] && [ -z "$(find csrc setup.py -newer "$so" -type f | head -1)" ] && python -c 'import importlib.metadata as m; m.version("ssd_fast")' 2>/dev/null; then
  echo "setup: ssd_fast is built and up to date ($so)"
  python -c 'from ssd_fast import _ops; print("setup: kernels for", [d for d in ("cpu", "cuda") if _ops.has_kernel(d)])'
  return 0 2>/dev/null || exit 0
fi
echo "setup: building ssd_fast (CUDA_HOME=${CUDA_HOME:-unset})"
python -m pip install -v --disable-pip-version-check --no-build-isolation --no-deps -e . >/tmp/ssd_fast_build.log 2>&1 ||
  { tail -60 /tmp/ssd_fast_build.log; echo "setup: build failed (full log: /tmp/ssd_fast_build.log)"; exit 1; }
grep "^ *ssd_fast:" /tmp/ssd_fast_build.log | sort -u | sed "s/^ */setup: /" || true
python -c 'from ssd_fast import _ops; print("setup: kernels for", [d for d in ("cpu", "cuda") if _ops.has_kernel(d)])'
