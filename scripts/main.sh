#!/usr/bin/env bash
# The main job: set up, then the unlearning benchmark at its default (small) size:
# train a small CNN on Fashion-MNIST (cached), forget one class with ssd_fast, and compare
# forget/retain accuracy, MIA and time with the baselines, fast path beside reference.
# Extra arguments go to `python -m ssd_fast.eval.bench` (see --help).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
python -m ssd_fast.eval.bench "$@"
