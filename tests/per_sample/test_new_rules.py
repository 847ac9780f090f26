"""Rules added for transformers and recurrent models, on awkward shapes, against the loop oracle.

Each model is small and made to exercise one rule: transformers' Conv1D on 2-, 3- and
4-d inputs, RMSNorm classes recognised by what they compute, an embedding broadcast over
the batch, tied weights under a one-sample chunk budget, nn.LSTM/GRU/RNN in every
layout, and user rules added with register_rule.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import ssd_fast
from ssd_fast.per_sample import PerSampleAccumulator, coverage, register_rule, unregister_rule
from ssd_fast.per_sample.rules import rule_for

from ..conftest import assert_unchanged, snapshot
from .support import Scale, assert_close, loop_oracle, per_sample

transformers = pytest.importorskip("transformers")
from transformers.pytorch_utils import Conv1D  # noqa: E402


def _exact(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, *, label_free: bool, batch_size: int = 4) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # an exact rule: nothing goes to vmap
        got = per_sample(model, x, y, batch_size=batch_size, label_free=label_free)
    assert_close(got, loop_oracle(model, x, y, label_free=label_free))


class Head(nn.Module):
    """body, then a mean over every dim but the batch's last, then a Linear to 3 classes."""

    def __init__(self, body: nn.Module, width: int) -> None:
        super().__init__()
        self.body, self.head = body, nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.body(x))
        return self.head(h.reshape(h.shape[0], -1, h.shape[-1]).mean(1) if h.dim() > 2 else h)


LABEL_FREE = pytest.mark.parametrize("label_free", [False, True], ids=["squared", "label_free"])


@LABEL_FREE
@pytest.mark.parametrize("shape", [(5,), (3, 5), (2, 3, 5)], ids=["rows", "tokens", "4d"])
def test_transformers_conv1d(shape: tuple[int, ...], label_free: bool) -> None:
    torch.manual_seed(0)
    model = Head(Conv1D(6, 5), 6)
    nn.init.normal_(model.body.bias)
    x = torch.randn(10, *shape)
    _exact(model, x, None if label_free else torch.randint(0, 3, (10,)), label_free=label_free)


class LlamaStyleRMSNorm(nn.Module):
    """As transformers writes it: its own class, `variance_epsilon`, computed in float32."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dim))
        self.variance_epsilon = 1e-5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * h.to(x.dtype)


class OffsetRMSNorm(LlamaStyleRMSNorm):
    """Gemma's form: the scale is 1 + weight."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)) * (1.0 + self.weight)


