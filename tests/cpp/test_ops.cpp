// C++ users reach the ops through the public header (csrc/include/ssd_fast/ops.h), which
// calls the dispatcher exactly as Python does. This checks a hand-computed case for each
// multi-tensor op, the per-sample ops against a naive per-sample loop written here, and
// that a bad argument raises c10::Error; it exits non-zero on any mismatch.
#include <ATen/ATen.h>
#include <ssd_fast/ops.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  std::printf("%s: %s\n", ok ? "ok  " : "FAIL", what);
  if (!ok) ++failures;
}

void test_select_dampen() {
  // f > 2d selects elements 0, 1 and 3; d = 0 zeroes element 1; f = 0 is never selected.
  std::vector<at::Tensor> params{at::tensor({1.5f, -2.0f, 3.0f, 4.0f})};
  std::vector<at::Tensor> forget{at::tensor({1.0f, 1.0f, 0.0f, 0.5f})};
  std::vector<at::Tensor> full{at::tensor({0.25f, 0.0f, 0.0f, 0.1f})};
  at::Tensor selected = at::zeros({1}, at::kLong);
  ssd_fast::select_dampen_(params, forget, full, 2.0, 1.0, selected);
  const at::Tensor want = at::tensor({1.5f * 0.25f, 0.0f, 3.0f, 4.0f * 0.2f});
  expect(at::allclose(params[0], want), "select_dampen_ dampens the selected elements");
  expect(selected.item<int64_t>() == 3, "select_dampen_ counts the selected elements");
}

void test_sq_accumulate() {
  std::vector<at::Tensor> imps{at::ones({3})};
  std::vector<at::Tensor> grads{at::tensor({-2.0f, 0.5f, 0.0f})};
  ssd_fast::sq_accumulate_(imps, grads, 1.0, false);
  expect(at::equal(imps[0], at::tensor({5.0f, 1.25f, 1.0f})), "sq_accumulate_ adds g^2");
  ssd_fast::sq_accumulate_(imps, grads, 2.0, true);
  expect(at::equal(imps[0], at::tensor({9.0f, 2.25f, 1.0f})), "sq_accumulate_ adds scale*|g| when absolute");
}

// A mismatched list is refused with a c10::Error whose message carries the sizes (these
// are the checks that format numbers: see csrc/common/check.h).
void test_bad_arguments_raise() {
  std::vector<at::Tensor> params{at::ones({4})}, none;
  at::Tensor selected = at::zeros({1}, at::kLong);
  bool raised = false;
  try {
    ssd_fast::select_dampen_(params, none, params, 2.0, 1.0, selected);
  } catch (const c10::Error& e) {
    raised = std::strstr(e.what(), "same length, got 1, 0, 1") != nullptr;
  }
  expect(raised, "select_dampen_ with a short list raises with the lengths in the message");
  raised = false;
  try {
    ssd_fast::sq_accumulate_(params, none, 1.0, false);
  } catch (const c10::Error& e) {
    raised = std::strstr(e.what(), "got 1 and 0") != nullptr;
  }
  expect(raised, "sq_accumulate_ with a short list raises with the lengths in the message");
  expect(at::equal(params[0], at::ones({4})), "a refused call writes nothing");
}

// ---- per_sample_sq_tokens_ / per_sample_sq_conv2d_ against a naive loop ----------------

// max |got - want| / max |want|: fp32 accumulation against a float64 loop.
double rel_err(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor g = got.to(at::kDouble), w = want.to(at::kDouble);
  return (g - w).abs().max().item<double>() / std::max(w.abs().max().item<double>(), 1e-300);
}

// Per sample b: G_b[o, k] = sum_t dy[b,t,o] x[b,t,k], in float64; then sum_b f(G_b).
at::Tensor tokens_loop(const at::Tensor& dy, const at::Tensor& x, bool absolute) {
  const at::Tensor d = dy.to(at::kDouble), xd = x.to(at::kDouble);
  const int64_t batch = x.size(0), tokens = x.size(1), k_all = x.size(2), o_all = dy.size(2);
  std::vector<double> sum(o_all * k_all, 0.0);
  const auto da = d.accessor<double, 3>();
  const auto xa = xd.accessor<double, 3>();
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t o = 0; o < o_all; ++o) {
      for (int64_t k = 0; k < k_all; ++k) {
        double g = 0.0;
        for (int64_t t = 0; t < tokens; ++t) g += da[b][t][o] * xa[b][t][k];
        sum[o * k_all + k] += absolute ? std::fabs(g) : g * g;
      }
    }
  }
  return at::tensor(sum, at::kDouble).reshape({o_all, k_all});
}

