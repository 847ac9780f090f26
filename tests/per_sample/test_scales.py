"""Bare scale and shift parameters (per_sample/_scales): gamma in a block that does much else.

ConvNeXt's block multiplies by `self.gamma.reshape(1, -1, 1, 1)` in the middle of its own
forward; LayerScale returns `x * self.gamma`. Such parameters are followed op by op, and
each use x * p / x + p / x - p gives its per-sample gradient. Checked against the
batch-size-1 loop: every form of the op, a scalar, a parameter used twice (summed before
squaring, with the right signs), and uses the detection must refuse (another op, a use
broadcast over the batch), which go to vmap, named, and stay exact.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssd_fast.per_sample import coverage

from .support import assert_close, loop_oracle, per_sample

LABEL_FREE = pytest.mark.parametrize("label_free", [False, True], ids=["squared", "label_free"])


class Block(nn.Module):
    """A ConvNeXt-style block: depthwise conv, norm, MLP, then its own gamma, then a residual."""

    def __init__(self, dim: int = 6, form: str = "reshape") -> None:
        super().__init__()
        self.form = form
        self.conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, dim)
        self.gamma = nn.Parameter(torch.linspace(-1.0, 1.5, dim))

    def scaled(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gamma
        if self.form == "reshape":
            return x.mul(g.reshape(1, -1, 1, 1))
        if self.form == "index":
            return g[:, None, None] * x
        if self.form == "torch_mul":
            return torch.mul(x, g.view(-1, 1, 1))
        if self.form == "shift":
            return x + g.unsqueeze(-1).unsqueeze(-1)
        if self.form == "reversed_shift":
            return g.reshape(-1, 1, 1) - x
        if self.form == "twice":  # two uses: their per-sample gradients add before squaring
            return x * g.reshape(1, -1, 1, 1) - g.reshape(-1, 1, 1)
        raise ValueError(self.form)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(self.norm(self.conv(x).permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        return x + self.scaled(torch.tanh(h))


class Temperature(nn.Module):
    """A learned scalar, as CLIP's logit scale."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(5, 3)
        self.t = nn.Parameter(torch.tensor(1.7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) * self.t.float()


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.linspace(0.2, 1.2, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2's GRN: x + addcmul(bias, weight, x * n(x)), two watched parameters in one op."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(-0.5, 1.0, dim))
        self.bias = nn.Parameter(torch.linspace(0.3, -0.3, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = x.norm(p=2, dim=(1, 2), keepdim=True)
        n = g / (g.mean(dim=-1, keepdim=True) + 1e-6)
        return x + torch.addcmul(self.bias.view(1, 1, 1, -1), self.weight.view(1, 1, 1, -1), x * n, value=0.5)


def grn_model() -> nn.Module:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.grn, self.head = nn.Conv2d(3, 5, 1), GlobalResponseNorm(5), nn.Linear(5 * 16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.grn(self.conv(x).permute(0, 2, 3, 1)).flatten(1))

    return Net()


def conv_model(form: str) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 6, 1), Block(6, form), nn.Flatten(), nn.Linear(6 * 4 * 4, 3))


MODELS = {
    **{form: (lambda form=form: conv_model(form), (3, 4, 4)) for form in ("reshape", "index", "torch_mul")},
    **{form: (lambda form=form: conv_model(form), (3, 4, 4)) for form in ("shift", "reversed_shift", "twice")},
    "scalar": (Temperature, (5,)),
    "addcmul_scale_and_shift": (grn_model, (3, 4, 4)),
    "layer_scale_tokens": (
        lambda: nn.Sequential(nn.Linear(5, 4), LayerScale(4), nn.Flatten(), nn.Linear(12, 3)),
        (3, 5),
    ),
    "layer_scale_shared": (
        lambda: (lambda s: nn.Sequential(nn.Linear(5, 4), s, nn.Tanh(), s, nn.Flatten(), nn.Linear(12, 3)))(
            LayerScale(4)
        ),
        (3, 5),
    ),
}


@LABEL_FREE
@pytest.mark.parametrize("name", list(MODELS))
def test_scales_are_exact_without_vmap(name: str, label_free: bool) -> None:
    make, shape = MODELS[name]
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(10, *shape)
    y = None if label_free else torch.randint(0, 3, (10,))
    report = coverage(model, x[:2])
    assert report.complete and len(report.scales) == (2 if name.startswith("addcmul") else 1), str(report)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = per_sample(model, x, y, batch_size=4, label_free=label_free)
    assert_close(got, loop_oracle(model, x, y, label_free=label_free))


class Gated(nn.Module):
    """gamma goes through sigmoid first: not a bare scale."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(5, 4)
        self.gamma = nn.Parameter(torch.linspace(-1.0, 1.0, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) * torch.sigmoid(self.gamma)


class WithoutTheBatch(nn.Module):
    """w times a tensor that does not hold the batch: no per-sample factor to tap."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(5, 3)
        self.w = nn.Parameter(torch.linspace(0.5, 1.5, 3))
        self.register_buffer("k", torch.tensor([1.0, -2.0, 0.5]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) * (self.w * self.k).sum()


class InPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(5, 3)
        self.w = nn.Parameter(torch.linspace(0.5, 1.5, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mul_(self.w)


REFUSED = {
    "gated": (Gated, "sigmoid"),
    "without_the_batch": (WithoutTheBatch, "mul"),
    "in_place": (InPlace, "mul_"),
    "functional_op": (lambda: nn.Sequential(nn.Linear(5, 3), nn.PReLU(3)), "prelu"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_other_uses_go_to_vmap_named_with_the_op(name: str) -> None:
    make, op = REFUSED[name]
    torch.manual_seed(0)
    model = make().eval()
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    assert coverage(model).complete  # before data it looks like a bare scale...
    assert not coverage(model, x[:4]).complete  # ...one example shows it is not
    with pytest.warns(RuntimeWarning, match=rf"it is used in {op}"):
        got = per_sample(model, x, y, batch_size=4)
    assert_close(got, loop_oracle(model, x, y))


def test_a_scale_used_after_its_factor_changed_in_place_is_refused() -> None:
    class Later(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.w = nn.Linear(5, 3), nn.Parameter(torch.ones(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.exp(self.body(x))
            out = h * self.w
            h.mul_(2)  # changes the factor the scale's per-sample gradient needs (exp saves its output too)
            return out

    model = Later().eval()
    with pytest.raises(RuntimeError, match="modified"):
        per_sample(model, torch.randn(4, 5), torch.randint(0, 3, (4,)))


def test_sign_of_a_shift_matters_when_uses_add_up() -> None:
    """x - p and x + p on one sample cancel exactly: the importance of p must be 0."""

    class Cancel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.p = nn.Linear(5, 3), nn.Parameter(torch.zeros(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.body(x)
            return F.relu((h + self.p) - self.p.reshape(1, 3))

    model = Cancel().eval()
    x, y = torch.randn(6, 5), torch.randint(0, 3, (6,))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = per_sample(model, x, y)
    assert got["p"].abs().max() < 1e-12  # adding the squares instead would give 2 * dy^2
    assert got["body.weight"].abs().max() > 1e-4
