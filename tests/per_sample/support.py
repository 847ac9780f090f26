"""Shared models and oracles for the per-sample tests (this file holds no tests).

The oracles are the two obvious ways to get (1/N) sum_i w_i g_i^2: a batch-size-1 loop
with autograd.grad, and torch.func vmap(grad) over the whole model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

import ssd_fast


def sample_loss(outputs: torch.Tensor, target: torch.Tensor | None, label_free: bool) -> torch.Tensor:
    if label_free:
        return outputs.flatten(1).square().sum()
    return F.cross_entropy(outputs, target)


def loop_oracle(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    *,
    label_free: bool = False,
    weight: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Batch size 1, one sample at a time: the definition, in float64."""
    model = model.double().eval()
    sums = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for i in range(len(x)):
        xi = x[i : i + 1].double() if x.is_floating_point() else x[i : i + 1]
        loss = sample_loss(model(xi), None if y is None else y[i : i + 1], label_free)
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        w = 1.0 if weight is None else float(weight[i])
        for n, g in zip(params, grads):
            if g is not None:
                sums[n] += w * (g.abs() if label_free else g.square())
    model.float()
    return {n: (s / len(x)).float() for n, s in sums.items()}


def vmap_oracle(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, *, label_free: bool = False
) -> dict[str, torch.Tensor]:
    """torch.func vmap(grad) over every parameter at once: the [B x params] baseline."""
    model.eval()
    params = {n: p.detach() for n, p in model.named_parameters()}

    def one(p, xi, yi):
        out = functional_call(model, p, (xi.unsqueeze(0),))
        return sample_loss(out, None if yi is None else yi.unsqueeze(0), label_free)

    grads = vmap(grad(one), in_dims=(None, 0, None if y is None else 0))(params, x, y)
    return {n: (g.abs() if label_free else g.square()).sum(0) / len(x) for n, g in grads.items()}


def per_sample(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, *, batch_size: int = 7, label_free: bool = False, **kw
) -> ssd_fast.Importances:
    data = [(x[i : i + batch_size], None if y is None else y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    unpack = kw.pop("unpack", None) or (lambda b: b)
    return ssd_fast.importance(
        model, data, mode="per_sample", label_free=label_free, unpack=unpack, progress=False, **kw
    )


def assert_close(got, want, rtol: float = 1e-5) -> None:
    """Every tensor within rtol of the largest value in that tensor (float rounding)."""
    assert set(got) == set(want)
    for name in want:
        scale = want[name].abs().max().clamp_min(1e-20)
        err = (got[name] - want[name]).abs().max() / scale
        assert err <= rtol, f"{name}: relative error {err:.2e}"


class Scale(nn.Module):
    """A module no built-in rule covers (a user's own layer): a learned elementwise scale.

    Written with einsum, which the built-in scale detection (x * p, x + p) does not follow,
    so that the parameter goes to the vmap fallback unless a test registers a rule.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.linspace(0.5, 1.5, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("...d,d->...d", x, self.gain)


class TinyTransformer(nn.Module):
    """Embedding, cls token, position embedding, one pre-norm attention block, head."""

    def __init__(self, vocab: int = 13, dim: int = 8, heads: int = 2, tokens: int = 5, classes: int = 3):
        super().__init__()
        self.heads = heads
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.5)
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)
        return self.proj(a.transpose(1, 2).reshape(b, t, d))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = x + self.attention(self.ln1(x))
        x = x + self.mlp(self.ln2(x))
        return self.head(self.norm(x)[:, 0])


def tiny_cnn() -> nn.Module:
    """BatchNorm (eval, non-trivial running stats), strides, padding, dilation, groups."""
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(inplace=True),
        nn.Conv2d(4, 6, 3, dilation=2, groups=2, padding=2, bias=False),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 6, (2, 3), stride=(1, 2), padding=(1, 0), groups=3),
        nn.Flatten(),
        nn.LazyLinear(3),
    )
    model(torch.zeros(1, 3, 9, 9))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_()
                m.bias.normal_()
    return model


def tiny_conv1d() -> nn.Module:
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv1d(3, 4, 3, stride=2, padding=2, dilation=2),
        nn.ReLU(),
        nn.Conv1d(4, 4, 2, groups=4, padding=1, padding_mode="circular"),
        nn.Flatten(),
        nn.LazyLinear(3),
    )
    model(torch.zeros(1, 3, 11))
    return model


def tiny_mlp() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
