"""When the conv and token-Linear rules use the fused per-sample ops of the compiled library.

The fused ops (`ssd_fast::per_sample_sq_conv2d_`, `ssd_fast::per_sample_sq_tokens_`) add
sum_b g_b**2 for a layer without ever forming the per-sample gradients g_b. The rules keep
their pure-PyTorch path (unfold + bmm in chunks) as the tested reference, and fall back to
it when the library has no kernel for the device.
"""

from __future__ import annotations

import torch

from .. import _ops

# Set to False to make every rule take its pure-PyTorch path (tests and benchmarks compare
# the two this way).
enabled = True

# The CUDA kernels compile, but have never run on a GPU: they stay off until
# `bash benchmarks/gpu_check.sh` (tests/per_sample/test_fused.py against the torch path,
# then the benchmark) has passed on an H100/H200. Until then CUDA uses the torch path.
CUDA_VERIFIED = False


def use_fused(out: torch.Tensor) -> bool:
    """True when a rule should call the fused op to add into the sums tensor `out`."""
    if not enabled or out.dtype != torch.float32 or not out.is_contiguous():
        return False
    if out.device.type == "cuda" and not CUDA_VERIFIED:
        return False
    return _ops.has_per_sample_kernel(out.device.type)
