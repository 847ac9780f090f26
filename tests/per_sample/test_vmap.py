"""The fallback confined to one module: modules without a rule, and uses a rule cannot see.

Shared weights that rules can see (a layer called twice, a weight tied between two
layers) need no fallback: their per-sample gradients are summed over the uses first.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from .support import Scale, assert_close, loop_oracle, per_sample


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))


class Tied(nn.Module):
    """An embedding whose weight is reused as the output layer."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, 4)
        self.mix = nn.Linear(4, 4)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return F.linear(torch.tanh(self.mix(self.embed(idx))).mean(1), self.embed.weight)


class Twice(nn.Module):
    """One Linear applied twice: its per-sample gradient sums both calls before squaring."""

    def __init__(self) -> None:
        super().__init__()
        self.step = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.step(torch.tanh(self.step(x)))))


class TimeMajor(nn.Module):
    """A Linear that sees [T, B, D]: its rows are not samples."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.proj(x.transpose(0, 1))).mean(0))


class RowVector(nn.Module):
    """A [1, D] parameter that is not broadcast over the batch: x @ w.T."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(1, 4))
        self.head = nn.Linear(1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x @ self.w.t())


CASES = {
    "custom_module": (
        lambda: nn.Sequential(nn.Linear(4, 4), Scale(4), nn.Tanh(), nn.Linear(4, 3)),
        lambda n: torch.randn(n, 4),
        "1 (Scale)",
    ),
    "multihead_attention": (Attention, lambda n: torch.randn(n, 3, 4), "attn"),
    "tied_weights": (Tied, lambda n: torch.randint(0, 5, (n, 3)), "embed"),
    "time_major_linear": (TimeMajor, lambda n: torch.randn(n, 3, 4), "proj"),
    "row_vector_parameter": (RowVector, lambda n: torch.randn(n, 4), "<model>"),
}


@pytest.mark.parametrize("label_free", [False, True], ids=["squared", "label_free"])
@pytest.mark.parametrize("name", list(CASES))
def test_fallback_is_exact_and_named(name: str, label_free: bool) -> None:
    make, inputs, module_name = CASES[name]
    torch.manual_seed(0)
    model = make()
    x = inputs(10)
    y = None if label_free else torch.randint(0, 3 if name != "tied_weights" else 5, (10,))
    with pytest.warns(RuntimeWarning, match=f"vmap.*|{module_name}") as record:
        got = per_sample(model, x, y, batch_size=4, label_free=label_free)
    assert any(module_name in str(w.message) for w in record), [str(w.message) for w in record]
    assert_close(got, loop_oracle(model, x, y, label_free=label_free))


def test_fallback_warns_once_per_module() -> None:
    torch.manual_seed(0)
    model = CASES["custom_module"][0]()
    x, y = torch.randn(12, 4), torch.randint(0, 3, (12,))
    with pytest.warns(RuntimeWarning) as record:
        per_sample(model, x, y, batch_size=3)
    assert sum("Scale" in str(w.message) for w in record) == 1


class TiedLayers(nn.Module):
    """An Embedding and a Linear holding one Parameter, as transformers ties lm_head to wte."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(6, 4, padding_idx=1)
        self.mix = nn.Linear(4, 4)
        self.out = nn.Linear(4, 6)
        self.out.weight = self.embed.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.mix(self.embed(idx))).mean(1))


EXACT = {
    "layer_called_twice": (Twice, lambda n: torch.randn(n, 4), 3),
    "tied_embedding_and_linear": (TiedLayers, lambda n: torch.randint(0, 6, (n, 3)), 6),
}


@pytest.mark.parametrize("label_free", [False, True], ids=["squared", "label_free"])
@pytest.mark.parametrize("name", list(EXACT))
def test_shared_weights_sum_their_uses_without_fallback(name: str, label_free: bool) -> None:
    make, inputs, classes = EXACT[name]
    torch.manual_seed(0)
    model = make()
    x = inputs(10)
    y = None if label_free else torch.randint(0, classes, (10,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # exact rules: no module goes to vmap
        got = per_sample(model, x, y, batch_size=4, label_free=label_free)
    assert_close(got, loop_oracle(model, x, y, label_free=label_free))
