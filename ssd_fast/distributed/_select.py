"""ASSD's percentile over every shard of a sharded model, exactly, without gathering.

Gathering the f/d ratios would put the whole model's worth of them on every rank, which
is what sharding avoids. Instead, a radix selection: fp32 values map to 32-bit keys whose
integer order is the float order; a histogram of the top 16 bits, summed over ranks
(one all_reduce), finds the bucket holding the k-th smallest value; a histogram of the
low 16 bits inside that bucket (a second all_reduce) finds the value itself. Two
collectives of 64 Ki counts per needed rank (two ranks k for the interpolation, sent
together), computing the ratios one tensor at a time, twice, so that only one tensor's
ratios are held at once; and the result is the same fp32 value a sort of all the ratios would give.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist

from ._group import active
from ._sharded import local, owns, shard_like

_HALF = 16
_BINS = 1 << _HALF
_SIGN = 1 << 31
_ALL = (1 << 32) - 1


def _keys(values: torch.Tensor) -> torch.Tensor:
    """Order-preserving uint32 keys (held in int64) of fp32 values."""
    bits = values.contiguous().view(torch.int32).to(torch.int64) & _ALL
    return torch.where(bits >= _SIGN, _ALL - bits, bits + _SIGN)


def _value(key: int) -> float:
    bits = _ALL - key if key < _SIGN else key - _SIGN
    signed = bits - (1 << 32) if bits >= _SIGN else bits
    return torch.tensor([signed], dtype=torch.int32).view(torch.float32).item()


def _summed(hist: torch.Tensor) -> torch.Tensor:
    if active():
        dist.all_reduce(hist)
    return hist.cpu()


def _find(counts: torch.Tensor, k: int) -> tuple[int, int]:
    """(bucket holding the k-th smallest, 0-based; how many lie in earlier buckets)."""
    cumulative = counts.cumsum(0)
    bucket = int(torch.searchsorted(cumulative, torch.tensor(k + 1)).item())
    return bucket, int(cumulative[bucket - 1]) if bucket else 0


def _local_keys(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[torch.Tensor]:
    """Keys of this rank's finite f/d, one tensor at a time, over the shards it owns
    (each element counted once over all ranks); one tensor's keys live at a time."""
    for f, d in pairs:
        if owns(f):
            ratio = local(f).float() / shard_like(d, f, "full").float()
            yield _keys(ratio[torch.isfinite(ratio)])


def _device(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.device:
    return local(pairs[0][0]).device if pairs else torch.device("cpu")


def _high_histogram(pairs: list, device: torch.device) -> torch.Tensor:
    """Counts over all ranks of each key's top 16 bits (one all_reduce)."""
    hist = torch.zeros(_BINS, dtype=torch.int64, device=device)
    for keys in _local_keys(pairs):
        hist += torch.bincount(keys >> _HALF, minlength=_BINS)
    return _summed(hist)


def _select(pairs: list, high: torch.Tensor, ks: list[int], device: torch.device) -> list[float]:
    """The ks-th smallest (0-based) key values over all ranks, given their summed top-bit
    histogram `high`; one all_reduce, and the same list on every rank."""
    found = [_find(high, k) for k in ks]
    low = torch.zeros((len(ks), _BINS), dtype=torch.int64, device=device)
    for keys in _local_keys(pairs):
        for i, (bucket, _) in enumerate(found):
            low[i] += torch.bincount(keys[(keys >> _HALF) == bucket] & (_BINS - 1), minlength=_BINS)
    low = _summed(low)
    out = []
    for i, (k, (bucket, before)) in enumerate(zip(ks, found)):
        rest, _ = _find(low[i], k - before)
        out.append(_value((bucket << _HALF) | rest))
    return out


def sharded_percentile(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], q: float) -> float | None:
    """The q-th percentile (numpy's linear interpolation) of the finite f/d over all shards.

    The same fp32 order statistics as a sort of every ratio, so the same alpha as one
    process holding the whole model. None when no ratio is finite anywhere. Every rank
    must call it: two all_reduces. Memory: one tensor's ratios and keys at a time.
    """
    pairs = list(pairs)
    device = _device(pairs)
    high = _high_histogram(pairs, device)
    total = int(high.sum().item())
    if total == 0:
        return None
    position = q / 100.0 * (total - 1)
    lo, hi = math.floor(position), math.ceil(position)
    low_value, high_value = _select(pairs, high, [lo, hi], device)
    return float(low_value + (high_value - low_value) * (position - lo))
