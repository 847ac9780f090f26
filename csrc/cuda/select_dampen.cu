// select_dampen_ on CUDA: one multi-tensor pass that reads each parameter, forget and
// full importance once, writes the parameter once, and counts the selected elements.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/constants.h"
#include "../common/list_checks.h"
#include "../common/ssd_math.h"
#include "../common/vec.h"
#include "group_by_dtype.h"
#include "multi_tensor.cuh"

namespace ssd_fast::cuda {
namespace {

template <typename scalar_t>
struct SelectDampenOp {
  float alpha;
  float lam;
  unsigned long long* selected;

  __device__ void operator()(const TensorListMeta<3>& meta, const Chunk& c) const {
    auto* p = static_cast<scalar_t*>(meta.ptr[0][c.slot]);
    const auto* f = static_cast<const float*>(meta.ptr[1][c.slot]);
    const auto* d = static_cast<const float*>(meta.ptr[2][c.slot]);
    unsigned count = 0;
    int64_t scalar_from = c.begin;
    if (meta.aligned[c.slot]) {
      // chunk starts are multiples of kVec, so every vector below is aligned
      const int64_t n_vec = (c.end - c.begin) / kVec;
      for (int64_t v = threadIdx.x; v < n_vec; v += blockDim.x) {
        const int64_t j = c.begin + v * kVec;
        const float4 fv = *reinterpret_cast<const float4*>(f + j);
        const float4 dv = *reinterpret_cast<const float4*>(d + j);
        Vec<scalar_t> pv = *reinterpret_cast<const Vec<scalar_t>*>(p + j);
        const float fs[kVec] = {fv.x, fv.y, fv.z, fv.w};
        const float ds[kVec] = {dv.x, dv.y, dv.z, dv.w};
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          const bool sel = is_selected(fs[k], ds[k], alpha);
          if (sel) pv.v[k] = dampened_value(pv.v[k], fs[k], ds[k], lam);
          count += sel;
        }
        *reinterpret_cast<Vec<scalar_t>*>(p + j) = pv;
      }
      scalar_from = c.begin + n_vec * kVec;
    }
    for (int64_t j = scalar_from + threadIdx.x; j < c.end; j += blockDim.x) {
      const bool sel = is_selected(f[j], d[j], alpha);
      if (sel) p[j] = dampened_value(p[j], f[j], d[j], lam);
      count += sel;
    }
    const unsigned total = block_sum(count);
    if (threadIdx.x == 0 && total != 0) atomicAdd(selected + meta.list_index[c.slot], static_cast<unsigned long long>(total));
  }
};

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
