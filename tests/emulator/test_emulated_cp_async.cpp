// The emulator's cp.async (csrc/emulator/cp_async_emulator.h), through the kernels' wrappers
// where they exist, against the PTX ISA's description:
//   - src-size < cp-size zero-fills the rest; src-size 0 reads nothing;
//   - a copy lands no earlier than the wait_group that covers its group (the emulator's
//     choice: the latest moment the ISA allows), and wait_group N leaves the N most recent
//     committed groups pending, uncommitted copies too;
//   - after wait_all and __syncthreads, every thread of the block sees every copy;
//   - bad sizes and misaligned addresses stop the run (checked in a child process would be
//     needed to observe an abort, so only the legal paths run here).
// Exits non-zero on any failure.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "../../csrc/cuda/kernels/per_sample_sq.cuh"
#include "expect.h"

namespace {

using emu_test::expect;

struct alignas(16) Row16 {
  float v[4];
};

// One thread: the order of landing, group by group.
__global__ void groups_kernel(const float* src, float* seen) {
  SSD_FAST_SHARED(float, tile, [8]);
  for (int i = 0; i < 8; ++i) tile[i] = -1.0f;
  emu::cp_async(&tile[0], &src[0], 4, 4);
  emu::cp_async_commit_group();                 // group A: tile[0]
  emu::cp_async(&tile[1], &src[1], 4, 4);
  emu::cp_async_commit_group();                 // group B: tile[1]
  emu::cp_async(&tile[2], &src[2], 4, 4);       // uncommitted: tile[2]
  seen[0] = tile[0];                            // nothing waited for: old value
  emu::cp_async_wait_group(1);                  // A done, B may pend
  seen[1] = tile[0];
  seen[2] = tile[1];
  seen[3] = tile[2];
  emu::cp_async_wait_group(0);                  // B done; the uncommitted copy still pends
  seen[4] = tile[1];
  seen[5] = tile[2];
  emu::cp_async_wait_all();                     // commits and waits for it
  seen[6] = tile[2];
}

// 16-byte copies with src-size 16, 8 and 0 (zero-fill), by one thread.
__global__ void zero_fill_kernel(const Row16* src, float* seen) {
  SSD_FAST_SHARED(Row16, tile, [3]);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) tile[i].v[j] = -1.0f;
  emu::cp_async(&tile[0], &src[0], 16, 16);
  emu::cp_async(&tile[1], &src[1], 16, 8);
  emu::cp_async(&tile[2], &src[2], 16, 0);
  emu::cp_async_wait_all();
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) seen[i * 4 + j] = tile[i].v[j];
}

// 64 threads each copy one element through the kernels' wrapper (odd threads: invalid, 0),
// wait, meet at a barrier, then read their neighbour's element.
__global__ void block_kernel(const float* src, float* out) {
  SSD_FAST_SHARED(float, tile, [64]);
  const int t = threadIdx.x;
  ssd_fast::cuda::copy_async_f32(&tile[t], &src[t], t % 2 == 0);
  ssd_fast::cuda::copy_async_wait_all();
  __syncthreads();
  out[t] = tile[(t + 1) % 64];
}

}  // namespace

int main() {
  const float src[8] = {10, 11, 12, 13, 14, 15, 16, 17};
  std::vector<float> seen(8, std::nanf(""));
  emu::launch(dim3(1), dim3(1), groups_kernel, src, seen.data());
  expect(seen[0] == -1.0f, "a copy has not landed before any wait");
  expect(seen[1] == 10.0f && seen[2] == -1.0f, "wait_group 1 completes the older group only");
  expect(seen[3] == -1.0f, "wait_group leaves uncommitted copies pending");
  expect(seen[4] == 11.0f && seen[5] == -1.0f, "wait_group 0 completes every committed group, not the open one");
  expect(seen[6] == 12.0f, "wait_all commits and completes the open copies");

  const Row16 rows[3] = {{{1, 2, 3, 4}}, {{5, 6, 7, 8}}, {{9, 10, 11, 12}}};
  std::vector<float> filled(12, std::nanf(""));
  emu::launch(dim3(1), dim3(1), zero_fill_kernel, rows, filled.data());
  const float want[12] = {1, 2, 3, 4, 5, 6, 0, 0, 0, 0, 0, 0};
  expect(std::memcmp(filled.data(), want, sizeof(want)) == 0, "src-size 8 and 0 of 16: the rest is zero-filled");

  std::vector<float> in(64), out(64, std::nanf(""));
  for (int i = 0; i < 64; ++i) in[i] = static_cast<float>(i + 100);
  emu::launch(dim3(1), dim3(64), block_kernel, static_cast<const float*>(in.data()), out.data());
  bool ok = true;
  for (int t = 0; t < 64; ++t) {
    const int n = (t + 1) % 64;
    ok = ok && out[t] == (n % 2 == 0 ? in[n] : 0.0f);
  }
  expect(ok, "after wait_all and __syncthreads every thread sees every copy (invalid ones as 0)");

  return emu_test::finish();
}
