"""The dict `calc_importance` returns, carrying the record that lets `modify_weight` check it.

The published interface passes importances around as plain dicts, and `ssd_fast.dampen`
cannot check a plain dict for the mistakes an `Importances` lets it refuse (forget and
full swapped, importances of another checkpoint). So `calc_importance` returns a dict, as
published, that also holds the `Importances` built from the same tensors with the full
record; `modify_weight` uses that record as long as the dict still holds exactly those
tensors, unmodified (a tensor's version counter changes with every in-place write).
"""

from __future__ import annotations

import torch

from ..importances import Importances


class RecordedImportance(dict):
    """{parameter name: importance tensor}, as published, plus `.recorded`: the same values as `Importances`."""

    def __init__(self, tensors: dict[str, torch.Tensor], recorded: Importances) -> None:
        super().__init__(tensors)
        self.recorded = recorded
        self._versions = {name: (t, t._version) for name, t in tensors.items()}

    def record_if_unchanged(self) -> Importances | None:
        """`recorded` while the dict holds the very tensors it was built from, never written since."""
        if set(self) != set(self._versions):
            return None
        for name, (t, version) in self._versions.items():
            if self[name] is not t or t._version != version:
                return None
        return self.recorded
