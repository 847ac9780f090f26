"""What `dampen` did: how many parameters it selected, where, how fast, and on which backend."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LayerSelection:
    name: str
    selected: int
    numel: int

    @property
    def fraction(self) -> float:
        return self.selected / self.numel if self.numel else 0.0


@dataclass(frozen=True)
class DampenReport:
    """Returned by `ssd_fast.dampen`. `str(report)` is a readable per-layer table."""

    alpha: float
    lam: float
    backend: str
    seconds: float
    layers: tuple[LayerSelection, ...] = field(repr=False)

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

    def __str__(self) -> str:
        width = max([len(layer.name) for layer in self.layers] + [9])
        lines = [
            f"SSD dampening: alpha={self.alpha:g}, lambda={self.lam:g}, backend={self.backend}, "
            f"{self.seconds * 1e3:.3f} ms",
            f"  {'parameter':<{width}}  {'selected':>12}  {'of':>12}  {'share':>8}",
        ]
        for layer in self.layers:
            if layer.selected:
                lines.append(f"  {layer.name:<{width}}  {layer.selected:>12,}  {layer.numel:>12,}  {layer.fraction:>8.3%}")
        quiet = sum(1 for layer in self.layers if not layer.selected)
        if quiet:
            lines.append(f"  ({quiet} parameter tensors with nothing selected not shown)")
        lines.append(f"  {'total':<{width}}  {self.selected:>12,}  {self.numel:>12,}  {self.fraction:>8.3%}")
        return "\n".join(lines)
