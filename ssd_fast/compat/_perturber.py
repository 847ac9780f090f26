"""`ParameterPerturber`: the published SSD class's interface, on ssd_fast's kernels.

Same constructor, same `parameters` keys, same `calc_importance(dataloader) -> dict` and
`modify_weight(original_importance, forget_importance)`, same results. Where the
published code behaves differently from `ssd_fast.importance` / `ssd_fast.dampen`,
this class follows the published code:

- it does not switch the model to eval mode: importance is computed in whatever mode
  the caller left the model in (the published `ssd_tuning` calls `model.eval()` first);
- batches unpack as `x, _, y = batch` unless `batch_layout` says otherwise;
- importance is divided by the number of batches, as `len(dataloader)` is;
- `modify_weight` pairs by position when the keys are not the model's names (warning);
- `exponent` and `lower_bound` other than 1, and `selection_weighting` 0, run the
  published rule in plain PyTorch (`_published.py`), since the kernel does not express them.

Differences that do not change the dampened model in the published workflow:
- gradients come from `torch.autograd.grad`, so `.grad` fields and the optimizer are
  left alone (the published code leaves the last batch's gradients in `.grad`);
- importances are fp32 whatever the parameter dtype;
- the perturber remembers how `calc_importance`'s dicts were computed, so that
  `modify_weight` can refuse swapped or stale importances before writing (other dicts get
  a warning instead);
- frozen parameters (requires_grad=False) are never dampened; the published code gives
  them zero importance, so it never selects them either;
- `magnitude_diff`, `min_layer`, `max_layer` and `forget_threshold` are accepted and
  unused, as in the published code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from .. import _checks
from .._batches import count_samples, to_device
from .._checkpoint import take_probe
from .._pairing import model_fingerprint
from ..dampen import dampen, prepare
from ..importances import Importances
from ._layouts import Unpack, make_unpack
from ._objective import PublishedAccumulator
from ._positional import rekey_by_model
from ._published import published_dampen_
from ._recorded import Records

PUBLISHED_KEYS = (
    "lower_bound",
    "exponent",
    "magnitude_diff",
    "min_layer",
    "max_layer",
    "forget_threshold",
    "dampening_constant",
    "selection_weighting",
)
_REQUIRED = ("dampening_constant", "selection_weighting")
PUBLISHED_DEFAULTS = {
    "lower_bound": 1,
    "exponent": 1,
    "magnitude_diff": None,
    "min_layer": -1,
    "max_layer": -1,
    "forget_threshold": 1,
}


def _number(parameters: Mapping[str, Any], key: str) -> float:
    value = parameters[key]
    if not _checks.is_number(value) or not math.isfinite(value):
        raise ValueError(f"parameters[{key!r}] must be a finite number, got {value!r}")
    return float(value)


def _check_parameters(parameters: Any) -> dict[str, Any]:
    """The published `parameters` dict, validated, with the unused keys defaulted."""
    if not isinstance(parameters, Mapping):
        raise TypeError(
            "parameters must be the published dict with at least 'dampening_constant' (lambda) and "
            f"'selection_weighting' (alpha); got {type(parameters).__name__}"
        )
    unknown = sorted(set(parameters) - set(PUBLISHED_KEYS))
    if unknown:
        raise ValueError(f"unknown parameters keys {unknown}; the published keys are {list(PUBLISHED_KEYS)}")
    missing = [k for k in _REQUIRED if k not in parameters]
    if missing:
        raise ValueError(
            f"parameters is missing {missing} (lambda is 'dampening_constant', alpha 'selection_weighting')"
        )
    out = {**PUBLISHED_DEFAULTS, **parameters}
    checks = {
        "selection_weighting": (lambda v: v >= 0, ">= 0"),
        "dampening_constant": (lambda v: v >= 0, ">= 0"),
        "exponent": (lambda v: v > 0, "> 0"),
        "lower_bound": (lambda v: v >= 0, ">= 0"),
    }
    for key, (ok, rule) in checks.items():
        value = _number(out, key)
        if not ok(value):
            raise ValueError(f"parameters[{key!r}] must be {rule}, got {value!r}")
        out[key] = value
    return out


class ParameterPerturber:
    """The published SSD class (Foster, Schoepf and Brintrup, AAAI 2024), on ssd_fast.

    Args:
        model: the trained model.
        opt: the optimizer the published code takes; kept, never used.
        device: where batches are moved; the model's parameters must already be there.
        parameters: the published dict: 'selection_weighting' (alpha) and
            'dampening_constant' (lambda) are required; 'exponent' and 'lower_bound'
            default to 1; the other published keys are accepted and unused.
        batch_layout: "published" (`x, _, y = batch`), "xy", "xyi" (x, y, index), or a
            callable batch -> (inputs, targets).
        label_free: LFSSD: importance from mean ||f(x)||^2 with |g| accumulated, no labels.
    """

    def __init__(
        self,
        model: nn.Module,
        opt: Any = None,
        device: torch.device | str = "cuda" if torch.cuda.is_available() else "cpu",  # noqa: B008 (the published default, read once at import as there)
        parameters: Mapping[str, Any] | None = None,
        *,
        batch_layout: str | Unpack = "published",
        label_free: bool = False,
    ) -> None:
        _checks.module(model)
        _checks.flag(label_free, "label_free")
        self.model = model
        self.opt = opt
        self.device = torch.device(device)
        self.parameters = _check_parameters(parameters)
        self.unpack = make_unpack(batch_layout)
        self.label_free = label_free
        self._records = Records()  # what calc_importance's dicts were computed from, for modify_weight
        # The published attribute names, for code that reads them.
        for key in PUBLISHED_KEYS:
            setattr(self, key, self.parameters[key])

    def _check_device(self) -> None:
        wrong = [n for n, p in self.model.named_parameters() if p.device.type != self.device.type]
        if wrong:
            raise ValueError(
                f"device is {self.device} but parameter {wrong[0]!r} is on another device; "
                f"move the model with model.to({str(self.device)!r})"
            )

    def calc_importance(self, dataloader: Iterable) -> dict[str, torch.Tensor]:
        """Mean over batches of the squared gradient of each batch's mean loss (LFSSD: of |g|
        of the mean squared output norm, written as the published code writes it).

        Runs in the model's current train/eval mode, as the published code does. Returns
        {parameter name: fp32 tensor}; parameters without a gradient get zeros. The
        perturber remembers how the dict was computed (sample count, the model's checkpoint
        probe), so that `modify_weight`, given this dict unmodified, runs every check
        `ssd_fast.dampen` runs on `Importances`.
        """
        _checks.batches(dataloader, "dataloader", "an iterable of batches")
        self._check_device()
        all_params = dict(self.model.named_parameters())
        trainable = {n: p for n, p in all_params.items() if p.requires_grad}
        if not trainable:
            raise ValueError("the model has no parameters with requires_grad=True, so nothing has an importance")
        sums = {n: torch.zeros(p.shape, dtype=torch.float32, device=p.device) for n, p in all_params.items()}
        accumulate = PublishedAccumulator(self.model, trainable, label_free=self.label_free)
        n_batches = n_samples = 0
        batch_size = None
        with torch.enable_grad():
            for batch in dataloader:
                x, y = self.unpack(batch)
                size = count_samples(x)
                batch_size = size if batch_size is None else batch_size
                accumulate(to_device(x, self.device), None if self.label_free else to_device(y, self.device), sums)
                n_batches += 1
                n_samples += size
        if n_batches == 0:
            raise ValueError("dataloader yielded no batches, so there is nothing to estimate importance from")
        torch._foreach_div_(list(sums.values()), float(n_batches))
        recorded = Importances(
            sums,
            mode="batch",
            label_free=self.label_free,
            n_samples=n_samples,
            n_batches=n_batches,
            batch_size=batch_size,
            fingerprint=model_fingerprint(self.model),
            checkpoint_probe=take_probe(self.model),
        )
        self._records.keep(sums, recorded)
        return sums

    def _kernel_expresses(self) -> bool:
        p = self.parameters
        return p["exponent"] == 1.0 and p["lower_bound"] == 1.0 and p["selection_weighting"] > 0

    def _importances(self, given: object, what: str) -> Importances | dict[str, torch.Tensor]:
        """The Importances `calc_importance` recorded, when `given` is its unmodified result;
        otherwise `given` re-keyed by the model's names and moved beside the parameters, as a
        plain dict (which `ssd_fast.dampen` checks as far as a dict allows, and says so)."""
        recorded = self._records.find(given)
        if recorded is not None:
            return recorded
        params = dict(self.model.named_parameters())
        return {n: t.to(params[n].device) for n, t in rekey_by_model(self.model, given, what).items()}

    def modify_weight(
        self, original_importance: Mapping[str, torch.Tensor], forget_importance: Mapping[str, torch.Tensor]
    ) -> None:
        """Select f > alpha * d and scale those parameters by min(lambda * d / f, 1), in place.

        Everything is validated before the first parameter is written: pairing, shapes,
        finite non-negative values, and for the dicts `calc_importance` returned, the
        checks their record allows (forget and full swapped, another checkpoint).
        """
        full = self._importances(original_importance, "original_importance")
        forget = self._importances(forget_importance, "forget_importance")
        alpha = self.parameters["selection_weighting"]
        lam = self.parameters["dampening_constant"]
        if self._kernel_expresses():
            dampen(self.model, forget, full, alpha=alpha, lam=lam)
            return
        checked = prepare(self.model, forget, full, backend="reference")  # every check, nothing written
        params = dict(self.model.named_parameters())
        published_dampen_(
            [(params[n], checked.forget[n], checked.full[n]) for n in checked.names],
            alpha=alpha,
            lam=lam,
            exponent=self.parameters["exponent"],
            lower_bound=self.parameters["lower_bound"],
        )
