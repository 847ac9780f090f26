"""importance(..., precision=...) in both modes, against the fp64 batch-size-1 loop.

"bf16" runs the forward and backward passes under autocast; its error against fp64 is
the bf16 rounding of activations and gradients, so it is bounded loosely (about 2.5x the
largest error measured on these models, in two measures: the largest entry error of any
tensor, and the whole model's relative L2 error), and it must be visibly larger than fp32
rounding (else autocast did not run). The per-sample engine must add no error
of its own: at any batch size it matches a bf16 batch-size-1 loop to fp32 rounding, so
no sample's gradient mixes with another's.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import ssd_fast
from ssd_fast import _ops, reference

from ..conftest import DEVICES
from .support import loop_oracle, per_sample

EXACT_RTOL = 1e-4  # the bound for the default; fp32 rounding is far below it
# bf16, measured on these models (CPU): max-entry error up to 0.080 (CNN, batch mode at batch 5),
# 0.052 (CNN, per-sample), 0.008 (token MLP); whole-model L2 error up to 0.017 (CNN, batch mode).
BF16_RTOL = 0.2
BF16_L2_RTOL = 0.05
BF16_FLOOR = 5e-4  # bf16 rounding is at least this visible; fp32 rounding is ~1e-7
# Another batch size may run another CPU kernel (oneDNN picks by shape; CPUs with AVX512-BF16 or AMX
# have native bf16 ones), which can move a bf16 rounding of an activation or gradient by one ulp
# (2**-8 relative): 4 ulps bound that, while mixing samples changes the result by order 1.
BF16_ULPS_4 = 4 * 2**-8


class SmallCNN(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, groups=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(8 * 7 * 7, 10),
        )


class TokenMLP(nn.Module):
    """Linear layers over tokens ([B, T, d] inputs), mean-pooled to logits."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(6, 12)
        self.down = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.nn.functional.gelu(self.up(x))).mean(1)


def _case(name: str, n: int = 20):
    torch.manual_seed(0)
    if name == "cnn":
        model, x, classes = SmallCNN(), torch.randn(n, 3, 16, 16), 10
        with torch.no_grad():  # non-trivial running statistics
            model[1].running_mean.uniform_(-0.5, 0.5)
            model[1].running_var.uniform_(0.5, 2.0)
    else:
        model, x, classes = TokenMLP(), torch.randn(n, 5, 6), 4
    return model.eval(), x, torch.randint(0, classes, (n,))


def rel_err(got, want) -> float:
    """Largest over tensors of max |got - want| / max |want| (as support.assert_close)."""
    return max(float((got[k] - want[k]).abs().max() / want[k].abs().max().clamp_min(1e-20)) for k in want)


def _cpu(imp) -> dict[str, torch.Tensor]:
    return {k: v.cpu() for k, v in imp.items()}


def l2_err(got, want) -> float:
    """||got - want|| / ||want|| over every tensor of the model at once."""
    num = sum(float((got[k] - want[k]).double().square().sum()) for k in want)
    return (num / sum(float(want[k].double().square().sum()) for k in want)) ** 0.5


def assert_bf16_close(got, want, *, floor: float = BF16_FLOOR) -> None:
    got = _cpu(got)
    errors = rel_err(got, want), l2_err(got, want)
    assert floor <= errors[0] <= BF16_RTOL and errors[1] <= BF16_L2_RTOL, errors


def _batch_mode(model, x, y, batch_size, precision):
    data = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return ssd_fast.importance(model, data, mode="batch", precision=precision, progress=False)


def _batch_oracle(model, x, y, batch_size):
    """Batch mode in float64 (the published estimate's definition)."""
    m64 = copy.deepcopy(model).double()
    data = [(x[i : i + batch_size].double(), y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return {k: v.float() for k, v in reference.importance(m64, data).items()}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["cnn", "tokens"])
@pytest.mark.parametrize("label_free", [False, True], ids=["ce", "label_free"])
def test_per_sample_precisions_against_the_fp64_loop(name, label_free, device):
    model, x, y = _case(name)
    want = loop_oracle(model, x, None if label_free else y, label_free=label_free)  # on the CPU
    model = model.to(device)
    got = {}
    for precision in ("exact", "tf32", "bf16"):
        got[precision] = per_sample(model, x, None if label_free else y, label_free=label_free, precision=precision)
    assert [got[p].precision for p in got] == ["exact", "tf32" if device == "cuda" else "exact", "bf16"]
    assert rel_err(_cpu(got["exact"]), want) <= EXACT_RTOL
    if device == "cuda":  # TF32 tensor cores: an error no larger than bf16's
        assert_bf16_close(got["tf32"], want, floor=0.0)
    else:  # a CPU has no TF32: the same bits as exact
        assert all(torch.equal(got["tf32"][k], got["exact"][k]) for k in want)
    assert_bf16_close(got["bf16"], want)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["cnn", "tokens"])
def test_batch_mode_precisions_against_fp64(name, device):
    model, x, y = _case(name)
    want, want_1 = _batch_oracle(model, x, y, batch_size=5), loop_oracle(model, x, y)
    model = model.to(device)
    assert rel_err(_cpu(_batch_mode(model, x, y, 5, "exact")), want) <= EXACT_RTOL
    assert_bf16_close(_batch_mode(model, x, y, 5, "bf16"), want)
    # batch size 1: the batch-mode estimate is the per-sample one, so the fp64 loop is its oracle too
    assert_bf16_close(_batch_mode(model, x, y, 1, "bf16"), want_1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["cnn", "tokens"])
@pytest.mark.parametrize("batch_size", [7, 20])
def test_bf16_per_sample_mixes_no_samples(name, batch_size, device):
    """Whatever the batch, each sample's bf16 gradient is the one it has alone.

    On the dev VM's CPU (no native bf16) the kernels give each sample the same bits at any
    batch size (error ~1e-7), but a CPU with native bf16 kernels, or another oneDNN
    algorithm for another batch size, may move bf16 roundings by an ulp: bounded by 4 ulps.
    A GPU may pick another algorithm per batch size, which moves bf16 roundings further,
    so there the bound is bf16's (mixing samples would be far outside either)."""
    model, x, y = _case(name)
    model = model.to(device)
    alone = _cpu(per_sample(model, x, y, batch_size=1, precision="bf16"))
    together = _cpu(per_sample(model, x, y, batch_size=batch_size, precision="bf16"))
    assert rel_err(together, alone) <= (BF16_ULPS_4 if device == "cpu" else BF16_RTOL)


@pytest.mark.skipif(not _ops.has_per_sample_kernel("cpu"), reason=f"extension not built: {_ops.LOAD_ERROR}")
@pytest.mark.parametrize("name, op", [("cnn", "per_sample_sq_conv2d_"), ("tokens", "per_sample_sq_tokens_")])
def test_bf16_gradients_reach_the_fused_ops_as_bf16(name, op, monkeypatch):
    """The fused ops read the bf16 output gradients themselves (upcast in their layout pass)."""
    model, x, y = _case(name)
    seen = []
    real = getattr(_ops, op)
    monkeypatch.setattr(_ops, op, lambda out, dy, *rest: seen.append(dy.dtype) or real(out, dy, *rest))
    per_sample(model, x, y, precision="bf16")
    assert seen and set(seen) == {torch.bfloat16}
    seen.clear()
    per_sample(model, x, y, precision="exact")
    assert seen and set(seen) == {torch.float32}
