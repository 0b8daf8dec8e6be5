// Bit-exact number-format conversions (libquant/NUMERICS.md §2).
//
// All encoders work on the IEEE-754 bit pattern of the f32 input with integer arithmetic, except
// the subnormal branches, which let one f32 addition do the rounding (the "magic add": adding a
// power of two whose ulp equals the target subnormal spacing makes the FPU round |x| onto that
// grid, ties-to-even, and the result's low mantissa bits are then the code). This relies on the
// default FP environment (round-to-nearest-even, no flush-to-zero); the build forbids fast-math and
// FMA contraction (top-level CMakeLists.txt).
#include "libquant/float_formats.h"

#include <array>
#include <bit>
#include <cmath>
#include <cstring>

#include "libquant/error.h"

namespace qt {

static_assert(std::endian::native == std::endian::little,
              "decode_to_f32/store_float assume a little-endian host (safetensors is little-endian)");

uint32_t f32_bits(float f) { return std::bit_cast<uint32_t>(f); }
float f32_from_bits(uint32_t u) { return std::bit_cast<float>(u); }

namespace {

// Internal bit casts: the exported f32_bits/f32_from_bits cannot be inlined here under -fPIC
// (semantic interposition), which would keep the decode loops from vectorizing.
constexpr uint32_t to_bits(float f) { return std::bit_cast<uint32_t>(f); }
constexpr float from_bits(uint32_t u) { return std::bit_cast<float>(u); }

constexpr uint32_t kSignMask = 0x80000000u;
constexpr uint32_t kF32Inf = 0x7F800000u;  // bits of +inf; any |bits| above it is a NaN

// ---- constexpr decoders (shared by the scalar API and the 256-entry fp8 tables) ----

constexpr float decode_f16(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7FFFu;  // exponent and mantissa, sign removed
  // Normal numbers: move the 15 low bits up by 13 so the 10-bit mantissa lands at the top of the
  // f32 mantissa, then rebias the exponent from 15 to 127 (add 112 << 23).
  // Inf/NaN (exponent 31): the rebiased exponent would be 143; add 112 more to reach 255. The
  // mantissa (NaN payload, quiet bit included) is carried over unchanged. (Written as selects,
  // not branches, so the bulk loop vectorizes.)
  const uint32_t normal = (em << 13) + (112u << 23) + (em >= 0x7C00u ? (112u << 23) : 0u);
  // Subnormals (exponent 0): value = em * 2^-24. Build 0.5 + em*2^-24 by writing em into the
  // mantissa of 0.5 (its ulp is 2^-24), then subtract 0.5; both steps are exact in f32.
  // Both candidates are computed for every input and merged with a bit mask: with a plain ?:
  // GCC sinks the f32 subtraction into a branch (it may raise FP flags) and the loop no longer
  // vectorizes.
  const float sub = std::bit_cast<float>(0x3F000000u + em) - 0.5f;
  const uint32_t is_sub = 0u - static_cast<uint32_t>(em < 0x0400u);  // all ones for subnormals
  const uint32_t mag = (std::bit_cast<uint32_t>(sub) & is_sub) | (normal & ~is_sub);
  return std::bit_cast<float>(sign | mag);
}

constexpr float decode_e4m3fn(uint8_t b) {
  const uint32_t sign = static_cast<uint32_t>(b & 0x80u) << 24;
  const uint32_t em = b & 0x7Fu;
  if (em == 0x7Fu) return std::bit_cast<float>(sign | 0x7FC00000u);  // the only NaN codes
  uint32_t mag;
  if (em < 0x08u) {
    // Subnormal: m * 2^-9. Converting the small integer to float and scaling by a power of two
    // is exact.
    mag = std::bit_cast<uint32_t>(static_cast<float>(em) * 0.001953125f);
  } else {
    // Normal: 3-bit mantissa to the top of the f32 mantissa, exponent rebias 7 -> 127.
    mag = (em << 20) + ((127u - 7u) << 23);
  }
  return std::bit_cast<float>(sign | mag);
}

constexpr float decode_e5m2(uint8_t b) {
  // e5m2 is exactly the top byte of an IEEE binary16, so decode it as one.
  return decode_f16(static_cast<uint16_t>(b << 8));
}

constexpr std::array<float, 256> make_table(float (*fn)(uint8_t)) {
  std::array<float, 256> t{};
  for (int i = 0; i < 256; ++i) t[static_cast<size_t>(i)] = fn(static_cast<uint8_t>(i));
  return t;
}
constexpr std::array<float, 256> kE4M3Table = make_table(decode_e4m3fn);
constexpr std::array<float, 256> kE5M2Table = make_table(decode_e5m2);

template <typename T>
T load_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));  // unaligned-safe; the host is little-endian (asserted above)
  return v;
}

