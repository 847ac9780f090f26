// SSD_FAST_CHECK(cond, printf-format, args...): TORCH_CHECK for messages that carry numbers.
//
// Why not TORCH_CHECK(cond, "text ", i, ...): with any argument beyond one string literal,
// TORCH_CHECK builds the message as a std::string with c10::str (an std::ostringstream
// compiled into this library) and hands that std::string to libc10's
//   torchCheckFail(const char*, const char*, uint32_t, const std::string&)
// so a std::string and iostream code cross from this library into libc10. On the GPU
// machine (torch 2.11, extension built there) exactly those checks killed the process
// with a segmentation fault, while checks with only a literal message, which reach
// libc10's `const char*` overload with nothing built here, raised cleanly. Formatting
// with vsnprintf into a stack buffer and calling that same `const char*` overload makes
// every failing check take the path that was seen to work: no std::string, no
// iostream and no destructor in the failing frame, whatever the library/header pairing.
#pragma once

#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <cstdarg>
#include <cstdint>
#include <cstdio>

namespace ssd_fast {

[[noreturn]] __attribute__((format(printf, 4, 5))) inline void check_failed(const char* func, const char* file,
                                                                            uint32_t line, const char* format, ...) {
  char message[512];
  va_list args;
  va_start(args, format);
  std::vsnprintf(message, sizeof(message), format, args);
  va_end(args);
  ::c10::detail::torchCheckFail(func, file, line, static_cast<const char*>(message));
}

}  // namespace ssd_fast

#define SSD_FAST_CHECK(cond, ...)                                                            \
  do {                                                                                       \
    if (C10_UNLIKELY(!(cond))) {                                                             \
      ::ssd_fast::check_failed(__func__, __FILE__, static_cast<uint32_t>(__LINE__), __VA_ARGS__); \
    }                                                                                        \
  } while (0)
