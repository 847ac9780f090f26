"""`ssd_tuning`: the published one-call SSD helper, on ssd_fast."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .. import _checks
from ._layouts import Unpack
from ._perturber import PUBLISHED_DEFAULTS, ParameterPerturber


def _check_loader(value: object, name: str) -> None:
    if _checks.is_number(value):
        raise TypeError(
            f"{name} is the number {value!r}, not a data loader. The signature is "
            "ssd_tuning(model, forget_loader, full_loader, dampening_constant, selection_weighting, device); "
            "some published copies order it (model, forget, lambda, alpha, full, device), so pass "
            "keywords when porting from one of those"
        )
    _checks.batches(value, name, "an iterable of batches")


def ssd_tuning(
    model: nn.Module,
    forget_loader: Iterable,
    full_loader: Iterable,
    dampening_constant: float,
    selection_weighting: float,
    device: torch.device | str,
    *,
    batch_layout: str | Unpack = "published",
    label_free: bool = False,
) -> nn.Module:
    """Forget `forget_loader` from `model` with SSD, as the published helper does; returns the model.

    As published: the model is put in eval mode, importances are computed on the forget
    set and then on the full training set, and the weights are dampened with
    lambda = dampening_constant and alpha = selection_weighting (lower_bound and exponent 1).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_loader(forget_loader, "forget_loader")
    _check_loader(full_loader, "full_loader")
    parameters = {
        **PUBLISHED_DEFAULTS,
        "dampening_constant": dampening_constant,
        "selection_weighting": selection_weighting,
    }
    perturber = ParameterPerturber(model, None, device, parameters, batch_layout=batch_layout, label_free=label_free)
    model.eval()
    forget_importance = perturber.calc_importance(forget_loader)
    full_importance = perturber.calc_importance(full_loader)
    perturber.modify_weight(full_importance, forget_importance)
    return model
