"""ssd_fast.compat: the published SSD interface gives ssd_fast.reference's results."""

from __future__ import annotations

import importlib.util
import pathlib
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ssd_fast import reference
from ssd_fast.compat import ParameterPerturber, ssd_tuning

HERE = pathlib.Path(__file__).parent
N, CLASSES = 48, 3


def _published_script():
    spec = importlib.util.spec_from_file_location("published_script", HERE / "published_script.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Dropout(0.3), nn.Linear(4 * 6 * 6, CLASSES)
    )


def _tensors():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, 1, 8, 8, generator=g)
    y = torch.arange(N) % CLASSES
    x[y == 0] += 1.5  # make class 0 distinctive, so selection picks something
    return x, y


def _loaders(layout: str) -> tuple[DataLoader, DataLoader]:
    """Full and forget (class 0) loaders yielding batches in `layout`."""
    x, y = _tensors()
    fields = {
        "published": lambda x, y, i: (x, torch.zeros_like(y), y),
        "xy": lambda x, y, i: (x, y),
        "xyi": lambda x, y, i: (x, y, i),
    }[layout]
    index = torch.arange(N)
    keep = y == 0
    full = DataLoader(TensorDataset(*fields(x, y, index)), batch_size=8)
    forget = DataLoader(TensorDataset(*fields(x[keep], y[keep], index[keep])), batch_size=8)
    return full, forget


def _reference_result(alpha: float, lam: float, label_free: bool = False) -> dict[str, torch.Tensor]:
    """What the oracle gives: eval-mode importances on (x, y) batches, then the SSD rule."""
    model = _model()
    full, forget = _loaders("xy")
    f = reference.importance(model, forget, label_free=label_free)
    d = reference.importance(model, full, label_free=label_free)
    reference.dampen(model, f, d, alpha=alpha, lam=lam)
    return model.state_dict()


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7, msg=k)


def test_published_script_with_one_changed_import_gets_the_reference_result() -> None:
    script = _published_script()
    model = _model()
    full, forget = _loaders("published")
    original = {k: v.clone() for k, v in model.state_dict().items()}
    script.ssd_tuning(model, forget, 1, 2, full, "cpu")
    _assert_same_state(model.state_dict(), _reference_result(alpha=2.0, lam=1.0))
    assert any(not torch.equal(v, original[k]) for k, v in model.state_dict().items()), "nothing was dampened"


@pytest.mark.parametrize("layout", ["published", "xy", "xyi"])
@pytest.mark.parametrize("label_free", [False, True])
def test_each_batch_layout_matches_the_reference(layout: str, label_free: bool) -> None:
    model = _model()
    full, forget = _loaders(layout)
    ssd_tuning(model, forget, full, 0.5, 2.0, "cpu", batch_layout=layout, label_free=label_free)
    _assert_same_state(model.state_dict(), _reference_result(alpha=2.0, lam=0.5, label_free=label_free))


def _bn_train_dropout_off(model: nn.Module) -> nn.Module:
    """Train mode with BatchNorm on batch statistics, dropout off (so the result is deterministic)."""
    model.train()
    model[4].eval()
    return model


def test_calc_importance_keeps_the_callers_mode_like_the_published_code() -> None:
    """In train mode BatchNorm uses batch statistics and updates its running ones: as published."""
    model, expected_model = _bn_train_dropout_off(_model()), _bn_train_dropout_off(_model())
    full, _ = _loaders("published")
    got = ParameterPerturber(model, None, "cpu", {"dampening_constant": 1, "selection_weighting": 10}).calc_importance(
        full
    )
    # The published loop, by hand: .grad of the mean CE per batch, squared, averaged over batches.
    sums = {n: torch.zeros_like(p) for n, p in expected_model.named_parameters()}
    for x, _, y in full:
        expected_model.zero_grad()
        nn.functional.cross_entropy(expected_model(x), y).backward()
        for n, p in expected_model.named_parameters():
            sums[n] += p.grad.pow(2)
    for n in sums:
        torch.testing.assert_close(got[n], sums[n] / len(full), msg=n)
    torch.testing.assert_close(model[1].running_mean, expected_model[1].running_mean)
    assert model.training and model[1].training and not model[4].training  # modes untouched


