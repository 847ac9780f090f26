"""The fused per-sample squared-gradient ops against an fp64 unfold + bmm reference.

per_sample_sq_conv2d_ and per_sample_sq_tokens_ add scale * sum_b f(g_b) to out, where g_b
is sample b's weight gradient and f squares it (or takes |.|, label-free). The reference
forms every g_b explicitly in float64.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssd_fast import _ops

from ..conftest import DEVICES

pytestmark = pytest.mark.skipif(
    not _ops.is_built() or not _ops.has_per_sample_kernel("cpu"), reason=f"extension not built: {_ops.LOAD_ERROR}"
)

RTOL = 2e-5  # relative to the largest entry: fp32 accumulation, against fp64


def conv_reference(dy, x, kernel, stride, padding, dilation, groups, absolute):
    b, c_out = dy.shape[:2]
    cols = F.unfold(x.double(), kernel, dilation=dilation, padding=padding, stride=stride)  # [B, C*k, L]
    length = cols.shape[-1]
    cols = cols.reshape(b * groups, -1, length).transpose(1, 2)
    g = torch.bmm(dy.double().reshape(b * groups, c_out // groups, length), cols).reshape(b, c_out, -1)
    power = g.abs() if absolute else g.square()
    return power.sum(0).reshape(c_out, x.shape[1] // groups, *kernel)


def tokens_reference(dy, x, absolute):
    g = torch.bmm(dy.double().transpose(1, 2), x.double())
    return (g.abs() if absolute else g.square()).sum(0)


def assert_close(got, want, rtol=RTOL):
    got, want = got.double().cpu(), want.double().cpu()
    scale = want.abs().max().clamp_min(1e-30)
    err = ((got - want).abs().max() / scale).item()
    assert err <= rtol, f"relative error {err:.2e}"


# (batch, in channels, height, width, out channels, kernel, stride, padding, dilation, groups)
CONV_CASES = {
    "one_position": (5, 4, 3, 3, 6, (3, 3), (1, 1), (0, 0), (1, 1), 1),  # L = 1
    "odd_tiles": (3, 67, 5, 4, 70, (1, 1), (1, 1), (0, 0), (1, 1), 1),  # K, O not multiples of a tile
    "wide_k": (2, 37, 6, 5, 9, (3, 3), (1, 1), (1, 1), (1, 1), 1),  # K = 333: several k tiles
    "many_outputs": (2, 3, 5, 5, 600, (2, 2), (1, 1), (0, 0), (1, 1), 1),  # O > 512: several o tiles
    "long_rows": (2, 3, 21, 19, 5, (3, 3), (1, 1), (1, 1), (1, 1), 1),  # L = 399: several l chunks
    "groups": (4, 6, 7, 6, 9, (3, 2), (2, 1), (1, 2), (2, 1), 3),
    "depthwise": (3, 5, 6, 7, 10, (3, 3), (1, 1), (1, 1), (1, 1), 5),
    "dilation_2": (3, 4, 9, 8, 5, (3, 3), (1, 1), (2, 2), (2, 2), 1),
    "stride_2": (3, 4, 9, 8, 5, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    "stride_3_pad_large": (2, 2, 5, 7, 3, (2, 3), (3, 2), (3, 4), (1, 2), 1),
    "height_1": (4, 3, 1, 11, 4, (1, 3), (1, 2), (0, 2), (1, 2), 1),  # Conv1d as Conv2d
    # output rows >= 16 wide: the CPU kernel copies runs of the input rows instead of gathering
    "wide_stride_2_dilated": (2, 3, 9, 40, 4, (3, 3), (2, 2), (2, 3), (2, 2), 1),
    "wide_padding_beyond_kernel": (2, 4, 5, 20, 6, (2, 5), (1, 1), (3, 6), (1, 1), 2),
    "wide_height_1": (3, 2, 1, 33, 3, (1, 4), (1, 1), (0, 1), (1, 3), 1),
    "batch_1": (1, 3, 5, 5, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    "batch_257": (257, 2, 4, 4, 3, (3, 3), (1, 1), (1, 1), (1, 1), 1),
}


def conv_case(name, device, dtype=torch.float32, seed=0):
    b, c, h, w, o, kernel, stride, padding, dilation, groups = CONV_CASES[name]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=g)
    weight = torch.randn(o, c // groups, *kernel, generator=g)
    out_shape = F.conv2d(x, weight, stride=stride, padding=padding, dilation=dilation, groups=groups).shape
    dy = torch.randn(out_shape, generator=g)
    x, dy = x.to(device=device, dtype=dtype), dy.to(device=device, dtype=dtype)
    return dy, x, weight.shape, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def run_conv(out, dy, x, geo, scale=1.0, absolute=False):
    _ops.per_sample_sq_conv2d_(
        out, dy, x, geo["stride"], geo["padding"], geo["dilation"], geo["groups"], scale, absolute
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("absolute", [False, True], ids=["squared", "label_free"])
@pytest.mark.parametrize("name", list(CONV_CASES))
def test_conv2d_matches_reference(name, absolute, device):
    dy, x, shape, geo = conv_case(name, device)
    start = torch.rand(shape, device=device)  # the op adds to what is there
    out = start.clone()
    run_conv(out, dy, x, geo, scale=0.5, absolute=absolute)
    want = start.double().cpu() + 0.5 * conv_reference(dy.cpu(), x.cpu(), shape[2:], absolute=absolute, **geo)
    assert_close(out, want)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64], ids=str)
def test_conv2d_low_and_high_precision_inputs(dtype, device):
    dy, x, shape, geo = conv_case("groups", device, dtype)
    out = torch.zeros(shape, device=device)
    run_conv(out, dy, x, geo)
    # the inputs' own values, exactly upcast: the op accumulates them in fp32
    assert_close(out, conv_reference(dy.cpu(), x.cpu(), shape[2:], absolute=False, **geo))


@pytest.mark.parametrize("device", DEVICES)
def test_conv2d_mixed_dtypes_and_strided_inputs(device):
    dy, x, shape, geo = conv_case("stride_2", device)
    dy_t = dy.transpose(2, 3).contiguous().transpose(2, 3)  # same values, non-contiguous
    x_t = x.to(torch.bfloat16).transpose(0, 1).contiguous().transpose(0, 1)
    out = torch.zeros(shape, device=device)
    run_conv(out, dy_t, x_t, geo)
    assert not dy_t.is_contiguous() and not x_t.is_contiguous()
    assert_close(out, conv_reference(dy.cpu(), x_t.cpu(), shape[2:], absolute=False, **geo))


# (batch, tokens, in features, out features)
TOKEN_CASES = {
    "one_token": (6, 1, 5, 7),
    "odd_tiles": (3, 9, 67, 70),
    "many_outputs": (2, 5, 20, 600),
    "long": (2, 300, 17, 5),
    "batch_1": (1, 4, 6, 5),
    "batch_257": (257, 3, 4, 5),
}


def tokens_case(name, device, dtype=torch.float32, seed=0):
    b, t, k, o = TOKEN_CASES[name]
    g = torch.Generator().manual_seed(seed)
    x, dy = torch.randn(b, t, k, generator=g), torch.randn(b, t, o, generator=g)
    return dy.to(device=device, dtype=dtype), x.to(device=device, dtype=dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("absolute", [False, True], ids=["squared", "label_free"])
@pytest.mark.parametrize("name", list(TOKEN_CASES))
def test_tokens_match_reference(name, absolute, device):
    dy, x = tokens_case(name, device)
    start = torch.rand(dy.shape[2], x.shape[2], device=device)
    out = start.clone()
    _ops.per_sample_sq_tokens_(out, dy, x, 2.0, absolute)
    assert_close(out, start.double().cpu() + 2.0 * tokens_reference(dy.cpu(), x.cpu(), absolute))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64], ids=str)
def test_tokens_low_and_high_precision_inputs(dtype, device):
    dy, x = tokens_case("odd_tiles", device, dtype)
    out = torch.zeros(dy.shape[2], x.shape[2], device=device)
    _ops.per_sample_sq_tokens_(out, dy, x, 1.0, False)
    assert_close(out, tokens_reference(dy.cpu(), x.cpu(), False))


@pytest.mark.parametrize("device", DEVICES)
def test_tokens_strided_inputs(device):
    dy, x = tokens_case("odd_tiles", device)
    dy_t = dy.transpose(0, 1).contiguous().transpose(0, 1)
    x_t = x[:, :, ::2]  # every other feature: stride 2 along k
    out = torch.zeros(dy.shape[2], x_t.shape[2], device=device)
    _ops.per_sample_sq_tokens_(out, dy_t, x_t, 1.0, False)
    assert_close(out, tokens_reference(dy.cpu(), x_t.cpu(), False))


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch_and_no_tokens_add_nothing(device):
    out = torch.rand(5, 4, device=device)
    before = out.clone()
    _ops.per_sample_sq_tokens_(
        out, torch.randn(0, 3, 5, device=device), torch.randn(0, 3, 4, device=device), 1.0, False
    )
    _ops.per_sample_sq_tokens_(
        out, torch.randn(2, 0, 5, device=device), torch.randn(2, 0, 4, device=device), 1.0, False
    )
    assert torch.equal(out, before)
    conv_out = torch.rand(4, 3, 3, 3, device=device)
    conv_before = conv_out.clone()
    dy, x = torch.randn(0, 4, 5, 5, device=device), torch.randn(0, 3, 5, 5, device=device)
    _ops.per_sample_sq_conv2d_(conv_out, dy, x, [1, 1], [1, 1], [1, 1], 1, 1.0, False)
    assert torch.equal(conv_out, conv_before)


@pytest.mark.parametrize("device", DEVICES)
def test_same_input_same_bits(device):
    dy, x, shape, geo = conv_case("wide_k", device)
    outs = []
    for threads in (1, 2, 1):
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            out = torch.zeros(shape, device=device)
            run_conv(out, dy, x, geo)
        finally:
            torch.set_num_threads(previous)
        outs.append(out.cpu())
    assert all(torch.equal(o.view(torch.int32), outs[0].view(torch.int32)) for o in outs)


def _conv_args(**change):
    args = dict(
        out=torch.zeros(4, 3, 3, 3),
        dy=torch.randn(2, 4, 5, 5),
        x=torch.randn(2, 3, 5, 5),
        stride=[1, 1],
        padding=[1, 1],
        dilation=[1, 1],
        groups=1,
        scale=1.0,
        absolute=False,
    )
    args.update(change)
    return args


BAD_CONV = {
    "out_float64": (dict(out=torch.zeros(4, 3, 3, 3, dtype=torch.float64)), "out must be float32"),
    "out_not_contiguous": (dict(out=torch.zeros(3, 4, 3, 3).transpose(0, 1)), "out must be contiguous"),
    "integer_x": (dict(x=torch.ones(2, 3, 5, 5, dtype=torch.int64)), "must be floating point"),
    "batch_mismatch": (dict(dy=torch.randn(3, 4, 5, 5)), "same batch size"),
    "spatial_mismatch": (dict(dy=torch.randn(2, 4, 4, 5)), "does not match"),
    "stride_0": (dict(stride=[0, 1]), "stride and dilation must be >= 1"),
    "negative_padding": (dict(padding=[-1, 1]), "padding must be >= 0"),
    "groups_not_dividing": (dict(groups=2), "groups"),
    "channels_mismatch": (dict(out=torch.zeros(4, 2, 3, 3)), "input channels per group"),
    "dy_channels": (dict(dy=torch.randn(2, 5, 5, 5)), "channels, out has"),
    "three_dims": (dict(x=torch.randn(2, 3, 5)), "expected x \\[B, C, H, W\\]"),
    "scale_nan": (dict(scale=float("nan")), "scale must be finite"),
}


@pytest.mark.parametrize("name", list(BAD_CONV))
def test_conv2d_bad_arguments_raise_and_leave_out_alone(name):
    change, message = BAD_CONV[name]
    args = _conv_args(**change)
    before = args["out"].clone()
    with pytest.raises(RuntimeError, match=message):
        torch.ops.ssd_fast.per_sample_sq_conv2d_(*args.values())
    assert torch.equal(args["out"], before)


BAD_TOKENS = {
    "out_shape": (torch.zeros(5, 3), torch.randn(2, 3, 5), torch.randn(2, 3, 4), "out must be \\[5, 4\\]"),
    "tokens_mismatch": (torch.zeros(5, 4), torch.randn(2, 3, 5), torch.randn(2, 2, 4), "agree on batch and tokens"),
    "two_dims": (torch.zeros(5, 4), torch.randn(2, 5), torch.randn(2, 4), "expected dy \\[B, T, O\\]"),
    "out_bf16": (torch.zeros(5, 4, dtype=torch.bfloat16), torch.randn(2, 3, 5), torch.randn(2, 3, 4), "float32"),
}


@pytest.mark.parametrize("name", list(BAD_TOKENS))
def test_tokens_bad_arguments_raise_and_leave_out_alone(name):
    out, dy, x, message = BAD_TOKENS[name]
    before = out.clone()
    with pytest.raises(RuntimeError, match=message):
        torch.ops.ssd_fast.per_sample_sq_tokens_(out, dy, x, 1.0, False)
    assert torch.equal(out, before)


def test_ops_pass_opcheck():
    dy, x, shape, geo = conv_case("groups", "cpu")
    torch.library.opcheck(
        torch.ops.ssd_fast.per_sample_sq_conv2d_.default,
        (
            torch.zeros(shape),
            dy,
            x,
            list(geo["stride"]),
            list(geo["padding"]),
            list(geo["dilation"]),
            geo["groups"],
            1.0,
            False,
        ),
    )
    dy, x = tokens_case("odd_tiles", "cpu")
    torch.library.opcheck(torch.ops.ssd_fast.per_sample_sq_tokens_.default, (torch.zeros(70, 67), dy, x, 1.0, True))
