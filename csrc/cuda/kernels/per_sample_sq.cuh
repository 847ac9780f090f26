// The device engine behind the per-sample squared-gradient ops (see common/per_sample_sq.h):
// out[g*Og + o, k] += scale * sum_b f(sum_l D[b,g,o,l] X[b,g,k,l]).
//
// Each thread block owns a 64 x 64 tile of out (one group) and a fixed slice of the
// samples. For each sample, in order, it forms that sample's 64 x 64 product in
// registers (4 x 4 adjacent outputs per thread) from 16-step slices of D and X staged in
// shared memory (X gathered through the implicit im2col for convolutions), then adds
// f(product) to a running sum, also in registers. No per-sample tensor reaches global
// memory. When one slice of samples per tile would leave the GPU mostly idle, the batch is
// cut into S slices; each writes its partial sums to a workspace [S, O, K], and a second
// kernel adds them up in slice order. Every sum runs in a fixed order: same input, same
// bits. Products and sums are fp32 fused multiply-adds (__fmaf_rn, whatever --fmad says).
// That is the default math (SqFmaMath, precision "exact"); precision "tf32" / "bf16" swap in
// tensor-core math for each sample's product (per_sample_sq_mma.cuh), all else unchanged.
//
// Built to keep the multiprocessor busy (issue 19):
// - staging does no division: the loaders (per_sample_sq_loaders.cuh) split an address into
//   a per-row part, tabulated in shared memory once per block, and a per-column cursor that
//   advances by additions; offsets within a sample are 32-bit;
// - a thread's 4 o's and 4 k's are adjacent, so each reduction step reads two float4 from
//   shared memory for 16 FMAs (the tiles' float4 columns are XOR-swizzled by the row, so
//   that neither the stores of the staging nor these reads conflict in banks beyond 2-way);
// - staging is double-buffered in shared memory: the next slice is staged into the other
//   buffer before this one is multiplied; one barrier per slice instead of two. fp32
//   operands are copied with cp.async on sm_80+ (no registers, the copy overlaps the math);
//   other dtypes go through registers, to be converted;
// - __launch_bounds__(256, 4) holds a thread to 64 registers: 4 blocks, 50% occupancy.
//
// The fixed order, element by element (the emulator's tests check it bit for bit; the same
// order, and so the same bits for the same slicing, as before these changes):
//   prod_b = 0; for l in 0 .. ceil(L/16)*16 - 1: prod_b = fma(D[b,l], X[b,l], prod_b)
//            (D and X read as 0 past L);
//   acc_s  = 0; for b in slice s, in order: acc_s = fma(prod_b, prod_b, acc_s)
//            (|v|: acc_s = acc_s + |prod_b|);
//   one slice:  out = fma(scale, acc_0, out);
//   S slices:   sum = 0; for s in order: sum = sum + acc_s; out = fma(scale, sum, out).
//
// UNVERIFIED on a GPU: the emulator runs this code on the CPU in every CI run, but the
// rules keep CUDA on the torch path until benchmarks/gpu_check.sh passes on a GPU (or its
// calibration for the GPU model routes layers here: ssd_fast/per_sample/_fused.py).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "device_api.h"

#if !defined(__CUDACC__)
#include "cp_async_emulator.h"
#endif

