// per_sample_sq_conv2d_ on the CPU: out[o, c, i, j] += scale * sum_b f(g_b[o, c, i, j]), where
// g_b is sample b's weight gradient of a Conv2d (any stride, padding, dilation, groups).
// The im2col of the input is gathered tile by tile into cache; it is never materialised.
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "../common/per_sample_sq.h"
#include "per_sample_sq_tiles.h"

namespace ssd_fast {
namespace {

// Where each kernel offset (i, j) reads, for each output position l = (ho, wo):
// offsets[(i*kw + j) * L + l] = h * W + w inside one input channel's plane, or -1 in the
// padding. It does not depend on the sample or the channel, so it is built once per call.
std::vector<int32_t> im2col_offsets(const Conv2dGeometry& geo) {
  const int64_t length = geo.out_h * geo.out_w;
  std::vector<int32_t> offsets(geo.kh * geo.kw * length);
  for (int64_t i = 0; i < geo.kh; ++i) {
    for (int64_t j = 0; j < geo.kw; ++j) {
      int32_t* row = offsets.data() + (i * geo.kw + j) * length;
      for (int64_t ho = 0; ho < geo.out_h; ++ho) {
        const int64_t h = ho * geo.sh - geo.ph + i * geo.dh;
        for (int64_t wo = 0; wo < geo.out_w; ++wo) {
          const int64_t w = wo * geo.sw - geo.pw + j * geo.dw;
          const bool inside = h >= 0 && h < geo.height && w >= 0 && w < geo.width;
          row[ho * geo.out_w + wo] = inside ? static_cast<int32_t>(h * geo.width + w) : -1;
        }
      }
    }
  }
  return offsets;
}

// dst[l] = plane[offsets[l]], or 0 where the offset is -1. Every lane loads from a valid
// address (plane[0] for the padding) and then selects, so the loop vectorizes into gathers;
// it is compiled for AVX-512 and AVX2 as well, chosen when the library loads.
SSD_FAST_SIMD_CLONES void gather_row(float* __restrict dst, const float* __restrict plane,
                                     const int32_t* __restrict offsets, int64_t n) {
  for (int64_t l = 0; l < n; ++l) {
    const int32_t at = offsets[l];
    const float v = plane[at < 0 ? 0 : at];
    dst[l] = at < 0 ? 0.0f : v;
  }
}

// For wide outputs, the same map as runs: kernel offset (i, j) and output row ho read
// input positions [lo, hi) of that row, starting at plane index src (stride sw); the
// others read padding. A row of the im2col is then a few contiguous copies.
struct RowRun {
  int64_t src;
  int64_t lo, hi;
};

// ceil(a / b) for b > 0, and 0 for a <= 0
inline int64_t ceil_div_nonneg(int64_t a, int64_t b) { return a <= 0 ? 0 : (a + b - 1) / b; }

std::vector<RowRun> im2col_runs(const Conv2dGeometry& geo) {
  std::vector<RowRun> runs(geo.kh * geo.kw * geo.out_h, RowRun{0, 0, 0});
  for (int64_t i = 0; i < geo.kh; ++i) {
    for (int64_t j = 0; j < geo.kw; ++j) {
      const int64_t shift = j * geo.dw - geo.pw;  // w = wo * sw + shift
      const int64_t lo = std::min(geo.out_w, ceil_div_nonneg(-shift, geo.sw));
      const int64_t hi = std::max(lo, std::min(geo.out_w, ceil_div_nonneg(geo.width - shift, geo.sw)));
      for (int64_t ho = 0; ho < geo.out_h; ++ho) {
        const int64_t h = ho * geo.sh - geo.ph + i * geo.dh;
        if (h >= 0 && h < geo.height && hi > lo) runs[(i * geo.kw + j) * geo.out_h + ho] = {h * geo.width + lo * geo.sw + shift, lo, hi};
      }
    }
  }
  return runs;
}

// Rows of the im2col of a contiguous fp32 input [B, C, H, W].
struct Im2colRows {
  static constexpr int64_t kWide = 16;  // output rows at least this wide are copied as runs
  const float* x;
  const int32_t* offsets;
  const RowRun* runs;
  Conv2dGeometry geo;

