#!/usr/bin/env bash
# The test command: set up (venv, data, build), then the C++ test and the Python tests.
# CUDA tests skip without a GPU; nothing here depends on timing or the network.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
bash scripts/cmake_test.sh cmake-build
python -m pytest -q tests "$@"
