// Per-sample test problems for the emulated kernels: the inputs (in any of the four
// dtypes, in memory orders that need strides), an fp64 oracle, an fp32 model of the
// kernel's documented summation order, and the emulated run. No ATen here.
//
// The oracle and the model index the convolution directly (x[b, c, ho*s - p + i*d, ...]),
// not through the kernel's loaders, so that a wrong loader cannot agree with itself.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "../../csrc/common/conv2d_geometry.h"
#include "../../csrc/emulator/float16.h"
#include "emulated_launch.h"

namespace emu_test {

enum class DType { kFloat, kHalf, kBFloat16, kDouble };

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::kFloat: return "fp32";
    case DType::kHalf: return "fp16";
    case DType::kBFloat16: return "bf16";
    case DType::kDouble: return "fp64";
  }
  return "?";
}

// A 4-d tensor of T with explicit strides (elements), e.g. [B, C, H, W] stored channels last.
template <class T>
struct Strided4 {
  int64_t size[4];
  int64_t stride[4];
  std::vector<T> data;
  float at(int64_t a, int64_t b, int64_t c, int64_t d) const {
    return static_cast<float>(data[a * stride[0] + b * stride[1] + c * stride[2] + d * stride[3]]);
  }
};

// Sizes [s0..s3] stored in the memory order `order` (order[0] outermost), filled with
// values drawn from N(0, 1) in fp64 and rounded to T (an fp64 input keeps bits that the
// kernel's conversion to fp32 must round away).
template <class T>
Strided4<T> random_strided(const int64_t (&sizes)[4], const int (&order)[4], std::mt19937& rng) {
  Strided4<T> t{};
  int64_t step = 1;
  for (int i = 3; i >= 0; --i) {
    t.size[order[i]] = sizes[order[i]];
    t.stride[order[i]] = step;
    step *= sizes[order[i]];
  }
  std::normal_distribution<double> normal(0.0, 1.0);
  t.data.resize(static_cast<size_t>(step));
  for (auto& v : t.data) {
    const double value = normal(rng);
    if constexpr (std::is_same_v<T, double>) {
      v = value;
    } else {
      v = static_cast<T>(static_cast<float>(value));
    }
  }
  return t;
}

struct ConvSpec {
  std::string name;
  int64_t batch, channels, height, width, out_channels, kh, kw;
  int64_t sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1, groups = 1;
  bool channels_last = false;  // x stored [B, H, W, C]; dy then stored [B, Ho, Wo, O]
  int sms = 132;               // decides the batch slicing: 132 (H100 SXM) usually slices
  bool absolute = false;
  float scale = 1.0f;
};

struct TokensSpec {
  std::string name;
  int64_t batch, tokens, in_features, out_features;
  bool transposed = false;  // x and dy stored [B, F, T] instead of [B, T, F]
  int sms = 132;
  bool absolute = false;
  float scale = 1.0f;
};

// One problem in the engine's terms: D[b, g, o, l] and X[b, g, k, l] read through the
// spec's own index arithmetic, as fp32 values.
struct Problem {
  int64_t batch, groups, o_per_group, k_per_group, length;
  std::vector<float> d;  // [B, G, Og, L]
  std::vector<float> x;  // [B, G, Kg, L]
  float dv(int64_t b, int64_t g, int64_t o, int64_t l) const {
    return d[((b * groups + g) * o_per_group + o) * length + l];
  }
  float xv(int64_t b, int64_t g, int64_t k, int64_t l) const {
    return x[((b * groups + g) * k_per_group + k) * length + l];
  }
  int64_t outputs() const { return groups * o_per_group * k_per_group; }
};

inline int64_t conv_out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) {
  return (in + 2 * p - d * (k - 1) - 1) / s + 1;
}

template <class T>
struct ConvInputs {
  Strided4<T> x, dy;
  ssd_fast::Conv2dGeometry geo;
};

