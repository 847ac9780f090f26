// Tensor-core math for the per-sample engine (per_sample_sq.cuh), for precision="tf32" and
// "bf16": each sample's 64 x 64 product comes from warp-level mma.sync on sm_80+
// (m16n8k8 TF32, or m16n8k16 bf16) instead of fp32 FMAs. Staging, slicing and the sums of
// f(product) over samples are the engine's, unchanged (fp32).
//
// What it computes: prod_b[o, k] = sum_l rnd(D[b,o,l]) rnd(X[b,k,l]) with rnd = TF32 (round to
// nearest, ties away: cvt.rna.tf32.f32) or bf16 (nearest even: cvt.rn.bf16x2.f32); the
// products are exact, and each mma adds its 8 (tf32) or 16 (bf16) products to the running
// fp32 value in an order and with internal precision that the PTX ISA does not document.
// Per element, the slices' mma run in l order. So this path has no bit-exact model: the
// emulator (csrc/emulator/mma_emulator.h) adds each mma exactly and rounds once, and the
// tests bound the error against an fp64 oracle (tests/emulator/test_per_sample_kernels.cpp).
//
// Warps: 8 per block; warp w owns o in [16 (w / 2), +16) and k in [32 (w % 2), +32): one
// m16 tile by four n8 tiles, 16 fp32 accumulators per lane, like the FMA path's 4 x 4.
// Needs sm_80 or newer; launch_per_sample_sq refuses older devices for these modes.
#pragma once

#include <cstdint>

#include "device_api.h"
#include "per_sample_sq.cuh"

#if !defined(__CUDACC__)
#include "mma_emulator.h"
#endif

namespace ssd_fast::cuda {

__device__ inline uint32_t to_tf32(float v) {
#if defined(__CUDACC__)
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
  return r;
#else
  return emu::cvt_rna_tf32(v);
#endif
}

// Two fp32 as bf16 in one register: `lo` in the low half (the lower-index element).
__device__ inline uint32_t to_bf16x2(float lo, float hi) {
#if defined(__CUDACC__)
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
#else
  return emu::cvt_rn_bf16x2(hi, lo);
#endif
}

// acc = A B + acc, one m16n8k8 TF32 tensor-core operation of the warp.
__device__ inline void mma_tf32(float (&acc)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDACC__)
#if __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  __trap();  // the launcher never picks a tensor-core mode below sm_80
#endif
#else
  emu::mma_m16n8k8_tf32(acc, a, b, acc);
#endif
}

// acc = A B + acc, one m16n8k16 bf16 tensor-core operation of the warp.
__device__ inline void mma_bf16(float (&acc)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDACC__)
#if __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  __trap();
#endif
#else
  emu::mma_m16n8k16_bf16(acc, a, b, acc);
#endif
}

enum class SqTensorCore { kTf32, kBf16 };

// The tensor-core math policy (see SqFmaMath for the interface).
template <SqTensorCore kKind>
struct SqMmaMath {
  float prod[4][4] = {}, acc[4][4] = {};  // [n8 tile][accumulator register]

  __device__ void multiply(const float (*d)[kTile], const float (*x)[kTile]) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane >> 2, t = lane & 3;
    const int o = 16 * (warp / 2) + g, k = 32 * (warp % 2) + g;  // A rows g, g+8; B column g
    auto dv = [&](int l, int r) { return d[l][swizzle(l, r)]; };
    auto xv = [&](int l, int r) { return x[l][swizzle(l, r)]; };
    if constexpr (kKind == SqTensorCore::kTf32) {
#pragma unroll
      for (int ks = 0; ks < kStep; ks += 8) {
        const int l0 = ks + t, l1 = ks + t + 4;  // A: a0 (g, t) a1 (g+8, t) a2 (g, t+4) a3 (g+8, t+4)
        const uint32_t a[4] = {to_tf32(dv(l0, o)), to_tf32(dv(l0, o + 8)), to_tf32(dv(l1, o)), to_tf32(dv(l1, o + 8))};
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
          const uint32_t b[2] = {to_tf32(xv(l0, k + 8 * nt)), to_tf32(xv(l1, k + 8 * nt))};  // b0 (t, g) b1 (t+4, g)
          mma_tf32(prod[nt], a, b);
        }
      }
    } else {
      static_assert(kStep == 16, "one m16n8k16 step per slice");
      // A register r: elements (row g or g+8, cols 2t, 2t+1, or 2t+8, 2t+9); B likewise by rows
      const int l0 = 2 * t, l1 = 2 * t + 1, l2 = 2 * t + 8, l3 = 2 * t + 9;
      const uint32_t a[4] = {to_bf16x2(dv(l0, o), dv(l1, o)), to_bf16x2(dv(l0, o + 8), dv(l1, o + 8)),
                             to_bf16x2(dv(l2, o), dv(l3, o)), to_bf16x2(dv(l2, o + 8), dv(l3, o + 8))};
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        const int kk = k + 8 * nt;
        const uint32_t b[2] = {to_bf16x2(xv(l0, kk), xv(l1, kk)), to_bf16x2(xv(l2, kk), xv(l3, kk))};
        mma_bf16(prod[nt], a, b);
      }
    }
  }

  __device__ void fold(bool absolute) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float p = prod[i][j];
        acc[i][j] = absolute ? __fadd_rn(acc[i][j], fabsf(p)) : __fmaf_rn(p, p, acc[i][j]);
        prod[i][j] = 0.0f;
      }
    }
  }

  // accumulator register i of n8 tile nt: row g (+8 when i >= 2), column 8 nt + 2t + (i & 1)
  template <class F>
  __device__ void for_each_output(F f) const {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        f(16 * (warp / 2) + g + 8 * (i >> 1), 32 * (warp % 2) + 8 * nt + 2 * t + (i & 1), acc[nt][i]);
      }
    }
  }
};

}  // namespace ssd_fast::cuda
