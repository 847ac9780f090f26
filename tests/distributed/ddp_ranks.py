"""What each rank does in the DDP tests (run by tests/distributed/test_ddp.py on 2 gloo ranks)."""

from __future__ import annotations

import contextlib
import io
import os

import torch
from torch.nn.parallel import DistributedDataParallel

import ssd_fast
from ssd_fast.distributed import rank_local
from tests.distributed.workloads import as_dict, counted_importance, make_model, rank_loader


def ddp_rank(rank: int, world: int, out_dir: str, plain_forget: dict, plain_full: dict) -> dict:
    model = DistributedDataParallel(make_model())
    loader = rank_loader(rank, world)
    results: dict = {}
    for mode in ("per_sample", "batch"):
        imp, counts = counted_importance(model, loader, mode)
        results[mode] = as_dict(imp) | {"collectives": counts}
    results["grads_untouched"] = all(p.grad is None for p in model.parameters())
    results["one_buffer"] = len({t.untyped_storage().data_ptr() for t in imp.values()}) == 1  # reduced with no copy
    if rank == 0:  # rank 0 alone, on data only it reads: no collective, so no wait for rank 1
        with rank_local():
            results["rank_local"] = as_dict(ssd_fast.importance(model, loader, mode="per_sample", progress=False))
    with contextlib.redirect_stderr(io.StringIO()) as err:  # tqdm writes to stderr
        ssd_fast.importance(model, loader, mode="batch", progress=True)
    results["progress"] = err.getvalue()
    # A rank with no data still joins the reduction; the result is the other ranks' data.
    results["rank1_empty"] = as_dict(
        ssd_fast.importance(model, [] if rank == 1 else loader, mode="per_sample", progress=False)
    )

    # Rank 0 writes; every rank reads it back.
    path = os.path.join(out_dir, "full.safetensors")
    imp.save(path)
    results["loaded"] = as_dict(ssd_fast.Importances.load(path, model=model))
    results["written_by"] = sorted(os.listdir(out_dir))

    # Importances computed on the plain model serve the DDP-wrapped one.
    forget = ssd_fast.Importances(plain_forget["tensors"], **plain_forget["meta"])
    full = ssd_fast.Importances(plain_full["tensors"], **plain_full["meta"])
    report = ssd_fast.dampen(model, forget, full, alpha=2.0, lam=1.0)
    results["dampened"] = {n: p.detach().clone() for n, p in model.module.state_dict().items()}
    results["selected"] = report.per_layer()
    torch.distributed.barrier()
    return results
