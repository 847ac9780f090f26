// Every op schema of the ssd_fast library, in one place.
//
// Kernels live in cpu/<op>.cpp and cuda/<op>.cu and register themselves with
// TORCH_LIBRARY_IMPL. Because the ops go through the dispatcher, they work under
// torch.compile and can be checked with torch.library.opcheck.
#include <torch/library.h>

TORCH_LIBRARY(ssd_fast, m) {
  // For every i and element j: when forget[i][j] > alpha * full[i][j],
  // params[i][j] *= min(lam * full[i][j] / forget[i][j], 1); other elements keep their
  // exact bits. selected[i] is incremented by the number of elements selected in
  // params[i], counted in the same pass.
  m.def(
      "select_dampen_(Tensor(a!)[] params, Tensor[] forget, Tensor[] full, float alpha, "
      "float lam, Tensor(b!) selected) -> ()");
  // importances[i] += scale * grads[i]^2, or scale * |grads[i]| when absolute (LFSSD).
  m.def("sq_accumulate_(Tensor(a!)[] importances, Tensor[] grads, float scale, bool absolute) -> ()");
  // Per-sample squared weight gradients, summed over the batch without forming them:
  // out[o, k] += scale * sum_b (sum_t dy[b,t,o] * x[b,t,k])^2, or |.| when absolute.
  // dy [B, T, O], x [B, T, K] (a Linear over tokens), out [O, K] float32.
  // precision: "exact" (fp32 products), "tf32" or "bf16" (each sample's product may use
  // tensor cores with operands rounded to TF32 / bf16, as on CUDA sm_80+; the CPU computes
  // "exact" whatever is asked).
  m.def(
      "per_sample_sq_tokens_(Tensor(a!) out, Tensor dy, Tensor x, float scale, bool absolute, "
      "str precision=\"exact\") -> ()");
  // The same for a Conv2d, whose x is the implicit im2col of the input [B, C, H, W];
  // dy [B, O, Ho, Wo], out [O, C/groups, kh, kw] float32 (the kernel size is out's).
  m.def(
      "per_sample_sq_conv2d_(Tensor(a!) out, Tensor dy, Tensor x, int[2] stride, int[2] padding, "
      "int[2] dilation, int groups, float scale, bool absolute, str precision=\"exact\") -> ()");
}

#ifdef SSD_FAST_PYTHON_MODULE
// The Python build imports this library as ssd_fast._C; importing it runs the
// registrations above. It defines no Python functions of its own.
#include <Python.h>

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
#endif
