// sq_accumulate_'s device code: importance += scale * g^2 (or |g|) over a whole gradient
// list in one multi-tensor pass. Multiply and add are rounded separately (no FMA
// contraction) so the result matches the reference's two torch ops bit for bit.
#pragma once

#include <cstdint>

#include "../../common/constants.h"
#include "../../common/ssd_math.h"
#include "../../common/vec.h"
#include "device_api.h"
#include "multi_tensor.cuh"

namespace ssd_fast::cuda {

// Lists: 0 importances (fp32, updated), 1 gradients (grad_t).
template <typename grad_t>
struct SqAccumulateOp {
  float scale;
  bool absolute;

  __device__ float term(grad_t g) const { return __fmul_rn(scale, squared_or_abs(g, absolute)); }

  __device__ void operator()(const TensorListMeta<2>& meta, const Chunk& c) const {
    auto* imp = static_cast<float*>(meta.ptr[0][c.slot]);
    const auto* g = static_cast<const grad_t*>(meta.ptr[1][c.slot]);
    int64_t scalar_from = c.begin;
    if (meta.aligned[c.slot]) {
      const int64_t n_vec = (c.end - c.begin) / kVec;
      for (int64_t v = threadIdx.x; v < n_vec; v += blockDim.x) {
        const int64_t j = c.begin + v * kVec;
        float4 acc = *reinterpret_cast<const float4*>(imp + j);
        const Vec<grad_t> gv = *reinterpret_cast<const Vec<grad_t>*>(g + j);
        acc.x = __fadd_rn(acc.x, term(gv.v[0]));
        acc.y = __fadd_rn(acc.y, term(gv.v[1]));
        acc.z = __fadd_rn(acc.z, term(gv.v[2]));
        acc.w = __fadd_rn(acc.w, term(gv.v[3]));
        *reinterpret_cast<float4*>(imp + j) = acc;
      }
      scalar_from = c.begin + n_vec * kVec;
    }
    for (int64_t j = scalar_from + threadIdx.x; j < c.end; j += blockDim.x) {
      imp[j] = __fadd_rn(imp[j], term(g[j]));
    }
  }
};

}  // namespace ssd_fast::cuda
