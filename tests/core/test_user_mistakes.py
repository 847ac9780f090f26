"""Mistakes a new user makes: each gets a message that says what is wrong, and the model is untouched."""

from __future__ import annotations

import copy

import pytest
import torch

import ssd_fast

from ..conftest import TinyCNN, assert_unchanged, snapshot, tiny_batches


@pytest.fixture
def imps(tiny_model):
    full = ssd_fast.importance(tiny_model, tiny_batches(4, 16), progress=False)  # 64 samples
    forget = ssd_fast.importance(tiny_model, tiny_batches(1, 16, seed=1), progress=False)  # 16 samples
    return tiny_model, forget, full


def test_swapped_forget_and_full_are_refused(imps):
    model, forget, full = imps
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"16 samples.*only 64|64 samples but the full ones from only 16"):
        ssd_fast.dampen(model, full, forget, alpha=10.0)
    with pytest.raises(ValueError, match="swapped"):
        ssd_fast.prepare(model, full, forget)
    assert_unchanged(model, before)
    ssd_fast.dampen(model, forget, full, alpha=10.0)  # the right order works


def test_importances_of_another_checkpoint_are_refused(imps):
    model, forget, full = imps
    torch.manual_seed(1)
    other = TinyCNN()  # same architecture and fingerprint, other weights
    assert forget.matches_fingerprint(other)
    before = snapshot(other)
    with pytest.raises(ValueError, match="full importances were computed on another checkpoint"):
        ssd_fast.dampen(other, ssd_fast.importance(other, tiny_batches(1, 4, seed=1), progress=False), full)
    with pytest.raises(ValueError, match="forget importances were computed on another checkpoint"):
        ssd_fast.dampen(other, forget, ssd_fast.importance(other, tiny_batches(4, 16), progress=False))
    assert_unchanged(other, before)


def test_one_stored_full_importance_serves_repeated_requests(imps, tmp_path):
    """The documented workflow: full importance once, then per request a forget importance on
    the model as it is now (already dampened by earlier requests), and dampen with both."""
    model, _, full = imps
    full.save(tmp_path / "full.safetensors")
    stored = ssd_fast.Importances.load(tmp_path / "full.safetensors", model=model)
    assert stored.checkpoint_probe == full.checkpoint_probe
    for request in range(3):
        forget = ssd_fast.importance(model, tiny_batches(1, 8, seed=10 + request), progress=False)
        report = ssd_fast.dampen(model, forget, stored, alpha=1.0, lam=0.5)
        assert report.selected > 0
    half = copy.deepcopy(model).to(torch.bfloat16)  # a lower-precision copy still passes
    ssd_fast.prepare(half, forget.to("cpu"), stored)


def test_nan_in_the_data_is_reported_as_a_non_finite_loss_at_its_batch(imps):
    model, _, full = imps
    batches = tiny_batches(4, 5, seed=3)
    batches[2][0][1, 0, 3, 3] = float("nan")
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"loss was not finite \(NaN or inf\) at batch 2"):
        ssd_fast.dampen(model, batches, full)
    with pytest.raises(ValueError, match="at batch 2"):
        ssd_fast.importance(model, batches, mode="per_sample", progress=False)
    assert_unchanged(model, before)


@pytest.mark.parametrize("which", ["forget", "full"])
def test_a_nan_importance_says_whether_forget_or_full(imps, which):
    model, forget, full = imps
    bad = dict(forget if which == "forget" else full)
    bad["fc.weight"] = bad["fc.weight"].clone()
    bad["fc.weight"][0, 0] = float("nan")
    args = (bad, dict(full)) if which == "forget" else (dict(forget), bad)
    before = snapshot(model)
    with pytest.raises(ValueError, match=f"{which} importance 'fc.weight' contains NaN or inf"):
        ssd_fast.dampen(model, *args)
    assert_unchanged(model, before)


def test_three_element_batches_get_a_hint_that_keeps_both_inputs(tiny_model):
    x, y = tiny_batches(1, 4)[0]
    before = snapshot(tiny_model)
    with pytest.raises(TypeError) as raised:
        ssd_fast.importance(tiny_model, [(x, x, y)], progress=False)
    message = str(raised.value)
    assert "unpack=lambda b: ((b[0], b[1]), b[2])" in message  # both inputs kept
    assert "model(x1, x2)" in message and "where b[1] is not an input" in message
    assert_unchanged(tiny_model, before)


@pytest.mark.parametrize("mode", ["batch", "per_sample"])
def test_targets_shaped_b_by_1_get_a_clear_message(imps, mode):
    model, _, full = imps
    batches = [(x, y[:, None]) for x, y in tiny_batches(2, 4)]
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"targets have shape \[4, 1\].*class indices of shape \[4\]"):
        ssd_fast.importance(model, batches, mode=mode, progress=False)
    if mode == "batch":
        with pytest.raises(ValueError, match="squeeze"):
            ssd_fast.dampen(model, batches, full)
    assert_unchanged(model, before)
