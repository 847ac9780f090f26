// A CUDA emulator for the CPU: it lets g++ compile the device code of csrc/cuda/kernels/
// unchanged and run it, so that every kernel is tested in CI without a GPU.
//
// The model, kept as close to the hardware's as a CPU allows:
// - A launch runs its blocks one after another. Each block's threads are real std::threads
//   (one per CUDA thread, reused from block to block), so a missing barrier is a real race
//   that changes results, and ThreadSanitizer sees it.
// - threadIdx, blockIdx, blockDim and gridDim are thread_locals.
// - __syncthreads() is a barrier of the block's threads. If some threads reach it while
//   others have left the kernel (divergent barrier), the emulator stops with a message
//   instead of hanging.
// - Shared memory (SSD_FAST_SHARED, see csrc/cuda/kernels/device_api.h) comes from a
//   per-block arena: the same storage for all threads of a block, filled with 0xFF bytes
//   (NaN for floats) before each block starts, like uninitialised shared memory.
// - A warp is 32 consecutive threads of the block (linear id x + y*X + z*X*Y). Warp
//   intrinsics (shuffles, votes, __syncwarp) follow the PTX ISA's shfl.sync / vote.sync
//   semantics: all lanes named by the mask meet at a per-warp rendezvous and exchange
//   values. The mask must name exactly the warp's existing lanes (full-warp use, the only
//   kind the kernels need); anything else stops with a message.
// - Arithmetic keeps fp32 semantics identical to the GPU's: build with -ffp-contract=off
//   (no silent fused multiply-add), __fmaf_rn is std::fma, denormals are kept (never
//   -ffast-math), and x86-64 SSE arithmetic has no excess precision.
// - One launch runs at a time (a global lock), like a single stream.
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

// ---- keywords ------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __grid_constant__
#define __launch_bounds__(...)
// __restrict__ is a GNU keyword already. __shared__ is deliberately left undefined: shared
// arrays are declared with SSD_FAST_SHARED, which the emulator maps to its block arena.

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;
constexpr int warpSize = 32;

// ---- vector types (same size and alignment as CUDA's) ---------------------------------
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) double2 { double x, y; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(16) uint4 { unsigned x, y, z, w; };

// ---- correctly rounded fp32 intrinsics ----------------------------------------------
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }

template <class T>
inline T __ldg(const T* p) {
  return *p;
}

namespace emu {

[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "cuda emulator: %s\n", what);
  std::fflush(stderr);
  std::abort();
}

// A reusable barrier for a fixed number of threads. Each arrival carries a tag (what the
// thread was doing); if one generation mixes tags, the threads disagree about which
// barrier they are at, which on a GPU is undefined (a hang or silent corruption), so it
// stops the run. A wait longer than the timeout is reported as a deadlock.
class Barrier {
 public:
  explicit Barrier(int count) : count_(count) {}

  // `completion` runs once per generation, in the last thread to arrive, before any
  // thread is released.
  template <class F = void (*)()>
  void arrive_and_wait(const char* tag, F completion = [] {}) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (arrived_ == 0) {
      tag_ = tag;
    } else if (std::strcmp(tag, tag_) != 0) {
      char message[256];
      std::snprintf(message, sizeof(message), "threads of one block/warp disagree at a barrier: '%s' and '%s'", tag_,
                    tag);
      fail(message);
    }
    const uint64_t generation = generation_;
    if (++arrived_ == count_) {
      completion();
      arrived_ = 0;
      ++generation_;
      released_.notify_all();
      return;
    }
    const auto timeout = std::chrono::seconds(120);
    if (!released_.wait_for(lock, timeout, [&] { return generation_ != generation; })) {
      char message[256];
      std::snprintf(message, sizeof(message), "deadlock: %d of %d threads waited %llds at '%s'", arrived_, count_,
                    static_cast<long long>(timeout.count()), tag_);
      fail(message);
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable released_;
  int count_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  const char* tag_ = "";
};

// The lanes of one warp: a rendezvous and two alternating exchange buffers. Two buffers
// suffice: a lane can only start writing the buffer of exchange n+2 after every lane has
// arrived at exchange n+1, so all reads of exchange n are over.
struct Warp {
  explicit Warp(int lanes) : barrier(lanes), lanes(lanes) {}
  Barrier barrier;
  int lanes;
  uint64_t slots[2][32] = {};
  unsigned masks[2][32] = {};
  unsigned char blobs[2][32][64] = {};  // warp_gather's larger exchanges (mma.sync fragments)
};

// Storage shared by one block's threads.
class BlockArena {
 public:
  static constexpr size_t kCapacity = 228 * 1024;  // an sm_90 multiprocessor's shared memory

