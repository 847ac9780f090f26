"""The compiled ops against the reference, on awkward inputs, for every dtype and device."""

from __future__ import annotations

import pytest
import torch

from ssd_fast import _ops, reference

from ..conftest import DEVICES

pytestmark = pytest.mark.skipif(not _ops.is_built(), reason=f"extension not built: {_ops.LOAD_ERROR}")

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
# empty, single, below/above one vector, a non-multiple of the vector width and of a chunk
SIZES = [0, 1, 3, 4, 5, 17, 1023, 8193, 65537 + 3]


def make_case(sizes, dtype, device, seed=0):
    """Parameters, forget and full importances with every special case the rule has."""
    g = torch.Generator().manual_seed(seed)
    params, forget, full = [], [], []
    for n in sizes:
        p = torch.randn(n, generator=g)
        f = torch.rand(n, generator=g) * 2
        d = torch.rand(n, generator=g) * 0.4
        if n >= 8:
            d[:2] = 0.0  # d = 0, f > 0: selected and zeroed
            f[2] = 0.0  # f = 0: never selected
            d[3] = 1e-40  # denormal full importance
            f[4] = 5 * 1e-40  # denormal forget importance
            f[5] = 10.0 * d[5]  # exactly on the threshold for alpha=10: not selected (strict)
            p[6] = float("inf")
            p[7] = -0.0
        params.append(p.to(dtype).to(device))
        forget.append(f.to(device))
        full.append(d.to(device))
    return params, forget, full


