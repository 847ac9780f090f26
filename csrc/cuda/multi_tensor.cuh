// A chunked launcher over many tensors at once, written for ssd_fast.
//
// Each launch covers up to kMaxTensors tensors. Their pointers, sizes and the prefix sum
// of their chunk counts travel in the kernel's parameter block (no host-to-device copy),
// every block finds its tensor by binary search over that prefix sum, and processes one
// chunk of it. Empty tensors are skipped on the host, so they cost nothing. The model's
// own tensors are used in place: nothing is flattened or copied.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <array>
#include <cstdint>
#include <vector>

#include "../common/constants.h"

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

template <int kDepth>
__device__ inline Chunk find_chunk(const TensorListMeta<kDepth>& meta, int64_t chunk_size) {
  const int64_t block = blockIdx.x;
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
  const Chunk chunk = find_chunk(meta, chunk_size);
  op(meta, chunk);
}

inline bool is_vector_aligned(const at::Tensor& t) {
  return reinterpret_cast<uintptr_t>(t.data_ptr()) % (t.element_size() * kVec) == 0;
}

// Runs `op` over every chunk of every non-empty tensor of `lists` (kDepth parallel lists
// of equally sized tensors). chunk_size must be a multiple of kVec.
template <int kDepth, typename Op>
void launch_multi_tensor(const std::array<std::vector<at::Tensor>, kDepth>& lists,
                         const std::vector<int32_t>& list_index, int64_t chunk_size, int threads, Op op) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  TensorListMeta<kDepth> meta{};
  int64_t chunks = 0;
  auto flush = [&] {
    if (meta.count == 0) return;
    meta.first_chunk[meta.count] = chunks;
    multi_tensor_kernel<kDepth, Op><<<static_cast<unsigned>(chunks), threads, 0, stream>>>(meta, chunk_size, op);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    meta = TensorListMeta<kDepth>{};
    chunks = 0;
  };
  for (size_t i = 0; i < lists[0].size(); ++i) {
    const int64_t n = lists[0][i].numel();
    if (n == 0) continue;
    const int slot = meta.count;
    bool aligned = true;
    for (int k = 0; k < kDepth; ++k) {
      meta.ptr[k][slot] = lists[k][i].data_ptr();
      aligned = aligned && is_vector_aligned(lists[k][i]);
    }
    meta.numel[slot] = n;
    meta.first_chunk[slot] = chunks;
    meta.list_index[slot] = list_index[i];
    meta.aligned[slot] = aligned;
    chunks += (n + chunk_size - 1) / chunk_size;
    meta.count = slot + 1;
    if (meta.count == kMaxTensors) flush();
  }
  flush();
}

// Sum of `value` over the block, valid in thread 0. Integer sums are exact, so the
// result does not depend on the order in which threads finish.
__device__ inline unsigned block_sum(unsigned value) {
  __shared__ unsigned warp_sums[32];
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = value;
  __syncthreads();
  unsigned total = 0;
  if (warp == 0) {
    total = lane < (blockDim.x + 31) / 32 ? warp_sums[lane] : 0;
    for (int offset = 16; offset > 0; offset /= 2) total += __shfl_down_sync(0xffffffffu, total, offset);
  }
  return total;
}

}  // namespace ssd_fast::cuda
