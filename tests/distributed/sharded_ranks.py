"""What each rank does in the sharded tests (run by tests/distributed/test_sharded.py on 2 gloo ranks)."""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import Replicate, Shard, distribute_tensor

import ssd_fast
from ssd_fast.distributed import rank_local, read_positions
from tests.distributed.collectives import count_collectives
from tests.distributed.workloads import as_dict, counted_importance, make_model, rank_loader


def sharded_model(world: int, shard_dim: int = 0) -> nn.Module:
    """make_model() under FSDP2: every layer its own unit, parameters sharded over dim 0 by default."""
    mesh = init_device_mesh("cpu", (world,))
    model = make_model()

    def place(p: nn.Parameter) -> Shard:
        return Shard(shard_dim if p.dim() > shard_dim else 0)

    for layer in model:
        if any(True for _ in layer.parameters()):
            fully_shard(layer, mesh=mesh, shard_placement_fn=place)
    return fully_shard(model, mesh=mesh, shard_placement_fn=place)


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's full state dict, gathered the way a checkpoint of it would be."""
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    return {n: t.detach().clone() for n, t in state.items()}


def _as_dtensors(imp: ssd_fast.Importances, model: nn.Module) -> ssd_fast.Importances:
    params = dict(model.named_parameters())
    tensors = {n: distribute_tensor(t, params[n].device_mesh, params[n].placements) for n, t in imp.items()}
    return ssd_fast.Importances(tensors, **imp.metadata())


def _dampen(world: int, forget, full, **kwargs) -> dict:
    model = sharded_model(world)
    report = ssd_fast.dampen(model, forget, full, **kwargs)
    x = torch.linspace(-1, 1, 18).reshape(3, 6)
    return {"state": full_state(model), "alpha": report.alpha, "selected": report.per_layer(), "out": model(x).detach()}


class _Scale(nn.Module):
    """A module no per-sample rule covers (its parameter would need vmap)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def _refusals(world: int, forget, full) -> dict:
    out = {}
    model = sharded_model(world)
    before = full_state(model)
    replicated = {
        n: distribute_tensor(t, p.device_mesh, [Replicate()]) for (n, t), p in zip(full.items(), model.parameters())
    }
    try:
        ssd_fast.dampen(model, forget, ssd_fast.Importances(replicated, **full.metadata()), alpha=2.0)
    except ValueError as e:
        out["placements"] = str(e)
    after = full_state(model)
    out["unchanged"] = all(torch.equal(after[n], t) for n, t in before.items())
    mesh = init_device_mesh("cpu", (world,))
    odd = fully_shard(nn.Sequential(nn.Linear(6, 5), _Scale()), mesh=mesh)
    try:
        ssd_fast.importance(odd, rank_loader(0, world), mode="per_sample", progress=False)
    except NotImplementedError as e:
        out["vmap"] = str(e)
    with rank_local():
        try:
            ssd_fast.importance(model, rank_loader(0, world), progress=False)
        except ValueError as e:
            out["rank_local"] = str(e)
    partly = nn.Sequential(fully_shard(nn.Linear(6, 5), mesh=mesh), nn.Linear(5, 5))  # the root is not sharded
    try:
        ssd_fast.importance(partly, rank_loader(0, world), mode="batch", progress=False)
    except ValueError as e:
        out["partly"] = str(e)
    return out


def sharded_rank(rank: int, world: int, out_dir: str, plain_forget: dict, plain_full: dict) -> dict:
    forget = ssd_fast.Importances(plain_forget["tensors"], **plain_forget["meta"])
    full = ssd_fast.Importances(plain_full["tensors"], **plain_full["meta"])
    results: dict = {}
    # Plain full importances, sliced to each rank's shard locally; and the same as DTensors.
    results["dampen_plain_imp"] = _dampen(world, forget, full, alpha=2.0)
    like = sharded_model(world)
    results["dampen_dtensor_imp"] = _dampen(world, _as_dtensors(forget, like), _as_dtensors(full, like), alpha=2.0)
    results["dampen_auto"] = _dampen(world, _as_dtensors(forget, like), _as_dtensors(full, like), alpha="auto")

    # A few elements by global position (what a checkpoint probe reads), in one collective.
    probed = sharded_model(world)
    items = [(p, [0, p.numel() // 2, p.numel() - 1]) for p in probed.parameters()]
    with count_collectives() as counts:
        results["positions"] = read_positions(items)
    results["positions_collectives"] = dict(counts)

    # Refusals come before the first write, on every rank alike (so no rank waits on another).
    results["refusals"] = _refusals(world, forget, full)

    # Batch-mode importance of the FSDP2 model: DTensors, sharded like the parameters.
    model = sharded_model(world)
    imp, counts = counted_importance(model, rank_loader(rank, world), "batch")
    results["batch"] = as_dict(imp) | {"collectives": counts}
    results["placements"] = {
        n: (type(t).__name__, str(t.placements), tuple(t.to_local().shape)) for n, t in imp.items()
    }
    results["grads_untouched"] = all(p.grad is None for p in model.parameters())
    merged = imp.merge(imp)  # the mean of two equal halves: the same values, counts doubled
    results["merged"] = as_dict(merged) | {"kinds": {type(t).__name__ for t in merged.values()}}

    # Per-sample importance of the FSDP2 model: squared per layer, then reduce-scattered.
    model_ps = sharded_model(world)
    imp_ps, counts_ps = counted_importance(model_ps, rank_loader(rank, world), "per_sample")
    results["per_sample"] = as_dict(imp_ps) | {"collectives": counts_ps}
    results["per_sample_placements"] = {n: (type(t).__name__, str(t.placements)) for n, t in imp_ps.items()}

    # Saved from 2 ranks; loaded onto the sharded model and whole (no model).
    path = os.path.join(out_dir, "full_sharded")
    imp.save(path)
    loaded = ssd_fast.Importances.load(path, model=model)
    results["loaded_dtensor"] = all(type(t).__name__ == "DTensor" for t in loaded.values())
    results["loaded"] = as_dict(loaded)
    results["loaded_whole"] = as_dict(ssd_fast.Importances.load(path))
    results["files"] = sorted(os.listdir(path))
    # ... and onto another sharding: dim 1 instead of dim 0.
    by_columns = sharded_model(world, shard_dim=1)
    resharded = ssd_fast.Importances.load(path, model=by_columns)
    results["resharded_placements"] = {n: str(t.placements) for n, t in resharded.items()}
    results["resharded"] = as_dict(resharded)
    return results
