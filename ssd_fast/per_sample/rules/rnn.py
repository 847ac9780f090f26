"""nn.LSTM, nn.GRU and nn.RNN: exact per-sample gradients from the gates' gradients.

Every weight of a recurrent layer enters through two affine maps per time step,
gi_t = W_ih x_t + b_ih and gh_t = W_hh h_{t-1} + b_hh, so its per-sample gradients are
sums over time of outer products, as for a Linear over tokens:
dW_ih = sum_t dgi_t x_t^T, dW_hh = sum_t dgh_t h_{t-1}^T, db = sum_t dg_t,
with dgh = dgi (LSTM, RNN) or, for GRU, dgi with its new-gate part times r_t.

The fused kernels (mkldnn, cuDNN) do not expose dgi, so:
- `rnn_output_rule` runs instead of the layer's own forward: each layer and direction is
  stepped in PyTorch with a hand-written backward through time (see rnn_steps), which
  hands dgi and dgh to the rule as the one backward pass reaches it.
- `rnn_call_grad_sample` works after the backward pass, from the call's recorded inputs
  and output gradients, a chunk of samples at a time: for layers called more than once
  or sharing weights, whose per-sample gradients must be summed over calls first. It runs
  each layer and direction through the fused kernel on gi itself, with an identity input
  weight (b_ih is already in gi), so that the gradient reaching gi is dgi.
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

_FUSED = {"LSTM": torch.lstm, "GRU": torch.gru, "RNN_TANH": torch.rnn_tanh, "RNN_RELU": torch.rnn_relu}


def _split_call(module: nn.RNNBase, args: tuple, kwargs: dict):
    """(input as [batch, time, features], hx) or None when the rule does not cover the call."""
    x = args[0] if args else kwargs.get("input")
    hx = args[1] if len(args) > 1 else kwargs.get("hx")
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        return None
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


def _rerun(module: nn.RNNBase, gi: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor | None, h0: torch.Tensor, c0):
    """The fused kernel on gi with an identity input weight: (outputs, h_n, c_n or None)."""
    eye = torch.eye(gi.shape[-1], dtype=gi.dtype, device=gi.device)
    b_hh = b_hh if b_hh is not None else gi.new_zeros(gi.shape[-1])
    params = [eye, w_hh, torch.zeros_like(b_hh), b_hh]
    if module.mode == "LSTM":
        out, h_n, c_n = torch.lstm(gi, (h0.unsqueeze(0), c0.unsqueeze(0)), params, True, 1, 0.0, False, False, True)
        return out, h_n[0], c_n[0]
    out, h_n = _FUSED[module.mode](gi, h0.unsqueeze(0), params, True, 1, 0.0, False, False, True)
    return out, h_n[0], None


def _run_stack(module: nn.RNNBase, x: torch.Tensor, h0: torch.Tensor, c0, gi_hook: Callable | None):
    """Re-run every layer and direction through its gi: ([output, h_n(, c_n)], runs).

    runs: (suffix, gi, the run's input sequence, its h_{t-1} sequence), in processing order.
    `gi_hook(run index, gi)` may return a replacement for gi (a tapped copy).
    """
    directions = 2 if module.bidirectional else 1
    runs, h_n, c_n = [], [], []
    layer_in = x
    for layer in range(module.num_layers):
        outs = []
        for d in range(directions):
            k, suffix = layer * directions + d, f"_l{layer}" + ("_reverse" if d else "")
            w_ih, b_ih, w_hh, b_hh = _weights(module, suffix, x.dtype)
            seq = layer_in.flip(1) if d else layer_in  # the reverse direction runs on the reversed sequence
            gi = F.linear(seq, w_ih, b_ih)
            if gi_hook is not None:
                gi = gi_hook(len(runs), gi)
            out, h, c = _rerun(module, gi, w_hh, b_hh, h0[k], c0[k] if c0 is not None else None)
            runs.append((suffix, gi, seq, torch.cat([h0[k].unsqueeze(1), out[:, :-1]], 1)))
            outs.append(out.flip(1) if d else out)
            h_n.append(h)
            c_n.append(c)
        layer_in = torch.cat(outs, dim=-1)
    results = [layer_in, torch.stack(h_n)] + ([torch.stack(c_n)] if module.mode == "LSTM" else [])
    return results, runs


def _run_grads(module: nn.RNNBase, run: tuple, dgi: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Per-sample gradients [batch, *shape] of one layer and direction, from its dgi."""
    suffix, gi, seq, h_prev = run
    gi, h_prev = gi.detach().float(), h_prev.detach().float()
    dgi = torch.zeros_like(gi) if dgi is None else dgi.float()
    dgh = dgi
    if module.mode == "GRU":  # n = tanh(gi_n + r * gh_n): gh_n's gradient is r * dgi_n
        _, _, w_hh, b_hh = _weights(module, suffix, torch.float32)
        r = torch.sigmoid(gi.chunk(3, -1)[0] + F.linear(h_prev, w_hh, b_hh).chunk(3, -1)[0])
        dr, dz, dn = dgi.chunk(3, -1)
        dgh = torch.cat([dr, dz, r * dn], -1)
    return _outer_grads(module, suffix, seq, h_prev, dgi, dgh)


def _outer_grads(module: nn.RNNBase, suffix: str, seq, h_prev, dgi, dgh) -> dict[str, torch.Tensor]:
    seq, h_prev, dgi, dgh = seq.detach().float(), h_prev.detach().float(), dgi.float(), dgh.float()
    grads = {f"weight_ih{suffix}": torch.bmm(dgi.transpose(1, 2), seq), f"weight_hh{suffix}": torch.bmm(dgh.transpose(1, 2), h_prev)}
    if module.bias:
        grads[f"bias_ih{suffix}"], grads[f"bias_hh{suffix}"] = dgi.sum(1), dgh.sum(1)
    return grads


def _pack(module: nn.RNNBase, results: list) -> tuple:
    """The results in the layout of the module's own return value."""
    out = results[0] if module.batch_first else results[0].transpose(0, 1)
    if module.mode == "LSTM":
        return out, (results[1], results[2])
    return out, results[1]


def rnn_output_rule(module: nn.RNNBase, args: tuple, kwargs: dict, tap: Callable, out: dict[str, torch.Tensor], *, absolute: bool):
    """The layer's output, computed step by step (see rnn_steps); None when the call is not covered.

    Each layer and direction's hand-written backward adds its squared per-sample gradients
    to `out` as the backward pass reaches it. `tap(t, callback)` ties a tensor to the graph.
    """
    split = _split_call(module, args, kwargs)
    if split is None:
        return None
    x, hx = split
    h0, c0 = _initial_states(module, hx, x)
    directions = 2 if module.bidirectional else 1
    h_n, c_n, layer_in = [], [], x
    for layer in range(module.num_layers):
        outs = []
        for d in range(directions):
            k, suffix = layer * directions + d, f"_l{layer}" + ("_reverse" if d else "")
            w_ih, b_ih, w_hh, b_hh = _weights(module, suffix, x.dtype)
            seq = layer_in.flip(1) if d else layer_in  # the reverse direction runs on the reversed sequence
            on_grads = _adder(module, suffix, seq, out, absolute)
            gi = F.linear(seq, w_ih, b_ih)
            if not gi.requires_grad:  # a raw input: tie gi to the graph, so that the backward pass reaches it
                gi = tap(gi, _ignore)
            o, h, c = StepRNN.apply(gi, h0[k], c0[k] if c0 is not None else None, w_hh, b_hh, module.mode, on_grads)
            outs.append(o.flip(1) if d else o)
            h_n.append(h)
            c_n.append(c)
        layer_in = torch.cat(outs, dim=-1)
    results = [layer_in, torch.stack(h_n)] + ([torch.stack(c_n)] if module.mode == "LSTM" else [])
    return _pack(module, results)


def _ignore(grad: torch.Tensor) -> None:
    return None


def _adder(module: nn.RNNBase, suffix: str, seq: torch.Tensor, out: dict[str, torch.Tensor], absolute: bool) -> Callable:
    def on_grads(dgi: torch.Tensor, dgh: torch.Tensor, h_prev: torch.Tensor) -> None:
        for name, g in _outer_grads(module, suffix, seq, h_prev, dgi, dgh).items():
            if name in out:
                add_power_sum_(out[name], g, absolute=absolute, owned=True)

    return on_grads


def _cotangent(g: torch.Tensor, index: int, batch_first: bool, s: slice) -> torch.Tensor:
    g = g.float()
    if index == 0:  # the output sequence
        return (g if batch_first else g.transpose(0, 1))[s]
    return g[:, s]  # final states: [layers * directions, batch, hidden]


def rnn_call_grad_sample(module: nn.RNNBase, args: tuple, kwargs: dict, grads: dict[int, torch.Tensor], s: slice) -> dict[str, torch.Tensor]:
    """{parameter name: [chunk, *shape]} for samples s of one call, given its output gradients.

    `grads` maps the index of each output leaf (output, h_n[, c_n]) to its gradient.
    """
    split = _split_call(module, args, kwargs)
    if split is None:
        raise TypeError(f"{type(module).__name__}: PackedSequence and unbatched inputs are not covered by the rule")
    x, hx = split
    x = x.detach().float()[s]
    h0, c0 = _initial_states(module, hx, x)
    if hx is not None:
        h0, c0 = h0.detach().float()[:, s], (c0.detach().float()[:, s] if c0 is not None else None)

    def as_node(index: int, gi: torch.Tensor) -> torch.Tensor:
        return gi.requires_grad_()  # the weights are detached: gi starts the graph

    with torch.enable_grad():
        results, runs = _run_stack(module, x, h0, c0, as_node)
        pairs = [(r, _cotangent(grads[i], i, module.batch_first, s)) for i, r in enumerate(results) if i in grads]
        gis = [run[1] for run in runs]
        d_gis = torch.autograd.grad([r for r, _ in pairs], gis, [g for _, g in pairs], allow_unused=True) if pairs else [None] * len(gis)
    out: dict[str, torch.Tensor] = {}
    for run, dgi in zip(runs, d_gis):
        out.update(_run_grads(module, run, dgi))
    return out