// Decodes in fixed-size blocks so that GCC's default -O2 vectorizer ("very cheap" cost model: no
// runtime alias checks, trip count a known multiple of the vector width) turns the inner
// conversion loop into SIMD code: each block's raw bytes are first copied into a local array,
// which provably does not alias `dst`. The remainder runs through the same conversion one
// element at a time.
constexpr uint64_t kBlock = 64;

template <typename T, typename Fn>
void decode_blocks(const uint8_t* src, uint64_t n, float* dst, Fn conv) {
  uint64_t i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    T in[kBlock];
    std::memcpy(in, src + i * sizeof(T), sizeof in);  // unaligned-safe, little-endian host
    float* d = dst + i;
    for (uint64_t j = 0; j < kBlock; ++j) d[j] = conv(in[j]);
  }
  for (; i < n; ++i) dst[i] = conv(load_le<T>(src + i * sizeof(T)));
}

}  // namespace

// ---- bf16 ----------------------------------------------------------------------------------

uint16_t bf16_from_f32(float f) {
  const uint32_t u = to_bits(f);
  // NaN: a quiet NaN keeping the input's sign (0x7FC0 / 0xFFC0). Rounding the bits would risk
  // carrying a NaN payload into the exponent (-> inf).
  if ((u & ~kSignMask) > kF32Inf) return static_cast<uint16_t>(((u & kSignMask) >> 16) | 0x7FC0u);
  // RNE on the 16 dropped bits: adding 0x7FFF rounds up strictly above the half-way point; the
  // kept LSB adds the extra 1 that makes an exact tie round up only when the LSB is odd. A carry
  // out of the mantissa bumps the exponent, which is the correct result (up to +-inf).
  const uint32_t lsb = (u >> 16) & 1u;
  return static_cast<uint16_t>((u + 0x7FFFu + lsb) >> 16);
}

float f32_from_bf16(uint16_t h) { return from_bits(static_cast<uint32_t>(h) << 16); }

// ---- f16 -----------------------------------------------------------------------------------

uint16_t f16_from_f32(float f) {
  const uint32_t u = to_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u & kSignMask) >> 16);
  const uint32_t a = u & ~kSignMask;  // |x| bits
  if (a > kF32Inf) {
    // NaN: quiet it and keep the top 10 payload bits, as x86 F16C (vcvtps2ph) does; that is what
    // torch's CPU kernels produce (0x7FC00000 -> 0x7E00, sign kept).
    return static_cast<uint16_t>(sign | 0x7E00u | ((a >> 13) & 0x03FFu));
  }
  // |x| >= 65520 (bits 0x477FF000) is at or above the midpoint between the largest finite half
  // 65504 (odd mantissa 0x3FF) and 2^16, so RNE gives +-inf; inf itself lands here too.
  if (a >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);
  if (a < 0x38800000u) {
    // |x| < 2^-14: half subnormal range, spacing 2^-24. 0.5f has ulp 2^-24, so the f32 sum
    // |x| + 0.5 is |x| rounded (RNE) onto that grid; its mantissa bits are the half code
    // (0..0x400, where 0x400 is the carry into the smallest normal and is encoded correctly).
    const float t = from_bits(a) + 0.5f;
    return static_cast<uint16_t>(sign | (to_bits(t) - 0x3F000000u));
  }
  // Normal: rebias the exponent 127 -> 15 and round the mantissa from 23 to 10 bits (RNE, same
  // bias trick as bf16). The overflow case was excluded above, so no carry reaches the sign.
  const uint32_t lsb = (a >> 13) & 1u;
  const uint32_t r = (a - (112u << 23) + 0x0FFFu + lsb) >> 13;
  return static_cast<uint16_t>(sign | r);
}

float f32_from_f16(uint16_t h) { return decode_f16(h); }

// ---- float8 --------------------------------------------------------------------------------

