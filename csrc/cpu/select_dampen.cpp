// select_dampen_ on the CPU: one pass per tensor, split across threads with
// at::parallel_reduce so the selected count comes from the same pass.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <functional>

#include "../common/constants.h"
#include "../common/list_checks.h"
#include "../common/ssd_math.h"

namespace ssd_fast {
namespace {

template <typename scalar_t>
int64_t select_dampen_range(scalar_t* p, const float* f, const float* d, int64_t begin, int64_t end,
                            float alpha, float lam) {
  // A branch-free body (built with -fno-trapping-math) that GCC turns into compares
  // and blends: every element is loaded once, and the old value is stored back unchanged
  // where nothing is selected.
  int64_t count = 0;
  for (int64_t j = begin; j < end; ++j) {
    const scalar_t old = p[j];
    const float fj = f[j], dj = d[j];
    const bool sel = is_selected(fj, dj, alpha);
    const scalar_t out = dampened_value(old, fj, dj, lam);
    p[j] = sel ? out : old;
    count += sel;
  }
  return count;
}

template <typename scalar_t>
int64_t select_dampen_tensor(const at::Tensor& param, const at::Tensor& forget, const at::Tensor& full,
                             float alpha, float lam) {
  scalar_t* p = param.data_ptr<scalar_t>();
  const float* f = forget.data_ptr<float>();
  const float* d = full.data_ptr<float>();
  return at::parallel_reduce(
      0, param.numel(), kCpuGrain, int64_t{0},
      [&](int64_t begin, int64_t end, int64_t acc) {
        return acc + select_dampen_range(p, f, d, begin, end, alpha, lam);
      },
      std::plus<int64_t>());
}

void select_dampen_cpu(at::TensorList params, at::TensorList forget, at::TensorList full, double alpha,
                       double lam, const at::Tensor& selected) {
  check_select_dampen_args(params, forget, full, alpha, lam, selected);
  int64_t* counts = selected.data_ptr<int64_t>();
  const float a = static_cast<float>(alpha);
  const float l = static_cast<float>(lam);
  for (size_t i = 0; i < params.size(); ++i) {
    if (params[i].numel() == 0) continue;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, params[i].scalar_type(), "select_dampen_cpu", [&] {
      counts[i] += select_dampen_tensor<scalar_t>(params[i], forget[i], full[i], a, l);
    });
  }
}

}  // namespace
}  // namespace ssd_fast

TORCH_LIBRARY_IMPL(ssd_fast, CPU, m) { m.impl("select_dampen_", &ssd_fast::select_dampen_cpu); }
