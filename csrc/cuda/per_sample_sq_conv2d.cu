// per_sample_sq_conv2d_ on CUDA: out[o, c, i, j] += scale * sum_b f(g_b[o, c, i, j]), g_b sample
// b's Conv2d weight gradient; the input's im2col is gathered into shared memory on the fly.
// UNVERIFIED on a GPU (see per_sample_sq.cuh).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "../common/per_sample_sq.h"
#include "per_sample_sq.cuh"

namespace ssd_fast::cuda {
namespace {

// dy viewed as [B, O, L], by strides, as fp32.
template <typename scalar_t>
struct ConvGradLoad {
  const scalar_t* p;
  int64_t sb, so, sl, o_per_group;
  __device__ float operator()(int64_t b, int64_t g, int64_t o, int64_t l) const {
    return static_cast<float>(p[b * sb + (g * o_per_group + o) * so + l * sl]);
  }
};

// x[b, g*Cg + c, ho*sh - ph + i*dh, wo*sw - pw + j*dw] for k = (c, i, j), l = (ho, wo); 0 in the padding.
template <typename scalar_t>
struct Im2colLoad {
  const scalar_t* p;
  int64_t sb, sc, sh, sw;
  Conv2dGeometry geo;
  __device__ float operator()(int64_t b, int64_t g, int64_t k, int64_t l) const {
    const int64_t khw = geo.kh * geo.kw, c = k / khw, i = k % khw / geo.kw, j = k % geo.kw;
    const int64_t h = l / geo.out_w * geo.sh - geo.ph + i * geo.dh;
    const int64_t w = l % geo.out_w * geo.sw - geo.pw + j * geo.dw;
    if (h < 0 || h >= geo.height || w < 0 || w >= geo.width) return 0.0f;
    return static_cast<float>(p[b * sb + (g * geo.c_per_group + c) * sc + h * sh + w * sw]);
  }
};

void per_sample_sq_conv2d_cuda(const at::Tensor& out, const at::Tensor& dy, const at::Tensor& x,
                               at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                               int64_t groups, double scale, bool absolute) {
  const Conv2dGeometry geo = check_per_sample_sq_conv2d_args(out, dy, x, stride, padding, dilation, groups, scale);
  const int64_t length = geo.out_h * geo.out_w;
  const at::Tensor d = dy.reshape({dy.size(0), dy.size(1), length});  // a view unless dy's strides forbid it
  const SqShape shape{x.size(0), groups, out.size(0) / groups, geo.c_per_group * geo.kh * geo.kw, length};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "per_sample_sq_conv2d_cuda", [&] {
    using x_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, d.scalar_type(), "per_sample_sq_conv2d_cuda", [&] {
      const ConvGradLoad<scalar_t> dl{d.const_data_ptr<scalar_t>(), d.stride(0), d.stride(1), d.stride(2),
                                      shape.o_per_group};
      const Im2colLoad<x_t> xl{x.const_data_ptr<x_t>(), x.stride(0), x.stride(1), x.stride(2), x.stride(3), geo};
      launch_per_sample_sq</*kDLFast=*/true, /*kXLFast=*/true>(out, dl, xl, shape, scale, absolute);
    });
  });
}

}  // namespace
}  // namespace ssd_fast::cuda

TORCH_LIBRARY_IMPL(ssd_fast, CUDA, m) { m.impl("per_sample_sq_conv2d_", &ssd_fast::cuda::per_sample_sq_conv2d_cuda); }