  BlockArena() : bytes_(new unsigned char[kCapacity]) {}

  // Called with no kernel thread running: fresh storage for the next block.
  void reset(size_t dynamic_bytes) {
    std::memset(bytes_.get(), 0xFF, used_ == 0 ? kCapacity : used_);
    sites_.clear();
    used_ = 0;
    dynamic_ = dynamic_bytes == 0 ? nullptr : allocate(dynamic_bytes, 16);
  }

  // The storage of the declaration identified by `site`: allocated by the block's first
  // thread to reach it, the same address for every other thread of the block.
  void* get(const void* site, size_t bytes, size_t align) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [key, at] : sites_) {
      if (key == site) return at;
    }
    void* at = allocate(bytes, align);
    sites_.emplace_back(site, at);
    return at;
  }

  void* dynamic() const {
    if (dynamic_ == nullptr) fail("dynamic shared memory used but the launch asked for 0 bytes");
    return dynamic_;
  }

 private:
  void* allocate(size_t bytes, size_t align) {
    align = std::max<size_t>(align, 16);
    const size_t at = (used_ + align - 1) / align * align;
    if (at + bytes > kCapacity) fail("a block uses more shared memory than an sm_90 multiprocessor has");
    used_ = at + bytes;
    return bytes_.get() + at;
  }

  std::unique_ptr<unsigned char[]> bytes_;
  std::mutex mutex_;
  std::vector<std::pair<const void*, void*>> sites_;
  size_t used_ = 0;
  void* dynamic_ = nullptr;
};

struct Block {
  Block(int threads, size_t dynamic_bytes) : barrier(threads), dynamic_bytes(dynamic_bytes) {
    for (int first = 0; first < threads; first += 32) warps.push_back(std::make_unique<Warp>(std::min(32, threads - first)));
  }
  Barrier barrier;
  BlockArena arena;
  std::vector<std::unique_ptr<Warp>> warps;
  size_t dynamic_bytes;
};

struct ThreadState {
  Block* block = nullptr;
  int lane = 0;
  int warp = 0;
  uint64_t warp_ops = 0;  // warp exchanges so far in this block: picks the buffer
};
inline thread_local ThreadState current_thread;

inline Block& current_block() {
  if (current_thread.block == nullptr) fail("a device function ran outside a kernel launch");
  return *current_thread.block;
}

inline unsigned existing_lanes(const Warp& w) { return w.lanes == 32 ? 0xffffffffu : (1u << w.lanes) - 1; }

// All lanes publish `value`, meet, and each gets back the 32 published values (read
// through `read`, before the next exchange may overwrite them).
template <class Read>
inline void warp_exchange(unsigned mask, uint64_t value, const char* what, Read read) {
  Block& block = current_block();
  Warp& w = *block.warps[current_thread.warp];
  if (mask != existing_lanes(w)) {
    char message[256];
    std::snprintf(message, sizeof(message),
                  "%s with mask 0x%08x in a warp whose lanes are 0x%08x: the emulator supports full-warp masks only",
                  what, mask, existing_lanes(w));
    fail(message);
  }
  const int buffer = static_cast<int>(current_thread.warp_ops++ & 1);
  w.slots[buffer][current_thread.lane] = value;
  w.masks[buffer][current_thread.lane] = mask;
  w.barrier.arrive_and_wait(what);
  for (int lane = 0; lane < w.lanes; ++lane) {
    if (w.masks[buffer][lane] != mask) fail("the lanes of one warp passed different masks to a warp intrinsic");
  }
  read(w.slots[buffer]);
}

