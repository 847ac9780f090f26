"""ssd_fast behind SUPREME's names: registered through its registry, checked against SUPREME's own code.

SUPREME (supreme-unlearning 0.1.5, installed --no-deps by scripts/setup.sh) is run
itself, not a model of it: its ssd/lfssd/ssd_det/lfssd_det/assd functions on the same
Fabric-wrapped model and the same (x, coarse, y) loaders. In one process ssd and assd
must give the same weights bit for bit; the others compute the same quantities in
another order (per-sample engine; out.square().sum(1) for the squared norm), so they
agree up to float rounding, except where an element's f/(alpha d) sits at 1 to within
that rounding (excluded from the comparison, as everywhere in this suite).
"""

from __future__ import annotations

import pytest
import torch

import ssd_fast
from tests.conftest import assert_unchanged, snapshot
from tests.integrations.supreme_support import (
    ALPHA,
    LAM,
    METHODS,
    call,
    fresh,
    loaders,
    resolved,
    supreme_own,
    trained_model,
    weights,
)

L = pytest.importorskip("lightning")
supreme = pytest.importorskip("supreme")
ours = pytest.importorskip("ssd_fast.integrations.supreme")

EXACT = {"ssd", "assd"}  # the same arithmetic in the same order as SUPREME's


@pytest.fixture(autouse=True)
def restore_registry():
    """register() changes SUPREME's process-wide registry: put it back after each test."""
    from supreme import registry

    saved = dict(registry._callable_overrides["unlearning_method"])
    yield
    registry._callable_overrides["unlearning_method"].clear()
    registry._callable_overrides["unlearning_method"].update(saved)


@pytest.fixture(scope="module")
def fabric():
    fabric = L.Fabric(accelerator="cpu", devices=1)
    fabric.launch()
    return fabric


@pytest.fixture(scope="module")
def base():
    return trained_model()


def _run(method, fabric, base, forget, full):
    return weights(call(method, fabric, fabric.setup_module(fresh(base)), forget, full))


def _near_threshold(base, name: str, forget_loader, full_loader) -> dict[str, torch.Tensor]:
    """Elements whose f/(alpha d) lies within a relative 1e-5 of 1 (rounding may flip them)."""
    method = ours.METHODS[name]
    mode = "per_sample" if method.per_sample else "batch"

    def imp(loader):
        return ssd_fast.importance(
            fresh(base), loader, mode=mode, label_free=method.label_free, unpack=ours._supreme_batch, progress=False
        )

    forget, full = imp(forget_loader), imp(full_loader)
    alpha = ssd_fast.auto_alpha(forget, full) if method.auto_alpha else ALPHA
    return {n: ((forget[n] / (alpha * full[n])) - 1).abs() <= 1e-5 for n in forget}


def test_register_puts_ssd_fast_behind_supremes_own_names():
    assert ours.register("ssd", progress=False) == ["ssd"]  # one name, not its letters
    assert ours.register(progress=False) == list(METHODS)
    from supreme.utils import project_config

    for name in METHODS:
        assert resolved(name) is getattr(ours, name)
        assert name in project_config.unlearning_methods


@pytest.mark.parametrize("name", METHODS)
def test_each_method_gives_supremes_weights(fabric, base, name):
    forget, full = loaders()
    want = _run(supreme_own(name), fabric, base, forget, full)
    ours.register([name], progress=False)
    got = _run(resolved(name), fabric, base, forget, full)
    changed = sum(int((want[n] != base.state_dict()[n]).sum()) for n in want)
    assert changed > 0  # SUPREME did dampen something: the comparison is not of two untouched models
    if name in EXACT:
        for n, t in want.items():
            assert torch.equal(got[n], t), n
        return
    near = _near_threshold(base, name, forget, full)
    for n, t in want.items():
        keep = ~near[n]
        torch.testing.assert_close(got[n][keep], t[keep], rtol=1e-5, atol=1e-7)


def test_assd_counts_dataset_reads_len_of_the_dataset_as_supreme_does(fabric, base):
    """With drop_last, the samples seen (48 of 64; 12 of 16) differ from len(dataset)."""
    forget, full = loaders(batch_size=6, drop_last=True)
    want = _run(supreme_own("assd"), fabric, base, forget, full)
    ours.register(["assd"], assd_counts="dataset", progress=False)
    got = _run(resolved("assd"), fabric, base, forget, full)
    for n, t in want.items():
        assert torch.equal(got[n], t), n

    ours.register(["assd"], assd_counts="seen", progress=False)
    seen = _run(resolved("assd"), fabric, base, forget, full)
    model = fresh(base)
    f, d = (ssd_fast.importance(model, x, unpack=ours._supreme_batch, progress=False) for x in (forget, full))
    assert (f.n_samples, d.n_samples) == (12, 60)
    ssd_fast.dampen(model, f, d, alpha="auto", lam=LAM)
    for n, t in model.state_dict().items():
        assert torch.equal(seen[n], t), n


@pytest.mark.parametrize("name", ["ssd", "lfssd_det"])
def test_averaged_gradients_in_one_process_are_the_usual_estimate(fabric, base, name):
    """With one rank there is nothing to average: the switch changes nothing but the loop."""
    forget, full = loaders()
    ours.register([name], progress=False)
    want = _run(resolved(name), fabric, base, forget, full)
    ours.register([name], ddp_gradients="averaged", progress=False)
    got = _run(resolved(name), fabric, base, forget, full)
    near = _near_threshold(base, name, forget, full)
    for n, t in want.items():
        torch.testing.assert_close(got[n][~near[n]], t[~near[n]], rtol=1e-5, atol=1e-7)


def test_a_batch_that_is_not_supremes_triple_is_refused_and_the_model_unchanged(fabric, base):
    ours.register(["ssd"], progress=False)
    model = fabric.setup_module(fresh(base))
    before = snapshot(model.module)
    pairs = [(x, y) for x, _, y in loaders()[1]]
    with pytest.raises(TypeError, match=r"\(x, coarse_label, y\) batches; got a batch of 2 elements"):
        call(resolved("ssd"), fabric, model, pairs, pairs)
    assert_unchanged(model.module, before)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"methods": ["ssd", "scrub"]}, "methods must be some of"),
        ({"methods": []}, "methods must be some of"),
        ({"ddp_gradients": "mean"}, "ddp_gradients must be one of"),
        ({"assd_counts": "len"}, "assd_counts must be one of"),
    ],
)
def test_bad_register_arguments_are_refused_before_anything_is_registered(kwargs, message):
    from supreme import registry

    before = dict(registry._callable_overrides["unlearning_method"])
    with pytest.raises(ValueError, match=message):
        ours.register(**kwargs)
    assert registry._callable_overrides["unlearning_method"] == before
