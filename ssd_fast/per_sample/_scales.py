"""Bare scale and shift parameters: ConvNeXt's `gamma`, LayerScale's `gamma`, a learned temperature.

Such a parameter is owned by a module without a rule, which does much else in its
forward, so no layer rule sees the op that uses it. A candidate is a trainable parameter
with at most one dim larger than 1 (a per-channel vector, or a scalar), owned by one
module without a rule. For the forward pass it is swapped for a `Watched` tensor with
its values, and every op on that tensor is seen as it runs:
- an op that only re-arranges it (reshape, view, unsqueeze, `[:, None, None]`, a dtype
  cast) gives another Watched tensor of the same values in the same order;
- `x * p`, `x + p`, `x - p` (either order; `torch.mul`, `Tensor.mul`, ...), with x holding
  the batch in dim 0 and p not broadcast over it, is computed as usual and its result
  tapped: from its gradient dy, sample i's gradient of p is the sum of dy_i * x_i (or
  +-dy_i for a shift) over the dims p is broadcast along;
- any other op on it (in-place ones, a use in a matmul, ...) is computed on the plain
  values and reported, and the parameter then goes to a vmap unit; the forward is redone
  before anything is accumulated, so what was seen is never used.
Every use's per-sample gradient is added into one [batch, numel] buffer per parameter,
squared only after the backward pass, so a parameter used twice is exact too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils._pytree import tree_leaves, tree_map

from ._chunks import add_power_sum_

Tensor = torch.Tensor

_CASTS = {Tensor.to, Tensor.float, Tensor.double, Tensor.half, Tensor.bfloat16, Tensor.type_as, Tensor.contiguous}
_ARITH = {
    torch.mul: 1.0,
    Tensor.mul: 1.0,
    Tensor.__mul__: 1.0,
    Tensor.__rmul__: 1.0,
    torch.add: 1.0,
    Tensor.add: 1.0,
    Tensor.__add__: 1.0,
    Tensor.__radd__: 1.0,
    torch.sub: -1.0,
    Tensor.sub: -1.0,
    Tensor.__sub__: -1.0,
    Tensor.__rsub__: -1.0,
}
_MULS = {torch.mul, Tensor.mul, Tensor.__mul__, Tensor.__rmul__}
# Tensor.__rsub__(a, b) computes b - a: the second argument is the minuend.
_REVERSED = {Tensor.__rsub__}


def is_candidate(p: torch.nn.Parameter) -> bool:
    """At most one dim larger than 1: a per-channel vector, or a scalar."""
    return sum(1 for size in p.shape if size > 1) <= 1


class ScaleHub:
    """One forward pass's watched parameters: their per-sample gradients and the uses not covered."""

    def __init__(self, n: int, tap: Callable[[Tensor, Callable], Tensor]):
        self.n = n
        self.tap = tap
        self.grads: dict[str, Tensor] = {}  # full name -> [n, numel] per-sample gradients, summed over uses
        self.problems: dict[str, str] = {}  # full name -> why it cannot be covered here

    def watch(self, full: str, p: torch.nn.Parameter) -> Watched:
        return Watched.wrap(p.detach(), full, self)

    def add(self, full: str, g: Tensor) -> None:
        if full in self.grads:
            self.grads[full] += g
        else:
            self.grads[full] = g

    def flush_(self, sums: dict[str, Tensor], *, absolute: bool) -> None:
        """Square (or |.|) and add every parameter's summed per-sample gradients; then forget them."""
        for full, g in self.grads.items():
            add_power_sum_(sums[full], g, absolute=absolute, owned=True)
        self.grads.clear()


class Watched(Tensor):
    """A parameter's values (or a re-arranged view of them) whose uses are seen by a ScaleHub."""

    _full: str
    _hub: ScaleHub

    @staticmethod
    def wrap(t: Tensor, full: str, hub: ScaleHub) -> Watched:
        w = t.as_subclass(Watched)
        w._full, w._hub = full, hub
        return w

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        watched = [a for a in tree_leaves((args, kwargs)) if isinstance(a, Watched)]
        with torch._C.DisableTorchFunctionSubclass():
            plain_args, plain_kwargs = tree_map(_plain, (args, kwargs))
            if func in _ARITH and len(watched) == 1 and not kwargs and len(args) == 2:
                out = _arith(func, args, plain_args, watched[0])
                if out is not None:
                    return out
            result = func(*plain_args, **plain_kwargs)
        if not any(isinstance(r, Tensor) for r in tree_leaves(result)):
            return result  # metadata: shape, dim, dtype, device, ...
        w = watched[0]
        if len(watched) == 1 and isinstance(result, Tensor) and _same_values(func, w, result):
            return Watched.wrap(result, w._full, w._hub)
        for v in watched:
            v._hub.problems.setdefault(v._full, f"it is used in {_name(func)}, not only as a scale or shift")
        return result


def _plain(a):
    return a.as_subclass(Tensor) if isinstance(a, Watched) else a


def _name(func) -> str:
    return getattr(func, "__name__", repr(func))


def _same_values(func, src: Watched, result: Tensor) -> bool:
    """result holds src's values, in the same order, with only size-1 dims added or removed."""
    if result.numel() != src.numel():
        return False
    if func in _CASTS:
        return result.shape == src.shape
    if result.untyped_storage().data_ptr() != src.untyped_storage().data_ptr():
        return False
    if result.storage_offset() != src.storage_offset() or result.dtype != src.dtype:
        return False

    def big(t: Tensor) -> list[tuple[int, int]]:
        return [(size, stride) for size, stride in zip(t.shape, t.stride()) if size != 1]

    return big(result) == big(src)


def _arith(func, args: tuple, plain_args: tuple, w: Watched) -> Tensor | None:
    """x op p with the result tapped, or None when this use is not a per-sample scale or shift."""
    hub = w._hub
    p_index = 0 if args[0] is w else 1
    x = plain_args[1 - p_index]
    if not isinstance(x, Tensor) or x.dim() == 0 or x.shape[0] != hub.n:
        return None
    out = func(*plain_args)
    p_shape = (1,) * (out.dim() - w.dim()) + tuple(w.shape)
    if out.dim() < w.dim() or out.shape[0] != hub.n or p_shape[0] != 1:
        return None  # p is broadcast over the batch dim itself: not a per-sample use
    reduce = tuple(d for d in range(1, out.dim()) if p_shape[d] == 1)
    mul = func in _MULS
    sign = _ARITH[func] if (p_index == 1) != (func in _REVERSED) else 1.0
    full, version = w._full, x._version

    def on_grad(dy: Tensor) -> None:
        if mul and x._version != version:
            raise RuntimeError(
                f"a tensor multiplied by {full} was modified in place afterwards; "
                "per-sample importance needs it as it was"
            )
        g = dy.float() * x.float() if mul else dy.float() * sign
        g = g.sum(reduce, keepdim=True) if reduce else g
        hub.add(full, g.expand(hub.n, *p_shape[1:]).reshape(hub.n, -1))

    return hub.tap(out, on_grad)