namespace ssd_fast::cuda {

struct SqShape {
  int64_t batch, groups, o_per_group, k_per_group, length;
};

constexpr int kTile = 64;    // outputs per block along o and along k
constexpr int kStep = 16;    // reduction steps staged in shared memory at a time
constexpr int kSqThreads = 256;
constexpr int kSqMinBlocks = 4;  // blocks per multiprocessor that __launch_bounds__ asks for
constexpr int kPer = 4;      // outputs per thread along o and along k: 16 x 16 threads x 4 x 4

// Which element a loader is asked for (see per_sample_sq_loaders.cuh).
struct SqWhere {
  int64_t b, g, r, l;
};

// Which tile elements (row r, column l) a thread stages, 4 per slice. kLFast: consecutive
// columns l are adjacent in memory (conv), so a thread keeps one column and 4 rows;
// otherwise consecutive rows are (tokens): one row and 4 columns. Either way a warp's
// loads coalesce.
template <bool kLFast>
struct StageMap {
  static constexpr int kRows = kLFast ? 4 : 1, kCols = kLFast ? 1 : 4;
  static __device__ int row(int t, int i) { return kLFast ? t / kStep + (kSqThreads / kStep) * i : t % kTile; }
  static __device__ int col(int t, int j) { return kLFast ? t % kStep : t / kTile + (kSqThreads / kTile) * j; }
};
static_assert(kTile * kStep == 4 * kSqThreads, "each thread stages 4 elements of each tile per slice");

// Where column c of tile row l lives: float4 group c/4 XOR-ed with l mod 8 (see above).
__device__ inline int swizzle(int l, int c) { return ((((c >> 2) ^ (l & 7)) << 2) | (c & 3)); }

__device__ inline float4 load_float4(const float* at) {
#if defined(__CUDACC__)
  return *reinterpret_cast<const float4*>(at);
#else
  float4 v;
  std::memcpy(&v, at, sizeof(v));  // the emulator keeps C++'s aliasing rules
  return v;
#endif
}

// Asynchronous 4-byte global -> shared copies (cp.async, sm_80+): no register holds the
// value, and the copy proceeds while the thread computes. `valid` false writes 0 (src-size 0:
// nothing is read). Before sm_80 a plain load and store; in the emulator, emu::cp_async,
// which delays every copy until its wait (csrc/emulator/cp_async_emulator.h).
__device__ inline void copy_async_f32(float* dst, const float* src, bool valid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned to = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(to), "l"(src), "r"(valid ? 4 : 0) : "memory");
#elif defined(__CUDACC__)
  *dst = valid ? *src : 0.0f;
#else
  emu::cp_async(dst, src, 4, valid ? 4 : 0);
#endif
}

// Commit this thread's copies and wait for all of them (cp.async.wait_all).
__device__ inline void copy_async_wait_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_all;" ::: "memory");
#elif !defined(__CUDACC__)
  emu::cp_async_wait_all();
#endif
}

// A block's shared memory: two buffers of the two tiles, and the loaders' row tables.
template <class DRow, class XRow>
struct alignas(16) SqShared {
  float d[2][kStep][kTile];
  float x[2][kStep][kTile];
  DRow d_rows[kTile];
  XRow x_rows[kTile];
};

// One operand's staging state for this thread: its columns' cursors and the slice it
// holds in registers between the global read and the shared store. fp32 operands skip the
// registers: fetch_async copies them straight into the tile (cp.async on sm_80+).
template <bool kLFast, class Load>
struct Stager {
  using Map = StageMap<kLFast>;
  static constexpr bool kAsync = std::is_same_v<typename Load::scalar_type, float>;
  ThreadArray<typename Load::Col, Map::kCols> cols;
  float held[4];

  // Cursors at the first slice of a sample.
  __device__ void start(const Load& load) {
#pragma unroll
    for (int j = 0; j < Map::kCols; ++j) cols[j] = load.col(Map::col(threadIdx.x, j));
  }
  __device__ void advance(const Load& load) {
#pragma unroll
    for (int j = 0; j < Map::kCols; ++j) load.advance(cols[j]);
  }
  // Reads this thread's elements of slice l0 of sample b into `held` (0 outside the tile).
  template <class Row>
  __device__ void fetch(const Load& load, const Row* rows, int rn, int64_t b, int64_t g, int64_t r0, int l0,
                        int length) {
    const auto* sample = load.sample(b);
#pragma unroll
    for (int i = 0; i < Map::kRows; ++i) {
#pragma unroll
      for (int j = 0; j < Map::kCols; ++j) {
        const int r = Map::row(threadIdx.x, i), l = l0 + Map::col(threadIdx.x, j);
        held[i * Map::kCols + j] =
            r < rn && l < length ? load.load(sample, rows[r], cols[j], SqWhere{b, g, r0 + r, l}) : 0.0f;
      }
    }
  }
  // Copies this thread's elements of slice l0 of sample b into `tile`, asynchronously (0
  // outside the tile and in the padding); they land by the next copy_async_wait_all.
  template <class Row>
  __device__ void fetch_async(const Load& load, const Row* rows, int rn, int64_t b, int64_t g, int64_t r0, int l0,
                              int length, float (*tile)[kTile]) {
    const float* sample = load.sample(b);
#pragma unroll
    for (int i = 0; i < Map::kRows; ++i) {
#pragma unroll
      for (int j = 0; j < Map::kCols; ++j) {
        const int r = Map::row(threadIdx.x, i), lt = Map::col(threadIdx.x, j), l = l0 + lt;
        const float* src =
            r < rn && l < length ? load.address(sample, rows[r], cols[j], SqWhere{b, g, r0 + r, l}) : nullptr;
        copy_async_f32(&tile[lt][swizzle(lt, r)], src != nullptr ? src : sample, src != nullptr);
      }
    }
  }
  __device__ void store(float (*tile)[kTile]) const {
#pragma unroll
    for (int i = 0; i < Map::kRows; ++i) {
#pragma unroll
      for (int j = 0; j < Map::kCols; ++j) {
        const int r = Map::row(threadIdx.x, i), l = Map::col(threadIdx.x, j);
        tile[l][swizzle(l, r)] = held[i * Map::kCols + j];
      }
    }
  }
};

