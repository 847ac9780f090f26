// The loaders through which the per-sample engine (per_sample_sq.cuh) reads its operands
// by strides, from the caller's tensors in place, as fp32.
//
// A loader splits the address of element (b, g, r, l) into parts that the engine computes
// at different rates, so that no division runs while staging:
//   sample(b)      a pointer to sample b (64-bit arithmetic, once per sample);
//   row(g, r)      what depends on the row r (an output or input channel): computed once
//                  per block into a shared table, divisions allowed;
//   col(l)         a cursor for column l (an output position), where the column's part
//                  needs a division (im2col): built once per sample per thread (one 32-bit
//                  division), then
//   advance(col)   moves it kStep columns on, with additions only;
//   address(p, row, col, at) the element's address (nullptr in a convolution's padding),
//                  for cp.async of fp32 operands;
//   load(p, row, col, at) the element, 0 in a convolution's padding. `at` names
//                  (b, g, r, l): loaders whose column part is a multiplication (l * stride)
//                  take l from it and keep no cursor (registers are scarce: see the
//                  kernel); the emulator's tests check every load against it.
// Offsets within one sample are 32-bit: make() says in `fits` whether every offset of one
// sample fits in an int, and the launcher refuses a tensor that does not.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../../common/conv2d_geometry.h"
#include "device_api.h"
#include "per_sample_sq.cuh"

namespace ssd_fast::cuda {

// Whether every offset sum (size_i - 1) * stride_i of one sample fits in an int.
inline bool sample_fits_int32(std::initializer_list<std::pair<int64_t, int64_t>> size_stride) {
  int64_t last = 0;
  for (const auto& [size, stride] : size_stride) {
    if (size <= 0) return true;  // an empty tensor is never read
    if (stride < 0 || stride > INT32_MAX) return false;
    last += (size - 1) * stride;
    if (last > INT32_MAX) return false;
  }
  return true;
}

// Conv2d's dy viewed as [B, O, L] (L = output positions), by strides.
template <typename scalar_t>
struct ConvGradLoad {
  using scalar_type = scalar_t;
  const scalar_t* p;
  int64_t sb;
  int so, sl, o_per_group;
  bool fits;
  struct Row {
    int off;
  };
  struct Col {};  // the column's offset is l * sl, a multiplication: no cursor needed

  static ConvGradLoad make(const scalar_t* p, int64_t out_channels, int64_t length, int64_t sb, int64_t so,
                           int64_t sl, int64_t o_per_group) {
    const bool fits = sample_fits_int32({{out_channels, so}, {length, sl}}) && (length + kStep) * sl < INT32_MAX;
    return {p, sb, static_cast<int>(so), static_cast<int>(sl), static_cast<int>(o_per_group), fits};
  }
  __device__ const scalar_t* sample(int64_t b) const { return p + b * sb; }
  __device__ Row row(int64_t g, int64_t o) const { return {static_cast<int>((g * o_per_group + o) * so)}; }
  __device__ Col col(int) const { return {}; }
  __device__ void advance(Col&) const {}
  __device__ const scalar_t* address(const scalar_t* s, Row r, Col, SqWhere at) const {
    return s + r.off + static_cast<int>(at.l) * sl;
  }
  __device__ float load(const scalar_t* s, Row r, Col c, SqWhere at) const {
    return static_cast<float>(*address(s, r, c, at));
  }
};

// The implicit im2col of a Conv2d input: for k = (c, i, j) and l = (ho, wo),
// x[b, g*Cg + c, ho*sh - ph + i*dh, wo*sw - pw + j*dw], 0 in the padding.
template <typename scalar_t>
struct Im2colLoad {
  using scalar_type = scalar_t;
  const scalar_t* p;
  int64_t sb;
  int s_c, s_h, s_w;                    // the tensor's strides
  int kh, kw, c_per_group;              // the kernel's extent
  int sh, sw, ph, pw, dh, dw;           // stride, padding, dilation
  int height, width, out_w;             // input size, output width
  int step_ho, step_wo;                 // kStep output positions = step_ho rows + step_wo columns
  bool fits;
  struct Row {
    int off, hi, wj;  // off: channel c at kernel tap (i, j); hi = i*dh, wj = j*dw
  };
  struct Col {
    int wo, h0, w0;  // h0 = ho*sh - ph, w0 = wo*sw - pw
  };

