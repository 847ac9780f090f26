// What the kernels need from CUDA, for both compilers: nvcc provides the built-ins itself;
// a host compiler (the emulator's tests) gets them from csrc/emulator/cuda_emulator.h,
// which must then be on its include path. Nothing here, and nothing in kernels/, includes
// ATen or c10: the kernels take raw pointers and plain structs, so that the same text
// runs on the GPU and in the emulator.
#pragma once

#if defined(__CUDACC__)
#define SSD_FAST_HOST_DEVICE __host__ __device__
// A block's shared array: SSD_FAST_SHARED(float, tile, [16][65]) declares `tile`.
#define SSD_FAST_SHARED(type, name, dims) __shared__ type name dims
// The launch's dynamic shared memory as a `type*`.
#define SSD_FAST_DYNAMIC_SHARED(type, name) \
  extern __shared__ unsigned char ssd_fast_dynamic_shared_[]; \
  type* name = reinterpret_cast<type*>(ssd_fast_dynamic_shared_)
#else
#include "cuda_emulator.h"
#define SSD_FAST_HOST_DEVICE
#define SSD_FAST_SHARED(type, name, dims) type(&name) dims = ::emu::block_shared<type dims>([] {})
#define SSD_FAST_DYNAMIC_SHARED(type, name) type* name = ::emu::dynamic_shared<type>()
#endif

namespace ssd_fast {

// A thread's small array of structs. UBSan checks indices into arrays of scalars, but an
// array of structs is assigned through a reference, and a reference one past the end is
// legal to form, so an off-by-one write there lands silently in the next member. The
// emulator build checks every index here; on the GPU it is a plain array (same registers).
template <class T, int N>
struct ThreadArray {
  T items[N];

  SSD_FAST_HOST_DEVICE T& operator[](int i) {
    check(i);
    return items[i];
  }
  SSD_FAST_HOST_DEVICE const T& operator[](int i) const {
    check(i);
    return items[i];
  }

 private:
  SSD_FAST_HOST_DEVICE static void check(int i) {
#if !defined(__CUDACC__)
    if (i < 0 || i >= N) ::emu::fail("a thread's array was indexed out of its bounds");
#else
    (void)i;
#endif
  }
};

}  // namespace ssd_fast
