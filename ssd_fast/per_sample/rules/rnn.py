"""nn.LSTM, nn.GRU and nn.RNN: exact per-sample gradients from the gates' gradients.

Every weight of a recurrent layer enters through two affine maps per time step,
gi_t = W_ih x_t + b_ih and gh_t = W_hh h_{t-1} + b_hh, so its per-sample gradients are
sums over time of outer products, as for a Linear over tokens:
dW_ih = sum_t dgi_t x_t^T, dW_hh = sum_t dgh_t h_{t-1}^T, db = sum_t dg_t.
The fused kernels (mkldnn, cuDNN) do not expose dgi and dgh, so each layer and direction
is stepped in PyTorch with a hand-written backward through time (see rnn_steps), which
hands dgi and dgh over as the backward pass reaches it.
- `rnn_output_rule` runs instead of the layer's own forward, so the model's one backward
  pass yields the per-sample gradients, squared and summed as they come.
- `rnn_call_grad_sample` re-runs a recorded call after the backward pass, on a chunk of
  samples and its output gradients, and returns the per-sample gradients themselves: for
  layers called more than once, whose gradients must be summed over calls first.
PackedSequence and unbatched inputs, and LSTM projections (proj_size), are not covered
(they go to the vmap fallback).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .._chunks import add_power_sum_
from .rnn_steps import StepRNN

# on_grads_for(suffix, the run's input sequence) -> on_grads(dgi, dgh, h_prev)
GradsFor = Callable[[str, torch.Tensor], Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]]


def _split_call(module: nn.RNNBase, args: tuple, kwargs: dict):
    """(input as [batch, time, features], hx) or None when the rule does not cover the call."""
    x = args[0] if args else kwargs.get("input")
    hx = args[1] if len(args) > 1 else kwargs.get("hx")
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        return None
    if module.training and module.dropout > 0 and module.num_layers > 1:
        return None  # dropout between layers is not stepped here (importance runs in eval mode)
    return (x if module.batch_first else x.transpose(0, 1)), hx


def _initial_states(module: nn.RNNBase, hx, x: torch.Tensor):
    """(h0, c0) as [layers * directions, batch, hidden]; c0 is None but for LSTM."""
    if hx is None:
        h0 = x.new_zeros(module.num_layers * (2 if module.bidirectional else 1), x.shape[0], module.hidden_size)
        return h0, (h0 if module.mode == "LSTM" else None)
    return (hx[0], hx[1]) if module.mode == "LSTM" else (hx, None)


def _weights(module: nn.RNNBase, suffix: str, dtype: torch.dtype) -> tuple[torch.Tensor | None, ...]:
    def get(name: str) -> torch.Tensor | None:
        if not (module.bias or name.startswith("weight")):
            return None
        return getattr(module, f"{name}{suffix}").detach().to(dtype)

    return get("weight_ih"), get("bias_ih"), get("weight_hh"), get("bias_hh")


def _step_stack(module: nn.RNNBase, x: torch.Tensor, h0: torch.Tensor, c0, grads_for: GradsFor, tie: Callable) -> list:
    """Every layer and direction, stepped: [output [B, T, D*H], h_n(, c_n)].

    `tie(gi)` connects a gi that does not depend on anything differentiable to the graph,
    so that the backward pass still reaches its layer.
    """
    directions = 2 if module.bidirectional else 1
    h_n, c_n, layer_in = [], [], x
    for layer in range(module.num_layers):
        outs = []
        for d in range(directions):
            k, suffix = layer * directions + d, f"_l{layer}" + ("_reverse" if d else "")
            w_ih, b_ih, w_hh, b_hh = _weights(module, suffix, x.dtype)
            seq = layer_in.flip(1) if d else layer_in  # the reverse direction runs on the reversed sequence
            gi = F.linear(seq, w_ih, b_ih)
            gi = gi if gi.requires_grad else tie(gi)
            state = (h0[k], c0[k] if c0 is not None else None)
            o, h, c = StepRNN.apply(gi, *state, w_hh, b_hh, module.mode, grads_for(suffix, seq))
            outs.append(o.flip(1) if d else o)
            h_n.append(h)
            c_n.append(c)
        layer_in = torch.cat(outs, dim=-1)
    return [layer_in, torch.stack(h_n)] + ([torch.stack(c_n)] if module.mode == "LSTM" else [])


def _outer_grads(module: nn.RNNBase, suffix: str, seq, h_prev, dgi, dgh) -> dict[str, torch.Tensor]:
    """Per-sample gradients [batch, *shape] of one layer and direction."""
    seq, h_prev, dgi, dgh = seq.detach().float(), h_prev.detach().float(), dgi.float(), dgh.float()
    grads = {
        f"weight_ih{suffix}": torch.bmm(dgi.transpose(1, 2), seq),
        f"weight_hh{suffix}": torch.bmm(dgh.transpose(1, 2), h_prev),
    }
    if module.bias:
        grads[f"bias_ih{suffix}"], grads[f"bias_hh{suffix}"] = dgi.sum(1), dgh.sum(1)
    return grads


def _pack(module: nn.RNNBase, results: list) -> tuple:
    """The results in the layout of the module's own return value."""
    out = results[0] if module.batch_first else results[0].transpose(0, 1)
    if module.mode == "LSTM":
        return out, (results[1], results[2])
    return out, results[1]


