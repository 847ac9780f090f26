"""`python -m ssd_fast.eval.bench`: the SSD paper's unlearning benchmark on Fashion-MNIST.

Runs baseline, retrain, finetune, Fisher Forgetting (bs-1 loop and per-sample engine), SSD
at the paper's alpha, SSD tuned (`ssd_fast.tune`), SSD with ASSD's alpha, and the SSD
reference over seeds for one scenario; prints the paper-style table and writes table.md,
results.json and plot.png. `python -m ssd_fast.eval.bench --help` lists the flags; the
defaults are the README's main job (small, one class, a few minutes on 2 CPU cores).
"""

from .config import METHODS, BenchConfig, parse_args
from .deps import check_optional_dependencies
from .runner import BenchResult, run_bench


def main(argv: list[str] | None = None) -> BenchResult:
    """Parse flags, run, print the table, write the outputs; returns the result."""
    import time

    from .plot import save_plot
    from .report import markdown_table, write_outputs

    config = parse_args(argv)
    check_optional_dependencies()  # before training: a missing one used to fail after the whole run
    start = time.perf_counter()
    try:
        result = run_bench(config)
    except (ValueError, FileNotFoundError) as err:  # bad input: a message, not a traceback
        raise SystemExit(f"python -m ssd_fast.eval.bench: error: {err}") from err
    table = markdown_table(result)
    print("\n" + table)
    paths = write_outputs(result, config.out)
    paths["plot"] = save_plot(result, f"{config.out}/plot.png")
    print(f"wrote {', '.join(str(p) for p in paths.values())}  (total {time.perf_counter() - start:.0f} s)")
    return result


__all__ = ["METHODS", "BenchConfig", "BenchResult", "main", "parse_args", "run_bench"]
