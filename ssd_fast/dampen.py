"""`dampen`: validate everything, then apply select-and-dampen in one fused pass.

Order matters for the guarantee that a failed call loses nothing: every check (types,
hyper-parameters, names, shapes, devices, finiteness, backend availability) runs before
the first parameter is written. After that, the only work left is the kernel itself.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Literal, Union

import torch
from torch import nn

from . import _ops, distributed, reference
from .auto_alpha import resolve_auto_alpha
from ._pairing import named_parameters, pair_with_model
from .importance import importance
from .importances import Importances
from .report import DampenReport, LayerSelection

BACKENDS = ("auto", "cuda", "cpu", "reference")
ImportanceSource = Union[Importances, Mapping[str, torch.Tensor], Iterable]

Pair = tuple[str, nn.Parameter, torch.Tensor, torch.Tensor]  # name, parameter, forget, full


AUTO = "auto"


def _check_hyper(alpha: float | str, lam: float, backend: str) -> tuple[float | str, float]:
    """Validates the hyper-parameters; alpha="auto" passes through, resolved later from the data."""
    if isinstance(alpha, str):
        if alpha != AUTO:
            raise ValueError(f"alpha must be a number or 'auto', got {alpha!r}")
        _check_hyper(1.0, lam, backend)
        return AUTO, float(lam)
    for name, value in (("alpha", alpha), ("lam", lam)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha!r}: with alpha <= 0 every parameter with any forget importance is selected")
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam!r}: a negative lambda would flip signs")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return float(alpha), float(lam)


def _as_importances(model: nn.Module, source: ImportanceSource, what: str) -> Importances:
    if isinstance(source, Importances):
        return source
    if isinstance(source, Mapping):
        return Importances(source)
    if isinstance(source, (torch.Tensor, str, bytes)) or not isinstance(source, Iterable):
        raise TypeError(
            f"{what} must be Importances, a dict of tensors, or data to compute them from; "
            f"got {type(source).__name__}"
        )
    return importance(model, source)


def _check_compatible(forget: Importances, full: Importances) -> None:
    if forget.label_free != full.label_free:
        raise ValueError(
            "forget and full importances were computed with different objectives "
            f"(label_free={forget.label_free} vs {full.label_free}); compute both the same way"
        )
    if forget.mode != full.mode:
        raise ValueError(
            f"forget importances are {forget.mode!r} mode but full importances are {full.mode!r}; "
            "their scales differ, so compute both in the same mode"
        )


def _pairs(model: nn.Module, forget: Importances, full: Importances) -> list[Pair]:
    params = named_parameters(model)
    f_pairs = pair_with_model(params, forget, "forget", check_device=True)
    d_pairs = pair_with_model(params, full, "full", check_device=True)
    return [(name, p, f, d) for (name, p, f), (_, _, d) in zip(f_pairs, d_pairs)]


def _choose_backends(pairs: list[Pair], backend: str) -> dict[str, str]:
    """The backend for each device type in use, or an error before anything runs."""
    chosen: dict[str, str] = {}
    for device_type in sorted({p.device.type for _, p, _, _ in pairs}):
        if backend == "reference":
            chosen[device_type] = "reference"
        elif backend == "auto":
            if _ops.has_kernel(device_type):
                chosen[device_type] = device_type
            else:
                _ops.warn_reference_once(device_type)
                chosen[device_type] = "reference"
        elif backend != device_type:
            raise ValueError(f"backend={backend!r} was asked for but some parameters are on {device_type}")
        elif not _ops.has_kernel(device_type):
            why = _ops.LOAD_ERROR or f"the extension was built without {device_type} kernels"
            raise RuntimeError(f"backend={backend!r} is not available: {why}")
        else:
            chosen[device_type] = backend
    return chosen


@torch.no_grad()
def _run_kernel(pairs: list[Pair], alpha: float, lam: float) -> list[int]:
    """One fused pass over a device's parameters; returns the selected count of each."""
    device = pairs[0][1].device
    selected = torch.zeros(len(pairs), dtype=torch.int64, device=device)
    # The parameters themselves (under no_grad), not `p.data`: `.data` makes a new tensor
    # object on every access, so an identity test against it could never tell a copy apart.
    work = [p if p.is_contiguous() else p.contiguous() for _, p, _, _ in pairs]
    forget = [f.contiguous() for _, _, f, _ in pairs]
    full = [d.contiguous() for _, _, _, d in pairs]
    _ops.select_dampen_(work, forget, full, alpha, lam, selected)
    for (_, p, _, _), w in zip(pairs, work):
        if w is not p:  # a non-contiguous parameter was dampened in a copy
            p.copy_(w)
    return selected.tolist()


