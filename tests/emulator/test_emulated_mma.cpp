// The emulator's tensor-core operations (csrc/emulator/mma_emulator.h) through the kernels'
// own wrappers (csrc/cuda/kernels/per_sample_sq_mma.cuh), checked against the PTX ISA:
//   - cvt.rna.tf32.f32 rounds to nearest with ties away from zero; cvt.rn.bf16x2.f32 to
//     nearest even, the first operand in the high half;
//   - the fragment layouts: each lane loads its registers from whole matrices by the ISA's
//     per-register (row, col) formulas, written out again here, the warp runs one mma, and
//     D must equal A B + C exactly (small integers: every product and sum is exact), for
//     several random matrices; and the emulator's own position tables must cover every
//     matrix element exactly once;
//   - a tf32 operand that skipped the conversion has its low 13 bits ignored.
// Exits non-zero on any failure.
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "../../csrc/cuda/kernels/per_sample_sq_mma.cuh"
#include "expect.h"

namespace {

using emu_test::expect;

using namespace ssd_fast::cuda;

uint32_t bits(float v) { return std::bit_cast<uint32_t>(v); }
float from_bits(uint32_t b) { return std::bit_cast<float>(b); }

// One warp: D (16 x 8) = A (16 x 8, tf32) B (8 x 8) + C, all row-major fp32, by the ISA's
// m16n8k8 .tf32 layout: groupID g = lane >> 2, t = lane % 4.
__global__ void mma_tf32_kernel(const float* a, const float* b, const float* c, float* d, bool convert) {
  const int lane = threadIdx.x, g = lane >> 2, t = lane % 4;
  auto op = [&](float v) { return convert ? to_tf32(v) : bits(v); };
  const uint32_t ra[4] = {op(a[g * 8 + t]), op(a[(g + 8) * 8 + t]), op(a[g * 8 + t + 4]), op(a[(g + 8) * 8 + t + 4])};
  const uint32_t rb[2] = {op(b[t * 8 + g]), op(b[(t + 4) * 8 + g])};
  float acc[4] = {c[g * 8 + 2 * t], c[g * 8 + 2 * t + 1], c[(g + 8) * 8 + 2 * t], c[(g + 8) * 8 + 2 * t + 1]};
  mma_tf32(acc, ra, rb);
  d[g * 8 + 2 * t] = acc[0];
  d[g * 8 + 2 * t + 1] = acc[1];
  d[(g + 8) * 8 + 2 * t] = acc[2];
  d[(g + 8) * 8 + 2 * t + 1] = acc[3];
}

// One warp: D (16 x 8) = A (16 x 16, bf16) B (16 x 8) + C by the ISA's m16n8k16 layout.
__global__ void mma_bf16_kernel(const float* a, const float* b, const float* c, float* d) {
  const int lane = threadIdx.x, g = lane >> 2, t = lane % 4;
  auto pa = [&](int row, int col) { return to_bf16x2(a[row * 16 + col], a[row * 16 + col + 1]); };
  auto pb = [&](int row, int col) { return to_bf16x2(b[row * 8 + col], b[(row + 1) * 8 + col]); };
  // A: a0,a1 (g, 2t..2t+1); a2,a3 (g+8, 2t..); a4,a5 (g, 2t+8..); a6,a7 (g+8, 2t+8..)
  const uint32_t ra[4] = {pa(g, 2 * t), pa(g + 8, 2 * t), pa(g, 2 * t + 8), pa(g + 8, 2 * t + 8)};
  // B: b0,b1 (2t..2t+1, g); b2,b3 (2t+8..2t+9, g)
  const uint32_t rb[2] = {pb(2 * t, g), pb(2 * t + 8, g)};
  float acc[4] = {c[g * 8 + 2 * t], c[g * 8 + 2 * t + 1], c[(g + 8) * 8 + 2 * t], c[(g + 8) * 8 + 2 * t + 1]};
  mma_bf16(acc, ra, rb);
  d[g * 8 + 2 * t] = acc[0];
  d[g * 8 + 2 * t + 1] = acc[1];
  d[(g + 8) * 8 + 2 * t] = acc[2];
  d[(g + 8) * 8 + 2 * t + 1] = acc[3];
}

std::vector<float> random_integers(size_t n, int range, std::mt19937& rng) {
  std::uniform_int_distribution<int> v(-range, range);
  std::vector<float> out(n);
  for (auto& x : out) x = static_cast<float>(v(rng));
  return out;
}

// D = A B + C in fp64 (exact for these integers), A m x k, B k x 8.
std::vector<double> reference(const std::vector<float>& a, const std::vector<float>& b, const std::vector<float>& c,
                              int m, int k) {
  std::vector<double> d(static_cast<size_t>(m) * 8);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < 8; ++j) {
      double s = c[i * 8 + j];
      for (int l = 0; l < k; ++l) s += static_cast<double>(a[i * k + l]) * b[l * 8 + j];
      d[i * 8 + j] = s;
    }
  return d;
}

