"""ssd_fast.tune: exact restores between trials, the choice left in the model, clean failures."""

from __future__ import annotations

import copy
import importlib

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ssd_fast
from ssd_fast import reference
from ssd_fast.dampen import Dampener
from ssd_fast.tune._alpha_grid import default_alphas, given_alphas, selection_alphas
from ssd_fast.tune._layer_starts import dampen_only_from
from ssd_fast.tune._search import Trial, _choose, tune
from ssd_fast.tune._target import ForgetTarget
from ssd_fast.tune._trials import TrialRunner

from .support import CLASSES, blobs, fit

# The module, not the function: ssd_fast/__init__ may export `tune`, which shadows the attribute.
tune_module = importlib.import_module("ssd_fast.tune._search")


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    return blobs(n, seed)


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, CLASSES))
    return fit(model, *_data(400, 1))


def _copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)


def _setup(model: nn.Module):
    x, y = _data(400, 1)
    forget, retain = y == 0, y != 0

    def loader(m, bs=32):
        return DataLoader(TensorDataset(x[m], y[m]), batch_size=bs)

    full_imp = ssd_fast.importance(model, loader(torch.ones_like(y, dtype=torch.bool)), progress=False)
    forget_imp = ssd_fast.importance(model, loader(forget), progress=False)
    return forget_imp, full_imp, loader(forget, 64), loader(retain, 64)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_equal_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_every_trial_starts_from_the_exact_original_and_the_choice_is_left(trained, monkeypatch) -> None:
    model = _copy(trained)
    forget_imp, full_imp, forget_eval, retain_eval = _setup(model)
    original = _state(model)
    calls = []
    real_apply = Dampener.apply

    def checking_apply(self, alpha, lam):
        _assert_equal_state(_state(model), original)  # bit-for-bit the original before each trial
        calls.append(alpha)
        return real_apply(self, alpha, lam)

    monkeypatch.setattr(Dampener, "apply", checking_apply)
    result = tune(
        model,
        forget_imp,
        full_imp,
        forget_eval=forget_eval,
        retain_eval=retain_eval,
        alphas=[1, 3, 10, 30, 100],
        lams=(1.0, 0.1),
        progress=False,
    )
    # Each distinct setting is applied at least once, and the choice once more at the end.
    assert len(calls) >= len({(t.first_layer, t.lam, t.selected) for t in result.trials if t.selected}) + 1
    assert set(result.timing) == {"apply", "restore", "score"} and all(v >= 0 for v in result.timing.values())
    assert result.satisfied and result.alpha is not None
    assert result.forget_acc <= result.target.bound and result.target.bound == pytest.approx(1 / CLASSES)
    assert result.retain_acc >= result.original_retain_acc - 0.02
    expected = _copy(trained)
    reference.dampen(expected, dict(forget_imp), dict(full_imp), alpha=result.alpha, lam=result.lam)
    _assert_equal_state(_state(model), _state(expected))
    # A trial is marked reused exactly when an earlier one made the same model (None: the
    # original, nothing selected, scored before any trial).
    seen = {None}
    for t in result.trials:
        key = (t.first_layer, t.lam, t.selected) if t.selected else None
        assert t.reused == (key in seen or t.whole), t
        seen.add(key)


def test_one_dampener_is_prepared_for_the_whole_search(trained, monkeypatch) -> None:
    model = _copy(trained)
    forget_imp, full_imp, forget_eval, retain_eval = _setup(model)
    prepared = []
    real_prepare = tune_module.prepare

    def counting_prepare(*args, **kwargs):
        prepared.append(kwargs)
        return real_prepare(*args, **kwargs)

    monkeypatch.setattr(tune_module, "prepare", counting_prepare)
    result = tune(
        model,
        forget_imp,
        full_imp,
        forget_eval=forget_eval,
        retain_eval=retain_eval,
        alphas=[1, 10, 100],
        lams=(1.0,),
        progress=False,
    )
    assert len(prepared) == 1 and len(result.trials) >= 2


