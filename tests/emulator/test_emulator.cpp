// The emulator itself (csrc/emulator): launch indices, barriers, shared memory, warp
// shuffles and votes against the CUDA Programming Guide's per-lane definitions, atomics,
// the fp16/bf16 converters, and that misuse stops the run with a message instead of
// hanging or passing silently. Exits non-zero on any failure.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../../csrc/cuda/kernels/device_api.h"
#include "../../csrc/emulator/float16.h"
#include "expect.h"

namespace {

using emu_test::expect;

// ---- launch geometry ----------------------------------------------------------------
__global__ void record_indices(int* seen, unsigned* where) {
  const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned id = block * blockDim.x * blockDim.y * blockDim.z + thread;
  atomicAdd(&seen[id], 1);
  where[id] = (blockIdx.x << 24) | (blockIdx.y << 16) | (blockIdx.z << 8) | (threadIdx.x << 4) | (threadIdx.y << 2) |
              threadIdx.z;
}

void test_indices() {
  const dim3 grid(3, 2, 2), block(5, 3, 2);
  const int n = 12 * 30;
  std::vector<int> seen(n, 0);
  std::vector<unsigned> where(n, 0);
  emu::launch(grid, block, record_indices, seen.data(), where.data());
  bool ok = true;
  for (int id = 0; id < n; ++id) {
    const int b = id / 30, t = id % 30;
    const unsigned want = ((b % 3) << 24) | ((b / 3 % 2) << 16) | ((b / 6) << 8) | ((t % 5) << 4) | ((t / 5 % 3) << 2) |
                          (t / 15);
    ok = ok && seen[id] == 1 && where[id] == want;
  }
  expect(ok, "every (block, thread) of a 3-d grid of 3-d blocks runs once with its own indices");
}

// ---- barriers and shared memory ---------------------------------------------------------
// Each thread writes its slot, then reads its neighbour's after the barrier: wrong without
// a working barrier. Then every thread adds into one shared word atomically.
__global__ void neighbour_sum(int* out) {
  SSD_FAST_SHARED(int, slots, [128]);
  SSD_FAST_SHARED(int, total, [1]);
  const int t = threadIdx.x;
  if (t == 0) total[0] = 0;
  slots[t] = t * 10 + static_cast<int>(blockIdx.x);
  __syncthreads();
  const int neighbour = slots[(t + 1) % blockDim.x];
  atomicAdd(&total[0], 1);
  __syncthreads();
  out[blockIdx.x * blockDim.x + t] = neighbour + 1000 * total[0];
}

// Reads shared memory that this block never wrote: the emulator fills it with 0xFF bytes
// before each block, so a kernel that relies on a previous block's data sees NaN.
__global__ void stale_shared(float* out) {
  SSD_FAST_SHARED(float, cell, [1]);
  if (blockIdx.x == 0 && threadIdx.x == 0) cell[0] = 42.0f;
  __syncthreads();
  if (threadIdx.x == 0) out[blockIdx.x] = cell[0];
}

void test_barriers_and_shared() {
  const int threads = 128, blocks = 3;
  std::vector<int> out(threads * blocks, 0);
  emu::launch(dim3(blocks), dim3(threads), neighbour_sum, out.data());
  bool ok = true;
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < threads; ++t) ok = ok && out[b * threads + t] == ((t + 1) % threads) * 10 + b + 1000 * threads;
  expect(ok, "__syncthreads orders shared-memory writes before reads; shared atomics add up");
  std::vector<float> cells(2, 0.0f);
  emu::launch(dim3(2), dim3(32), stale_shared, cells.data());
  expect(cells[0] == 42.0f && std::isnan(cells[1]), "shared memory is shared within a block and fresh (NaN) per block");
}

// ---- warp shuffles: per-lane definitions from the CUDA Programming Guide -------------------
int want_shfl(int mode, int lane, int arg, int width) {
  const int base = lane / width * width;
  switch (mode) {
    case 0: return base + arg % width;                                     // __shfl_sync(src)
    case 1: return lane % width < arg ? lane : lane - arg;                 // __shfl_up_sync(delta)
    case 2: return lane % width + arg >= width ? lane : lane + arg;        // __shfl_down_sync(delta)
    default: {                                                             // __shfl_xor_sync(mask)
      const int j = lane ^ arg;
      return j / width > lane / width ? lane : j;  // later groups are out of reach
    }
  }
}

__global__ void shuffle_all(int* out, int mode, int arg, int width) {
  const int lane = threadIdx.x % 32;
  const int value = 1000 * static_cast<int>(threadIdx.x / 32) + lane;
  int got = 0;
  switch (mode) {
    case 0: got = __shfl_sync(0xffffffffu, value, arg, width); break;
    case 1: got = __shfl_up_sync(0xffffffffu, value, arg, width); break;
    case 2: got = __shfl_down_sync(0xffffffffu, value, arg, width); break;
    default: got = __shfl_xor_sync(0xffffffffu, value, arg, width); break;
  }
  out[threadIdx.x] = got;
}

