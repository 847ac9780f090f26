"""This package's implementations of the core's interfaces (ssd_fast._parallel), registered on import.

The core asks `ssd_fast._parallel` how to name, reduce and shard; these answers know
wrappers, process groups and DTensors. Each is a no-op outside a process group or for
plain tensors, so registering them changes nothing for a single process.
"""

from __future__ import annotations

from .. import _parallel
from ._accumulators import sharded_accumulator
from ._checkpoint import load_sharded, save_sharded
from ._group import barrier, is_main
from ._importance import reduce_importance
from ._positions import PositionRead, read_positions
from ._reduce import importance_sums
from ._report import global_selected
from ._select import sharded_percentile
from ._sharded import any_dtensor, local, local_pairs
from ._unwrap import unwrap


class ProcessGroupNaming(_parallel.Naming):
    def unwrap(self, model):
        return unwrap(model)


class ProcessGroupReduction(_parallel.Reduction):
    def is_main(self):
        return is_main()

    def barrier(self):
        barrier()

    def importance_sums(self, params):
        return importance_sums(params)

    def reduce_importance(self, sums, counts, *, global_batches, extra=()):
        return reduce_importance(sums, counts, global_batches=global_batches, extra=list(extra))


class DTensorSharding(_parallel.Sharding):
    def any_dtensor(self, tensors):
        return any_dtensor(tensors)

    def local(self, t):
        return local(t)

    def local_pairs(self, pairs):
        return local_pairs(pairs)

    def global_selected(self, params, counts):
        return global_selected(params, counts)

    def accumulator(self, mode, model, params, *, label_free, loss_fn):
        return sharded_accumulator(mode, model, params, label_free=label_free, loss_fn=loss_fn)

    def position_read(self, items):
        return PositionRead(items)

    def read_positions(self, items):
        return read_positions(items)

    def sharded_percentile(self, pairs, q):
        return sharded_percentile(pairs, q)

    def save_sharded(self, tensors, meta, path):
        save_sharded(tensors, meta, path)

    def load_sharded(self, path, model, device):
        return load_sharded(path, model, device)


def register() -> None:
    _parallel.register(naming=ProcessGroupNaming(), reduction=ProcessGroupReduction(), sharding=DTensorSharding())
