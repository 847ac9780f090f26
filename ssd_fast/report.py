"""What a dampening did: how many parameters it selected, where, how fast, and on which backend.

The per-tensor counts stay where the kernel wrote them (on the GPU for CUDA parameters)
until something asks for them, so building a report never waits for the device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LayerSelection:
    name: str
    selected: int
    numel: int

    @property
    def fraction(self) -> float:
        return self.selected / self.numel if self.numel else 0.0


# Per device group: the positions (in the report's name order) it covers and its counts,
# a tensor still on the device or a list of ints.
CountGroup = tuple[Sequence[int], "torch.Tensor | Sequence[int]"]


def read_counts(n: int, groups: Sequence[CountGroup]) -> list[int]:
    """Counts for `n` tensors from the device groups; a position no group covers selected nothing."""
    counts = [0] * n
    for positions, found in groups:
        values = found.tolist() if isinstance(found, torch.Tensor) else found
        for pos, c in zip(positions, values):
            counts[pos] = int(c)
    return counts


class DampenReport:
    """Returned by `Dampener.apply` and `ssd_fast.dampen`. `str(report)` is a readable per-layer table.

    `layers`, `selected`, `fraction` and `per_layer()` read the counts the first time one
    of them is used (for CUDA parameters that waits for the kernel); `alpha`, `lam`,
    `backend` and `seconds` never wait. `seconds` is the host time of the call: on CUDA it
    covers the launch, not the kernel, which may still be running.
    """

    __slots__ = ("alpha", "lam", "backend", "seconds", "_layers", "_read")

    def __init__(
        self,
        alpha: float,
        lam: float,
        backend: str,
        seconds: float,
        layers: tuple[LayerSelection, ...] | Callable[[], tuple[LayerSelection, ...]],
    ) -> None:
        self.alpha, self.lam, self.backend, self.seconds = alpha, lam, backend, seconds
        self._layers = None if callable(layers) else tuple(layers)
        self._read = layers if callable(layers) else None

    @property
    def layers(self) -> tuple[LayerSelection, ...]:
        if self._layers is None:
            self._layers = tuple(self._read())
            self._read = None  # drop the device tensors once read
        return self._layers

    @property
    def selected(self) -> int:
        return sum(layer.selected for layer in self.layers)

    @property
    def numel(self) -> int:
        return sum(layer.numel for layer in self.layers)

    @property
    def fraction(self) -> float:
        return self.selected / self.numel if self.numel else 0.0

    def per_layer(self) -> dict[str, int]:
        return {layer.name: layer.selected for layer in self.layers}

    def __repr__(self) -> str:
        return (
            f"DampenReport(alpha={self.alpha!r}, lam={self.lam!r}, backend={self.backend!r}, seconds={self.seconds!r})"
        )

    def __str__(self) -> str:
        width = max([len(layer.name) for layer in self.layers] + [9])
        lines = [
            f"SSD dampening: alpha={self.alpha:g}, lambda={self.lam:g}, backend={self.backend}, "
            f"{self.seconds * 1e3:.3f} ms",
            f"  {'parameter':<{width}}  {'selected':>12}  {'of':>12}  {'share':>8}",
        ]
        for layer in self.layers:
            if layer.selected:
                lines.append(
                    f"  {layer.name:<{width}}  {layer.selected:>12,}  {layer.numel:>12,}  {layer.fraction:>8.3%}"
                )
        quiet = sum(1 for layer in self.layers if not layer.selected)
        if quiet:
            lines.append(f"  ({quiet} parameter tensors with nothing selected not shown)")
        lines.append(f"  {'total':<{width}}  {self.selected:>12,}  {self.numel:>12,}  {self.fraction:>8.3%}")
        return "\n".join(lines)
