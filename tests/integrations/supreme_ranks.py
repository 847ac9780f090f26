"""What each rank does in the 2-rank SUPREME test: its own methods under Fabric DDP, and ours."""

from __future__ import annotations

import os

import lightning as L

import ssd_fast.integrations.supreme as ours
from tests.integrations.supreme_support import call, fresh, loaders, supreme_own, trained_model, weights


def supreme_rank(rank: int, world: int, methods: tuple[str, ...]) -> dict:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), NODE_RANK="0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")  # read by Fabric's environment; the group is already up
    fabric = L.Fabric(accelerator="cpu", devices=world, strategy="ddp")
    fabric.launch()
    base = trained_model()
    forget, full = fabric.setup_dataloaders(*loaders())  # a DistributedSampler each, as SUPREME sets up
    out = {}
    for name in methods:
        model = fabric.setup(fresh(base))  # what SUPREME's unlearn_main passes under DDP
        out[("supreme", name)] = weights(call(supreme_own(name), fabric, model, forget, full))
        for gradients in ours.DDP_GRADIENTS:
            ours.register([name], ddp_gradients=gradients, progress=False)
            model = fabric.setup(fresh(base))
            out[(gradients, name)] = weights(call(getattr(ours, name), fabric, model, forget, full))
    return out
