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
