"""Importances.merge / update: the union's importance, weighted the way each mode averages."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ssd_fast
from ssd_fast import Importances


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g))


def _importance(model: nn.Module, data, mode: str = "batch", label_free: bool = False) -> Importances:
    return ssd_fast.importance(model, DataLoader(data, batch_size=4), mode=mode, label_free=label_free, progress=False)


@pytest.mark.parametrize("label_free", [False, True])
def test_batch_mode_merge_equals_importance_of_concatenated_batches(label_free: bool) -> None:
    model = _model()
    a, b = _data(12, 1), _data(20, 2)  # 3 and 5 full batches of 4: unequal weights
    union = torch.utils.data.ConcatDataset([a, b])
    merged = _importance(model, a, label_free=label_free).merge(_importance(model, b, label_free=label_free))
    expected = _importance(model, union, label_free=label_free)
    assert (merged.n_batches, merged.n_samples) == (8, 32)
    for name in expected:
        torch.testing.assert_close(merged[name], expected[name])


def test_batch_mode_weights_by_batches_not_samples() -> None:
    """A ragged last batch counts as one batch, as it does in a single pass."""
    model = _model()
    a, b = _data(12, 1), _data(6, 2)  # b: a batch of 4 and one of 2
    merged = _importance(model, a).merge(_importance(model, b))
    expected = _importance(model, torch.utils.data.ConcatDataset([a, b]))
    for name in expected:
        torch.testing.assert_close(merged[name], expected[name])


def test_per_sample_merge_weights_by_samples() -> None:
    """per_sample mode is a mean over samples; built from batch-size-1 batch mode, which is the same sum."""
    model = _model()
    a, b = _data(5, 1), _data(9, 2)

    def one(data):
        return ssd_fast.importance(model, DataLoader(data, batch_size=1), progress=False)

    ia, ib, iu = one(a), one(b), one(torch.utils.data.ConcatDataset([a, b]))

    def as_per_sample(imp):
        return Importances(dict(imp), mode="per_sample", n_samples=imp.n_samples)

    merged = as_per_sample(ia).merge(as_per_sample(ib))
    assert merged.n_samples == 14
    for name in iu:
        torch.testing.assert_close(merged[name], iu[name])


def test_update_adds_data_and_merge_takes_several() -> None:
    model = _model()
    a, b, c = _data(8, 1), _data(12, 2), _data(16, 3)
    stored = _importance(model, a)
    updated = stored.update(model, DataLoader(b, batch_size=4), progress=False)
    three = stored.merge(_importance(model, b), _importance(model, c))
    expected2 = _importance(model, torch.utils.data.ConcatDataset([a, b]))
    expected3 = _importance(model, torch.utils.data.ConcatDataset([a, b, c]))
    for name in expected2:
        torch.testing.assert_close(updated[name], expected2[name])
        torch.testing.assert_close(three[name], expected3[name])
    assert stored.n_batches == 2  # the stored object is not modified


def test_several_deletion_requests_share_one_full_importance() -> None:
    """Forget sets in a row each use the same stored D; the stored tensors never change."""
    model = _model()
    full = _importance(model, _data(40, 1))
    saved = {k: v.clone() for k, v in full.items()}
    for seed in (2, 3):
        ssd_fast.dampen(model, _importance(model, _data(4, seed)), full, alpha=1.0, lam=1.0, backend="reference")
    for name in saved:
        assert torch.equal(full[name], saved[name])


@pytest.mark.parametrize(
    "other, match",
    [
        (lambda m: _importance(m, _data(8, 2), label_free=True), "label_free"),
        (
            lambda m: _importance(m, _data(8, 2), mode="batch").__class__(
                dict(_importance(m, _data(8, 2))), mode="per_sample", n_samples=8
            ),
            "mode",
        ),
        (lambda m: Importances(dict(_importance(m, _data(8, 2)))), "n_batches"),
        (lambda m: ssd_fast.importance(m, DataLoader(_data(8, 2), batch_size=2), progress=False), "batch size"),
        (lambda m: _importance(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4)), _data(8, 2)), "fingerprint"),
    ],
)
def test_merge_refuses_parts_on_another_scale(other, match) -> None:
    model = _model()
    with pytest.raises(ValueError, match=match):
        _importance(model, _data(8, 1)).merge(other(model))


def test_update_refuses_another_model_and_leaves_it_unchanged() -> None:
    model, other = _model(), nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ValueError, match="different model"):
        _importance(model, _data(8, 1)).update(other, DataLoader(_data(8, 2), batch_size=4))
    for k, v in other.state_dict().items():
        assert torch.equal(v, before[k])
