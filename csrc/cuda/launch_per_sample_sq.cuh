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
#include "kernels/per_sample_sq.cuh"

namespace ssd_fast::cuda {

template <bool kDLFast, bool kXLFast, class DLoad, class XLoad>
void launch_per_sample_sq(const at::Tensor& out, const DLoad& d, const XLoad& x, const SqShape& s, double scale,
                          bool absolute) {
  const c10::cuda::CUDAGuard guard(out.device());
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, out.device().index()));
  const PerSampleSqPlan plan = plan_per_sample_sq(s, sms);
  if (plan.empty) return;
  SSD_FAST_CHECK(plan.error == nullptr, "%s", plan.error);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const dim3 grid(plan.grid[0], plan.grid[1], plan.grid[2]);
  const float scale32 = static_cast<float>(scale);
  if (plan.slices == 1) {
    per_sample_sq_kernel<kDLFast, kXLFast><<<grid, kSqThreads, 0, stream>>>(d, x, s, plan.per_slice, 1, absolute,
                                                                             scale32, out.data_ptr<float>(), false);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  const at::Tensor partial = at::empty({plan.workspace}, out.options());
  per_sample_sq_kernel<kDLFast, kXLFast><<<grid, kSqThreads, 0, stream>>>(
      d, x, s, plan.per_slice, plan.slices, absolute, scale32, partial.data_ptr<float>(), true);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  add_slices_kernel<<<plan.reduce_blocks, kSqThreads, 0, stream>>>(partial.data_ptr<float>(), plan.slices, out.numel(),
                                                                    scale32, out.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace ssd_fast::cuda
