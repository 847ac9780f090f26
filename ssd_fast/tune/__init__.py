"""Choosing alpha (and lambda) for one deletion request: `tune`, and what it returns.

`_search.py` runs the search; `_alpha_grid.py` picks the alphas to try (where the selected
set changes), `_target.py` says what forget accuracy to aim for, `_trials.py` runs a trial
and answers its questions, `_bounds.py` says when a prefix of an evaluation set already
answers one, `_evaluation.py` holds the sets in a fixed random order, `_metric.py` says what
counts as right (top-1, or token accuracy for LMs), `_activation_cache.py` replays leading
modules a trial leaves untouched, `_mia.py` adds an optional membership-inference aim, and
`_layer_starts.py` restricts dampening to later layers. One `ssd_fast.Dampener` runs every
trial: it restores the parameters from its snapshot, then dampens.
"""

from ._mia import MiaTarget
from ._search import Trial, TuneResult, tune

__all__ = ["tune", "TuneResult", "Trial", "MiaTarget"]
