"""`python -m ssd_fast.bench`, the benchmark's entry point before it moved into ssd_fast.eval, still works."""

from __future__ import annotations

import subprocess
import sys

import ssd_fast.bench
import ssd_fast.eval.bench


def test_the_alias_is_the_benchmark():
    assert ssd_fast.bench.main is ssd_fast.eval.bench.main


def test_python_m_ssd_fast_bench_runs_the_benchmark_cli():
    done = subprocess.run(
        [sys.executable, "-m", "ssd_fast.bench", "--help"], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and "--methods" in done.stdout
