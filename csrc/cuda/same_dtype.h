// The per-sample kernels are compiled for matching operand dtypes only (4 instantiations
// instead of 16 per op). A call with dy and x of different dtypes (an fp32 output grad
// against a bf16 input, say) gets the narrower one converted to the wider: every
// conversion between these types towards the promoted one is exact, so the sums are the
// same as if each tensor had been read in its own dtype.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <utility>

namespace ssd_fast::cuda {

inline std::pair<at::Tensor, at::Tensor> to_common_dtype(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() == b.scalar_type()) return {a, b};
  const c10::ScalarType common = c10::promoteTypes(a.scalar_type(), b.scalar_type());
  return {a.to(common), b.to(common)};
}

}  // namespace ssd_fast::cuda
