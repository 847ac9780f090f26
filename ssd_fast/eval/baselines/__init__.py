"""Unlearning baselines the paper compares SSD with. Each takes (model, splits, ...) and
returns a new, unlearned model, leaving the original untouched.

- retrain: the gold model, from scratch on the retain set;
- finetune: 5 more epochs on the retain set;
- fisher_forgetting: Golatkar et al. 2020, as published (slow: N_retain x n_classes backward passes).
"""

from .finetune import finetune
from .fisher import classifier_names, fisher_diagonal, fisher_forgetting, fisher_noise, noise_variance
from .retrain import fresh_copy, retrain

__all__ = [
    "classifier_names",
    "finetune",
    "fisher_diagonal",
    "fisher_forgetting",
    "fisher_noise",
    "fresh_copy",
    "noise_variance",
    "retrain",
]
