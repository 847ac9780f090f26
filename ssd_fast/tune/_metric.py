"""What `tune` counts as right: per sample, a number of hits out of a number of units.

- A classifier (a plain model, or a transformers sequence classifier): one unit per
  sample, a hit when the top-1 class is the label.
- A transformers causal or masked LM (or token classifier): one unit per labelled
  position (label not -100), a hit when the top-1 token is the label; a causal LM's
  position t predicts label t + 1, as its own loss shifts them.
- A user metric: `metric(logits, labels) -> (hits, units)`, two tensors of one value per
  sample, 0 <= hits <= units.

Accuracy is sum(hits) / sum(units) over the set. Where the units of each sample are known
from its labels alone (every kind above but a user metric), `tune` may stop scoring early
(see `_bounds.py`); with a user metric it scores whole sets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .._hf import task_of
from .._loss import IGNORE_INDEX, check_class_targets

Metric = Callable[[torch.Tensor, Any], tuple[torch.Tensor, torch.Tensor]]


class Scoring:
    """hits and units per sample, for `model`'s outputs, as the module doc says."""

    def __init__(self, model: nn.Module, metric: Metric | None = None):
        if metric is not None and not callable(metric):
            raise TypeError(f"metric must be callable as metric(logits, labels) -> (hits, units), got {metric!r}")
        self.metric = metric
        task = task_of(model)
        self.shift = False
        if metric is not None:
            self.kind = "metric"
        elif task is None or task.kind == "sequence":
            self.kind = "class"
        elif task.kind == "tokens":
            self.kind, self.shift = "tokens", task.shift
        else:
            raise ValueError(
                f"tune cannot tell what counts as right for {type(model).__name__} ({task!r}); "
                "pass metric=lambda logits, labels: (hits, units), one value per sample"
            )
        self._task = task

    def units(self, labels: Any) -> torch.Tensor | None:
        """Units per sample, from the labels alone; None for a user metric (unknown until scored)."""
        if self.kind == "metric":
            return None
        if self.kind == "class":
            return torch.ones(len(labels), dtype=torch.float64)
        return (self._token_labels(labels) != IGNORE_INDEX).sum(1).double().cpu()

    def __call__(self, logits: torch.Tensor, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "metric":
            return self._user(logits, labels)
        if self.kind == "tokens":
            labels = self._token_labels(labels)
            if logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(labels.shape):
                raise ValueError(
                    f"token accuracy needs logits [B, T, vocab] and labels [B, T]; got {list(logits.shape)} "
                    f"and {list(labels.shape)}"
                )
            labelled = labels != IGNORE_INDEX
            hits = ((logits.argmax(-1) == labels) & labelled).sum(1)
            return hits.double().cpu(), labelled.sum(1).double().cpu()
        self._check_class(logits, labels)
        hits = logits.argmax(-1) == labels
        return hits.double().cpu(), torch.ones(len(labels), dtype=torch.float64)

    def _token_labels(self, labels: Any) -> torch.Tensor:
        if not isinstance(labels, torch.Tensor) or labels.dim() != 2:
            raise ValueError(
                f"an LM's labels must be a [B, T] tensor of token ids (-100 where not scored); got "
                f"{type(labels).__name__}{list(labels.shape) if isinstance(labels, torch.Tensor) else ''}"
            )
        if self.shift:  # position t predicts token t + 1: the last position predicts nothing
            labels = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
        return labels

    def _check_class(self, logits: torch.Tensor, labels: Any) -> None:
        # the project's label checks; accuracy has no ignore index, so -100 is refused too
        check_class_targets(logits, labels, ignore_index=None)
        problem = None if self._task is None else self._task.problem_type(labels)
        if problem not in (None, "single_label_classification"):
            raise ValueError(
                f"tune scores top-1 accuracy, but this model's labels make it a {problem} problem; "
                "pass metric=lambda logits, labels: (hits, units)"
            )
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point():
            raise ValueError(
                "tune scores top-1 accuracy and needs class indices, one integer per sample (shape [B]); got "
                + (
                    f"a tensor of shape {list(labels.shape)}, dtype {labels.dtype}"
                    if isinstance(labels, torch.Tensor)
                    else type(labels).__name__
                )
                + "; pass unpack= to reshape them, or metric= for another measure"
            )
        if logits.dim() != 2 or logits.shape[0] != labels.shape[0]:
            raise ValueError(f"class logits must be [B, classes] for labels [B]; got {list(logits.shape)}")

    def _user(self, logits: torch.Tensor, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.metric(logits, labels)
        if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
            raise TypeError("metric must return (hits, units): two tensors with one value per sample")
        hits, units = (t.detach().double().reshape(-1).cpu() for t in out)
        if hits.shape != units.shape or bool((hits < 0).any() or (hits > units).any()):
            raise ValueError("metric must return hits and units of the same length with 0 <= hits <= units")
        return hits, units
