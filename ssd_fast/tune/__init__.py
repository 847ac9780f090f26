"""Choosing alpha (and lambda) for one deletion request: `tune`, and what it returns.

`_search.py` runs the search; `_alpha_grid.py` picks the alphas to try, `_target.py` says
what forget accuracy to aim for, `_evaluation.py` scores a trial, `_mia.py` adds an optional
membership-inference aim,
and `_layer_starts.py` restricts dampening to later layers. One `ssd_fast.Dampener` runs every
trial: it restores the parameters from its snapshot, then dampens.
"""

from ._mia import MiaTarget
from ._search import Trial, TuneResult, tune

__all__ = ["tune", "TuneResult", "Trial", "MiaTarget"]