def _run_reference(pairs: list[Pair], alpha: float, lam: float) -> list[int]:
    return [reference.dampen_tensor_(p, f, d, alpha=alpha, lam=lam) for _, p, f, d in pairs]


def dampen(
    model: nn.Module,
    forget: ImportanceSource,
    full: ImportanceSource,
    *,
    alpha: float | Literal["auto"] = 10.0,
    lam: float = 1.0,
    backend: str = "auto",
) -> DampenReport:
    """Forget by Selective Synaptic Dampening, in place.

    Every trainable parameter element with forget importance f greater than alpha times
    its full-data importance d is multiplied by min(lam * d / f, 1); all others are left
    bit-for-bit unchanged. Frozen parameters (requires_grad=False) are never touched.

    Args:
        model: the model to modify in place.
        forget: importances on the forget set Df: `Importances`, a dict of tensors keyed
            by parameter name, or data (then computed with `ssd_fast.importance`).
        full: importances on the full training set D, in the same forms.
        alpha: selection threshold (> 0). The paper uses 10 for ResNet18. "auto" uses
            ASSD's rule (Schoepf, Foster and Brintrup, 2024): the
            (100 - ln(1 + 100 |Df| / |D|))-th percentile of f/d over finite ratios, with
            |Df| and |D| read from the importances' `n_samples` (so both must be
            Importances that carry it). The resolved number is in the report.
        lam: dampening strength (>= 0). The paper uses 1.
        backend: "auto" (compiled kernel for the parameters' device, else the reference
            with a warning), "cpu", "cuda", or "reference".

    Returns:
        A DampenReport with the selected count per parameter, the time and the backend.

    Raises:
        TypeError, ValueError, RuntimeError: on any bad input, before the model changes.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    alpha, lam = _check_hyper(alpha, lam, backend)
    forget_imp = _as_importances(model, forget, "forget")
    full_imp = _as_importances(model, full, "full")
    if isinstance(forget, Importances) and isinstance(full, Importances):
        _check_compatible(forget_imp, full_imp)
    pairs = _pairs(model, forget_imp, full_imp)
    backends = _choose_backends(pairs, backend)
    if alpha == AUTO:  # resolved from the data, still before the first write
        alpha = resolve_auto_alpha(forget_imp, full_imp, [(f, d) for _, _, f, d in pairs])

    local = distributed.local_pairs(pairs)  # a sharded model: each rank's own shards, no gather

    start = time.perf_counter()
    counts: dict[str, int] = {}
    for device_type, chosen in backends.items():
        group = [pair for pair in local if pair[1].device.type == device_type]
        for device in sorted({pair[1].device for pair in group}, key=str):
            on_device = [pair for pair in group if pair[1].device == device]
            if chosen == "reference":
                found = _run_reference(on_device, alpha, lam)
            else:
                found = _run_kernel(on_device, alpha, lam)
            counts.update({name: c for (name, _, _, _), c in zip(on_device, found)})
    seconds = time.perf_counter() - start
    found = distributed.global_selected([p for _, p, _, _ in pairs], [counts[name] for name, _, _, _ in pairs])
    counts = {name: c for (name, _, _, _), c in zip(pairs, found)}

    layers = tuple(LayerSelection(name, counts[name], p.numel()) for name, p, _, _ in pairs)
    used = "+".join(sorted(set(backends.values())))
    return DampenReport(alpha=alpha, lam=lam, backend=used, seconds=seconds, layers=layers)
