// per_sample_sq_tokens_ on CUDA: out[o, k] += scale * sum_b f(sum_t dy[b,t,o] x[b,t,k]).
// UNVERIFIED on a GPU (see kernels/per_sample_sq.cuh).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "../common/per_sample_sq.h"
#include "kernels/per_sample_sq_loaders.cuh"
#include "launch_per_sample_sq.cuh"
#include "same_dtype.h"

namespace ssd_fast::cuda {
namespace {

void per_sample_sq_tokens_cuda(const at::Tensor& out, const at::Tensor& dy_in, const at::Tensor& x_in, double scale,
                               bool absolute) {
  check_per_sample_sq_tokens_args(out, dy_in, x_in, scale);
  const auto [dy, x] = to_common_dtype(dy_in, x_in);
  const SqShape shape{x.size(0), 1, dy.size(2), x.size(2), x.size(1)};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "per_sample_sq_tokens_cuda", [&] {
    const TokenLoad<scalar_t> dl{dy.const_data_ptr<scalar_t>(), dy.stride(0), dy.stride(1), dy.stride(2)};
    const TokenLoad<scalar_t> xl{x.const_data_ptr<scalar_t>(), x.stride(0), x.stride(1), x.stride(2)};
    launch_per_sample_sq</*kDLFast=*/false, /*kXLFast=*/false>(out, dl, xl, shape, scale, absolute);
  });
}

}  // namespace
}  // namespace ssd_fast::cuda

TORCH_LIBRARY_IMPL(ssd_fast, CUDA, m) { m.impl("per_sample_sq_tokens_", &ssd_fast::cuda::per_sample_sq_tokens_cuda); }
