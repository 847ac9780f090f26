"""Loads the compiled kernels, gives each op a fake (meta) implementation, and says
which devices have a compiled kernel.

The ops are registered by the C++ library with TORCH_LIBRARY, so they are ordinary
`torch.ops.ssd_fast.*` operators: they work under torch.compile and pass opcheck.
"""
from __future__ import annotations

import warnings

import torch

try:
    from . import _C  # noqa: F401  (importing registers torch.ops.ssd_fast.*)

    LOAD_ERROR: str | None = None
except ImportError as e:  # not built: the reference path still works
    LOAD_ERROR = str(e)

OPS = ("select_dampen_", "sq_accumulate_")


def is_built() -> bool:
    return LOAD_ERROR is None


def has_kernel(device_type: str) -> bool:
    """True when every op has a compiled kernel for `device_type` ("cpu" or "cuda")."""
    if not is_built():
        return False
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    if key is None:
        return False
    return all(torch._C._dispatch_has_kernel_for_dispatch_key(f"ssd_fast::{op}", key) for op in OPS)


_warned_reference = False


def warn_reference_once(device_type: str) -> None:
    global _warned_reference
    if _warned_reference:
        return
    _warned_reference = True
    why = f"the extension did not load ({LOAD_ERROR})" if LOAD_ERROR else f"it was built without {device_type} kernels"
    warnings.warn(
        f"ssd_fast: no compiled kernel for {device_type}, because {why}; using the pure-PyTorch "
        "reference, which gives the same result more slowly. Rebuild with "
        "`pip install --no-build-isolation -e .` to get the fast path.",
        RuntimeWarning,
        stacklevel=3,
    )


if is_built():

    @torch.library.register_fake("ssd_fast::select_dampen_")
    def _select_dampen_fake(params, forget, full, alpha, lam, selected) -> None:
        return None

    @torch.library.register_fake("ssd_fast::sq_accumulate_")
    def _sq_accumulate_fake(importances, grads, scale, absolute) -> None:
        return None


def select_dampen_(
    params: list[torch.Tensor],
    forget: list[torch.Tensor],
    full: list[torch.Tensor],
    alpha: float,
    lam: float,
    selected: torch.Tensor,
) -> None:
    """params[i] *= min(lam*full/forget, 1) where forget > alpha*full; selected[i] += count."""
    torch.ops.ssd_fast.select_dampen_(params, forget, full, float(alpha), float(lam), selected)


def sq_accumulate_(importances: list[torch.Tensor], grads: list[torch.Tensor], scale: float, absolute: bool) -> None:
    """importances[i] += scale * grads[i]**2, or scale * |grads[i]| when absolute."""
    torch.ops.ssd_fast.sq_accumulate_(importances, grads, float(scale), bool(absolute))
