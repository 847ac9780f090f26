"""Norm subclasses recognised by what they compute (timm's LayerNorm, LayerNorm2d, BatchNormAct2d, ...).

A subclass of nn.LayerNorm, nn.GroupNorm or nn.BatchNorm1d/2d/3d that overrides forward
may compute anything, so its class alone is not trusted. Before any data is read, its
forward is run once on a random input, with random weight, bias and running statistics
swapped in (a module's own values may be 1 and 0, which would hide a forward that ignores
one of them), in eval mode and without autograd; everything is put back afterwards. It is
recognised when it leaves its input unchanged and its output equals

    tail(norm(x))    or    tail(norm over dim 1 of x)    (channels first: LayerNorm2d)

where norm is the base class's computation and tail applies the module's child modules in
the order they were registered (BatchNormAct2d's drop, then act; no children: nothing).
A probe per instance, not per class: timm's forward branches on per-instance flags.

Recognised as norm(x) with no children, it gets the base class's rule on its own input
and output gradient. Otherwise an output rule runs in place of its forward: it computes
the norm in the base class's layout (the channel dim moved last for channels-first),
taps that tensor so the base rule gets its gradient, and applies the tail: the same
output, computed the way the probe checked. Anything else goes to vmap.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .._chunks import DEFAULT_BUDGET
from .norm import batch_norm_rule, group_norm_rule, layer_norm_rule

_BASES: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_RULES = {nn.LayerNorm: layer_norm_rule, nn.GroupNorm: group_norm_rule}


@dataclass(frozen=True)
class NormForm:
    """What a recognised module computes: `base`'s norm, over dim 1 or not, then its children."""

    base: type[nn.Module]
    channels_first: bool
    tail: bool

    @property
    def plain(self) -> bool:
        return not (self.channels_first or self.tail)


def _norm(form: NormForm, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The base computation in the base class's own layout (x already moved for channels first)."""
    if form.base is nn.LayerNorm:
        return F.layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)
    if form.base is nn.GroupNorm:
        return F.group_norm(x, module.num_groups, module.weight, module.bias, module.eps)
    return F.batch_norm(x, module.running_mean, module.running_var, module.weight, module.bias, False, 0.0, module.eps)


def _tail(module: nn.Module, z: torch.Tensor) -> torch.Tensor:
    for child in module.children():
        z = child(z)
    return z


