// The vector type the CUDA kernels load and store: kVec elements of one dtype, aligned so
// that one access moves them all (a float4 for fp32, 8 bytes for fp16/bf16, 32 for fp64).
#pragma once

#include "constants.h"

namespace ssd_fast {

template <typename T>
struct alignas(sizeof(T) * kVec) Vec {
  T v[kVec];
};

}  // namespace ssd_fast
