// The CPU engine behind the per-sample squared-gradient ops (see common/per_sample_sq.h):
// out[g*Og + o, k] += scale * sum_b f(sum_l D[b,g,o,l] X[b,g,k,l]).
//
// Work is split into tiles of out, one tile per at::parallel_for item. A tile keeps two
// fp32 buffers that stay in cache, `prod` (this sample's product) and `acc` (the running
// sum over samples), and loops over the samples in order:
//   for each chunk of l: take X's tile [tk x tl] (read in place, or packed by the caller's
//   packer: the im2col gather of a conv) and D's tile [tl x to] (read in place from an fp32
//   [B, L, O] tensor), and multiply-add them into prod with a small in-cache GEMM
//   (tile_gemm: at::native::cpublas::brgemm, a oneDNN micro-kernel); then acc += f(prod).
// No per-sample gradient and no unfolded input ever leaves the tile. The tile sizes
// depend on the shapes only, and the samples are summed in a fixed order, so the result
// has the same bits whatever the thread count.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace ssd_fast::cpu {

struct SqProblem {
  int64_t batch, groups, o_per_group, k_per_group, length;
  float scale;
  bool absolute;
  const float* dy;  // [batch, length, groups * o_per_group], contiguous fp32
  float* out;       // [groups * o_per_group, k_per_group], contiguous fp32
};

// t as a contiguous fp32 tensor, in one pass: a bf16 or fp16 input (autocast) is upcast,
// exactly, while it is laid out. (Tensor::to with MemoryFormat::Contiguous would not do:
// it returns a transposed 3-d view unchanged.)
inline at::Tensor contiguous_float(const at::Tensor& t) {
  if (t.scalar_type() == at::kFloat) return t.contiguous();
  at::Tensor out = at::empty(t.sizes(), t.options().dtype(at::kFloat));
  out.copy_(t);
  return out;
}

struct SqTiles {
  int64_t to, tk, tl;
};

// A row-major fp32 matrix: the caller's memory or a packed copy.
struct Panel {
  const float* data;
  int64_t ld;
};

// Tiles of at most 64 x 512 outputs and 256 reduction steps: prod, acc and the two
// operand tiles then take under 1 MB, inside a core's L2.
inline SqTiles choose_tiles(const SqProblem& p) {
  return {std::min<int64_t>(p.o_per_group, 512), std::min<int64_t>(p.k_per_group, 64), std::min<int64_t>(p.length, 256)};
}

// A layer with few tiles (a stem conv, a 1x1 shortcut) would keep only one or two threads
// busy: its batch is then cut into slices, for at least 8 work items, whose partial sums
// are added up in slice order afterwards. This depends on the shapes only.
inline int64_t choose_slices(const SqProblem& p, int64_t tiles) {
  constexpr int64_t kMinItems = 8;
  return tiles >= kMinItems ? 1 : std::min(p.batch, (kMinItems + tiles - 1) / tiles);
}

// c[m x n] (+)= a[m x k] . b[k x n], row-major fp32 with leading dimensions. torch >= 2.9
// has an fp32 brgemm (a oneDNN micro-kernel for in-cache tiles, with a BLAS fallback);
// older torch gets at::mm on views of the same memory, slower per call but the same sums.
#if defined(CPUBLAS_BRGEMM_F32F32F32) && !defined(SSD_FAST_NO_BRGEMM)
inline void tile_gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                      float* c, int64_t ldc, bool add) {
  at::native::cpublas::brgemm(m, n, k, lda, ldb, ldc, add, a, b, c);
}
inline void tile_gemm_release() { at::native::cpublas::brgemm_release(/*is_vnni=*/false); }
#else
inline void tile_gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                      float* c, int64_t ldc, bool add) {
  const at::Tensor ta = at::from_blob(const_cast<float*>(a), {m, k}, {lda, 1}, at::kFloat);
  const at::Tensor tb = at::from_blob(const_cast<float*>(b), {k, n}, {ldb, 1}, at::kFloat);
  at::Tensor tc = at::from_blob(c, {m, n}, {ldc, 1}, at::kFloat);
  if (add) {
    tc.addmm_(ta, tb);
  } else {
    at::mm_out(tc, ta, tb);
  }
}
inline void tile_gemm_release() {}
#endif

