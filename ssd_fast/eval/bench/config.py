"""The benchmark's settings and command line. The defaults ARE the README's main job:
one full-class scenario at a small size, every method, one seed, in minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field

from ..data.scenarios import SCENARIOS, pin_for
from ..models import MODELS

METHODS = ("baseline", "retrain", "finetune", "fisher", "fisher_fast", "ssd", "ssd_tune", "ssd_auto", "ssd_reference")
DEFAULT_METHODS = METHODS
IMPORTANCE_MODES = ("batch", "per_sample")
# per_sample importance does not depend on the batch size, so it runs at whichever is fastest.
# On the 2-core CPU, per_sample on the small CNN's 406 forget images took 0.31 s of CPU at
# batch 32-128, 0.35 s at 256 and 0.45 s at 512 (1 thread, min of 3): 64 is the fastest.
# A GPU is launch-bound at small batches, so it gets a larger one (not measured here).
PER_SAMPLE_BATCH_SIZE = {"cpu": 64, "cuda": 256}


def per_sample_batch_size(device: str) -> int:
    """The batch size per_sample importance runs at on `device` when none is given."""
    return PER_SAMPLE_BATCH_SIZE.get(device.split(":")[0], 64)


# By index, so that the digits fallback has them too: 0 = T-shirt/top, 7 = Sneaker on Fashion-MNIST.
DEFAULT_FORGET = {"class": "0", "subclass": "7", "random": None}


@dataclass
class BenchConfig:
    """Everything one benchmark run depends on (stored in results.json)."""

    scenario: str = "class"
    forget: str | None = None  # class name or index; None: the scenario's default
    n_forget: int = 100  # random scenario only
    model: str = "cnn"
    seeds: int = 1
    first_seed: int = 0
    train_subset: int | None = 4000  # None: the whole training set
    test_subset: int | None = 2000  # None: the whole test set
    epochs: int = 2
    batch_size: int = 64
    lr: float = 1e-3
    finetune_epochs: int = 5
    importance_batch_size: int | None = (
        None  # None: 64 in batch mode (published), per_sample_batch_size(device) in per_sample
    )
    importance_mode: str = "batch"
    val_per_class: int = 100  # training images per class held out of training (every method), for ssd_tune
    tune_eval_limit: int = 1000  # ssd_tune: at most this many images per evaluation set (its cost is linear in it)
    alpha: float = 10.0
    lam: float = 1.0
    fisher_max_samples: int | None = 50
    methods: tuple[str, ...] = DEFAULT_METHODS
    out: str = "runs/bench"
    data_dir: str | None = None
    cache_dir: str | None = None
    use_cache: bool = True
    device: str = "cpu"
    pin_memory: bool = True  # pin the loaders' batches when the device is CUDA (no effect on the CPU)
    threads: int | None = 1  # None or 0: torch's default (one per core)
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def forget_target(self) -> str | None:
        return self.forget if self.forget is not None else DEFAULT_FORGET[self.scenario]

    def full_batch_size(self) -> int:
        """The full-data importance's batch size: the flag, else the mode's default."""
        if self.importance_batch_size is not None:
            return self.importance_batch_size
        return 64 if self.importance_mode == "batch" else per_sample_batch_size(self.device)

    def forget_batch_size(self) -> int:
        """The forget importance's batch size; the same as the full one's (batch mode needs it)."""
        return self.full_batch_size()

    def reference_batch_size(self) -> int:
        """ssd_reference is the published batch mode: the flag, else the published 64."""
        return self.importance_batch_size or 64

    def pin(self) -> bool:
        """Whether the benchmark's loaders pin their batches: asked for, and the device is CUDA."""
        return self.pin_memory and pin_for(self.device)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["methods"] = list(self.methods)
        d["forget"] = self.forget_target()
        return d


def _methods(text: str) -> tuple[str, ...]:
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    return names


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("all", "none", "0") else int(text)