def test_exponent_and_lower_bound_use_the_faithful_torch_path() -> None:
    full, forget = _loaders("published")
    model, expected_model = _model(), _model()
    parameters = {"dampening_constant": 1.0, "selection_weighting": 2.0, "exponent": 2.0, "lower_bound": 0.5}
    pdr = ParameterPerturber(model.eval(), None, "cpu", parameters)
    d, f = pdr.calc_importance(full), pdr.calc_importance(forget)
    pdr.modify_weight(d, f)
    with torch.no_grad():  # the published rule, element by element
        for n, p in expected_model.eval().named_parameters():
            chosen = f[n] > 2.0 * d[n]
            weight = (1.0 * d[n] / f[n]).pow(2.0).clamp(max=0.5)
            p[chosen] = p[chosen] * weight[chosen]
    _assert_same_state(model.state_dict(), expected_model.state_dict())


def test_keys_other_than_the_models_names_pair_by_position_with_a_warning() -> None:
    full, forget = _loaders("published")
    model = _model().eval()
    pdr = ParameterPerturber(model, None, "cpu", {"dampening_constant": 1.0, "selection_weighting": 2.0})
    d, f = pdr.calc_importance(full), pdr.calc_importance(forget)

    def rename(imp):
        return {f"module.{k}": v for k, v in imp.items()}

    with pytest.warns(UserWarning, match="by position"):
        pdr.modify_weight(rename(d), rename(f))
    _assert_same_state(model.state_dict(), _reference_result(alpha=2.0, lam=1.0))


