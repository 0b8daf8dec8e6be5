// INTERIM, build-only stand-in for libquant/float_formats.cpp while the numerics branch that
// implements it has not been merged. libquant/CMakeLists.txt compiles this file ONLY when
// libquant/float_formats.cpp does not exist; delete this folder once it does.
//
// It implements the subset of float_formats.h that libquant links against (bf16/f16/e4m3fn
// conversions, decode_to_f32 for F32/F16/BF16/F64/F8_E4M3/I8, round_to_dtype, store_float,
// dtype_eps), each as a plain round-to-nearest-even rule written from the format definitions.
#include <cmath>
#include <cstring>

#include "libquant/float_formats.h"

namespace qt {

uint32_t f32_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
float f32_from_bits(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

uint16_t bf16_from_f32(float f) {
  const uint32_t u = f32_bits(f);
  if (std::isnan(f)) return static_cast<uint16_t>(((u >> 16) & 0x8000u) | 0x7FC0u);  // c10 NaN
  // RNE on the 16 dropped bits: add 0x7FFF plus the lowest kept bit.
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
float f32_from_bf16(uint16_t h) { return f32_from_bits(static_cast<uint32_t>(h) << 16); }

uint16_t f16_from_f32(float f) {
  const uint16_t sign = static_cast<uint16_t>((f32_bits(f) >> 16) & 0x8000u);
  const float a = std::fabs(f);
  if (std::isnan(f)) return sign | 0x7E00;
  if (a >= 65520.0f) return sign | 0x7C00;             // rounds to inf (65504 + half ulp, tie up)
  if (a < 0x1p-14f)                                     // subnormal grid 2^-24 (exact scaling)
    return sign | static_cast<uint16_t>(std::nearbyint(a * 0x1p24f));
  int e;
  const float m = std::frexp(a, &e);                    // a = m * 2^e, m in [0.5, 1)
  float q = std::nearbyint((m * 2.0f - 1.0f) * 1024.0f);  // exact operands, one RNE rounding
  int ex = e - 1;
  if (q == 1024.0f) { q = 0.0f; ++ex; }
  return sign | static_cast<uint16_t>(((ex + 15) << 10) | static_cast<int>(q));
}
float f32_from_f16(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
  float v;
  if (e == 0) v = std::ldexp(static_cast<float>(m), -24);
  else if (e == 31) v = m ? NAN : INFINITY;
  else v = std::ldexp(static_cast<float>(m | 0x400u), static_cast<int>(e) - 25);
  return f32_from_bits(f32_bits(v) | sign);
}

uint8_t e4m3fn_from_f32(float f) {
  const uint32_t u = f32_bits(f);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  const uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x43E80000u) return sign | 0x7F;  // NaN, inf and |x| > 464 -> NaN (c10); 464 -> 448
  if (a < 0x3C800000u) {
    // |x| < 2^-6: adding 2^14 (ulp 2^-9) rounds |x| RNE onto the subnormal grid; the low
    // mantissa bits of the sum are the code (8 = the smallest normal, which is correct).
    return sign | static_cast<uint8_t>(f32_bits(f32_from_bits(a) + 16384.0f) - 0x46800000u);
  }
  // Normal: rebias the exponent 127 -> 7 (subtract 120 << 23) and round the 23 mantissa bits to
  // 3, ties to even (add 0x7FFFF plus the lowest kept bit); a carry moves into the exponent.
  const uint32_t keep_lsb = (a >> 20) & 1u;
  return sign | static_cast<uint8_t>((a - (120u << 23) + 0x7FFFFu + keep_lsb) >> 20);
}
float f32_from_e4m3fn(uint8_t b) {
  const int e = (b >> 3) & 0xF, m = b & 7;
  float v;
  if ((b & 0x7F) == 0x7F) v = NAN;
  else if (e == 0) v = std::ldexp(static_cast<float>(m), -9);
  else v = std::ldexp(static_cast<float>(8 + m), e - 10);
  return (b & 0x80) ? -v : v;
}

bool decode_to_f32(DType t, const uint8_t* src, uint64_t n, float* dst) {
  for (uint64_t i = 0; i < n; ++i) {
    switch (t) {
      case DType::F32: std::memcpy(&dst[i], src + 4 * i, 4); break;
      case DType::F64: { double v; std::memcpy(&v, src + 8 * i, 8); dst[i] = static_cast<float>(v); break; }
      case DType::F16: { uint16_t h; std::memcpy(&h, src + 2 * i, 2); dst[i] = f32_from_f16(h); break; }
      case DType::BF16: { uint16_t h; std::memcpy(&h, src + 2 * i, 2); dst[i] = f32_from_bf16(h); break; }
      case DType::F8_E4M3: dst[i] = f32_from_e4m3fn(src[i]); break;
      case DType::I8: dst[i] = static_cast<float>(static_cast<int8_t>(src[i])); break;
      default: return false;
    }
  }
  return true;
}

float round_to_dtype(DType t, float f) {
  if (t == DType::BF16) return f32_from_bf16(bf16_from_f32(f));
  if (t == DType::F16) return f32_from_f16(f16_from_f32(f));
  return f;
}

void store_float(DType t, float f, uint8_t* dst) {
  if (t == DType::BF16) { uint16_t h = bf16_from_f32(f); std::memcpy(dst, &h, 2); }
  else if (t == DType::F16) { uint16_t h = f16_from_f32(f); std::memcpy(dst, &h, 2); }
  else std::memcpy(dst, &f, 4);
}

float dtype_eps(DType t) {
  return t == DType::BF16 ? 0x1p-7f : t == DType::F16 ? 0x1p-10f : 0x1p-23f;
}

}  // namespace qt
