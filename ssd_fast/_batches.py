"""Turning whatever a user iterates over into (inputs, targets) on the right device.

Shared by the fast path and the reference so that both see exactly the same batches;
the batch handling is plumbing, not the thing under test.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from ._hf import logits_of, split_labels

Unpack = Callable[[Any], tuple[Any, Any]]


def unpack_batch(batch: Any, unpack: Unpack | None, *, label_free: bool) -> tuple[Any, Any]:
    """Split one batch into (inputs, targets), refusing shapes we would have to guess."""
    if unpack is not None:
        out = unpack(batch)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise TypeError(f"unpack must return (inputs, targets); it returned {type(out).__name__}")
        return out[0], out[1]
    if isinstance(batch, Mapping):
        return _unpack_mapping(batch, label_free=label_free)
    if isinstance(batch, torch.Tensor):
        if label_free:
            return batch, None
        raise TypeError(
            "a batch is a single tensor but importance needs targets; yield (inputs, targets), "
            "pass label_free=True, or pass unpack=lambda b: (inputs, targets)"
        )
    if isinstance(batch, (tuple, list)):
        if len(batch) == 2:
            return batch[0], batch[1]
        if len(batch) == 1 and label_free:
            return batch[0], None
        raise TypeError(
            f"a batch has {len(batch)} elements, so which are the inputs and which the targets is "
            "ambiguous; pass unpack=, for example unpack=lambda b: ((b[0], b[1]), b[2]) when the "
            "model takes two inputs, model(x1, x2), and the labels come last, or "
            "unpack=lambda b: (b[0], b[2]) for the published (x, _, y) layout, where b[1] is not an input"
        )
    raise TypeError(f"cannot unpack a batch of type {type(batch).__name__}; pass unpack=lambda b: (inputs, targets)")


def _unpack_mapping(batch: Mapping, *, label_free: bool) -> tuple[Any, Any]:
    """A dict of model keyword arguments (a transformers batch): labels apart, the rest as inputs."""
    split = split_labels(batch)
    if split is not None:
        return split
    if label_free:
        return dict(batch), None
    raise TypeError(
        f"a dict batch with keys {sorted(batch)} holds no 'labels', so importance has no targets; "
        "add labels, pass label_free=True, or pass unpack=lambda b: (inputs, targets)"
    )


def to_device(obj: Any, device: torch.device) -> Any:
    """Move tensors, possibly nested in tuples, lists and dicts, to `device`."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def call_model(model: nn.Module, inputs: Any) -> torch.Tensor:
    """model(x), model(*x) or model(**x), depending on how the inputs are packed: the outputs,
    or the `.logits` of a ModelOutput."""
    return logits_of(call_model_raw(model, inputs))


def call_model_raw(model: nn.Module, inputs: Any, **extra: Any) -> Any:
    """The model's own return value; `extra` keyword arguments (e.g. labels=) are added."""
    if isinstance(inputs, Mapping):
        return model(**inputs, **extra)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs, **extra)
    return model(inputs, **extra)


def count_samples(inputs: Any) -> int:
    """Batch size: the leading dimension of the first tensor found in the inputs."""
    if isinstance(inputs, torch.Tensor):
        if inputs.dim() == 0:
            raise ValueError("inputs are a 0-d tensor; a batch needs a leading batch dimension")
        return int(inputs.shape[0])
    values = inputs.values() if isinstance(inputs, Mapping) else inputs
    if isinstance(values, Iterable):
        for v in values:
            try:
                return count_samples(v)
            except (TypeError, ValueError):
                continue
    raise TypeError(f"cannot find a batch dimension in inputs of type {type(inputs).__name__}")


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    raise ValueError("the model has no parameters")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration, then every module's own train/eval flag restored."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, was_training in flags:
            m.training = was_training


def with_progress(data: Iterable, enabled: bool, desc: str) -> Iterable:
    if not enabled:
        return data
    from tqdm.auto import tqdm

    total = len(data) if hasattr(data, "__len__") else None
    return tqdm(data, total=total, desc=desc, leave=False, unit="batch")


def take_rows(inputs: Any, rows: torch.Tensor, batch: int) -> Any:
    """The samples `rows` of a batch of `batch` samples: every tensor with that leading size is
    indexed, whatever nests it (tuples, lists, dicts); anything else is passed on as it is."""
    if isinstance(inputs, torch.Tensor):
        return inputs.index_select(0, rows.to(inputs.device)) if inputs.dim() and inputs.shape[0] == batch else inputs
    if isinstance(inputs, Mapping):
        return {k: take_rows(v, rows, batch) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(take_rows(v, rows, batch) for v in inputs)
    return inputs


def cat_rows(pieces: list[Any]) -> Any:
    """The pieces joined along the batch dimension, or `NO_FIT` where they do not fit together
    (sequences padded to different lengths, different keys, different non-tensor values)."""
    first = pieces[0]
    if isinstance(first, torch.Tensor):
        if not all(isinstance(p, torch.Tensor) and p.dim() and p.shape[1:] == first.shape[1:] for p in pieces):
            return NO_FIT
        return torch.cat(pieces)
    if isinstance(first, Mapping):
        if not all(isinstance(p, Mapping) and p.keys() == first.keys() for p in pieces):
            return NO_FIT
        joined = {k: cat_rows([p[k] for p in pieces]) for k in first}
        return NO_FIT if any(v is NO_FIT for v in joined.values()) else joined
    if isinstance(first, (tuple, list)):
        if not all(type(p) is type(first) and len(p) == len(first) for p in pieces):
            return NO_FIT
        parts = [cat_rows([p[i] for p in pieces]) for i in range(len(first))]
        return NO_FIT if any(v is NO_FIT for v in parts) else type(first)(parts)
    return first if all(p is first or p == first for p in pieces) else NO_FIT


NO_FIT = object()  # cat_rows: the pieces cannot be joined into one batch
