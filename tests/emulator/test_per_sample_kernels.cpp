// The per-sample kernels (per_sample_sq_kernel with the conv and token loaders, and
// add_slices_kernel), emulated on the CPU on shapes that reach every branch, each in four
// dtypes, checked three ways:
//   - against an fp64 oracle, within a rigorous per-element rounding bound;
//   - bit for bit against an fp32 model of the documented summation order;
//   - the same bits on a rerun.
// It also checks that nothing is written outside `out` (guard zones) and that an empty
// problem launches nothing. The tensor-core math (precision "tf32" / "bf16") runs on a subset
// of the cases, against the oracle with its own bound and without an order model (the
// hardware's order inside one mma is not documented). Exits non-zero on any failure.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "per_sample_cases.h"
#include "expect.h"

namespace {

using namespace emu_test;

constexpr size_t kGuard = 67;  // floats either side of out, which no kernel may touch
const float kGuardValue = -1234.5f;

struct Outcome {
  double max_abs_err = 0, max_err_over_bound = 0, norm_err = 0, norm_ref = 0;
  bool model_equal = true, rerun_equal = true, guards_intact = true, finite = true;
};

// out0 plus room for guards; returns the run's output.
template <class Run>
std::vector<float> run_guarded(const std::vector<float>& out0, Run run, bool& guards_intact, PerSampleSqPlan& plan) {
  std::vector<float> buffer(out0.size() + 2 * kGuard, kGuardValue);
  std::copy(out0.begin(), out0.end(), buffer.begin() + kGuard);
  // run on the guarded buffer directly, so that writes past either end land in a guard
  plan = run(buffer.data() + kGuard);
  for (size_t i = 0; i < kGuard; ++i) {
    guards_intact = guards_intact && buffer[i] == kGuardValue && buffer[buffer.size() - 1 - i] == kGuardValue;
  }
  return std::vector<float>(buffer.begin() + kGuard, buffer.end() - kGuard);
}

struct Mode;
void report(const char* kernel, const std::string& name, DType t, const PerSampleSqPlan& plan, const Outcome& r,
            size_t n, const Mode& mode);
void report_line(const char* kernel, const std::string& name, DType t, const PerSampleSqPlan& plan, const Outcome& r,
                 size_t n, const char* mode, bool order_model) {
  const bool ok = r.model_equal && r.rerun_equal && r.guards_intact && r.finite && r.max_err_over_bound <= 1.0;
  if (!ok) ++failures;
  std::printf("%s %-7s %-5s %-26s %-4s slices=%-2d n=%-6zu max|err|=%.2e err/bound=%.3f rel=%.1e model=%s rerun=%s%s\n",
              ok ? "ok  " : "FAIL", kernel, mode, name.c_str(), dtype_name(t), plan.empty ? 0 : plan.slices, n,
              r.max_abs_err, r.max_err_over_bound, r.norm_ref > 0 ? std::sqrt(r.norm_err / r.norm_ref) : 0.0,
              order_model ? (r.model_equal ? "bits" : "DIFF") : "none", r.rerun_equal ? "same" : "DIFF",
              r.guards_intact ? "" : " GUARD-WRITTEN");
}

// The math under test: the fp32 FMA path (bit-exact order model) or a tensor-core one
// (fp64 oracle within its rounding bound only: see kernels/per_sample_sq_mma.cuh).
struct Mode {
  const char* name;
  bool order_model;
  Rounding rounding;
};
const Mode kExact{"exact", true, {}};
const Mode kTf32{"tf32", false, tensor_core_rounding(0x1p-11)};
const Mode kBf16{"bf16", false, tensor_core_rounding(0x1p-8)};

void report(const char* kernel, const std::string& name, DType t, const PerSampleSqPlan& plan, const Outcome& r,
            size_t n, const Mode& mode) {
  report_line(kernel, name, t, plan, r, n, mode.name, mode.order_model);
}

template <class Run>
void check(const char* kernel, const std::string& name, DType t, const Problem& p, float scale, bool absolute,
           Run run, const Mode& mode = kExact) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> out0(static_cast<size_t>(p.outputs()));
  for (auto& v : out0) v = uniform(rng);  // out is added to, not overwritten
  Outcome r;
  PerSampleSqPlan plan{}, plan2{};
  const std::vector<float> first = run_guarded(out0, run, r.guards_intact, plan);
  const std::vector<float> second = run_guarded(out0, run, r.guards_intact, plan2);
  r.rerun_equal = std::memcmp(first.data(), second.data(), first.size() * sizeof(float)) == 0;
  if (mode.order_model) {
    const std::vector<float> model = model_fp32(p, out0, scale, absolute, plan);
    r.model_equal = std::memcmp(first.data(), model.data(), first.size() * sizeof(float)) == 0;
  }
  const Oracle oracle = oracle_fp64(p, out0, scale, absolute, mode.rounding);
  for (size_t i = 0; i < first.size(); ++i) {
    const double err = std::fabs(first[i] - oracle.value[i]);
    r.finite = r.finite && std::isfinite(first[i]);
    r.max_abs_err = std::max(r.max_abs_err, err);
    r.max_err_over_bound = std::max(r.max_err_over_bound, err / oracle.bound[i]);
    r.norm_err += err * err;
    r.norm_ref += (oracle.value[i] - out0[i]) * (oracle.value[i] - out0[i]);
  }
  if (p.outputs() > 0 && p.batch > 0 && p.length > 0 && first == out0) r.model_equal = false;  // nothing was added
  report(kernel, name, t, plan, r, first.size(), mode);
}

