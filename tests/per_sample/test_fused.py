"""The conv and token-Linear rules: the fused op against the chunked torch path.

The torch path (unfold + bmm + square, a chunk of samples at a time) is the reference;
both get the same module, input and output gradient. CUDA cases force the fused op on,
since it is off by default there until benchmarks/gpu_check.sh has passed on a GPU.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ssd_fast import _ops
from ssd_fast.per_sample import _fused
from ssd_fast.per_sample.rules.conv import conv_rule
from ssd_fast.per_sample.rules.linear import linear_rule

from ..conftest import DEVICES
from .support import assert_close, per_sample, tiny_cnn, tiny_conv1d

pytestmark = pytest.mark.skipif(not _ops.has_per_sample_kernel("cpu"), reason=f"extension not built: {_ops.LOAD_ERROR}")

MODULES = {
    "conv2d_stride_2": (lambda: nn.Conv2d(3, 5, 3, stride=2, padding=1), (3, 9, 8)),
    "conv2d_dilation_2": (lambda: nn.Conv2d(4, 6, 3, dilation=2, padding=2, bias=False), (4, 8, 9)),
    "conv2d_groups": (lambda: nn.Conv2d(6, 9, (3, 2), groups=3, padding=(1, 0), stride=(1, 2)), (6, 7, 7)),
    "conv2d_depthwise": (lambda: nn.Conv2d(5, 5, 3, groups=5, padding=1), (5, 6, 6)),
    "conv2d_same_reflect": (lambda: nn.Conv2d(2, 3, 4, padding="same", padding_mode="reflect"), (2, 6, 6)),
    "conv2d_circular": (lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular", stride=2), (3, 6, 5)),
    "conv2d_replicate": (lambda: nn.Conv2d(3, 4, 3, padding=2, padding_mode="replicate"), (3, 5, 5)),
    "conv2d_one_position": (lambda: nn.Conv2d(4, 70, 3), (4, 3, 3)),
    "conv2d_odd_tiles": (lambda: nn.Conv2d(67, 70, 1), (67, 3, 2)),
    "conv2d_wide_rows": (lambda: nn.Conv2d(3, 5, 3, stride=2, padding=2, dilation=2), (3, 5, 40)),
    "conv2d_wide_reflect": (lambda: nn.Conv2d(2, 3, (2, 5), padding="same", padding_mode="reflect"), (2, 3, 24)),
    "conv1d": (lambda: nn.Conv1d(3, 4, 3, stride=2, padding=2, dilation=2), (3, 11)),
    "conv1d_wide": (lambda: nn.Conv1d(3, 4, 5, padding=3), (3, 30)),
    "conv1d_groups_same": (lambda: nn.Conv1d(4, 4, 4, groups=2, padding="same", bias=False), (4, 9)),
    "conv1d_circular_depthwise": (lambda: nn.Conv1d(4, 4, 2, groups=4, padding=1, padding_mode="circular"), (4, 7)),
    "linear_one_token": (lambda: nn.Linear(6, 5), (1, 6)),
    "linear_tokens": (lambda: nn.Linear(67, 70), (9, 67)),
    "linear_tokens_4d": (lambda: nn.Linear(6, 5), (2, 3, 6)),
}


def _rule_sums(module, x, dy, *, fused: bool, absolute: bool, monkeypatch) -> dict[str, torch.Tensor]:
    monkeypatch.setattr(_fused, "enabled", fused)
    monkeypatch.setattr(_fused, "CUDA_VERIFIED", True)
    op = "per_sample_sq_tokens_" if isinstance(module, nn.Linear) else "per_sample_sq_conv2d_"
    calls = []
    real = getattr(_ops, op)
    monkeypatch.setattr(_ops, op, lambda *args: calls.append(1) or real(*args))
    out = {name: torch.zeros(p.shape, device=p.device) for name, p in module.named_parameters()}
    rule = linear_rule if isinstance(module, nn.Linear) else conv_rule
    rule(module, x, dy, out, absolute=absolute, budget=1 << 12)  # a small budget: several torch chunks
    assert len(calls) == int(fused)  # the path asked for is the path taken
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch", [1, 7, 257])
@pytest.mark.parametrize("absolute", [False, True], ids=["squared", "label_free"])
@pytest.mark.parametrize("name", list(MODULES))
def test_rule_fused_matches_torch_path(name, absolute, batch, device, monkeypatch):
    make, shape = MODULES[name]
    torch.manual_seed(0)
    module = make().to(device)
    x = torch.randn(batch, *shape, device=device)
    dy = torch.randn_like(module(x))
    want = _rule_sums(module, x, dy, fused=False, absolute=absolute, monkeypatch=monkeypatch)
    got = _rule_sums(module, x, dy, fused=True, absolute=absolute, monkeypatch=monkeypatch)
    assert_close(got, want, rtol=2e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["conv2d_groups", "conv1d", "linear_tokens"])
def test_rule_non_contiguous_and_bf16_gradients(name, device, monkeypatch):
    make, shape = MODULES[name]
    torch.manual_seed(0)
    module = make().to(device)
    x = torch.randn(5, *shape, device=device)
    dy = torch.randn_like(module(x))
    dy_t = dy.transpose(0, -1).contiguous().transpose(0, -1)  # same values, other strides
    want = _rule_sums(module, x, dy, fused=False, absolute=False, monkeypatch=monkeypatch)
    got = _rule_sums(module, x, dy_t, fused=True, absolute=False, monkeypatch=monkeypatch)
    assert not dy_t.is_contiguous()
    assert_close(got, want, rtol=2e-5)
    # bf16 inputs: both paths see the same bf16 values and accumulate them in fp32
    x16, dy16 = x.bfloat16(), dy.bfloat16()
    want = _rule_sums(module, x16, dy16, fused=False, absolute=False, monkeypatch=monkeypatch)
    got = _rule_sums(module, x16, dy16, fused=True, absolute=False, monkeypatch=monkeypatch)
    assert_close(got, want, rtol=2e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("label_free", [False, True], ids=["squared", "label_free"])
@pytest.mark.parametrize("make,shape", [(tiny_cnn, (3, 9, 9)), (tiny_conv1d, (3, 11))], ids=["cnn", "conv1d"])
def test_importance_same_with_and_without_fused_ops(make, shape, label_free, device, monkeypatch):
    model = make().to(device)
    torch.manual_seed(0)
    x, y = torch.randn(13, *shape, device=device), torch.randint(0, 3, (13,), device=device)
    monkeypatch.setattr(_fused, "CUDA_VERIFIED", True)
    monkeypatch.setattr(_fused, "enabled", False)
    want = per_sample(model, x, y, label_free=label_free)
    monkeypatch.setattr(_fused, "enabled", True)
    got = per_sample(model, x, y, label_free=label_free)
    assert_close(dict(got.items()), dict(want.items()), rtol=2e-5)


def test_cuda_stays_on_the_torch_path_until_verified():
    sums = torch.zeros(3, 3)
    assert _fused.use_fused(sums) == _fused.enabled  # CPU: on whenever the kernel is built
    assert not _fused.CUDA_VERIFIED
    if torch.cuda.is_available():
        assert not _fused.use_fused(sums.cuda())


def test_sums_that_the_op_cannot_take_use_the_torch_path():
    assert not _fused.use_fused(torch.zeros(3, 3, dtype=torch.float64))
    assert not _fused.use_fused(torch.zeros(3, 4).t())
