"""Class labels checked before the first backward pass, with messages that say what to do.

torch's own errors for a wrong label are terse ("expected target dtype to be Long or
Byte, but got Float", "Target 10 is out of bounds."), and on a GPU an out-of-range label
is a device-side assert that ends the process. Every entry point that scores class
labels against model outputs calls `check_class_targets` first (importance in both
modes, and the scorers of `tune`).

The range check reads the smallest and largest label: one small reduction and, for
labels on a GPU, one device sync per batch.
"""

from __future__ import annotations

from typing import Any

import torch

IGNORE_INDEX = -100  # cross-entropy's (and transformers') label for "not scored"


def _class_count(outputs: torch.Tensor) -> int:
    """Cross-entropy's class dimension: 1 for [B, C, ...] outputs."""
    return int(outputs.shape[1]) if outputs.dim() >= 2 else int(outputs.shape[0])


def check_label_values(labels: torch.Tensor, num_classes: int, *, ignore_index: int | None = IGNORE_INDEX) -> None:
    """ValueError unless every integer label is in [0, num_classes) or equals `ignore_index`."""
    if labels.numel() == 0:
        return
    labels = labels.long()
    scored = labels != ignore_index if ignore_index is not None else torch.ones_like(labels, dtype=torch.bool)
    # the smallest and largest scored label, in one read; unscored positions never decide either
    low = torch.where(scored, labels, num_classes).min()
    high = torch.where(scored, labels, -1).max()
    low, high = torch.stack([low, high]).tolist()
    allowed = f"class indices in [0, {num_classes}) for the model's {num_classes} outputs"
    if ignore_index is not None:
        allowed += f" (or {ignore_index} for a position that is not scored)"
    if low < 0:
        raise ValueError(
            f"a batch holds the label {low}, but labels must be {allowed}; "
            "renumber the classes from 0 in the dataset, or map the labels in unpack="
        )
    if high >= num_classes:
        raise ValueError(
            f"a batch holds the label {high}, but labels must be {allowed}. The data has at least {high + 1} "
            f"classes: give the model's last layer one output per class, or renumber the classes from 0 "
            "in the dataset (if they start at 1)"
        )


def check_class_targets(outputs: Any, targets: Any, *, ignore_index: int | None = IGNORE_INDEX) -> None:
    """ValueError (or TypeError) unless `targets` are class labels `outputs` can be scored against.

    For cross-entropy-style scoring of `outputs` [B, C] (or [B, C, d1, ...]): integer class
    indices [B] (or [B, d1, ...]) in [0, C), `ignore_index` allowed (pass None where no
    label may be skipped, e.g. accuracy), or floating soft labels (class probabilities)
    shaped like the outputs. Anything else is refused with what was found and what to do.
    Tensors only: other targets are left to the loss that takes them.
    """
    if not (isinstance(targets, torch.Tensor) and isinstance(outputs, torch.Tensor)) or outputs.dim() == 0:
        return
    n = targets.shape[0] if targets.dim() else 0
    if targets.is_floating_point() or targets.is_complex():
        if tuple(targets.shape) == tuple(outputs.shape):
            return  # soft labels: one probability per class
        raise ValueError(
            f"targets are {targets.dtype} with shape {list(targets.shape)}, but cross-entropy takes integer class "
            f"indices of shape [{n}] (or soft labels: probabilities shaped like the outputs, "
            f"{list(outputs.shape)}); convert class labels with .long() in the dataset or with "
            "unpack=lambda b: (b[0], b[1].long()), or pass loss_fn= for a loss that takes these targets"
        )
    if targets.dtype == torch.bool:
        raise ValueError(
            f"targets are booleans with shape {list(targets.shape)}; cross-entropy takes integer class indices: "
            "convert them with .long() (False -> class 0, True -> class 1) and give the model two outputs, or "
            "pass loss_fn= (e.g. a binary cross-entropy) for one output"
        )
    if targets.dim() == 2 and targets.shape[1] == 1 and outputs.dim() == 2:
        raise ValueError(
            f"targets have shape {list(targets.shape)}, but cross-entropy takes class indices of shape "
            f"[{targets.shape[0]}]; squeeze them in the dataset or pass unpack=lambda b: (b[0], b[1].squeeze(1))"
        )
    if targets.dtype not in (torch.int64, torch.uint8):
        raise ValueError(
            f"targets are {targets.dtype}, but cross-entropy takes class indices as torch.int64; convert them with "
            ".long() in the dataset or with unpack=lambda b: (b[0], b[1].long())"
        )
    check_label_values(targets, _class_count(outputs), ignore_index=ignore_index)


def check_token_labels(labels: Any) -> None:
    """Token labels (a language model's, a token classifier's) before the model sees them: integer, and
    negative only where they are `IGNORE_INDEX`. Their range needs the logits: `check_label_values`."""
    if not isinstance(labels, torch.Tensor):
        return
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(
            f"token labels are {labels.dtype}, but they are token (or tag) indices: convert them with .long(), "
            f"with {IGNORE_INDEX} where a position is not scored"
        )
    if labels.numel() and bool(((labels < 0) & (labels != IGNORE_INDEX)).any()):
        low = int(torch.where(labels == IGNORE_INDEX, 0, labels).min())
        raise ValueError(
            f"a batch holds the token label {low}; labels are indices from 0, and {IGNORE_INDEX} marks a position "
            "that is not scored (padding): map other negative values to it in the collator or in unpack="
        )
