"""Collectives per importance call, and peak per-rank memory on an FSDP2 model (CPU, gloo).

    MALLOC_MMAP_THRESHOLD_=65536 torchrun --nproc-per-node 8 benchmarks/distributed_figures.py

On each rank it counts the collectives (c10d dispatcher ops, as the profiler records them)
of importance() on a DDP and on an FSDP2 model, and measures how far each call raises
the process's resident memory above where it started: the kernel's peak-RSS mark
(VmHWM) is reset just before the call and read just after. With the mmap threshold
fixed at 64 KiB, every tensor buffer is its own mapping, returned to the system when
freed, so resident memory follows the live tensors. (The profiler's memory total is not
used: it misses frees that happen on gloo's threads.) Rank 0 prints JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
from collections import Counter

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel
from torch.profiler import ProfilerActivity, profile

import ssd_fast


def build(layers: int, width: int) -> nn.Sequential:
    torch.manual_seed(0)
    blocks = []
    for _ in range(layers):
        blocks += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*blocks[:-1])


def batches(rank: int, width: int, n: int = 2, size: int = 4) -> list:
    g = torch.Generator().manual_seed(100 + rank)
    return [(torch.randn(size, width, generator=g), torch.randint(0, width, (size,), generator=g)) for _ in range(n)]


def collectives(fn) -> tuple[object, dict]:
    """fn()'s result and the collectives it issued."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = fn()
    return out, dict(Counter(e.name for e in prof.events() if e.name.startswith("c10d::")))


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))


def peak_rise(fn) -> tuple[object, int]:
    """fn()'s result, and the most its resident memory rose above the level at the start."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS mark to the current RSS
    start = _status("VmRSS")
    out = fn()
    return out, _status("VmHWM") - start


def fsdp_model(layers: int, width: int, world: int) -> nn.Module:
    mesh = init_device_mesh("cpu", (world,))
    model = build(layers, width)
    for m in model:
        if isinstance(m, nn.Linear):
            fully_shard(m, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    data = batches(rank, args.width)
    rows: dict = {"world": world, "layers": args.layers, "width": args.width}

    ddp = DistributedDataParallel(build(args.layers, args.width))
    for mode in ("batch", "per_sample"):
        run = lambda m=mode: ssd_fast.importance(ddp, data, mode=m, progress=False)  # noqa: E731
        rows[f"ddp_{mode}_collectives"] = collectives(run)[1]
        rows[f"ddp_{mode}_peak_rise_bytes"] = peak_rise(run)[1]  # the sums are the whole model's

    model = fsdp_model(args.layers, args.width, world)
    full_bytes = sum(p.numel() * 4 for p in model.parameters())
    layer_bytes = max(sum(q.numel() * 4 for q in m.parameters()) for m in model if isinstance(m, nn.Linear))
    shard_bytes = sum(p.to_local().numel() * 4 for p in model.parameters())
    rows.update(full_param_bytes=full_bytes, shard_param_bytes=shard_bytes, layer_bytes=layer_bytes)
    # The budget: this rank's importance shard, plus one layer's unsharded parameters and sums.
    rows["budget_bytes"] = shard_bytes + 2 * layer_bytes
    results = {}
    for mode in ("per_sample", "batch"):
        run = lambda m=mode: ssd_fast.importance(model, data, mode=m, progress=False)  # noqa: E731
        rows[f"fsdp_{mode}_collectives"] = collectives(run)[1]
        results[mode], rows[f"fsdp_{mode}_peak_rise_bytes"] = peak_rise(run)
    forget = ssd_fast.importance(model, data[:1], mode="per_sample", progress=False)
    dampen = lambda: ssd_fast.dampen(model, forget, results["per_sample"], alpha="auto")  # noqa: E731
    rows["dampen_auto_collectives"] = collectives(dampen)[1]
    report, rows["dampen_auto_peak_rise_bytes"] = peak_rise(dampen)
    rows["dampen_selected"] = report.selected

    gathered = [None] * world
    dist.all_gather_object(gathered, rows)
    if rank == 0:
        keys = [k for k in rows if k.endswith("peak_rise_bytes")]
        summary = {k: max(g[k] for g in gathered) for k in keys}
        print(json.dumps({"rank0": rows, "max_over_ranks": summary}, indent=1))
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"rank0": rows, "max_over_ranks": summary}, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
