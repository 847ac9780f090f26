"""Where this process stands in torch.distributed: is a group up, which rank is this.

`rank_local()` lets one rank use ssd_fast on its own inside a process group (say, rank 0
computing a forget importance on data only it holds): within the block ssd_fast acts as
a single process and waits for no other rank.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch.distributed as dist

_RANK_LOCAL: ContextVar[bool] = ContextVar("ssd_fast_rank_local", default=False)


@contextlib.contextmanager
def rank_local() -> Iterator[None]:
    """Within the block, ssd_fast ignores the process group.

    `importance` covers this rank's data only and issues no collective, and `save` writes
    from this rank without waiting for the others. For plain and DDP models: a sharded
    (FSDP2/DTensor) model communicates in its own forward pass, so it is refused here.
    """
    token = _RANK_LOCAL.set(True)
    try:
        yield
    finally:
        _RANK_LOCAL.reset(token)


def in_rank_local() -> bool:
    return _RANK_LOCAL.get()


def active() -> bool:
    """True inside an initialised default process group (and outside `rank_local()`)."""
    return not _RANK_LOCAL.get() and dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0, or a single process: the one that prints progress and writes files."""
    return not active() or dist.get_rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def refuse_rank_local(what: str) -> None:
    """ValueError inside `rank_local()`: `what` needs every rank of a sharded model."""
    if _RANK_LOCAL.get():
        raise ValueError(
            f"{what} of a sharded (DTensor/FSDP2) model needs every rank, so it cannot run inside "
            "ssd_fast.distributed.rank_local(); call it on every rank"
        )
