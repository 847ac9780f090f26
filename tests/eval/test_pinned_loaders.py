"""The benchmark pins its loaders' batches on CUDA only, and pinning changes no result."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

import ssd_fast
from ssd_fast.eval.bench import BenchConfig
from ssd_fast.eval.data import make_loader, pin_for
from ssd_fast.eval.models import build_model

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_pin_for_is_cuda_only():
    assert not pin_for("cpu") and not pin_for(torch.device("cpu")) and not pin_for(None)
    assert pin_for("cuda") == torch.cuda.is_available() == pin_for("cuda:0")
    assert not BenchConfig(device="cpu").pin()
    assert not BenchConfig(device="cuda", pin_memory=False).pin()


def _data(n: int = 40) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g))


def test_unpinned_loader_yields_the_same_batches_as_before():
    ds = _data()
    got = list(make_loader(ds, 16, shuffle=True, seed=3))
    want = list(
        torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(3))
    )
    assert len(got) == len(want) == 3
    assert all(torch.equal(a, b) for (xa, ya), (xb, yb) in zip(got, want) for a, b in ((xa, xb), (ya, yb)))


@cuda
def test_pinned_loader_gives_bit_identical_importance_on_cuda():
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=10, in_channels=1).cuda()
    ds = _data(100)
    pinned = make_loader(ds, 32, pin_memory=True)
    assert next(iter(pinned))[0].is_pinned()
    a = ssd_fast.importance(model, pinned, progress=False)
    b = ssd_fast.importance(model, make_loader(ds, 32), progress=False)
    assert all(torch.equal(a[n], b[n]) for n in a)