def test_default_grid_is_where_the_selected_count_changes(trained) -> None:
    model = _copy(trained)
    forget_imp, full_imp, _, _ = _setup(model)
    pairs = [(forget_imp[n], full_imp[n]) for n in forget_imp]
    grid = selection_alphas(pairs, resolution=1.3)
    counts = [sum(int((f > a * d).sum()) for f, d in pairs) for a in grid]
    assert grid == sorted(grid) and len(set(counts)) == len(counts)  # one alpha per distinct set
    assert counts == sorted(counts, reverse=True)  # nested: larger alpha, fewer selected
    always = sum(int(((d == 0) & (f > 0)).sum()) for f, d in pairs)
    finite = sum(int(((d > 0) & (f > 0)).sum()) for f, d in pairs)
    assert counts[0] == always + finite  # the smallest alpha selects every finite ratio
    assert counts[-1] <= always + 1
    steps = [a / b for a, b in zip(counts, counts[1:]) if b > always + 5]
    assert max(steps) < 1.3 * 1.2  # spaced by about the resolution in count


def test_a_failure_mid_search_leaves_the_model_as_it_was(trained, monkeypatch) -> None:
    model = _copy(trained)
    forget_imp, full_imp, forget_eval, retain_eval = _setup(model)
    original = _state(model)
    runs = {"n": 0}
    real_extend = TrialRunner._extend

    def failing_extend(self, *args):
        runs["n"] += 1
        if runs["n"] == 5:
            raise RuntimeError("boom")
        return real_extend(self, *args)

    monkeypatch.setattr(TrialRunner, "_extend", failing_extend)
    with pytest.raises(RuntimeError, match="boom"):
        tune(model, forget_imp, full_imp, forget_eval=forget_eval, retain_eval=retain_eval, progress=False)
    _assert_equal_state(_state(model), original)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(alphas=[0, 1]), ValueError, "> 0"),
        (dict(alphas=[float("nan")]), ValueError, "finite"),
        (dict(lams=[-1.0]), ValueError, ">= 0"),
        (dict(lams=[]), ValueError, "empty"),
        (dict(max_retain_drop=2.0), ValueError, "fraction"),
        (dict(max_trials=0), ValueError, "max_trials"),
        (dict(resolution=1.0), ValueError, "resolution"),
        (dict(error_rate=1.5), ValueError, "fraction"),
        (dict(metric="accuracy"), TypeError, "metric"),
        (dict(progress="yes"), TypeError, "progress"),
        (dict(retain_eval=[(torch.zeros(4, 12), torch.ones(4, 1, dtype=torch.long))]), ValueError, "shape"),
        (dict(forget_eval=[]), ValueError, "no samples"),
        (dict(forget_eval=torch.zeros(3)), TypeError, "forget_eval"),
        (dict(full_class=False), ValueError, "target_forget_acc"),
        (dict(backend="tpu"), ValueError, "backend"),
        (dict(forget={"0.weight": torch.zeros(32, 12)}), ValueError, "missing"),
    ],
)
def test_bad_input_raises_before_the_model_is_touched(trained, kwargs, error, match) -> None:
    model = _copy(trained)
    forget_imp, full_imp, forget_eval, retain_eval = _setup(model)
    args = dict(forget=forget_imp, full=full_imp, forget_eval=forget_eval, retain_eval=retain_eval)
    args.update(kwargs)
    original = _state(model)
    with pytest.raises(error, match=match):
        tune(model, args.pop("forget"), args.pop("full"), progress=False, **args)
    _assert_equal_state(_state(model), original)


def _trial(alpha, forget, retain, *, lam=1.0, selected=10, bound=0.1, floor=0.88) -> Trial:
    return Trial(alpha, lam, selected, forget, retain, forget <= bound, retain >= floor, False)


def test_choice_prefers_closest_to_aim_then_retain_then_alpha() -> None:
    target = ForgetTarget(aim=0.0, bound=0.1, source="test")
    trials = [_trial(3, 0.0, 0.89), _trial(10, 0.005, 0.95), _trial(30, 0.08, 0.97), _trial(100, 0.5, 0.99)]
    choice, ok = _choose(trials, target, tolerance=0.01)
    assert ok and choice.alpha == 10  # 0.005 is within tolerance of the best 0.0; better retain wins


def test_choice_falls_back_to_best_effort_or_to_no_change() -> None:
    target = ForgetTarget(aim=0.0, bound=0.1, source="test")
    choice, ok = _choose([_trial(3, 0.0, 0.5), _trial(30, 0.6, 0.95), _trial(100, 0.9, 0.99)], target, 0.01)
    assert not ok and choice.alpha == 30  # keeps retain, closest to the aim
    choice, ok = _choose([_trial(3, 0.0, 0.5)], target, 0.01)
    assert not ok and choice is None


