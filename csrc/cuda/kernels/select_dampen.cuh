// select_dampen_'s device code: one multi-tensor pass that reads each parameter, forget
// and full importance once, writes the parameter once, and counts the selected elements
// per parameter (a block sum, then one atomic add per block). The arithmetic is
// common/ssd_math.h's, shared with the CPU op, so both give the same bits.
#pragma once

#include <cstdint>

#include "../../common/constants.h"
#include "../../common/ssd_math.h"
#include "../../common/vec.h"
#include "device_api.h"
#include "multi_tensor.cuh"

namespace ssd_fast::cuda {

// Lists: 0 params (scalar_t), 1 forget importance (fp32), 2 full importance (fp32).
template <typename scalar_t>
struct SelectDampenOp {
  float alpha;
  float lam;
  unsigned long long* selected;  // one count per entry of the caller's list

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
    if (threadIdx.x == 0 && total != 0) {
      atomicAdd(selected + meta.list_index[c.slot], static_cast<unsigned long long>(total));
    }
  }
};

}  // namespace ssd_fast::cuda
