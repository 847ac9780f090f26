"""FSDP2 (fully_shard) on 2 gloo CPU ranks: dampen on each rank's shard, sharded importances."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

import ssd_fast
from tests.distributed.sharded_ranks import sharded_rank
from tests.distributed.spawn import run_ranks
from tests.distributed.workloads import BATCH, as_dict, make_dataset, make_model, rank_loader

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built")

WORLD = 2


def _forget_full() -> tuple[ssd_fast.Importances, ssd_fast.Importances]:
    forget = ssd_fast.importance(
        make_model(), [next(iter(DataLoader(make_dataset(), batch_size=BATCH)))], mode="per_sample", progress=False
    )
    full = ssd_fast.importance(
        make_model(), DataLoader(make_dataset(), batch_size=BATCH), mode="per_sample", progress=False
    )
    return forget, full


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    forget, full = _forget_full()
    return run_ranks(sharded_rank, str(tmp_path_factory.mktemp("sharded")), as_dict(forget), as_dict(full), world=WORLD)


def _one_process(alpha) -> tuple[dict, ssd_fast.DampenReport, torch.Tensor]:
    model = make_model()
    report = ssd_fast.dampen(model, *_forget_full(), alpha=alpha)
    assert report.selected > 0  # otherwise "unchanged" would pass for "dampened"
    return model.state_dict(), report, model(torch.linspace(-1, 1, 18).reshape(3, 6)).detach()


@pytest.mark.parametrize("case", ["dampen_plain_imp", "dampen_dtensor_imp"])
def test_sharded_dampen_equals_one_process_bit_for_bit_in_the_full_state_dict(ranks, case):
    state, report, out = _one_process(2.0)
    before = make_model().state_dict()
    for result in ranks:
        got = result[case]
        assert set(got["state"]) == set(state)
        for name, t in state.items():
            assert torch.equal(got["state"][name], t), name
        assert any(not torch.equal(got["state"][n], before[n]) for n in state)  # the edit persisted
        assert got["selected"] == report.per_layer()  # counts summed over the shards
        torch.testing.assert_close(got["out"], out, rtol=0, atol=1e-6)  # forward sees the edit


def test_auto_alpha_over_the_shards_equals_one_process(ranks):
    state, report, _ = _one_process("auto")
    for result in ranks:
        assert result["dampen_auto"]["alpha"] == report.alpha
        for name, t in state.items():
            assert torch.equal(result["dampen_auto"]["state"][name], t), name


def test_batch_importance_of_fsdp_model_is_sharded_and_squares_the_synchronised_gradient(ranks):
    """Under FSDP2 one batch is the union of the ranks' batches at a step (equal sizes here)."""
    union = [[torch.cat(p) for p in zip(a, b)] for a, b in zip(rank_loader(0, WORLD), rank_loader(1, WORLD))]
    want = ssd_fast.importance(make_model(), union, mode="batch", progress=False)
    for rank, result in enumerate(ranks):
        for name, t in want.items():
            torch.testing.assert_close(result["batch"]["tensors"][name], t, rtol=1e-5, atol=1e-9)
        meta = result["batch"]["meta"]
        assert (meta["n_batches"], meta["n_samples"], meta["batch_size"]) == (3, 44, 2 * BATCH)
        # read from the shards by global position, summed over ranks in the counts' all_reduce
        assert meta["checkpoint_probe"] == want.checkpoint_probe
        kind, placements, shape = result["placements"]["3.weight"]
        assert (kind, placements, shape) == ("DTensor", "(Shard(dim=0),)", ((3, 16), (2, 16))[rank])
        assert result["grads_untouched"]
        # the counts and the checkpoint probe (parameter values read by global position) in one; FSDP2's own besides
        assert result["batch"]["collectives"]["c10d::allreduce_"] == 1


def test_sharded_importances_save_per_rank_and_load_onto_the_sharding_or_whole(ranks):
    for result in ranks:
        assert result["files"] == ["rank00000.safetensors", "rank00001.safetensors"]
        assert result["loaded_dtensor"]
        assert result["resharded_placements"]["0.weight"] == "(Shard(dim=1),)"
        for key in ("loaded", "loaded_whole", "resharded"):
            assert result[key]["meta"] == result["batch"]["meta"]
            for name, t in result["batch"]["tensors"].items():
                assert torch.equal(result[key]["tensors"][name], t), (key, name)


def test_per_sample_importance_of_fsdp_model_equals_one_process_over_the_union(ranks):
    want = ssd_fast.importance(
        make_model(), DataLoader(make_dataset(), batch_size=7), mode="per_sample", progress=False
    )
    for result in ranks:
        assert all(kind == ("DTensor", "(Shard(dim=0),)") for kind in result["per_sample_placements"].values())
        meta = result["per_sample"]["meta"]
        assert (meta["n_samples"], meta["n_batches"]) == (44, 6)
        assert meta["checkpoint_probe"] == want.checkpoint_probe
        for name, t in want.items():
            got = result["per_sample"]["tensors"][name]
            # another summation order over 44 samples: within 43 * 2**-24 = 2.6e-6 of the largest value
            torch.testing.assert_close(got, t, rtol=1e-5, atol=1e-5 * float(t.abs().max()))
        # one reduce-scatter per tensor per batch (6 tensors x 3 batches; no gradient is formed, so
        # FSDP2 reduce-scatters nothing of its own), one all_reduce for the counts and the checkpoint probe
        assert result["per_sample"]["collectives"]["c10d::_reduce_scatter_base_"] == 18
        assert result["per_sample"]["collectives"]["c10d::allreduce_"] == 1


def test_refusals_come_before_any_write_and_on_every_rank(ranks):
    for result in ranks:
        refusals = result["refusals"]
        assert "sharded as (Replicate(),)" in refusals["placements"]
        assert refusals["unchanged"]
        assert "needs a layer rule for every parameter" in refusals["vmap"] and "1.scale" in refusals["vmap"]
        assert "cannot run inside ssd_fast.distributed.rank_local()" in refusals["rank_local"]
        assert "needs every trainable parameter sharded" in refusals["partly"] and "1.weight" in refusals["partly"]


def test_elements_by_global_position_read_as_from_the_whole_model(ranks):
    want = [
        [float(p.detach().reshape(-1)[i]) for i in (0, p.numel() // 2, p.numel() - 1)]
        for p in make_model().parameters()
    ]
    for result in ranks:
        assert result["positions"] == want
        assert result["positions_collectives"] == {"c10d::allreduce_": 1}


def test_sharded_importances_merge_as_dtensors(ranks):
    for result in ranks:
        merged = result["merged"]
        assert merged["kinds"] == {"DTensor"}
        assert merged["meta"]["n_batches"] == 2 * result["batch"]["meta"]["n_batches"]
        for name, t in result["batch"]["tensors"].items():
            torch.testing.assert_close(merged["tensors"][name], t, rtol=1e-6, atol=0)