def test_default_target_needs_a_proxy_when_not_full_class(trained) -> None:
    model = _copy(trained)
    forget_imp, full_imp, forget_eval, retain_eval = _setup(model)
    x, y = _data(200, 7)
    unseen = DataLoader(TensorDataset(x[y == 0], y[y == 0]), batch_size=50)
    result = tune(
        model,
        forget_imp,
        full_imp,
        forget_eval=forget_eval,
        retain_eval=retain_eval,
        full_class=False,
        unseen_eval=unseen,
        alphas=[1, 10, 100],
        lams=(1.0,),
        progress=False,
    )
    assert result.target.source.startswith("original model's accuracy on unseen_eval")
    assert result.target.bound == pytest.approx(result.target.aim + 0.01)


def test_alphas_above_the_largest_ratio_collapse_to_one_trial() -> None:
    """Above max f/d every alpha selects the same set, so only one of them is tried."""
    f = torch.tensor([1.0, 4.0, 3.0])
    d = torch.tensor([1.0, 1.0, 0.0])  # ratios 1, 4 and inf (always selected)
    pairs = [(f, d)]
    got = given_alphas([0.5, 2, 8, 16, 32], pairs)
    assert got == [0.5, 2, 8]


def test_default_alpha_grid_is_log_spaced_and_reaches_below_one() -> None:
    grid = default_alphas()
    assert grid[0] == pytest.approx(0.1) and grid[-1] == pytest.approx(300.0)
    ratios = [b / a for a, b in zip(grid, grid[1:])]
    assert max(ratios) == pytest.approx(min(ratios))  # one constant step in log(alpha)
    assert ratios[0] == pytest.approx(10 ** (1 / 6), rel=0.02)  # about six per decade


def test_layer_starts_are_weight_layers_after_the_first_and_capped_evenly() -> None:
    from ssd_fast.eval.models import build_model
    from ssd_fast.tune._layer_starts import layer_starts

    cnn = build_model("cnn", num_classes=10, in_channels=1)
    names = dict(cnn.named_parameters())
    assert layer_starts(cnn, names) == ["features.1.0.weight", "hidden.1.weight", "classifier.weight"]
    deep = nn.Sequential(*[nn.Linear(4, 4) for _ in range(10)])
    starts = layer_starts(deep, dict(deep.named_parameters()), limit=4)
    assert starts == ["1.weight", "4.weight", "6.weight", "9.weight"]  # 9 candidates, spread evenly, last kept
    frozen_first = {n: p for n, p in deep.named_parameters() if not n.startswith("0.")}
    assert layer_starts(deep, frozen_first)[0] == "2.weight"  # only parameters with an importance count


def test_dampening_from_a_layer_leaves_earlier_ones_exactly_and_matches_reference_after(trained) -> None:
    model = _copy(trained)
    forget_imp, full_imp, _, _ = _setup(model)
    masked = dampen_only_from(model, forget_imp, "3.weight")
    assert masked.n_samples == forget_imp.n_samples and masked.mode == forget_imp.mode
    before = _state(model)
    ssd_fast.dampen(model, masked, full_imp, alpha=1.0, lam=0.5)
    after = _state(model)
    for name in ("0.weight", "0.bias", "1.weight", "1.bias"):
        assert torch.equal(after[name], before[name]), name
    expected = _copy(trained)
    reference.dampen(expected, dict(forget_imp), dict(full_imp), alpha=1.0, lam=0.5)
    for name in ("3.weight", "3.bias"):
        assert torch.equal(after[name], expected.state_dict()[name]), name
    assert not torch.equal(after["3.weight"], before["3.weight"])  # something was dampened there
    with pytest.raises(ValueError, match="not a parameter"):
        dampen_only_from(model, forget_imp, "nope.weight")


def _shift_forget(monkeypatch, shift: dict) -> None:
    """Add `shift[stage]` to the forget accuracy every dampened trial of that stage scores
    (capped at 1: a shift of 1 makes the stage forget nothing), prefix and whole set alike."""
    real_extend = TrialRunner._extend

    def extend(self, setting, evalset, tally):
        hits, units = tally.hits, tally.units
        real_extend(self, setting, evalset, tally)
        if evalset.name == "forget_eval" and setting.selected and setting.stage in shift:
            new_units = tally.units - units
            tally.hits = hits + min(new_units, tally.hits - hits + shift[setting.stage] * new_units)

    monkeypatch.setattr(TrialRunner, "_extend", extend)


def _reject_stages(monkeypatch, rejected: set) -> None:
    """Make every trial of the given stages (first_layer values) fail the forget target."""
    _shift_forget(monkeypatch, {stage: 1.0 for stage in rejected})


