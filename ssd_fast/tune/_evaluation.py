"""Evaluation sets held on the model's device, in a fixed random order, scored prefix by prefix.

`tune` scores every trial on these, so they are materialised once. Batches are anything
`ssd_fast.importance` accepts: (inputs, labels) with a tensor, a tuple of tensors or a
dict of keyword arguments as inputs (a transformers batch keeps its attention mask), or a
dict holding `labels`; the model may return a tensor or a ModelOutput. One pass over the
batches puts the samples in a uniformly random order (seed 0) and cuts that order into
chunks: the first 32 samples, the next 32, then doubling (`_bounds.looks`), each chunk
split into batches no larger than the caller's. A trial scores chunk after chunk and may
stop after any of them (see `_bounds.py`); the prefix it scored is then a uniformly random
subset of the set, which is what the bounds need.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import _checks
from .._batches import (
    NO_FIT,
    Unpack,
    call_model,
    cat_rows,
    count_samples,
    eval_mode,
    take_rows,
    to_device,
    unpack_batch,
)
from ._bounds import looks
from ._metric import Scoring

Batch = tuple[Any, Any]  # (inputs, labels) on the device
Forward = Callable[[int, int, Any], torch.Tensor]  # (chunk, piece, inputs) -> logits


@dataclass
class Tally:
    """How much of one set one model has been scored on: the first `chunks` chunks."""

    chunks: int = 0
    samples: int = 0
    hits: float = 0.0
    units: float = 0.0

    @property
    def accuracy(self) -> float:
        return self.hits / self.units if self.units else float("nan")


class EvalSet:
    """Up to `limit` samples of `data`, in a fixed random order, in chunks for prefix scoring."""

    def __init__(
        self,
        data: Iterable,
        name: str,
        device: torch.device,
        *,
        limit: int | None = None,
        unpack: Unpack | None = None,
        scoring: Scoring | None = None,
        first_look: int = 32,
    ):
        _checks.batches(data, name, "a DataLoader or an iterable of (inputs, labels) batches")
        self.name, self.scoring = name, scoring
        self.batches: list[Batch] = []
        count = widest = 0
        for batch in data:
            x, y = unpack_batch(batch, unpack, label_free=False)
            if y is None or not isinstance(y, torch.Tensor):
                raise TypeError(f"{name}: batches must hold a label tensor besides the inputs, got {type(y).__name__}")
            n = count_samples(x)
            if len(y) != n:
                raise ValueError(f"{name}: a batch holds {n} inputs but {len(y)} labels")
            if limit is not None and count + n > limit:
                keep = torch.arange(limit - count)
                x, y, n = take_rows(x, keep, n), y[: limit - count], limit - count
            self.batches.append((to_device(x, device), to_device(y, device)))
            count, widest = count + n, max(widest, n)
            if limit is not None and count >= limit:
                break
        if count == 0:
            raise ValueError(f"{name} holds no samples; tune needs a small evaluation subset here")
        self.size = count
        self.looks = looks(count, first_look)
        self.chunks = self._chunks(widest)
        self._set_units()

    def _chunks(self, widest: int) -> list[list[Batch]]:
        """The samples in a random order (seed 0), cut at the looks, in batches of at most `widest`."""
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(0))
        starts = torch.tensor([0] + [len(y) for _, y in self.batches]).cumsum(0)
        chunks, begin = [], 0
        for end in self.looks:
            pieces = []
            for lo in range(begin, end, widest):
                pieces += self._gather(order[lo : min(end, lo + widest)], starts)
            chunks.append(pieces)
            begin = end
        return chunks

    def _gather(self, ranks: torch.Tensor, starts: torch.Tensor) -> list[Batch]:
        """The samples `ranks` (positions in the whole set) as few batches as the inputs allow."""
        which = torch.searchsorted(starts, ranks, right=True) - 1
        pieces = []
        for b in which.unique().tolist():
            rows = ranks[which == b] - starts[b]
            x, y = self.batches[b]
            pieces.append((take_rows(x, rows, len(y)), y.index_select(0, rows.to(y.device))))
        joined = cat_rows(pieces)
        return pieces if joined is NO_FIT else [joined]

    def _set_units(self) -> None:
        """Units per sample, when the labels alone say (for the bounds): the widest sample and
        whether every sample is one unit."""
        per_sample = None if self.scoring is None else [self.scoring.units(y) for _, y in self.batches]
        if per_sample is None or any(u is None for u in per_sample):
            self.widest, self.single_units = None, False
            return
        units = torch.cat(per_sample)
        self.widest = float(units.max())
        self.single_units = bool((units == 1).all())

    def labels(self) -> set[int]:
        return {int(v) for _, y in self.batches for v in y.unique()}

    @torch.no_grad()
    def score_chunk(self, model: nn.Module, chunk: int, forward: Forward | None = None) -> tuple[int, float, float]:
        """(samples, hits, units) of one chunk; the caller holds the model in eval mode."""
        samples = hits = units = 0
        for piece, (x, y) in enumerate(self.chunks[chunk]):
            logits = call_model(model, x) if forward is None else forward(chunk, piece, x)
            h, u = self.scoring(logits, y)
            samples, hits, units = samples + len(y), hits + float(h.sum()), units + float(u.sum())
        return samples, hits, units

    @torch.no_grad()
    def extend(self, model: nn.Module, tally: Tally, forward: Forward | None = None) -> None:
        """Score the next chunk into `tally`; the caller holds the model in eval mode."""
        samples, hits, units = self.score_chunk(model, tally.chunks, forward)
        tally.chunks, tally.samples = tally.chunks + 1, tally.samples + samples
        tally.hits, tally.units = tally.hits + hits, tally.units + units

    @torch.no_grad()
    def accuracy(self, model: nn.Module) -> float:
        """Accuracy on the whole set in eval mode; the model's own modes are restored afterwards."""
        tally = Tally()
        with eval_mode(model):
            while tally.chunks < len(self.chunks):
                self.extend(model, tally)
        return tally.accuracy

    @torch.no_grad()
    def num_outputs(self, model: nn.Module) -> int:
        with eval_mode(model):
            x, y = self.batches[0]
            return int(call_model(model, take_rows(x, torch.arange(1), len(y))).shape[-1])