def _expected(form: NormForm, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if form.channels_first:
        return _tail(module, _norm(form, module, x.movedim(1, -1)).movedim(-1, 1))
    return _tail(module, _norm(form, module, x))


# ---- the probe --------------------------------------------------------------------------------
def _sizes(avoid: int, count: int) -> tuple[int, ...]:
    """Small dim sizes unlike the channel count, so that a dim mix-up cannot pass the probe."""
    return tuple(s for s in (3, 5, 7, 11) if s != avoid)[:count]


def _candidates(module: nn.Module, base: type[nn.Module]) -> Iterator[tuple[NormForm, tuple[int, ...]]]:
    tail = any(True for _ in module.children())
    if base is nn.LayerNorm:
        shape = tuple(module.normalized_shape)
        yield NormForm(base, False, tail), (2, *_sizes(shape[-1], 1), *shape)
        if len(shape) == 1:
            yield NormForm(base, True, tail), (2, shape[0], *_sizes(shape[0], 2))
    elif base is nn.GroupNorm:
        yield NormForm(base, False, tail), (2, module.num_channels, *_sizes(module.num_channels, 2))
    else:
        spatial = {nn.BatchNorm1d: 1, nn.BatchNorm2d: 2, nn.BatchNorm3d: 3}[base]
        yield NormForm(base, False, tail), (2, module.num_features, *_sizes(module.num_features, spatial))


@contextlib.contextmanager
def _random_state(module: nn.Module, generator: torch.Generator) -> Iterator[None]:
    """Random weight, bias and running statistics, eval mode everywhere below; all put back after."""
    saved_params = dict(module._parameters)
    saved_buffers = dict(module._buffers)
    saved_modes = [(m, m.training) for m in module.modules()]

    def like(t: torch.Tensor, positive: bool = False) -> torch.Tensor:
        r = torch.rand(t.shape, generator=generator) + 0.5 if positive else torch.randn(t.shape, generator=generator)
        return r.to(device=t.device, dtype=t.dtype)

    try:
        for name in ("weight", "bias"):
            if saved_params.get(name) is not None:
                module._parameters[name] = like(saved_params[name])
        for name in ("running_mean", "running_var"):
            if saved_buffers.get(name) is not None:
                module._buffers[name] = like(saved_buffers[name], positive=name == "running_var")
        for m, _ in saved_modes:
            m.training = False
        yield
    finally:
        module._parameters.clear()
        module._parameters.update(saved_params)
        module._buffers.clear()
        module._buffers.update(saved_buffers)
        for m, mode in saved_modes:
            m.training = mode


@torch.no_grad()
def recognise(module: nn.Module, base: type[nn.Module]) -> NormForm | None:
    """The form `module` computes, checked on a random input; None when it matches none."""
    if base not in _BASES or getattr(module, "weight", None) is None and getattr(module, "bias", None) is None:
        return None
    if issubclass(base, nn.modules.batchnorm._BatchNorm) and module.running_mean is None:
        return None  # batch statistics mix samples: no per-sample rule exists
    reference = module.weight if module.weight is not None else module.bias
    generator = torch.Generator(device="cpu").manual_seed(0)
    for form, shape in _candidates(module, base):
        x = torch.randn(shape, generator=generator).to(device=reference.device, dtype=reference.dtype)
        before = x.clone()
        with _random_state(module, generator):
            try:
                y = module.forward(x)
                want = _expected(form, module, before.clone())
            except Exception:  # a candidate shape the forward does not take: try the next one
                continue
        if not torch.equal(x, before):
            return None  # it writes into its input, which a rule needs as it was
        if isinstance(y, torch.Tensor) and y.shape == want.shape and _close(y, want):
            return form
    return None


def _close(y: torch.Tensor, want: torch.Tensor) -> bool:
    if y.dtype in (torch.float32, torch.float64):
        return torch.allclose(y.double(), want.double(), rtol=1e-4, atol=1e-5)
    return torch.allclose(y.float(), want.float(), rtol=2e-2, atol=2e-2)


# ---- the output rule ----------------------------------------------------------------------------
def norm_output_rule(
    form: NormForm,
    module: nn.Module,
    args: tuple,
    kwargs: dict,
    tap: Callable,
    out: dict[str, torch.Tensor],
    *,
    absolute: bool,
    n: int | None = None,
) -> torch.Tensor | None:
    """The module's output, tail(norm(x)), with norm's output tapped for the base rule; None if not covered."""
    x = args[0] if len(args) == 1 and not kwargs else None
    if not isinstance(x, torch.Tensor) or (n is not None and (x.dim() < 2 or x.shape[0] != n)):
        return None
    rule = _RULES.get(form.base, batch_norm_rule)
    x_std = x.movedim(1, -1) if form.channels_first else x
    version = x._version

    def on_grad(dz: torch.Tensor) -> None:
        if x._version != version:
            raise RuntimeError(
                f"the input of a {type(module).__name__} was modified in place after it ran; "
                "per-sample importance needs it as it was"
            )
        rule(module, x_std, dz, out, absolute=absolute, budget=DEFAULT_BUDGET)

    z = tap(_norm(form, module, x_std), on_grad)
    return _tail(module, z.movedim(-1, 1) if form.channels_first else z)


def norm_like_entry(module: nn.Module, base: type[nn.Module], base_entry, make_entry: Callable):
    """An entry for a norm subclass with its own forward, by what it computes; or None."""
    form = recognise(module, base)
    if form is None:
        return None
    if form.plain:
        return base_entry
    return make_entry(None, output_rule=partial(norm_output_rule, form))
