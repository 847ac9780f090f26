// Tuning constants shared by the kernels, in one place so that the CPU and CUDA files of
// every op agree on them.
#pragma once

#include <cstdint>

namespace ssd_fast {

// CPU: elements per at::parallel_for task. Large enough that a thread's share amortises
// the fork, small enough to split ResNet-sized tensors across two cores.
constexpr int64_t kCpuGrain = 1 << 16;

// CUDA: elements per vector access (16 bytes of fp32; narrower types load 4 elements too).
constexpr int kVec = 4;
// CUDA: tensors per multi-tensor launch, sized so that the kernel's parameter block stays
// under the classic 4 KB limit for up to three lists (3*8 + 8 + 8 + 4 + 1 bytes per tensor).
constexpr int kMaxTensors = 64;
// CUDA: threads per block, and elements per block's chunk (8 vector steps per thread).
constexpr int kThreads = 256;
constexpr int64_t kChunk = int64_t{kThreads} * kVec * 8;

}  // namespace ssd_fast
