// sq_accumulate_ on CUDA: importance += scale * g^2 (or |g|) over a whole gradient list
// in one multi-tensor pass. Multiply and add are rounded separately (no FMA contraction)
// so the result matches the reference's two torch ops bit for bit.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/constants.h"
#include "../common/list_checks.h"
#include "group_by_dtype.h"
#include "kernels/sq_accumulate.cuh"
#include "launch_multi_tensor.cuh"

namespace ssd_fast::cuda {
namespace {

void sq_accumulate_cuda(at::TensorList importances, at::TensorList grads, double scale, bool absolute) {
  check_sq_accumulate_args(importances, grads, scale);
  if (importances.empty()) return;
  const c10::cuda::CUDAGuard guard(importances[0].device());
  for (const auto& [dtype, index] : group_by_dtype(grads)) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "sq_accumulate_cuda", [&] {
      const SqAccumulateOp<scalar_t> op{static_cast<float>(scale), absolute};
      launch_multi_tensor<2>({pick(importances, index), pick(grads, index)}, index, kChunk, kThreads, op);
    });
  }
}

}  // namespace
}  // namespace ssd_fast::cuda

TORCH_LIBRARY_IMPL(ssd_fast, CUDA, m) { m.impl("sq_accumulate_", &ssd_fast::cuda::sq_accumulate_cuda); }
