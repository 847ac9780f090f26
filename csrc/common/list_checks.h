// Argument checks shared by the CPU and CUDA kernels, so both backends refuse the same
// inputs with the same messages. The Python wrapper validates first; these checks keep
// direct callers of torch.ops.ssd_fast.* from reading out of bounds. Every check with a
// number in its message goes through SSD_FAST_CHECK (check.h says why).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>

#include "check.h"

namespace ssd_fast {

inline bool is_supported_param_dtype(c10::ScalarType t) {
  return t == c10::kFloat || t == c10::kDouble || t == c10::kHalf || t == c10::kBFloat16;
}

// A device's name as a C string, without the std::string that c10's DeviceTypeName returns.
inline const char* device_type_name(const at::Device& d) {
  switch (d.type()) {
    case c10::DeviceType::CPU: return "cpu";
    case c10::DeviceType::CUDA: return "cuda";
    case c10::DeviceType::Meta: return "meta";
    default: return "another device type";
  }
}

inline void check_same_place(const at::Tensor& t, const at::Device& device, const char* op, const char* what,
                             size_t i) {
  SSD_FAST_CHECK(t.device() == device, "ssd_fast::%s: %s[%zu] is on %s:%d, expected %s:%d", op, what, i,
                 device_type_name(t.device()), static_cast<int>(t.device().index()), device_type_name(device),
                 static_cast<int>(device.index()));
  SSD_FAST_CHECK(t.is_contiguous(), "ssd_fast::%s: %s[%zu] must be contiguous", op, what, i);
}

inline void check_select_dampen_args(at::TensorList params, at::TensorList forget, at::TensorList full,
                                     double alpha, double lam, const at::Tensor& selected) {
  constexpr const char* op = "select_dampen_";
  SSD_FAST_CHECK(forget.size() == params.size() && full.size() == params.size(),
                 "ssd_fast::select_dampen_: params, forget and full must have the same length, got %zu, %zu, %zu",
                 params.size(), forget.size(), full.size());
  SSD_FAST_CHECK(std::isfinite(alpha) && alpha > 0, "ssd_fast::select_dampen_: alpha must be finite and > 0, got %g",
                 alpha);
  SSD_FAST_CHECK(std::isfinite(lam) && lam >= 0, "ssd_fast::select_dampen_: lam must be finite and >= 0, got %g", lam);
  SSD_FAST_CHECK(selected.scalar_type() == c10::kLong && selected.dim() == 1 &&
                     selected.numel() == static_cast<int64_t>(params.size()) && selected.is_contiguous(),
                 "ssd_fast::select_dampen_: selected must be a contiguous int64 vector with one entry per param "
                 "(%zu), got %s with %lld elements",
                 params.size(), c10::toString(selected.scalar_type()), static_cast<long long>(selected.numel()));
  const at::Device device = selected.device();
  for (size_t i = 0; i < params.size(); ++i) {
    SSD_FAST_CHECK(is_supported_param_dtype(params[i].scalar_type()),
                   "ssd_fast::select_dampen_: params[%zu] has unsupported dtype %s", i,
                   c10::toString(params[i].scalar_type()));
    SSD_FAST_CHECK(forget[i].scalar_type() == c10::kFloat && full[i].scalar_type() == c10::kFloat,
                   "ssd_fast::select_dampen_: importances must be float32, got forget[%zu] %s and full[%zu] %s", i,
                   c10::toString(forget[i].scalar_type()), i, c10::toString(full[i].scalar_type()));
    SSD_FAST_CHECK(forget[i].sizes() == params[i].sizes() && full[i].sizes() == params[i].sizes(),
                   "ssd_fast::select_dampen_: entry %zu has mismatched shapes", i);
    check_same_place(params[i], device, op, "params", i);
    check_same_place(forget[i], device, op, "forget", i);
    check_same_place(full[i], device, op, "full", i);
  }
}

inline void check_sq_accumulate_args(at::TensorList importances, at::TensorList grads, double scale) {
  constexpr const char* op = "sq_accumulate_";
  SSD_FAST_CHECK(importances.size() == grads.size(),
                 "ssd_fast::sq_accumulate_: importances and grads must have the same length, got %zu and %zu",
                 importances.size(), grads.size());
  SSD_FAST_CHECK(std::isfinite(scale), "ssd_fast::sq_accumulate_: scale must be finite, got %g", scale);
  if (importances.empty()) return;
  const at::Device device = importances[0].device();
  for (size_t i = 0; i < importances.size(); ++i) {
    SSD_FAST_CHECK(importances[i].scalar_type() == c10::kFloat,
                   "ssd_fast::sq_accumulate_: importances[%zu] must be float32, got %s", i,
                   c10::toString(importances[i].scalar_type()));
    SSD_FAST_CHECK(is_supported_param_dtype(grads[i].scalar_type()),
                   "ssd_fast::sq_accumulate_: grads[%zu] has unsupported dtype %s", i,
                   c10::toString(grads[i].scalar_type()));
    SSD_FAST_CHECK(grads[i].sizes() == importances[i].sizes(),
                   "ssd_fast::sq_accumulate_: entry %zu has mismatched shapes", i);
    check_same_place(importances[i], device, op, "importances", i);
    check_same_place(grads[i], device, op, "grads", i);
  }
}

}  // namespace ssd_fast
