// The emulated CUDA kernels against the CPU ops (csrc/cpu, through the dispatcher) on
// the same inputs:
//   - select_dampen_ and sq_accumulate_: the same bits (both promise the published rule's
//     exact rounding) and the same selected counts;
//   - the per-sample ops: within float rounding (they sum in different orders), measured
//     against the fp64 oracle's rigorous bound;
//   - the emulator's fp16/bf16 conversions against c10's.
// Links libtorch and ssd_fast_ops; the other emulated tests need neither. Exits non-zero
// on any failure.
#include <ATen/core/Tensor.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/zeros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <ssd_fast/ops.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "per_sample_cases.h"
#include "expect.h"

namespace {

using namespace emu_test;

template <class T>
c10::ScalarType scalar_type() {
  if constexpr (std::is_same_v<T, float>) return at::kFloat;
  if constexpr (std::is_same_v<T, double>) return at::kDouble;
  if constexpr (std::is_same_v<T, emu::Half>) return at::kHalf;
  if constexpr (std::is_same_v<T, emu::BFloat16>) return at::kBFloat16;
}

template <class T>
at::Tensor wrap(const Strided4<T>& t, int dims) {
  return at::from_blob(const_cast<T*>(t.data.data()), at::IntArrayRef(t.size, dims), at::IntArrayRef(t.stride, dims),
                       at::TensorOptions().dtype(scalar_type<T>()));
}

void test_converters() {
  bool ok = true;
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float e = emu::Half::from_bits(static_cast<uint16_t>(h)), c = c10::Half(static_cast<uint16_t>(h), c10::Half::from_bits());
    ok = ok && (std::isnan(e) ? std::isnan(c) : std::memcmp(&e, &c, 4) == 0);
    const float eb = emu::BFloat16::from_bits(static_cast<uint16_t>(h));
    const float cb = c10::BFloat16(static_cast<uint16_t>(h), c10::BFloat16::from_bits());
    ok = ok && (std::isnan(eb) ? std::isnan(cb) : std::memcmp(&eb, &cb, 4) == 0);
  }
  std::mt19937 rng(11);
  std::uniform_int_distribution<uint32_t> any_bits;
  for (int i = 0; i < 1000000; ++i) {
    const uint32_t bits = any_bits(rng);
    float x;
    std::memcpy(&x, &bits, 4);
    if (std::isnan(x)) continue;
    ok = ok && emu::Half(x).bits == c10::Half(x).x && emu::BFloat16(x).bits == c10::BFloat16(x).x;
  }
  expect(ok, "emulator fp16/bf16 conversions equal c10's (65536 patterns each way, 1M random floats)");
}

// ---- multi-tensor ops: same bits as the CPU op ------------------------------------------
template <class T>
void test_select_dampen(const char* dtype, float alpha, float lam) {
  const int64_t c = ssd_fast::kChunk;
  const std::vector<int64_t> sizes = {0, 1, 5, 4096, c + 3, 3, 2 * c - 1, 77};
  std::mt19937 rng(17);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<std::vector<T>> p_emu, p_cpu;
  std::vector<std::vector<float>> f, d;
  for (int64_t n : sizes) {
    p_emu.emplace_back(n + 1);
    f.emplace_back(n + 1);
    d.emplace_back(n + 1);
    for (int64_t j = 0; j <= n; ++j) {
      p_emu.back()[j] = static_cast<T>(normal(rng));
      d.back()[j] = j % 13 == 0 ? 0.0f : u(rng);
      f.back()[j] = d.back()[j] * alpha * (0.5f + u(rng));
    }
    p_cpu.push_back(p_emu.back());
  }
  // tensor i starts at element i % 2 of its storage: odd ones are misaligned for vectors
  std::vector<T*> pe;
  std::vector<float*> fe, de;
  std::vector<at::Tensor> pt, ft, dt;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const int64_t s = static_cast<int64_t>(i % 2), n = sizes[i] - (sizes[i] > 0 ? s : 0);
    pe.push_back(p_emu[i].data() + s);
    fe.push_back(f[i].data() + s);
    de.push_back(d[i].data() + s);
    pt.push_back(at::from_blob(p_cpu[i].data() + s, {n}, at::TensorOptions().dtype(scalar_type<T>())));
    ft.push_back(at::from_blob(f[i].data() + s, {n}, at::kFloat));
    dt.push_back(at::from_blob(d[i].data() + s, {n}, at::kFloat));
  }
  std::vector<int64_t> numel;
  for (const auto& t : pt) numel.push_back(t.numel());
  std::vector<unsigned long long> counts(sizes.size(), 0);
  emu_test::select_dampen<T>(pe, fe, de, numel, alpha, lam, counts.data());
  at::Tensor selected = at::zeros({static_cast<int64_t>(sizes.size())}, at::kLong);
  ssd_fast::select_dampen_(pt, ft, dt, alpha, lam, selected);
  bool bits = true, same_counts = true;
  int64_t total = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    bits = bits && std::memcmp(p_emu[i].data(), p_cpu[i].data(), p_emu[i].size() * sizeof(T)) == 0;
    same_counts = same_counts && static_cast<int64_t>(counts[i]) == selected[i].item<int64_t>();
    total += static_cast<int64_t>(counts[i]);
  }
  expect(bits && same_counts && total > 0,
         std::string("select_dampen ") + dtype + ": emulated kernel = CPU op, bit for bit, and the same " +
             std::to_string(total) + " selected");
}

