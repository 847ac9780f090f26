// The per-sample squared-gradient ops, shared by the CPU and CUDA kernels: argument
// checks (both backends refuse the same inputs with the same messages) and the geometry
// that maps the ops onto one problem:
//
//   out[g*Og + o, k] += scale * sum_b f( sum_l D[b, g, o, l] * X[b, g, k, l] ),
//   f(v) = v*v, or |v| when absolute (label-free SSD),
//
// with, for per_sample_sq_tokens_, G = 1, l = token, D = dy[b, l, o], X = x[b, l, k]; and
// for per_sample_sq_conv2d_, l = output position, D = dy[b, g*Og + o, l] and X the
// implicit im2col of the input (never materialised).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <cmath>
#include <string>

#include "conv2d_geometry.h"

namespace ssd_fast {

inline bool is_per_sample_input_dtype(c10::ScalarType t) {
  return t == c10::kFloat || t == c10::kHalf || t == c10::kBFloat16 || t == c10::kDouble;
}

// The arithmetic of each sample's product (the op's `precision` argument).
enum class PerSamplePrecision { kExact, kTf32, kBf16 };

inline PerSamplePrecision check_per_sample_precision(const char* op, c10::string_view precision) {
  if (precision == "exact") return PerSamplePrecision::kExact;
  if (precision == "tf32") return PerSamplePrecision::kTf32;
  if (precision == "bf16") return PerSamplePrecision::kBf16;
  TORCH_CHECK(false, "ssd_fast::", op, ": precision must be \"exact\", \"tf32\" or \"bf16\", got \"",
              std::string(precision), "\"");
}

inline void check_per_sample_common(const char* op, const at::Tensor& out, const at::Tensor& dy,
                                    const at::Tensor& x, double scale) {
  TORCH_CHECK(out.scalar_type() == c10::kFloat, "ssd_fast::", op, ": out must be float32, got ", out.scalar_type());
  TORCH_CHECK(out.is_contiguous(), "ssd_fast::", op, ": out must be contiguous");
  TORCH_CHECK(is_per_sample_input_dtype(dy.scalar_type()) && is_per_sample_input_dtype(x.scalar_type()),
              "ssd_fast::", op, ": dy and x must be floating point (float32, float16, bfloat16 or float64), got ",
              dy.scalar_type(), " and ", x.scalar_type());
  TORCH_CHECK(dy.device() == out.device() && x.device() == out.device(), "ssd_fast::", op,
              ": out, dy and x must be on one device, got ", out.device(), ", ", dy.device(), ", ", x.device());
  TORCH_CHECK(std::isfinite(scale), "ssd_fast::", op, ": scale must be finite");
}

inline void check_per_sample_sq_tokens_args(const at::Tensor& out, const at::Tensor& dy, const at::Tensor& x,
                                            double scale) {
  check_per_sample_common("per_sample_sq_tokens_", out, dy, x, scale);
  TORCH_CHECK(dy.dim() == 3 && x.dim() == 3 && out.dim() == 2,
              "ssd_fast::per_sample_sq_tokens_: expected dy [B, T, O], x [B, T, K] and out [O, K], got dims ",
              dy.dim(), ", ", x.dim(), " and ", out.dim());
  TORCH_CHECK(dy.size(0) == x.size(0) && dy.size(1) == x.size(1),
              "ssd_fast::per_sample_sq_tokens_: dy and x must agree on batch and tokens, got ", dy.sizes(), " and ",
              x.sizes());
  TORCH_CHECK(out.size(0) == dy.size(2) && out.size(1) == x.size(2), "ssd_fast::per_sample_sq_tokens_: out must be [",
              dy.size(2), ", ", x.size(2), "], got ", out.sizes());
}

// Checks the conv arguments and returns the geometry; the kernel size is out's [kh, kw].
inline Conv2dGeometry check_per_sample_sq_conv2d_args(const at::Tensor& out, const at::Tensor& dy, const at::Tensor& x,
                                                      at::IntArrayRef stride, at::IntArrayRef padding,
                                                      at::IntArrayRef dilation, int64_t groups, double scale) {
  const char* op = "per_sample_sq_conv2d_";
  check_per_sample_common(op, out, dy, x, scale);
  TORCH_CHECK(x.dim() == 4 && dy.dim() == 4 && out.dim() == 4, "ssd_fast::", op,
              ": expected x [B, C, H, W], dy [B, O, Ho, Wo] and out [O, C/groups, kh, kw], got dims ", x.dim(), ", ",
              dy.dim(), " and ", out.dim());
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2, "ssd_fast::", op,
              ": stride, padding and dilation must have two entries each");
  TORCH_CHECK(stride[0] >= 1 && stride[1] >= 1 && dilation[0] >= 1 && dilation[1] >= 1, "ssd_fast::", op,
              ": stride and dilation must be >= 1, got ", stride, " and ", dilation);
  TORCH_CHECK(padding[0] >= 0 && padding[1] >= 0, "ssd_fast::", op, ": padding must be >= 0, got ", padding);
  TORCH_CHECK(groups >= 1, "ssd_fast::", op, ": groups must be >= 1, got ", groups);
  TORCH_CHECK(x.size(0) == dy.size(0), "ssd_fast::", op, ": x and dy must have the same batch size, got ", x.size(0),
              " and ", dy.size(0));
  TORCH_CHECK(x.size(1) % groups == 0 && out.size(0) % groups == 0, "ssd_fast::", op,
              ": channels must divide into ", groups, " groups, got ", x.size(1), " in and ", out.size(0), " out");
  TORCH_CHECK(out.size(1) * groups == x.size(1), "ssd_fast::", op, ": out has ", out.size(1),
              " input channels per group, x has ", x.size(1), " channels in ", groups, " groups");
  TORCH_CHECK(dy.size(1) == out.size(0), "ssd_fast::", op, ": dy has ", dy.size(1), " channels, out has ",
              out.size(0));
  Conv2dGeometry g{out.size(2), out.size(3), stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
                   groups,      out.size(1), x.size(2), x.size(3), dy.size(2), dy.size(3)};
  TORCH_CHECK(g.kh >= 1 && g.kw >= 1, "ssd_fast::", op, ": empty kernel ", out.sizes());
  const int64_t want_h = (g.height + 2 * g.ph - g.dh * (g.kh - 1) - 1) / g.sh + 1;
  const int64_t want_w = (g.width + 2 * g.pw - g.dw * (g.kw - 1) - 1) / g.sw + 1;
  TORCH_CHECK(g.height + 2 * g.ph - g.dh * (g.kh - 1) >= 1 && g.width + 2 * g.pw - g.dw * (g.kw - 1) >= 1 &&
                  want_h == g.out_h && want_w == g.out_w,
              "ssd_fast::", op, ": dy's spatial size ", dy.sizes(), " does not match a ", g.kh, "x", g.kw,
              " convolution of x ", x.sizes(), " with stride ", stride, ", padding ", padding, ", dilation ",
              dilation);
  return g;
}

}  // namespace ssd_fast
