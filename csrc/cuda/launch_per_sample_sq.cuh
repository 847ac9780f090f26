// The ATen side of the per-sample engine (kernels/per_sample_sq.cuh): device guard,
// stream, workspace and launch checks around kernels/'s plan.
// UNVERIFIED on a GPU (see kernels/per_sample_sq.cuh).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../common/check.h"
#include "../common/per_sample_sq.h"
#include "kernels/per_sample_sq.cuh"
#include "kernels/per_sample_sq_mma.cuh"

namespace ssd_fast::cuda {

template <bool kDLFast, bool kXLFast, class Math, class DLoad, class XLoad>
void launch_per_sample_sq_math(const at::Tensor& out, const DLoad& d, const XLoad& x, const SqShape& s, double scale,
                               bool absolute, int sms) {
  const PerSampleSqPlan plan = plan_per_sample_sq(s, sms);
  if (plan.empty) return;
  SSD_FAST_CHECK(plan.error == nullptr, "%s", plan.error);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const dim3 grid(plan.grid[0], plan.grid[1], plan.grid[2]);
  const float scale32 = static_cast<float>(scale);
  const auto kernel = per_sample_sq_kernel<kDLFast, kXLFast, DLoad, XLoad, Math>;
  if (plan.slices == 1) {
    kernel<<<grid, kSqThreads, 0, stream>>>(d, x, s, plan.per_slice, 1, absolute, scale32, out.data_ptr<float>(),
                                            false);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  const at::Tensor partial = at::empty({plan.workspace}, out.options());
  kernel<<<grid, kSqThreads, 0, stream>>>(d, x, s, plan.per_slice, plan.slices, absolute, scale32,
                                          partial.data_ptr<float>(), true);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  add_slices_kernel<<<plan.reduce_blocks, kSqThreads, 0, stream>>>(partial.data_ptr<float>(), plan.slices, out.numel(),
                                                                    scale32, out.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The engine with the math `precision` asks for: fp32 FMAs ("exact"), or tensor cores
// (TF32 / bf16 operands, sm_80 or newer: older devices are refused with a clear error).
template <bool kDLFast, bool kXLFast, class DLoad, class XLoad>
void launch_per_sample_sq(const at::Tensor& out, const DLoad& d, const XLoad& x, const SqShape& s, double scale,
                          bool absolute, PerSamplePrecision precision) {
  const c10::cuda::CUDAGuard guard(out.device());
  int sms = 0, major = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, out.device().index()));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, out.device().index()));
  SSD_FAST_CHECK(precision == PerSamplePrecision::kExact || major >= 8,
                 "per-sample op: precision \"tf32\" or \"bf16\" needs tensor cores of compute capability 8.0 or "
                 "newer, this device is %d.x; use precision=\"exact\"",
                 major);
  switch (precision) {
    case PerSamplePrecision::kExact:
      launch_per_sample_sq_math<kDLFast, kXLFast, SqFmaMath>(out, d, x, s, scale, absolute, sms);
      break;
    case PerSamplePrecision::kTf32:
      launch_per_sample_sq_math<kDLFast, kXLFast, SqMmaMath<SqTensorCore::kTf32>>(out, d, x, s, scale, absolute, sms);
      break;
    case PerSamplePrecision::kBf16:
      launch_per_sample_sq_math<kDLFast, kXLFast, SqMmaMath<SqTensorCore::kBf16>>(out, d, x, s, scale, absolute, sms);
      break;
  }
}

}  // namespace ssd_fast::cuda
