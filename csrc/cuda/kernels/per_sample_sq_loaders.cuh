// The loaders through which the per-sample engine (per_sample_sq.cuh) reads its operands:
// each returns one element as fp32, by strides, from the caller's tensors in place.
#pragma once

#include <cstdint>

#include "../../common/conv2d_geometry.h"
#include "device_api.h"

namespace ssd_fast::cuda {

// Conv2d's dy viewed as [B, O, L] (L = output positions), by strides.
template <typename scalar_t>
struct ConvGradLoad {
  const scalar_t* p;
  int64_t sb, so, sl, o_per_group;
  __device__ float operator()(int64_t b, int64_t g, int64_t o, int64_t l) const {
    return static_cast<float>(p[b * sb + (g * o_per_group + o) * so + l * sl]);
  }
};

// The implicit im2col of a Conv2d input: for k = (c, i, j) and l = (ho, wo),
// x[b, g*Cg + c, ho*sh - ph + i*dh, wo*sw - pw + j*dw], 0 in the padding.
template <typename scalar_t>
struct Im2colLoad {
  const scalar_t* p;
  int64_t sb, sc, sh, sw;
  Conv2dGeometry geo;
  __device__ float operator()(int64_t b, int64_t g, int64_t k, int64_t l) const {
    const int64_t khw = geo.kh * geo.kw, c = k / khw, i = k % khw / geo.kw, j = k % geo.kw;
    const int64_t h = l / geo.out_w * geo.sh - geo.ph + i * geo.dh;
    const int64_t w = l % geo.out_w * geo.sw - geo.pw + j * geo.dw;
    if (h < 0 || h >= geo.height || w < 0 || w >= geo.width) return 0.0f;
    return static_cast<float>(p[b * sb + (g * geo.c_per_group + c) * sc + h * sh + w * sw]);
  }
};

// A token tensor v[b, t, r] by strides: dy (r = o) or x (r = k); the group is always 0.
template <typename scalar_t>
struct TokenLoad {
  const scalar_t* p;
  int64_t sb, st, sr;
  __device__ float operator()(int64_t b, int64_t, int64_t r, int64_t t) const {
    return static_cast<float>(p[b * sb + t * st + r * sr]);
  }
};

}  // namespace ssd_fast::cuda