template <class T, class Math = SqFmaMath>
void conv_case(const ConvSpec& c, DType t, const Mode& mode = kExact) {
  const ConvInputs<T> in = make_conv_inputs<T>(c, 1234);
  const Problem p = conv_problem(c, in);
  check("conv2d", c.name, t, p, c.scale, c.absolute, [&](float* out) { return run_conv<T, Math>(c, in, out); }, mode);
}

template <class T, class Math = SqFmaMath>
void tokens_case(const TokensSpec& c, DType t, const Mode& mode = kExact) {
  const TokensInputs<T> in = make_tokens_inputs<T>(c, 4321);
  const Problem p = tokens_problem(c, in);
  check("tokens", c.name, t, p, c.scale, c.absolute, [&](float* out) { return run_tokens<T, Math>(c, in, out); },
        mode);
}

// The tensor-core paths on cases that reach their edges (tiles, slices, padding, strides),
// fp32 inputs against the bound with operand rounding; bf16 inputs, which tf32 and bf16 hold
// exactly, against the bound without it (a mangled operand would show there).
template <class Math>
void tensor_core_cases(const std::vector<ConvSpec>& convs, const std::vector<TokensSpec>& tokens, const Mode& mode) {
  const Mode exact_operands{mode.name, false, tensor_core_rounding(0)};
  for (const ConvSpec& c : convs) {
    if (c.name == "3x3_pad1_sliced" || c.name == "edge_tiles_O70_K72_L25" || c.name == "channels_last" ||
        c.name == "absolute_scale") {
      conv_case<float, Math>(c, DType::kFloat, mode);
    }
    if (c.name == "edge_tiles_O70_K72_L25") conv_case<emu::BFloat16, Math>(c, DType::kBFloat16, exact_operands);
  }
  for (const TokensSpec& c : tokens) {
    if (c.name == "edge_tiles_K67_O70_T9" || c.name == "long_T300" || c.name == "empty_tokens") {
      tokens_case<float, Math>(c, DType::kFloat, mode);
    }
    if (c.name == "edge_tiles_K67_O70_T9") tokens_case<emu::BFloat16, Math>(c, DType::kBFloat16, exact_operands);
  }
}

template <class Spec, class F>
void for_dtype(const Spec& c, DType t, F&& f) {
  switch (t) {
    case DType::kFloat: f.template operator()<float>(c, t); break;
    case DType::kHalf: f.template operator()<emu::Half>(c, t); break;
    case DType::kBFloat16: f.template operator()<emu::BFloat16>(c, t); break;
    case DType::kDouble: f.template operator()<double>(c, t); break;
  }
}

}  // namespace