template <class T>
ConvInputs<T> make_conv_inputs(const ConvSpec& c, uint32_t seed) {
  std::mt19937 rng(seed);
  const int64_t oh = conv_out_size(c.height, c.kh, c.sh, c.ph, c.dh), ow = conv_out_size(c.width, c.kw, c.sw, c.pw, c.dw);
  const int nchw[4] = {0, 1, 2, 3}, nhwc[4] = {0, 2, 3, 1};
  const int64_t xs[4] = {c.batch, c.channels, c.height, c.width}, ys[4] = {c.batch, c.out_channels, oh, ow};
  ConvInputs<T> in{random_strided<T>(xs, c.channels_last ? nhwc : nchw, rng),
                   random_strided<T>(ys, c.channels_last ? nhwc : nchw, rng),
                   {c.kh, c.kw, c.sh, c.sw, c.ph, c.pw, c.dh, c.dw, c.groups, c.channels / c.groups, c.height, c.width, oh,
                    ow}};
  return in;
}

// The conv problem by direct indexing (no loader): k = (c, i, j), l = (ho, wo).
template <class T>
Problem conv_problem(const ConvSpec& c, const ConvInputs<T>& in) {
  const auto& g = in.geo;
  Problem p{c.batch, c.groups, c.out_channels / c.groups, g.c_per_group * c.kh * c.kw, g.out_h * g.out_w, {}, {}};
  p.d.resize(static_cast<size_t>(p.batch * p.groups * p.o_per_group * p.length));
  p.x.resize(static_cast<size_t>(p.batch * p.groups * p.k_per_group * p.length));
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t gr = 0; gr < p.groups; ++gr) {
      for (int64_t o = 0; o < p.o_per_group; ++o)
        for (int64_t ho = 0; ho < g.out_h; ++ho)
          for (int64_t wo = 0; wo < g.out_w; ++wo)
            p.d[((b * p.groups + gr) * p.o_per_group + o) * p.length + ho * g.out_w + wo] =
                in.dy.at(b, gr * p.o_per_group + o, ho, wo);
      for (int64_t ch = 0; ch < g.c_per_group; ++ch)
        for (int64_t i = 0; i < c.kh; ++i)
          for (int64_t j = 0; j < c.kw; ++j)
            for (int64_t ho = 0; ho < g.out_h; ++ho)
              for (int64_t wo = 0; wo < g.out_w; ++wo) {
                const int64_t h = ho * c.sh - c.ph + i * c.dh, w = wo * c.sw - c.pw + j * c.dw;
                const bool inside = h >= 0 && h < c.height && w >= 0 && w < c.width;
                const int64_t k = (ch * c.kh + i) * c.kw + j;
                p.x[((b * p.groups + gr) * p.k_per_group + k) * p.length + ho * g.out_w + wo] =
                    inside ? in.x.at(b, gr * g.c_per_group + ch, h, w) : 0.0f;
              }
    }
  return p;
}

template <class T>
struct TokensInputs {
  Strided4<T> x, dy;  // [B, T, F, 1]
};

template <class T>
TokensInputs<T> make_tokens_inputs(const TokensSpec& c, uint32_t seed) {
  std::mt19937 rng(seed);
  const int btf[4] = {0, 1, 2, 3}, bft[4] = {0, 2, 1, 3};
  const int64_t xs[4] = {c.batch, c.tokens, c.in_features, 1}, ys[4] = {c.batch, c.tokens, c.out_features, 1};
  return {random_strided<T>(xs, c.transposed ? bft : btf, rng), random_strided<T>(ys, c.transposed ? bft : btf, rng)};
}