struct ConvCase {
  const char* name;
  int64_t batch, c_in, height, width, c_out, kh, kw, sh, sw, ph, pw, dh, dw, groups;
};

int64_t conv_out(int64_t size, int64_t k, int64_t s, int64_t p, int64_t d) { return (size + 2 * p - d * (k - 1) - 1) / s + 1; }

// Per sample b: G_b[o, c, i, j] = sum over output positions of dy[b, o, ho, wo] times the
// input it was computed from (0 in the padding), in float64; then sum_b f(G_b).
at::Tensor conv_loop(const ConvCase& c, const at::Tensor& dy, const at::Tensor& x, bool absolute) {
  const at::Tensor dd = dy.to(at::kDouble), xd = x.to(at::kDouble);
  const auto da = dd.accessor<double, 4>();
  const auto xa = xd.accessor<double, 4>();
  const int64_t cg = c.c_in / c.groups, og = c.c_out / c.groups, oh = dy.size(2), ow = dy.size(3);
  at::Tensor sum = at::zeros({c.c_out, cg, c.kh, c.kw}, at::kDouble);
  auto sa = sum.accessor<double, 4>();
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t o = 0; o < c.c_out; ++o) {
      const int64_t g = o / og;
      for (int64_t ci = 0; ci < cg; ++ci) {
        for (int64_t i = 0; i < c.kh; ++i) {
          for (int64_t j = 0; j < c.kw; ++j) {
            double grad = 0.0;
            for (int64_t ho = 0; ho < oh; ++ho) {
              for (int64_t wo = 0; wo < ow; ++wo) {
                const int64_t h = ho * c.sh - c.ph + i * c.dh, w = wo * c.sw - c.pw + j * c.dw;
                if (h >= 0 && h < c.height && w >= 0 && w < c.width) grad += da[b][o][ho][wo] * xa[b][g * cg + ci][h][w];
              }
            }
            sa[o][ci][i][j] += absolute ? std::fabs(grad) : grad * grad;
          }
        }
      }
    }
  }
  return sum;
}

void test_per_sample_sq_tokens() {
  struct Case {
    const char* name;
    int64_t batch, tokens, k, o;
  };
  // K and O not multiples of the CPU tiles (64 along k), T longer than one 256-step chunk, B = 1.
  const Case cases[] = {{"one token", 4, 1, 5, 7}, {"odd tiles", 3, 9, 67, 70}, {"long", 2, 300, 17, 5},
                        {"batch 1", 1, 4, 6, 5}};
  for (const Case& c : cases) {
    for (const bool absolute : {false, true}) {
      const at::Tensor dy = at::randn({c.batch, c.tokens, c.o}), x = at::randn({c.batch, c.tokens, c.k});
      at::Tensor out = at::ones({c.o, c.k});
      ssd_fast::per_sample_sq_tokens_(out, dy, x, 0.5, absolute);
      const at::Tensor want = 1.0 + 0.5 * tokens_loop(dy, x, absolute);
      const std::string what = std::string("per_sample_sq_tokens_ ") + c.name + (absolute ? " |g|" : " g^2") +
                               " matches the per-sample loop";
      expect(rel_err(out, want) <= 2e-5, what.c_str());
    }
  }
  // bf16 inputs are read as they are and accumulated in fp32
  const at::Tensor dy = at::randn({3, 5, 6}).to(at::kBFloat16), x = at::randn({3, 5, 9}).to(at::kBFloat16);
  at::Tensor out = at::zeros({6, 9});
  ssd_fast::per_sample_sq_tokens_(out, dy, x, 1.0, false);
  expect(rel_err(out, tokens_loop(dy, x, false)) <= 2e-5, "per_sample_sq_tokens_ takes bf16 dy and x");
}

