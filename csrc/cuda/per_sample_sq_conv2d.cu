// per_sample_sq_conv2d_ on CUDA: out[o, c, i, j] += scale * sum_b f(g_b[o, c, i, j]), g_b sample
// b's Conv2d weight gradient; the input's im2col is gathered into shared memory on the fly
// (kernels/per_sample_sq_loaders.cuh). UNVERIFIED on a GPU (see kernels/per_sample_sq.cuh).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "../common/per_sample_sq.h"
#include "kernels/per_sample_sq_loaders.cuh"
#include "launch_per_sample_sq.cuh"
#include "same_dtype.h"

namespace ssd_fast::cuda {
namespace {

void per_sample_sq_conv2d_cuda(const at::Tensor& out, const at::Tensor& dy_in, const at::Tensor& x_in,
                               at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                               int64_t groups, double scale, bool absolute, c10::string_view precision) {
  const PerSamplePrecision math = check_per_sample_precision("per_sample_sq_conv2d_", precision);
  const Conv2dGeometry geo =
      check_per_sample_sq_conv2d_args(out, dy_in, x_in, stride, padding, dilation, groups, scale);
  const auto [dy, x] = to_common_dtype(dy_in, x_in);
  const int64_t length = geo.out_h * geo.out_w;
  const at::Tensor d = dy.reshape({dy.size(0), dy.size(1), length});  // a view unless dy's strides forbid it
  const SqShape shape{x.size(0), groups, out.size(0) / groups, geo.c_per_group * geo.kh * geo.kw, length};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "per_sample_sq_conv2d_cuda", [&] {
    const auto dl = ConvGradLoad<scalar_t>::make(d.const_data_ptr<scalar_t>(), d.size(1), length, d.stride(0),
                                                 d.stride(1), d.stride(2), shape.o_per_group);
    const auto xl = Im2colLoad<scalar_t>::make(x.const_data_ptr<scalar_t>(), x.size(1), x.stride(0), x.stride(1),
                                               x.stride(2), x.stride(3), geo);
    SSD_FAST_CHECK(dl.fits && xl.fits,
                   "per_sample_sq_conv2d_: one sample of dy or x spans 2^31 elements or more, beyond the CUDA "
                   "kernel's 32-bit offsets; compute this layer on the torch path "
                   "(ssd_fast.per_sample._fused.enabled = False)");
    launch_per_sample_sq</*kDLFast=*/true, /*kXLFast=*/true>(out, dl, xl, shape, scale, absolute, math);
  });
}

}  // namespace
}  // namespace ssd_fast::cuda

TORCH_LIBRARY_IMPL(ssd_fast, CUDA, m) { m.impl("per_sample_sq_conv2d_", &ssd_fast::cuda::per_sample_sq_conv2d_cuda); }
