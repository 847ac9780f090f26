// The emulated tests' one check: print each result, count the failures; `finish()` is
// main's return value (non-zero when any check failed, which fails the ctest).
#pragma once

#include <cstdio>
#include <string>

namespace emu_test {

inline int failures = 0;

inline void expect(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}

inline int finish() {
  std::printf("%d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}

}  // namespace emu_test