bool equal(const std::vector<float>& d, const std::vector<double>& want) {
  for (size_t i = 0; i < d.size(); ++i) {
    if (static_cast<double>(d[i]) != want[i]) return false;
  }
  return true;
}

template <class Pos>
bool covers_once(Pos pos, int per_lane, int rows, int cols) {
  std::set<std::pair<int, int>> seen;
  for (int lane = 0; lane < 32; ++lane)
    for (int i = 0; i < per_lane; ++i) {
      const emu::FragPos p = pos(lane, i);
      if (p.row < 0 || p.row >= rows || p.col < 0 || p.col >= cols || !seen.insert({p.row, p.col}).second) return false;
    }
  return static_cast<int>(seen.size()) == rows * cols;
}

}  // namespace

int main() {
  // cvt.rna.tf32.f32: 1 + 2^-11 is a tie between 1 and 1 + 2^-10; away from zero gives the
  // latter (to nearest even would give 1)
  expect(emu::cvt_rna_tf32(from_bits(0x3f801000u)) == 0x3f802000u, "tf32: a tie rounds away from zero (+)");
  expect(emu::cvt_rna_tf32(from_bits(0xbf801000u)) == 0xbf802000u, "tf32: a tie rounds away from zero (-)");
  expect(emu::cvt_rna_tf32(from_bits(0x3f800fffu)) == 0x3f800000u, "tf32: below half an ulp rounds down");
  expect(emu::cvt_rna_tf32(from_bits(0x3f801001u)) == 0x3f802000u, "tf32: above half an ulp rounds up");
  expect(emu::cvt_rna_tf32(from_bits(0x7f800000u)) == 0x7f800000u, "tf32: +inf stays");
  expect(std::isnan(from_bits(emu::cvt_rna_tf32(std::nanf("")))), "tf32: NaN stays NaN");
  // cvt.rn.bf16x2.f32 d, hi, lo: 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even gives 1
  expect(emu::cvt_rn_bf16x2(-2.0f, 1.0f) == 0xc0003f80u, "bf16x2: first operand in the high half");
  expect(emu::cvt_rn_bf16x2(from_bits(0x3f818000u), from_bits(0x3f808000u)) == 0x3f823f80u,
         "bf16x2: ties to even");

  expect(covers_once(emu::tf32_a_pos, 4, 16, 8), "m16n8k8 tf32 A positions cover 16 x 8 once");
  expect(covers_once(emu::tf32_b_pos, 2, 8, 8), "m16n8k8 tf32 B positions cover 8 x 8 once");
  expect(covers_once(emu::bf16_a_pos, 8, 16, 16), "m16n8k16 bf16 A positions cover 16 x 16 once");
  expect(covers_once(emu::bf16_b_pos, 4, 16, 8), "m16n8k16 bf16 B positions cover 16 x 8 once");
  expect(covers_once(emu::acc_pos, 4, 16, 8), "C/D positions cover 16 x 8 once");

  std::mt19937 rng(99);
  bool tf32_ok = true, bf16_ok = true;
  for (int trial = 0; trial < 8; ++trial) {
    const auto a = random_integers(16 * 8, 40, rng), b = random_integers(8 * 8, 40, rng),
               c = random_integers(16 * 8, 1000, rng);
    std::vector<float> d(16 * 8, std::nanf(""));
    emu::launch(dim3(1), dim3(32), mma_tf32_kernel, a.data(), b.data(), c.data(), d.data(), true);
    tf32_ok = tf32_ok && equal(d, reference(a, b, c, 16, 8));
    const auto a2 = random_integers(16 * 16, 40, rng), b2 = random_integers(16 * 8, 40, rng);
    std::vector<float> d2(16 * 8, std::nanf(""));
    emu::launch(dim3(1), dim3(32), mma_bf16_kernel, a2.data(), b2.data(), c.data(), d2.data());
    bf16_ok = bf16_ok && equal(d2, reference(a2, b2, c, 16, 16));
  }
  expect(tf32_ok, "mma m16n8k8 tf32: D = A B + C exactly, 8 random integer problems, ISA layouts");
  expect(bf16_ok, "mma m16n8k16 bf16: D = A B + C exactly, 8 random integer problems, ISA layouts");

  // operands that skipped cvt.rna: 1 + 2^-20 has bits below tf32's, which are ignored
  std::vector<float> a(16 * 8, 0.0f), b(8 * 8, 0.0f), c(16 * 8, 0.0f), d(16 * 8, std::nanf(""));
  a[0] = 1.0f + 0x1p-20f;
  b[0] = 1.0f;
  emu::launch(dim3(1), dim3(32), mma_tf32_kernel, a.data(), b.data(), c.data(), d.data(), false);
  expect(d[0] == 1.0f, "mma tf32: the low 13 bits of an unconverted operand are ignored");

  return emu_test::finish();
}
