// The geometry of a 2-d convolution, as the per-sample ops see it. Plain data with no
// ATen include, so that the CUDA loaders (csrc/cuda/kernels) can hold it too.
#pragma once

#include <cstdint>

namespace ssd_fast {

struct Conv2dGeometry {
  int64_t kh, kw, sh, sw, ph, pw, dh, dw, groups;
  int64_t c_per_group, height, width, out_h, out_w;
};

}  // namespace ssd_fast