// All 32 lanes of a full warp publish `mine` (up to 64 bytes), meet, and each reads the 32
// published values through `read(const T* all)`. The same alternating buffers as
// warp_exchange (one counter for both keeps the argument above valid).
template <class T, class Read>
inline void warp_gather(const T& mine, const char* what, Read read) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 64, "warp_gather moves up to 64 bytes per lane");
  Block& block = current_block();
  Warp& w = *block.warps[current_thread.warp];
  if (w.lanes != 32) fail("a warp-collective matrix operation needs a full warp of 32 threads");
  const int buffer = static_cast<int>(current_thread.warp_ops++ & 1);
  std::memcpy(w.blobs[buffer][current_thread.lane], &mine, sizeof(T));
  w.barrier.arrive_and_wait(what);
  T all[32];
  for (int lane = 0; lane < 32; ++lane) std::memcpy(&all[lane], w.blobs[buffer][lane], sizeof(T));
  read(static_cast<const T*>(all));
}

inline void sync_block(const char* tag) { current_block().barrier.arrive_and_wait(tag); }

// PTX shfl.sync.{up,down,bfly,idx}.b32 d, a, b, c, membermask, lane by lane:
//   segmask = c[12:8], cval = c[4:0]; minLane = lane & segmask;
//   maxLane = minLane | (cval & ~segmask);
//   up: j = lane - b, valid j >= maxLane;   down: j = lane + b, valid j <= maxLane;
//   bfly: j = lane ^ b, valid j <= maxLane; idx: j = minLane | (b & ~segmask), valid j <= maxLane;
//   an invalid j reads the lane's own value.
enum class ShflMode { kUp, kDown, kBfly, kIdx };

inline int shfl_source_lane(ShflMode mode, int lane, unsigned b, unsigned c) {
  const int segmask = static_cast<int>((c >> 8) & 0x1f), cval = static_cast<int>(c & 0x1f);
  const int min_lane = lane & segmask;
  const int max_lane = min_lane | (cval & ~segmask);
  const int bb = static_cast<int>(b & 0x1f);
  int j = lane;
  bool valid = false;
  switch (mode) {
    case ShflMode::kUp: j = lane - static_cast<int>(b); valid = j >= max_lane; break;
    case ShflMode::kDown: j = lane + static_cast<int>(b); valid = j <= max_lane; break;
    case ShflMode::kBfly: j = lane ^ bb; valid = j <= max_lane; break;
    case ShflMode::kIdx: j = min_lane | (bb & ~segmask); valid = j <= max_lane; break;
  }
  return valid ? j : lane;
}

template <class T>
inline T shfl_sync(ShflMode mode, unsigned mask, T value, unsigned b, unsigned c, const char* what) {
  static_assert(std::is_trivially_copyable_v<T> && (sizeof(T) == 4 || sizeof(T) == 8),
                "shuffles move 32- or 64-bit values");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  const int source = shfl_source_lane(mode, current_thread.lane, b, c);
  if (source >= current_block().warps[current_thread.warp]->lanes) fail("a shuffle read a lane that does not exist");
  T out;
  warp_exchange(mask, bits, what, [&](const uint64_t* slots) { std::memcpy(&out, &slots[source], sizeof(T)); });
  return out;
}

// CUDA's width argument in terms of PTX's c operand, as the CUDA headers encode it.
inline unsigned shfl_c(int width, bool up) {
  if (width < 1 || width > 32 || (width & (width - 1)) != 0) fail("shuffle width must be a power of two <= 32");
  return (static_cast<unsigned>(32 - width) << 8) | (up ? 0u : 0x1fu);
}

// Kernel arguments are copied once per launch, like CUDA's parameter buffer, and every
// thread calls the kernel with that copy.
struct LaunchConfig {
  dim3 grid;
  dim3 block;
  size_t dynamic_shared_bytes = 0;
};

inline std::mutex& launch_mutex() {
  static std::mutex m;
  return m;
}

inline void check_config(const LaunchConfig& c) {
  const uint64_t threads = uint64_t{c.block.x} * c.block.y * c.block.z;
  if (threads == 0 || threads > 1024 || c.block.z > 64) fail("invalid block size (1..1024 threads, z <= 64)");
  if (c.grid.x == 0 || c.grid.y == 0 || c.grid.z == 0) fail("empty grid: CUDA refuses a launch with no blocks");
  if (c.grid.y > 65535 || c.grid.z > 65535 || c.grid.x > 0x7fffffffu) fail("grid exceeds CUDA's limits");
}

