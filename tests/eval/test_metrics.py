"""ssd_fast.eval.metrics: accuracy, the entropy MIA on cases with a known answer, parameters changed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from ssd_fast.eval.metrics import accuracy, entropy, evaluate, fraction_changed, mia, mia_from_entropies


class Confidence(nn.Module):
    """logits = x * [1, 0, 0]: confident (low entropy) for large x, uniform for x = 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] * torch.tensor([[1.0, 0.0, 0.0]])


def _ds(values: list[float]) -> TensorDataset:
    x = torch.tensor(values).unsqueeze(1)
    return TensorDataset(x, torch.zeros(len(values), dtype=torch.int64))


def test_entropy_known_values():
    assert entropy(torch.zeros(1, 4)).item() == pytest.approx(math.log(4))
    assert entropy(torch.tensor([[1e4, 0.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-12)


def test_mia_calls_confident_forget_samples_members():
    model = Confidence()
    retain = _ds([8.0, 9.0, 10.0, 11.0, 12.0] * 4)  # members: confident
    test = _ds([0.0, 0.1, -0.1, 0.2, 0.05] * 4)  # non-members: near uniform
    assert mia(model, retain, _ds([9.5, 10.5, 11.0]), test) == 1.0
    assert mia(model, retain, _ds([0.0, 0.1, 0.02]), test) == 0.0
    assert mia(model, retain, _ds([10.0, 0.0]), test) == 0.5


def test_mia_from_entropies_checks_inputs():
    with pytest.raises(ValueError, match="at least one member"):
        mia_from_entropies(np.array([]), np.array([1.0]), np.array([1.0]))
    assert math.isnan(mia_from_entropies(np.array([0.1, 0.2]), np.array([1.0, 1.1]), np.array([])))


def test_accuracy_and_fraction_changed():
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    data = TensorDataset(torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 1, 1, 0]))
    assert accuracy(model, data) == 0.5
    other = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        other.weight.copy_(torch.tensor([[1.0, 0.5], [0.0, 1.0]]))
    assert fraction_changed(model, other) == 0.25
    assert fraction_changed(model, model) == 0.0
    with pytest.raises(ValueError, match="different parameter names"):
        fraction_changed(model, nn.Linear(2, 2))


def test_evaluate_on_a_scenario():
    from ssd_fast.eval.data import class_scenario, load_digits_data

    splits = class_scenario(load_digits_data(), 0, train_subset=200)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    scores = evaluate(model, splits)
    assert set(scores) == {"forget_acc", "retain_acc", "test_acc", "forget_train_acc", "retain_train_acc", "mia"}
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert scores["forget_acc"] == accuracy(model, splits.test_forget)
    assert scores["retain_acc"] == accuracy(model, splits.test_retain)


def test_predict_takes_dict_batches_and_model_outputs() -> None:
    """The scorers accept what importance accepts: a dict batch holding labels, a model
    returning an object with .logits."""
    from types import SimpleNamespace

    from ssd_fast.eval import metrics

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = torch.nn.Linear(3, 2)

        def forward(self, features, attention_mask=None):
            out = self.inner(features * attention_mask[:, None])
            return SimpleNamespace(logits=out)

    torch.manual_seed(0)
    model = Wrapped()
    x, mask, y = torch.randn(6, 3), torch.tensor([1.0, 1, 0, 1, 1, 0]), torch.tensor([0, 1, 1, 0, 1, 0])
    logits, targets = metrics.predict(model, [{"features": x, "attention_mask": mask, "labels": y}])
    assert torch.equal(targets, y)
    with torch.no_grad():
        assert torch.allclose(logits, model.inner(x * mask[:, None]))
