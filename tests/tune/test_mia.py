"""tune's membership-inference aim: the attack equals the paper's (scikit-learn's), and the
choice among tied trials is the one closest to the MIA aim."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ssd_fast
from ssd_fast.tune._mia import entropy, fit_attack, member_rate
from ssd_fast.tune._search import Trial, _choose
from ssd_fast.tune._target import ForgetTarget

from .support import CLASSES, blobs, fit

sklearn_linear = pytest.importorskip("sklearn.linear_model")
metrics = pytest.importorskip("ssd_fast.eval.metrics")


def _entropies(n: int, loc: float, spread: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (loc + spread * torch.randn(n, generator=g, dtype=torch.float64)).clamp(min=0)


@pytest.mark.parametrize(
    ("n_member", "n_nonmember", "member_loc", "nonmember_loc", "spread"),
    [(500, 300, 0.2, 0.6, 0.3), (50, 400, 0.1, 0.15, 0.2), (1000, 1000, 0.05, 1.5, 0.05), (7, 3, 0.3, 0.2, 0.4)],
)
def test_attack_matches_scikit_learn(n_member, n_nonmember, member_loc, nonmember_loc, spread) -> None:
    member = _entropies(n_member, member_loc, spread, 1)
    nonmember = _entropies(n_nonmember, nonmember_loc, spread, 2)
    target = _entropies(400, (member_loc + nonmember_loc) / 2, spread, 3)
    reference = sklearn_linear.LogisticRegression(class_weight="balanced", solver="lbfgs", tol=1e-10, max_iter=10_000)
    reference.fit(
        np.concatenate([member.numpy(), nonmember.numpy()]).reshape(-1, 1),
        np.concatenate([np.ones(n_member), np.zeros(n_nonmember)]),
    )
    slope, intercept = fit_attack(member, nonmember)
    assert slope == pytest.approx(float(reference.coef_[0, 0]), rel=1e-5, abs=1e-6)
    assert intercept == pytest.approx(float(reference.intercept_[0]), rel=1e-5, abs=1e-6)
    # The same samples called members (scikit-learn at its default tolerance of 1e-4 stops
    # short of the optimum where the classes barely overlap, so the converged fit is compared).
    expected = float(reference.predict(target.numpy().reshape(-1, 1)).mean())
    assert member_rate(member, nonmember, target) == pytest.approx(expected, abs=1 / len(target))


def test_entropy_is_finite_and_zero_for_a_saturated_row() -> None:
    logits = torch.randn(64, 10) * 5
    logits[0] = torch.tensor([1e4] + [0.0] * 9)  # 0 * log 0 counts as 0
    h = entropy(logits)
    assert h[0] == 0 and torch.isfinite(h).all()
    p = torch.softmax(logits[1:].double(), 1)
    assert torch.allclose(h[1:], -(p * p.log()).sum(1))


def test_attack_needs_both_kinds_of_sample() -> None:
    with pytest.raises(ValueError, match="member"):
        member_rate(torch.rand(5), torch.empty(0), torch.rand(5))


def _trial(alpha, forget, retain, mia) -> Trial:
    return Trial(alpha, 1.0, 10, forget, retain, forget <= 0.1, retain >= 0.88, False, None, mia)


def test_choice_prefers_the_mia_aim_only_among_trials_tied_on_the_forget_aim() -> None:
    target = ForgetTarget(aim=0.0, bound=0.1, source="test")
    trials = [
        _trial(3, 0.0, 0.90, 0.02),
        _trial(10, 0.005, 0.95, 0.30),
        _trial(20, 0.0, 0.91, 0.15),
        _trial(30, 0.08, 0.97, 0.19),  # nearest the MIA aim, but not tied on the forget aim
    ]
    assert _choose(trials, target, 0.01)[0].alpha == 10  # without an MIA aim: best retain
    assert _choose(trials, target, 0.01, mia_aim=0.19)[0].alpha == 20
    assert _choose(trials, target, 0.01, mia_aim=0.0)[0].alpha == 3


# ---- tune end to end, on a small model -------------------------------------------------------
def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    return blobs(n, seed, noise=1.5)  # overlapping: the model overfits


def _train(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    torch.manual_seed(0)
    return fit(nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, CLASSES)), x, y)


def _loader(x, y) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=64)


@pytest.fixture(scope="module")
def setup():
    x, y = _data(400, 1)
    held_x, held_y = _data(400, 2)  # never trained on
    model = _train(x, y)
    forget, retain = y == 0, y != 0
    sets = {
        "forget_imp": ssd_fast.importance(model, _loader(x[forget], y[forget]), progress=False),
        "full_imp": ssd_fast.importance(model, _loader(x, y), progress=False),
        "forget_eval": _loader(held_x[held_y == 0], held_y[held_y == 0]),
        "retain_eval": _loader(held_x[held_y != 0], held_y[held_y != 0]),
        "members": _loader(x[retain], y[retain]),
        "forget_train": _loader(x[forget], y[forget]),
    }
    return model, sets, _train(x[retain], y[retain])


def _tune(model, s, mia, **kwargs):
    return ssd_fast.tune(
        model,
        s["forget_imp"],
        s["full_imp"],
        forget_eval=s["forget_eval"],
        retain_eval=s["retain_eval"],
        mia=mia,
        lams=(1.0, 0.1),
        progress=False,
        **kwargs,
    )


def _mia_of(model: nn.Module, s) -> float:
    """The attack (tested against scikit-learn above) on the model's entropies over the sets
    tune was given, computed here through the benchmark's own prediction code."""
    member, forget, nonmember = (
        metrics.entropy(metrics.predict(model, d)[0]) for d in (s["members"], s["forget_train"], s["retain_eval"])
    )
    return member_rate(member, nonmember, forget)


