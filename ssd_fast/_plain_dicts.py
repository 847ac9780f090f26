"""Importances given as plain dicts: the check their values still allow, and one warning for the rest.

An `Importances` records how it was computed, and `prepare` uses that record to refuse
three mistakes before anything is written: forget and full swapped (sample counts),
importances of another checkpoint (the checkpoint probe), and the two computed
differently (mode and objective). A plain dict carries none of it, so those checks
cannot run; `prepare` says so once per call, naming what is missing and how to keep it.

What the values alone can show is where each importance is exactly zero. The forget set
Df is part of the full set D, and importance is a mean of non-negative per-batch (or
per-sample) terms, so a parameter that no sample of D moves (d == 0) is moved by no
sample of Df either (f == 0). In per-sample mode that holds exactly; in batch mode d is
a mean of squared batch-mean gradients, which is 0 only if every batch's gradient
cancels to exactly 0, which float sums do not do by chance. Swapping the two turns this
around: a small forget set leaves exact zeros (a ReLU unit none of its samples fire, a
token or a pixel none of them contain) where the full set does not. So:
- f > 0 where d == 0 somewhere, and d > 0 where f == 0 nowhere: the pair is refused as
  swapped. Correct inputs cannot show the first part unless the full importances come
  from data that does not contain the forget set (the retain set only, or a subsample);
  such a pair also shows the second part unless the forget data reaches every parameter
  the full data reaches. Both sides are needed for a refusal, and the message says how
  to pass such a pair on purpose (as `Importances`, whose counts replace this check).
- Any other pattern proves nothing: a network whose gradients are dense everywhere has
  no exact zeros in either set, which is why the warning still names the swap check.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import torch

HOW_TO_KEEP = (
    "pass the Importances that ssd_fast.importance() returns (Importances.load keeps them in a file), "
    "or wrap each dict: ssd_fast.Importances(tensors, mode=..., label_free=..., n_samples=..., model=model), "
    "with the model as it was when they were computed"
)


def is_plain(source: object) -> bool:
    """A mapping of tensors that is not an `Importances` (which records how it was computed)."""
    from .importances import Importances

    return isinstance(source, Mapping) and not isinstance(source, Importances)


def _zero_patterns(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[int, int]:
    """(elements with f > 0 where d == 0, elements with d > 0 where f == 0), with one read per device."""
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for f, d in pairs:
        f, d = f.detach(), d.detach()
        counts = torch.stack([((f > 0) & (d == 0)).sum(), ((d > 0) & (f == 0)).sum()])
        by_device.setdefault(counts.device, []).append(counts)
    forget_only = full_only = 0
    for counts in by_device.values():
        a, b = torch.stack(counts).sum(0).tolist()
        forget_only, full_only = forget_only + a, full_only + b
    return forget_only, full_only


def check_zero_patterns(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """ValueError when the exact zeros of the (forget, full) pairs show the two swapped (see the module note).

    Whole tensors only: a sharded pair would need its counts summed over ranks first, or
    ranks could disagree about refusing."""
    forget_only, full_only = _zero_patterns(pairs)
    if forget_only > 0 and full_only == 0:
        raise ValueError(
            f"forget and full look swapped: the forget importance is > 0 at {forget_only:,} elements where the "
            "full importance is exactly 0, and nowhere the other way round. The forget set is part of the full "
            "training set, so every parameter it moves, the full data moves too; call with (model, forget, full). "
            "If the full importances really come from data without the forget set (the retain set only, or a "
            f"subsample), {HOW_TO_KEEP}: their sample counts replace this check"
        )


def warn_missing_checks(forget: object, full: object, *, stacklevel: int) -> None:
    """One warning naming the checks that plain-dict importances kept from running, if any."""
    plain = [what for what, source in (("forget", forget), ("full", full)) if is_plain(source)]
    if not plain:
        return
    given = " and ".join(plain) + " importances were"
    missing = [
        "forget and full swapped (needs the sample count of each; only the zero pattern of the values was checked)",
        f"computed on another checkpoint of this model (needs the checkpoint probe of the {' and '.join(plain)})",
        "both computed the same way (needs mode and label_free of both)",
    ]
    warnings.warn(
        f"{given} given as plain dicts, which do not record how they were computed, so these checks could not "
        f"run: {'; '.join(missing)}. To keep every check, {HOW_TO_KEEP}",
        UserWarning,
        stacklevel=stacklevel,
    )