uint8_t e4m3fn_from_f32(float f) {
  // c10 fp8e4m3fn_from_fp32_value, re-derived (libquant/NUMERICS.md §2.2). Non-saturating.
  const uint32_t u = to_bits(f);
  const uint8_t sign = static_cast<uint8_t>((u & kSignMask) >> 24);
  const uint32_t a = u & ~kSignMask;
  uint8_t r;
  if (a >= 0x43F00000u) {
    // |x| >= 480 (= 1.875 * 2^8, the would-be next code after 448), inf or NaN: the NaN code.
    // (464, 480) also ends as 0x7F, via the rounding carry in the normal branch below.
    r = 0x7F;
  } else if (a < 0x3C800000u) {
    // |x| < 2^-6: subnormal grid 2^-9. 2^14 (bits 141 << 23) has ulp 2^-9, so the f32 sum rounds
    // |x| RNE onto the grid; the mantissa bits of the sum are the code (0..8; 8 = smallest normal).
    const float t = from_bits(a) + 16384.0f;
    r = static_cast<uint8_t>(to_bits(t) - (141u << 23));
  } else {
    // Normal: rebias 127 -> 7 and round 23 mantissa bits to 3 (RNE). A mantissa carry can move
    // 464..480 to exponent 15 mantissa 7 = 0x7F (NaN), which is c10's behaviour.
    const uint32_t lsb = (a >> 20) & 1u;
    r = static_cast<uint8_t>((a - (120u << 23) + 0x7FFFFu + lsb) >> 20);
  }
  return static_cast<uint8_t>(r | sign);
}

uint8_t e4m3fn_from_f32_sat(float f) {
  // Newer c10: the non-saturating result, except that every non-NaN input landing on the NaN
  // code (rounding carry from (464, 480), |x| >= 480, +-inf) becomes the largest finite value.
  const uint8_t r = e4m3fn_from_f32(f);
  if ((r & 0x7Fu) == 0x7Fu && !std::isnan(f)) return static_cast<uint8_t>(r - 1);  // 0x7E | sign
  return r;
}

float f32_from_e4m3fn(uint8_t b) { return kE4M3Table[b]; }

uint8_t e5m2_from_f32(float f) {
  // c10 fp8e5m2_from_fp32_value, re-derived (libquant/NUMERICS.md §2.3).
  const uint32_t u = to_bits(f);
  const uint8_t sign = static_cast<uint8_t>((u & kSignMask) >> 24);
  const uint32_t a = u & ~kSignMask;
  uint8_t r;
  if (a >= (143u << 23)) {
    // |x| >= 2^16, inf or NaN: NaN -> 0x7F, otherwise inf 0x7C. [61440, 65536) reaches 0x7C
    // through the rounding carry below (61440 is a tie that goes to the even code, inf).
    r = a > kF32Inf ? 0x7F : 0x7C;
  } else if (a < (113u << 23)) {
    // |x| < 2^-14: subnormal grid 2^-16; 2^7 (bits 134 << 23) has ulp 2^-16 (magic add as above).
    const float t = from_bits(a) + 128.0f;
    r = static_cast<uint8_t>(to_bits(t) - (134u << 23));
  } else {
    // Normal: rebias 127 -> 15, round 23 mantissa bits to 2 (RNE).
    const uint32_t lsb = (a >> 21) & 1u;
    r = static_cast<uint8_t>((a - (112u << 23) + 0xFFFFFu + lsb) >> 21);
  }
  return static_cast<uint8_t>(r | sign);
}

float f32_from_e5m2(uint8_t b) { return kE5M2Table[b]; }

// ---- bulk decode ---------------------------------------------------------------------------

bool decode_to_f32(DType t, const uint8_t* src, uint64_t n, float* dst) {
  switch (t) {
    case DType::F32:
      if (n) std::memcpy(dst, src, n * sizeof(float));
      return true;
    case DType::BF16:
      decode_blocks<uint16_t>(src, n, dst, [](uint16_t h) { return from_bits(static_cast<uint32_t>(h) << 16); });
      return true;
    case DType::F16:
      decode_blocks<uint16_t>(src, n, dst, [](uint16_t h) { return decode_f16(h); });
      return true;
    case DType::F64:
      // static_cast<float>(double) rounds RNE in the default FP environment (overflow -> inf,
      // NaN stays NaN), which is what tensor.to(torch.float32) does.
      decode_blocks<double>(src, n, dst, [](double v) { return static_cast<float>(v); });
      return true;
    case DType::F8_E4M3:
      for (uint64_t i = 0; i < n; ++i) dst[i] = kE4M3Table[src[i]];
      return true;
    case DType::F8_E5M2:
      for (uint64_t i = 0; i < n; ++i) dst[i] = kE5M2Table[src[i]];
      return true;
    // Integers: float(value), i.e. exact up to 2^24 and RNE beyond (int32/int64 conversion
    // instructions round with the current mode, RNE).
    case DType::I8:
      decode_blocks<int8_t>(src, n, dst, [](int8_t v) { return static_cast<float>(v); });
      return true;
    case DType::U8:
      decode_blocks<uint8_t>(src, n, dst, [](uint8_t v) { return static_cast<float>(v); });
      return true;
    case DType::BOOL:
      // torch stores bools as 0/1 bytes; any non-zero byte reads as true.
      decode_blocks<uint8_t>(src, n, dst, [](uint8_t v) { return v != 0 ? 1.0f : 0.0f; });
      return true;
    case DType::I16:
      decode_blocks<int16_t>(src, n, dst, [](int16_t v) { return static_cast<float>(v); });
      return true;
    case DType::I32:
      decode_blocks<int32_t>(src, n, dst, [](int32_t v) { return static_cast<float>(v); });
      return true;
    case DType::I64:
      decode_blocks<int64_t>(src, n, dst, [](int64_t v) { return static_cast<float>(v); });
      return true;
    default:
      return false;  // F4, F6_*, F8_E8M0, FNUZ, C64, U16/U32/U64
  }
}

