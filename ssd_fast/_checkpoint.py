"""Which checkpoint importances belong to: a probe of a few parameter values, and its check.

The fingerprint (names, shapes, dtypes) cannot tell two checkpoints of one architecture
apart, so importances also record a probe: PROBE_VALUES values at fixed positions of each
of the PROBE_TENSORS largest trainable tensors, taken when they are computed. `dampen`
compares the model with it before writing anything.

The comparison is not equality, because the documented workflow reuses one stored full
importance across deletion requests, while each request dampens the model further.
Dampening only multiplies an element by a factor in [0, 1], so every probed value of a
dampened copy keeps its sign (or becomes 0) and never grows. A different checkpoint
breaks that at almost every probed position: each one that grows or flips sign is
evidence, and one is enough. A small relative slack lets a model cast to a lower
precision after the importances were computed still pass.
"""

from __future__ import annotations

import torch
from torch import nn

from . import _parallel
from ._pairing import named_parameters

PROBE_TENSORS = 8
PROBE_VALUES = 8
_SLACK = 1e-2  # relative: bf16 rounds by at most 2**-8


def _step(numel: int) -> int:
    return max(1, (numel - 1) // (PROBE_VALUES - 1))


def _positions(numel: int) -> list[int]:
    """The flat positions `_probe_view` reads, for tensors sharded over ranks."""
    return list(range(0, numel, _step(numel)))[:PROBE_VALUES]


def _probe_view(p: torch.Tensor) -> torch.Tensor:
    """Up to PROBE_VALUES elements spread over `p`, as a strided view (no index tensor)."""
    return p.detach().reshape(-1)[:: _step(p.numel())][:PROBE_VALUES]


def _probed(params: dict[str, nn.Parameter]) -> list[str]:
    trainable = [n for n, p in params.items() if p.requires_grad and p.numel() > 0]
    return sorted(trainable, key=lambda n: -params[n].numel())[:PROBE_TENSORS]


@torch.no_grad()
def _read(params: dict[str, nn.Parameter], names: list[str]) -> dict[str, list[float]]:
    """The probed values of `names`, with one copy and one read per device (one all_reduce when sharded)."""
    if _parallel.any_dtensor(params[n] for n in names):
        values = _parallel.read_positions([(params[n], _positions(params[n].numel())) for n in names])
        return dict(zip(names, values))
    views = {n: _probe_view(params[n]).float() for n in names}
    by_device: dict[torch.device, list[str]] = {}
    for n, t in views.items():
        by_device.setdefault(t.device, []).append(n)
    out: dict[str, list[float]] = {}
    for group in by_device.values():
        values = torch.cat([views[n] for n in group]).tolist()
        for n in group:
            k = views[n].numel()
            out[n], values = values[:k], values[k:]
    return out


def take_probe(model: nn.Module) -> dict[str, list[float]]:
    """The probe of `model` as it is now."""
    params = named_parameters(model)  # the unwrapped model's names, as importances are keyed
    return _read(params, _probed(params))


class ProbeRead:
    """`take_probe` in two steps, for importance(): on a sharded model, `parts` are summed
    over ranks inside importance()'s own all_reduce, so the probe costs no collective of its own."""

    def __init__(self, model: nn.Module):
        self._params = named_parameters(model)
        self._names = _probed(self._params)
        sharded = _parallel.any_dtensor(self._params[n] for n in self._names)
        items = [(self._params[n], _positions(self._params[n].numel())) for n in self._names]
        self._pending = _parallel.position_read(items) if sharded else None
        self.parts: list[torch.Tensor] = self._pending.parts if self._pending else []

    def values(self) -> dict[str, list[float]]:
        """The probe, once `parts` hold their sums over ranks."""
        if self._pending is None:
            return _read(self._params, self._names)
        return dict(zip(self._names, self._pending.values()))


def _could_be_dampened(now: float, then: float) -> bool:
    if now != now or then != then:  # NaN: no evidence either way
        return True
    if now == 0.0 or now == then:
        return True
    return (now > 0) == (then > 0) and abs(now) <= abs(then) * (1 + _SLACK)


def check_probes(params: dict[str, nn.Parameter], probes: dict[str, dict[str, list[float]] | None]) -> None:
    """ValueError unless the model could be the checkpoint each probe was taken on, or a
    dampened copy of it. `probes` maps "forget"/"full" to an importance's probe (or None)."""
    wanted = sorted({n for probe in probes.values() if probe for n in probe if n in params})
    if not wanted:
        return
    now = _read(params, wanted)
    for what, probe in probes.items():
        for name, then_values in (probe or {}).items():
            if name not in now or len(then_values) != len(now[name]):
                continue
            for a, b in zip(now[name], then_values):
                if not _could_be_dampened(a, b):
                    raise ValueError(
                        f"the {what} importances were computed on another checkpoint of this architecture: "
                        f"{name!r} holds {a:.6g} where it held {b:.6g} then, and dampening only shrinks "
                        "parameters toward 0, so this model is neither that checkpoint nor a dampened copy "
                        "of it. Compute the importances on this model (after fine-tuning or reloading "
                        "weights, recompute both)"
                    )