template <class T>
Problem tokens_problem(const TokensSpec& c, const TokensInputs<T>& in) {
  Problem p{c.batch, 1, c.out_features, c.in_features, c.tokens, {}, {}};
  p.d.resize(static_cast<size_t>(p.batch * p.o_per_group * p.length));
  p.x.resize(static_cast<size_t>(p.batch * p.k_per_group * p.length));
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t t = 0; t < p.length; ++t) {
      for (int64_t o = 0; o < p.o_per_group; ++o) p.d[(b * p.o_per_group + o) * p.length + t] = in.dy.at(b, t, o, 0);
      for (int64_t k = 0; k < p.k_per_group; ++k) p.x[(b * p.k_per_group + k) * p.length + t] = in.x.at(b, t, k, 0);
    }
  return p;
}

// The fp64 oracle, out0 + scale * sum_b f(p_b), with a rigorous bound on the fp32 kernel's
// error for each element (standard summation bounds, gamma_n = n u / (1 - n u), u = 2^-24):
//   |fl(p_b) - p_b| <= e_b = gamma_L * a_b,  a_b = sum_l |D X|;
//   |fl(f(p_b)) - f(p_b)| <= (2|p_b| + e_b) e_b + u (|p_b| + e_b)^2   (f = square; |.|: e_b);
//   the B-term and S-slice sums add gamma_(B+1) * sum_b f(|p_b| + e_b), and the final
//   fma(scale, sum, out) one more rounding of the result.
struct Oracle {
  std::vector<double> value;
  std::vector<double> bound;
};

inline double gamma_n(double n, double u = 0x1p-24) { return n * u / (1 - n * u); }

// The tensor-core paths (kernels/per_sample_sq_mma.cuh) round D and X to tf32 / bf16 first
// (relative error at most `input_rel`: 2^-11 for tf32, 2^-8 for bf16), so a product is off by
// at most (2 input_rel + input_rel^2) |D X|, and add in an undocumented order and internal
// precision: allowed here as 2 (L + 16) additions of relative error 2^-23 each (truncation).
struct Rounding {
  double input_rel = 0;      // operand rounding (0: fp32 operands, exact)
  double add_u = 0x1p-24;    // per addition
  double additions_per_step = 1;
};
inline Rounding tensor_core_rounding(double input_rel) { return {input_rel, 0x1p-23, 2}; }

inline Oracle oracle_fp64(const Problem& p, const std::vector<float>& out0, float scale, bool absolute,
                          Rounding rounding = {}) {
  Oracle r{std::vector<double>(out0.begin(), out0.end()), std::vector<double>(out0.size(), 0.0)};
  const double d = rounding.input_rel;
  const double gl = (2 * d + d * d) +
                    (1 + d) * (1 + d) * gamma_n(rounding.additions_per_step * (static_cast<double>(p.length) + 16),
                                                rounding.add_u);
  const double gb = gamma_n(static_cast<double>(p.batch) + 2);
  const double u = 0x1p-24;
  for (int64_t g = 0; g < p.groups; ++g)
    for (int64_t o = 0; o < p.o_per_group; ++o)
      for (int64_t k = 0; k < p.k_per_group; ++k) {
        double sum = 0, err = 0, magnitude = 0;
        for (int64_t b = 0; b < p.batch; ++b) {
          double dot = 0, abs_dot = 0;
          for (int64_t l = 0; l < p.length; ++l) {
            const double t = static_cast<double>(p.dv(b, g, o, l)) * p.xv(b, g, k, l);
            dot += t;
            abs_dot += std::fabs(t);
          }
          const double e = gl * abs_dot, big = std::fabs(dot) + e;
          sum += absolute ? std::fabs(dot) : dot * dot;
          err += absolute ? e : (2 * std::fabs(dot) + e) * e + u * big * big;
          magnitude += absolute ? big : big * big;
        }
        const size_t at = static_cast<size_t>((g * p.o_per_group + o) * p.k_per_group + k);
        r.value[at] += static_cast<double>(scale) * sum;
        r.bound[at] = std::fabs(scale) * (err + gb * magnitude) + 2 * u * (std::fabs(r.value[at]) + 1e-300);
      }
  return r;
}