void test_shuffles() {
  const char* names[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync"};
  for (int mode = 0; mode < 4; ++mode) {
    bool ok = true;
    int cases = 0;
    for (int width = 1; width <= 32; width *= 2) {
      for (int arg = 0; arg < 33; arg += (arg < 8 ? 1 : 5)) {
        std::vector<int> out(64, -1);
        emu::launch(dim3(1), dim3(64), shuffle_all, out.data(), mode, arg, width);
        for (int t = 0; t < 64; ++t) ok = ok && out[t] == 1000 * (t / 32) + want_shfl(mode, t % 32, arg, width);
        ++cases;
      }
    }
    expect(ok, std::string(names[mode]) + ": every width and offset, two warps (" + std::to_string(cases) + " launches)");
  }
}

// 64-bit values, a 2-d block (warps are consecutive linear ids), ballot and votes.
__global__ void shuffle_wide(double* out, unsigned* ballots) {
  const int linear = threadIdx.x + blockDim.x * threadIdx.y;
  const double value = linear + 0.25;
  out[linear] = __shfl_down_sync(0xffffffffu, value, 3);
  const unsigned ballot = __ballot_sync(0xffffffffu, linear % 3 == 0);
  const int any = __any_sync(0xffffffffu, linear == 40);
  const int all = __all_sync(0xffffffffu, linear < 48);
  __syncwarp();
  if (linear % 32 == 0) ballots[linear / 32] = ballot ^ (any << 1) ^ (all << 2);
}

void test_wide_shuffles_and_votes() {
  std::vector<double> out(64, 0);
  std::vector<unsigned> ballots(2, 0);
  emu::launch(dim3(1), dim3(16, 4), shuffle_wide, out.data(), ballots.data());
  bool ok = true;
  for (int t = 0; t < 64; ++t) ok = ok && out[t] == (t % 32 + 3 < 32 ? t + 3 : t) + 0.25;
  unsigned want[2] = {0, 0};
  for (int t = 0; t < 64; ++t) want[t / 32] |= static_cast<unsigned>(t % 3 == 0) << (t % 32);
  want[0] ^= (0u << 1) ^ (1u << 2);  // no lane 40 in warp 0; all of warp 0 < 48
  want[1] ^= (1u << 1) ^ (0u << 2);
  ok = ok && ballots[0] == want[0] && ballots[1] == want[1];
  expect(ok, "64-bit shuffles, __ballot_sync / __any_sync / __all_sync in a 16 x 4 block");
}

// ---- fp32 intrinsics -------------------------------------------------------------------
void test_fp32_intrinsics() {
  const float a = 1.0f + 0x1p-23f, b = 1.0f - 0x1p-24f;
  // a*b = 1 + 2^-24 - 2^-47: fma keeps it all, a separate multiply rounds it to 1
  const float fused = __fmaf_rn(a, b, -1.0f), separate = __fadd_rn(__fmul_rn(a, b), -1.0f);
  const float denormal = __fmul_rn(0x1p-126f, 0.5f);
  expect(fused == 0x1p-24f - 0x1p-47f && separate == 0.0f && denormal == 0x1p-127f,
         "__fmaf_rn rounds once, __fmul_rn/__fadd_rn twice, denormals are kept");
}

// ---- fp16 / bf16 conversions -----------------------------------------------------------
// The nearest representable value to x among finite non-negative values given by bits
// 0..max_bits (sorted by value), ties to the even bit pattern; beyond the largest finite
// value by half an ulp or more, infinity. Independent of the converters' bit tricks.
template <class ToFloat>
uint16_t nearest(float x, uint16_t max_bits, uint16_t inf_bits, ToFloat to_float) {
  const double v = std::fabs(static_cast<double>(x));
  int lo = 0, hi = max_bits;
  while (lo < hi) {  // first pattern with value >= v
    const int mid = (lo + hi) / 2;
    if (to_float(static_cast<uint16_t>(mid)) < v) lo = mid + 1; else hi = mid;
  }
  uint16_t best;
  if (to_float(static_cast<uint16_t>(lo)) < v) {  // above the largest finite value
    const double top = to_float(max_bits), ulp = top - to_float(static_cast<uint16_t>(max_bits - 1));
    best = v >= top + ulp / 2 ? inf_bits : max_bits;
  } else if (lo == 0) {
    best = 0;
  } else {
    const double above = to_float(static_cast<uint16_t>(lo)) - v, below = v - to_float(static_cast<uint16_t>(lo - 1));
    best = static_cast<uint16_t>(above < below ? lo : below < above ? lo - 1 : (lo % 2 == 0 ? lo : lo - 1));
    if (lo == max_bits && above == 0) best = max_bits;
  }
  return static_cast<uint16_t>(best | (std::signbit(x) ? 0x8000 : 0));
}

void test_float16() {
  bool to_float_ok = true;
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = emu::float_from_half_bits(static_cast<uint16_t>(h));
    const uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
    const double want = (e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, static_cast<int>(e) - 25)) * (h & 0x8000 ? -1 : 1);
    if (e == 31) {
      to_float_ok = to_float_ok && (m == 0 ? std::isinf(f) : std::isnan(f));
    } else {
      to_float_ok = to_float_ok && f == want && std::signbit(f) == ((h & 0x8000) != 0);
    }
    const float bf = emu::float_from_bfloat16_bits(static_cast<uint16_t>(h));
    uint32_t bits;
    std::memcpy(&bits, &bf, 4);
    to_float_ok = to_float_ok && bits == h << 16;
  }
  expect(to_float_ok, "fp16 -> fp32 and bf16 -> fp32: all 65536 patterns exact");

  auto half_value = [](uint16_t b) { return static_cast<double>(emu::float_from_half_bits(b)); };
  auto bf16_value = [](uint16_t b) { return static_cast<double>(emu::float_from_bfloat16_bits(b)); };
  std::vector<float> xs;
  // every half and its neighbourhood: the midpoints between consecutive halves and one
  // fp32 ulp either side of them, where rounding decides
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    const float a = emu::float_from_half_bits(static_cast<uint16_t>(h));
    const float b = emu::float_from_half_bits(static_cast<uint16_t>(h + 1));
    const float mid = static_cast<float>((static_cast<double>(a) + b) / 2);
    for (float x : {a, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)}) {
      xs.push_back(x);
      xs.push_back(-x);
    }
  }
  std::mt19937 rng(3);
  std::uniform_int_distribution<uint32_t> any_bits;
  for (int i = 0; i < 400000; ++i) {
    uint32_t bits = any_bits(rng);
    float x;
    std::memcpy(&x, &bits, 4);
    if (!std::isnan(x)) xs.push_back(x);
  }
  for (float x : {0.0f, -0.0f, 65504.0f, 65519.99f, 65520.0f, INFINITY, -INFINITY, 0x1p-25f, 0x1.000002p-25f, 0x1p-26f})
    xs.push_back(x);
  bool half_ok = true, bf16_ok = true;
  for (float x : xs) {
    half_ok = half_ok && emu::half_bits_from_float(x) == nearest(x, 0x7bff, 0x7c00, half_value);
    bf16_ok = bf16_ok && emu::bfloat16_bits_from_float(x) == nearest(x, 0x7f7f, 0x7f80, bf16_value);
  }
  expect(half_ok, "fp32 -> fp16: nearest, ties to even, overflow to inf (" + std::to_string(xs.size()) + " values)");
  expect(bf16_ok, "fp32 -> bf16: nearest, ties to even, overflow to inf");
  expect(std::isnan(static_cast<float>(emu::Half(NAN))) && std::isnan(static_cast<float>(emu::BFloat16(NAN))),
         "NaN stays NaN in fp16 and bf16");
}

