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
# x op p for a binary op: (does p scale x, sign of p's term when p is the second argument).
_BINARY = {
    **dict.fromkeys((torch.mul, Tensor.mul, Tensor.__mul__, Tensor.__rmul__), (True, 1.0)),
    **dict.fromkeys((torch.add, Tensor.add, Tensor.__add__, Tensor.__radd__), (False, 1.0)),
    **dict.fromkeys((torch.sub, Tensor.sub, Tensor.__sub__), (False, -1.0)),
    Tensor.__rsub__: (False, -1.0),  # __rsub__(a, b) computes b - a: the sign flips the other way
}
_ADDCMUL = {torch.addcmul, Tensor.addcmul}  # input + value * t1 * t2 (GlobalResponseNorm's affine)


def is_candidate(p: torch.nn.Parameter) -> bool:
    """At most one dim larger than 1 (a per-channel vector, or a scalar), held in a plain tensor.

    A tensor subclass (a sharded DTensor) is left to the ways that know it.
    """
    return type(p.detach()) is Tensor and sum(1 for size in p.shape if size > 1) <= 1


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
            terms = _terms(func, args, kwargs, watched)
            if terms is not None:
                out = _tapped(func, plain_args, plain_kwargs, terms)
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


# One watched argument's part in an op: its per-sample gradient is the sum of
# sign * dy * factor (factor None: sign * dy) over the dims it is broadcast along.
Term = tuple  # (Watched, factor: Tensor | None, sign: float)


def _terms(func, args: tuple, kwargs: dict, watched: list) -> list[Term] | None:
    """Each watched argument's term, or None when the op is not an affine use of them."""
    if func in _BINARY and len(args) == 2 and not kwargs and len(watched) == 1:
        scales, sign = _BINARY[func]
        p_index = 0 if args[0] is watched[0] else 1
        other = args[1 - p_index]
        if not isinstance(other, Tensor):
            return None
        if scales:
            return [(watched[0], other, 1.0)]
        reversed_sub = func is Tensor.__rsub__
        return [(watched[0], None, sign if (p_index == 1) != reversed_sub else 1.0)]
    if func in _ADDCMUL and len(args) == 3 and set(kwargs) <= {"value"}:
        value = kwargs.get("value", 1.0)
        base, t1, t2 = args
        if not isinstance(value, (int, float)) or (isinstance(t1, Watched) and isinstance(t2, Watched)):
            return None
        terms = [(base, None, 1.0)] if isinstance(base, Watched) else []
        if isinstance(t1, Watched) or isinstance(t2, Watched):
            p, factor = (t1, t2) if isinstance(t1, Watched) else (t2, t1)
            if not isinstance(factor, Tensor):
                return None
            terms.append((p, factor, float(value)))
        return terms if len(terms) == len(watched) else None
    return None


def _tapped(func, plain_args: tuple, plain_kwargs: dict, terms: list[Term]) -> Tensor | None:
    """The op's result, tapped so that each term adds its per-sample gradients; None if not per-sample."""
    hub = terms[0][0]._hub
    out = func(*plain_args, **plain_kwargs)
    if not isinstance(out, Tensor) or out.dim() == 0 or out.shape[0] != hub.n:
        return None
    shapes = []
    for p, _, _ in terms:
        shape = (1,) * (out.dim() - p.dim()) + tuple(p.shape)
        if out.dim() < p.dim() or shape[0] != 1:
            return None  # p is broadcast over the batch dim itself: not a per-sample use
        shapes.append(shape)
    factors = [_plain(f) if f is not None else None for _, f, _ in terms]
    versions = [f._version if f is not None else 0 for f in factors]

    def on_grad(dy: Tensor) -> None:
        dy = dy.float()
        for (p, _, sign), factor, version, shape in zip(terms, factors, versions, shapes):
            if factor is not None and factor._version != version:
                raise RuntimeError(
                    f"a tensor multiplied by {p._full} was modified in place afterwards; "
                    "per-sample importance needs it as it was"
                )
            g = dy * factor.float() if factor is not None else dy
            g = g * sign if sign != 1.0 else g
            reduce = tuple(d for d in range(1, out.dim()) if shape[d] == 1)
            g = g.sum(reduce, keepdim=True) if reduce else g
            hub.add(p._full, g.expand(hub.n, *shape[1:]).reshape(hub.n, -1))

    return hub.tap(out, on_grad)
