// Warp-level tensor-core operations for the emulator, written from the PTX ISA:
//   mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32   (section "Matrix Fragments for mma.m16n8k8")
//   mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32  ("... for mma.m16n8k16 with floating point type")
//   cvt.rna.tf32.f32 and cvt.rn.bf16x2.f32, the conversions that make their operands.
//
// Each lane holds its fragment registers; the warp meets (emu::warp_gather), every lane
// sees all 32 lanes' registers, rebuilds A (16 x K), B (K x 8) and C (16 x 8) from the
// documented (row, col) of each register, and keeps its own part of D = A B + C.
//
// Fragment layouts, with groupID = lane >> 2 and tig = lane % 4 (threadID_in_group):
//   m16n8k8 tf32   A: a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4)
//                  B: b0 (t, g), b1 (t+4, g)
//   m16n8k16 bf16  A: register r holds elements 2r (low 16 bits) and 2r+1 (high); element i
//                     sits at row g (+8 when i is 2, 3, 6 or 7), col 2t + (i & 1) (+8 when i >= 4)
//                  B: register r holds elements 2r, 2r+1; element i at row 2t + (i & 1)
//                     (+8 when i >= 2), col g
//   both           C, D: c_i at row g (+8 when i >= 2), col 2t + (i & 1)
//
// Rounding. tf32 operands: the ISA leaves the low 13 bits of a .tf32 operand unspecified
// in effect (an operand should come from cvt.rna.tf32.f32); the emulator ignores them
// (truncates), so a kernel that forgets the conversion gets a visibly worse result here,
// never a better one. bf16 operands are exact. Products of two tf32 (11-bit significands)
// or two bf16 values (8-bit) are exact in fp32. The ISA does not document the order or
// the intermediate precision in which the K products and C are added; the emulator adds
// them exactly (in fp64, whose rounding is negligible here) and rounds once to fp32. The
// hardware's result may differ by a few fp32 ulps of the partial sums, so tests of kernels
// built on these compare with an fp64 oracle within a bound that allows any order with a
// relative error of 2^-23 (truncation) per addition, never bit for bit.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

#include "cuda_emulator.h"
#include "float16.h"

namespace emu {

// cvt.rna.tf32.f32: to the nearest tf32 (10 explicit mantissa bits), ties away from zero,
// as an fp32 bit pattern whose low 13 bits are 0. NaN stays NaN, infinities stay.
inline uint32_t cvt_rna_tf32(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  if ((u & 0x7f800000u) == 0x7f800000u) return (u & 0x007fffffu) != 0 ? 0x7fffffffu : u;
  return (u + 0x1000u) & 0xffffe000u;  // sign-magnitude: adding half an ulp rounds ties away
}

inline float tf32_value(uint32_t bits) { return std::bit_cast<float>(bits & 0xffffe000u); }

// cvt.rn.bf16x2.f32 d, hi, lo: two fp32 to bf16 (nearest, ties to even), lo in the low half.
inline uint32_t cvt_rn_bf16x2(float hi, float lo) {
  return (static_cast<uint32_t>(bfloat16_bits_from_float(hi)) << 16) | bfloat16_bits_from_float(lo);
}

inline float bf16_value(uint32_t reg, int half) {
  return float_from_bfloat16_bits(static_cast<uint16_t>(half == 0 ? reg & 0xffffu : reg >> 16));
}

struct MmaLaneRegs {
  uint32_t a[4];
  uint32_t b[2];
  float c[4];
};

// The (row, col) of each fragment element, as the ISA tables give them.
struct FragPos {
  int row, col;
};
inline FragPos tf32_a_pos(int lane, int i) { return {(lane >> 2) + 8 * (i & 1), (lane & 3) + 4 * (i >> 1)}; }
inline FragPos tf32_b_pos(int lane, int i) { return {(lane & 3) + 4 * i, lane >> 2}; }
inline FragPos bf16_a_pos(int lane, int i) {
  return {(lane >> 2) + ((i == 2 || i == 3 || i == 6 || i == 7) ? 8 : 0), 2 * (lane & 3) + (i & 1) + (i >= 4 ? 8 : 0)};
}
inline FragPos bf16_b_pos(int lane, int i) { return {2 * (lane & 3) + (i & 1) + (i >= 2 ? 8 : 0), lane >> 2}; }
inline FragPos acc_pos(int lane, int i) { return {(lane >> 2) + (i >= 2 ? 8 : 0), 2 * (lane & 3) + (i & 1)}; }

// D = A B + C for this lane's part, A 16 x K, B K x 8; `a_value(regs, i)` is element i of a
// lane's A fragment (K = 8: 4 elements, K = 16: 8), likewise b_value.
template <int K, class AValue, class BValue, class APos, class BPos>
inline void mma_warp(float d[4], const MmaLaneRegs& mine, const char* what, AValue a_value, BValue b_value, APos a_pos,
                     BPos b_pos) {
  warp_gather(mine, what, [&](const MmaLaneRegs* all) {
    double a[16][K] = {}, b[K][8] = {}, c[16][8] = {};
    for (int lane = 0; lane < 32; ++lane) {
      for (int i = 0; i < K / 2; ++i) {
        const FragPos p = a_pos(lane, i);
        a[p.row][p.col] = a_value(all[lane], i);
      }
      for (int i = 0; i < K / 4; ++i) {
        const FragPos p = b_pos(lane, i);
        b[p.row][p.col] = b_value(all[lane], i);
      }
      for (int i = 0; i < 4; ++i) {
        const FragPos p = acc_pos(lane, i);
        c[p.row][p.col] = all[lane].c[i];
      }
    }
    for (int i = 0; i < 4; ++i) {
      const FragPos p = acc_pos(current_thread.lane, i);
      double sum = c[p.row][p.col];
      for (int k = 0; k < K; ++k) sum += a[p.row][k] * b[k][p.col];
      d[i] = static_cast<float>(sum);
    }
  });
}

inline void mma_m16n8k8_tf32(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
  const MmaLaneRegs mine{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}, {c[0], c[1], c[2], c[3]}};
  mma_warp<8>(
      d, mine, "mma.sync.m16n8k8.tf32", [](const MmaLaneRegs& r, int i) { return tf32_value(r.a[i]); },
      [](const MmaLaneRegs& r, int i) { return tf32_value(r.b[i]); }, tf32_a_pos, tf32_b_pos);
}

inline void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
  const MmaLaneRegs mine{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}, {c[0], c[1], c[2], c[3]}};
  mma_warp<16>(
      d, mine, "mma.sync.m16n8k16.bf16", [](const MmaLaneRegs& r, int i) { return bf16_value(r.a[i / 2], i & 1); },
      [](const MmaLaneRegs& r, int i) { return bf16_value(r.b[i / 2], i & 1); }, bf16_a_pos, bf16_b_pos);
}

}  // namespace emu
