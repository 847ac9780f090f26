// The ATen side of a multi-tensor launch: turns the caller's tensor lists into the plan of
// kernels/multi_tensor.cuh and launches it on the current stream. Call under a device guard.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <array>
#include <cstdint>
#include <vector>

#include "kernels/multi_tensor.cuh"

namespace ssd_fast::cuda {

// Runs `op` over every chunk of every non-empty tensor of `lists` (kDepth parallel lists
// of equally sized tensors); list_index[i] is entry i's position in the caller's list.
template <int kDepth, typename Op>
void launch_multi_tensor(const std::array<std::vector<at::Tensor>, kDepth>& lists,
                         const std::vector<int32_t>& list_index, int64_t chunk_size, int threads, Op op) {
  std::vector<TensorSlot<kDepth>> slots(lists[0].size());
  for (size_t i = 0; i < slots.size(); ++i) {
    for (int k = 0; k < kDepth; ++k) {
      slots[i].ptr[k] = lists[k][i].data_ptr();
      slots[i].element_size[k] = static_cast<int>(lists[k][i].element_size());
    }
    slots[i].numel = lists[0][i].numel();
    slots[i].list_index = list_index[i];
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  for (const MultiTensorLaunch<kDepth>& launch : plan_multi_tensor(slots, chunk_size)) {
    multi_tensor_kernel<kDepth, Op><<<static_cast<unsigned>(launch.blocks), threads, 0, stream>>>(launch.meta,
                                                                                                   chunk_size, op);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

}  // namespace ssd_fast::cuda
