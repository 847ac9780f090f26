// Argument checks shared by the CPU and CUDA kernels, so both backends refuse the same
// inputs with the same messages. The Python wrapper validates first; these checks keep
// direct callers of torch.ops.ssd_fast.* from reading out of bounds.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>

namespace ssd_fast {

inline bool is_supported_param_dtype(c10::ScalarType t) {
  return t == c10::kFloat || t == c10::kDouble || t == c10::kHalf || t == c10::kBFloat16;
}

inline void check_same_place(const at::Tensor& t, const at::Device& device, const char* what, size_t i) {
  TORCH_CHECK(t.device() == device, "ssd_fast: ", what, "[", i, "] is on ", t.device(), ", expected ", device);
  TORCH_CHECK(t.is_contiguous(), "ssd_fast: ", what, "[", i, "] must be contiguous");
}

inline void check_select_dampen_args(at::TensorList params, at::TensorList forget, at::TensorList full,
                                     double alpha, double lam, const at::Tensor& selected) {
  TORCH_CHECK(forget.size() == params.size() && full.size() == params.size(),
              "ssd_fast::select_dampen_: params, forget and full must have the same length, got ",
              params.size(), ", ", forget.size(), ", ", full.size());
  TORCH_CHECK(std::isfinite(alpha) && alpha > 0, "ssd_fast::select_dampen_: alpha must be finite and > 0");
  TORCH_CHECK(std::isfinite(lam) && lam >= 0, "ssd_fast::select_dampen_: lam must be finite and >= 0");
  TORCH_CHECK(selected.scalar_type() == c10::kLong && selected.dim() == 1 &&
                  selected.numel() == static_cast<int64_t>(params.size()) && selected.is_contiguous(),
              "ssd_fast::select_dampen_: selected must be a contiguous int64 vector with one entry per param");
  const at::Device device = selected.device();
  for (size_t i = 0; i < params.size(); ++i) {
    TORCH_CHECK(is_supported_param_dtype(params[i].scalar_type()), "ssd_fast::select_dampen_: params[", i,
                "] has unsupported dtype ", params[i].scalar_type());
    TORCH_CHECK(forget[i].scalar_type() == c10::kFloat && full[i].scalar_type() == c10::kFloat,
                "ssd_fast::select_dampen_: importances must be float32 (entry ", i, ")");
    TORCH_CHECK(forget[i].sizes() == params[i].sizes() && full[i].sizes() == params[i].sizes(),
                "ssd_fast::select_dampen_: entry ", i, " has mismatched shapes");
    check_same_place(params[i], device, "params", i);
    check_same_place(forget[i], device, "forget", i);
    check_same_place(full[i], device, "full", i);
  }
}

inline void check_sq_accumulate_args(at::TensorList importances, at::TensorList grads, double scale) {
  TORCH_CHECK(importances.size() == grads.size(), "ssd_fast::sq_accumulate_: importances and grads must have ",
              "the same length, got ", importances.size(), " and ", grads.size());
  TORCH_CHECK(std::isfinite(scale), "ssd_fast::sq_accumulate_: scale must be finite");
  if (importances.empty()) return;
  const at::Device device = importances[0].device();
  for (size_t i = 0; i < importances.size(); ++i) {
    TORCH_CHECK(importances[i].scalar_type() == c10::kFloat, "ssd_fast::sq_accumulate_: importances[", i,
                "] must be float32");
    TORCH_CHECK(is_supported_param_dtype(grads[i].scalar_type()), "ssd_fast::sq_accumulate_: grads[", i,
                "] has unsupported dtype ", grads[i].scalar_type());
    TORCH_CHECK(grads[i].sizes() == importances[i].sizes(), "ssd_fast::sq_accumulate_: entry ", i,
                " has mismatched shapes");
    check_same_place(importances[i], device, "importances", i);
    check_same_place(grads[i], device, "grads", i);
  }
}

}  // namespace ssd_fast
