"""The fallback, confined to one module: torch.func vmap over that module alone.

A module with no rule (or a parameter used where no rule can see it) is a unit. Its
forward hook keeps the call's inputs and taps its outputs; after the backward pass the
unit's per-sample gradients are vjp(module forward, per sample) applied to the output
gradients it received, vmapped over a chunk of samples. Only that module runs under
vmap, on its own inputs, so data-dependent code elsewhere in the model (transformers'
mask construction, say) never meets vmap.

Each tensor's batch dim is found by size: dim 0 when it holds the batch, else the first
dim that does (time-major RNNs), else none (a shared tensor, captured as it is). An
output that does not hold the batch but leads with 1 (it was broadcast, like a position
embedding) is expanded to the batch so that its gradient arrives per sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.func import functional_call, vjp, vmap
from torch.utils._pytree import tree_flatten, tree_unflatten

from ._plan import Unit, describe


def batch_dim(t: Any, n: int) -> int | None:
    if not isinstance(t, torch.Tensor) or t.dim() == 0:
        return None
    if t.shape[0] == n:
        return 0
    return next((d for d, size in enumerate(t.shape) if size == n), None)


@dataclass(eq=False)
class UnitCall:
    """One forward call of a unit: its inputs, and the gradients its outputs received."""

    unit: Unit
    args: tuple
    kwargs: dict
    out_dims: dict[int, int]  # leaf index -> batch dim, for the tapped outputs
    grads: dict[int, torch.Tensor] = field(default_factory=dict)

    def per_sample_grads(self, s: slice, n: int) -> dict[str, torch.Tensor]:
        if self.unit.call_rule is not None:
            grads = self.unit.call_rule(self.unit.module, self.args, self.kwargs, self.grads, s)
            return {full: grads[local] for local, full in self.unit.params.items() if local in grads}
        try:
            return _unit_grads(self, s, n)
        except Exception as e:
            cls = type(self.unit.module).__name__
            raise RuntimeError(
                f"per-sample importance: no exact rule for {describe(self.unit.name, self.unit.module)}, and "
                f"torch.func.vmap over that module alone failed ({type(e).__name__}: {e}). Give {cls} an exact rule "
                f"with ssd_fast.per_sample.register_rule({cls}, rule), or freeze its parameters (requires_grad=False)"
            ) from e


def _slice(t: torch.Tensor, dim: int, s: slice) -> torch.Tensor:
    return t.narrow(dim, s.start, s.stop - s.start)


def _unit_grads(call: UnitCall, s: slice, n: int) -> dict[str, torch.Tensor]:
    unit = call.unit
    params = {
        path: p.detach() for path, p in unit.module.named_parameters(remove_duplicate=False) if path in unit.params
    }
    in_leaves, in_spec = tree_flatten((call.args, call.kwargs))
    in_leaves = [leaf.detach() if isinstance(leaf, torch.Tensor) else leaf for leaf in in_leaves]
    in_dims = [batch_dim(leaf, n) for leaf in in_leaves]
    tapped = sorted(call.out_dims)
    grads = [call.grads.get(i) for i in tapped]
    grad_dims = [call.out_dims[i] if g is not None else None for i, g in zip(tapped, grads)]

    def one(p: dict, batched_in: list, batched_grads: list) -> dict:
        rows, full = iter(batched_in), []
        for leaf, d in zip(in_leaves, in_dims):
            full.append(next(rows).unsqueeze(d) if d is not None else leaf)
        args, kwargs = tree_unflatten(full, in_spec)

        def forward(q: dict) -> tuple:
            leaves = tree_flatten(functional_call(unit.module, q, args, kwargs))[0]
            return tuple(leaves[i] for i in tapped)

        outs, pullback = vjp(forward, p)
        cotangents, row = [], iter(batched_grads)
        for out, g, d in zip(outs, grads, grad_dims):
            cotangents.append(torch.zeros_like(out) if g is None else next(row).unsqueeze(d).to(out.dtype))
        return pullback(tuple(cotangents))[0]

    batched_in = [_slice(leaf, d, s) for leaf, d in zip(in_leaves, in_dims) if d is not None]
    batched_grads = [_slice(g, d, s) for g, d in zip(grads, grad_dims) if g is not None]
    vmapped = vmap(one, in_dims=(None, [d for d in in_dims if d is not None], [d for d in grad_dims if d is not None]))
    out = vmapped(params, batched_in, batched_grads)
    return {unit.params[path]: g.float() for path, g in out.items()}


def record_call(unit: Unit, args: tuple, kwargs: dict, output: Any, n: int, tap_fn) -> tuple[UnitCall, Any]:
    """The call's record, and its output with every differentiable tensor tapped.

    `tap_fn(tensor, callback)` taps one tensor. Raises when no input holds the batch and
    no output can be expanded to it: per-sample gradients are then not defined here.
    """
    leaves, spec = tree_flatten(output)
    call = UnitCall(unit, args, kwargs, {})
    for i, leaf in enumerate(leaves):
        if not (isinstance(leaf, torch.Tensor) and leaf.requires_grad and leaf.is_floating_point()):
            continue
        d = batch_dim(leaf, n)
        if d is None and leaf.dim() >= 1 and leaf.shape[0] == 1:
            leaf, d = leaf.expand(n, *leaf.shape[1:]), 0
        if d is None:
            raise RuntimeError(
                f"per-sample importance: an output of {describe(unit.name, unit.module)} of shape {list(leaf.shape)} "
                f"has no dim holding the batch of {n}, so its per-sample gradients are not defined; give "
                f"{type(unit.module).__name__} a rule with ssd_fast.per_sample.register_rule"
            )
        call.out_dims[i] = d
        leaves[i] = tap_fn(leaf, lambda g, i=i: call.grads.__setitem__(i, g))
    return call, tree_unflatten(leaves, spec)
