"""`coverage(model)`: how per-sample importance will get each parameter's gradients, before any data.

It builds the same plan the engine starts from (see _plan), which runs the probes that
recognise norm subclasses by what they compute, and reads no data. The first batch can
still move a parameter to vmap: a layer called twice whose rule cannot share, a use of a
parameter outside its layer, or a bare scale used in some other op; the engine then
warns, naming it and why.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from torch import nn

from ._accumulator import PerSampleAccumulator
from ._plan import Plan, describe, make_plan


@dataclass(frozen=True)
class Covered:
    """One trainable parameter: its full name, the module that owns it, and how it is covered."""

    name: str
    module: str
    how: str


@dataclass(frozen=True)
class Coverage:
    """How each trainable parameter gets its per-sample gradients; `print()` it for a table.

    Attributes:
        rules: parameters of layers with an exact rule (`how` names the rule).
        bare: parameters with a leading dim of 1 (cls token, position embedding), given a
            per-sample copy.
        scales: parameters used as x * p or x + p by a module without a rule (ConvNeXt's
            gamma, LayerScale), tapped where they are used; confirmed on the first batch.
        fallbacks: parameters that run under torch.func vmap, with the module run alone.
    """

    rules: tuple[Covered, ...]
    bare: tuple[Covered, ...]
    scales: tuple[Covered, ...]
    fallbacks: tuple[Covered, ...]

    @property
    def complete(self) -> bool:
        """True when no parameter falls back to vmap (as far as can be known before the first batch)."""
        return not self.fallbacks

    @property
    def fallback_modules(self) -> list[str]:
        """The modules that would run under vmap, once each, in model order."""
        return list(dict.fromkeys(c.module for c in self.fallbacks))

    def __str__(self) -> str:
        lines = [
            f"per-sample coverage: {len(self.rules)} parameters by exact layer rules, {len(self.bare)} bare, "
            f"{len(self.scales)} bare scales, {len(self.fallbacks)} under vmap"
        ]
        if self.fallbacks:
            lines.append("falls back to torch.func vmap (exact, slower; see ssd_fast.per_sample.register_rule):")
            for module in self.fallback_modules:
                names = ", ".join(c.name for c in self.fallbacks if c.module == module)
                lines.append(f"  {module}: {names}")
        else:
            lines.append("nothing falls back to vmap")
        if self.scales:
            lines.append("bare scales (x * p / x + p, checked on the first batch): " + _short(self.scales))
        if self.bare:
            lines.append("bare parameters (per-sample copies): " + _short(self.bare))
        counts: dict[str, int] = {}
        for c in self.rules:
            counts[c.how] = counts.get(c.how, 0) + 1
        if counts:
            lines.append("exact rules: " + ", ".join(f"{how} x{k}" for how, k in sorted(counts.items())))
        return "\n".join(lines)


def _short(items: tuple[Covered, ...], limit: int = 6) -> str:
    names = [c.name for c in items]
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def coverage(model: nn.Module, example: Any = None) -> Coverage:
    """How `importance(model, ..., mode="per_sample")` will cover each trainable parameter.

    Computed before any data is read: it lists the modules and parameters that would fall
    back to torch.func vmap (exact, but slower than a rule), and what covers the others.
    Norm subclasses are recognised by running them once on a small random input (their
    own parameters are swapped for random ones meanwhile and put back). Pass the model as
    you pass it to importance() (unwrap DDP first).

    Args:
        model: the model.
        example: optional, one batch of inputs as the model takes them (on its device). The
            first-batch checks then run on it too (one forward in eval mode, nothing
            accumulated, no gradient formed), so the report is final: a bare scale used in
            some other op, or a layer called twice, shows where it will really go.
    The model's parameters, buffers and train/eval modes are left as they were.

    Example::

        report = ssd_fast.per_sample.coverage(model, torch.randn(2, 3, 224, 224))
        print(report)              # a short table
        assert report.complete     # nothing under vmap
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"coverage needs an nn.Module, got {type(model).__name__}")
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("the model has no parameters with requires_grad=True, so nothing needs covering")
    plan = make_plan(model, params, {}) if example is None else _checked_plan(model, params, example)
    order = {name: i for i, name in enumerate(params)}

    def items(pairs) -> tuple[Covered, ...]:
        return tuple(sorted(pairs, key=lambda c: order[c.name]))

    rules = [
        Covered(full, describe(layer.name, layer.module), type(layer.module).__name__)
        for layer in plan.layers
        for full in layer.params.values()
    ]
    rules += [
        Covered(full, describe(unit.name, unit.module), type(unit.module).__name__ + " call rule")
        for unit in plan.units
        if unit.call_rule is not None
        for full in unit.params.values()
    ]
    fallbacks = [
        Covered(full, describe(unit.name, unit.module), "vmap")
        for unit in plan.fallbacks
        for full in unit.params.values()
    ]
    return Coverage(
        rules=items(rules),
        bare=items(Covered(full, plan.owner[full], "bare") for full in plan.bare),
        scales=items(Covered(full, plan.owner[full], "scale") for full in plan.scales),
        fallbacks=items(fallbacks),
    )


def _checked_plan(model: nn.Module, params: dict, example: Any) -> Plan:
    """The plan after the first-batch checks on `example`, in eval mode; modes put back after."""
    modes = [(m, m.training) for m in model.modules()]
    accumulator = PerSampleAccumulator(model, params)
    try:
        model.eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the report names the fallbacks itself
            return accumulator.check(example)
    finally:
        accumulator.close()
        for m, mode in modes:
            m.training = mode
