// sq_accumulate_ on the CPU: importance += scale * g^2 (or |g|), fused over a list.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "../common/constants.h"
#include "../common/list_checks.h"
#include "../common/ssd_math.h"

namespace ssd_fast {
namespace {

template <typename grad_t, bool kAbsolute>
void accumulate_tensor(const at::Tensor& importance, const at::Tensor& grad, float scale) {
  float* imp = importance.data_ptr<float>();
  const grad_t* g = grad.data_ptr<grad_t>();
  at::parallel_for(0, importance.numel(), kCpuGrain, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      imp[j] += scale * squared_or_abs(g[j], kAbsolute);
    }
  });
}

void sq_accumulate_cpu(at::TensorList importances, at::TensorList grads, double scale, bool absolute) {
  check_sq_accumulate_args(importances, grads, scale);
  const float s = static_cast<float>(scale);
  for (size_t i = 0; i < importances.size(); ++i) {
    if (importances[i].numel() == 0) continue;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grads[i].scalar_type(), "sq_accumulate_cpu", [&] {
      if (absolute) {
        accumulate_tensor<scalar_t, true>(importances[i], grads[i], s);
      } else {
        accumulate_tensor<scalar_t, false>(importances[i], grads[i], s);
      }
    });
  }
}

}  // namespace
}  // namespace ssd_fast

TORCH_LIBRARY_IMPL(ssd_fast, CPU, m) { m.impl("sq_accumulate_", &ssd_fast::sq_accumulate_cpu); }