  static Im2colLoad make(const scalar_t* p, int64_t channels, int64_t sb, int64_t s_c, int64_t s_h, int64_t s_w,
                         const Conv2dGeometry& geo) {
    const bool fits = sample_fits_int32({{channels, s_c}, {geo.height, s_h}, {geo.width, s_w}}) &&
                      geo.height + geo.ph + geo.sh * (geo.out_h + kStep) < INT32_MAX &&
                      geo.width + geo.pw + geo.sw * (geo.out_w + kStep) < INT32_MAX &&
                      geo.dh * geo.kh < INT32_MAX && geo.dw * geo.kw < INT32_MAX;
    auto i32 = [](int64_t v) { return static_cast<int>(v); };
    return {p,         sb,         i32(s_c),    i32(s_h),   i32(s_w),
            i32(geo.kh), i32(geo.kw), i32(geo.c_per_group), i32(geo.sh), i32(geo.sw),
            i32(geo.ph), i32(geo.pw), i32(geo.dh), i32(geo.dw), i32(geo.height),
            i32(geo.width), i32(geo.out_w), i32(kStep / geo.out_w), i32(kStep % geo.out_w), fits};
  }
  __device__ const scalar_t* sample(int64_t b) const { return p + b * sb; }
  __device__ Row row(int64_t g, int64_t k) const {
    const int kk = static_cast<int>(k), khw = kh * kw;
    const int c = kk / khw, i = kk % khw / kw, j = kk % kw;
    const int hi = i * dh, wj = j * dw;
    return {static_cast<int>(g * c_per_group + c) * s_c + hi * s_h + wj * s_w, hi, wj};
  }
  __device__ Col col(int l) const {
    const int ho = l / out_w, wo = l - ho * out_w;
    return {wo, ho * sh - ph, wo * sw - pw};
  }
  __device__ void advance(Col& c) const {
    c.wo += step_wo;
    c.w0 += step_wo * sw;
    c.h0 += step_ho * sh;
    if (c.wo >= out_w) {
      c.wo -= out_w;
      c.w0 -= out_w * sw;
      c.h0 += sh;
    }
  }
  // The element's address, or nullptr in the padding.
  __device__ const scalar_t* address(const scalar_t* s, Row r, Col c, SqWhere) const {
    const int h = c.h0 + r.hi, w = c.w0 + r.wj;
    if (static_cast<unsigned>(h) >= static_cast<unsigned>(height) ||
        static_cast<unsigned>(w) >= static_cast<unsigned>(width)) {
      return nullptr;
    }
    return s + r.off + c.h0 * s_h + c.w0 * s_w;
  }
  __device__ float load(const scalar_t* s, Row r, Col c, SqWhere at) const {
    const scalar_t* e = address(s, r, c, at);
    return e == nullptr ? 0.0f : static_cast<float>(*e);
  }
};

// A token tensor v[b, t, r] by strides: dy (r = o) or x (r = k); the group is always 0.
template <typename scalar_t>
struct TokenLoad {
  using scalar_type = scalar_t;
  const scalar_t* p;
  int64_t sb;
  int st, sr;
  bool fits;
  struct Row {
    int off;
  };
  struct Col {};  // the column's offset is t * st, a multiplication: no cursor needed

  static TokenLoad make(const scalar_t* p, int64_t tokens, int64_t features, int64_t sb, int64_t st, int64_t sr) {
    const bool fits = sample_fits_int32({{tokens, st}, {features, sr}}) && (tokens + kStep) * st < INT32_MAX;
    return {p, sb, static_cast<int>(st), static_cast<int>(sr), fits};
  }
  __device__ const scalar_t* sample(int64_t b) const { return p + b * sb; }
  __device__ Row row(int64_t, int64_t r) const { return {static_cast<int>(r) * sr}; }
  __device__ Col col(int) const { return {}; }
  __device__ void advance(Col&) const {}
  __device__ const scalar_t* address(const scalar_t* s, Row r, Col, SqWhere at) const {
    return s + r.off + static_cast<int>(at.l) * st;
  }
  __device__ float load(const scalar_t* s, Row r, Col c, SqWhere at) const {
    return static_cast<float>(*address(s, r, c, at));
  }
};

}  // namespace ssd_fast::cuda
