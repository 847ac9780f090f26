// The device engine behind the per-sample squared-gradient ops (see common/per_sample_sq.h):
// out[g*Og + o, k] += scale * sum_b f(sum_l D[b,g,o,l] X[b,g,k,l]).
//
// Each thread block owns a 64 x 64 tile of out (one group) and a fixed slice of the
// samples. For each sample, in order, it forms that sample's 64 x 64 product in
// registers (4 x 4 per thread) from 16-step slices of D and X staged in shared memory
// (X gathered through the implicit im2col for convolutions), then adds f(product) to a
// running sum, also in registers. No per-sample tensor reaches global memory.
// When one slice of samples per tile would leave the GPU mostly idle, the batch is cut
// into S slices; each writes its partial sums to a workspace [S, O, K], and a second
// kernel adds them up in slice order. Every sum runs in a fixed order: same input, same
// bits. Products and sums are fp32 fused multiply-adds (__fmaf_rn, whatever --fmad says).
//
// The fixed order, element by element (the emulator's tests check it bit for bit):
//   prod_b = 0; for l in 0 .. ceil(L/16)*16 - 1: prod_b = fma(D[b,l], X[b,l], prod_b)
//            (D and X read as 0 past L);
//   acc_s  = 0; for b in slice s, in order: acc_s = fma(prod_b, prod_b, acc_s)
//            (|v|: acc_s = acc_s + |prod_b|);
//   one slice:  out = fma(scale, acc_0, out);
//   S slices:   sum = 0; for s in order: sum = sum + acc_s; out = fma(scale, sum, out).
//
// UNVERIFIED on a GPU: the emulator runs this code on the CPU in every CI run, but the
// rules keep CUDA on the torch path until benchmarks/gpu_check.sh passes on a GPU.
#pragma once

#include <algorithm>
#include <cstdint>

#include "device_api.h"

namespace ssd_fast::cuda {

struct SqShape {
  int64_t batch, groups, o_per_group, k_per_group, length;
};

constexpr int kTile = 64;    // outputs per block along o and along k
constexpr int kStep = 16;    // reduction steps staged in shared memory at a time
constexpr int kSqThreads = 256;
constexpr int kPer = 4;      // outputs per thread along o and along k: 16 x 16 threads x 4 x 4

// D and X are read through loaders: d(b, g, o, l) and x(b, g, k, l) return fp32 values, and
// are never called out of range. kDLFast / kXLFast say whether consecutive l are adjacent
// in memory (conv) or consecutive o / k are (tokens), so that a warp's loads coalesce.
template <bool kLFast, class Load>
__device__ inline void stage(float (*tile)[kTile + 1], const Load& load, int64_t b, int64_t g, int64_t r0, int64_t rn,
                             int64_t l0, int64_t ln) {
  for (int e = threadIdx.x; e < kTile * kStep; e += kSqThreads) {
    const int l = kLFast ? e % kStep : e / kTile;
    const int r = kLFast ? e / kStep : e % kTile;
    tile[l][r] = (r < rn && l < ln) ? load(b, g, r0 + r, l0 + l) : 0.0f;
  }
}

template <bool kDLFast, bool kXLFast, class DLoad, class XLoad>
__global__ void __launch_bounds__(kSqThreads) per_sample_sq_kernel(DLoad d, XLoad x, SqShape s, int64_t per_slice,
                                                                   int slices, bool absolute, float scale,
                                                                   float* __restrict__ out, bool partial) {
  SSD_FAST_SHARED(float, d_tile, [kStep][kTile + 1]);
  SSD_FAST_SHARED(float, x_tile, [kStep][kTile + 1]);
  const int64_t k0 = static_cast<int64_t>(blockIdx.x) * kTile, o0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t g = blockIdx.z / slices, slice = blockIdx.z % slices;
  const int64_t kn = std::min<int64_t>(kTile, s.k_per_group - k0), on = std::min<int64_t>(kTile, s.o_per_group - o0);
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;  // this thread: k = tx + 16 j, o = ty + 16 i
  float acc[kPer][kPer] = {};
  const int64_t b_end = std::min(s.batch, (slice + 1) * per_slice);
  for (int64_t b = slice * per_slice; b < b_end; ++b) {
    float prod[kPer][kPer] = {};
    for (int64_t l0 = 0; l0 < s.length; l0 += kStep) {
      const int64_t ln = std::min<int64_t>(kStep, s.length - l0);
      stage<kDLFast>(d_tile, d, b, g, o0, on, l0, ln);
      stage<kXLFast>(x_tile, x, b, g, k0, kn, l0, ln);
      __syncthreads();
#pragma unroll
      for (int l = 0; l < kStep; ++l) {
        float dv[kPer], xv[kPer];
#pragma unroll
        for (int i = 0; i < kPer; ++i) dv[i] = d_tile[l][ty + 16 * i];
#pragma unroll
        for (int j = 0; j < kPer; ++j) xv[j] = x_tile[l][tx + 16 * j];
#pragma unroll
        for (int i = 0; i < kPer; ++i) {
#pragma unroll
          for (int j = 0; j < kPer; ++j) prod[i][j] = __fmaf_rn(dv[i], xv[j], prod[i][j]);
        }
      }
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
#pragma unroll
      for (int j = 0; j < kPer; ++j) {
        const float p = prod[i][j];
        acc[i][j] = absolute ? __fadd_rn(acc[i][j], fabsf(p)) : __fmaf_rn(p, p, acc[i][j]);
      }
    }
  }
  const int64_t rows = s.groups * s.o_per_group;
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int64_t o = o0 + ty + 16 * i, k = k0 + tx + 16 * j;
      if (o >= s.o_per_group || k >= s.k_per_group) continue;
      const int64_t at = (g * s.o_per_group + o) * s.k_per_group + k;
      if (partial) {
        out[slice * rows * s.k_per_group + at] = acc[i][j];
      } else {
        out[at] = __fmaf_rn(scale, acc[i][j], out[at]);
      }
    }
  }
}

