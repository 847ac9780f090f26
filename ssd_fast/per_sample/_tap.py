"""A pass-through autograd node that hands a tensor's gradient to a callback.

The engine taps every covered layer's output (and every bare parameter's per-sample
copy) and then asks autograd for the gradient of one scalar `anchor` that every tap
takes as an input. Autograd then runs exactly the part of the graph that reaches the
taps: output gradients flow layer to layer, but no parameter gradient is ever formed,
because no parameter is asked for. Each callback turns its layer's output gradient
into that layer's sum of squared per-sample gradients, and the gradient is then freed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

GradCallback = Callable[[torch.Tensor], None]


class _Tap(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y: torch.Tensor, anchor: torch.Tensor, callback: GradCallback) -> torch.Tensor:
        ctx.callback = callback
        ctx.set_materialize_grads(False)  # an unused output calls nothing
        # Returning y itself, marked dirty, rebases y onto this node rather than making a
        # view of it, so later in-place ops on y (ReLU(inplace=True), `out += identity`) work.
        ctx.mark_dirty(y)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor | None):
        if dy is not None:
            ctx.callback(dy)
        return dy, None, None


def tap(y: torch.Tensor, anchor: torch.Tensor, callback: GradCallback) -> torch.Tensor:
    """y, unchanged, with `callback(dL/dy)` called during the backward pass."""
    return _Tap.apply(y, anchor, callback)


class _Source(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value: torch.Tensor, anchor: torch.Tensor, callback: GradCallback) -> torch.Tensor:
        ctx.callback = callback
        ctx.set_materialize_grads(False)
        return value.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor | None):
        if grad is not None:
            ctx.callback(grad)
        return None, None, None


def source(value: torch.Tensor, anchor: torch.Tensor, callback: GradCallback) -> torch.Tensor:
    """A copy of `value` that is a graph leaf in all but name: its gradient goes to callback.

    Used for bare parameters, whose per-sample copies are [B, ...] tensors that start the graph.
    """
    return _Source.apply(value, anchor, callback)
