// The multi-tensor kernels (select_dampen_ and sq_accumulate_ through multi_tensor_kernel,
// find_chunk's binary search, the vector and scalar paths and block_sum's warp shuffles),
// emulated on the CPU. Each list mixes sizes that reach every branch: empty tensors, one
// element, tails shorter than a vector, a chunk plus one, several chunks, tensors whose
// pointers are misaligned for the vector path; and more than kMaxTensors (64) tensors, so
// that a call takes several launches. Checked against:
//   - the published rule in fp32 written out here (bits), and the selected counts (exact);
//   - an fp64 oracle (the dampening factor in fp64, within fp32 rounding);
//   - a rerun (bits).
// The comparison with the CPU ops is in test_emulated_vs_cpu_ops.cpp. Exits non-zero on
// any failure.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "../../csrc/emulator/float16.h"
#include "emulated_launch.h"
#include "expect.h"

namespace {

using emu_test::expect;

// Sizes that reach every branch of the chunk and vector logic (kChunk = 8192, kVec = 4).
std::vector<int64_t> branch_sizes() {
  const int64_t c = ssd_fast::kChunk;
  std::vector<int64_t> sizes = {0, 1, 3, 4, 5, 7, 64, 257, c - 1, c, c + 1, 2 * c + 3, 0, 1000, 3 * c};
  for (int i = 0; i < 60; ++i) sizes.push_back(1 + (i * 37) % 300);  // 75 tensors: two launches
  return sizes;
}

// Storage for one list of tensors, each at an offset of `shift` elements from an aligned
// start (shift 1 makes every pointer misaligned for the vector path).
template <class T>
struct TensorList {
  std::vector<std::vector<T>> storage;
  std::vector<T*> ptr;
  TensorList(const std::vector<int64_t>& sizes, const std::vector<int>& shift) {
    for (size_t i = 0; i < sizes.size(); ++i) storage.emplace_back(static_cast<size_t>(sizes[i] + 8));
    for (size_t i = 0; i < sizes.size(); ++i) {
      auto* base = storage[i].data();
      const uintptr_t misfit = reinterpret_cast<uintptr_t>(base) % (sizeof(T) * ssd_fast::kVec);
      T* aligned = base + (misfit == 0 ? 0 : (sizeof(T) * ssd_fast::kVec - misfit) / sizeof(T));
      ptr.push_back(aligned + shift[i]);
    }
  }
};

// Every 5th tensor misaligned in one of the lists (rotating which list).
std::vector<int> shifts(const std::vector<int64_t>& sizes, int list) {
  std::vector<int> s(sizes.size(), 0);
  for (size_t i = 0; i < sizes.size(); ++i) s[i] = (i % 5 == 2 && static_cast<int>(i / 5) % 3 == list) ? 1 : 0;
  return s;
}

// Importances in the pattern the rule distinguishes: ratio f/d around alpha, d = 0, f = 0,
// tiny and subnormal values, inf and NaN.
void fill_importances(float* f, float* d, int64_t n, std::mt19937& rng, float alpha) {
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (int64_t j = 0; j < n; ++j) {
    const float dj = u(rng);
    float fj = dj * alpha * (0.5f + u(rng));  // about half selected
    switch (j % 23) {
      case 3: fj = 0.0f; break;
      case 5: d[j] = 0.0f; f[j] = u(rng); continue;                     // d = 0: zeroed
      case 7: d[j] = 1e-40f; f[j] = 1e-38f; continue;                    // subnormal d
      case 11: d[j] = 0.0f; f[j] = 0.0f; continue;                       // 0 > 0 is false
      case 13: d[j] = 1.0f; f[j] = INFINITY; continue;                   // beta = 0
      case 17: d[j] = NAN; f[j] = 1.0f; continue;                        // NaN never selects
      case 19: d[j] = 1.0f; f[j] = std::nextafter(alpha, INFINITY); continue;  // just above the threshold
      default: break;
    }
    f[j] = fj;
    d[j] = dj;
  }
}

bool same_bits(const void* a, const void* b, size_t bytes) { return std::memcmp(a, b, bytes) == 0; }

template <class T>
void test_select_dampen(const char* dtype, float alpha, float lam) {
  const std::vector<int64_t> sizes = branch_sizes();
  TensorList<T> params(sizes, shifts(sizes, 0)), expected(sizes, shifts(sizes, 0));
  TensorList<float> forget(sizes, shifts(sizes, 1)), full(sizes, shifts(sizes, 2));
  std::mt19937 rng(99);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<unsigned long long> want_counts(sizes.size(), 0);
  double worst_relative = 0;
  bool oracle_ok = true;
  for (size_t i = 0; i < sizes.size(); ++i) {
    fill_importances(forget.ptr[i], full.ptr[i], sizes[i], rng, alpha);
    for (int64_t j = 0; j < sizes[i]; ++j) {
      params.ptr[i][j] = static_cast<T>(normal(rng));
      // the rule, in fp32 (fp64 for fp64 params), written out independently of ssd_math.h
      const float f = forget.ptr[i][j], d = full.ptr[i][j];
      const bool selected = f > alpha * d;
      float beta = (lam * d) / f;
      beta = beta < 1.0f ? beta : 1.0f;
      const T p = params.ptr[i][j];
      if constexpr (std::is_same_v<T, double>) {
        expected.ptr[i][j] = selected ? p * static_cast<double>(beta) : p;
      } else {
        expected.ptr[i][j] = selected ? static_cast<T>(static_cast<float>(p) * beta) : p;
      }
      want_counts[i] += selected;
      // fp64 oracle: the dampening factor without fp32 rounding (where lam * d is a normal
      // fp32 number: below that the fp32 rule loses bits by design)
      if (selected && std::isfinite(f) && f > 0 && lam * d >= 0x1p-126f) {
        const double beta64 = std::min(static_cast<double>(lam) * d / f, 1.0);
        const double want = static_cast<double>(p) * beta64;
        const double got = static_cast<double>(expected.ptr[i][j]);
        const double rel = std::fabs(got - want) / std::max(std::fabs(want), 1e-30);
        // fp32 beta (2 roundings) and the product's rounding in T
        const double tol = std::is_same_v<T, float> || std::is_same_v<T, double> ? 3 * 0x1p-24
                           : std::is_same_v<T, emu::Half>                       ? 0x1p-11 + 3 * 0x1p-24
                                                                                : 0x1p-8 + 3 * 0x1p-24;
        if (std::fabs(want) > 1e-4) {  // fp16's subnormal range rounds absolutely, not relatively
          worst_relative = std::max(worst_relative, rel);
          oracle_ok = oracle_ok && rel <= tol;
        }
      }
    }
  }
  std::vector<std::vector<T>> before;
  for (size_t i = 0; i < sizes.size(); ++i) before.emplace_back(params.ptr[i], params.ptr[i] + sizes[i]);
  std::vector<unsigned long long> counts(sizes.size(), 0);
  const size_t launches = emu_test::select_dampen<T>(params.ptr, forget.ptr, full.ptr, sizes, alpha, lam, counts.data());
  bool bits = true, nan_ok = true;
  for (size_t i = 0; i < sizes.size(); ++i) {
    for (int64_t j = 0; j < sizes[i]; ++j) {
      const float got = static_cast<float>(params.ptr[i][j]), want = static_cast<float>(expected.ptr[i][j]);
      if (std::isnan(want)) {
        nan_ok = nan_ok && std::isnan(got);
      } else {
        bits = bits && same_bits(&params.ptr[i][j], &expected.ptr[i][j], sizeof(T));
      }
    }
  }
  // rerun on the same inputs
  std::vector<unsigned long long> counts2(sizes.size(), 0);
  std::vector<std::vector<T>> first;
  for (size_t i = 0; i < sizes.size(); ++i) {
    first.emplace_back(params.ptr[i], params.ptr[i] + sizes[i]);
    std::copy(before[i].begin(), before[i].end(), params.ptr[i]);
  }
  emu_test::select_dampen<T>(params.ptr, forget.ptr, full.ptr, sizes, alpha, lam, counts2.data());
  bool rerun = counts2 == counts;
  for (size_t i = 0; i < sizes.size(); ++i) rerun = rerun && same_bits(first[i].data(), params.ptr[i], sizes[i] * sizeof(T));
  char line[200];
  std::snprintf(line, sizeof(line), "select_dampen %s (%zu tensors, %zu launches): rule bits, NaNs kept", dtype,
                sizes.size(), launches);
  expect(bits && nan_ok && launches == 2, line);
  std::snprintf(line, sizeof(line), "select_dampen %s: selected counts exact", dtype);
  expect(counts == want_counts, line);
  std::snprintf(line, sizeof(line), "select_dampen %s: fp64 oracle, max relative error %.2e", dtype, worst_relative);
  expect(oracle_ok, line);
  std::snprintf(line, sizeof(line), "select_dampen %s: rerun gives the same bits and counts", dtype);
  expect(rerun, line);
}

template <class G>
void test_sq_accumulate(const char* dtype, float scale, bool absolute) {
  const std::vector<int64_t> sizes = branch_sizes();
  TensorList<float> imp(sizes, shifts(sizes, 0)), expected(sizes, shifts(sizes, 0));
  TensorList<G> grads(sizes, shifts(sizes, 1));
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  double worst_relative = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    for (int64_t j = 0; j < sizes[i]; ++j) {
      imp.ptr[i][j] = u(rng);
      grads.ptr[i][j] = static_cast<G>(j % 31 == 4 ? 1e-30f : normal(rng));  // a square that underflows
      const float g = static_cast<float>(grads.ptr[i][j]);
      const float term = scale * (absolute ? std::fabs(g) : g * g);
      expected.ptr[i][j] = imp.ptr[i][j] + term;
      const double want = imp.ptr[i][j] + static_cast<double>(scale) * (absolute ? std::fabs(g) : double(g) * g);
      worst_relative = std::max(worst_relative, std::fabs(expected.ptr[i][j] - want) / std::fabs(want));
    }
  }
  std::vector<std::vector<float>> before;
  for (size_t i = 0; i < sizes.size(); ++i) before.emplace_back(imp.ptr[i], imp.ptr[i] + sizes[i]);
  emu_test::sq_accumulate<G>(imp.ptr, grads.ptr, sizes, scale, absolute);
  bool bits = true, rerun = true;
  std::vector<std::vector<float>> first;
  for (size_t i = 0; i < sizes.size(); ++i) {
    for (int64_t j = 0; j < sizes[i]; ++j) {
      if (!same_bits(&imp.ptr[i][j], &expected.ptr[i][j], sizeof(float))) {
        if (bits) std::printf("  first difference: tensor %zu [%lld]: %a, want %a\n", i, static_cast<long long>(j), imp.ptr[i][j], expected.ptr[i][j]);
        bits = false;
      }
    }
    first.emplace_back(imp.ptr[i], imp.ptr[i] + sizes[i]);
    std::copy(before[i].begin(), before[i].end(), imp.ptr[i]);
  }
  emu_test::sq_accumulate<G>(imp.ptr, grads.ptr, sizes, scale, absolute);
  for (size_t i = 0; i < sizes.size(); ++i) rerun = rerun && same_bits(first[i].data(), imp.ptr[i], sizes[i] * 4);
  char line[200];
  // three fp32 roundings (g^2, scale * g^2, the add) of non-negative terms
  std::snprintf(line, sizeof(line), "sq_accumulate %s %s: rule bits (fp64 oracle: max relative error %.2e <= 3u)",
                dtype, absolute ? "|g|" : "g^2", worst_relative);
  expect(bits && worst_relative <= 3 * 0x1p-24, line);
  std::snprintf(line, sizeof(line), "sq_accumulate %s %s: rerun gives the same bits", dtype, absolute ? "|g|" : "g^2");
  expect(rerun, line);
}

