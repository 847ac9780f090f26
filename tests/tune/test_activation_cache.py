"""Kept activations of untouched leading modules: the same outputs, bit for bit, as the uncached forward."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ssd_fast
from ssd_fast.eval.models import build_model
from ssd_fast.tune._activation_cache import ActivationCache
from ssd_fast.tune._evaluation import EvalSet
from ssd_fast.tune._layer_starts import dampen_only_from
from ssd_fast.tune._metric import Scoring


def _images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = torch.randn(n, 1, 8, 8, generator=g) + y.view(-1, 1, 1, 1).float()  # brightness says the class
    return x, y


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=4, in_channels=1)
    x, y = _images(256, 0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(20):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def test_replayed_outputs_equal_the_uncached_forward_bit_for_bit() -> None:
    model = _cnn()
    x, y = _images(300, 1)
    evalset = EvalSet(
        DataLoader(TensorDataset(x, y), batch_size=64), "retain_eval", torch.device("cpu"), scoring=Scoring(model)
    )
    cache = ActivationCache(model)
    touched = frozenset(n for n, _ in model.named_parameters() if not n.startswith("features.0"))
    forward = cache.forward(evalset, touched)
    assert forward is not None and cache.boundary(touched) == frozenset({"features.0"})
    with torch.no_grad():
        for chunk, pieces in enumerate(evalset.chunks):
            for piece, (inputs, _) in enumerate(pieces):
                plain = model(inputs)
                recorded = forward(chunk, piece, inputs)  # the first call records
                replayed = forward(chunk, piece, inputs)  # the second replays the kept output
                assert torch.equal(plain, recorded) and torch.equal(plain, replayed)
    assert cache.hits == sum(len(p) for p in evalset.chunks)
    # Nothing is kept when the first module itself is touched, or where the root holds a parameter.
    assert cache.boundary(frozenset({"features.0.0.weight"})) == frozenset()


def _rows(trials) -> list[tuple]:
    """Trials as tuples, NaN (a set not scored) as a string so that equal rows compare equal."""
    return [tuple("nan" if v != v else v for v in vars(t).values()) for t in trials]


def test_tune_with_and_without_the_cache_takes_identical_decisions() -> None:
    model = _cnn()
    x, y = _images(400, 2)
    loader = DataLoader(TensorDataset(x, y), batch_size=64)
    full = ssd_fast.importance(model, loader, progress=False)
    forget = ssd_fast.importance(model, DataLoader(TensorDataset(x[y == 0], y[y == 0]), batch_size=64), progress=False)
    # The first block never dampened: every trial leaves features.0 untouched.
    forget = dampen_only_from(model, forget, "features.1.0.weight")
    hx, hy = _images(600, 3)
    kwargs = dict(
        forget_eval=DataLoader(TensorDataset(hx[hy == 0], hy[hy == 0]), batch_size=100),
        retain_eval=DataLoader(TensorDataset(hx[hy != 0], hy[hy != 0]), batch_size=100),
        lams=(1.0, 0.1),
        layer_fallback=False,
        progress=False,
    )
    results = []
    for cached in (True, False):
        m = copy.deepcopy(model)
        results.append((ssd_fast.tune(m, forget, full, cache_activations=cached, **kwargs), m))
    (with_cache, m1), (without, m2) = results
    assert with_cache.cached_batches > 0 and without.cached_batches == 0
    assert _rows(with_cache.trials) == _rows(without.trials)  # every accuracy, answer and count, exactly
    assert (with_cache.alpha, with_cache.lam, with_cache.forget_acc, with_cache.retain_acc) == (
        without.alpha,
        without.lam,
        without.forget_acc,
        without.retain_acc,
    )
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
