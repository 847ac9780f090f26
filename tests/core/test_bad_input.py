"""Every bad input to dampen gets a clear error and leaves the model bit-for-bit unchanged."""

from __future__ import annotations

import pytest
import torch

import ssd_fast

from ..conftest import TinyCNN, assert_unchanged, snapshot, tiny_batches


@pytest.fixture
def setup(tiny_model):
    full = ssd_fast.importance(tiny_model, tiny_batches(4, 6), progress=False)
    forget = ssd_fast.importance(tiny_model, tiny_batches(1, 3, seed=1), progress=False)
    return tiny_model, forget, full


def edited(imp, **changes):
    out = dict(imp)
    for name, value in changes.items():
        name = name.replace("__", ".")
        if value is None:
            del out[name]
        else:
            out[name] = value
    return out


def nan_at_end(t):
    t = t.clone()
    t.view(-1)[-1] = float("nan")
    return t


CASES = [
    # (description, forget transform, full transform, kwargs, error, message)
    ("missing name", lambda f: edited(f, fc__bias=None), None, {}, ValueError, "missing for parameters 'fc.bias'"),
    ("extra name", lambda f: {**f, "ghost.weight": torch.ones(1)}, None, {}, ValueError, "ghost.weight"),
    ("wrong shape", lambda f: edited(f, fc__bias=torch.ones(5)), None, {}, ValueError, "shape"),
    ("NaN forget", lambda f: edited(f, fc__weight=nan_at_end(f["fc.weight"])), None, {}, ValueError, "NaN or inf"),
    ("inf full", None, lambda d: edited(d, conv__bias=torch.full((4,), float("inf"))), {}, ValueError, "NaN or inf"),
    ("negative", lambda f: edited(f, conv__bias=-torch.ones(4)), None, {}, ValueError, "negative"),
    ("not a tensor", lambda f: edited(f, conv__bias=[1.0, 2.0]), None, {}, TypeError, "not a tensor"),
    ("int dtype bool", lambda f: edited(f, conv__bias=torch.ones(4, dtype=torch.bool)), None, {}, TypeError, "dtype"),
    ("forget not importance", lambda f: 42, None, {}, TypeError, "forget must be"),
    ("full is a tensor", None, lambda d: torch.ones(3), {}, TypeError, "full must be"),
    ("alpha zero", None, None, {"alpha": 0.0}, ValueError, "alpha must be > 0"),
    ("alpha negative", None, None, {"alpha": -1.0}, ValueError, "alpha must be > 0"),
    ("alpha nan", None, None, {"alpha": float("nan")}, ValueError, "alpha must be finite"),
    ("alpha string", None, None, {"alpha": "ten"}, ValueError, "alpha"),
    ("alpha bool", None, None, {"alpha": True}, TypeError, "alpha must be a number"),
    ("lam negative", None, None, {"lam": -0.1}, ValueError, "lam must be >= 0"),
    ("lam inf", None, None, {"lam": float("inf")}, ValueError, "lam must be finite"),
    ("unknown backend", None, None, {"backend": "tpu"}, ValueError, "backend must be one of"),
    ("backend for absent device", None, None, {"backend": "cuda"}, ValueError, "some parameters are on cpu"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_leaves_model_unchanged(setup, case):
    model, forget, full = setup
    _, forget_fn, full_fn, kwargs, error, message = case
    f = forget_fn(forget) if forget_fn else forget
    d = full_fn(full) if full_fn else full
    before = snapshot(model)
    with pytest.raises(error, match=message):
        ssd_fast.dampen(model, f, d, **kwargs)
    assert_unchanged(model, before)


def test_device_mismatch_is_refused(setup):
    model, forget, full = setup
    meta_forget = {k: torch.empty(v.shape, device="meta") for k, v in forget.items()}
    before = snapshot(model)
    with pytest.raises((ValueError, NotImplementedError, RuntimeError)):
        ssd_fast.dampen(model, meta_forget, full)
    assert_unchanged(model, before)


def test_device_mismatch_message(setup):
    from ssd_fast._pairing import pair_with_model

    model, forget, _ = setup
    moved = {k: torch.empty(v.shape, device="meta") for k, v in forget.items()}
    with pytest.raises(ValueError, match="is on meta, the parameter is on cpu"):
        pair_with_model(model, moved, "forget", check_device=True)


def test_mixed_objectives_and_modes_are_refused(setup):
    model, forget, full = setup
    label_free = ssd_fast.importance(model, tiny_batches(1, 3), label_free=True, progress=False)
    before = snapshot(model)
    with pytest.raises(ValueError, match="different objectives"):
        ssd_fast.dampen(model, label_free, full)
    relabelled = ssd_fast.Importances(dict(forget), mode="per_sample", n_samples=3)
    with pytest.raises(ValueError, match="mode"):
        ssd_fast.dampen(model, relabelled, full)
    assert_unchanged(model, before)


def test_importances_for_another_model_are_refused(setup):
    model, _, full = setup
    other = TinyCNN(classes=5)
    other_forget = ssd_fast.importance(other, [(torch.randn(2, 1, 8, 8), torch.tensor([0, 4]))], progress=False)
    before = snapshot(model)
    with pytest.raises(ValueError, match="fc.weight"):
        ssd_fast.dampen(model, other_forget, full)
    assert_unchanged(model, before)


def test_not_a_model():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        ssd_fast.dampen({"w": torch.ones(1)}, {}, {})


def test_raw_op_errors_leave_params_unchanged(setup):
    model, forget, full = setup
    params = [p.data for p in model.parameters()]
    before = snapshot(model)
    short = list(full.values())[:-1]
    with pytest.raises(RuntimeError, match="same length"):
        torch.ops.ssd_fast.select_dampen_(
            params, list(forget.values()), short, 1.0, 1.0, torch.zeros(len(params), dtype=torch.int64)
        )
    assert_unchanged(model, before)
