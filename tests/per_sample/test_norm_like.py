"""Norm subclasses recognised by what they compute (rules/norm_like), without timm itself.

Each class below is written the way timm writes its own (test_timm runs the real ones):
a LayerNorm subclass with its own forward, a channels-first LayerNorm2d, a BatchNorm2d
that applies a dropout and an activation after normalising, a GroupNorm with an
activation. Each must get an exact rule (no vmap warning) and match the batch-size-1
loop. Subclasses that override forward with something else must not: they go to vmap,
named, and stay exact. The probe must leave the model as it was.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssd_fast.per_sample import coverage
from ssd_fast.per_sample.rules import rule_for

from ..conftest import assert_unchanged, snapshot
from .support import assert_close, loop_oracle, per_sample


class OwnLayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class LayerNorm2d(nn.LayerNorm):
    """Channels first: [B, C, H, W] normalised over C."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class BatchNormAct2d(nn.BatchNorm2d):
    def __init__(self, channels: int, act: nn.Module) -> None:
        super().__init__(channels)
        self.drop = nn.Dropout(0.5)  # identity in eval mode, as importance runs
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training, 0.1, self.eps)
        return self.act(self.drop(x))


class GroupNormAct(nn.GroupNorm):
    def __init__(self, groups: int, channels: int) -> None:
        super().__init__(groups, channels)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps))


# ---- subclasses that compute something else ----------------------------------------------------
class LayerNormWithoutBias(nn.LayerNorm):
    """Ignores its bias: with the bias at its init value 0 only random values would show it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, None, self.eps)


class ScaledBatchNorm(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2 + self.bias.view(1, -1, 1, 1)


class InPlaceLayerNorm2d(LayerNorm2d):
    """Right output, but it writes into its input, which the rule needs as it was."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        x.mul_(0.5)
        return out


def _randomise(model: nn.Module) -> nn.Module:
    """Non-trivial affine parameters and running statistics, so that a wrong formula shows."""
    torch.manual_seed(4)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
            for name, p in m.named_parameters(recurse=False):
                if p.dim() == 1:
                    p.normal_(1.0 if name == "weight" else 0.0, 0.4)
    return model.eval()


def conv_net(norm: nn.Module, channels: int = 6) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1), norm, nn.Conv2d(channels, 4, 3), nn.Flatten(), nn.LazyLinear(3)
    )


def token_net(norm: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Linear(5, 6), norm, nn.Tanh(), nn.Flatten(), nn.LazyLinear(3))


CASES = {
    "layer_norm_subclass": (lambda: token_net(OwnLayerNorm(6)), (4, 5)),
    "layer_norm_subclass_2d_shape": (lambda: token_net(OwnLayerNorm((4, 6))), (4, 5)),
    "layer_norm_2d_channels_first": (lambda: conv_net(LayerNorm2d(6)), (3, 5, 6)),
    "batch_norm_act": (lambda: conv_net(BatchNormAct2d(6, nn.ReLU(inplace=True))), (3, 5, 6)),
    "batch_norm_act_identity": (lambda: conv_net(BatchNormAct2d(6, nn.Identity())), (3, 5, 6)),
    "group_norm_act": (lambda: conv_net(GroupNormAct(3, 6)), (3, 5, 6)),
}


def _build(name: str) -> tuple[nn.Module, torch.Tensor]:
    make, shape = CASES[name]
    torch.manual_seed(0)
    model = make()
    model(torch.zeros(1, *shape))  # materialise the LazyLinear
    return _randomise(model), torch.randn(10, *shape)


@pytest.mark.parametrize("label_free", [False, True], ids=["squared", "label_free"])
@pytest.mark.parametrize("name", list(CASES))
def test_recognised_norms_are_exact_without_vmap(name: str, label_free: bool) -> None:
    model, x = _build(name)
    y = None if label_free else torch.randint(0, 3, (10,))
    assert coverage(model).complete
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = per_sample(model, x, y, batch_size=4, label_free=label_free)
    assert_close(got, loop_oracle(model, x, y, label_free=label_free))


IMPOSTORS = {
    "ignores_its_bias": (lambda: token_net(LayerNormWithoutBias(6)), (4, 5), "LayerNormWithoutBias"),
    "rescaled_output": (lambda: conv_net(ScaledBatchNorm(6)), (3, 5, 6), "ScaledBatchNorm"),
    "writes_into_its_input": (lambda: conv_net(InPlaceLayerNorm2d(6)), (3, 5, 6), "InPlaceLayerNorm2d"),
}


@pytest.mark.parametrize("name", list(IMPOSTORS))
def test_a_subclass_that_computes_something_else_goes_to_vmap(name: str) -> None:
    make, shape, cls = IMPOSTORS[name]
    torch.manual_seed(0)
    model = make()
    model(torch.zeros(1, *shape))
    model = _randomise(model)
    assert rule_for(model[1]) is None
    x, y = torch.randn(10, *shape), torch.randint(0, 3, (10,))
    # Before data its 1-d parameters look like bare scales; one example shows F.layer_norm etc. using them.
    assert coverage(model, x[:2]).fallback_modules == [f"1 ({cls})"]
    if name == "writes_into_its_input":
        return  # the plain model's own backward refuses it; only its refusal of the rule matters here
    with pytest.warns(RuntimeWarning, match=cls):
        got = per_sample(model, x, y, batch_size=4)
    assert_close(got, loop_oracle(model, x, y))


def test_the_probe_leaves_the_model_as_it_was() -> None:
    model, _ = _build("batch_norm_act")
    model.train()  # even in train mode, where a BatchNorm forward would update its statistics
    model[1].register_forward_hook(lambda m, a, o: pytest.fail("the probe must not call the module's hooks"))
    before = snapshot(model)
    modes = [m.training for m in model.modules()]
    params = [id(p) for p in model.parameters()]
    report = coverage(model)
    assert report.complete and {c.how for c in report.rules} == {"Conv2d", "BatchNormAct2d", "Linear"}
    assert_unchanged(model, before)
    assert [m.training for m in model.modules()] == modes
    assert [id(p) for p in model.parameters()] == params


def test_batch_norm_act_in_a_model_called_twice_falls_back_exactly() -> None:
    """Its output rule cannot give per-sample gradients per call, so a second call sends it to vmap."""
    torch.manual_seed(0)
    norm = BatchNormAct2d(3, nn.Tanh())
    model = _randomise(nn.Sequential(nn.Conv2d(3, 3, 1), norm, norm, nn.Flatten(), nn.Linear(3 * 4 * 4, 3)))
    x, y = torch.randn(8, 3, 4, 4), torch.randint(0, 3, (8,))
    with pytest.warns(RuntimeWarning, match="BatchNormAct2d"):
        got = per_sample(model, x, y, batch_size=4)
    assert_close(got, loop_oracle(model, x, y))