def _good_importances():
    full, forget = _loaders("published")
    pdr = ParameterPerturber(_model().eval(), None, "cpu", {"dampening_constant": 1.0, "selection_weighting": 2.0})
    return pdr.calc_importance(full), pdr.calc_importance(forget)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda m: ParameterPerturber(m, None, "cpu", None), TypeError, "published dict"),
        (lambda m: ParameterPerturber(m, None, "cpu", {"dampening_constant": 1}), ValueError, "missing"),
        (
            lambda m: ParameterPerturber(
                m, None, "cpu", {"dampening_constant": 1, "selection_weighting": 1, "alpha": 3}
            ),
            ValueError,
            "unknown",
        ),
        (
            lambda m: ParameterPerturber(m, None, "cpu", {"dampening_constant": -1, "selection_weighting": 1}),
            ValueError,
            ">= 0",
        ),
        (
            lambda m: ParameterPerturber(
                m, None, "cpu", {"dampening_constant": 1, "selection_weighting": float("nan")}
            ),
            ValueError,
            "finite",
        ),
        (
            lambda m: ParameterPerturber(
                m, None, "cpu", {"dampening_constant": 1, "selection_weighting": 1, "exponent": 0}
            ),
            ValueError,
            "> 0",
        ),
        (
            lambda m: ParameterPerturber(
                m, None, "cpu", {"dampening_constant": 1, "selection_weighting": 1}
            ).calc_importance(_loaders("xy")[0]),
            TypeError,
            "batch_layout='xy'",
        ),
        (
            lambda m: ParameterPerturber(
                m, None, "cpu", {"dampening_constant": 1, "selection_weighting": 1}, batch_layout="yx"
            ),
            ValueError,
            "batch_layout",
        ),
        (
            lambda m: ParameterPerturber(
                m, None, "cpu", {"dampening_constant": 1, "selection_weighting": 1}
            ).modify_weight({k: v for k, v in list(_good_importances()[0].items())[:-1]}, _good_importances()[1]),
            ValueError,
            "length",
        ),
        (
            lambda m: ParameterPerturber(
                m, None, "cpu", {"dampening_constant": 1, "selection_weighting": 1}
            ).modify_weight({k: v * float("nan") for k, v in _good_importances()[0].items()}, _good_importances()[1]),
            ValueError,
            "NaN",
        ),
        (
            lambda m: ParameterPerturber(
                m, None, "cpu", {"dampening_constant": 1, "selection_weighting": 1}
            ).modify_weight({k: -v for k, v in _good_importances()[0].items()}, _good_importances()[1]),
            ValueError,
            "negative",
        ),
        (
            lambda m: ssd_tuning(m, _loaders("published")[1], 1.0, 10.0, _loaders("published")[0], "cpu"),
            TypeError,
            "keywords",
        ),
    ],
)
def test_bad_input_raises_before_the_model_is_touched(call, error, match) -> None:
    model = _model()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error, match=match):
            call(model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert model.training


def _published_importance(model: nn.Module, loader, label_free: bool) -> dict[str, torch.Tensor]:
    """The published calc_importance, line by line: .backward() per batch, += grad**2 (LFSSD: |grad|)."""
    sums = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for x, _, y in loader:
        model.zero_grad()
        out = model(x)
        loss = torch.norm(out, p="fro", dim=1).pow(2).mean() if label_free else nn.CrossEntropyLoss()(out, y)
        loss.backward()
        for n, p in model.named_parameters():
            if p.grad is not None:
                sums[n] += p.grad.data.clone().abs() if label_free else p.grad.data.clone().pow(2)
    return {n: s / float(len(loader)) for n, s in sums.items()}


@pytest.mark.parametrize("label_free", [False, True])
def test_calc_importance_is_the_published_result_bit_for_bit(label_free: bool) -> None:
    """LFSSD included: compat writes the published torch.norm(out, "fro", dim=1).pow(2), not the
    main API's out.square().sum(1), which rounds differently."""
    full, _ = _loaders("published")
    model, expected_model = _model().eval(), _model().eval()
    pdr = ParameterPerturber(
        model, None, "cpu", {"dampening_constant": 1, "selection_weighting": 10}, label_free=label_free
    )
    got = pdr.calc_importance(full)
    expected = _published_importance(expected_model, full, label_free)
    for n in expected:
        assert torch.equal(got[n], expected[n]), n


def test_the_published_flow_records_what_dampen_checks_and_warns_about_nothing() -> None:
    full, forget = _loaders("published")
    model = _model().eval()
    pdr = ParameterPerturber(model, None, "cpu", {"dampening_constant": 1.0, "selection_weighting": 2.0})
    d, f = pdr.calc_importance(full), pdr.calc_importance(forget)
    assert type(d) is dict and type(f) is dict  # as published
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        pdr.modify_weight(d, f)
    _assert_same_state(model.state_dict(), _reference_result(alpha=2.0, lam=1.0))


@pytest.mark.parametrize("parameters", [{}, {"exponent": 2.0}], ids=["kernel", "published_rule"])
def test_swapped_importances_are_refused_before_writing(parameters) -> None:
    full, forget = _loaders("published")
    model = _model().eval()
    pdr = ParameterPerturber(model, None, "cpu", {"dampening_constant": 1.0, "selection_weighting": 2.0, **parameters})
    d, f = pdr.calc_importance(full), pdr.calc_importance(forget)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="come from 48 samples but the full ones from only 16"):  # the counts
        pdr.modify_weight(f, d)  # the published signature takes the full importance first
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_importances_of_the_model_before_new_weights_are_refused() -> None:
    full, forget = _loaders("published")
    model = _model().eval()
    pdr = ParameterPerturber(model, None, "cpu", {"dampening_constant": 1.0, "selection_weighting": 2.0})
    d, f = pdr.calc_importance(full), pdr.calc_importance(forget)
    model.load_state_dict(_model(seed=5).state_dict())  # e.g. a later checkpoint loaded into the same model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="another checkpoint"):
        pdr.modify_weight(d, f)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_edited_or_plain_dicts_lose_the_record_and_say_so() -> None:
    full, forget = _loaders("published")
    model = _model().eval()
    pdr = ParameterPerturber(model, None, "cpu", {"dampening_constant": 1.0, "selection_weighting": 2.0})
    d, f = pdr.calc_importance(full), pdr.calc_importance(forget)
    d["0.bias"].mul_(1.0)  # written in place: the record may no longer describe these values
    with pytest.warns(UserWarning, match="could not run: forget and full swapped"):
        pdr.modify_weight(d, dict(f))


def test_calc_importance_saves_and_loads_as_the_plain_dict_it_was(tmp_path) -> None:
    """Published scripts torch.save their importances; weights_only loading must still read them."""
    full, _ = _loaders("published")
    pdr = ParameterPerturber(_model().eval(), None, "cpu", {"dampening_constant": 1, "selection_weighting": 10})
    d = pdr.calc_importance(full)
    torch.save(d, tmp_path / "imp.pt")
    back = torch.load(tmp_path / "imp.pt", weights_only=True)
    assert type(back) is dict and back.keys() == d.keys() and all(torch.equal(back[k], d[k]) for k in d)