int main() {
  // name, B, C, H, W, O, kh, kw, then stride / padding / dilation / groups / layout / sms
  std::vector<ConvSpec> convs;
  auto conv = [&](ConvSpec c) { convs.push_back(c); };
  conv({"3x3_pad1_sliced", 3, 3, 6, 6, 5, 3, 3, 1, 1, 1, 1});
  conv({"edge_tiles_O70_K72_L25", 2, 8, 5, 5, 70, 3, 3, 1, 1, 1, 1});  // o: 64+6, k: 64+8, l: 16+9
  conv({"unsliced_sms1_O140_K135", 2, 15, 5, 5, 140, 3, 3, 1, 1, 1, 1, 1, 1, 1, false, 1});  // 9 blocks: 1 slice
  conv({"K117_two_k_tiles_B5", 5, 13, 4, 4, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, false, 1});  // slices 2+2+1+0
  conv({"groups2", 2, 6, 7, 7, 4, 3, 3, 1, 1, 1, 1, 1, 1, 2});
  conv({"depthwise", 2, 5, 6, 6, 5, 3, 3, 1, 1, 1, 1, 1, 1, 5});
  conv({"dilation2_pad2", 2, 3, 8, 8, 4, 3, 3, 1, 1, 2, 2, 2, 2});
  conv({"stride2_pad1", 3, 4, 9, 9, 6, 3, 3, 2, 2, 1, 1});
  conv({"stride21_pad12_dil12", 2, 3, 7, 9, 4, 3, 2, 2, 1, 1, 2, 1, 2});
  conv({"kernel_1x1", 2, 7, 5, 5, 9, 1, 1});
  conv({"kernel_3x1_nonsquare", 2, 3, 6, 5, 4, 3, 1});
  conv({"channels_last", 2, 6, 5, 5, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1, true});
  conv({"B1", 1, 3, 6, 6, 5, 3, 3, 1, 1, 1, 1});
  conv({"L1_one_output_pixel", 3, 4, 3, 3, 5, 3, 3});
  conv({"absolute_scale", 3, 3, 6, 6, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, false, 132, true, 0.25f});
  conv({"squares_scale_third", 3, 3, 6, 6, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, false, 1, false, 1.0f / 3});
  conv({"empty_batch", 0, 3, 6, 6, 5, 3, 3, 1, 1, 1, 1});

  std::vector<TokensSpec> tokens = {
      {"T1", 6, 1, 5, 7},
      {"edge_tiles_K67_O70_T9", 3, 9, 67, 70},
      {"many_outputs_O200", 2, 5, 20, 200},
      {"long_T300", 2, 300, 17, 5},
      {"B1", 1, 4, 6, 5},
      {"B7_empty_last_slices", 7, 3, 70, 130, false, 4},  // 6 blocks, 6 slices of 2: 2+2+2+1+0+0
      {"unsliced_sms1_O260", 3, 5, 70, 260, false, 1},  // 10 blocks: 1 slice
      {"transposed_storage", 3, 9, 11, 13, true},
      {"absolute_scale", 4, 6, 9, 10, false, 132, true, 0.5f},
      {"empty_tokens", 3, 0, 4, 5},
      {"empty_batch", 0, 3, 4, 5},
  };

  const DType all[] = {DType::kFloat, DType::kHalf, DType::kBFloat16, DType::kDouble};
  auto run_conv_case = []<class T>(const ConvSpec& c, DType t) { conv_case<T>(c, t); };
  auto run_tokens_case = []<class T>(const TokensSpec& c, DType t) { tokens_case<T>(c, t); };
  for (const ConvSpec& c : convs) {
    // every dtype on the plain case and the edge tiles; fp32 for the geometry variants
    const bool all_types = c.name == "3x3_pad1_sliced" || c.name == "edge_tiles_O70_K72_L25" || c.name == "groups2";
    for (DType t : all) {
      if (all_types || t == DType::kFloat) for_dtype(c, t, run_conv_case);
    }
  }
  for (const TokensSpec& c : tokens) {
    const bool all_types = c.name == "edge_tiles_K67_O70_T9" || c.name == "T1";
    for (DType t : all) {
      if (all_types || t == DType::kFloat) for_dtype(c, t, run_tokens_case);
    }
  }
  tensor_core_cases<SqMmaMath<SqTensorCore::kTf32>>(convs, tokens, kTf32);
  tensor_core_cases<SqMmaMath<SqTensorCore::kBf16>>(convs, tokens, kBf16);
  // a plan with nothing to do launches nothing (emu::launch would refuse an empty grid)
  const PerSampleSqPlan empty = plan_per_sample_sq(SqShape{4, 1, 0, 5, 3}, 132);
  if (!empty.empty) ++failures;
  std::printf("%s per-sample plan of O=0 is empty\n", empty.empty ? "ok  " : "FAIL");
  return emu_test::finish();
}