def _fallback_search(model, forget_imp, full_imp, forget_eval, retain_eval):
    """A small grid, with the later-layer fallback on (the default)."""
    return tune(
        model,
        forget_imp,
        full_imp,
        forget_eval=forget_eval,
        retain_eval=retain_eval,
        alphas=[0.3, 1, 3, 10, 30],
        lams=(1.0, 0.1),
        progress=False,
    )


def test_layer_fallback_runs_only_when_every_layer_fails_and_stops_at_the_first_success(trained, monkeypatch) -> None:
    model = _copy(trained)
    forget_imp, full_imp, forget_eval, retain_eval = _setup(model)
    _reject_stages(monkeypatch, {None})
    result = _fallback_search(model, forget_imp, full_imp, forget_eval, retain_eval)
    stages = list(dict.fromkeys(t.first_layer for t in result.trials))
    assert stages == [None, "3.weight"]  # the model's only later weight layer
    assert result.satisfied and result.first_layer == "3.weight"
    assert "only from 3.weight on" in str(result)
    expected = _copy(trained)
    ssd_fast.dampen(
        expected,
        dampen_only_from(expected, forget_imp, "3.weight"),
        full_imp,
        alpha=result.alpha,
        lam=result.lam,
        backend="reference",
    )
    _assert_equal_state(_state(model), _state(expected))
    for name in ("0.weight", "0.bias", "1.weight", "1.bias"):
        assert torch.equal(model.state_dict()[name], trained.state_dict()[name]), name


def test_without_layer_fallback_or_when_all_stages_fail_the_search_covers_what_it_should(trained, monkeypatch) -> None:
    model = _copy(trained)
    forget_imp, full_imp, forget_eval, retain_eval = _setup(model)
    _reject_stages(monkeypatch, {None, "3.weight"})
    args = dict(
        forget_eval=forget_eval,
        retain_eval=retain_eval,
        alphas=[1, 10],
        lams=(1.0,),
        include_auto=False,
        progress=False,
    )
    # The loss's importances: the warning points to label-free ones.
    with pytest.warns(RuntimeWarning, match=r"no trial met.*label_free=True"):
        only_all = tune(_copy(trained), forget_imp, full_imp, layer_fallback=False, **args)
    assert {t.first_layer for t in only_all.trials} == {None}
    with pytest.warns(RuntimeWarning, match="no trial met"):
        both = tune(model, forget_imp, full_imp, **args)
    assert list(dict.fromkeys(t.first_layer for t in both.trials)) == [None, "3.weight"]
    assert not both.satisfied and not any(t.accepted for t in both.trials)
    with pytest.raises(TypeError, match="layer_fallback"):
        tune(_copy(trained), forget_imp, full_imp, layer_fallback="yes", **args)


def test_layer_fallback_also_runs_when_every_layer_is_accepted_but_short_of_the_aim(trained, monkeypatch) -> None:
    """Under the bound but 5 points above the aim with every layer: the later-layer search
    runs, and the setting that reaches the aim wins."""
    model = _copy(trained)
    forget_imp, full_imp, forget_eval, retain_eval = _setup(model)
    _shift_forget(monkeypatch, {None: 0.05})
    result = _fallback_search(model, forget_imp, full_imp, forget_eval, retain_eval)
    every_layer = [t for t in result.trials if t.first_layer is None]
    assert every_layer and not any(t.whole and t.forget_acc <= 0.01 for t in every_layer)  # short of the aim
    assert any(t.first_layer == "3.weight" for t in result.trials)
    assert result.satisfied and result.first_layer == "3.weight" and result.forget_acc <= 0.01


def test_progress_bar_shows_trials_best_and_samples_and_is_off_with_progress_false(trained, capsys) -> None:
    forget_imp, full_imp, forget_eval, retain_eval = _setup(trained)
    args = dict(
        forget_eval=forget_eval, retain_eval=retain_eval, alphas=[1, 10, 100], lams=(1.0,), layer_fallback=False
    )
    tune(_copy(trained), forget_imp, full_imp, progress=False, **args)
    assert "ssd_fast.tune" not in capsys.readouterr().err
    result = tune(_copy(trained), forget_imp, full_imp, progress=True, **args)
    err = capsys.readouterr().err
    assert "ssd_fast.tune" in err and "samples=" in err and f"{len(result.trials)}trial" in err.replace(" ", "")
