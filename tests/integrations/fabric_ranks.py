"""What each rank does in the 2-rank Fabric tests (run by test_fabric_ranks.py on gloo ranks).

Fabric's FSDPStrategy (FSDP1) runs on GPUs only, so its refusal is tested in one process
(test_fabric.py); FSDP2 runs here through ModelParallelStrategy, which works on the CPU.

The process group is already up (tests/distributed/spawn.py); Fabric finds it through the
environment torchrun would set, and uses it as it is.
"""

from __future__ import annotations

import os

import lightning as L
import torch
from lightning.fabric.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import fully_shard

import ssd_fast
from tests.distributed.workloads import as_dict, make_model, rank_loader
from tests.integrations.fabric_models import LitNet


def _fabric(world: int, strategy) -> L.Fabric:
    fabric = L.Fabric(accelerator="cpu", devices=world, strategy=strategy)
    fabric.launch()  # processes exist already: this only sets up the strategy
    return fabric


def _shard_every_layer(module: nn.Module, mesh) -> nn.Module:
    """ModelParallelStrategy's parallelize_fn: FSDP2 on each layer with parameters, then the root."""
    for layer in module.net:
        if any(True for _ in layer.parameters()):
            fully_shard(layer, mesh=mesh["data_parallel"])
    return fully_shard(module, mesh=mesh["data_parallel"])


def _importances(saved: dict) -> ssd_fast.Importances:
    return ssd_fast.Importances(saved["tensors"], **saved["meta"])


def _ddp(rank: int, world: int, out_dir: str, forget, full) -> dict:
    fabric = _fabric(world, "ddp")
    model = fabric.setup_module(make_model())
    out = {"type": type(model._forward_module).__name__}
    loader = rank_loader(rank, world)
    for mode in ("per_sample", "batch"):
        out[mode] = as_dict(ssd_fast.importance(model, loader, mode=mode, progress=False))
    path = os.path.join(out_dir, "full.safetensors")
    ssd_fast.Importances(out["per_sample"]["tensors"], **out["per_sample"]["meta"]).save(path)
    out["loaded"] = as_dict(ssd_fast.Importances.load(path, model=model))
    out["selected"] = ssd_fast.dampen(model, forget, full, alpha=2.0, lam=1.0).per_layer()
    out["dampened"] = {n: t.detach().clone() for n, t in model.state_dict().items()}
    return out


def _fsdp2(rank: int, world: int, forget, full) -> dict:
    """FSDP2 through ModelParallelStrategy, on a LightningModule."""
    strategy = ModelParallelStrategy(
        parallelize_fn=_shard_every_layer, data_parallel_size=world, tensor_parallel_size=1
    )
    fabric = _fabric(world, strategy)
    model = fabric.setup_module(LitNet(make_model()))
    out = {"sharded": all(hasattr(p, "placements") for p in model.parameters())}
    out["per_sample"] = as_dict(ssd_fast.importance(model, rank_loader(rank, world), mode="per_sample", progress=False))
    out["selected"] = ssd_fast.dampen(model, forget, full, alpha=2.0, lam=1.0).per_layer()
    state = get_model_state_dict(model._forward_module, options=StateDictOptions(full_state_dict=True))
    out["dampened"] = {n: t.detach().clone() for n, t in state.items()}
    return out


def fabric_rank(rank: int, world: int, out_dir: str, plain: dict, lit: dict) -> dict:
    """`plain` and `lit`: {"forget", "full"} importances of make_model() and LitNet(make_model())."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), NODE_RANK="0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")  # read by Fabric's environment; the group is already up
    results = {"ddp": _ddp(rank, world, out_dir, _importances(plain["forget"]), _importances(plain["full"]))}
    results["fsdp2"] = _fsdp2(rank, world, _importances(lit["forget"]), _importances(lit["full"]))
    torch.distributed.barrier()
    return results
