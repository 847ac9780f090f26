"""ssd_fast.dampen against ssd_fast.reference.dampen, through every input form and backend."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import ssd_fast
from ssd_fast import _ops, reference

from ..conftest import DEVICES, assert_unchanged, snapshot, tiny_batches


def importances_for(model, seed=0):
    full = ssd_fast.importance(model, tiny_batches(4, 6, seed=seed), progress=False)
    forget = ssd_fast.importance(model, tiny_batches(1, 3, seed=seed + 1), progress=False)
    return forget, full


def run_reference(model, forget, full, alpha, lam):
    ref_model = copy.deepcopy(model)
    counts = reference.dampen(ref_model, forget, full, alpha=alpha, lam=lam)
    return ref_model, counts


def assert_same_params(a: nn.Module, b: nn.Module):
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p.detach().cpu(), q.detach().cpu()), name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("alpha,lam", [(10.0, 1.0), (1.0, 0.1), (0.3, 1.0)])
def test_dampen_matches_reference(tiny_model, device, alpha, lam):
    model = tiny_model.to(device)
    forget, full = importances_for(model)
    ref_model, counts = run_reference(model, forget, full, alpha, lam)
    report = ssd_fast.dampen(model, forget, full, alpha=alpha, lam=lam)
    assert report.per_layer() == counts
    assert report.selected == sum(counts.values()) > 0
    assert report.backend == (device if _ops.has_kernel(device) else "reference")
    assert_same_params(model, ref_model)


def test_reference_backend_and_kernel_agree(tiny_model):
    forget, full = importances_for(tiny_model)
    other = copy.deepcopy(tiny_model)
    a = ssd_fast.dampen(tiny_model, forget, full, alpha=1.0, backend="reference")
    b = ssd_fast.dampen(other, forget, full, alpha=1.0, backend="auto")
    assert a.backend == "reference"
    assert a.per_layer() == b.per_layer()
    assert_same_params(tiny_model, other)


def test_accepts_dicts_and_data(tiny_model):
    forget, full = importances_for(tiny_model)
    ref_model, counts = run_reference(tiny_model, forget, full, 1.0, 1.0)
    as_dicts = copy.deepcopy(tiny_model)
    ssd_fast.dampen(as_dicts, dict(forget), dict(full), alpha=1.0)
    assert_same_params(as_dicts, ref_model)
    from_data = copy.deepcopy(tiny_model)
    report = ssd_fast.dampen(from_data, tiny_batches(1, 3, seed=1), tiny_batches(4, 6, seed=0), alpha=1.0)
    assert report.per_layer() == counts
    assert_same_params(from_data, ref_model)


def test_frozen_parameters_are_untouched(tiny_model):
    forget, full = importances_for(tiny_model)
    tiny_model.fc.weight.requires_grad_(False)
    before = tiny_model.fc.weight.detach().clone()
    hostile = dict(forget)
    hostile["fc.weight"] = torch.full_like(before, 1e6)  # would be selected if it were considered
    report = ssd_fast.dampen(tiny_model, hostile, full, alpha=1.0)
    assert torch.equal(tiny_model.fc.weight, before)
    assert "fc.weight" not in report.per_layer()


def test_frozen_parameters_may_be_absent(tiny_model):
    forget, full = importances_for(tiny_model)
    tiny_model.conv.bias.requires_grad_(False)
    partial = {k: v for k, v in forget.items() if k != "conv.bias"}
    ssd_fast.dampen(tiny_model, partial, full, alpha=1.0)


def test_non_contiguous_parameter(tiny_model):
    forget, full = importances_for(tiny_model)
    tiny_model.fc.weight.data = tiny_model.fc.weight.data.t().contiguous().t()  # same values, column-major
    assert not tiny_model.fc.weight.is_contiguous()
    ref_model, counts = run_reference(tiny_model, forget, full, 0.5, 1.0)
    report = ssd_fast.dampen(tiny_model, forget, full, alpha=0.5)
    assert report.per_layer() == counts
    assert_same_params(tiny_model, ref_model)


def test_unselected_bits_are_untouched_and_d_zero_zeroes():
    model = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.5, -0.0, 2.0, 3.0]]))
    # Importances, not dicts: from values alone, f > 0 only where d == 0 reads as forget and full swapped
    forget = ssd_fast.Importances({"weight": torch.tensor([[1.0, 1.0, 0.0, 0.5]])})
    full = ssd_fast.Importances({"weight": torch.tensor([[0.0, 0.0, 0.0, 0.1]])})
    report = ssd_fast.dampen(model, forget, full, alpha=2.0, lam=1.0)
    # d = 0 < f selects and zeroes; f = 0 is never selected; 0.5 > 0.2 dampens by 0.2
    torch.testing.assert_close(model.weight.detach(), torch.tensor([[0.0, -0.0, 2.0, 0.6]]))
    assert report.selected == 3


def test_report_is_readable(tiny_model):
    forget, full = importances_for(tiny_model)
    report = ssd_fast.dampen(tiny_model, forget, full, alpha=1.0)
    text = str(report)
    assert "alpha=1" in text and "total" in text and report.backend in text
    assert report.numel == sum(p.numel() for p in tiny_model.parameters())
    assert 0 < report.fraction < 1 and report.seconds >= 0


def test_falls_back_to_reference_with_one_warning(tiny_model, monkeypatch):
    forget, full = importances_for(tiny_model)
    ref_model, _ = run_reference(tiny_model, forget, full, 1.0, 1.0)
    monkeypatch.setattr(_ops, "has_kernel", lambda device_type: False)
    monkeypatch.setattr(_ops, "_warned_reference", False)
    with pytest.warns(RuntimeWarning, match="reference"):
        report = ssd_fast.dampen(tiny_model, forget, full, alpha=1.0)
    assert report.backend == "reference"
    assert_same_params(tiny_model, ref_model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only once per process
        ssd_fast.dampen(copy.deepcopy(tiny_model), forget, full, alpha=1.0)


def test_explicit_backend_that_is_missing_raises_before_writing(tiny_model, monkeypatch):
    forget, full = importances_for(tiny_model)
    monkeypatch.setattr(_ops, "has_kernel", lambda device_type: False)
    before = snapshot(tiny_model)
    with pytest.raises(RuntimeError, match="not available"):
        ssd_fast.dampen(tiny_model, forget, full, backend="cpu")
    assert_unchanged(tiny_model, before)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_low_and_high_precision_models(tiny_model, dtype):
    forget, full = importances_for(tiny_model)
    model = tiny_model.to(dtype)
    ref_model, counts = run_reference(model, forget, full, 1.0, 1.0)
    report = ssd_fast.dampen(model, forget, full, alpha=1.0)
    assert report.per_layer() == counts
    assert_same_params(model, ref_model)