def rnn_output_rule(
    module: nn.RNNBase,
    args: tuple,
    kwargs: dict,
    tap: Callable,
    out: dict[str, torch.Tensor],
    *,
    absolute: bool,
    n: int | None = None,
):
    """The layer's output, computed step by step; None when the call is not covered.

    `n`, the batch size, is not needed: the layer's batch_first says where the batch is.

    Each layer and direction adds its squared per-sample gradients to `out` when the
    backward pass reaches it. `tap(t, callback)` ties a tensor to the engine's graph.
    """
    split = _split_call(module, args, kwargs)
    if split is None:
        return None
    x, hx = split
    h0, c0 = _initial_states(module, hx, x)

    def grads_for(suffix: str, seq: torch.Tensor):
        def on_grads(dgi: torch.Tensor, dgh: torch.Tensor, h_prev: torch.Tensor) -> None:
            for name, g in _outer_grads(module, suffix, seq, h_prev, dgi, dgh).items():
                if name in out:
                    add_power_sum_(out[name], g, absolute=absolute, owned=True)

        return on_grads

    return _pack(module, _step_stack(module, x, h0, c0, grads_for, lambda gi: tap(gi, _ignore)))


def _ignore(grad: torch.Tensor) -> None:
    return None


def _cotangent(g: torch.Tensor, index: int, batch_first: bool, s: slice) -> torch.Tensor:
    g = g.float()
    if index == 0:  # the output sequence
        return (g if batch_first else g.transpose(0, 1))[s]
    return g[:, s]  # final states: [layers * directions, batch, hidden]


def rnn_call_grad_sample(
    module: nn.RNNBase, args: tuple, kwargs: dict, grads: dict[int, torch.Tensor], s: slice
) -> dict[str, torch.Tensor]:
    """{parameter name: [chunk, *shape]} for samples s of one call, given its output gradients.

    `grads` maps the index of each output leaf (output, h_n[, c_n]) to its gradient.
    """
    split = _split_call(module, args, kwargs)
    if split is None:
        raise TypeError(f"{type(module).__name__}: PackedSequence and unbatched inputs are not covered by the rule")
    x, hx = split
    x = x.detach().float()[s].requires_grad_()  # the leaf the backward pass runs to
    h0, c0 = _initial_states(module, hx, x)
    if hx is not None:
        h0, c0 = h0.detach().float()[:, s], (c0.detach().float()[:, s] if c0 is not None else None)
    collected: dict[str, torch.Tensor] = {}

    def grads_for(suffix: str, seq: torch.Tensor):
        def on_grads(dgi: torch.Tensor, dgh: torch.Tensor, h_prev: torch.Tensor) -> None:
            collected.update(_outer_grads(module, suffix, seq, h_prev, dgi, dgh))

        return on_grads

    with torch.enable_grad():
        results = _step_stack(module, x, h0, c0, grads_for, lambda gi: gi)
        pairs = [(r, _cotangent(grads[i], i, module.batch_first, s)) for i, r in enumerate(results) if i in grads]
        if pairs:
            torch.autograd.grad([r for r, _ in pairs], [x], [g for _, g in pairs], allow_unused=True)
    return collected
