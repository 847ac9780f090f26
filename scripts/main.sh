#!/usr/bin/env bash
# The main job: set up, then the unlearning benchmark at its default (small) size:
# train a small CNN on Fashion-MNIST (cached; 100 images per class held out), forget one
# class, and compare forget/retain accuracy, MIA and time of retrain, finetune, Fisher
# Forgetting and SSD: at the paper's alpha, tuned per request (ssd_tune, scored on the
# held-out images), with ASSD's alpha, and the reference beside the fast path.
# Extra arguments go to `python -m ssd_fast.eval.bench` (see --help).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
python -m ssd_fast.eval.bench "$@"
