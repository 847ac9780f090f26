"""ssd_fast: fast, exact Selective Synaptic Dampening (Foster, Schoepf and Brintrup, AAAI 2024).

    full = ssd_fast.importance(model, train_loader)     # once, after training
    forget = ssd_fast.importance(model, forget_loader)  # per deletion request
    report = ssd_fast.dampen(model, forget, full, alpha=10.0, lam=1.0)

    dampener = ssd_fast.prepare(model, forget, full, snapshot=True)  # many settings:
    dampener.apply(alpha=5.0, lam=1.0); dampener.restore()            # validate and pair once

`ssd_fast.reference` is the pure-PyTorch oracle every fast path is tested against.
Subpackages, imported on demand: `ssd_fast.per_sample` (Weighted and PerClass targets),
`ssd_fast.tune` (the alpha search), `ssd_fast.compat` (drop-in for the published
ParameterPerturber), and the evaluation harness `ssd_fast.eval` (data, models, metrics,
baselines, and the benchmark `python -m ssd_fast.eval.bench`), which the core never imports.
"""

from . import distributed, reference  # noqa: F401  (distributed registers its hooks with the core: ssd_fast._parallel)
from .auto_alpha import auto_alpha
from .dampen import Dampener, dampen, prepare
from .importance import importance
from .importances import Importances
from .report import DampenReport
from .tune import MiaTarget, TuneResult, tune

__version__ = "0.1.0"

__all__ = [
    "dampen",
    "prepare",
    "Dampener",
    "importance",
    "Importances",
    "DampenReport",
    "tune",
    "MiaTarget",
    "TuneResult",
    "auto_alpha",
    "reference",
    "__version__",
]
