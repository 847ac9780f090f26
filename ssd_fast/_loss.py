"""The objective whose gradient defines importance.

SSD squares the gradient of the mean cross-entropy of a batch; LFSSD (label-free) uses
the mean squared L2 norm of the model's outputs instead, and needs no targets.
A transformers model that scores its own labels (it returns a ModelOutput with `.loss`)
is used as it is: batch mode takes its own mean loss. `task_loss_terms` mirrors that loss
sample by sample, for per-sample mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._batches import call_model, call_model_raw
from ._hf import Task, attention_mask, logits_of
from ._labels import IGNORE_INDEX, check_class_targets, check_label_values, check_token_labels

LossFn = Callable[[torch.Tensor, Any], torch.Tensor]


def label_free_losses(outputs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per sample ||f(x_i)||_2^2; with a [B, T] attention mask over [B, T, ...] outputs,
    only the unmasked positions count (padding is not part of the sample)."""
    n = outputs.shape[0]
    power = outputs.float().square()
    if mask is not None and outputs.dim() >= 3 and tuple(mask.shape) == tuple(outputs.shape[:2]):
        power = power * mask.to(power.dtype).reshape(*mask.shape, *([1] * (outputs.dim() - 2)))
    return power.reshape(n, -1).sum(dim=1)


def label_free_loss(outputs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the batch of ||f(x)||_2^2."""
    return label_free_losses(outputs, mask).mean()


def task_loss_terms(task: Task, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of loss terms, number of terms), per sample, as the model's own loss counts them.

    The model's batch loss is sums.sum() / counts.sum(); sample i alone scores sums[i] / counts[i].
    """
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"the model's loss needs tensor labels, got {type(labels).__name__}")
    n = logits.shape[0]
    logits = logits.float()
    if task.kind == "tokens":
        check_token_labels(labels)
        check_label_values(labels, logits.shape[-1])
        if task.shift:  # position t predicts token t + 1, as transformers' ForCausalLMLoss does
            labels = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
        labels = labels.reshape(n, -1).long()
        terms = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
        )
        return terms.reshape(n, -1).sum(1), (labels != IGNORE_INDEX).sum(1).to(terms.dtype)
    if task.kind == "sequence":
        return _sequence_terms(task, logits, labels)
    raise ValueError(
        f"per_sample mode cannot score this model's own loss ({task!r}) one sample at a time; "
        "pass loss_fn(outputs, targets) returning one loss per sample"
    )


def _sequence_terms(task: Task, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = logits.shape[0]
    problem = task.problem_type(labels)
    if problem == "single_label_classification":
        labels = labels.reshape(n).long()
        check_label_values(labels, logits.reshape(n, -1).shape[1])
        terms = F.cross_entropy(logits.reshape(n, -1), labels, ignore_index=IGNORE_INDEX, reduction="none")
        return terms, (labels != IGNORE_INDEX).to(terms.dtype)
    labels = labels.to(logits.dtype).reshape(n, -1)
    flat = logits.reshape(n, -1)
    if problem == "regression":
        terms = (flat - labels).square()
    else:
        terms = F.binary_cross_entropy_with_logits(flat, labels, reduction="none")
    return terms.sum(1), torch.full((n,), float(flat.shape[1]), device=flat.device)


def batch_loss(
    outputs: torch.Tensor,
    targets: Any,
    *,
    label_free: bool,
    loss_fn: LossFn | None,
    task: Task | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    if label_free:
        return label_free_loss(outputs, mask)
    if loss_fn is not None:
        loss = loss_fn(outputs, targets)
        if not (isinstance(loss, torch.Tensor) and loss.dim() == 0):
            raise TypeError("loss_fn must return a scalar tensor (the mean loss of the batch)")
        return loss
    if task is not None and task.kind in ("tokens", "sequence"):
        sums, counts = task_loss_terms(task, outputs, targets)
        return sums.sum() / counts.sum()
    check_class_targets(outputs, targets)
    return F.cross_entropy(outputs, targets)


def model_batch_loss(
    model: nn.Module, inputs: Any, targets: Any, *, label_free: bool, loss_fn: LossFn | None, task: Task | None
) -> torch.Tensor:
    """The batch objective. A transformers model given its labels computes its own loss, and that is used."""
    if task is not None and not (label_free or loss_fn is not None or targets is None):
        if task.kind == "tokens":
            check_token_labels(targets)
        out = _call_with_labels(model, inputs, targets)
        loss = getattr(out, "loss", None)
        if isinstance(loss, torch.Tensor):
            return loss
        outputs = logits_of(out)
    else:
        outputs = call_model(model, inputs)
    return batch_loss(outputs, targets, label_free=label_free, loss_fn=loss_fn, task=task, mask=attention_mask(inputs))


def _call_with_labels(model: nn.Module, inputs: Any, labels: Any) -> Any:
    """The model given its labels; its own loss's out-of-range error gets a message that says what to do."""
    try:
        return call_model_raw(model, inputs, labels=labels)
    except IndexError as e:
        if "out of bounds" not in str(e):
            raise
        raise ValueError(
            f"the model's own loss refused a label ({e}): labels must be indices in [0, number of outputs) (the "
            f"config's vocab_size or num_labels), or {IGNORE_INDEX} for a position that is not scored; check the "
            "labels the data yields against the model's config"
        ) from e


def check_loss_options(label_free: bool, loss_fn: LossFn | None) -> None:
    if label_free and loss_fn is not None:
        raise ValueError("label_free=True defines its own objective (mean ||f(x)||^2); do not pass loss_fn too")
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
