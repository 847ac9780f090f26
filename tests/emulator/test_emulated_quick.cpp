// A quick subset of the emulated kernel tests, small enough to run under ThreadSanitizer
// and AddressSanitizer in CI (ctest builds it three ways: plain, -fsanitize=thread and
// -fsanitize=address) and to be the first, fast stage of the mutation runs
// (scripts/cuda_mutants.py). It reaches every kernel and every barrier:
//   - select_dampen_ and sq_accumulate_ over 67 tensors (two launches): empty, tails,
//     a chunk plus a tail, misaligned pointers; bits against the rule, exact counts;
//   - the per-sample engine with the conv and token loaders, sliced (add_slices_kernel)
//     and unsliced, edge tiles in o, k and l, an empty last slice, groups with stride and
//     dilation: bits against the fp32 model of the documented order, rerun bits, nothing
//     written outside `out`, loaders never called out of range.
// Every buffer has exactly its tensor's size, so that AddressSanitizer sees any read or
// write past a tensor. Exits non-zero on any failure.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "../../csrc/common/ssd_math.h"
#include "per_sample_cases.h"
#include "expect.h"

namespace {

using namespace emu_test;

// One tensor's storage, exactly n elements (plus one leading element when misaligned),
// from a 64-byte aligned allocation so that `aligned` tensors take the vector path.
template <class T>
struct Buffer {
  struct Free {
    void operator()(T* p) const { ::operator delete[](p, std::align_val_t(64)); }
  };
  std::unique_ptr<T, Free> storage;
  T* ptr;
  Buffer(int64_t n, bool misaligned)
      : storage(static_cast<T*>(::operator new[](sizeof(T) * static_cast<size_t>(n + 1), std::align_val_t(64)))),
        ptr(storage.get() + (misaligned ? 1 : 0)) {}
};

// 67 tensors (more than kMaxTensors = 64, so two launches): every branch of the chunk and
// vector logic at a size that stays quick under ThreadSanitizer.
std::vector<int64_t> quick_sizes() {
  std::vector<int64_t> sizes = {0, 1, 3, 4, 5, 7, ssd_fast::kChunk + 5, 0};
  for (int i = 0; i < 59; ++i) sizes.push_back(1 + (i * 29) % 41);
  return sizes;
}

bool misaligned(size_t i) { return i % 3 == 2; }

// memcmp with a null pointer is undefined even for 0 bytes (an empty vector's data())
bool same_bits(const float* a, const std::vector<float>& b) {
  return b.empty() || std::memcmp(a, b.data(), 4 * b.size()) == 0;
}

void test_select_dampen() {
  const std::vector<int64_t> sizes = quick_sizes();
  const float alpha = 10.0f, lam = 1.0f;
  std::vector<Buffer<float>> p, f, d;
  std::vector<float*> pp, fp, dp;
  std::vector<std::vector<float>> want(sizes.size());
  std::vector<unsigned long long> want_counts(sizes.size(), 0);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (size_t i = 0; i < sizes.size(); ++i) {
    p.emplace_back(sizes[i], misaligned(i));
    f.emplace_back(sizes[i], false);
    d.emplace_back(sizes[i], i % 5 == 1);
    for (int64_t j = 0; j < sizes[i]; ++j) {
      p[i].ptr[j] = u(rng) - 0.5f;
      d[i].ptr[j] = u(rng);
      f[i].ptr[j] = d[i].ptr[j] * alpha * (0.5f + u(rng));  // about half selected
      const bool sel = ssd_fast::is_selected(f[i].ptr[j], d[i].ptr[j], alpha);
      want[i].push_back(sel ? ssd_fast::dampened_value(p[i].ptr[j], f[i].ptr[j], d[i].ptr[j], lam) : p[i].ptr[j]);
      want_counts[i] += sel;
    }
    pp.push_back(p[i].ptr);
    fp.push_back(f[i].ptr);
    dp.push_back(d[i].ptr);
  }
  std::vector<unsigned long long> counts(sizes.size(), 0);
  const size_t launches = select_dampen<float>(pp, fp, dp, sizes, alpha, lam, counts.data());
  bool bits = true;
  for (size_t i = 0; i < sizes.size(); ++i) bits = bits && same_bits(pp[i], want[i]);
  expect(bits && launches == 2, "select_dampen fp32, 67 tensors in 2 launches: the rule's bits");
  expect(counts == want_counts, "select_dampen fp32: selected counts exact");
}

void test_sq_accumulate() {
  const std::vector<int64_t> sizes = quick_sizes();
  const float scale = 0.25f;
  std::vector<Buffer<float>> imp;
  std::vector<Buffer<emu::Half>> g;
  std::vector<float*> ip;
  std::vector<emu::Half*> gp;
  std::vector<std::vector<float>> want(sizes.size());
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (size_t i = 0; i < sizes.size(); ++i) {
    imp.emplace_back(sizes[i], i % 4 == 3);
    g.emplace_back(sizes[i], misaligned(i));
    for (int64_t j = 0; j < sizes[i]; ++j) {
      imp[i].ptr[j] = std::fabs(normal(rng));
      g[i].ptr[j] = emu::Half(normal(rng));
      const float x = static_cast<float>(g[i].ptr[j]);
      want[i].push_back(imp[i].ptr[j] + scale * (x * x));
    }
    ip.push_back(imp[i].ptr);
    gp.push_back(g[i].ptr);
  }
  sq_accumulate<emu::Half>(ip, gp, sizes, scale, false);
  bool bits = true;
  for (size_t i = 0; i < sizes.size(); ++i) bits = bits && same_bits(ip[i], want[i]);
  expect(bits, "sq_accumulate fp16 gradients, 67 tensors: the rule's bits");
}

// Runs `run` twice on a copy of out0 with guard zones either side; checks the model's bits.
template <class Run>
void check_per_sample(const std::string& name, const Problem& p, float scale, bool absolute, Run run) {
  constexpr size_t kGuard = 19;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> out0(static_cast<size_t>(p.outputs()));
  for (auto& v : out0) v = u(rng);
  std::vector<float> results[2];
  PerSampleSqPlan plan{};
  bool guards = true;
  for (auto& result : results) {
    std::vector<float> buffer(out0.size() + 2 * kGuard, -7.0f);
    std::copy(out0.begin(), out0.end(), buffer.begin() + kGuard);
    plan = run(buffer.data() + kGuard);
    for (size_t i = 0; i < kGuard; ++i) guards = guards && buffer[i] == -7.0f && buffer[buffer.size() - 1 - i] == -7.0f;
    result.assign(buffer.begin() + kGuard, buffer.end() - kGuard);
  }
  const std::vector<float> model = model_fp32(p, out0, scale, absolute, plan);
  const bool model_bits = std::memcmp(results[0].data(), model.data(), 4 * model.size()) == 0 && results[0] != out0;
  const bool rerun = std::memcmp(results[0].data(), results[1].data(), 4 * model.size()) == 0;
  char line[200];
  std::snprintf(line, sizeof(line), "per-sample %s (slices=%d): model bits %s, rerun %s, guards %s", name.c_str(),
                plan.slices, model_bits ? "equal" : "DIFFER", rerun ? "same" : "DIFFER", guards ? "intact" : "WRITTEN");
  expect(model_bits && rerun && guards, line);
}

void conv_case(const ConvSpec& c) {
  const ConvInputs<float> in = make_conv_inputs<float>(c, 1234);
  check_per_sample("conv " + c.name, conv_problem(c, in), c.scale, c.absolute,
                   [&](float* out) { return run_conv(c, in, out); });
}

void tokens_case(const TokensSpec& c) {
  const TokensInputs<emu::BFloat16> in = make_tokens_inputs<emu::BFloat16>(c, 4321);
  check_per_sample("tokens " + c.name, tokens_problem(c, in), c.scale, c.absolute,
                   [&](float* out) { return run_tokens(c, in, out); });
}

}  // namespace

int main() {
  test_select_dampen();
  test_sq_accumulate();
  // o: 64 + 6, k: 64 + 8, l: 16 + 9, two slices of one sample
  conv_case({"edge_tiles_O70_K72_L25", 2, 8, 5, 5, 70, 3, 3, 1, 1, 1, 1});
  conv_case({"groups2_stride2_dil2_unsliced", 2, 4, 7, 7, 6, 3, 3, 2, 2, 2, 2, 2, 2, 2, false, 1});
  tokens_case({"edge_tiles_K67_O66_T17_unsliced_abs", 2, 17, 67, 66, true, 1, true, 0.5f});
  tokens_case({"B7_slices_2221_empty_last", 7, 3, 4, 5, false, 3});
  return emu_test::finish();
}