// ---- misuse stops the run --------------------------------------------------------------
__global__ void divergent_barrier() {
  if (threadIdx.x < 16) __syncthreads();
}
__global__ void partial_mask_shuffle(int* out) { out[threadIdx.x] = __shfl_down_sync(0x0000ffffu, 1, 1); }
__global__ void too_much_shared() {
  SSD_FAST_SHARED(float, big, [300 * 1024 / 4]);
  big[threadIdx.x] = 0;
}

// Runs `body` in a child process; true when it dies of abort() with `message` on stderr.
template <class Body>
bool stops_with(const char* message, Body body) {
  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) return false;
  std::fflush(stdout);
  const pid_t child = fork();
  if (child == 0) {
    dup2(pipe_fds[1], 2);
    close(pipe_fds[0]);
    body();
    _exit(0);
  }
  close(pipe_fds[1]);
  std::string err;
  char buffer[512];
  for (ssize_t n; (n = read(pipe_fds[0], buffer, sizeof(buffer))) > 0;) err.append(buffer, static_cast<size_t>(n));
  close(pipe_fds[0]);
  int status = 0;
  waitpid(child, &status, 0);
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT && err.find(message) != std::string::npos;
}

void test_misuse_stops() {
  expect(stops_with("disagree at a barrier", [] { emu::launch(dim3(1), dim3(32), divergent_barrier); }),
         "a __syncthreads reached by only some threads stops the run");
  expect(stops_with("full-warp masks only",
                    [] {
                      int out[32];
                      emu::launch(dim3(1), dim3(32), partial_mask_shuffle, out);
                    }),
         "a shuffle with a partial mask stops the run");
  expect(stops_with("more shared memory", [] { emu::launch(dim3(1), dim3(32), too_much_shared); }),
         "more than 228 KB of shared memory stops the run");
  expect(stops_with("empty grid", [] { emu::launch(dim3(0), dim3(32), divergent_barrier); }),
         "an empty grid is refused, as CUDA does");
}

}  // namespace

int main() {
  test_indices();
  test_barriers_and_shared();
  test_shuffles();
  test_wide_shuffles_and_votes();
  test_fp32_intrinsics();
  test_float16();
  test_misuse_stops();
  return emu_test::finish();
}
