"""What `calc_importance` remembers about the dicts it returned, so `modify_weight` can check them.

The published interface passes importances around as plain dicts, and `ssd_fast.dampen`
cannot check a plain dict for the mistakes an `Importances` lets it refuse (forget and
full swapped, importances of another checkpoint). So the perturber keeps, for the last
few dicts its `calc_importance` returned, the `Importances` built from the same tensors
with the full record. `modify_weight` uses that record when it is given one of those very
dicts, still holding the same tensors, none written since (a tensor's version counter
changes with every in-place write). The dicts themselves stay plain dicts, so code that
saves them (`torch.save`, read back with `weights_only=True`) works as with the published code.
"""

from __future__ import annotations

import torch

from ..importances import Importances

KEPT = 4  # the published flow computes two (forget and full); a few more cover a search over subsets


class Records:
    """The Importances behind the dicts `calc_importance` returned most recently."""

    def __init__(self) -> None:
        self._entries: list[tuple[dict[str, torch.Tensor], Importances, dict[str, int]]] = []

    def keep(self, given: dict[str, torch.Tensor], recorded: Importances) -> None:
        versions = {name: t._version for name, t in given.items()}
        self._entries = [*self._entries[-(KEPT - 1) :], (given, recorded, versions)]

    def find(self, given: object) -> Importances | None:
        """The record of `given` if it is one of those dicts, unmodified; else None."""
        for kept, recorded, versions in self._entries:
            if kept is not given:
                continue
            if set(kept) != set(versions) or any(
                kept[name].data_ptr() != recorded[name].data_ptr() or kept[name]._version != versions[name]
                for name in versions
            ):
                return None  # a tensor was replaced or written in place: the record may not describe it
            return recorded
        return None