void test_per_sample_sq_conv2d() {
  const ConvCase cases[] = {
      {"stride 2", 3, 4, 9, 8, 5, 3, 3, 2, 2, 1, 1, 1, 1, 1},
      {"groups, dilation 2", 2, 6, 7, 6, 9, 3, 2, 2, 1, 1, 2, 2, 1, 3},
      {"depthwise", 2, 5, 6, 7, 5, 3, 3, 1, 1, 1, 1, 1, 1, 5},
      {"K = 72, O = 70: not tile multiples", 2, 8, 5, 5, 70, 3, 3, 1, 1, 1, 1, 1, 1, 1},
      {"batch 1, wide rows", 1, 2, 4, 40, 3, 3, 3, 2, 2, 2, 2, 2, 2, 1},
  };
  for (const ConvCase& c : cases) {
    for (const bool absolute : {false, true}) {
      const int64_t oh = conv_out(c.height, c.kh, c.sh, c.ph, c.dh), ow = conv_out(c.width, c.kw, c.sw, c.pw, c.dw);
      const at::Tensor x = at::randn({c.batch, c.c_in, c.height, c.width}), dy = at::randn({c.batch, c.c_out, oh, ow});
      at::Tensor out = at::zeros({c.c_out, c.c_in / c.groups, c.kh, c.kw});
      ssd_fast::per_sample_sq_conv2d_(out, dy, x, {c.sh, c.sw}, {c.ph, c.pw}, {c.dh, c.dw}, c.groups, 1.0, absolute);
      const std::string what = std::string("per_sample_sq_conv2d_ ") + c.name + (absolute ? " |g|" : " g^2") +
                               " matches the per-sample loop";
      expect(rel_err(out, conv_loop(c, dy, x, absolute)) <= 2e-5, what.c_str());
    }
  }
}

// Each call must throw c10::Error with `needle` in its message, and leave out as it was.
void expect_refused(const char* what, const char* needle, const std::function<void(at::Tensor&)>& call) {
  at::Tensor out = at::ones({6, 2, 3, 3});
  bool raised = false;
  try {
    call(out);
  } catch (const c10::Error& e) {
    raised = std::strstr(e.what(), needle) != nullptr;
    if (!raised) std::printf("      unexpected message: %s\n", e.what_without_backtrace());
  }
  expect(raised && at::equal(out, at::ones({6, 2, 3, 3})), what);
}

void test_per_sample_bad_arguments_raise() {
  const at::Tensor x = at::randn({2, 4, 6, 6}), dy = at::randn({2, 6, 6, 6});
  const auto conv = [&](at::Tensor& out, const at::Tensor& d, const at::Tensor& xx, int64_t stride, int64_t groups) {
    ssd_fast::per_sample_sq_conv2d_(out, d, xx, {stride, stride}, {1, 1}, {1, 1}, groups, 1.0, false);
  };
  expect_refused("per_sample_sq_conv2d_ refuses a float64 out", "out must be float32", [&](at::Tensor& out) {
    at::Tensor out64 = out.to(at::kDouble);
    conv(out64, dy, x, 1, 2);
  });
  expect_refused("per_sample_sq_conv2d_ refuses integer inputs", "must be floating point",
                 [&](at::Tensor& out) { conv(out, dy.to(at::kInt), x, 1, 2); });
  expect_refused("per_sample_sq_conv2d_ refuses mismatched batches", "same batch size",
                 [&](at::Tensor& out) { conv(out, dy.narrow(0, 0, 1), x, 1, 2); });
  expect_refused("per_sample_sq_conv2d_ refuses a dy of the wrong spatial size", "does not match",
                 [&](at::Tensor& out) { conv(out, dy, x, 2, 2); });
  expect_refused("per_sample_sq_conv2d_ refuses channels that do not split into groups", "groups",
                 [&](at::Tensor& out) { conv(out, dy, x, 1, 3); });
  expect_refused("per_sample_sq_conv2d_ refuses stride 0", "stride and dilation must be >= 1",
                 [&](at::Tensor& out) { conv(out, dy, x, 0, 2); });
  expect_refused("per_sample_sq_conv2d_ refuses a non-finite scale", "scale must be finite", [&](at::Tensor& out) {
    ssd_fast::per_sample_sq_conv2d_(out, dy, x, {1, 1}, {1, 1}, {1, 1}, 2, NAN, false);
  });
  expect_refused("per_sample_sq_tokens_ refuses mismatched tokens", "agree on batch and tokens", [&](at::Tensor& out) {
    at::Tensor flat = out.view({6, 18});
    ssd_fast::per_sample_sq_tokens_(flat, at::randn({2, 3, 6}), at::randn({2, 4, 18}), 1.0, false);
  });
  expect_refused("per_sample_sq_tokens_ refuses an out of the wrong shape", "out must be [6, 17]", [&](at::Tensor& out) {
    at::Tensor flat = out.view({6, 18});
    ssd_fast::per_sample_sq_tokens_(flat, at::randn({2, 3, 6}), at::randn({2, 3, 17}), 1.0, false);
  });
}

}  // namespace

int main() {
  at::manual_seed(0);
  test_select_dampen();
  test_sq_accumulate();
  test_bad_arguments_raise();
  test_per_sample_sq_tokens();
  test_per_sample_sq_conv2d();
  test_per_sample_bad_arguments_raise();
  std::printf("%d failed\n", failures);
  return failures == 0 ? 0 : 1;
}
