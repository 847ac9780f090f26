"""End to end: whole models against the oracles, batch-size invariance, and dampen."""

from __future__ import annotations

import warnings

import pytest
import torch

import ssd_fast

from .support import (
    TinyTransformer,
    assert_close,
    loop_oracle,
    per_sample,
    tiny_cnn,
    tiny_conv1d,
    tiny_mlp,
    vmap_oracle,
)


def _data(name: str, n: int = 16):
    torch.manual_seed(10)
    y = torch.randint(0, 3, (n,))
    if name == "mlp":
        return tiny_mlp(), torch.randn(n, 5), y
    if name == "cnn":
        return tiny_cnn(), torch.randn(n, 3, 9, 9), y
    if name == "conv1d":
        return tiny_conv1d(), torch.randn(n, 3, 11), y
    torch.manual_seed(11)
    return TinyTransformer(), torch.randint(0, 13, (n, 5)), y


MODELS = ["mlp", "cnn", "conv1d", "transformer"]


@pytest.mark.parametrize("label_free", [False, True], ids=["squared", "label_free"])
@pytest.mark.parametrize("name", MODELS)
def test_model_matches_loop_and_vmap(name: str, label_free: bool) -> None:
    model, x, y = _data(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every layer of these models has an exact rule
        got = per_sample(model, x, y, batch_size=5, label_free=label_free)
    assert got.mode == "per_sample" and got.label_free == label_free
    assert_close(got, loop_oracle(model, x, y, label_free=label_free))
    assert_close(got, vmap_oracle(model, x, y, label_free=label_free))


@pytest.mark.parametrize("name,sizes", [("cnn", (1, 7, 64)), ("transformer", (7, 64))])
def test_batch_size_and_order_do_not_matter(name: str, sizes: tuple[int, ...]) -> None:
    model, x, y = _data(name, n=64)
    results = [per_sample(model, x, y, batch_size=bs) for bs in sizes]
    order = torch.randperm(64)
    results.append(per_sample(model, x[order], y[order], batch_size=7))
    for r in results[1:]:
        assert_close(r, results[0])
    assert [r.batch_size for r in results] == [*sizes, 7]


def test_equals_batch_mode_at_batch_size_one() -> None:
    """At batch size 1 the two modes compute the same thing by definition."""
    model, x, y = _data("cnn", n=6)
    batch = ssd_fast.importance(model, [(x[i : i + 1], y[i : i + 1]) for i in range(6)], progress=False)
    assert_close(per_sample(model, x, y, batch_size=4), dict(batch))


def test_model_state_and_modes_are_restored() -> None:
    model, x, y = _data("cnn")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hooks_before = sum(len(m._forward_hooks) for m in model.modules())
    per_sample(model, x, y)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert sum(len(m._forward_hooks) for m in model.modules()) == hooks_before
    assert all(p.grad is None for p in model.parameters())


def test_dampen_on_per_sample_importances_matches_reference() -> None:
    model, x, y = _data("cnn", n=24)
    full = per_sample(model, x, y, batch_size=8)
    forget = per_sample(model, x[:6], y[:6], batch_size=3)
    twin = tiny_cnn()
    twin.load_state_dict(model.state_dict())
    ssd_fast.dampen(model, forget, full, alpha=1.5, lam=1.0)
    ssd_fast.reference.dampen(twin, dict(forget), dict(full), alpha=1.5, lam=1.0)
    changed = False
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.allclose(p, q, rtol=1e-6, atol=0), name
        changed |= bool((ssd_fast.reference.selection_mask(forget[name], full[name], 1.5)).any())
    assert changed, "the test should select something"
