"""tune's answers and choice against scoring every setting on the whole evaluation sets."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import ssd_fast
from ssd_fast import reference
from ssd_fast.tune._alpha_grid import selection_alphas
from ssd_fast.tune._evaluation import EvalSet
from ssd_fast.tune._metric import Scoring
from ssd_fast.tune._search import Trial, _choose
from ssd_fast.tune._trials import EPS, TrialRunner

from .support import CLASSES, blobs, fit


def _blob_case(seed: int, noise: float):
    """A small classifier on blobs, class 0 to forget: the model, both importances and both eval sets."""
    torch.manual_seed(seed)
    x, y = blobs(600, 1, noise=noise)
    model = fit(nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, CLASSES)), x, y)
    hx, hy = blobs(1200, 5, noise=noise)
    loader = torch.utils.data.DataLoader
    ds = torch.utils.data.TensorDataset
    full = ssd_fast.importance(model, loader(ds(x, y), batch_size=64), progress=False)
    forget = ssd_fast.importance(model, loader(ds(x[y == 0], y[y == 0]), batch_size=64), progress=False)
    forget_eval = loader(ds(hx[hy == 0], hy[hy == 0]), batch_size=100)
    retain_eval = loader(ds(hx[hy != 0], hy[hy != 0]), batch_size=100)
    return model, forget, full, forget_eval, retain_eval


@pytest.fixture(scope="module")
def case():
    return _blob_case(0, 1.3)


@pytest.fixture(scope="module")
def overlapping():
    """Blobs that overlap: dampening costs retain accuracy before the class is forgotten."""
    return _blob_case(1, 1.8)


_scores: dict = {}


def _whole(model, forget, full, alpha, lam, sets) -> tuple[float, float]:
    """Whole-set accuracies of the reference's dampening at (alpha, lam), computed once each."""
    key = (id(model), alpha, lam)
    if key not in _scores:
        m = copy.deepcopy(model)
        reference.dampen(m, dict(forget), dict(full), alpha=alpha, lam=lam)
        _scores[key] = sets["forget"].accuracy(m), sets["retain"].accuracy(m)
    return _scores[key]


def _sets(model, forget_eval, retain_eval):
    scoring = Scoring(model)
    cpu = torch.device("cpu")
    return {
        "forget": EvalSet(forget_eval, "forget_eval", cpu, scoring=scoring),
        "retain": EvalSet(retain_eval, "retain_eval", cpu, scoring=scoring),
    }


def test_every_early_answer_is_the_whole_sets_answer(case, monkeypatch) -> None:
    model, forget, full, forget_eval, retain_eval = case
    answered = []
    real_answer = TrialRunner.answer

    def spy(self, setting, question):
        answer = real_answer(self, setting, question)
        tally = setting.tallies[question.set_name]
        answered.append((setting.alpha, setting.lam, setting.selected, question, answer, tally.samples))
        return answer

    monkeypatch.setattr(TrialRunner, "answer", spy)
    tuned = copy.deepcopy(model)
    ssd_fast.tune(
        tuned,
        forget,
        full,
        forget_eval=forget_eval,
        retain_eval=retain_eval,
        lams=(1.0, 0.1),
        layer_fallback=False,
        include_auto=False,
        progress=False,
    )
    sets = _sets(model, forget_eval, retain_eval)
    early = [a for a in answered if a[5] < sets[a[3].set_name].size]
    assert len(early) >= 10  # the test means something: many answers were taken before the whole set
    for alpha, lam, selected, question, answer, _ in answered:
        if not selected:
            continue
        accuracy = dict(zip(("forget", "retain"), _whole(model, forget, full, alpha, lam, sets)))[question.set_name]
        truth = accuracy <= question.theta + EPS if question.at_most else accuracy >= question.theta - EPS
        assert answer == truth, (alpha, lam, question, accuracy)


def _tuned(case, lams, **kwargs):
    """A copy of the case's model tuned over every layer, and tune's result."""
    model, forget, full, forget_eval, retain_eval = case
    tuned = copy.deepcopy(model)
    kwargs = dict(lams=lams, layer_fallback=False, include_auto=False, progress=False) | kwargs
    return tuned, ssd_fast.tune(tuned, forget, full, forget_eval=forget_eval, retain_eval=retain_eval, **kwargs)


def _exhaustive(model, forget, full, grid, lams, sets, floor, target) -> Trial | None:
    trials = []
    for lam in lams:
        for alpha in grid:
            f, r = _whole(model, forget, full, alpha, lam, sets)
            trials.append(Trial(alpha, lam, 1, f, r, f <= target.bound + EPS, r >= floor - EPS, False, whole=True))
    return _choose(trials, target, 0.01)[0]


@pytest.mark.parametrize("lams", [(1.0,), (1.0, 0.1, 0.01)])
def test_choice_equals_exhaustive_scoring_when_every_grid_alpha_is_looked_at(case, lams) -> None:
    """With a coarse grid the first look covers every grid alpha, so the choice must be the
    one scoring every setting on the whole sets gives."""
    model, forget, full, forget_eval, retain_eval = case
    tuned, result = _tuned(case, lams, resolution=1.6)
    sets = _sets(model, forget_eval, retain_eval)
    pairs = [(forget[n], full[n]) for n in forget]
    grid = selection_alphas(pairs, 1.6)
    best = _exhaustive(model, forget, full, grid, lams, sets, result.original_retain_acc - 0.02, result.target)
    assert best is not None and result.alpha is not None
    assert (result.alpha, result.lam) == (best.alpha, best.lam)
    assert math.isclose(result.forget_acc, best.forget_acc) and math.isclose(result.retain_acc, best.retain_acc)
    # The whole-set scores reported are the model's as left.
    assert result.forget_acc == sets["forget"].accuracy(tuned) and result.retain_acc == sets["retain"].accuracy(tuned)
    assert result.samples_scored < len(grid) * len(lams) * (sets["forget"].size + sets["retain"].size) / 3


def test_best_effort_is_the_retain_edge_found_between_coarse_alphas(overlapping) -> None:
    """An aim no setting reaches while keeping retain accuracy: the best effort is the most
    forgetting that keeps it, found by bisection between the coarse alphas, and here it is as
    near the aim as scoring every grid setting on the whole sets allows."""
    model, forget, full, forget_eval, retain_eval = overlapping
    lams = (1.0, 0.1)
    with pytest.warns(RuntimeWarning, match="best effort"):
        _, result = _tuned(overlapping, lams, target_forget_acc=0.0, max_retain_drop=0.01)
    sets = _sets(model, forget_eval, retain_eval)
    grid = selection_alphas([(forget[n], full[n]) for n in forget])
    floor = result.original_retain_acc - 0.01
    assert not result.satisfied and result.alpha in grid
    assert result.retain_acc >= floor - EPS
    below = grid[grid.index(result.alpha) - 1]  # one step more dampening loses retain accuracy
    assert _whole(model, forget, full, below, result.lam, sets)[1] < floor - EPS
    keeping = [
        scores[0]
        for lam in lams
        for alpha in grid
        if (scores := _whole(model, forget, full, alpha, lam, sets))[1] >= floor - EPS
    ]
    assert min(keeping) < result.original_forget_acc - 0.5  # forgetting is possible, short of the aim
    assert result.forget_acc <= min(keeping) + 0.01, (result.forget_acc, min(keeping))
