"""Lightning Fabric on 2 gloo ranks (DDP, and FSDP2 through ModelParallelStrategy),
checked against one process running the plain model over the union of the ranks' data."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import ssd_fast
from tests.distributed.spawn import run_ranks
from tests.distributed.workloads import BATCH, as_dict, make_dataset, make_model, rank_loader

pytest.importorskip("lightning")
pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built")

WORLD = 2


def _make(lit: bool = False) -> nn.Module:
    from tests.integrations.fabric_models import LitNet  # imports lightning, after the skip

    return LitNet(make_model()) if lit else make_model()


def _plain(mode: str, data, lit: bool = False) -> ssd_fast.Importances:
    return ssd_fast.importance(_make(lit), data, mode=mode, progress=False)


def _forget_full(lit: bool = False) -> tuple[ssd_fast.Importances, ssd_fast.Importances]:
    forget = _plain("per_sample", [next(iter(DataLoader(make_dataset(), batch_size=BATCH)))], lit)
    return forget, _plain("per_sample", DataLoader(make_dataset(), batch_size=BATCH), lit)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    from tests.integrations.fabric_ranks import fabric_rank

    plain, lit = ({k: as_dict(v) for k, v in zip(("forget", "full"), _forget_full(x))} for x in (False, True))
    out = str(tmp_path_factory.mktemp("fabric"))
    return run_ranks(fabric_rank, out, plain, lit, world=WORLD, timeout_s=240)


def _assert_close(got: dict, want: ssd_fast.Importances) -> None:
    assert set(got) == set(want)  # the plain model's names: no _forward_module.module. prefix
    for name, t in want.items():
        torch.testing.assert_close(got[name], t, rtol=1e-6, atol=1e-12 + 1e-6 * float(t.abs().max()))


def _plain_dampened(lit: bool = False) -> tuple[dict, list]:
    model = _make(lit)
    forget, full = _forget_full(lit)
    report = ssd_fast.dampen(model, forget, full, alpha=2.0, lam=1.0)
    return model.state_dict(), report.per_layer()


def test_fabric_ddp_importance_equals_one_process_over_the_union(ranks):
    want_per_sample = _plain("per_sample", DataLoader(make_dataset(), batch_size=5))
    want_batch = _plain("batch", [b for r in range(WORLD) for b in rank_loader(r, WORLD)])
    for result in ranks:
        got = result["ddp"]
        assert got["type"] == "DistributedDataParallel"  # Fabric really wrapped it in DDP
        _assert_close(got["per_sample"]["tensors"], want_per_sample)
        _assert_close(got["batch"]["tensors"], want_batch)
        assert got["per_sample"]["meta"]["fingerprint"] == want_per_sample.fingerprint
        assert got["per_sample"]["meta"]["n_samples"] == 44
        assert (got["batch"]["meta"]["n_batches"], got["batch"]["meta"]["batch_size"]) == (6, BATCH)
        for name, t in got["per_sample"]["tensors"].items():
            assert torch.equal(got["loaded"]["tensors"][name], t)  # saved by rank 0, loaded by every rank


def test_fabric_ddp_dampens_as_the_plain_model(ranks):
    state, selected = _plain_dampened()
    for result in ranks:
        assert result["ddp"]["selected"] == selected
        for name, t in state.items():
            assert torch.equal(result["ddp"]["dampened"][name], t), name


def test_fabric_fsdp2_lightning_module_matches_the_plain_model(ranks):
    want = _plain("per_sample", DataLoader(make_dataset(), batch_size=5), lit=True)
    state, selected = _plain_dampened(lit=True)
    for result in ranks:
        got = result["fsdp2"]
        assert got["sharded"]  # every parameter a DTensor: FSDP2 really sharded it
        _assert_close(got["per_sample"]["tensors"], want)
        assert got["per_sample"]["meta"]["fingerprint"] == want.fingerprint
        assert got["selected"] == selected
        for name, t in state.items():
            assert torch.equal(got["dampened"][name], t), name
