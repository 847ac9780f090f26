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


PER_SAMPLE_OPS = ("per_sample_sq_tokens_", "per_sample_sq_conv2d_")


def has_per_sample_kernel(device_type: str) -> bool:
    """True when the fused per-sample squared-gradient ops have a kernel for `device_type`."""
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    if not is_built() or key is None:
        return False
    return all(torch._C._dispatch_has_kernel_for_dispatch_key(f"ssd_fast::{op}", key) for op in PER_SAMPLE_OPS)


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

    @torch.library.register_fake("ssd_fast::per_sample_sq_tokens_")
    def _per_sample_sq_tokens_fake(out, dy, x, scale, absolute, precision="exact") -> None:
        return None

    @torch.library.register_fake("ssd_fast::per_sample_sq_conv2d_")
    def _per_sample_sq_conv2d_fake(
        out, dy, x, stride, padding, dilation, groups, scale, absolute, precision="exact"
    ) -> None:
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


def per_sample_sq_tokens_(
    out: torch.Tensor, dy: torch.Tensor, x: torch.Tensor, scale: float, absolute: bool, precision: str = "exact"
) -> None:
    """out[o, k] += scale * sum_b (sum_t dy[b,t,o] x[b,t,k])**2 (|.| when absolute), in fp32.

    precision "tf32" / "bf16" lets CUDA (sm_80+) form each sample's product on tensor cores
    from operands rounded to TF32 / bf16; the CPU computes "exact" for all three."""
    torch.ops.ssd_fast.per_sample_sq_tokens_(out, dy, x, float(scale), bool(absolute), str(precision))


def per_sample_sq_conv2d_(
    out: torch.Tensor,
    dy: torch.Tensor,
    x: torch.Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    scale: float,
    absolute: bool,
    precision: str = "exact",
) -> None:
    """out [O, C/groups, kh, kw] += scale * sum_b g_b**2 (|g_b| when absolute), g_b sample b's
    Conv2d weight gradient for input x [B, C, H, W] and output gradient dy [B, O, Ho, Wo].

    precision as for per_sample_sq_tokens_."""
    torch.ops.ssd_fast.per_sample_sq_conv2d_(
        out,
        dy,
        x,
        list(stride),
        list(padding),
        list(dilation),
        int(groups),
        float(scale),
        bool(absolute),
        str(precision),
    )