class NotRMSNorm(LlamaStyleRMSNorm):
    """Looks like one (a weight and an epsilon) but subtracts the mean: it must not get the rule."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x - x.mean(-1, keepdim=True)
        return self.weight * h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)


@LABEL_FREE
@pytest.mark.parametrize("norm", [LlamaStyleRMSNorm, OffsetRMSNorm], ids=["llama", "gemma_offset"])
@pytest.mark.parametrize("shape", [(6,), (2, 3, 6)], ids=["rows", "4d"])
def test_rms_norm_classes_by_structure(norm: type, shape: tuple[int, ...], label_free: bool) -> None:
    torch.manual_seed(0)
    model = Head(norm(6), 6)
    x = torch.randn(10, *shape) * 3
    _exact(model, x, None if label_free else torch.randint(0, 3, (10,)), label_free=label_free)


def test_a_module_that_only_looks_like_rms_norm_gets_no_rms_rule() -> None:
    torch.manual_seed(0)
    model = Head(NotRMSNorm(6), 6)
    assert rule_for(model.body) is None
    # Its weight multiplies the normalised input, so the bare-scale detection covers it exactly instead.
    assert [p.name for p in coverage(model).scales] == ["body.weight"]
    x, y = torch.randn(10, 3, 6), torch.randint(0, 3, (10,))
    got = per_sample(model, x, y)
    assert_close(got, loop_oracle(model, x, y))


class PositionEmbedding(nn.Module):
    """Token embedding plus a position embedding looked up with [1, T] positions, as BERT does."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens, self.positions = nn.Embedding(7, 4), nn.Embedding(5, 4)
        self.head = nn.Linear(4, 3)
        self.register_buffer("ids", torch.arange(5).unsqueeze(0), persistent=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.tokens(idx) + self.positions(self.ids[:, : idx.shape[1]])
        return self.head(torch.tanh(h).mean(1))


@LABEL_FREE
def test_embedding_broadcast_over_the_batch(label_free: bool) -> None:
    torch.manual_seed(0)
    model, x = PositionEmbedding(), torch.randint(0, 7, (10, 4))
    _exact(model, x, None if label_free else torch.randint(0, 3, (10,)), label_free=label_free)


class TiedConv1D(nn.Module):
    """One Conv1D applied twice and an embedding tied to the output Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(6, 4)
        self.block = Conv1D(4, 4)
        self.out = nn.Linear(4, 6, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.block(torch.tanh(self.block(self.embed(idx)))))
        return self.out(h.mean(1))


@LABEL_FREE
@pytest.mark.parametrize("budget", [1, 1 << 20], ids=["one_sample_chunks", "one_chunk"])
def test_tied_and_reused_weights_sum_uses_in_bounded_chunks(budget: int, label_free: bool) -> None:
    torch.manual_seed(0)
    model = TiedConv1D().eval()
    x = torch.randint(0, 6, (9, 3))
    x[0] = 2  # repeats inside one sample
    y = None if label_free else torch.randint(0, 6, (9,))
    params = dict(model.named_parameters())
    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    acc = PerSampleAccumulator(model, params, label_free=label_free, chunk_budget=budget)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with torch.enable_grad():
            acc(x, y, sums)
    acc.close()
    assert {layer.name for layer in acc.plan.layers if layer.deferred} == {"embed", "block", "out"}
    assert_close({n: s / 9 for n, s in sums.items()}, loop_oracle(model, x, y, label_free=label_free))


class Recurrent(nn.Module):
    """An embedding, a recurrent layer, and a head on its output and final state."""

    def __init__(self, kind: type, *, use_state: bool, pass_state: bool, **kw) -> None:
        super().__init__()
        self.rnn = kind(4, 5, **kw)
        self.use_state, self.pass_state = use_state, pass_state
        dirs = 2 if kw.get("bidirectional") else 1
        self.layers = kw.get("num_layers", 1) * dirs
        self.h0 = nn.Linear(4, 5)  # the initial state is computed from the input: its gradient matters too
        self.head = nn.Linear(5 * dirs + (5 if use_state else 0), 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bf = self.rnn.batch_first
        seq = x if bf else x.transpose(0, 1)
        hx = None
        if self.pass_state:
            h0 = torch.tanh(self.h0(x.mean(1))).unsqueeze(0).expand(self.layers, -1, -1).contiguous()
            hx = (h0, torch.zeros_like(h0)) if isinstance(self.rnn, nn.LSTM) else h0
        out, state = self.rnn(seq, hx)
        last = out[:, -1] if bf else out[-1]
        if self.use_state:
            h_n = state[0] if isinstance(state, tuple) else state
            last = torch.cat([last, h_n[-1]], dim=1)
        return self.head(last)


RNNS = {
    "lstm": (nn.LSTM, dict(batch_first=True), False, False),
    "lstm_time_major_state": (nn.LSTM, dict(num_layers=2), True, True),
    "lstm_bidirectional_no_bias": (nn.LSTM, dict(batch_first=True, bidirectional=True, bias=False), True, False),
    "gru_two_layer_bidirectional": (nn.GRU, dict(batch_first=True, num_layers=2, bidirectional=True), True, True),
    "rnn_relu": (nn.RNN, dict(nonlinearity="relu"), False, True),
}


@LABEL_FREE
@pytest.mark.parametrize("name", list(RNNS))
def test_recurrent_layers(name: str, label_free: bool) -> None:
    kind, kw, use_state, pass_state = RNNS[name]
    torch.manual_seed(0)
    model = Recurrent(kind, use_state=use_state, pass_state=pass_state, **kw)
    x = torch.randn(10, 4, 4)  # T = 4 = the batch size: the call rule knows the layout, it does not guess it
    _exact(model, x, None if label_free else torch.randint(0, 3, (10,)), label_free=label_free)


def scale_rule(module, x, dy, out, *, absolute, budget):
    g = (dy * x).flatten(1, -2).sum(1) if x.dim() > 2 else dy * x  # [B, dim]
    out["gain"] += (g.abs() if absolute else g.square()).sum(0)


def scale_grad_sample(module, x, dy):
    return {"gain": (dy * x).flatten(1, -2).sum(1) if x.dim() > 2 else dy * x}


class TwiceScaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale, self.head = Scale(4), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.scale(torch.tanh(self.scale(x)))).mean(1))


@LABEL_FREE
@pytest.mark.parametrize("twice", [False, True], ids=["once", "called_twice"])
def test_register_rule(twice: bool, label_free: bool) -> None:
    torch.manual_seed(0)
    model = TwiceScaled() if twice else Head(Scale(4), 4)
    x, y = torch.randn(10, 3, 4), torch.randint(0, 3, (10,))
    y = None if label_free else y
    register_rule(Scale, scale_rule, grad_sample=scale_grad_sample if twice else None)
    try:
        _exact(model, x, y, label_free=label_free)
    finally:
        unregister_rule(Scale)
    with pytest.warns(RuntimeWarning, match="Scale"):  # without the rule: the vmap fallback, named
        per_sample(model, x, y, label_free=label_free)


def test_register_rule_refuses_bad_arguments() -> None:
    with pytest.raises(TypeError, match="nn.Module subclass"):
        register_rule(int, scale_rule)
    with pytest.raises(TypeError, match="rule must be callable"):
        register_rule(Scale, "not a rule")


class Branchy(nn.Module):
    """Data-dependent Python control flow, which torch.func.vmap cannot run."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.eye(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w if x.sum() > 0 else x @ self.w * 2


class MaskedModel(nn.Module):
    """Data-dependent code outside any parameterised module, a module with no rule, and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.scale, self.head = Scale(4), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x[:, 0] > 100).any()):  # never true here, but vmap over the whole model would refuse it
            x = x * 0
        return self.head(torch.tanh(self.scale(x)))


def test_fallback_runs_the_module_alone_not_the_whole_model() -> None:
    torch.manual_seed(0)
    model, x, y = MaskedModel(), torch.randn(10, 4), torch.randint(0, 3, (10,))
    with pytest.warns(RuntimeWarning, match=r"scale \(Scale\)"):
        got = per_sample(model, x, y)
    assert_close(got, loop_oracle(model, x, y))


def test_fallback_failure_names_the_module_and_the_remedy() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), Branchy(), nn.Linear(4, 3))
    before = snapshot(model)
    with pytest.raises(RuntimeError, match=r"1 \(Branchy\).*register_rule\(Branchy"), pytest.warns(RuntimeWarning):
        per_sample(model, torch.randn(6, 4), torch.randint(0, 3, (6,)))
    assert_unchanged(model, before)
    assert all(not m._forward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_recurrent_rule_is_batch_size_invariant() -> None:
    """The LSTM call rule also serves batch-size invariance: 1, 3 and 10 give the same result."""
    torch.manual_seed(0)
    model = Recurrent(nn.LSTM, use_state=True, pass_state=False, batch_first=True)
    x, y = torch.randn(10, 6, 4), torch.randint(0, 3, (10,))
    results = [per_sample(model, x, y, batch_size=b) for b in (1, 3, 10)]
    for r in results[1:]:
        assert_close(r, dict(results[0]))
    assert ssd_fast.importance(model, [(x, y)], mode="per_sample", progress=False).n_samples == 10


class TwoPassGRU(nn.Module):
    """One GRU run over the sequence and over its reverse: its per-sample gradient sums both calls."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.head = nn.GRU(4, 5, batch_first=True, num_layers=2), nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, _ = self.rnn(x)
        b, h = self.rnn(x.flip(1))
        return self.head(torch.cat([a[:, -1], h[-1]], dim=1))


@LABEL_FREE
def test_recurrent_layer_called_twice_sums_its_calls(label_free: bool) -> None:
    torch.manual_seed(0)
    model, x = TwoPassGRU(), torch.randn(10, 6, 4)
    params = dict(model.eval().named_parameters())
    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    y = None if label_free else torch.randint(0, 3, (10,))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        acc = PerSampleAccumulator(model, params, label_free=label_free, chunk_budget=1)
        with torch.enable_grad():
            acc(x, y, sums)
    acc.close()
    assert [u.name for u in acc.plan.units] == ["rnn"] and acc.plan.fallbacks == []
    assert_close({n: s / 10 for n, s in sums.items()}, loop_oracle(model, x, y, label_free=label_free))


class CalledTwice(nn.Module):
    """layer(tanh(layer(x))), then a mean over everything but the channels and a head."""

    def __init__(self, layer: nn.Module, channels: int, channel_dim: int) -> None:
        super().__init__()
        self.layer, self.head, self.channel_dim = layer, nn.Linear(channels, 3), channel_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.layer(torch.tanh(self.layer(x))))
        h = h.movedim(self.channel_dim, -1)
        return self.head(h.reshape(h.shape[0], -1, h.shape[-1]).mean(1))


