"""Where this process stands in torch.distributed: is a group up, which rank is this."""
from __future__ import annotations

import torch.distributed as dist


def active() -> bool:
    """True inside an initialised default process group."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0, or a single process: the one that prints progress and writes files."""
    return not active() or dist.get_rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()
