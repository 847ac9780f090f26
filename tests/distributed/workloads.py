"""The model, data and per-rank work shared by the distributed tests (importable by spawned ranks)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import ssd_fast
from tests.distributed.collectives import count_collectives

N_SAMPLES, BATCH = 44, 8  # 22 samples per rank: batches of 8, 8, 6; no sampler padding


def make_model() -> nn.Module:
    """Shapes chosen so that 2-way dim-0 sharding is uneven (5 rows: 3 and 2)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 5))


def make_dataset() -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(N_SAMPLES, 6, generator=g), torch.randint(0, 5, (N_SAMPLES,), generator=g))


def rank_loader(rank: int, world: int) -> DataLoader:
    """What rank `rank` reads: its DistributedSampler shard, in order."""
    sampler = DistributedSampler(make_dataset(), num_replicas=world, rank=rank, shuffle=False)
    return DataLoader(make_dataset(), batch_size=BATCH, sampler=sampler)


def as_dict(imp: ssd_fast.Importances) -> dict:
    """Full (gathered) tensors and metadata, for comparison in the test process."""
    tensors = {n: (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().clone() for n, t in imp.items()}
    return {"tensors": tensors, "meta": imp.metadata()}


def counted_importance(model: nn.Module, loader: DataLoader, mode: str) -> tuple[ssd_fast.Importances, dict]:
    with count_collectives() as counts:
        imp = ssd_fast.importance(model, loader, mode=mode, progress=False)
    return imp, dict(counts)