def reference_result(params, forget, full, alpha, lam):
    out = [p.detach().cpu().clone() for p in params]
    counts = [reference.dampen_tensor_(p, f.cpu(), d.cpu(), alpha=alpha, lam=lam) for p, f, d in zip(out, forget, full)]
    return out, counts


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical, except that any NaN equals any NaN (inf * 0 has no canonical payload)."""
    a, b = a.detach().cpu(), b.detach().cpu()
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    nan = torch.isnan(a)
    if not torch.equal(nan, torch.isnan(b)):
        return False
    return torch.equal(a[~nan].view(-1).view(torch.uint8), b[~nan].view(-1).view(torch.uint8))


def assert_kernel_is_reference(params, forget, full, alpha, lam) -> list[int]:
    """Runs select_dampen_ in place and checks counts and bits against the reference; returns the counts."""
    expected, counts = reference_result(params, forget, full, alpha, lam)
    selected = torch.zeros(len(params), dtype=torch.int64, device=params[0].device)
    _ops.select_dampen_(params, forget, full, alpha, lam, selected)
    assert selected.tolist() == counts
    for got, want in zip(params, expected):
        assert same_bits(got, want)
    return counts


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha,lam", [(10.0, 1.0), (2.0, 0.1), (0.5, 0.0), (1.0, 5.0)])
def test_select_dampen_matches_reference(device, dtype, alpha, lam):
    params, forget, full = make_case(SIZES, dtype, device)
    counts = assert_kernel_is_reference(params, forget, full, alpha, lam)
    assert sum(counts) > 0  # the case must actually select something


@pytest.mark.parametrize("device", DEVICES)
def test_select_dampen_more_tensors_than_one_launch_holds(device):
    sizes = [(i * 37) % 300 for i in range(3 * 64 + 5)]  # includes empty tensors
    params, forget, full = make_case(sizes, torch.float32, device, seed=1)
    expected, counts = reference_result(params, forget, full, 3.0, 1.0)
    selected = torch.zeros(len(params), dtype=torch.int64, device=device)
    _ops.select_dampen_(params, forget, full, 3.0, 1.0, selected)
    assert selected.tolist() == counts
    assert all(same_bits(a, b) for a, b in zip(params, expected))


@pytest.mark.parametrize("device", DEVICES)
def test_select_dampen_mixed_dtypes_in_one_list(device):
    params, forget, full = make_case([33, 1000, 7], torch.float32, device)
    params = [params[0], params[1].to(torch.bfloat16), params[2].to(torch.float16)]
    expected, counts = reference_result(params, forget, full, 4.0, 1.0)
    selected = torch.zeros(3, dtype=torch.int64, device=device)
    _ops.select_dampen_(params, forget, full, 4.0, 1.0, selected)
    assert selected.tolist() == counts
    assert all(same_bits(a, b) for a, b in zip(params, expected))


@pytest.mark.parametrize("device", DEVICES)
def test_select_dampen_adds_to_existing_counts(device):
    params, forget, full = make_case([100], torch.float32, device)
    _, counts = reference_result(params, forget, full, 1.0, 1.0)
    selected = torch.full((1,), 7, dtype=torch.int64, device=device)
    _ops.select_dampen_(params, forget, full, 1.0, 1.0, selected)
    assert selected.item() == counts[0] + 7


@pytest.mark.parametrize("device", DEVICES)
def test_select_dampen_on_unaligned_views(device):
    # a view that starts one element in cannot take the vector path
    base, forget, full = make_case([4097], torch.float32, device)
    params = [base[0][1:]]
    forget, full = [forget[0][1:]], [full[0][1:]]
    expected, counts = reference_result(params, forget, full, 2.0, 1.0)
    selected = torch.zeros(1, dtype=torch.int64, device=device)
    _ops.select_dampen_(params, forget, full, 2.0, 1.0, selected)
    assert selected.tolist() == counts
    assert same_bits(params[0], expected[0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("absolute", [False, True])
def test_sq_accumulate_matches_reference(device, dtype, absolute):
    g = torch.Generator().manual_seed(3)
    grads = [(torch.randn(n, generator=g) * 3).to(dtype).to(device) for n in SIZES]
    imps = [torch.rand(n, generator=g).to(device) for n in SIZES]
    expected = [
        i.cpu() + (gr.cpu().float().abs() if absolute else gr.cpu().float().square()) for i, gr in zip(imps, grads)
    ]
    _ops.sq_accumulate_(imps, grads, 1.0, absolute)
    for got, want in zip(imps, expected):
        assert same_bits(got, want)


@pytest.mark.parametrize("device", DEVICES)
def test_sq_accumulate_scale(device):
    grads = [torch.randn(1001, device=device)]
    imps = [torch.zeros(1001, device=device)]
    _ops.sq_accumulate_(imps, grads, 0.25, False)
    torch.testing.assert_close(imps[0], 0.25 * grads[0].square(), rtol=1e-6, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_kernels_are_deterministic():
    runs = []
    for _ in range(3):
        params, forget, full = make_case(SIZES * 4, torch.float32, "cuda", seed=5)
        selected = torch.zeros(len(params), dtype=torch.int64, device="cuda")
        _ops.select_dampen_(params, forget, full, 2.0, 1.0, selected)
        runs.append((torch.cat(params).cpu(), selected.cpu()))
    assert all(torch.equal(r[0], runs[0][0]) and torch.equal(r[1], runs[0][1]) for r in runs)


@pytest.mark.parametrize(
    "bad,message",
    [
        (lambda p, f, d, s: (p, f[:-1], d, s), "same length"),
        (lambda p, f, d, s: (p, [t.double() for t in f], d, s), "float32"),
        (lambda p, f, d, s: (p, f, [t[:-1] for t in d], s), "mismatched shapes"),
        (lambda p, f, d, s: (p, f, d, s[:1]), "one entry per param"),
        (lambda p, f, d, s: ([t.int() for t in p], f, d, s), "unsupported dtype"),
    ],
)
def test_select_dampen_rejects_bad_arguments_without_writing(bad, message):
    params, forget, full = make_case([10, 20], torch.float32, "cpu")
    before = [p.clone() for p in params]
    selected = torch.zeros(2, dtype=torch.int64)
    args = bad(params, forget, full, selected)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.ssd_fast.select_dampen_(*args[:3], 2.0, 1.0, args[3])
    assert all(torch.equal(a, b) for a, b in zip(params, before))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p, f, d, s: torch.ops.ssd_fast.select_dampen_(p, f[:1], d, 2.0, 1.0, s), r"same length, got 2, 1, 2"),
        (
            lambda p, f, d, s: torch.ops.ssd_fast.select_dampen_(p, [t.double() for t in f], d, 2.0, 1.0, s),
            r"forget\[0\] Double",
        ),
        (
            lambda p, f, d, s: torch.ops.ssd_fast.select_dampen_(p, f, d, -1.0, 1.0, s),
            r"alpha must be finite and > 0, got -1",
        ),
        (lambda p, f, d, s: torch.ops.ssd_fast.select_dampen_(p, f, d, 2.0, 1.0, s[:1]), r"one entry per param \(2\)"),
        (lambda p, f, d, s: torch.ops.ssd_fast.sq_accumulate_(f, d[:1], 1.0, False), r"same length, got 2 and 1"),
        (
            lambda p, f, d, s: torch.ops.ssd_fast.sq_accumulate_([t.double() for t in f], d, 1.0, False),
            r"importances\[0\] must be float32",
        ),
    ],
)
def test_raw_op_errors_raise_with_their_numbers(device, call, message):
    """The checks whose messages carry numbers raise RuntimeError (they once crashed the
    process on the GPU machine's torch; csrc/common/check.h says why)."""
    params, forget, full = make_case([10, 20], torch.float32, device)
    before = [t.clone() for t in params + forget + full]
    selected = torch.zeros(2, dtype=torch.int64, device=device)
    with pytest.raises(RuntimeError, match=message):
        call(params, forget, full, selected)
    assert all(torch.equal(a, b) for a, b in zip(params + forget + full, before))


def test_select_dampen_rejects_non_contiguous():
    p = torch.randn(4, 6).t()
    f, d = torch.rand(6, 4), torch.rand(6, 4)
    with pytest.raises(RuntimeError, match="contiguous"):
        torch.ops.ssd_fast.select_dampen_([p], [f], [d], 2.0, 1.0, torch.zeros(1, dtype=torch.int64))


@pytest.mark.parametrize("device", DEVICES)
def test_ops_pass_opcheck(device):
    params, forget, full = make_case([5, 64, 300], torch.float32, device)
    selected = torch.zeros(3, dtype=torch.int64, device=device)
    torch.library.opcheck(torch.ops.ssd_fast.select_dampen_.default, (params, forget, full, 2.0, 1.0, selected))
    grads = [torch.randn(t.shape, device=device) for t in forget]
    imps = [torch.zeros(t.shape, device=device) for t in forget]
    torch.library.opcheck(torch.ops.ssd_fast.sq_accumulate_.default, (imps, grads, 1.0, False))


@pytest.mark.parametrize("device", DEVICES)
def test_ops_work_under_torch_compile_fullgraph(device):
    params, forget, full = make_case([5, 64, 300], torch.float32, device)
    expected, counts = reference_result(params, forget, full, 2.0, 1.0)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def step(ps, fs, ds, sel):
        torch.ops.ssd_fast.select_dampen_(ps, fs, ds, 2.0, 1.0, sel)

    selected = torch.zeros(3, dtype=torch.int64, device=device)
    step(params, forget, full, selected)
    assert selected.tolist() == counts
    assert all(same_bits(a, b) for a, b in zip(params, expected))
