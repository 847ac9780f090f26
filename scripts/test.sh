#!/usr/bin/env bash
# The test command: set up (venv, data, build), then the Python tests and the C++ test.
# CUDA tests skip without a GPU; nothing here depends on timing or the network.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
python -m pytest -q tests "$@"
bash scripts/cmake_test.sh cmake-build