template <class G>
void test_sq_accumulate(const char* dtype, float scale, bool absolute) {
  const std::vector<int64_t> sizes = {1, 7, 8192, 8195, 0, 300};
  std::mt19937 rng(23);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::vector<float>> imp_emu, imp_cpu;
  std::vector<std::vector<G>> grads;
  std::vector<float*> ie;
  std::vector<G*> ge;
  std::vector<at::Tensor> it, gt;
  for (int64_t n : sizes) {
    imp_emu.emplace_back(n);
    grads.emplace_back(n);
    for (int64_t j = 0; j < n; ++j) {
      imp_emu.back()[j] = std::fabs(normal(rng));
      grads.back()[j] = static_cast<G>(normal(rng));
    }
    imp_cpu.push_back(imp_emu.back());
  }
  for (size_t i = 0; i < sizes.size(); ++i) {
    ie.push_back(imp_emu[i].data());
    ge.push_back(grads[i].data());
    it.push_back(at::from_blob(imp_cpu[i].data(), {sizes[i]}, at::kFloat));
    gt.push_back(at::from_blob(grads[i].data(), {sizes[i]}, at::TensorOptions().dtype(scalar_type<G>())));
  }
  emu_test::sq_accumulate<G>(ie, ge, sizes, scale, absolute);
  ssd_fast::sq_accumulate_(it, gt, scale, absolute);
  bool bits = true;
  for (size_t i = 0; i < sizes.size(); ++i) bits = bits && imp_emu[i] == imp_cpu[i];
  expect(bits, std::string("sq_accumulate ") + dtype + (absolute ? " |g|" : " g^2") +
                   ": emulated kernel = CPU op, bit for bit");
}

// ---- per-sample ops: within the rounding bound ---------------------------------------------
struct Agreement {
  double max_diff = 0, max_diff_over_bound = 0, cpu_err_over_bound = 0;
};

Agreement compare(const std::vector<float>& emulated, const at::Tensor& cpu, const Oracle& oracle) {
  Agreement a;
  const float* c = cpu.const_data_ptr<float>();
  for (size_t i = 0; i < emulated.size(); ++i) {
    const double diff = std::fabs(static_cast<double>(emulated[i]) - c[i]);
    a.max_diff = std::max(a.max_diff, diff);
    a.max_diff_over_bound = std::max(a.max_diff_over_bound, diff / (2 * oracle.bound[i]));
    // the CPU op is itself within the bound of the oracle (so it did run and add)
    a.cpu_err_over_bound = std::max(a.cpu_err_over_bound, std::fabs(c[i] - oracle.value[i]) / oracle.bound[i]);
  }
  return a;
}