// The math of the default ("exact") path: fp32 FMAs, 4 x 4 adjacent outputs per thread.
// A math policy holds one sample's product and the running sum of f(product) for its
// thread's outputs; per_sample_sq_mma.cuh has the tensor-core ones.
struct SqFmaMath {
  float prod[kPer][kPer] = {}, acc[kPer][kPer] = {};

  // prod += this slice of D (rows o) times this slice of X (rows k), l in order.
  __device__ void multiply(const float (*d)[kTile], const float (*x)[kTile]) {
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;  // this thread: o = 4 ty + i, k = 4 tx + j
#pragma unroll
    for (int l = 0; l < kStep; ++l) {
      const float4 d4 = load_float4(&d[l][swizzle(l, 4 * ty)]);
      const float4 x4 = load_float4(&x[l][swizzle(l, 4 * tx)]);
      const float dv[kPer] = {d4.x, d4.y, d4.z, d4.w}, xv[kPer] = {x4.x, x4.y, x4.z, x4.w};
#pragma unroll
      for (int i = 0; i < kPer; ++i) {
#pragma unroll
        for (int j = 0; j < kPer; ++j) prod[i][j] = __fmaf_rn(dv[i], xv[j], prod[i][j]);
      }
    }
  }
  // acc += f(prod); prod = 0 (a sample is complete)
  __device__ void fold(bool absolute) {
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
#pragma unroll
      for (int j = 0; j < kPer; ++j) {
        const float p = prod[i][j];
        acc[i][j] = absolute ? __fadd_rn(acc[i][j], fabsf(p)) : __fmaf_rn(p, p, acc[i][j]);
        prod[i][j] = 0.0f;
      }
    }
  }
  // f(o, k, sum) for each of this thread's outputs, (o, k) within the tile
  template <class F>
  __device__ void for_each_output(F f) const {
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
#pragma unroll
      for (int j = 0; j < kPer; ++j) f(4 * ty + i, 4 * tx + j, acc[i][j]);
    }
  }
};

