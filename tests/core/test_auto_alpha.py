"""alpha="auto": ASSD's percentile rule, checked on a hand-built case, plus its errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import ssd_fast
from ssd_fast import Importances, reference
from ssd_fast.auto_alpha import assd_percentile, auto_alpha


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(5, 2)  # weight (2, 5) + bias (2): 12 parameters


def _hand_built(n_forget: int, n_full: int) -> tuple[Importances, Importances]:
    """Ratios f/d are 1..10 on the weight, plus one d == 0 (ratio inf) and one 0/0 on the bias."""
    d_w = torch.ones(2, 5)
    f_w = torch.arange(1.0, 11.0).reshape(2, 5)
    d_b = torch.tensor([0.0, 0.0])
    f_b = torch.tensor([3.0, 0.0])
    forget = Importances({"weight": f_w, "bias": f_b}, n_samples=n_forget)
    full = Importances({"weight": d_w, "bias": d_b}, n_samples=n_full)
    return forget, full


def test_percentile_formula() -> None:
    assert assd_percentile(10, 100) == pytest.approx(100 - math.log(11))
    assert assd_percentile(1, 10**9) == pytest.approx(100.0, abs=1e-6)


def test_hand_built_alpha_matches_numpy_style_percentile() -> None:
    forget, full = _hand_built(n_forget=10, n_full=100)
    q = 100 - math.log(1 + 100 * 10 / 100)  # 97.602...
    # The finite ratios are exactly 1..10; the inf and the NaN are left out.
    position = q / 100 * 9
    expected = 1 + position  # sorted values are 1..10, so interpolation is linear in position
    assert auto_alpha(forget, full) == pytest.approx(expected, rel=1e-6)


def test_dampen_auto_uses_that_alpha_and_reports_it() -> None:
    forget, full = _hand_built(n_forget=10, n_full=100)
    model, expected_model = _model(), _model()
    alpha = auto_alpha(forget, full)
    report = ssd_fast.dampen(model, forget, full, alpha="auto", lam=1.0)
    reference.dampen(expected_model, dict(forget), dict(full), alpha=alpha, lam=1.0)
    assert report.alpha == pytest.approx(alpha)
    # Ratio 10 > 9.78 on the weight, and the d == 0 bias entry: two selected.
    assert report.selected == 2
    for (_, a), (_, b) in zip(model.state_dict().items(), expected_model.state_dict().items()):
        torch.testing.assert_close(a, b)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda f, d: (dict(f), d), ValueError, "n_samples"),
        (lambda f, d: (f, Importances(dict(d))), ValueError, "full importances carry no n_samples"),
        (
            lambda f, d: (f, Importances({k: torch.zeros_like(v) for k, v in d.items()}, n_samples=500)),
            ValueError,
            "no parameter has a finite",
        ),
    ],
)
def test_bad_auto_inputs_raise_and_leave_model_unchanged(make, error, match) -> None:
    forget, full = make(*_hand_built(10, 100))
    model = _model()
    before = _state(model)
    with pytest.raises(error, match=match):
        ssd_fast.dampen(model, forget, full, alpha="auto")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_other_strings_are_refused() -> None:
    forget, full = _hand_built(10, 100)
    model = _model()
    before = _state(model)
    with pytest.raises(ValueError, match="number or 'auto'"):
        ssd_fast.dampen(model, forget, full, alpha="automatic")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
