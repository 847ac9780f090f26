"""ssd_fast: fast, exact Selective Synaptic Dampening (Foster, Schoepf and Brintrup, AAAI 2024).

    full = ssd_fast.importance(model, train_loader)     # once, after training
    forget = ssd_fast.importance(model, forget_loader)  # per deletion request
    report = ssd_fast.dampen(model, forget, full, alpha=10.0, lam=1.0)

`ssd_fast.reference` is the pure-PyTorch oracle every fast path is tested against.
"""
from . import reference
from .dampen import dampen
from .importance import importance
from .importances import Importances
from .report import DampenReport

__version__ = "0.1.0"

__all__ = ["dampen", "importance", "Importances", "DampenReport", "reference", "__version__"]