template <bool kDLFast, bool kXLFast, class DLoad, class XLoad, class Math = SqFmaMath>
__global__ void __launch_bounds__(kSqThreads, kSqMinBlocks)
    per_sample_sq_kernel(DLoad d, XLoad x, SqShape s, int64_t per_slice, int slices, bool absolute, float scale,
                         float* __restrict__ out, bool partial) {
  using Shared = SqShared<typename DLoad::Row, typename XLoad::Row>;
  SSD_FAST_SHARED(Shared, shared, [1]);
  Shared& sm = shared[0];
  const int64_t k0 = static_cast<int64_t>(blockIdx.x) * kTile, o0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t g = blockIdx.z / slices, slice = blockIdx.z % slices;
  const int kn = static_cast<int>(std::min<int64_t>(kTile, s.k_per_group - k0));
  const int on = static_cast<int>(std::min<int64_t>(kTile, s.o_per_group - o0));
  const int length = static_cast<int>(s.length);  // plan_per_sample_sq refuses L >= 2^31
  const int t = threadIdx.x;
  if (t < on) sm.d_rows[t] = d.row(g, o0 + t);
  if (t >= kTile && t - kTile < kn) sm.x_rows[t - kTile] = x.row(g, k0 + t - kTile);
  __syncthreads();

  Math math;
  Stager<kDLFast, DLoad> ds;
  Stager<kXLFast, XLoad> xs;
  // this slice's samples b0 + n, n < count (32-bit: fewer registers than a 64-bit b)
  const int64_t b0 = slice * per_slice;
  const int count = static_cast<int>(std::max<int64_t>(0, std::min(s.batch, b0 + per_slice) - b0));
  int n = 0, l0 = 0, buffer = 0;
  // stage slice l0 of sample b0 + n into `to`: copies in flight (fp32 operands) or done
  auto stage = [&](int n_at, int l0_at, int to) {
    if constexpr (decltype(ds)::kAsync) {
      ds.fetch_async(d, sm.d_rows, on, b0 + n_at, g, o0, l0_at, length, sm.d[to]);
    } else {
      ds.fetch(d, sm.d_rows, on, b0 + n_at, g, o0, l0_at, length);
      ds.store(sm.d[to]);
    }
    if constexpr (decltype(xs)::kAsync) {
      xs.fetch_async(x, sm.x_rows, kn, b0 + n_at, g, k0, l0_at, length, sm.x[to]);
    } else {
      xs.fetch(x, sm.x_rows, kn, b0 + n_at, g, k0, l0_at, length);
      xs.store(sm.x[to]);
    }
  };
  constexpr bool kAsync = decltype(ds)::kAsync || decltype(xs)::kAsync;
  if (n < count) {
    ds.start(d);
    xs.start(x);
    stage(0, 0, 0);
  }
  if constexpr (kAsync) copy_async_wait_all();
  __syncthreads();
  while (n < count) {
    // the slice after this one, staged into the other buffer before this one's math: its
    // global loads overlap the math of this block's other warps and of the other blocks
    // (4 per multiprocessor); holding it in registers across the math would cost the 8
    // registers that keep this kernel within 64
    int n_next = n, l0_next = l0 + kStep;
    if (l0_next >= length) {
      l0_next = 0;
      ++n_next;
      ds.start(d);
      xs.start(x);
    } else {
      ds.advance(d);
      xs.advance(x);
    }
    if (n_next < count) stage(n_next, l0_next, buffer ^ 1);  // nobody reads buffer ^ 1 since the last barrier
    math.multiply(sm.d[buffer], sm.x[buffer]);
    if (l0_next == 0) math.fold(absolute);  // sample b0 + n is complete
    if constexpr (kAsync) copy_async_wait_all();  // this thread's copies into buffer ^ 1 have landed
    __syncthreads();        // and everyone's are visible; every read of `buffer` is done
    buffer ^= 1;
    n = n_next;
    l0 = l0_next;
  }
  const int64_t rows = s.groups * s.o_per_group;
  math.for_each_output([&](int oi, int ki, float sum) {
    const int64_t o = o0 + oi, k = k0 + ki;
    if (o >= s.o_per_group || k >= s.k_per_group) return;
    const int64_t at = (g * s.o_per_group + o) * s.k_per_group + k;
    if (partial) {
      out[slice * rows * s.k_per_group + at] = sum;
    } else {
      out[at] = __fmaf_rn(scale, sum, out[at]);
    }
  });
}

// out[i] += scale * sum over s (in order) of partial[s][i]
[[maybe_unused]] static __global__ void add_slices_kernel(const float* __restrict__ partial, int slices, int64_t n, float scale,
                                          float* __restrict__ out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float sum = 0.0f;
    for (int s = 0; s < slices; ++s) sum = __fadd_rn(sum, partial[s * n + i]);
    out[i] = __fmaf_rn(scale, sum, out[i]);
  }
}

// How many slices of the batch: enough blocks for about two waves of the GPU at the
// kSqMinBlocks blocks per multiprocessor that fit, at most one slice per sample, within the
// grid's z limit, and a workspace of at most 256 MB. This depends on the device's
// multiprocessor count, so a result's bits are fixed per GPU model.
inline int choose_slices(const SqShape& s, int64_t blocks_per_slice, int sms) {
  const int64_t wave = int64_t{kSqMinBlocks} * sms;
  const int64_t want = (2 * wave + blocks_per_slice - 1) / blocks_per_slice;
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
  if (s.length > INT32_MAX - kStep || s.o_per_group > INT32_MAX || s.k_per_group > INT32_MAX) {
    plan.error =
        "ssd_fast: per-sample op: a sample has 2^31 or more positions or channels, beyond the CUDA kernel's 32-bit "
        "indexing; compute this layer on the torch path (ssd_fast.per_sample._fused.enabled = False)";
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
