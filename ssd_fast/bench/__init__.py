"""`python -m ssd_fast.bench`: an alias of `python -m ssd_fast.eval.bench`, the unlearning benchmark.

The benchmark moved into the evaluation harness (`ssd_fast.eval.bench`); this name, its
documented entry point before the move, keeps working and takes the same flags.
"""

from ..eval.bench import METHODS, BenchConfig, BenchResult, main, parse_args, run_bench

__all__ = ["METHODS", "BenchConfig", "BenchResult", "main", "parse_args", "run_bench"]
