"""Comparing SSD results that should agree up to float rounding (other batch sizes, threads, code paths).

Two computations of the same importance differ in their last bits (summation order, the
CPU's vector width, oneDNN's algorithm choice), so an element whose ratio f/d sits at the
threshold alpha may be selected by one and not by the other, and then its dampened value
differs by a factor of about lam/alpha. Such elements are excluded: those whose ratio,
in either computation, lies within a relative `REL` of either alpha. Everything else must
be selected identically, and dampened to values equal up to rounding.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

REL = 1e-5  # relative distance of f/d from alpha within which rounding may decide the selection


def near_threshold(f: torch.Tensor, d: torch.Tensor, alpha: float, rel: float = REL) -> torch.Tensor:
    """Elements whose f/d lies within a relative `rel` of alpha (d == 0 gives inf or NaN: never near)."""
    ratio = f.double() / d.double()
    return (ratio - alpha).abs() <= rel * alpha


def assert_same_selection(
    a: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    b: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    alpha_a: float,
    alpha_b: float | None = None,
    rel: float = REL,
) -> dict[str, torch.Tensor]:
    """{name: (forget, full)} of two computations select the same elements at their alphas, outside
    the near-threshold ones. Returns {name: mask of the elements compared}."""
    alpha_b = alpha_a if alpha_b is None else alpha_b
    assert a.keys() == b.keys()
    compared = {}
    for name in a:
        (fa, da), (fb, db) = a[name], b[name]
        unsure = torch.zeros(fa.shape, dtype=torch.bool)
        for f, d in ((fa, da), (fb, db)):
            for alpha in (alpha_a, alpha_b):
                unsure |= near_threshold(f.cpu(), d.cpu(), alpha, rel)
        keep = ~unsure
        selected_a = (fa.cpu() > alpha_a * da.cpu())[keep]
        selected_b = (fb.cpu() > alpha_b * db.cpu())[keep]
        assert torch.equal(selected_a, selected_b), (
            f"{name}: {int((selected_a != selected_b).sum())} elements away from the threshold are selected "
            "by one computation and not the other"
        )
        compared[name] = keep
    return compared


def assert_close_where(
    a: Mapping[str, torch.Tensor],
    b: Mapping[str, torch.Tensor],
    compared: Mapping[str, torch.Tensor],
    *,
    rtol: float,
    atol: float,
) -> None:
    """Tensors equal up to (rtol, atol) at the elements `compared` marks (see assert_same_selection)."""
    for name, keep in compared.items():
        torch.testing.assert_close(
            a[name].detach().cpu()[keep], b[name].detach().cpu()[keep], rtol=rtol, atol=atol, msg=name
        )


def share_selected(pairs: Mapping[str, tuple[torch.Tensor, torch.Tensor]], alpha: float) -> float:
    """Fraction of elements with f > alpha * d."""
    chosen = sum(int((f > alpha * d).sum()) for f, d in pairs.values())
    return chosen / sum(f.numel() for f, _ in pairs.values())
