"""prepare() -> Dampener: repeated applies match the reference, restore is exact, bad calls change nothing."""

from __future__ import annotations

import copy

import pytest
import torch

import ssd_fast
from ssd_fast import reference
from ssd_fast.dampen import Dampener

from ..conftest import DEVICES, assert_unchanged, snapshot, tiny_batches


@pytest.fixture
def setup(tiny_model):
    full = ssd_fast.importance(tiny_model, tiny_batches(4, 6), progress=False)
    forget = ssd_fast.importance(tiny_model, tiny_batches(1, 3, seed=1), progress=False)
    return tiny_model, forget, full


def _reference_after(model, forget, full, alpha, lam):
    expected = copy.deepcopy(model)
    counts = reference.dampen(expected, dict(forget), dict(full), alpha=alpha, lam=lam)
    return snapshot(expected), counts


@pytest.mark.parametrize("device", DEVICES)
def test_every_apply_after_restore_matches_the_reference(setup, device):
    model, forget, full = setup
    model = model.to(device)
    forget, full = forget.to(device), full.to(device)
    dampener = ssd_fast.prepare(model, forget, full, snapshot=True)
    original = snapshot(model)
    for alpha, lam in [(10.0, 1.0), (1.0, 0.1), (0.3, 1.0), (1.0, 0.1)]:
        dampener.restore()
        assert_unchanged(model, original)
        expected, counts = _reference_after(model, forget, full, alpha, lam)
        report = dampener.apply(alpha, lam)
        assert report.per_layer() == counts and report.selected > 0
        assert_unchanged(model, expected)
    dampener.restore()
    assert_unchanged(model, original)


def test_dampen_is_prepare_then_apply(setup):
    model, forget, full = setup
    other = copy.deepcopy(model)
    a = ssd_fast.dampen(model, forget, full, alpha=1.0, lam=0.5)
    b = ssd_fast.prepare(other, forget, full).apply(1.0, 0.5)
    assert a.per_layer() == b.per_layer() and a.backend == b.backend
    assert_unchanged(other, snapshot(model))


def test_report_reads_the_counts_only_when_asked(setup, monkeypatch):
    model, forget, full = setup
    dampener = ssd_fast.prepare(model, forget, full)
    reads = []
    real_tolist = torch.Tensor.tolist

    def counting_tolist(self):
        reads.append(self.shape)
        return real_tolist(self)

    monkeypatch.setattr(torch.Tensor, "tolist", counting_tolist)
    report = dampener.apply(1.0, 1.0)
    assert reads == [] and report.alpha == 1.0 and report.seconds >= 0  # apply itself read nothing
    assert report.selected > 0 and len(reads) == 1  # one read for the device group, then cached
    assert report.per_layer() and len(reads) == 1


def test_restore_without_snapshot_is_refused(setup):
    model, forget, full = setup
    dampener = ssd_fast.prepare(model, forget, full)
    assert dampener.snapshot_bytes == 0
    with pytest.raises(RuntimeError, match="snapshot=True"):
        dampener.restore()


def test_snapshot_costs_one_copy_of_the_dampened_parameters(setup):
    model, forget, full = setup
    dampener = ssd_fast.prepare(model, forget, full, snapshot=True)
    assert dampener.snapshot_bytes == sum(p.numel() * p.element_size() for p in model.parameters())
    dampener.take_snapshot(alpha_min=1e30)  # no alpha that large selects anything where d > 0
    assert dampener.snapshot_bytes < sum(p.numel() * p.element_size() for p in model.parameters())
    with pytest.raises(TypeError, match="alpha_min must be a number"):
        dampener.take_snapshot(alpha_min="auto")


def test_only_from_dampens_later_parameters_and_reports_every_name(setup):
    model, forget, full = setup
    dampener = ssd_fast.prepare(model, forget, full, snapshot=True)
    names = dampener.names
    later = dampener.only_from(names[2])
    original = snapshot(model)
    report = later.apply(0.3, 1.0)
    assert list(report.per_layer()) == list(names)
    for name in names[:2]:
        assert report.per_layer()[name] == 0
        assert torch.equal(dict(model.named_parameters())[name].detach(), original[name])
    later.restore()  # the view shares the snapshot of the Dampener it came from
    assert_unchanged(model, original)
    with pytest.raises(ValueError, match="not a parameter"):
        dampener.only_from("nope.weight")


def test_auto_alpha_is_resolved_once_and_matches_dampen(setup):
    model, forget, full = setup
    other = copy.deepcopy(model)
    dampener = ssd_fast.prepare(model, forget, full, snapshot=True)
    first = dampener.apply("auto", 1.0)
    dampener.restore()
    second = dampener.apply("auto", 1.0)
    expected = ssd_fast.dampen(other, forget, full, alpha="auto", lam=1.0)
    assert first.alpha == second.alpha == expected.alpha
    assert second.per_layer() == expected.per_layer()


@pytest.mark.parametrize(
    "alpha, lam, error, match",
    [
        (0.0, 1.0, ValueError, "alpha must be > 0"),
        (float("nan"), 1.0, ValueError, "alpha must be finite"),
        (True, 1.0, TypeError, "alpha must be a number"),
        ("ten", 1.0, ValueError, "alpha"),
        (1.0, -1.0, ValueError, "lam must be >= 0"),
        (1.0, float("inf"), ValueError, "lam must be finite"),
        (1.0, None, TypeError, "lam must be a number"),
    ],
)
def test_bad_apply_leaves_the_model_unchanged(setup, alpha, lam, error, match):
    model, forget, full = setup
    dampener = ssd_fast.prepare(model, forget, full)
    before = snapshot(model)
    with pytest.raises(error, match=match):
        dampener.apply(alpha, lam)
    assert_unchanged(model, before)


def test_a_parameter_replaced_after_prepare_is_refused_before_any_write(setup):
    model, forget, full = setup
    dampener = ssd_fast.prepare(model, forget, full)
    last_name, last = list(model.named_parameters())[-1]
    last.data = torch.zeros(7)  # the same Parameter object, now the wrong shape
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="mismatched shapes"):
        dampener.apply(0.3, 1.0)  # every earlier tensor would be selected: none may be written
    assert_unchanged(model, before)


def test_prepare_refuses_bad_arguments_before_touching_the_model(setup):
    model, forget, full = setup
    before = snapshot(model)
    with pytest.raises(ValueError, match="backend must be one of"):
        ssd_fast.prepare(model, forget, full, backend="tpu")
    with pytest.raises(TypeError, match="snapshot must be a bool"):
        ssd_fast.prepare(model, forget, full, snapshot="yes")
    with pytest.raises(TypeError, match="model must be"):
        ssd_fast.prepare("model", forget, full)
    assert_unchanged(model, before)


def test_dampener_is_public():
    assert ssd_fast.prepare is not None and ssd_fast.Dampener is Dampener
