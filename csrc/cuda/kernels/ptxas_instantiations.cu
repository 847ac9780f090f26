// Every kernel instantiation that the extension launches, for scripts/ptxas_check.py:
// nvcc compiles this file alone for sm_90 (-cubin -Xptxas -v, the extension's flags) and
// the script compares each kernel's registers, spills and shared memory with
// ptxas_baseline.json. Not part of the extension's build.
//
// When a kernel, loader or dtype is added or removed, list it here (one SSD_FAST_KERNEL
// line each), then run `python scripts/ptxas_check.py --update --reason "..."`.
// Threads per block (for the occupancy) come from the `ptxas-threads:` lines below, by
// kernel name; the static_asserts keep them equal to the launchers' constants.
//
// ptxas-threads: multi_tensor_kernel 256
// ptxas-threads: per_sample_sq_kernel 256
// ptxas-threads: add_slices_kernel 256
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "../../common/constants.h"
#include "multi_tensor.cuh"
#include "per_sample_sq.cuh"
#include "per_sample_sq_loaders.cuh"
#include "per_sample_sq_mma.cuh"
#include "select_dampen.cuh"
#include "sq_accumulate.cuh"

namespace ssd_fast::cuda {

static_assert(kThreads == 256, "update the ptxas-threads line of multi_tensor_kernel");
static_assert(kSqThreads == 256, "update the ptxas-threads lines of the per-sample kernels");

#define SSD_FAST_KERNEL(...) reinterpret_cast<const void*>(&__VA_ARGS__),
#define SSD_FAST_EACH_DTYPE(M) M(float) M(double) M(c10::Half) M(c10::BFloat16)
#define SSD_FAST_SELECT_DAMPEN(T) SSD_FAST_KERNEL(multi_tensor_kernel<3, SelectDampenOp<T>>)
#define SSD_FAST_SQ_ACCUMULATE(T) SSD_FAST_KERNEL(multi_tensor_kernel<2, SqAccumulateOp<T>>)
// The per-sample kernels in each math the launcher dispatches: fp32 FMA ("exact") and the
// TF32 and bf16 tensor-core variants.
#define SSD_FAST_EACH_MATH(M, T) M(T, SqFmaMath) M(T, SqMmaMath<SqTensorCore::kTf32>) M(T, SqMmaMath<SqTensorCore::kBf16>)
#define SSD_FAST_CONV_MATH(T, MATH) SSD_FAST_KERNEL(per_sample_sq_kernel<true, true, ConvGradLoad<T>, Im2colLoad<T>, MATH>)
#define SSD_FAST_TOKENS_MATH(T, MATH) SSD_FAST_KERNEL(per_sample_sq_kernel<false, false, TokenLoad<T>, TokenLoad<T>, MATH>)
#define SSD_FAST_CONV(T) SSD_FAST_EACH_MATH(SSD_FAST_CONV_MATH, T)
#define SSD_FAST_TOKENS(T) SSD_FAST_EACH_MATH(SSD_FAST_TOKENS_MATH, T)

// Taking each kernel's address makes nvcc compile it.
extern const void* const kAllKernels[] = {
    SSD_FAST_EACH_DTYPE(SSD_FAST_SELECT_DAMPEN)  //
    SSD_FAST_EACH_DTYPE(SSD_FAST_SQ_ACCUMULATE)  //
    SSD_FAST_EACH_DTYPE(SSD_FAST_CONV)           //
    SSD_FAST_EACH_DTYPE(SSD_FAST_TOKENS)         //
    SSD_FAST_KERNEL(add_slices_kernel)           //
};

}  // namespace ssd_fast::cuda
