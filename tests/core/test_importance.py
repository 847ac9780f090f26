"""ssd_fast.importance (batch mode) against ssd_fast.reference.importance."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import ssd_fast
from ssd_fast import reference

from ..conftest import DEVICES, TinyCNN, tiny_batches


def assert_same_importances(fast, ref):
    assert set(fast) == set(ref)
    for name in ref:
        torch.testing.assert_close(fast[name].cpu(), ref[name].cpu(), rtol=1e-5, atol=1e-12, msg=name)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("label_free", [False, True])
def test_batch_importance_matches_reference(tiny_model, device, label_free):
    model = tiny_model.to(device)
    data = tiny_batches()
    fast = ssd_fast.importance(model, data, label_free=label_free, progress=False)
    ref = reference.importance(copy.deepcopy(model), data, label_free=label_free)
    assert_same_importances(fast, ref)
    assert fast.mode == "batch" and fast.label_free is label_free
    assert (fast.n_samples, fast.n_batches, fast.batch_size) == (15, 3, 5)
    assert any(float(t.sum()) > 0 for t in fast.values())


def test_uneven_last_batch_is_averaged_per_batch(tiny_model):
    data = tiny_batches(2, 6) + tiny_batches(1, 2, seed=9)
    fast = ssd_fast.importance(tiny_model, data, progress=False)
    assert_same_importances(fast, reference.importance(copy.deepcopy(tiny_model), data))
    assert (fast.n_samples, fast.n_batches, fast.batch_size) == (14, 3, 6)


def test_custom_loss_and_unpack(tiny_model):
    triples = [(x, torch.zeros(len(y)), y) for x, y in tiny_batches()]

    def loss_fn(out, y):
        return nn.functional.cross_entropy(out, y, reduction="sum")

    unpack = lambda b: (b[0], b[2])  # noqa: E731
    fast = ssd_fast.importance(tiny_model, triples, loss_fn=loss_fn, unpack=unpack, progress=False)
    ref = reference.importance(copy.deepcopy(tiny_model), triples, loss_fn=loss_fn, unpack=unpack)
    assert_same_importances(fast, ref)


def test_dict_and_tuple_inputs():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(4, 2)

        def forward(self, left, right):
            return self.a(left) + self.b(right)

    torch.manual_seed(0)
    model = TwoInputs()
    xs = [(torch.randn(4, 3), torch.randn(4, 4), torch.randint(0, 2, (4,))) for _ in range(2)]
    as_tuple = ssd_fast.importance(model, xs, unpack=lambda b: ((b[0], b[1]), b[2]), progress=False)
    as_dict = ssd_fast.importance(model, xs, unpack=lambda b: ({"left": b[0], "right": b[1]}, b[2]), progress=False)
    ref = reference.importance(copy.deepcopy(model), xs, unpack=lambda b: ((b[0], b[1]), b[2]))
    assert_same_importances(as_tuple, ref)
    assert_same_importances(as_dict, ref)


def test_leaves_modes_and_grads_as_they_were(tiny_model):
    tiny_model.train()
    tiny_model.fc.eval()  # a mixed state must come back exactly
    for p in tiny_model.parameters():
        p.grad = torch.full_like(p, 3.0)
    before_bn = tiny_model.bn.running_mean.clone()
    ssd_fast.importance(tiny_model, tiny_batches(), progress=False)
    assert tiny_model.training and tiny_model.conv.training and not tiny_model.fc.training
    assert all(torch.equal(p.grad, torch.full_like(p, 3.0)) for p in tiny_model.parameters())
    assert torch.equal(tiny_model.bn.running_mean, before_bn)  # eval mode: no statistics update


def test_eval_mode_is_used(tiny_model):
    # dropout and batch statistics would make the train-mode gradient differ run to run
    tiny_model.train()
    a = ssd_fast.importance(tiny_model, tiny_batches(), progress=False)
    b = ssd_fast.importance(tiny_model, tiny_batches(), progress=False)
    assert_same_importances(a, b)
    tiny_model.eval()
    assert_same_importances(a, ssd_fast.importance(tiny_model, tiny_batches(), progress=False))


def test_frozen_and_unused_parameters_get_zero(tiny_model):
    tiny_model.conv.weight.requires_grad_(False)
    tiny_model.extra = nn.Linear(2, 2)  # never called in forward
    imp = ssd_fast.importance(tiny_model, tiny_batches(), progress=False)
    assert set(imp) == {n for n, _ in tiny_model.named_parameters()}
    assert float(imp["conv.weight"].abs().sum()) == 0.0
    assert float(imp["extra.weight"].abs().sum()) == 0.0
    assert float(imp["fc.weight"].sum()) > 0


def test_bf16_model_accumulates_in_fp32(tiny_model):
    model = tiny_model.to(torch.bfloat16)
    data = [(x.to(torch.bfloat16), y) for x, y in tiny_batches()]
    fast = ssd_fast.importance(model, data, progress=False)
    assert all(t.dtype == torch.float32 for t in fast.values())
    assert_same_importances(fast, reference.importance(copy.deepcopy(model), data))


def test_works_inside_no_grad(tiny_model):
    with torch.no_grad():
        imp = ssd_fast.importance(tiny_model, tiny_batches(), progress=False)
    assert float(imp["fc.weight"].sum()) > 0


def test_fingerprint_records_the_model(tiny_model):
    imp = ssd_fast.importance(tiny_model, tiny_batches(), progress=False)
    assert imp.matches_fingerprint(tiny_model)
    assert not imp.matches_fingerprint(TinyCNN(classes=4))


@pytest.mark.parametrize(
    "kwargs,data,error,message",
    [
        ({"mode": "fisher"}, None, ValueError, "mode must be one of"),
        ({"label_free": True, "loss_fn": nn.functional.mse_loss}, None, ValueError, "label_free"),
        ({"unpack": 3}, None, TypeError, "unpack must be callable"),
        ({}, [], ValueError, "no samples"),
        ({}, torch.randn(3, 1, 8, 8), TypeError, "DataLoader"),
        ({}, [(torch.randn(2, 1, 8, 8), torch.zeros(2), torch.zeros(2, dtype=torch.long))], TypeError, "unpack="),
        ({}, [torch.randn(2, 1, 8, 8)], TypeError, "label_free=True"),
        ({}, [{"x": torch.randn(2, 1, 8, 8)}], TypeError, "unpack="),
        ({"unpack": lambda b: b[0]}, None, TypeError, "unpack must return"),
    ],
)
def test_bad_arguments_raise_clear_errors(tiny_model, kwargs, data, error, message):
    with pytest.raises(error, match=message):
        ssd_fast.importance(tiny_model, tiny_batches() if data is None else data, progress=False, **kwargs)


def test_progress_bar_can_be_shown(tiny_model, capsys):
    ssd_fast.importance(tiny_model, tiny_batches(), progress=True)
    assert "importance" in capsys.readouterr().err


def test_per_sample_targets_in_batch_mode_are_refused(tiny_model):
    from ssd_fast.per_sample import PerClass, Weighted

    batches = tiny_batches()
    for wrap in (lambda b: (b[0], Weighted(b[1], torch.ones(len(b[1])))), lambda b: (b[0], PerClass())):
        with pytest.raises(ValueError, match="mode='per_sample'"):
            ssd_fast.importance(tiny_model, batches, unpack=wrap, progress=False)
