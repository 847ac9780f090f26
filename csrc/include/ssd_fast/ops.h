// The ssd_fast operators for C++ callers. Link the ssd_fast_ops library (CMakeLists.txt),
// which registers them with the dispatcher when it loads, then call these: they go
// through the dispatcher exactly as torch.ops.ssd_fast.* does from Python, so the CPU or
// CUDA kernel is picked from the tensors' device. The schemas are in csrc/ssd_fast.cpp.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>

namespace ssd_fast {

// For every i and element j: when forget[i][j] > alpha * full[i][j],
// params[i][j] *= min(lam * full[i][j] / forget[i][j], 1); other elements keep their bits.
// selected (int64, one entry per tensor, on the params' device) gains the count selected.
using SelectDampenFn = void(at::TensorList params, at::TensorList forget, at::TensorList full, double alpha,
                            double lam, const at::Tensor& selected);

// importances[i] += scale * grads[i]^2, or scale * |grads[i]| when absolute (fp32 importances).
using SqAccumulateFn = void(at::TensorList importances, at::TensorList grads, double scale, bool absolute);

// out[o, k] += scale * sum_b (sum_t dy[b,t,o] * x[b,t,k])^2, or |.| when absolute: the sum
// over samples of each sample's squared weight gradient of a Linear over tokens, never
// forming those gradients. dy [B, T, O] and x [B, T, K] in fp32, bf16, fp16 or fp64
// (accumulated in fp32); out [O, K] contiguous fp32.
using PerSampleSqTokensFn = void(const at::Tensor& out, const at::Tensor& dy, const at::Tensor& x, double scale,
                                 bool absolute, c10::string_view precision);

// The same for a Conv2d: out [O, C/groups, kh, kw] += scale * sum_b g_b^2 (|g_b| when
// absolute), g_b sample b's weight gradient for input x [B, C, H, W] and output gradient
// dy [B, O, Ho, Wo]; the im2col of x is gathered in place, never materialised.
using PerSampleSqConv2dFn = void(const at::Tensor& out, const at::Tensor& dy, const at::Tensor& x,
                                 at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                 int64_t groups, double scale, bool absolute, c10::string_view precision);

inline void select_dampen_(at::TensorList params, at::TensorList forget, at::TensorList full, double alpha,
                           double lam, const at::Tensor& selected) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("ssd_fast::select_dampen_", "").typed<SelectDampenFn>();
  op.call(params, forget, full, alpha, lam, selected);
}

inline void sq_accumulate_(at::TensorList importances, at::TensorList grads, double scale, bool absolute) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("ssd_fast::sq_accumulate_", "").typed<SqAccumulateFn>();
  op.call(importances, grads, scale, absolute);
}

inline void per_sample_sq_tokens_(const at::Tensor& out, const at::Tensor& dy, const at::Tensor& x, double scale,
                                  bool absolute, c10::string_view precision = "exact") {
  static const auto op = c10::Dispatcher::singleton()
                              .findSchemaOrThrow("ssd_fast::per_sample_sq_tokens_", "")
                              .typed<PerSampleSqTokensFn>();
  op.call(out, dy, x, scale, absolute, precision);
}

inline void per_sample_sq_conv2d_(const at::Tensor& out, const at::Tensor& dy, const at::Tensor& x,
                                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                  int64_t groups, double scale, bool absolute,
                                  c10::string_view precision = "exact") {
  static const auto op = c10::Dispatcher::singleton()
                              .findSchemaOrThrow("ssd_fast::per_sample_sq_conv2d_", "")
                              .typed<PerSampleSqConv2dFn>();
  op.call(out, dy, x, stride, padding, dilation, groups, scale, absolute, precision);
}

}  // namespace ssd_fast