void test_plan() {
  using namespace ssd_fast::cuda;
    std::vector<float> buffer(1024);
  std::vector<TensorSlot<2>> slots;
  for (int i = 0; i < 133; ++i) {
    const int64_t n = i % 44 == 0 ? 0 : 1 + i;
    slots.push_back({{buffer.data(), buffer.data() + (i % 2)}, {4, 4}, n, i});
  }
  const auto launches = plan_multi_tensor(slots, 16);
  // 129 non-empty tensors (i = 0, 44, 88, 132 are empty): 64 + 64 + 1
  bool ok = launches.size() == 3 && launches[0].meta.count == 64 && launches[1].meta.count == 64 &&
            launches[2].meta.count == 1;
  int64_t covered = 0;
  for (const auto& l : launches) {
    for (int s = 0; s < l.meta.count; ++s) covered += l.meta.numel[s];
    // every block's chunk, found by binary search, lies inside its tensor and the chunks tile it
    std::vector<int64_t> next(l.meta.count, 0);
    for (int64_t b = 0; b < l.blocks; ++b) {
      const Chunk c = find_chunk(l.meta, 16, b);
      ok = ok && c.begin == next[c.slot] && c.end > c.begin && c.end <= l.meta.numel[c.slot];
      next[c.slot] = c.end;
    }
    for (int s = 0; s < l.meta.count; ++s) ok = ok && next[s] == l.meta.numel[s];
    for (int s = 0; s < l.meta.count; ++s) ok = ok && l.meta.aligned[s] == (l.meta.list_index[s] % 2 == 0);
  }
  int64_t want = 0;
  for (const auto& s : slots) want += s.numel;
  expect(ok && covered == want, "plan_multi_tensor: 64 tensors per launch, empty ones skipped, chunks tile each tensor");
}

}  // namespace

int main() {
  test_plan();
  test_select_dampen<float>("fp32", 10.0f, 1.0f);
  test_select_dampen<emu::Half>("fp16", 5.0f, 0.5f);
  test_select_dampen<emu::BFloat16>("bf16", 25.0f, 1.0f);
  test_select_dampen<double>("fp64", 50.0f, 0.1f);
  test_sq_accumulate<float>("fp32", 0.25f, false);
  test_sq_accumulate<float>("fp32", 1.0f / 3, true);
  test_sq_accumulate<emu::Half>("fp16", 0.5f, false);
  test_sq_accumulate<emu::BFloat16>("bf16", 2.0f, true);
  test_sq_accumulate<double>("fp64", 1.0f / 7, false);
  return emu_test::finish();
}
