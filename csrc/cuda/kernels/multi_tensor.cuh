// A chunked launch over many tensors at once: the kernel side and its launch plan.
//
// Each launch covers up to kMaxTensors tensors. Their pointers, sizes and the prefix sum
// of their chunk counts travel in the kernel's parameter block (no host-to-device copy),
// every block finds its tensor by binary search over that prefix sum, and processes one
// chunk of it. Empty tensors are skipped by the plan, so they cost nothing. The model's
// own tensors are used in place: nothing is flattened or copied.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "../../common/constants.h"
#include "device_api.h"

namespace ssd_fast::cuda {

template <int kDepth>
struct TensorListMeta {
  void* ptr[kDepth][kMaxTensors];
  int64_t numel[kMaxTensors];
  int64_t first_chunk[kMaxTensors + 1];  // block b works on tensor t with first_chunk[t] <= b
  int32_t list_index[kMaxTensors];       // position in the caller's list (for per-tensor outputs)
  uint8_t aligned[kMaxTensors];          // every pointer aligned to kVec elements: vector path allowed
  int32_t count;
};

struct Chunk {
  int slot;       // which tensor of this launch
  int64_t begin;  // element range within that tensor
  int64_t end;
};

// The chunk of block `block`: the last tensor whose first chunk is <= block.
template <int kDepth>
SSD_FAST_HOST_DEVICE inline Chunk find_chunk(const TensorListMeta<kDepth>& meta, int64_t chunk_size, int64_t block) {
  int lo = 0, hi = meta.count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (meta.first_chunk[mid] <= block) lo = mid; else hi = mid - 1;
  }
  const int64_t begin = (block - meta.first_chunk[lo]) * chunk_size;
  const int64_t end = begin + chunk_size < meta.numel[lo] ? begin + chunk_size : meta.numel[lo];
  return {lo, begin, end};
}

template <int kDepth, typename Op>
__global__ void multi_tensor_kernel(const __grid_constant__ TensorListMeta<kDepth> meta, int64_t chunk_size, Op op) {
  const Chunk chunk = find_chunk(meta, chunk_size, blockIdx.x);
  op(meta, chunk);
}

// One tensor of a multi-tensor call: its kDepth pointers (one per list), their element
// sizes, its length and its position in the caller's list.
template <int kDepth>
struct TensorSlot {
  std::array<void*, kDepth> ptr;
  std::array<int, kDepth> element_size;
  int64_t numel;
  int32_t list_index;
};

template <int kDepth>
struct MultiTensorLaunch {
  TensorListMeta<kDepth> meta;
  int64_t blocks;  // one block per chunk
};

// Every pointer of a slot aligned to a whole vector of kVec elements.
template <int kDepth>
inline bool is_vector_aligned(const TensorSlot<kDepth>& t) {
  for (int k = 0; k < kDepth; ++k) {
    if (reinterpret_cast<uintptr_t>(t.ptr[k]) % (static_cast<uintptr_t>(t.element_size[k]) * kVec) != 0) return false;
  }
  return true;
}

// The launches that cover every chunk of every non-empty tensor, kMaxTensors tensors at
// most per launch, in list order. chunk_size must be a multiple of kVec (so that chunk
// starts keep a tensor's vector alignment).
template <int kDepth>
std::vector<MultiTensorLaunch<kDepth>> plan_multi_tensor(const std::vector<TensorSlot<kDepth>>& tensors,
                                                         int64_t chunk_size) {
  std::vector<MultiTensorLaunch<kDepth>> launches;
  MultiTensorLaunch<kDepth> current{};
  auto flush = [&] {
    if (current.meta.count == 0) return;
    current.meta.first_chunk[current.meta.count] = current.blocks;
    launches.push_back(current);
    current = MultiTensorLaunch<kDepth>{};
  };
  for (const TensorSlot<kDepth>& t : tensors) {
    if (t.numel == 0) continue;
    const int slot = current.meta.count;
    for (int k = 0; k < kDepth; ++k) current.meta.ptr[k][slot] = t.ptr[k];
    current.meta.numel[slot] = t.numel;
    current.meta.first_chunk[slot] = current.blocks;
    current.meta.list_index[slot] = t.list_index;
    current.meta.aligned[slot] = is_vector_aligned(t);
    current.blocks += (t.numel + chunk_size - 1) / chunk_size;
    current.meta.count = slot + 1;
    if (current.meta.count == kMaxTensors) flush();
  }
  flush();
  return launches;
}

// Sum of `value` over the block, valid in thread 0; blockDim.x must be a multiple of 32.
// Integer sums are exact, so the result does not depend on the order of the additions.
__device__ inline unsigned block_sum(unsigned value) {
  SSD_FAST_SHARED(unsigned, warp_sums, [32]);
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = value;
  __syncthreads();
  unsigned total = 0;
  if (warp == 0) {
    total = lane < static_cast<int>((blockDim.x + 31) / 32) ? warp_sums[lane] : 0;
    for (int offset = 16; offset > 0; offset /= 2) total += __shfl_down_sync(0xffffffffu, total, offset);
  }
  return total;
}

}  // namespace ssd_fast::cuda
