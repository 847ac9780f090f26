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

}  // namespace ssd_fast
