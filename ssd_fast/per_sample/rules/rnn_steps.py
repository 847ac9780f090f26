"""One recurrent layer and direction, stepped in PyTorch with a hand-written backward.

The fused kernels hide the gate gradients that per-sample weight gradients need, and
autograd over a Python loop of cells costs several nodes per step. This function steps
the cell forward (saving its gates) and walks back through time by hand, so each step
costs a few tensor ops in each direction. Its backward hands (dgi, dgh, h_prev), all
[batch, time, gates], to a callback: dgi is the gradient of gi_t = W_ih x_t + b_ih and
dgh that of gh_t = W_hh h_{t-1} + b_hh (equal but for GRU's new gate, scaled by r).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _lstm_forward(gi, h, c, w_hh, b_hh):
    """Step the LSTM; returns (h per step incl. h0, c per step incl. c0, sigmoid(gates), tanh(cell input))."""
    size = h.shape[1]
    gib = (gi + b_hh if b_hh is not None else gi).transpose(0, 1).contiguous()  # time-major: each step contiguous
    w_t = w_hh.t()
    hs, cs, sigs, cands = [h], [c], [], []
    for t in range(gi.shape[1]):
        g = torch.addmm(gib[t], h, w_t)
        cand = torch.tanh(g[:, 2 * size : 3 * size])
        sig = g.sigmoid_()  # the input, forget and output gates (the cell slot, read above, is unused)
        c = torch.addcmul(sig[:, size : 2 * size] * c, sig[:, :size], cand)
        h = sig[:, 3 * size :] * torch.tanh(c)
        hs.append(h)
        cs.append(c)
        sigs.append(sig)
        cands.append(cand)
    return hs, cs, sigs, cands


def _lstm_backward(state, w_hh, d_out, dh, dc):
    """Back through time; the per-step factors are formed for all steps at once first (time-major)."""
    hs, cs, sigs, cands = state
    size = hs[0].shape[1]
    sig, cand = torch.stack(sigs), torch.stack(cands)
    c, c_prev = torch.stack(cs[1:]), torch.stack(cs[:-1])
    i, f, o = sig[..., :size], sig[..., size : 2 * size], sig[..., 3 * size :]
    tanh_c = torch.tanh(c)
    to_dc = o * (1 - tanh_c * tanh_c)  # dc += dh * to_dc
    from_dc = torch.stack([cand * i * (1 - i), c_prev * f * (1 - f), i * (1 - cand * cand)], 2)  # [T, B, 3, H]
    from_dh = tanh_c * o * (1 - o)
    f = f.contiguous()
    d_out = d_out.transpose(0, 1).contiguous() if d_out is not None else None  # time-major: each step's rows contiguous
    dgates = hs[0].new_empty(len(sigs), hs[0].shape[0], 4 * size)
    for t in range(len(sigs) - 1, -1, -1):
        if d_out is not None:
            dh = dh + d_out[t]
        dc = torch.addcmul(dc, dh, to_dc[t])
        d = dgates[t]
        torch.mul(from_dc[t], dc.unsqueeze(1), out=d[:, : 3 * size].view(-1, 3, size))
        d[:, 3 * size :].copy_(dh * from_dh[t])
        dc = dc * f[t]
        dh = d @ w_hh
    return dgates.transpose(0, 1), dh, dc


def _gru_forward(gi, h, w_hh, b_hh):
    hs, saved = [h], []
    size = h.shape[1]
    for gi_t in gi.transpose(0, 1).contiguous().unbind(0):  # time-major: each step contiguous
        gh = torch.addmm(b_hh, h, w_hh.t()) if b_hh is not None else h @ w_hh.t()
        rz = torch.sigmoid(gi_t[:, : 2 * size] + gh[:, : 2 * size])
        r, z = rz[:, :size], rz[:, size:]
        hn = gh[:, 2 * size :]
        n = torch.tanh(gi_t[:, 2 * size :] + r * hn)
        h = (1 - z) * n + z * h
        saved.append((r, z, n, hn))
        hs.append(h)
    return hs, saved


def _gru_backward(saved, hs, w_hh, d_out, dh):
    dgis, dghs = [None] * len(saved), [None] * len(saved)
    for t in range(len(saved) - 1, -1, -1):
        r, z, n, hn = saved[t]
        dh = dh + d_out[:, t] if d_out is not None else dh
        dn = dh * (1 - z) * (1 - n * n)
        dz = dh * (hs[t] - n) * z * (1 - z)
        dr = dn * hn * r * (1 - r)
        dgis[t] = torch.cat([dr, dz, dn], 1)
        dghs[t] = torch.cat([dr, dz, dn * r], 1)
        dh = dh * z + dghs[t] @ w_hh
    return torch.stack(dgis, 1), torch.stack(dghs, 1), dh


def _simple_forward(gi, h, w_hh, b_hh, relu: bool):
    hs = [h]
    for gi_t in gi.transpose(0, 1).contiguous().unbind(0):  # time-major: each step contiguous
        pre = gi_t + (torch.addmm(b_hh, h, w_hh.t()) if b_hh is not None else h @ w_hh.t())
        h = torch.relu(pre) if relu else torch.tanh(pre)
        hs.append(h)
    return hs


def _simple_backward(hs, w_hh, d_out, dh, relu: bool):
    dgates = [None] * (len(hs) - 1)
    for t in range(len(hs) - 2, -1, -1):
        dh = dh + d_out[:, t] if d_out is not None else dh
        h = hs[t + 1]
        d = dh * (h > 0).to(h.dtype) if relu else dh * (1 - h * h)
        dgates[t] = d
        dh = d @ w_hh
    return torch.stack(dgates, 1), dh


class StepRNN(torch.autograd.Function):
    """(gi [B, T, G], h0 [B, H], c0 or None) -> (outputs [B, T, H], h_n, c_n or None)."""

    @staticmethod
    def forward(ctx, gi, h0, c0, w_hh, b_hh, mode: str, on_grads: Callable):
        ctx.mode, ctx.on_grads = mode, on_grads
        ctx.w_hh = w_hh
        ctx.set_materialize_grads(False)
        c_n = None
        if mode == "LSTM":
            ctx.state = _lstm_forward(gi, h0, c0, w_hh, b_hh)
            hs, c_n = ctx.state[0], ctx.state[1][-1]
        elif mode == "GRU":
            hs, saved = _gru_forward(gi, h0, w_hh, b_hh)
            ctx.state = (hs, saved)
        else:
            hs = _simple_forward(gi, h0, w_hh, b_hh, mode == "RNN_RELU")
            ctx.state = (hs,)
        return torch.stack(hs[1:], 1), hs[-1], c_n

    @staticmethod
    def backward(ctx, d_out, d_hn, d_cn):
        hs = ctx.state[0]
        zeros = torch.zeros_like(hs[0])
        dh = d_hn if d_hn is not None else zeros
        dc0 = None
        if ctx.mode == "LSTM":
            dgi, dh0, dc0 = _lstm_backward(ctx.state, ctx.w_hh, d_out, dh, d_cn if d_cn is not None else zeros)
            dgh = dgi
        elif ctx.mode == "GRU":
            dgi, dgh, dh0 = _gru_backward(ctx.state[1], hs, ctx.w_hh, d_out, dh)
        else:
            dgi, dh0 = _simple_backward(hs, ctx.w_hh, d_out, dh, ctx.mode == "RNN_RELU")
            dgh = dgi
        ctx.on_grads(dgi, dgh, torch.stack(hs[:-1], 1))
        ctx.state = None
        return dgi, dh0, dc0, None, None, None, None
