"""Each per-layer rule against a batch-size-1 loop and vmap(grad), squared and label-free."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from .support import assert_close, loop_oracle, per_sample, vmap_oracle


def _check(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, *, label_free: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a covered layer must never fall back
        got = per_sample(model, x, y, label_free=label_free)
    assert got.mode == "per_sample" and got.n_samples == len(x)
    assert_close(got, loop_oracle(model, x, y, label_free=label_free))
    assert_close(got, vmap_oracle(model, x, y, label_free=label_free))


def _head(model: nn.Module, probe: torch.Tensor) -> nn.Module:
    """model followed by a flatten and a Linear to 3 classes, lazily sized."""
    torch.manual_seed(0)
    net = nn.Sequential(model, nn.Flatten(), nn.LazyLinear(3))
    net(probe)
    return net


LAYERS = {
    "linear_rows": (lambda: nn.Sequential(nn.Linear(6, 5), nn.Tanh()), (6,)),
    "linear_no_bias": (lambda: nn.Linear(6, 4, bias=False), (6,)),
    "linear_tokens": (lambda: nn.Sequential(nn.Linear(6, 5), nn.Tanh()), (4, 6)),
    "linear_tokens_4d": (lambda: nn.Linear(6, 5), (2, 3, 6)),
    "conv2d_stride_pad": (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1), (3, 7, 7)),
    "conv2d_dilation_groups": (lambda: nn.Conv2d(4, 6, (3, 2), dilation=(2, 1), groups=2, padding=(2, 1)), (4, 8, 7)),
    "conv2d_same_reflect": (lambda: nn.Conv2d(2, 3, 4, padding="same", padding_mode="reflect"), (2, 6, 6)),
    "conv2d_depthwise_circular": (
        lambda: nn.Conv2d(3, 6, 3, groups=3, padding=1, padding_mode="circular", stride=2),
        (3, 6, 5),
    ),
    "conv1d": (lambda: nn.Conv1d(3, 4, 3, stride=2, padding=2, dilation=2), (3, 11)),
    "conv1d_groups_same": (lambda: nn.Conv1d(4, 4, 4, groups=2, padding="same", bias=False), (4, 9)),
    "batchnorm1d": (lambda: nn.BatchNorm1d(5), (5,)),
    "batchnorm2d": (lambda: nn.BatchNorm2d(3), (3, 4, 4)),
    "layernorm": (lambda: nn.LayerNorm(6), (3, 6)),
    "layernorm_2d_shape": (lambda: nn.LayerNorm((3, 4)), (3, 4)),
    "groupnorm": (lambda: nn.GroupNorm(2, 4), (4, 3, 3)),
    "rmsnorm": (lambda: nn.RMSNorm(6), (3, 6)),
}


def _randomise_norm_stats(model: nn.Module) -> None:
    """Non-trivial affine parameters and running statistics, so every term matters."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)):
                for p in m.parameters():
                    p.normal_()


@pytest.mark.parametrize("label_free", [False, True], ids=["squared", "label_free"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_rule_matches_oracles(name: str, label_free: bool) -> None:
    make, shape = LAYERS[name]
    torch.manual_seed(0)
    x = torch.randn(12, *shape)
    model = _head(make(), x[:2])
    _randomise_norm_stats(model)
    y = torch.randint(0, 3, (12,))
    _check(model, x, y, label_free=label_free)


@pytest.mark.parametrize("label_free", [False, True], ids=["squared", "label_free"])
def test_embedding_rule_with_repeats_and_padding(label_free: bool) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(6, 4, padding_idx=1), nn.Flatten(), nn.Linear(5 * 4, 3))
    x = torch.randint(0, 6, (12, 5))
    x[0] = 2  # one sample repeats one index: its gradient sums before squaring
    y = torch.randint(0, 3, (12,))
    _check(model, x, y, label_free=label_free)


class _Tokens(nn.Module):
    """A bare cls token and position embedding, used directly in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, 4))
        self.pos = nn.Parameter(torch.randn(1, 4, 4))
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.head(torch.tanh(x).mean(1) * x[:, 0])


@pytest.mark.parametrize("label_free", [False, True], ids=["squared", "label_free"])
def test_bare_parameters(label_free: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(12, 3, 4)
    _check(_Tokens(), x, torch.randint(0, 3, (12,)), label_free=label_free)


def test_frozen_parameters_get_zero_and_others_stay_exact() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    model[0].bias.requires_grad_(False)
    x, y = torch.randn(9, 4), torch.randint(0, 3, (9,))
    got = per_sample(model, x, y)
    assert torch.count_nonzero(got["0.bias"]) == 0
    want = loop_oracle(model, x, y)
    assert_close({k: v for k, v in got.items() if k != "0.bias"}, {k: v for k, v in want.items() if k != "0.bias"})


def test_tiny_chunk_budget_gives_the_same_result() -> None:
    """Chunking over samples (down to one at a time) changes memory, not the result."""
    from ssd_fast.per_sample import PerSampleAccumulator

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, groups=1), nn.Flatten(1, 2), nn.Linear(5, 4), nn.Flatten(), nn.LazyLinear(3)
    )
    x, y = torch.randn(10, 2, 7, 7), torch.randint(0, 3, (10,))
    model(x).sum()
    params = dict(model.named_parameters())
    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    acc = PerSampleAccumulator(model.eval(), params, chunk_budget=1)
    with torch.enable_grad():
        acc(x, y, sums)
    acc.close()
    assert_close({n: s / 10 for n, s in sums.items()}, loop_oracle(model, x, y))
