"""DDP on 2 gloo ranks: importance over sharded data equals one process over the union."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

import ssd_fast
from tests.distributed.ddp_ranks import ddp_rank
from tests.distributed.spawn import run_ranks
from tests.distributed.workloads import BATCH, as_dict, make_dataset, make_model, rank_loader

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built")

WORLD = 2
# Ranks sum their own samples, then all_reduce: another order than one process. A sum of n = 44
# positive fp32 terms in any order is within (n - 1) * 2**-24 = 2.6e-6 of another (relative to
# the largest value, the scale _assert_close uses); 1e-5 holds that with room for the terms' own rounding.
ROUNDING = 1e-5


def _plain(mode: str, data) -> ssd_fast.Importances:
    return ssd_fast.importance(make_model(), data, mode=mode, progress=False)


def _rank_batches() -> list:
    """Every rank's batches, rank 0's first: the single process batch mode is defined against."""
    return [batch for r in range(WORLD) for batch in rank_loader(r, WORLD)]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    forget = as_dict(_plain("per_sample", [next(iter(DataLoader(make_dataset(), batch_size=BATCH)))]))
    full = as_dict(_plain("per_sample", DataLoader(make_dataset(), batch_size=BATCH)))
    return run_ranks(ddp_rank, str(tmp_path_factory.mktemp("ddp")), forget, full, world=WORLD)


def _assert_close(got: dict, want: ssd_fast.Importances, rtol: float) -> None:
    assert set(got) == set(want)
    for name, t in want.items():
        torch.testing.assert_close(got[name], t, rtol=rtol, atol=1e-12 + rtol * float(t.abs().max()))


def test_per_sample_equals_one_process_over_the_union_on_every_rank(ranks):
    want = _plain("per_sample", DataLoader(make_dataset(), batch_size=5))  # any batching: per_sample ignores it
    for result in ranks:
        _assert_close(result["per_sample"]["tensors"], want, rtol=ROUNDING)
        assert result["per_sample"]["meta"]["n_samples"] == want.n_samples == 44
        assert result["per_sample"]["meta"]["fingerprint"] == want.fingerprint  # plain names, not module.*


def test_batch_mode_equals_one_process_reading_every_ranks_batches(ranks):
    want = _plain("batch", _rank_batches())
    for result in ranks:
        _assert_close(result["batch"]["tensors"], want, rtol=ROUNDING)
        meta = result["batch"]["meta"]
        assert (meta["n_batches"], meta["n_samples"], meta["batch_size"]) == (6, 44, BATCH)


def test_batch_mode_is_not_the_synchronised_gradient(ranks):
    """DDP's all-reduce of gradients does not run: each rank's batch is a batch of its own."""
    union = [[torch.cat(parts) for parts in zip(a, b)] for a, b in zip(rank_loader(0, WORLD), rank_loader(1, WORLD))]
    global_batch = _plain("batch", union)
    got = ranks[0]["batch"]["tensors"]
    assert any(not torch.allclose(got[n], global_batch[n], rtol=1e-3) for n in got)


def test_one_collective_per_importance_call_and_grads_untouched(ranks):
    for result in ranks:
        for mode in ("per_sample", "batch"):
            assert result[mode]["collectives"] == {"c10d::allreduce_": 1}
        assert result["grads_untouched"]
        assert result["one_buffer"]


def test_rank_zero_writes_and_every_rank_loads(ranks):
    for result in ranks:
        assert result["written_by"] == ["full.safetensors"]
        for name, t in ranks[0]["batch"]["tensors"].items():
            assert torch.equal(result["loaded"]["tensors"][name], t)


def test_plain_importances_dampen_the_ddp_model_as_the_plain_one(ranks):
    forget = _plain("per_sample", [next(iter(DataLoader(make_dataset(), batch_size=BATCH)))])
    full = _plain("per_sample", DataLoader(make_dataset(), batch_size=BATCH))
    model = make_model()
    report = ssd_fast.dampen(model, forget, full, alpha=2.0, lam=1.0)
    assert report.selected > 0  # the comparison below would otherwise be vacuous
    for result in ranks:
        assert result["selected"] == report.per_layer()
        for name, t in model.state_dict().items():
            assert torch.equal(result["dampened"][name], t), name


def test_a_rank_without_data_joins_and_every_rank_gets_the_others_result(ranks):
    want = _plain("per_sample", list(rank_loader(0, WORLD)))
    for result in ranks:
        _assert_close(result["rank1_empty"]["tensors"], want, rtol=ROUNDING)
        assert result["rank1_empty"]["meta"]["n_samples"] == 22


def test_progress_bar_on_rank_zero_only(ranks):
    assert "importance (batch)" in ranks[0]["progress"]
    assert ranks[1]["progress"] == ""


def test_rank_local_block_covers_that_ranks_data_alone(ranks):
    want = _plain("per_sample", list(rank_loader(0, WORLD)))
    _assert_close(ranks[0]["rank_local"]["tensors"], want, rtol=ROUNDING)
    assert ranks[0]["rank_local"]["meta"]["n_samples"] == 22