// out[i] += scale * sum over s (in order) of partial[s][i]
static __global__ void add_slices_kernel(const float* __restrict__ partial, int slices, int64_t n, float scale,
                                          float* __restrict__ out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float sum = 0.0f;
    for (int s = 0; s < slices; ++s) sum = __fadd_rn(sum, partial[s * n + i]);
    out[i] = __fmaf_rn(scale, sum, out[i]);
  }
}

// How many slices of the batch: enough blocks for about two waves of the GPU, at most one
// slice per sample, within the grid's z limit, and a workspace of at most 256 MB. This
// depends on the device's multiprocessor count, so a result's bits are fixed per GPU model.
inline int choose_slices(const SqShape& s, int64_t blocks_per_slice, int sms) {
  const int64_t want = (2 * static_cast<int64_t>(sms) + blocks_per_slice - 1) / blocks_per_slice;
  const int64_t by_grid = 65535 / s.groups;
  const int64_t by_memory =
      std::max<int64_t>(1, (int64_t{64} << 20) / std::max<int64_t>(1, s.groups * s.o_per_group * s.k_per_group));
  return static_cast<int>(std::max<int64_t>(1, std::min({want, s.batch, by_grid, by_memory})));
}

// Everything a launch of the per-sample engine needs, computed on the host from the shape
// and the multiprocessor count alone.
struct PerSampleSqPlan {
  bool empty;              // nothing to add: launch nothing
  const char* error;       // non-null: the shape cannot be launched, and why
  unsigned grid[3];        // per_sample_sq_kernel's grid (k tiles, o tiles, groups * slices)
  int slices;              // batch slices; > 1 means a workspace and add_slices_kernel
  int64_t per_slice;       // samples per slice (the last slice may hold fewer)
  int64_t workspace;       // fp32 elements of the [slices, n] workspace (0 when slices == 1)
  unsigned reduce_blocks;  // add_slices_kernel's grid (0 when slices == 1)
};

inline PerSampleSqPlan plan_per_sample_sq(const SqShape& s, int sms) {
  PerSampleSqPlan plan{};
  plan.empty = s.batch == 0 || s.length == 0 || s.o_per_group == 0 || s.k_per_group == 0 || s.groups == 0;
  if (plan.empty) return plan;
  const int64_t k_tiles = (s.k_per_group + kTile - 1) / kTile, o_tiles = (s.o_per_group + kTile - 1) / kTile;
  if (o_tiles > 65535 || s.groups > 65535 || k_tiles > 0x7fffffff) {
    plan.error = "ssd_fast: per-sample op: too many output channels or groups for one launch";
    return plan;
  }
  plan.slices = choose_slices(s, k_tiles * o_tiles * s.groups, sms);
  plan.per_slice = (s.batch + plan.slices - 1) / plan.slices;
  plan.grid[0] = static_cast<unsigned>(k_tiles);
  plan.grid[1] = static_cast<unsigned>(o_tiles);
  plan.grid[2] = static_cast<unsigned>(s.groups * plan.slices);
  if (plan.slices > 1) {
    const int64_t n = s.groups * s.o_per_group * s.k_per_group;
    plan.workspace = plan.slices * n;
    plan.reduce_blocks = static_cast<unsigned>(std::min<int64_t>((n + kSqThreads - 1) / kSqThreads, 4 * int64_t{sms}));
  }
  return plan;
}

}  // namespace ssd_fast::cuda
