"""ssd_fast under torch.distributed: DDP, DataParallel, torch.compile, Lightning Fabric and FSDP2 / DTensor.

The core asks the interfaces in ssd_fast._parallel; this package implements them and
registers itself on import (see _hooks), so the core never imports it. Each answer is a
no-op outside a process group or for plain tensors.
For users: `rank_local()`, a block in which ssd_fast ignores the process group.
- `unwrap`: importances are keyed by the innermost module's parameter names, so one
  stored importance serves the plain, DDP, DataParallel, compiled and Fabric-wrapped model alike.
- `importance_sums` / `reduce_importance`: each rank accumulates its own batches into
  views of one flat buffer; ONE all_reduce of that buffer sums the sums and counts, and
  every rank holds the global importance.
- `sharded_accumulator`: importance of an FSDP2 model, as DTensors sharded like its
  parameters (batch: the synchronised gradient's shard, squared; per_sample: squared
  per layer on the unsharded tensors, then reduce-scattered).
- `local_pairs`: dampen runs the kernel on each rank's local shard of DTensor
  parameters, in place, with no gather; `global_selected` sums the report's counts.
- `read_positions` / `PositionRead`: a few elements of sharded tensors by global position
  (a checkpoint probe), the values a whole tensor would give, in one all_reduce, or riding
  on `reduce_importance`'s.
- `sharded_percentile`: alpha="auto" over every shard exactly, by radix selection.
- `save_sharded` / `load_sharded`: sharded importances as one safetensors file per rank,
  loadable onto any sharding.
"""

from ._accumulators import sharded_accumulator
from ._checkpoint import load_sharded, save_sharded
from ._group import active, barrier, is_main, rank_local, world_size
from ._hooks import register
from ._importance import Counts, reduce_importance
from ._positions import PositionRead, read_positions
from ._reduce import importance_sums
from ._report import global_selected
from ._select import sharded_percentile
from ._sharded import any_dtensor, fp32_zeros_like, is_dtensor, local, local_pairs
from ._unwrap import unwrap

register()

__all__ = [
    "Counts",
    "PositionRead",
    "active",
    "any_dtensor",
    "barrier",
    "fp32_zeros_like",
    "global_selected",
    "importance_sums",
    "is_dtensor",
    "is_main",
    "local",
    "load_sharded",
    "local_pairs",
    "read_positions",
    "rank_local",
    "reduce_importance",
    "save_sharded",
    "sharded_accumulator",
    "sharded_percentile",
    "unwrap",
    "world_size",
]
