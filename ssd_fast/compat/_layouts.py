"""Batch layouts: which element of a batch is the input and which the label.

The published code unpacks `x, _, y = batch` (its datasets yield input, coarse label,
fine label). Many other codebases yield `(x, y)` or `(x, y, index)`; they opt in with
`batch_layout=`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Unpack = Callable[[Any], tuple[Any, Any]]

# name -> (number of elements, index of the inputs, index of the targets)
LAYOUTS: dict[str, tuple[int, int, int]] = {
    "published": (3, 0, 2),  # x, _, y
    "xy": (2, 0, 1),
    "xyi": (3, 0, 1),  # x, y, index
}


def make_unpack(layout: str | Unpack) -> Unpack:
    """A function batch -> (inputs, targets) for a layout name or a user callable."""
    if callable(layout):
        return layout
    if layout not in LAYOUTS:
        raise ValueError(f"batch_layout must be one of {tuple(LAYOUTS)} or a callable, got {layout!r}")
    size, xi, yi = LAYOUTS[layout]

    def unpack(batch: Any) -> tuple[Any, Any]:
        if not isinstance(batch, (tuple, list)) or len(batch) != size:
            got = f"{len(batch)} elements" if isinstance(batch, (tuple, list)) else type(batch).__name__
            hint = {2: "batch_layout='xy'", 3: "batch_layout='published' (x, _, y) or 'xyi' (x, y, index)"}
            extra = (
                hint.get(len(batch), "batch_layout=<callable>")
                if isinstance(batch, (tuple, list))
                else "batch_layout=<callable>"
            )
            raise TypeError(
                f"batch_layout={layout!r} expects batches of {size} elements, got {got}; for your data pass {extra}"
            )
        return batch[xi], batch[yi]

    return unpack
