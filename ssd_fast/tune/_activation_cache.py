"""Skip what dampening cannot change: the outputs of a model's leading modules, cached.

When a trial leaves every parameter used before some point of the forward untouched (the
stem of a ResNet, the embeddings of a transformer, everything before `first_layer` in the
later-layer stages), every module that finishes before that point returns exactly what it
returned for the original model. Its output on each evaluation batch is kept, and while
such a trial is scored the module returns the kept output instead of running.

The boundary is found, not declared: one forward with hooks records the order in which
modules start and finish. The first module that starts and holds a parameter the trial
touched (its own, not its children's) marks the boundary; the modules that finished before
it, were called once, and are not inside another such module are replaced. Anything they
fed is fed the same tensors, so the accuracies are the same bit for bit as the uncached
forward on the same batches. A kept output is cloned before each use, so an in-place
operation downstream cannot change it. Memory is capped (`max_bytes`); past it, batches
are scored without the cache.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from .._batches import call_model
from ._evaluation import EvalSet, Forward


def _clone(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.clone()
    if isinstance(out, (tuple, list)):
        return type(out)(_clone(v) for v in out)
    return out


def _nbytes(out: Any) -> int:
    if isinstance(out, torch.Tensor):
        return out.numel() * out.element_size()
    if isinstance(out, (tuple, list)):
        return sum(_nbytes(v) for v in out)
    return 0


class ActivationCache:
    """Kept outputs of the modules before the first touched parameter, per boundary."""

    def __init__(self, model: nn.Module, *, max_bytes: int = 1 << 30, boundaries: int = 2):
        self.model, self.max_bytes, self.boundaries = model, max_bytes, boundaries
        self.modules = dict(model.named_modules())
        self._order: dict[str, tuple[int, int, int]] | None = None  # name -> (start, end, calls)
        self._owners: dict[str, str] = {}  # parameter name -> the module holding it directly
        self._kept: OrderedDict[frozenset[str], dict[tuple, tuple]] = OrderedDict()
        self.bytes = 0
        self.hits = 0  # batches scored from kept outputs

    def _profile(self, inputs: Any) -> None:
        """One forward with hooks: when each module starts and finishes, and how often it runs."""
        events: dict[str, list[int]] = {}
        clock = [0]

        def tick() -> int:
            clock[0] += 1
            return clock[0]

        handles = []
        for name, module in self.modules.items():
            if name:

                def pre(_m, _args, name=name):
                    events.setdefault(name, [tick(), 0, 0])[2] += 1

                def post(_m, _args, _out, name=name):
                    events[name][1] = tick()

                handles.append(module.register_forward_pre_hook(pre))
                handles.append(module.register_forward_hook(post))
        try:
            with torch.no_grad():
                call_model(self.model, inputs)
        finally:
            for h in handles:
                h.remove()
        self._order = {n: (e[0], e[1], e[2]) for n, e in events.items()}
        for mname, module in self.modules.items():
            for pname, _ in module.named_parameters(recurse=False):
                self._owners[f"{mname}.{pname}" if mname else pname] = mname

    def boundary(self, touched: frozenset[str]) -> frozenset[str]:
        """The modules to replace when the parameters `touched` are dampened (maybe none)."""
        order = self._order or {}
        owners = {self._owners.get(p) for p in touched}
        if "" in owners:  # the root uses a parameter of its own: nothing runs before it
            return frozenset()
        starts = [order[m][0] for m in owners if m in order]
        if len(starts) < len(owners):  # a touched module never ran as a module: no safe boundary
            return frozenset()
        limit = min(starts, default=float("inf"))
        before = {n for n, (s, e, calls) in order.items() if e < limit and calls == 1 and e > 0}
        return frozenset(n for n in before if not any(a in before for a in _ancestors(n)))

    def forward(self, evalset: EvalSet, touched: frozenset[str]) -> Forward | None:
        """A forward for `evalset`'s chunks that reuses kept outputs, or None when nothing can be kept."""
        if self._order is None:
            self._profile(evalset.chunks[0][0][0])
        modules = self.boundary(touched)
        if not modules:
            return None
        kept = self._kept.get(modules)
        if kept is None:
            kept = self._kept[modules] = {}
            while len(self._kept) > self.boundaries:
                _, dropped = self._kept.popitem(last=False)
                self.bytes -= sum(_nbytes(v) for v in dropped.values())
        self._kept.move_to_end(modules)
        names = sorted(modules)

        def run(chunk: int, piece: int, inputs: Any) -> torch.Tensor:
            key = (evalset.name, chunk, piece)
            if key in kept:
                self.hits += 1
                return self._replay(names, kept[key], inputs)
            outs, logits = self._record(names, inputs)
            size = sum(_nbytes(o) for o in outs)
            if self.bytes + size <= self.max_bytes:
                kept[key], self.bytes = outs, self.bytes + size
            return logits

        return run

    def _record(self, names: list[str], inputs: Any) -> tuple[tuple, torch.Tensor]:
        outs: dict[str, Any] = {}
        handles = [
            self.modules[n].register_forward_hook(lambda _m, _a, out, n=n: outs.__setitem__(n, _clone(out)))
            for n in names
        ]
        try:
            logits = call_model(self.model, inputs)
        finally:
            for h in handles:
                h.remove()
        return tuple(outs[n] for n in names), logits

    def _replay(self, names: list[str], outs: tuple, inputs: Any) -> torch.Tensor:
        for n, out in zip(names, outs):
            self.modules[n].forward = lambda *_a, _out=out, **_k: _clone(_out)
        try:
            return call_model(self.model, inputs)
        finally:
            for n in names:
                del self.modules[n].forward


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]