void report(const char* op, const std::string& name, DType t, const Agreement& a) {
  const bool ok = a.max_diff_over_bound <= 1.0 && a.cpu_err_over_bound <= 1.0;
  char line[240];
  std::snprintf(line, sizeof(line), "%s %s %s: emulated vs CPU op, max |diff| %.2e, diff / (2 bound) %.3f (CPU op vs fp64: err / bound %.3f)",
                op, name.c_str(), dtype_name(t), a.max_diff, a.max_diff_over_bound, a.cpu_err_over_bound);
  expect(ok, line);
}

std::vector<float> initial_out(int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(i % 7) * 0.125f;
  return out;
}

template <class T>
void conv_vs_cpu(const ConvSpec& c, DType t) {
  const ConvInputs<T> in = make_conv_inputs<T>(c, 99);
  const Problem p = conv_problem(c, in);
  std::vector<float> emulated = initial_out(p.outputs());
  const Oracle oracle = oracle_fp64(p, emulated, c.scale, c.absolute);
  at::Tensor cpu = at::from_blob(emulated.data(), {c.out_channels, in.geo.c_per_group, c.kh, c.kw}, at::kFloat).clone();
  run_conv(c, in, emulated.data());
  ssd_fast::per_sample_sq_conv2d_(cpu, wrap(in.dy, 4), wrap(in.x, 4), {c.sh, c.sw}, {c.ph, c.pw}, {c.dh, c.dw},
                                  c.groups, c.scale, c.absolute);
  report("conv2d", c.name, t, compare(emulated, cpu, oracle));
}

template <class T>
void tokens_vs_cpu(const TokensSpec& c, DType t) {
  const TokensInputs<T> in = make_tokens_inputs<T>(c, 98);
  const Problem p = tokens_problem(c, in);
  std::vector<float> emulated = initial_out(p.outputs());
  const Oracle oracle = oracle_fp64(p, emulated, c.scale, c.absolute);
  at::Tensor cpu = at::from_blob(emulated.data(), {c.out_features, c.in_features}, at::kFloat).clone();
  run_tokens(c, in, emulated.data());
  ssd_fast::per_sample_sq_tokens_(cpu, wrap(in.dy, 3), wrap(in.x, 3), c.scale, c.absolute);
  report("tokens", c.name, t, compare(emulated, cpu, oracle));
}

}  // namespace

int main() {
  test_converters();
  test_select_dampen<float>("fp32", 10.0f, 1.0f);
  test_select_dampen<emu::Half>("fp16", 5.0f, 0.5f);
  test_select_dampen<emu::BFloat16>("bf16", 25.0f, 1.0f);
  test_select_dampen<double>("fp64", 50.0f, 0.1f);
  test_sq_accumulate<float>("fp32", 0.5f, false);
  test_sq_accumulate<emu::Half>("fp16", 1.0f / 3, true);
  test_sq_accumulate<emu::BFloat16>("bf16", 1.0f, false);
  test_sq_accumulate<double>("fp64", 0.25f, true);

  conv_vs_cpu<float>({"edge_tiles_groups2_stride2", 3, 8, 9, 9, 70, 3, 3, 2, 2, 1, 1, 1, 1, 2}, DType::kFloat);
  conv_vs_cpu<emu::BFloat16>({"dilation2_channels_last", 2, 4, 8, 8, 6, 3, 3, 1, 1, 2, 2, 2, 2, 1, true}, DType::kBFloat16);
  conv_vs_cpu<emu::Half>({"depthwise_absolute", 2, 5, 6, 6, 5, 3, 3, 1, 1, 1, 1, 1, 1, 5, false, 132, true, 0.5f},
                         DType::kHalf);
  conv_vs_cpu<double>({"B1_1x1", 1, 7, 5, 5, 9, 1, 1}, DType::kDouble);
  tokens_vs_cpu<float>({"edge_tiles_K67_O70_T9", 3, 9, 67, 70}, DType::kFloat);
  tokens_vs_cpu<emu::BFloat16>({"long_T300_transposed", 2, 300, 17, 5, true}, DType::kBFloat16);
  tokens_vs_cpu<emu::Half>({"T1_absolute", 6, 1, 5, 7, false, 132, true, 2.0f}, DType::kHalf);
  return emu_test::finish();
}
