#!/usr/bin/env bash
# The test command: set up (venv, data, build), then the C++ test, the Python tests, and
# the linter and formatter checks (ruff, configured in pyproject.toml).
# CUDA tests skip without a GPU; nothing here depends on timing or the network.
# Lint runs first and pytest last, whatever lint gave, so that a formatting slip never hides
# a test result, pytest's summary closes the run, and the exit status fails if any step did.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
bash scripts/cmake_test.sh cmake-build
status=0
python -m ruff check . || status=1
python -m ruff format --check . || status=1
python -m pytest -q tests "$@" || status=$?
exit "$status"
