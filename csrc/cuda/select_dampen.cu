// select_dampen_ on CUDA: one multi-tensor pass that reads each parameter, forget and
// full importance once, writes the parameter once, and counts the selected elements.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/constants.h"
#include "../common/list_checks.h"
#include "group_by_dtype.h"
#include "kernels/select_dampen.cuh"
#include "launch_multi_tensor.cuh"

namespace ssd_fast::cuda {
namespace {

void select_dampen_cuda(at::TensorList params, at::TensorList forget, at::TensorList full, double alpha,
                        double lam, const at::Tensor& selected) {
  check_select_dampen_args(params, forget, full, alpha, lam, selected);
  if (params.empty()) return;
  const c10::cuda::CUDAGuard guard(selected.device());
  auto* counts = reinterpret_cast<unsigned long long*>(selected.data_ptr<int64_t>());
  for (const auto& [dtype, index] : group_by_dtype(params)) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "select_dampen_cuda", [&] {
      const SelectDampenOp<scalar_t> op{static_cast<float>(alpha), static_cast<float>(lam), counts};
      launch_multi_tensor<3>({pick(params, index), pick(forget, index), pick(full, index)}, index, kChunk, kThreads, op);
    });
  }
}

}  // namespace
}  // namespace ssd_fast::cuda

TORCH_LIBRARY_IMPL(ssd_fast, CUDA, m) { m.impl("select_dampen_", &ssd_fast::cuda::select_dampen_cuda); }
