"""Lightning Fabric and Lightning, one process: a `_FabricModule` is the model it wraps, to ssd_fast.

Every entry point (importance, dampen, prepare, tune, Importances.load) is run on the
Fabric-wrapped model and on a plain copy of the same model, and must give the same
names and the same values (the same module runs the same computation on the same data,
so the results are bit-identical). The 2-rank runs are in test_fabric_ranks.py.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ssd_fast
from tests.conftest import assert_unchanged, snapshot
from tests.integrations.fabric_models import make_lit, make_plain, trained
from tests.tune.support import blobs

L = pytest.importorskip("lightning")

MAKERS = {"nn.Module": make_plain, "LightningModule": make_lit}


def _loaders():
    x, y = blobs(120, 2)
    full = DataLoader(TensorDataset(x, y), batch_size=16)
    forget = DataLoader(TensorDataset(x[y == 0], y[y == 0]), batch_size=16)
    return forget, full


def _fabric_copy(model):
    fabric = L.Fabric(accelerator="cpu", devices=1)
    return fabric.setup_module(copy.deepcopy(model))


@pytest.fixture(params=list(MAKERS), scope="module")
def pair(request):
    """(plain model, the same weights wrapped by Fabric)."""
    model = trained(MAKERS[request.param])
    wrapped = _fabric_copy(model)
    assert any(n.startswith("_forward_module.") for n, _ in wrapped.named_parameters())  # Fabric does prefix
    return model, wrapped


def _assert_same(a: ssd_fast.Importances, b: ssd_fast.Importances) -> None:
    assert set(a) == set(b)  # a saved file holds them sorted
    assert a.metadata() == b.metadata()  # counts, fingerprint, checkpoint probe included
    for n in a:
        assert torch.equal(a[n], b[n]), n


def _inner_state(wrapped) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in wrapped.module.state_dict().items()}


@pytest.mark.parametrize("mode", ["batch", "per_sample"])
@pytest.mark.parametrize("label_free", [False, True])
def test_importance_of_the_fabric_module_is_the_plain_models(pair, mode, label_free):
    plain, wrapped = pair
    _, full = _loaders()
    want = ssd_fast.importance(plain, full, mode=mode, label_free=label_free, progress=False)
    got = ssd_fast.importance(wrapped, full, mode=mode, label_free=label_free, progress=False)
    assert list(got) == [n for n, _ in plain.named_parameters()]
    _assert_same(got, want)


def test_dampen_and_prepare_on_the_fabric_module_change_it_as_the_plain_model(pair):
    plain, wrapped = pair
    forget_data, full_data = _loaders()
    forget = ssd_fast.importance(plain, forget_data, mode="per_sample", progress=False)
    full = ssd_fast.importance(plain, full_data, mode="per_sample", progress=False)

    plain, wrapped = copy.deepcopy(plain), _fabric_copy(plain)
    want = ssd_fast.dampen(plain, forget, full, alpha=2.0, lam=1.0)
    got = ssd_fast.dampen(wrapped, forget, full, alpha=2.0, lam=1.0)
    assert want.selected > 0 and got.per_layer() == want.per_layer()
    after = _inner_state(wrapped)
    for k, v in plain.state_dict().items():
        assert torch.equal(after[k], v), k

    again = _fabric_copy(pair[0])
    before = _inner_state(again)
    dampener = ssd_fast.prepare(again, forget, full, snapshot=True)
    assert dampener.names == tuple(n for n, _ in plain.named_parameters())
    assert dampener.apply(alpha=2.0, lam=1.0).per_layer() == want.per_layer()
    dampener.restore()
    for k, v in _inner_state(again).items():
        assert torch.equal(v, before[k]), k


def test_importances_saved_from_the_plain_model_load_onto_the_fabric_module(pair, tmp_path):
    plain, wrapped = pair
    _, full_data = _loaders()
    imp = ssd_fast.importance(plain, full_data, progress=False)
    imp.save(tmp_path / "full.safetensors")
    loaded = ssd_fast.Importances.load(tmp_path / "full.safetensors", model=wrapped)
    _assert_same(loaded, imp)
    loaded.check_model(wrapped)


def test_tune_on_the_fabric_module_chooses_as_on_the_plain_model(pair):
    plain, wrapped = copy.deepcopy(pair[0]), _fabric_copy(pair[0])
    x, y = blobs(160, 3)
    forget_eval = DataLoader(TensorDataset(x[y == 0], y[y == 0]), batch_size=64)
    retain_eval = DataLoader(TensorDataset(x[y != 0], y[y != 0]), batch_size=64)
    forget_data, full_data = _loaders()
    forget = ssd_fast.importance(plain, forget_data, progress=False)
    full = ssd_fast.importance(plain, full_data, progress=False)
    kwargs = dict(forget_eval=forget_eval, retain_eval=retain_eval, alphas=[0.5, 1, 2, 5, 10])
    want = ssd_fast.tune(plain, forget, full, **kwargs)
    got = ssd_fast.tune(wrapped, forget, full, **kwargs)
    assert (got.alpha, got.lam, got.first_layer, got.forget_acc, got.retain_acc) == (
        want.alpha,
        want.lam,
        want.first_layer,
        want.forget_acc,
        want.retain_acc,
    )
    assert [t.first_layer for t in got.trials] == [t.first_layer for t in want.trials]
    after = _inner_state(wrapped)
    for k, v in plain.state_dict().items():
        assert torch.equal(after[k], v), k


def test_fsdp1_from_fabrics_fsdp_strategy_is_refused_with_what_to_use_instead(monkeypatch):
    """FullyShardedDataParallel needs a process group; the refusal needs only its type."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    model = make_plain()
    fake = FullyShardedDataParallel.__new__(FullyShardedDataParallel)
    torch.nn.Module.__init__(fake)
    fake._fsdp_wrapped_module = model  # where FSDP1 holds the module
    before = snapshot(model)
    forget = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    for call in (
        lambda: ssd_fast.importance(fake, _loaders()[1], progress=False),
        lambda: ssd_fast.dampen(fake, forget, forget, alpha=1.0),
    ):
        with pytest.raises(TypeError, match="FSDP1.*fully_shard.*ModelParallelStrategy"):
            call()
    assert_unchanged(model, before)