// The build targets baseline x86-64 (SSE2); this loop runs once per sample and output, so
// GCC also compiles it for AVX2 and AVX-512 and picks one when the library loads. Each
// element is one multiply and one add in every version: the same bits on every CPU.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define SSD_FAST_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SSD_FAST_SIMD_CLONES
#endif

SSD_FAST_SIMD_CLONES inline void add_power(float* acc, const float* prod, int64_t n, bool absolute) {
  if (absolute) {
    for (int64_t i = 0; i < n; ++i) acc[i] += std::fabs(prod[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) acc[i] += prod[i] * prod[i];
  }
}

// pack_k(buf, b, g, k0, kn, l0, ln) -> Panel P with P[k][l] = X[b, g, k0 + k, l0 + l]
// (kn x ln); buf has room for one such tile.
template <class PackK>
void accumulate_sq_tiles(const SqProblem& p, const PackK& pack_k) {
  if (p.batch == 0 || p.length == 0 || p.o_per_group == 0 || p.k_per_group == 0) return;
  const SqTiles t = choose_tiles(p);
  const int64_t n_o = (p.o_per_group + t.to - 1) / t.to, n_k = (p.k_per_group + t.tk - 1) / t.tk;
  const int64_t o_all = p.groups * p.o_per_group, numel = o_all * p.k_per_group, tiles = p.groups * n_o * n_k;
  const int64_t slices = choose_slices(p, tiles), per_slice = (p.batch + slices - 1) / slices;
  std::vector<float> partial(slices > 1 ? slices * numel : 0);  // [slice, O, K]
  at::parallel_for(0, tiles * slices, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> x_buf(t.tk * t.tl), prod(t.tk * t.to), acc(t.tk * t.to);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t slice = item / tiles, tile = item % tiles;
      const int64_t g = tile / (n_o * n_k), o0 = (tile / n_k) % n_o * t.to, k0 = tile % n_k * t.tk;
      const int64_t on = std::min(t.to, p.o_per_group - o0), kn = std::min(t.tk, p.k_per_group - k0);
      std::fill(acc.begin(), acc.begin() + kn * on, 0.0f);
      for (int64_t b = slice * per_slice, b_end = std::min(p.batch, b + per_slice); b < b_end; ++b) {
        for (int64_t l0 = 0; l0 < p.length; l0 += t.tl) {
          const int64_t ln = std::min(t.tl, p.length - l0);
          const Panel x = pack_k(x_buf.data(), b, g, k0, kn, l0, ln);
          const float* d = p.dy + (b * p.length + l0) * o_all + g * p.o_per_group + o0;
          // prod[kn x on] (+)= x[kn x ln] . d[ln x on]
          tile_gemm(kn, on, ln, x.data, x.ld, d, o_all, prod.data(), on, l0 > 0);
        }
        add_power(acc.data(), prod.data(), kn * on, p.absolute);
      }
      for (int64_t o = 0; o < on; ++o) {
        const int64_t at = (g * p.o_per_group + o0 + o) * p.k_per_group + k0;
        if (slices == 1) {
          for (int64_t k = 0; k < kn; ++k) p.out[at + k] += p.scale * acc[k * on + o];
        } else {
          for (int64_t k = 0; k < kn; ++k) partial[slice * numel + at + k] = acc[k * on + o];
        }
      }
    }
    tile_gemm_release();
  });
  if (slices == 1) return;
  at::parallel_for(0, numel, 1 << 12, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float sum = 0.0f;
      for (int64_t s = 0; s < slices; ++s) sum += partial[s * numel + i];
      p.out[i] += p.scale * sum;
    }
  });
}

}  // namespace ssd_fast::cpu
