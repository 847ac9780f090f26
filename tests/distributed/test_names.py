"""One stored importance serves the plain, DataParallel, DDP and compiled model alike.

(DDP is covered on 2 ranks in test_ddp.py; it wraps the model as `module` like DataParallel.)
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import ssd_fast
from ssd_fast._pairing import model_fingerprint
from ssd_fast.distributed import unwrap
from tests.distributed.workloads import BATCH, make_dataset, make_model

WRAPPERS = {
    "data_parallel": nn.DataParallel,
    "compiled": lambda m: torch.compile(m, backend="eager"),
    "compiled_data_parallel": lambda m: torch.compile(nn.DataParallel(m), backend="eager"),
}


def _importances(model: nn.Module) -> tuple[ssd_fast.Importances, ssd_fast.Importances]:
    forget = ssd_fast.importance(model, [next(iter(DataLoader(make_dataset(), batch_size=BATCH)))], progress=False)
    full = ssd_fast.importance(model, DataLoader(make_dataset(), batch_size=BATCH), progress=False)
    return forget, full


def _dampened_plain(forget, full) -> dict[str, torch.Tensor]:
    model = make_model()
    assert ssd_fast.dampen(model, forget, full, alpha=2.0).selected > 0
    return model.state_dict()


@pytest.mark.parametrize("wrap", WRAPPERS.values(), ids=WRAPPERS.keys())
def test_wrapped_model_has_the_plain_names_and_fingerprint(wrap):
    plain = make_model()
    wrapped = wrap(plain)
    assert unwrap(wrapped) is plain
    assert model_fingerprint(wrapped) == model_fingerprint(plain)


@pytest.mark.parametrize("wrap", WRAPPERS.values(), ids=WRAPPERS.keys())
def test_plain_importances_dampen_the_wrapped_model(wrap):
    forget, full = _importances(make_model())
    wrapped = wrap(make_model())
    ssd_fast.dampen(wrapped, forget, full, alpha=2.0)
    want = _dampened_plain(forget, full)
    for name, t in unwrap(wrapped).state_dict().items():
        assert torch.equal(t, want[name]), name


@pytest.mark.parametrize("wrap", WRAPPERS.values(), ids=WRAPPERS.keys())
def test_wrapped_importances_dampen_the_plain_model(wrap, tmp_path):
    forget, full = _importances(wrap(make_model()))
    assert set(full) == set(dict(make_model().named_parameters()))
    full.save(tmp_path / "full.safetensors")
    loaded = ssd_fast.Importances.load(tmp_path / "full.safetensors", model=make_model())
    model = make_model()
    ssd_fast.dampen(model, forget, loaded, alpha=2.0)
    want = _dampened_plain(*_importances(make_model()))
    for name, t in model.state_dict().items():
        assert torch.equal(t, want[name]), name


@pytest.mark.parametrize("wrap", WRAPPERS.values(), ids=WRAPPERS.keys())
def test_wrapped_model_refuses_importances_keyed_by_wrapper_names_and_is_unchanged(wrap):
    forget, full = _importances(make_model())
    prefixed = {f"module.{n}": t for n, t in full.items()}  # what a wrapper-keyed file would hold
    wrapped = wrap(make_model())
    before = {n: t.clone() for n, t in unwrap(wrapped).state_dict().items()}
    with pytest.raises(ValueError, match="do not match the model"):
        ssd_fast.dampen(wrapped, forget, prefixed, alpha=2.0)
    for name, t in unwrap(wrapped).state_dict().items():
        assert torch.equal(t, before[name]), name


def test_update_accepts_the_wrapped_model_of_a_plain_importance():
    forget, full = _importances(make_model())
    more = full.update(nn.DataParallel(make_model()), DataLoader(make_dataset(), batch_size=BATCH), progress=False)
    assert more.n_batches == 2 * full.n_batches
    for name, t in full.items():
        torch.testing.assert_close(more[name], t)
