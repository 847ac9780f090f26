"""ssd_fast.per_sample.coverage: what would fall back to vmap, before any data (or on one example)."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import ssd_fast
from ssd_fast.per_sample import coverage

from ..conftest import assert_unchanged, snapshot
from .support import Scale, TinyTransformer, per_sample, tiny_cnn


class Mixed(nn.Module):
    """A rule layer, a module with no rule (nn.MultiheadAttention), a bare scale, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.gamma = nn.Parameter(torch.linspace(0.5, 1.5, 4))
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        h = self.attn(h, h, h, need_weights=False)[0] * self.gamma
        return self.head(h.mean(1))


def test_lists_the_fallbacks_before_any_data() -> None:
    report = coverage(Mixed())
    assert not report.complete
    assert report.fallback_modules == ["attn (MultiheadAttention)"]
    assert [c.name for c in report.fallbacks] == ["attn.in_proj_weight"]
    text = str(report)
    assert "attn (MultiheadAttention): attn.in_proj_weight" in text and "1 under vmap" in text


def test_one_example_settles_what_only_the_forward_shows() -> None:
    """MultiheadAttention uses its in_proj_bias and out_proj itself, which only the forward shows."""
    report = coverage(Mixed(), torch.randn(2, 3, 4))
    assert report.fallback_modules == ["attn (MultiheadAttention)"]
    assert {c.name for c in report.fallbacks} == {
        "attn.in_proj_weight",
        "attn.in_proj_bias",
        "attn.out_proj.weight",
        "attn.out_proj.bias",
    }
    assert [c.name for c in report.scales] == ["gamma"]
    assert {c.name for c in report.rules} == {"proj.weight", "proj.bias", "head.weight", "head.bias"}


def test_every_parameter_is_reported_once() -> None:
    model = TinyTransformer()
    report = coverage(model)
    names = [c.name for group in (report.rules, report.bare, report.scales, report.fallbacks) for c in group]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert report.complete and {c.name for c in report.bare} == {"cls_token", "pos_embed"}


def test_the_example_gives_what_the_engine_will_warn_about() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), Scale(4), nn.Tanh(), nn.Linear(4, 3))
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    assert coverage(model).complete  # Scale's 1-d gain looks like a bare scale until its einsum is seen
    report = coverage(model, x[:2])
    assert report.fallback_modules == ["1 (Scale)"]
    with pytest.warns(RuntimeWarning) as record:
        per_sample(model, x, y)
    warned = re.findall(r"no exact rule for (.*?) for ", str(record[0].message))
    assert warned == report.fallback_modules


def test_the_example_leaves_the_model_as_it_was() -> None:
    model = tiny_cnn().train()
    before = snapshot(model)
    report = coverage(model, torch.randn(3, 3, 9, 9))
    assert report.complete
    assert_unchanged(model, before)  # no BatchNorm statistics updated: the check runs in eval mode
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())


def test_bad_arguments_are_refused_clearly() -> None:
    with pytest.raises(TypeError, match="needs an nn.Module, got dict"):
        coverage({"weight": torch.ones(3)})
    frozen = nn.Linear(3, 3).requires_grad_(False)
    with pytest.raises(ValueError, match="no parameters with requires_grad=True"):
        coverage(frozen)


def test_reachable_from_the_package() -> None:
    assert ssd_fast.per_sample.coverage is coverage
