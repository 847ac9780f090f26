// The per-element arithmetic of SSD, shared by the CPU and CUDA kernels so that both
// round exactly like the reference (ssd_fast/reference.py):
//   selected  <=>  f > alpha * d          (fp32; alpha rounded to fp32 first, as torch does)
//   beta       =  min((lam * d) / f, 1)   (fp32)
//   theta'     =  theta * beta            (fp32 for fp32/fp16/bf16 params, fp64 for fp64)
// The reference computes p * beta in the promoted dtype and rounds once on the copy back,
// which is what the single cast below does.
#pragma once

// No ATen or c10 include: the CUDA kernels (csrc/cuda/kernels) use this header, and the
// emulator compiles them without torch. scalar_t is c10::Half / c10::BFloat16 in the real
// builds and the emulator's own fp16 / bf16 types in its tests: anything that converts to
// and from float.
#include <type_traits>

#if defined(__CUDACC__)
#define SSD_FAST_MATH_HD __host__ __device__
#else
#define SSD_FAST_MATH_HD
#endif

namespace ssd_fast {

template <typename scalar_t>
using opmath_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

SSD_FAST_MATH_HD inline bool is_selected(float f, float d, float alpha) { return f > alpha * d; }

SSD_FAST_MATH_HD inline float dampening_factor(float f, float d, float lam) {
  const float beta = (lam * d) / f;
  return beta < 1.0f ? beta : 1.0f;  // d = 0 gives 0: the parameter is zeroed
}

// The dampened value, computed whether or not the element is selected, so that loops
// stay branch-free and vectorize; callers keep the old value where is_selected is false.
template <typename scalar_t>
SSD_FAST_MATH_HD inline scalar_t dampened_value(scalar_t p, float f, float d, float lam) {
  using acc_t = opmath_t<scalar_t>;
  return static_cast<scalar_t>(static_cast<acc_t>(p) * static_cast<acc_t>(dampening_factor(f, d, lam)));
}

// importance += scale * g^2, or scale * |g| (label-free), in fp32 whatever g's dtype.
template <typename grad_t>
SSD_FAST_MATH_HD inline float squared_or_abs(grad_t g, bool absolute) {
  const float x = static_cast<float>(g);
  return absolute ? (x < 0.0f ? -x : x) : x * x;
}

}  // namespace ssd_fast
