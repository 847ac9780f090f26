#!/usr/bin/env bash
# The main job: set up, then the unlearning benchmark at its default (small) size:
# train a small CNN on Fashion-MNIST (cached; 100 images per class held out), forget one
# class, and compare forget/retain accuracy, MIA and time of retrain, finetune, Fisher
# Forgetting and SSD: at the paper's alpha, tuned per request (ssd_tune, scored on the
# held-out images), with ASSD's alpha, and the reference beside the fast path.
# Extra arguments go to `python -m ssd_fast.eval.bench` (see --help).
# Setup builds only the kernels this machine can run (no CUDA compile without a visible GPU);
# SSD_FAST_KERNELS=all builds them all, as scripts/test.sh does.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export SSD_FAST_KERNELS=${SSD_FAST_KERNELS:-runnable}
source scripts/setup.sh
python -m ssd_fast.eval.bench "$@"
