"""Counting the collectives a piece of code issues, whoever issues them.

Every collective, from Python or from C++ (DDP's reducer, FSDP2), goes through a
dispatcher op in the `c10d` namespace (c10d::allreduce_, c10d::broadcast_, ...), which the
profiler records. Counting those ops counts the collectives.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from torch.profiler import ProfilerActivity, profile


@contextlib.contextmanager
def count_collectives() -> Iterator[Counter]:
    """Inside the block, collectives are recorded; the Counter maps op name to calls once it ends."""
    counts: Counter = Counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        yield counts
    for event in prof.events():
        if event.name.startswith("c10d::") and event.name != "c10d::monitored_barrier_":
            counts[event.name] += 1
