"""ssd_fast.eval.baselines: Fisher Forgetting against hand-derived values, retrain and finetune."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from ssd_fast.eval.baselines import (
    classifier_names,
    finetune,
    fisher_diagonal,
    fisher_forgetting,
    fisher_noise,
    fresh_copy,
    noise_variance,
    retrain,
)
from ssd_fast.eval.data import class_scenario, load_digits_data


class Head(nn.Module):
    """A bare linear classifier, so that every gradient has a closed form."""

    def __init__(self, n_in: int = 3, n_classes: int = 4):
        super().__init__()
        self.classifier = nn.Linear(n_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def digit_splits():
    return class_scenario(load_digits_data(), 2, train_subset=300, seed=0)


def test_fisher_diagonal_matches_the_closed_form_for_a_linear_model():
    # For logits z = Wx + b: dCE(z, y)/dz = p - e_y, so g_W = (p - e_y) x^T and g_b = p - e_y.
    # Fisher = mean_i sum_y p_y g^2.
    torch.manual_seed(0)
    model = Head().double()
    x = torch.randn(5, 3, dtype=torch.float64)
    fisher = fisher_diagonal(model, TensorDataset(x, torch.zeros(5, dtype=torch.int64)), progress=False)
    want_w, want_b = torch.zeros(4, 3, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    with torch.no_grad():
        for xi in x:
            p = torch.softmax(model(xi[None]), 1)[0]
            for y in range(4):
                d = p - torch.eye(4, dtype=torch.float64)[y]
                want_w += p[y] * torch.outer(d, xi) ** 2
                want_b += p[y] * d**2
    torch.testing.assert_close(fisher["classifier.weight"].double(), want_w / 5, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fisher["classifier.bias"].double(), want_b / 5, rtol=1e-5, atol=1e-7)


def test_fisher_diagonal_one_sample_two_classes_by_hand():
    # W = 0, b = 0, x = [2]: p = (1/2, 1/2); g_b = p - e_y = (-1/2, 1/2) or (1/2, -1/2),
    # g_W = 2 * g_b. Fisher_b = sum_y 1/2 * 1/4 = 1/4 per entry; Fisher_W = 4 * 1/4 = 1.
    model = Head(1, 2)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
    fisher = fisher_diagonal(model, TensorDataset(torch.tensor([[2.0]]), torch.tensor([0])), progress=False)
    torch.testing.assert_close(fisher["classifier.bias"], torch.tensor([0.25, 0.25]))
    torch.testing.assert_close(fisher["classifier.weight"], torch.tensor([[1.0], [1.0]]))


def test_noise_variance_follows_the_published_steps():
    fisher = torch.tensor([[0.0, 1e3], [4e6, 1e9]])
    # 1/(F + 1e-8) -> [1e8, 1e-3, 2.5e-7, 1e-9]; clamp 1e3; classifier clamp 1e2; times alpha 1e-6.
    row0 = (1e2 + 1e-3) * 1e-6 / 2
    row1 = (2.5e-7 + 1e-9) * 1e-6 / 2
    var = noise_variance(fisher, is_classifier=True, forget_class=None)  # subclass / random: no x10 on a 2-d head
    torch.testing.assert_close(var, torch.tensor([[row0, row0], [row1, row1]]))
    var = noise_variance(fisher, is_classifier=True, forget_class=1)
    torch.testing.assert_close(var, torch.tensor([[row0, row0], [1e-4, 1e-4]]) * 10)
    # Not the classifier: clamp at 1e3 only; a 2-d weight is averaged over dim 1 and not boosted.
    var = noise_variance(fisher, is_classifier=False, forget_class=1)
    torch.testing.assert_close(var[0], torch.full((2,), (1e3 + 1e-3) * 1e-6 / 2))
    # A 1-d tensor (BatchNorm, bias) keeps its own entries and gets the x10 boost.
    var = noise_variance(torch.tensor([0.0, 1e9]), is_classifier=False, forget_class=None)
    torch.testing.assert_close(var, torch.tensor([1e3 * 1e-6 * 10, 1e-9 * 1e-6 * 10]))


def test_fisher_noise_draws_mu_plus_sqrt_var_times_a_seeded_normal():
    torch.manual_seed(0)
    model = Head()
    fisher = {n: torch.rand_like(p) for n, p in model.named_parameters()}
    out = fisher_noise(model, fisher, num_classes=4, forget_class=2, seed=7)
    generator = torch.Generator().manual_seed(7)
    for name, p in model.named_parameters():
        var = noise_variance(fisher[name], is_classifier=True, forget_class=2)
        mu = p.detach().clone()
        mu[2] = 0.0
        want = mu + var.sqrt() * torch.randn(p.shape, generator=generator)
        torch.testing.assert_close(dict(out.named_parameters())[name].detach(), want)


def test_classifier_is_the_last_linear_with_n_classes_outputs():
    from ssd_fast.eval.models import SmallCNN

    assert classifier_names(SmallCNN(num_classes=10, width=4), 10) == {"classifier.weight", "classifier.bias"}
    assert classifier_names(SmallCNN(num_classes=10, width=4), 7) == set()


def test_fisher_forgetting_returns_a_new_model_and_leaves_the_original(digit_splits):
    from ssd_fast.eval.models import SmallCNN

    torch.manual_seed(0)
    model = SmallCNN(width=4).eval()
    before = _state(model)
    out = fisher_forgetting(model, digit_splits, max_samples=3, progress=False)
    assert _same(before, _state(model))
    assert out is not model
    assert not torch.equal(out.classifier.weight, model.classifier.weight)


def test_fisher_fast_matches_the_bs1_loop():
    pytest.importorskip("ssd_fast.per_sample")
    from ssd_fast.eval.baselines.fisher_fast import fisher_diagonal_fast
    from ssd_fast.eval.models import SmallCNN

    torch.manual_seed(0)
    model = SmallCNN(width=4).eval()
    data = TensorDataset(torch.randn(7, 1, 8, 8), torch.zeros(7, dtype=torch.int64))
    slow = fisher_diagonal(model, data, progress=False)
    fast = fisher_diagonal_fast(model, data, batch_size=3, progress=False)
    assert slow.keys() == fast.keys()
    for name in slow:
        torch.testing.assert_close(fast[name], slow[name], rtol=1e-4, atol=1e-10)


def test_fresh_copy_reinitialises_everything():
    from ssd_fast.eval.models import SmallCNN

    model = SmallCNN(width=4)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)
    model.features[0][1].running_mean.fill_(3.0)
    clone = fresh_copy(model, seed=0)
    assert all(not torch.equal(p, q) for p, q in zip(clone.parameters(), model.parameters()) if p.numel() > 1)
    assert torch.equal(clone.features[0][1].running_mean, torch.zeros(4))
    assert torch.equal(fresh_copy(model, 0).classifier.weight, clone.classifier.weight)


def test_retrain_and_finetune_train_copies(digit_splits):
    from ssd_fast.eval.models import SmallCNN

    torch.manual_seed(0)
    model = SmallCNN(width=4).eval()
    before = _state(model)
    gold = retrain(model, digit_splits, epochs=1, progress=False)
    tuned = finetune(model, digit_splits, epochs=1, progress=False)
    assert _same(before, _state(model))
    assert not gold.training and not tuned.training
    assert not torch.equal(tuned.classifier.weight, model.classifier.weight)
    assert not torch.equal(gold.classifier.weight, model.classifier.weight)
