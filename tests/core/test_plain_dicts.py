"""Importances given as plain dicts: checked as far as their values allow, and never trusted silently."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import ssd_fast

from ..conftest import assert_unchanged, snapshot

MISSING = r"could not run: forget and full swapped .*another checkpoint.*same way.*ssd_fast\.Importances\("


def _mlp_and_data():
    """A ReLU MLP and 512 samples; 4 of them fire only some hidden units, so their importance has exact zeros."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 4))
    x, y = torch.randn(512, 20), torch.randint(0, 4, (512,))
    return model, x, y


@pytest.mark.parametrize("mode", ["batch", "per_sample"])
def test_swapped_dicts_are_refused_where_the_zeros_show_it(mode):
    model, x, y = _mlp_and_data()
    batches = [(x[i : i + 64], y[i : i + 64]) for i in range(0, 512, 64)]
    full = ssd_fast.importance(model, batches, mode=mode, progress=False)
    forget = ssd_fast.importance(model, [(x[:4], y[:4])], mode=mode, progress=False)
    dead = int(sum(((forget[n] == 0) & (full[n] > 0)).sum() for n in full))
    assert dead > 0  # what the check relies on: units no forget sample fires
    before = snapshot(model)
    with pytest.raises(ValueError, match=rf"look swapped: the forget importance is > 0 at {dead:,} elements"):
        ssd_fast.dampen(model, dict(full), dict(forget), alpha=2.0)
    with pytest.raises(ValueError, match="call with \\(model, forget, full\\)"):
        ssd_fast.prepare(model, dict(full), forget)  # one side a dict is enough to run it
    assert_unchanged(model, before)
    with pytest.warns(UserWarning, match=MISSING):  # the right order passes, with the warning
        assert ssd_fast.dampen(model, dict(forget), dict(full), alpha=2.0).selected > 0


def test_full_importances_of_the_retain_set_are_not_refused():
    """Data without the forget set (a legitimate variant) gives zeros on both sides: no refusal."""
    model, x, y = _mlp_and_data()
    forget = ssd_fast.importance(model, [(x[:4], y[:4])], progress=False)
    retain = ssd_fast.importance(model, [(x[4:8], y[4:8])], progress=False)
    assert any(((forget[n] > 0) & (retain[n] == 0)).any() for n in forget)
    assert any(((retain[n] > 0) & (forget[n] == 0)).any() for n in forget)
    with pytest.warns(UserWarning, match=MISSING):
        ssd_fast.dampen(model, dict(forget), dict(retain), alpha=2.0)


def test_dense_swapped_dicts_pass_with_one_warning_naming_the_missing_checks():
    """No exact zeros anywhere: the values cannot tell, so the one warning says what could not run."""
    model, x, y = _mlp_and_data()
    full = ssd_fast.importance(model, [(x, y)], progress=False)
    forget = ssd_fast.importance(model, [(x[:64], y[:64])], progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ssd_fast.dampen(model, dict(full), dict(forget), alpha=2.0)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1 and "forget and full importances were given as plain dicts" in messages[0]
    assert caught[0].filename == __file__  # it points at the caller's line
    assert "n_samples=..., model=model" in messages[0]


def test_one_dict_names_only_that_side(tiny_model):
    from ..conftest import tiny_batches

    full = ssd_fast.importance(tiny_model, tiny_batches(4, 16), progress=False)
    forget = ssd_fast.importance(tiny_model, tiny_batches(1, 16, seed=1), progress=False)
    with pytest.warns(UserWarning, match=r"^full importances were given as plain dicts.*probe of the full\)"):
        ssd_fast.prepare(tiny_model, forget, dict(full))


def test_wrapped_dicts_keep_every_check_and_warn_about_nothing(tiny_model):
    from ..conftest import TinyCNN, tiny_batches

    full = dict(ssd_fast.importance(tiny_model, tiny_batches(4, 16), progress=False))
    forget = dict(ssd_fast.importance(tiny_model, tiny_batches(1, 16, seed=1), progress=False))
    wrapped_full = ssd_fast.Importances(full, n_samples=64, model=tiny_model)
    wrapped_forget = ssd_fast.Importances(forget, n_samples=16, model=tiny_model)
    with pytest.raises(ValueError, match="swapped"):
        ssd_fast.prepare(tiny_model, wrapped_full, wrapped_forget)
    torch.manual_seed(1)
    other = TinyCNN()
    before = snapshot(other)
    with pytest.raises(ValueError, match="another checkpoint"):
        ssd_fast.prepare(other, wrapped_forget, wrapped_full)
    assert_unchanged(other, before)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        ssd_fast.dampen(tiny_model, wrapped_forget, wrapped_full, alpha=2.0)
    with pytest.raises(ValueError, match="not both"):
        ssd_fast.Importances(full, model=tiny_model, fingerprint="abc")
