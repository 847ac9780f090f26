"""pytest-benchmark suite for the two fused ops against the reference loops, the
published loop, torch._foreach_* and torch.compile.

    python -m pytest benchmarks/test_kernels.py --benchmark-only [--benchmark-json out.json]

Run it on a quiet machine; compare implementations only within one run.
"""

from __future__ import annotations

import pytest
import torch

from ssd_fast import _ops

from . import impls
from .workloads import make_workload

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
MODELS = ["resnet18", "vit_b16"]

pytestmark = pytest.mark.skipif(not _ops.has_kernel(DEVICE), reason="extension not built for this device")


@pytest.fixture(scope="module", params=MODELS)
def workload(request):
    return make_workload(request.param, DEVICE)


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("impl", list(impls.DAMPEN))
def test_select_dampen(benchmark, workload, impl):
    fn = impls.DAMPEN[impl]
    benchmark.group = f"select_dampen {workload.name}"

    def run():
        fn(workload.params, workload.forget, workload.full, 10.0, 1.0)
        _sync()

    def setup():
        workload.restore()
        _sync()

    benchmark.pedantic(run, setup=setup, rounds=10, warmup_rounds=1)


@pytest.mark.parametrize("impl", list(impls.ACCUMULATE))
def test_sq_accumulate(benchmark, workload, impl):
    fn = impls.ACCUMULATE[impl]
    imps = [torch.zeros_like(f) for f in workload.forget]
    benchmark.group = f"sq_accumulate {workload.name}"

    def run():
        fn(imps, workload.params)
        _sync()

    benchmark.pedantic(run, rounds=10, warmup_rounds=1)
