"""Running a function on 2 gloo ranks from a test, with a deadline so a hang fails.

Each rank's return value comes back through a file (torch.save), so the test process
compares them with its own single-process result. Ranks are spawned, not forked, so they
start from a clean interpreter, as torchrun's would.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn: Callable, world: int, port: int, out_dir: str, timeout_s: float, args: tuple) -> None:
    torch.set_num_threads(1)  # CI has 2 cores for 2 ranks
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=timeout_s),
    )
    try:
        result = fn(rank, world, *args)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_ranks(fn: Callable, *args: Any, world: int = 2, timeout_s: float = 90.0) -> list[Any]:
    """fn(rank, world, *args) on `world` gloo ranks; returns each rank's result, in rank order.

    Raises if a rank fails, or if they have not all finished after timeout_s (then every
    rank is killed). `fn` must be importable (a module-level function).
    """
    with tempfile.TemporaryDirectory() as out_dir:
        context = mp.start_processes(
            _entry,
            args=(fn, world, free_port(), out_dir, timeout_s / 2, args),
            nprocs=world,
            join=False,
            start_method="spawn",
        )
        deadline = time.monotonic() + timeout_s
        while not context.join(timeout=max(0.1, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                for p in context.processes:
                    if p.is_alive():
                        p.kill()
                raise TimeoutError(f"{world} ranks did not finish within {timeout_s} s (a collective hung?)")
        return [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=False) for r in range(world)]