TWICE = {
    "linear_tokens": (lambda: nn.Linear(6, 6), (3, 6), -1),
    "conv2d_groups": (lambda: nn.Conv2d(4, 4, 3, padding=1, groups=2), (4, 5, 5), 1),
    "conv1d_circular": (lambda: nn.Conv1d(3, 3, 3, padding=1, padding_mode="circular"), (3, 7), 1),
    "batchnorm2d": (lambda: nn.BatchNorm2d(3), (3, 4, 4), 1),
    "groupnorm": (lambda: nn.GroupNorm(2, 4), (4, 3, 3), 1),
    "layernorm": (lambda: nn.LayerNorm(6), (3, 6), -1),
    "rmsnorm": (lambda: nn.RMSNorm(6), (3, 6), -1),
    "conv1d_transformers": (lambda: Conv1D(6, 6), (3, 6), -1),
    "rms_like": (lambda: LlamaStyleRMSNorm(6), (3, 6), -1),
}


@LABEL_FREE
@pytest.mark.parametrize("name", list(TWICE))
def test_every_rule_serves_a_layer_called_twice(name: str, label_free: bool) -> None:
    make, shape, channel_dim = TWICE[name]
    torch.manual_seed(0)
    layer = make()
    with torch.no_grad():
        for m in layer.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
        for p in layer.parameters():
            p.normal_()
    channels = shape[0] if channel_dim == 1 else shape[-1]
    model = CalledTwice(layer, channels, channel_dim)
    x = torch.randn(9, *shape)
    _exact(model, x, None if label_free else torch.randint(0, 3, (9,)), label_free=label_free)