def test_tune_scores_accepted_finalists_and_leaves_the_choice_closest_to_the_aim(setup) -> None:
    original, s, _ = setup
    for aim in (0.0, 0.5):
        model = copy.deepcopy(original)
        result = _tune(model, s, ssd_fast.MiaTarget(s["members"], s["forget_train"], aim=aim))
        assert result.satisfied and result.mia_aim == aim
        accepted = [t for t in result.trials if t.accepted and t.whole]  # the finalists that met both bars
        assert accepted and all(t.mia is not None for t in accepted)
        assert all(t.mia is None for t in result.trials if not (t.accepted and t.whole))
        tied = [
            t
            for t in accepted
            if abs(t.forget_acc - result.target.aim)
            <= min(abs(u.forget_acc - result.target.aim) for u in accepted) + 0.01
        ]
        assert abs(result.mia - aim) <= min(abs(t.mia - aim) for t in tied) + 0.01
        # The score recorded is the model's as left.
        assert result.mia == _mia_of(model, s)
        assert f"MIA {result.mia:.3f}" in str(result)


def test_aim_from_the_retrained_model(setup) -> None:
    original, s, retrained = setup
    model = copy.deepcopy(original)
    result = _tune(model, s, ssd_fast.MiaTarget(s["members"], s["forget_train"]), retrained=retrained)
    assert result.mia_aim == _mia_of(retrained, s)


@pytest.mark.parametrize(
    ("mia", "error", "match"),
    [
        ("members", TypeError, "MiaTarget"),
        (lambda s: ssd_fast.MiaTarget(s["members"], s["forget_train"]), ValueError, "retrained"),
        (lambda s: ssd_fast.MiaTarget(s["members"], s["forget_train"], aim=1.5), ValueError, "mia.aim"),
        (lambda s: ssd_fast.MiaTarget([], s["forget_train"], aim=0.1), ValueError, "mia.members"),
    ],
)
def test_bad_mia_target_raises_and_leaves_the_model_unchanged(setup, mia, error, match) -> None:
    original, s, _ = setup
    model = copy.deepcopy(original)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(error, match=match):
        _tune(model, s, mia(s) if callable(mia) else mia)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
