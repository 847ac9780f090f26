// The emulator's launchers: the same plans (csrc/cuda/kernels) that the real launchers in
// csrc/cuda/*.cu follow, launched through emu::launch instead of <<<...>>>. No ATen here,
// so that sanitizer builds of the emulated tests need no torch.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <vector>

#include "../../csrc/common/constants.h"
#include "../../csrc/cuda/kernels/multi_tensor.cuh"
#include "../../csrc/cuda/kernels/per_sample_sq.cuh"
#include "../../csrc/cuda/kernels/per_sample_sq_loaders.cuh"
#include "../../csrc/cuda/kernels/per_sample_sq_mma.cuh"
#include "../../csrc/cuda/kernels/select_dampen.cuh"
#include "../../csrc/cuda/kernels/sq_accumulate.cuh"

namespace emu_test {

using namespace ssd_fast::cuda;

// Multi-tensor launches of `op`, as launch_multi_tensor does; returns how many launches.
template <int kDepth, class Op>
size_t launch_multi_tensor(const std::vector<TensorSlot<kDepth>>& slots, Op op) {
  const auto launches = plan_multi_tensor(slots, ssd_fast::kChunk);
  for (const auto& l : launches) {
    emu::launch(dim3(static_cast<unsigned>(l.blocks)), dim3(ssd_fast::kThreads), multi_tensor_kernel<kDepth, Op>,
                l.meta, ssd_fast::kChunk, op);
  }
  return launches.size();
}

// select_dampen_ over one dtype's tensors: p[i], f[i], d[i] of numel[i] elements;
// counts[i] += selected elements of tensor i.
template <class scalar_t>
size_t select_dampen(const std::vector<scalar_t*>& p, const std::vector<float*>& f, const std::vector<float*>& d,
                     const std::vector<int64_t>& numel, float alpha, float lam, unsigned long long* counts) {
  std::vector<TensorSlot<3>> slots;
  for (size_t i = 0; i < p.size(); ++i) {
    slots.push_back({{p[i], f[i], d[i]}, {static_cast<int>(sizeof(scalar_t)), 4, 4}, numel[i], static_cast<int32_t>(i)});
  }
  return launch_multi_tensor<3>(slots, SelectDampenOp<scalar_t>{alpha, lam, counts});
}

template <class grad_t>
size_t sq_accumulate(const std::vector<float*>& imp, const std::vector<grad_t*>& g, const std::vector<int64_t>& numel,
                     float scale, bool absolute) {
  std::vector<TensorSlot<2>> slots;
  for (size_t i = 0; i < imp.size(); ++i) {
    slots.push_back({{imp[i], g[i]}, {4, static_cast<int>(sizeof(grad_t))}, numel[i], static_cast<int32_t>(i)});
  }
  return launch_multi_tensor<2>(slots, SqAccumulateOp<grad_t>{scale, absolute});
}

// The per-sample engine, as launch_per_sample_sq does for a device with `sms`
// multiprocessors (which decides the batch slicing); returns the plan it ran.
template <bool kDLFast, bool kXLFast, class Math = SqFmaMath, class DLoad, class XLoad>
PerSampleSqPlan per_sample_sq(float* out, const DLoad& d, const XLoad& x, const SqShape& s, float scale,
                              bool absolute, int sms) {
  const PerSampleSqPlan plan = plan_per_sample_sq(s, sms);
  if (plan.empty) return plan;
  if (plan.error != nullptr) throw std::invalid_argument(plan.error);
  const dim3 grid(plan.grid[0], plan.grid[1], plan.grid[2]);
  const auto kernel = per_sample_sq_kernel<kDLFast, kXLFast, DLoad, XLoad, Math>;
  if (plan.slices == 1) {
    emu::launch(grid, dim3(kSqThreads), kernel, d, x, s, plan.per_slice, 1, absolute, scale, out, false);
    return plan;
  }
  std::vector<float> partial(static_cast<size_t>(plan.workspace), std::nanf(""));  // poisoned, like at::empty
  emu::launch(grid, dim3(kSqThreads), kernel, d, x, s, plan.per_slice, plan.slices, absolute, scale, partial.data(),
              true);
  const int64_t n = s.groups * s.o_per_group * s.k_per_group;
  emu::launch(dim3(plan.reduce_blocks), dim3(kSqThreads), add_slices_kernel, static_cast<const float*>(partial.data()),
              plan.slices, n, scale, out);
  return plan;
}

}  // namespace emu_test
