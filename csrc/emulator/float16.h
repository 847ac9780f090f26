// fp16 and bf16 storage types for emulated kernels, with conversions that round exactly
// like torch's (round to nearest, ties to even; subnormals kept). A kernel templated on its
// element type gets these in the emulator where the real build passes c10::Half and
// c10::BFloat16: both convert to float implicitly and are constructed from float.
// NaN becomes one quiet NaN (0x7E00 with the sign for fp16, 0x7FC0 for bf16), as c10's
// portable path does; tests compare NaNs as NaN, not by payload.
#pragma once

#include <bit>
#include <cstdint>

namespace emu {

// IEEE binary16 from binary32, round to nearest even.
inline uint16_t half_bits_from_float(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return sign | 0x7e00u;                   // NaN
  if (magnitude >= 0x477ff000u) return sign | 0x7c00u;                  // >= 65520 rounds to infinity
  if (magnitude < 0x38800000u) {                                        // below 2^-14: a subnormal half
    // |value| + 0.5 puts |value| / 2^-24 in the low mantissa bits of a float in [0.5, 1),
    // rounded to nearest even by the addition itself.
    const float shifted = std::bit_cast<float>(magnitude) + 0.5f;
    return sign | static_cast<uint16_t>(std::bit_cast<uint32_t>(shifted) - 0x3f000000u);
  }
  // A normal half: re-bias the exponent (127 -> 15) and drop 13 mantissa bits, adding
  // just under half an ulp plus the kept lowest bit, so ties go to even.
  const uint32_t keep_odd = (magnitude >> 13) & 1u;
  const uint32_t rounded = magnitude - (112u << 23) + 0xfffu + keep_odd;
  return sign | static_cast<uint16_t>(rounded >> 13);
}

inline float float_from_half_bits(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
  if (exponent == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));  // inf, NaN
  if (exponent != 0) return std::bit_cast<float>(sign | ((exponent + 112u) << 23) | (mantissa << 13));
  // zero or subnormal: mantissa * 2^-24, exact in float
  const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
  return sign != 0 ? -magnitude : magnitude;
}

inline uint16_t bfloat16_bits_from_float(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fc0u;
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

inline float float_from_bfloat16_bits(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

struct Half {
  uint16_t bits;
  Half() = default;
  Half(float value) : bits(half_bits_from_float(value)) {}  // NOLINT: implicit, like c10::Half
  operator float() const { return float_from_half_bits(bits); }
  static Half from_bits(uint16_t b) {
    Half h;
    h.bits = b;
    return h;
  }
};

struct BFloat16 {
  uint16_t bits;
  BFloat16() = default;
  BFloat16(float value) : bits(bfloat16_bits_from_float(value)) {}  // NOLINT: implicit, like c10::BFloat16
  operator float() const { return float_from_bfloat16_bits(bits); }
  static BFloat16 from_bits(uint16_t b) {
    BFloat16 h;
    h.bits = b;
    return h;
  }
};

static_assert(sizeof(Half) == 2 && sizeof(BFloat16) == 2);

}  // namespace emu
