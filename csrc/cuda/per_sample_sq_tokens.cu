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
                               bool absolute, c10::string_view precision) {
  const PerSamplePrecision math = check_per_sample_precision("per_sample_sq_tokens_", precision);
  check_per_sample_sq_tokens_args(out, dy_in, x_in, scale);
  const auto [dy, x] = to_common_dtype(dy_in, x_in);
  const SqShape shape{x.size(0), 1, dy.size(2), x.size(2), x.size(1)};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "per_sample_sq_tokens_cuda", [&] {
    const auto dl = TokenLoad<scalar_t>::make(dy.const_data_ptr<scalar_t>(), dy.size(1), dy.size(2), dy.stride(0),
                                              dy.stride(1), dy.stride(2));
    const auto xl = TokenLoad<scalar_t>::make(x.const_data_ptr<scalar_t>(), x.size(1), x.size(2), x.stride(0),
                                              x.stride(1), x.stride(2));
    SSD_FAST_CHECK(dl.fits && xl.fits,
                   "per_sample_sq_tokens_: one sample of dy or x spans 2^31 elements or more, beyond the CUDA "
                   "kernel's 32-bit offsets; compute this layer on the torch path "
                   "(ssd_fast.per_sample._fused.enabled = False)");
    launch_per_sample_sq</*kDLFast=*/false, /*kXLFast=*/false>(out, dl, xl, shape, scale, absolute, math);
  });
}

}  // namespace
}  // namespace ssd_fast::cuda

TORCH_LIBRARY_IMPL(ssd_fast, CUDA, m) { m.impl("per_sample_sq_tokens_", &ssd_fast::cuda::per_sample_sq_tokens_cuda); }