def build_parser() -> argparse.ArgumentParser:
    d = BenchConfig()
    p = argparse.ArgumentParser(
        prog="python -m ssd_fast.eval.bench",
        description="Unlearning benchmark in the style of the SSD paper's tables, on Fashion-MNIST.",
    )
    p.add_argument("--scenario", choices=SCENARIOS, default=d.scenario, help="what to forget (default: %(default)s)")
    p.add_argument(
        "--forget",
        default=None,
        help="class name or index to forget; default 0 = T-shirt/top (class), 7 = Sneaker (subclass)",
    )
    p.add_argument(
        "--n-forget", type=int, default=d.n_forget, help="random scenario: samples to forget (default: %(default)s)"
    )
    p.add_argument("--model", choices=MODELS, default=d.model, help="default: %(default)s")
    p.add_argument("--seeds", type=int, default=d.seeds, help="number of seeds (default: %(default)s)")
    p.add_argument("--first-seed", type=int, default=d.first_seed)
    p.add_argument(
        "--train-subset",
        type=_optional_int,
        default=d.train_subset,
        help="training samples used, or 'all' (default: %(default)s)",
    )
    p.add_argument(
        "--test-subset",
        type=_optional_int,
        default=d.test_subset,
        help="test samples used for scoring, or 'all' (default: %(default)s)",
    )
    p.add_argument(
        "--epochs", type=int, default=d.epochs, help="training (and retraining) epochs (default: %(default)s)"
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="training batch size (default: %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate for training (default: %(default)s)")
    p.add_argument("--finetune-epochs", type=int, default=d.finetune_epochs)
    p.add_argument(
        "--importance-mode",
        choices=IMPORTANCE_MODES,
        default=d.importance_mode,
        help="SSD importance estimate: 'batch' (published; depends on the batch size, and so does the right alpha) "
        "or 'per_sample' (true empirical Fisher, the same at any batch size) (default: %(default)s)",
    )
    p.add_argument(
        "--importance-batch-size",
        type=int,
        default=d.importance_batch_size,
        help="SSD importance batch size (default: 64 in batch mode, as published; in per_sample mode, which gives the same "
        f"estimate at any batch size, the device's fastest: {PER_SAMPLE_BATCH_SIZE})",
    )
    p.add_argument(
        "--val-per-class",
        type=int,
        default=d.val_per_class,
        help="training images per class held out of training for every method; ssd_tune scores its trials on them, never on the test set (default: %(default)s; 0: none, and no ssd_tune)",
    )
    p.add_argument(
        "--tune-eval-limit",
        type=int,
        default=d.tune_eval_limit,
        help="ssd_tune: at most this many images per evaluation set (default: %(default)s)",
    )
    p.add_argument("--alpha", type=float, default=d.alpha, help="SSD selection threshold (default: %(default)s)")
    p.add_argument("--lam", type=float, default=d.lam, help="SSD dampening constant lambda (default: %(default)s)")
    p.add_argument(
        "--fisher-max-samples",
        type=_optional_int,
        default=d.fisher_max_samples,
        help="cap on Fisher Forgetting's retain samples; its time is then extrapolated (default: %(default)s; 'all' for none)",
    )
    p.add_argument("--methods", type=_methods, default=d.methods, help=f"comma list from {','.join(METHODS)}")
    p.add_argument(
        "--out", default=d.out, help="output folder for table.md, results.json, plot.png (default: %(default)s)"
    )
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX .gz files")
    p.add_argument("--cache-dir", default=None, help="checkpoint cache (default: $SSD_FAST_CACHE or ./.cache/ssd_fast)")
    p.add_argument(
        "--no-cache", dest="use_cache", action="store_false", help="always train, never read or write checkpoints"
    )
    p.add_argument("--device", default=d.device, help="torch device (default: %(default)s)")
    p.add_argument(
        "--no-pin-memory",
        dest="pin_memory",
        action="store_false",
        help="on CUDA, do not pin the loaders' batches (pinned by default, so host-to-device copies are asynchronous)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=d.threads,
        help="torch CPU threads; 0 = torch's default (default: %(default)s: on the shared 2-core dev VM an earlier main job "
        "took 84 s of CPU with 1 thread and 230 s with 2, mostly spinning in the bs-1 Fisher loop)",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return p


def parse_args(argv: list[str] | None = None) -> BenchConfig:
    args = build_parser().parse_args(argv)
    return BenchConfig(**vars(args))
