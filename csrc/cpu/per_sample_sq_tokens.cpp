// per_sample_sq_tokens_ on the CPU: out[o, k] += scale * sum_b f(sum_t dy[b,t,o] x[b,t,k]),
// the per-sample squared weight gradient of a Linear layer applied over tokens.
#include <ATen/ops/empty.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "../common/per_sample_sq.h"
#include "per_sample_sq_tiles.h"

namespace ssd_fast {
namespace {

void per_sample_sq_tokens_cpu(const at::Tensor& out, const at::Tensor& dy, const at::Tensor& x, double scale,
                              bool absolute, c10::string_view precision) {
  check_per_sample_precision("per_sample_sq_tokens_", precision);  // the CPU computes "exact" for every one
  check_per_sample_sq_tokens_args(out, dy, x, scale);
  // One pass over each input puts it in the layout the tiles read in place: dy as fp32
  // [B, T, O] (usually already so), x as fp32 [B, K, T]; bf16 or fp16 is upcast in that pass.
  const at::Tensor d = cpu::contiguous_float(dy);
  const at::Tensor xt = cpu::contiguous_float(x.transpose(1, 2));
  const int64_t tokens = x.size(1), k_all = x.size(2);
  const cpu::SqProblem problem{x.size(0), 1, dy.size(2), k_all, tokens, static_cast<float>(scale), absolute,
                               d.const_data_ptr<float>(), out.data_ptr<float>()};
  const float* xp = xt.const_data_ptr<float>();
  cpu::accumulate_sq_tiles(problem, [&](float*, int64_t b, int64_t, int64_t k0, int64_t, int64_t l0, int64_t) {
    return cpu::Panel{xp + (b * k_all + k0) * tokens + l0, tokens};
  });
}

}  // namespace
}  // namespace ssd_fast

TORCH_LIBRARY_IMPL(ssd_fast, CPU, m) { m.impl("per_sample_sq_tokens_", &ssd_fast::per_sample_sq_tokens_cpu); }
