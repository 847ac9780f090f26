// per_sample_sq_tokens_ on CUDA: out[o, k] += scale * sum_b f(sum_t dy[b,t,o] x[b,t,k]).
// UNVERIFIED on a GPU (see per_sample_sq.cuh).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "../common/per_sample_sq.h"
#include "per_sample_sq.cuh"

namespace ssd_fast::cuda {
namespace {

// v[b, t, r] by strides, as fp32: dy (r = o) or x (r = k); g is always 0.
template <typename scalar_t>
struct TokenLoad {
  const scalar_t* p;
  int64_t sb, st, sr;
  __device__ float operator()(int64_t b, int64_t, int64_t r, int64_t t) const {
    return static_cast<float>(p[b * sb + t * st + r * sr]);
  }
};

void per_sample_sq_tokens_cuda(const at::Tensor& out, const at::Tensor& dy, const at::Tensor& x, double scale,
                               bool absolute) {
  check_per_sample_sq_tokens_args(out, dy, x, scale);
  const SqShape shape{x.size(0), 1, dy.size(2), x.size(2), x.size(1)};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "per_sample_sq_tokens_cuda", [&] {
    using x_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "per_sample_sq_tokens_cuda", [&] {
      const TokenLoad<scalar_t> d{dy.const_data_ptr<scalar_t>(), dy.stride(0), dy.stride(1), dy.stride(2)};
      const TokenLoad<x_t> xl{x.const_data_ptr<x_t>(), x.stride(0), x.stride(1), x.stride(2)};
      launch_per_sample_sq</*kDLFast=*/false, /*kXLFast=*/false>(out, d, xl, shape, scale, absolute);
    });
  });
}

}  // namespace
}  // namespace ssd_fast::cuda

TORCH_LIBRARY_IMPL(ssd_fast, CUDA, m) { m.impl("per_sample_sq_tokens_", &ssd_fast::cuda::per_sample_sq_tokens_cuda); }
