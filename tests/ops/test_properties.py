"""Property tests: both compiled ops against ssd_fast.reference on inputs hypothesis draws.

Random lists of tensors (empty, tails shorter than a vector, 2-D shapes), every parameter
dtype, alpha and lambda over orders of magnitude, and elements drawn with zeros, signed
zeros, denormals, infinities and NaNs in both the parameters and the importances. The
result must be the reference's bit for bit (any NaN equals any NaN) and the counts equal.
Example counts are small and the search is derandomized, so CI (2 cores) stays quick and
a failure reproduces.
"""

from __future__ import annotations

import math

import pytest
import torch

from ssd_fast import _ops

from ..conftest import DEVICES
from .test_ops import assert_kernel_is_reference, same_bits

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies
given, settings = hypothesis.given, hypothesis.settings

pytestmark = pytest.mark.skipif(not _ops.is_built(), reason=f"extension not built: {_ops.LOAD_ERROR}")

PROFILE = settings(max_examples=25, deadline=None, derandomize=True, database=None)
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
SPECIAL = [0.0, -0.0, 1e-45, 1e-40, -1e-40, 1.0, math.inf, -math.inf, math.nan]
IMPORTANCE_SPECIAL = [0.0, 1e-45, 1e-40, 1e-38, 1.0, math.inf, math.nan]

param_values = st.one_of(st.sampled_from(SPECIAL), st.floats(-1e4, 1e4, width=32))
importance_values = st.one_of(st.sampled_from(IMPORTANCE_SPECIAL), st.floats(0, 100, width=32))
shapes = st.one_of(
    st.integers(0, 70).map(lambda n: (n,)),
    st.tuples(st.integers(1, 6), st.integers(1, 9)),
)


@st.composite
def lists_of_tensors(draw, values, max_tensors: int = 4):
    """(shapes, [flat values per tensor]) for 1..max_tensors tensors."""
    drawn = draw(st.lists(shapes, min_size=1, max_size=max_tensors))
    flat = [draw(st.lists(values, min_size=math.prod(s), max_size=math.prod(s))) for s in drawn]
    return drawn, flat


@st.composite
def dampen_cases(draw):
    sizes, p_vals = draw(lists_of_tensors(param_values))
    f_vals = [draw(st.lists(importance_values, min_size=len(v), max_size=len(v))) for v in p_vals]
    d_vals = [draw(st.lists(importance_values, min_size=len(v), max_size=len(v))) for v in p_vals]
    alpha = draw(st.floats(1e-3, 1e3))
    lam = draw(st.one_of(st.just(0.0), st.floats(1e-3, 10.0)))
    dtype = draw(st.sampled_from(DTYPES))
    return sizes, p_vals, f_vals, d_vals, alpha, lam, dtype


def _tensors(sizes, values, dtype, device):
    return [torch.tensor(v, dtype=torch.float32).reshape(s).to(dtype).to(device) for s, v in zip(sizes, values)]


@pytest.mark.parametrize("device", DEVICES)
@PROFILE
@given(case=dampen_cases())
def test_select_dampen_is_the_reference(device, case):
    sizes, p_vals, f_vals, d_vals, alpha, lam, dtype = case
    params = _tensors(sizes, p_vals, dtype, device)
    forget = _tensors(sizes, f_vals, torch.float32, device)
    full = _tensors(sizes, d_vals, torch.float32, device)
    assert_kernel_is_reference(params, forget, full, alpha, lam)


@st.composite
def accumulate_cases(draw):
    sizes, g_vals = draw(lists_of_tensors(param_values))
    i_vals = [draw(st.lists(importance_values, min_size=len(v), max_size=len(v))) for v in g_vals]
    scale = draw(st.sampled_from([1.0, 0.25, 1 / 3, 1e-3, 7.0]))
    return sizes, g_vals, i_vals, scale, draw(st.booleans()), draw(st.sampled_from(DTYPES))


@pytest.mark.parametrize("device", DEVICES)
@PROFILE
@given(case=accumulate_cases())
def test_sq_accumulate_is_the_reference(device, case):
    sizes, g_vals, i_vals, scale, absolute, dtype = case
    grads = _tensors(sizes, g_vals, dtype, device)
    imps = _tensors(sizes, i_vals, torch.float32, device)
    # importance += scale * g^2 (or |g|), each step rounded in fp32, as the kernels do
    expected = [
        i.cpu() + (g.cpu().float().abs() if absolute else g.cpu().float().square()) * scale for i, g in zip(imps, grads)
    ]
    _ops.sq_accumulate_(imps, grads, scale, absolute)
    for got, want in zip(imps, expected):
        assert same_bits(got, want)
