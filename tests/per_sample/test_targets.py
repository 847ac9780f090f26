"""Weighted and per-class targets, per-sample loss_fn, and refusals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ssd_fast
from ssd_fast.per_sample import PerClass, Weighted

from .support import assert_close, loop_oracle, per_sample, tiny_cnn


def _setup(n: int = 12):
    torch.manual_seed(20)
    return tiny_cnn(), torch.randn(n, 3, 9, 9), torch.randint(0, 3, (n,))


def test_weighted_targets_scale_each_sample() -> None:
    model, x, y = _setup()
    w = torch.rand(12) * 2
    data = [(x[i : i + 5], Weighted(y[i : i + 5], w[i : i + 5])) for i in range(0, 12, 5)]
    got = ssd_fast.importance(model, data, mode="per_sample", progress=False)
    assert_close(got, loop_oracle(model, x, y, weight=w))


def test_weighted_label_free_scales_absolute_gradients() -> None:
    model, x, _ = _setup()
    w = torch.rand(12)
    data = [(x[i : i + 5], Weighted(None, w[i : i + 5])) for i in range(0, 12, 5)]
    got = ssd_fast.importance(model, data, mode="per_sample", label_free=True, progress=False)
    assert_close(got, loop_oracle(model, x, None, label_free=True, weight=w))


def _per_class_oracle(model: nn.Module, x: torch.Tensor, weight: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Fisher Forgetting's loop: batch size 1, every class, weight p(c|x) * g_c^2."""
    model.eval()
    params = dict(model.named_parameters())
    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(len(x)):
        out = model(x[i : i + 1])
        probs = out.softmax(1)[0].detach() if weight is None else weight[i]
        for c in range(out.shape[1]):
            grads = torch.autograd.grad(
                F.cross_entropy(out, torch.tensor([c])), list(params.values()), retain_graph=True
            )
            for n, g in zip(params, grads):
                sums[n] += probs[c] * g.square()
    return {n: s / len(x) for n, s in sums.items()}


def test_per_class_without_weights_is_the_true_fisher() -> None:
    model, x, _ = _setup()
    data = [(x[i : i + 5], PerClass()) for i in range(0, 12, 5)]
    got = ssd_fast.importance(model, data, mode="per_sample", progress=False)
    assert_close(got, _per_class_oracle(model, x, None))


def test_per_class_with_given_weights_and_sample_weights() -> None:
    model, x, _ = _setup()
    weight = torch.rand(12, 3)
    weight[:, 1] = 0  # a class nobody weighs costs no backward pass and contributes nothing
    w = torch.rand(12)
    data = [(x[i : i + 5], Weighted(PerClass(weight[i : i + 5]), w[i : i + 5])) for i in range(0, 12, 5)]
    got = ssd_fast.importance(model, data, mode="per_sample", progress=False)
    assert_close(got, _per_class_oracle(model, x, weight * w[:, None]))


def test_one_hot_per_class_equals_hard_labels() -> None:
    model, x, y = _setup()
    hard = per_sample(model, x, y)
    soft = per_sample(model, x, F.one_hot(y, 3).float(), unpack=lambda b: (b[0], PerClass(b[1])))
    assert_close(soft, hard)


def test_soft_labels_use_cross_entropy_with_probabilities() -> None:
    """Plain float [B, C] targets are soft labels: one loss per sample, as in batch mode."""
    model, x, _ = _setup(n=4)
    probs = torch.rand(4, 3).softmax(1)
    got = per_sample(model, x, probs, batch_size=3)
    batch = ssd_fast.importance(model, [(x[i : i + 1], probs[i : i + 1]) for i in range(4)], progress=False)
    assert_close(got, dict(batch))


def test_per_sample_loss_fn() -> None:
    model, x, y = _setup()
    loss_fn = lambda out, t: F.cross_entropy(out, t, reduction="none")  # noqa: E731
    assert_close(per_sample(model, x, y, loss_fn=loss_fn), loop_oracle(model, x, y))


def test_loss_fn_returning_a_scalar_is_refused() -> None:
    model, x, y = _setup()
    with pytest.raises(TypeError, match="one loss per sample"):
        per_sample(model, x, y, loss_fn=lambda out, t: F.cross_entropy(out, t))


@pytest.mark.parametrize(
    "bad", [torch.tensor([1.0, -1.0, 1.0, 1.0]), torch.ones(3), torch.tensor([1.0, float("nan"), 1.0, 1.0])]
)
def test_bad_weights_are_refused(bad: torch.Tensor) -> None:
    model, x, y = _setup(n=4)
    with pytest.raises((ValueError, TypeError), match="weight"):
        ssd_fast.importance(model, [(x, Weighted(y, bad))], mode="per_sample", progress=False)


def test_train_mode_batchnorm_is_refused_when_called_directly() -> None:
    """importance() always runs in eval mode; the engine refuses batch statistics."""
    from ssd_fast.per_sample import PerSampleAccumulator

    model, x, y = _setup(n=4)
    params = dict(model.named_parameters())
    acc = PerSampleAccumulator(model.train(), params)
    try:
        with pytest.raises(RuntimeError, match="eval mode"):
            acc(x, y, {n: torch.zeros_like(p) for n, p in params.items()})
    finally:
        acc.close()