namespace {
// First i < n with bad(element i), or -1. Blocks of kBlock elements are tested with an OR over
// the block first (vectorizes), and only a block that has a bad element is searched.
template <typename T, typename Bad>
int64_t first_bad(const uint8_t* src, uint64_t n, Bad bad) {
  uint64_t i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    const uint8_t* b = src + i * sizeof(T);
    unsigned any = 0;  // an integer OR (not a bool) so that the loop vectorizes
    for (uint64_t j = 0; j < kBlock; ++j) any |= static_cast<unsigned>(bad(load_le<T>(b + j * sizeof(T))));
    if (any == 0) continue;
    for (uint64_t j = 0; j < kBlock; ++j)
      if (bad(load_le<T>(b + j * sizeof(T)))) return static_cast<int64_t>(i + j);
  }
  for (; i < n; ++i)
    if (bad(load_le<T>(src + i * sizeof(T)))) return static_cast<int64_t>(i);
  return -1;
}
}  // namespace

int64_t first_nonfinite_f32(DType t, const uint8_t* src, uint64_t n) {
  switch (t) {
    case DType::F32: return first_bad<uint32_t>(src, n, [](uint32_t u) { return (u & kF32Inf) == kF32Inf; });
    case DType::BF16: return first_bad<uint16_t>(src, n, [](uint16_t h) { return (h & 0x7F80u) == 0x7F80u; });
    case DType::F16: return first_bad<uint16_t>(src, n, [](uint16_t h) { return (h & 0x7C00u) == 0x7C00u; });
    case DType::F64:
      // The f32 the value becomes (RNE, as decode_to_f32): finite doubles just above FLT_MAX
      // still round down to it.
      return first_bad<double>(src, n, [](double v) { return !std::isfinite(static_cast<float>(v)); });
    case DType::F8_E4M3: return first_bad<uint8_t>(src, n, [](uint8_t b) { return (b & 0x7Fu) == 0x7Fu; });
    case DType::F8_E5M2: return first_bad<uint8_t>(src, n, [](uint8_t b) { return (b & 0x7Cu) == 0x7Cu; });
    default: return -1;  // integers are finite; undecodable dtypes are refused by decode_to_f32
  }
}

// ---- model-dtype helpers -------------------------------------------------------------------

float round_to_dtype(DType t, float f) {
  switch (t) {
    case DType::F32: return f;
    case DType::BF16: return f32_from_bf16(bf16_from_f32(f));
    case DType::F16: return f32_from_f16(f16_from_f32(f));
    default: QT_ASSERT(!"round_to_dtype: only F32, F16, BF16"); return f;
  }
}

void store_float(DType t, float f, uint8_t* dst) {
  switch (t) {
    case DType::F32: std::memcpy(dst, &f, 4); return;
    case DType::F64: { const double d = f; std::memcpy(dst, &d, 8); return; }
    case DType::BF16: { const uint16_t h = bf16_from_f32(f); std::memcpy(dst, &h, 2); return; }
    case DType::F16: { const uint16_t h = f16_from_f32(f); std::memcpy(dst, &h, 2); return; }
    case DType::F8_E4M3: *dst = e4m3fn_from_f32(f); return;
    case DType::F8_E5M2: *dst = e5m2_from_f32(f); return;
    default: QT_ASSERT(!"store_float: not a supported float dtype");
  }
}

float dtype_eps(DType t) {
  // torch.finfo(t).eps = 2^-(mantissa bits).
  switch (t) {
    case DType::BF16: return 0.0078125f;        // 2^-7
    case DType::F16: return 0.0009765625f;      // 2^-10
    case DType::F32: return 1.1920928955078125e-07f;  // 2^-23
    case DType::F64: return 2.220446049250313e-16f;   // 2^-52 (exact in f32)
    case DType::F8_E4M3: return 0.125f;         // 2^-3
    case DType::F8_E5M2: return 0.25f;          // 2^-2
    default: QT_ASSERT(!"dtype_eps: not a float dtype"); return 0.0f;
  }
}

}  // namespace qt