template <class Kernel, class... Args>
void launch(const LaunchConfig& config, Kernel kernel, Args... args) {
  check_config(config);
  std::lock_guard<std::mutex> one_at_a_time(launch_mutex());
  const int threads = static_cast<int>(config.block.x * config.block.y * config.block.z);
  Block block(threads, config.dynamic_shared_bytes);
  const auto params = std::make_tuple(args...);
  const uint64_t blocks = uint64_t{config.grid.x} * config.grid.y * config.grid.z;
  auto worker = [&](int linear) {
    threadIdx = dim3(linear % config.block.x, linear / config.block.x % config.block.y,
                     linear / (config.block.x * config.block.y));
    blockDim = config.block;
    gridDim = config.grid;
    current_thread = ThreadState{&block, linear % 32, linear / 32, 0};
    for (uint64_t b = 0; b < blocks; ++b) {
      block.barrier.arrive_and_wait("the start of a block",
                                    [&] { block.arena.reset(config.dynamic_shared_bytes); });
      blockIdx = dim3(static_cast<unsigned>(b % config.grid.x), static_cast<unsigned>(b / config.grid.x % config.grid.y),
                      static_cast<unsigned>(b / (uint64_t{config.grid.x} * config.grid.y)));
      current_thread.warp_ops = 0;
      std::apply([&](const auto&... a) { kernel(a...); }, params);
      block.barrier.arrive_and_wait("the end of the kernel (some threads left, others wait at __syncthreads)");
    }
    current_thread = ThreadState{};
  };
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (int t = 0; t < threads; ++t) pool.emplace_back(worker, t);
  for (auto& t : pool) t.join();
}

template <class Kernel, class... Args>
void launch(dim3 grid, dim3 block, Kernel kernel, Args... args) {
  launch(LaunchConfig{grid, block, 0}, kernel, args...);
}

// Storage for one SSD_FAST_SHARED declaration. `Site` is the type of a lambda written at
// the declaration, unique per declaration and per template instantiation around it.
template <class T, class Site>
T& block_shared(Site) {
  static const char site = 0;
  return *static_cast<T*>(current_block().arena.get(&site, sizeof(T), alignof(T)));
}

template <class T>
T* dynamic_shared() {
  return static_cast<T*>(current_block().arena.dynamic());
}

}  // namespace emu

// ---- block and warp intrinsics ---------------------------------------------------------
inline void __syncthreads() { emu::sync_block("__syncthreads"); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  emu::warp_exchange(mask, 0, "__syncwarp", [](const uint64_t*) {});
}
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

template <class T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {
  return emu::shfl_sync(emu::ShflMode::kIdx, mask, var, static_cast<unsigned>(src_lane), emu::shfl_c(width, false),
                        "__shfl_sync");
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  return emu::shfl_sync(emu::ShflMode::kUp, mask, var, delta, emu::shfl_c(width, true), "__shfl_up_sync");
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  return emu::shfl_sync(emu::ShflMode::kDown, mask, var, delta, emu::shfl_c(width, false), "__shfl_down_sync");
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
  return emu::shfl_sync(emu::ShflMode::kBfly, mask, var, static_cast<unsigned>(lane_mask), emu::shfl_c(width, false),
                        "__shfl_xor_sync");
}

// vote.sync.ballot: bit i set when lane i's predicate is true.
inline unsigned __ballot_sync(unsigned mask, int predicate) {
  unsigned ballot = 0;
  emu::warp_exchange(mask, predicate != 0, "__ballot_sync", [&](const uint64_t* slots) {
    for (int lane = 0; lane < 32; ++lane) {
      if ((mask >> lane) & 1u) ballot |= static_cast<unsigned>(slots[lane] != 0) << lane;
    }
  });
  return ballot;
}
inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }
inline int __all_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) == mask; }

// ---- atomics (within a block threads really run at once; blocks do not overlap) ----------
template <class T>
inline T atomicAdd(T* address, T value) {
  return std::atomic_ref<T>(*address).fetch_add(value);
}
template <class T>
inline T atomicMax(T* address, T value) {
  std::atomic_ref<T> ref(*address);
  T old = ref.load();
  while (old < value && !ref.compare_exchange_weak(old, value)) {
  }
  return old;
}
template <class T>
inline T atomicExch(T* address, T value) {
  return std::atomic_ref<T>(*address).exchange(value);
}
