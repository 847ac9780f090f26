"""Drop-in replacement for the published SSD code: change one import, get ssd_fast's kernels.

Code written against github.com/if-loops/selective-synaptic-dampening (src/ssd.py and
the `ssd_tuning` helper of its forget_*_strategies.py) runs unchanged with

    from ssd_fast.compat import ParameterPerturber, ssd_tuning

and gets the published results (see `ParameterPerturber` for the few documented
differences, none of which change the dampened model in the published workflow).
"""

from ._perturber import PUBLISHED_KEYS, ParameterPerturber
from ._tuning import ssd_tuning

__all__ = ["ParameterPerturber", "ssd_tuning", "PUBLISHED_KEYS"]
