"""nn.LSTM, nn.GRU and nn.RNN: exact per-sample gradients from the gates' gradients.

Every weight of a recurrent layer enters through two affine maps per time step,
gi_t = W_ih x_t + b_ih and gh_t = W_hh h_{t-1} + b_hh, so the per-sample gradients are
sums over time of outer products, as for a Linear over tokens:
dW_ih = sum_t dgi_t x_t^T, dW_hh = sum_t dgh_t h_{t-1}^T, db = sum_t dg_t.
The torch kernels (cuDNN, mkldnn) do not expose dgi and dgh, so the layer is re-run
in PyTorch, step by step, for a chunk of samples, and its output gradients (those of
the output sequence and of the final states) are pulled back to every gi and gh in one
autograd call. This is a call rule: it needs every input and output of the call, so it
runs after the backward pass, like the vmap fallback, a chunk of samples at a time.
PackedSequence inputs and LSTM projections (proj_size) are not covered and go to vmap.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _cell(mode: str, gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None):
    if mode == "LSTM":
        i, f, g, o = (gi + gh).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    if mode == "GRU":
        ir, iz, in_ = gi.chunk(3, dim=-1)
        hr, hz, hn = gh.chunk(3, dim=-1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        return (1 - z) * torch.tanh(in_ + r * hn) + z * h, None
    act = torch.tanh if mode == "RNN_TANH" else torch.relu
    return act(gi + gh), None


def _initial_states(module: nn.RNNBase, hx, x: torch.Tensor, s: slice):
    """(h0, c0) for samples s, as [layers * directions, chunk, hidden]; c0 is None but for LSTM."""
    if hx is None:
        h0 = x.new_zeros(module.num_layers * (2 if module.bidirectional else 1), x.shape[0], module.hidden_size)
        return h0, (h0 if module.mode == "LSTM" else None)
    h0, c0 = (hx[0], hx[1]) if module.mode == "LSTM" else (hx, None)
    return h0.detach().float()[:, s], (c0.detach().float()[:, s] if c0 is not None else None)


def _params(module: nn.RNNBase, suffix: str):
    get = lambda name: getattr(module, name).detach().float() if module.bias or "weight" in name else None  # noqa: E731
    return get(f"weight_ih{suffix}"), get(f"bias_ih{suffix}"), get(f"weight_hh{suffix}"), get(f"bias_hh{suffix}")


def _node(t: torch.Tensor) -> torch.Tensor:
    """t as a point of the graph that gradients can be asked for (the weights are detached)."""
    return t if t.requires_grad else t.requires_grad_()


def _run_direction(module: nn.RNNBase, seq: torch.Tensor, suffix: str, h: torch.Tensor, c: torch.Tensor | None):
    """One layer, one direction, step by step: (outputs [chunk, T, H], final h, final c, tap)."""
    w_ih, b_ih, w_hh, b_hh = _params(module, suffix)
    gi = _node(F.linear(seq, w_ih, b_ih))
    hs, ghs = [], []
    for t in range(seq.shape[1]):
        gh = _node(F.linear(h, w_hh, b_hh))
        hs.append(h)
        ghs.append(gh)
        h, c = _cell(module.mode, gi[:, t], gh, h, c)
    outputs = torch.stack(hs[1:] + [h], 1)
    return outputs, h, c, (suffix, gi, seq, ghs, hs)


def _cotangent(g: torch.Tensor, index: int, batch_first: bool, s: slice) -> torch.Tensor:
    g = g.float()
    if index == 0:  # the output sequence
        return (g if batch_first else g.transpose(0, 1))[s]
    return g[:, s]  # final states: [layers * directions, batch, hidden]


def rnn_call_grad_sample(module: nn.RNNBase, args: tuple, kwargs: dict, grads: dict[int, torch.Tensor], s: slice) -> dict[str, torch.Tensor]:
    """{parameter name: [chunk, *shape]} for samples s of one call, given its output gradients.

    `grads` maps the index of each output leaf (output, h_n[, c_n]) to its gradient.
    """
    x = args[0] if args else kwargs["input"]
    hx = args[1] if len(args) > 1 else kwargs.get("hx")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{type(module).__name__}: PackedSequence inputs are not covered by the rule")
    x = x.detach().float()
    x = (x if module.batch_first else x.transpose(0, 1))[s]
    h0, c0 = _initial_states(module, hx, x, s)
    directions = 2 if module.bidirectional else 1
    taps, h_n, c_n = [], [], []
    with torch.enable_grad():
        layer_in = x
        for layer in range(module.num_layers):
            outs = []
            for d in range(directions):
                k = layer * directions + d
                seq = layer_in.flip(1) if d else layer_in
                suffix = f"_l{layer}" + ("_reverse" if d else "")
                out, h, c, tap = _run_direction(module, seq, suffix, h0[k], c0[k] if c0 is not None else None)
                outs.append(out.flip(1) if d else out)
                taps.append(tap)
                h_n.append(h)
                c_n.append(c)
            layer_in = torch.cat(outs, dim=-1)
        results = [layer_in, torch.stack(h_n)] + ([torch.stack(c_n)] if module.mode == "LSTM" else [])
        pairs = [(out, _cotangent(grads[i], i, module.batch_first, s)) for i, out in enumerate(results) if i in grads]
        inputs = [tap[1] for tap in taps] + [gh for tap in taps for gh in tap[3]]
        if pairs:
            pulled = torch.autograd.grad([o for o, _ in pairs], inputs, [g for _, g in pairs], allow_unused=True)
        else:
            pulled = [None] * len(inputs)
    return _weight_grads(module, taps, list(pulled))


def _weight_grads(module: nn.RNNBase, taps: list, pulled: list) -> dict[str, torch.Tensor]:
    d_gi, d_gh = pulled[: len(taps)], iter(pulled[len(taps) :])
    out: dict[str, torch.Tensor] = {}
    for (suffix, gi, seq, ghs, hs), dgi in zip(taps, d_gi):
        dgi = torch.zeros_like(gi) if dgi is None else dgi
        dgh = torch.stack([g if g is not None else torch.zeros_like(gh) for g, gh in zip((next(d_gh) for _ in ghs), ghs)], 1)
        h_prev = torch.stack(hs, 1)
        out[f"weight_ih{suffix}"] = torch.bmm(dgi.transpose(1, 2), seq)
        out[f"weight_hh{suffix}"] = torch.bmm(dgh.transpose(1, 2), h_prev)
        if module.bias:
            out[f"bias_ih{suffix}"] = dgi.sum(1)
            out[f"bias_hh{suffix}"] = dgh.sum(1)
    return out


def rnn_supported(module: nn.Module) -> bool:
    return isinstance(module, nn.RNNBase) and getattr(module, "proj_size", 0) == 0 and module.mode in ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
