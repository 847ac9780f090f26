// C++ users reach the ops through the public header (csrc/include/ssd_fast/ops.h), which
// calls the dispatcher exactly as Python does. This checks a hand-computed case for each
// op, and that a bad argument raises c10::Error, and exits non-zero on any mismatch.
#include <ATen/ATen.h>
#include <ssd_fast/ops.h>

#include <cstdio>
#include <cstring>
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

}  // namespace

int main() {
  test_select_dampen();
  test_sq_accumulate();
  test_bad_arguments_raise();
  std::printf("%d failed\n", failures);
  return failures == 0 ? 0 : 1;
}