// The kernel's documented order in fp32 (kernels/per_sample_sq.cuh), element by element.
inline std::vector<float> model_fp32(const Problem& p, const std::vector<float>& out0, float scale, bool absolute,
                                     const PerSampleSqPlan& plan) {
  std::vector<float> out = out0;
  if (plan.empty) return out;
  const int64_t padded = (p.length + kStep - 1) / kStep * kStep;
  for (int64_t g = 0; g < p.groups; ++g)
    for (int64_t o = 0; o < p.o_per_group; ++o)
      for (int64_t k = 0; k < p.k_per_group; ++k) {
        const size_t at = static_cast<size_t>((g * p.o_per_group + o) * p.k_per_group + k);
        float sum = 0.0f;
        for (int s = 0; s < plan.slices; ++s) {
          float acc = 0.0f;
          for (int64_t b = s * plan.per_slice; b < std::min(p.batch, (s + 1) * plan.per_slice); ++b) {
            float prod = 0.0f;
            for (int64_t l = 0; l < padded; ++l) {
              const bool in = l < p.length;
              prod = std::fma(in ? p.dv(b, g, o, l) : 0.0f, in ? p.xv(b, g, k, l) : 0.0f, prod);
            }
            acc = absolute ? acc + std::fabs(prod) : std::fma(prod, prod, acc);
          }
          if (plan.slices == 1) {
            sum = acc;
          } else {
            sum = sum + acc;
          }
        }
        out[at] = std::fma(scale, sum, out[at]);
      }
  return out;
}

// A loader that enforces the engine's contract (kernels/per_sample_sq_loaders.cuh): rows
// are looked up and elements loaded only in range. An out-of-range call reads memory that
// may well exist (the next group's rows, the next sample) and change no result, so it is
// caught here instead. It also checks that the loader's split address (sample, row table,
// column cursor) reaches the element that (b, g, r, l) names, by the loader's unsplit
// arithmetic given as `direct`.
template <class Load, class Direct>
struct CheckedLoad {
  Load inner;
  Direct direct;
  int64_t batch, groups, rows, length;
  using Row = typename Load::Row;
  using Col = typename Load::Col;
  using scalar_type = typename Load::scalar_type;
  bool fits = inner.fits;
  __device__ const auto* sample(int64_t b) const { return inner.sample(b); }
  __device__ Row row(int64_t g, int64_t r) const {
    if (g < 0 || g >= groups || r < 0 || r >= rows) emu::fail("a per-sample loader's row was looked up out of range");
    return inner.row(g, r);
  }
  __device__ Col col(int l) const { return inner.col(l); }
  __device__ void advance(Col& c) const { inner.advance(c); }
  template <class S>
  __device__ void check_at(const S* s, SqWhere at) const {
    if (at.b < 0 || at.b >= batch || at.g < 0 || at.g >= groups || at.r < 0 || at.r >= rows || at.l < 0 ||
        at.l >= length) {
      emu::fail("a per-sample loader was called out of range");
    }
    if (s != inner.sample(at.b)) emu::fail("a per-sample loader was given another sample's pointer");
  }
  template <class S>
  __device__ float load(const S* s, Row r, Col c, SqWhere at) const {
    check_at(s, at);
    const float v = inner.load(s, r, c, at), want = direct(at);
    if (std::memcmp(&v, &want, sizeof(v)) != 0) emu::fail("a per-sample loader's cursor reached the wrong element");
    return v;
  }
  // the asynchronous path's address: the element there (0 for nullptr) must be the one named
  template <class S>
  __device__ const S* address(const S* s, Row r, Col c, SqWhere at) const {
    check_at(s, at);
    const S* e = inner.address(s, r, c, at);
    const float v = e == nullptr ? 0.0f : static_cast<float>(*e), want = direct(at);
    if (std::memcmp(&v, &want, sizeof(v)) != 0) emu::fail("a per-sample loader's address is the wrong element");
    return e;
  }
};