  // P[k][l] = x[b, g*Cg + c, ho*sh - ph + i*dh, wo*sw - pw + j*dw] (0 in the padding) for
  // k0 + k = (c, i, j) and l0 + l = (ho, wo), written into buf [kn x ln].
  cpu::Panel operator()(float* buf, int64_t b, int64_t g, int64_t k0, int64_t kn, int64_t l0, int64_t ln) const {
    const int64_t khw = geo.kh * geo.kw, length = geo.out_h * geo.out_w, plane = geo.height * geo.width;
    const float* sample = x + (b * geo.groups + g) * geo.c_per_group * plane;
    for (int64_t k = 0; k < kn; ++k) {
      const int64_t c = (k0 + k) / khw, ij = (k0 + k) % khw;
      if (geo.out_w >= kWide) {
        copy_runs(buf + k * ln, sample + c * plane, runs + ij * geo.out_h, l0, ln);
      } else {
        gather_row(buf + k * ln, sample + c * plane, offsets + ij * length + l0, ln);
      }
    }
    return {buf, ln};
  }

  void copy_runs(float* dst, const float* plane, const RowRun* row_runs, int64_t l0, int64_t ln) const {
    for (int64_t l = l0, end = l0 + ln; l < end;) {
      const int64_t ho = l / geo.out_w, wo = l - ho * geo.out_w, n = std::min(geo.out_w - wo, end - l);
      const RowRun& r = row_runs[ho];
      const int64_t lo = std::clamp(r.lo, wo, wo + n), hi = std::clamp(r.hi, lo, wo + n);
      std::fill(dst, dst + (lo - wo), 0.0f);
      const float* src = plane + r.src + (lo - r.lo) * geo.sw;
      if (geo.sw == 1) {
        std::copy(src, src + (hi - lo), dst + (lo - wo));
      } else {
        for (int64_t q = 0; q < hi - lo; ++q) dst[lo - wo + q] = src[q * geo.sw];
      }
      std::fill(dst + (hi - wo), dst + n, 0.0f);
      dst += n;
      l += n;
    }
  }
};

void per_sample_sq_conv2d_cpu(const at::Tensor& out, const at::Tensor& dy, const at::Tensor& x,
                              at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                              int64_t groups, double scale, bool absolute, c10::string_view precision) {
  // the CPU has no TF32 or bf16 products here: every precision computes "exact"
  check_per_sample_precision("per_sample_sq_conv2d_", precision);
  const Conv2dGeometry geo = check_per_sample_sq_conv2d_args(out, dy, x, stride, padding, dilation, groups, scale);
  const int64_t batch = x.size(0), length = geo.out_h * geo.out_w;
  // One pass over each input puts it in the layout the tiles read: x as contiguous fp32
  // (usually already so), dy as fp32 [B, L, O], so that its tiles are read in place; bf16
  // or fp16 (autocast) is upcast in that same pass.
  const at::Tensor xc = cpu::contiguous_float(x);
  const at::Tensor d = cpu::contiguous_float(dy.reshape({batch, dy.size(1), length}).transpose(1, 2));
  const cpu::SqProblem problem{batch, groups, out.size(0) / groups, geo.c_per_group * geo.kh * geo.kw, length,
                               static_cast<float>(scale), absolute, d.const_data_ptr<float>(), out.data_ptr<float>()};
  TORCH_CHECK(geo.height * geo.width <= std::numeric_limits<int32_t>::max(),
              "ssd_fast::per_sample_sq_conv2d_: an input plane of ", geo.height, "x", geo.width, " is too large");
  const std::vector<int32_t> offsets = im2col_offsets(geo);
  const std::vector<RowRun> runs = im2col_runs(geo);
  cpu::accumulate_sq_tiles(problem, Im2colRows{xc.const_data_ptr<float>(), offsets.data(), runs.data(), geo});
}

}  // namespace
}  // namespace ssd_fast

TORCH_LIBRARY_IMPL(ssd_fast, CPU, m) { m.impl("per_sample_sq_conv2d_", &ssd_fast::per_sample_sq_conv2d_cpu); }