template <class Load, class Direct>
CheckedLoad<Load, Direct> checked(Load inner, Direct direct, int64_t batch, int64_t groups, int64_t rows,
                                  int64_t length) {
  return {inner, direct, batch, groups, rows, length};
}

// The emulated kernels on the spec's inputs, in their own dtype and strides.
template <class T, class Math = SqFmaMath>
PerSampleSqPlan run_conv(const ConvSpec& c, const ConvInputs<T>& in, float* out) {
  const auto& geo = in.geo;
  const int64_t length = geo.out_h * geo.out_w;
  // dy viewed as [B, O, L]: valid for both stored orders, since (ho, wo) is row-major in both
  const auto dl = ConvGradLoad<T>::make(in.dy.data.data(), c.out_channels, length, in.dy.stride[0], in.dy.stride[1],
                                        in.dy.stride[3], c.out_channels / c.groups);
  const auto xl = Im2colLoad<T>::make(in.x.data.data(), c.channels, in.x.stride[0], in.x.stride[1], in.x.stride[2],
                                      in.x.stride[3], geo);
  const SqShape s{c.batch, c.groups, c.out_channels / c.groups, geo.c_per_group * c.kh * c.kw, length};
  const int64_t og = s.o_per_group;
  auto d_direct = [&in, og](SqWhere a) { return in.dy.at(a.b, a.g * og + a.r, a.l / in.geo.out_w, a.l % in.geo.out_w); };
  auto x_direct = [&in](SqWhere a) {
    const auto& g = in.geo;
    const int64_t ch = a.r / (g.kh * g.kw), i = a.r % (g.kh * g.kw) / g.kw, j = a.r % g.kw;
    const int64_t h = a.l / g.out_w * g.sh - g.ph + i * g.dh, w = a.l % g.out_w * g.sw - g.pw + j * g.dw;
    const bool inside = h >= 0 && h < g.height && w >= 0 && w < g.width;
    return inside ? in.x.at(a.b, a.g * g.c_per_group + ch, h, w) : 0.0f;
  };
  const auto dc = checked(dl, d_direct, s.batch, s.groups, s.o_per_group, s.length);
  const auto xc = checked(xl, x_direct, s.batch, s.groups, s.k_per_group, s.length);
  if (!dc.fits || !xc.fits) throw std::invalid_argument("a test sample beyond 32-bit offsets");
  return per_sample_sq<true, true, Math>(out, dc, xc, s, c.scale, c.absolute, c.sms);
}

template <class T, class Math = SqFmaMath>
PerSampleSqPlan run_tokens(const TokensSpec& c, const TokensInputs<T>& in, float* out) {
  const auto dl = TokenLoad<T>::make(in.dy.data.data(), c.tokens, c.out_features, in.dy.stride[0], in.dy.stride[1],
                                     in.dy.stride[2]);
  const auto xl = TokenLoad<T>::make(in.x.data.data(), c.tokens, c.in_features, in.x.stride[0], in.x.stride[1],
                                     in.x.stride[2]);
  const SqShape s{c.batch, 1, c.out_features, c.in_features, c.tokens};
  auto d_direct = [&in](SqWhere a) { return in.dy.at(a.b, a.l, a.r, 0); };
  auto x_direct = [&in](SqWhere a) { return in.x.at(a.b, a.l, a.r, 0); };
  const auto dc = checked(dl, d_direct, s.batch, 1, s.o_per_group, s.length);
  const auto xc = checked(xl, x_direct, s.batch, 1, s.k_per_group, s.length);
  if (!dc.fits || !xc.fits) throw std::invalid_argument("a test sample beyond 32-bit offsets");
  return per_sample_sq<false, false, Math>(out, dc, xc, s, c.scale, c.absolute, c.sms);
}

}  // namespace emu_test
