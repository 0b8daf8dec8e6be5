// Tests for libquant/float_formats: every conversion is checked against
//  (a) an independent reference written here in a different way (decode every code of the target
//      format to double with ldexp, then pick the nearest code by comparing against exact
//      midpoints, ties to the even code, plus the explicit overflow/NaN rules of
//      libquant/NUMERICS.md §2),
//  (b) the hand vectors of libquant/NUMERICS.md §8 'Hand-derived vectors',
//  (c) goldens dumped by real PyTorch (testdata/float_formats/make_goldens.py).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "libquant/float_formats.h"
#include "tests/support/test_support.h"

namespace qt {
namespace {

// ---------------------------------------------------------------------------------------------
// Independent reference: decoders by formula (ldexp on doubles), encoders by nearest-code search.
// ---------------------------------------------------------------------------------------------

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

double ref_decode_e4m3fn(uint8_t b) {
  const int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
  double v;
  if (e == 15 && m == 7) v = kNaN;
  else if (e == 0) v = std::ldexp(m, -9);                 // subnormal: m/8 * 2^(1-7)
  else v = std::ldexp(8 + m, e - 7 - 3);             // (1 + m/8) * 2^(e-7)
  return s ? -v : v;
}

double ref_decode_e5m2(uint8_t b) {
  const int s = b >> 7, e = (b >> 2) & 31, m = b & 3;
  double v;
  if (e == 31) v = (m == 0) ? kInf : kNaN;
  else if (e == 0) v = std::ldexp(m, -16);           // m/4 * 2^(1-15)
  else v = std::ldexp(4 + m, e - 15 - 2);            // (1 + m/4) * 2^(e-15)
  return s ? -v : v;
}

double ref_decode_f16(uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v;
  if (e == 31) v = (m == 0) ? kInf : kNaN;
  else if (e == 0) v = std::ldexp(m, -24);
  else v = std::ldexp(1024 + m, e - 15 - 10);
  return s ? -v : v;
}

double ref_decode_bf16(uint16_t h) {
  const int s = h >> 15, e = (h >> 7) & 255, m = h & 127;
  double v;
  if (e == 255) v = (m == 0) ? kInf : kNaN;
  else if (e == 0) v = std::ldexp(m, -133);          // m/128 * 2^-126
  else v = std::ldexp(128 + m, e - 127 - 7);
  return s ? -v : v;
}

// A table of the non-negative finite codes of a format with their values, ascending.
struct CodeTable {
  std::vector<uint32_t> code;
  std::vector<double> value;
};

template <typename Decode>
CodeTable finite_codes(uint32_t n_codes, Decode decode) {
  CodeTable t;
  for (uint32_t c = 0; c < n_codes; ++c) {
    const double v = decode(c);
    if (std::isfinite(v) && !std::signbit(v)) { t.code.push_back(c); t.value.push_back(v); }
  }
  for (size_t i = 1; i < t.value.size(); ++i) EXPECT_LT(t.value[i - 1], t.value[i]);  // sorted
  return t;
}

// Nearest finite code to a non-negative finite x, ties to the even code. `above` is the value the
// format would have one step past its largest finite code (the IEEE overflow threshold is its
// midpoint with the max); returns -1 when x rounds past the max.
int64_t nearest_code(const CodeTable& t, double x, double above) {
  // Largest code with value <= x (value[0] == 0 <= x). The fp8 tables (<= 128 entries) are
  // scanned linearly, by brute force; the 31744-entry half table is searched with upper_bound.
  size_t lo = 0;
  if (t.value.size() <= 256) {
    for (size_t i = 0; i < t.value.size(); ++i)
      if (t.value[i] <= x) lo = i;
  } else {
    lo = static_cast<size_t>(std::upper_bound(t.value.begin(), t.value.end(), x) - t.value.begin()) - 1;
  }
  const double lo_v = t.value[lo];
  const bool has_hi = lo + 1 < t.value.size();
  const double hi_v = has_hi ? t.value[lo + 1] : above;
  if (x == lo_v) return t.code[lo];
  const double mid = (lo_v + hi_v) / 2;  // exact: both are short binary fractions
  if (x < mid) return t.code[lo];
  if (x > mid) return has_hi ? static_cast<int64_t>(t.code[lo + 1]) : -1;
  // Exact tie: the even code wins (codes of adjacent values differ by one, so exactly one of the
  // two is even; past the max, the would-be next code is max+1).
  if (t.code[lo] % 2 == 0) return t.code[lo];
  return has_hi ? static_cast<int64_t>(t.code[lo + 1]) : -1;
}

const CodeTable& e4m3_table() {
  static const CodeTable t = finite_codes(128, [](uint32_t c) { return ref_decode_e4m3fn(static_cast<uint8_t>(c)); });
  return t;
}
const CodeTable& e5m2_table() {
  static const CodeTable t = finite_codes(128, [](uint32_t c) { return ref_decode_e5m2(static_cast<uint8_t>(c)); });
  return t;
}
const CodeTable& f16_table() {
  static const CodeTable t = finite_codes(0x8000, [](uint32_t c) { return ref_decode_f16(static_cast<uint16_t>(c)); });
  return t;
}

// Reference for the non-saturating PyTorch cast to e4m3fn (libquant/NUMERICS.md §2.2):
// NaN -> 0x7F with the input's sign; |x| > 464 (incl. inf) -> 0x7F|sign; |x| == 464 -> 448;
// otherwise the nearest code, ties to even, sign kept (also on zero).
uint8_t ref_e4m3fn(double x) {
  const uint8_t s = std::signbit(x) ? 0x80 : 0x00;
  if (std::isnan(x)) return 0x7F | s;
  const double a = std::fabs(x);
  if (a > 464.0) return 0x7F | s;
  if (a == 464.0) return 0x7E | s;
  const int64_t c = nearest_code(e4m3_table(), a, 480.0);
  EXPECT_GE(c, 0);
  return static_cast<uint8_t>(c) | s;
}

// Reference for the newer, saturating PyTorch cast (pytorch#178817): same, except that
// |x| > 464 and +-inf give +-448.
uint8_t ref_e4m3fn_sat(double x) {
  const uint8_t s = std::signbit(x) ? 0x80 : 0x00;
  if (!std::isnan(x) && std::fabs(x) > 464.0) return 0x7E | s;
  return ref_e4m3fn(x);
}

// Reference for the cast to e5m2 (libquant/NUMERICS.md §2.3): NaN -> 0x7F|sign,
// |x| >= 61440 -> inf.
uint8_t ref_e5m2(double x) {
  const uint8_t s = std::signbit(x) ? 0x80 : 0x00;
  if (std::isnan(x)) return 0x7F | s;
  const double a = std::fabs(x);
  if (a >= 61440.0) return 0x7C | s;
  const int64_t c = nearest_code(e5m2_table(), a, 65536.0);
  EXPECT_GE(c, 0);
  return static_cast<uint8_t>(c) | s;
}

// IEEE RNE to binary16; NaN handled separately by the callers.
uint16_t ref_f16(double x) {
  const uint16_t s = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs(x);
  if (std::isinf(a)) return 0x7C00 | s;
  const int64_t c = nearest_code(f16_table(), a, 65536.0);
  return static_cast<uint16_t>(c < 0 ? 0x7C00 : c) | s;
}

// f32 -> bf16 by comparing against the two bf16 neighbours in double (exact there).
uint16_t ref_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t s = static_cast<uint16_t>((u >> 16) & 0x8000);
  const double a = std::fabs(static_cast<double>(f));
  if (std::isinf(a)) return 0x7F80 | s;
  const uint16_t lo = static_cast<uint16_t>((u >> 16) & 0x7FFF);  // truncation of |x|
  const double lo_v = ref_decode_bf16(lo);
  // The next bf16 up; for the max finite (0x7F7F) it is the inf code, whose "value" for rounding
  // purposes is 2^128.
  const double hi_v = (lo + 1 == 0x7F80) ? std::ldexp(1.0, 128) : ref_decode_bf16(lo + 1);
  const double mid = (lo_v + hi_v) / 2;
  uint16_t r;
  if (a == lo_v || a < mid) r = lo;
  else if (a > mid) r = lo + 1;
  else r = (lo % 2 == 0) ? lo : lo + 1;
  return r | s;
}

float from_bits(uint32_t u) { return std::bit_cast<float>(u); }
uint32_t bits(float f) { return std::bit_cast<uint32_t>(f); }

// Same value, or both NaN with the same sign.
::testing::AssertionResult same_float(double want, float got) {
  if (std::isnan(want) && std::isnan(got) && std::signbit(want) == std::signbit(got))
    return ::testing::AssertionSuccess();
  if (!std::isnan(want) && static_cast<double>(got) == want && std::signbit(want) == std::signbit(got))
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "want " << want << " got " << got;
}

std::vector<uint8_t> golden(const char* name) {
  return test::read_file(test::source_path(std::string("testdata/float_formats/") + name));
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

TEST(FloatFormats, EveryE4M3FNByteDecodesToTheFormulaValue) {
  for (int b = 0; b < 256; ++b)
    EXPECT_TRUE(same_float(ref_decode_e4m3fn(static_cast<uint8_t>(b)), f32_from_e4m3fn(static_cast<uint8_t>(b))))
        << "byte 0x" << std::hex << b;
  EXPECT_EQ(f32_from_e4m3fn(0x7E), kE4M3Max);
  EXPECT_EQ(f32_from_e4m3fn(0x08), 0.015625f);
  EXPECT_EQ(f32_from_e4m3fn(0x01), 0.001953125f);
  EXPECT_TRUE(std::isnan(f32_from_e4m3fn(0x7F)));
  EXPECT_TRUE(std::isnan(f32_from_e4m3fn(0xFF)));
  EXPECT_TRUE(std::signbit(f32_from_e4m3fn(0x80)));
}

TEST(FloatFormats, EveryE5M2ByteDecodesToTheFormulaValue) {
  for (int b = 0; b < 256; ++b)
    EXPECT_TRUE(same_float(ref_decode_e5m2(static_cast<uint8_t>(b)), f32_from_e5m2(static_cast<uint8_t>(b))))
        << "byte 0x" << std::hex << b;
  EXPECT_EQ(f32_from_e5m2(0x7B), kE5M2Max);
  EXPECT_EQ(f32_from_e5m2(0x7C), std::numeric_limits<float>::infinity());
  EXPECT_EQ(f32_from_e5m2(0x01), std::ldexp(1.0f, -16));
}

TEST(FloatFormats, EveryHalfAndBfloatPatternDecodesToTheFormulaValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    ASSERT_TRUE(same_float(ref_decode_f16(static_cast<uint16_t>(h)), f32_from_f16(static_cast<uint16_t>(h))))
        << "f16 0x" << std::hex << h;
    ASSERT_TRUE(same_float(ref_decode_bf16(static_cast<uint16_t>(h)), f32_from_bf16(static_cast<uint16_t>(h))))
        << "bf16 0x" << std::hex << h;
  }
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

TEST(FloatFormats, EveryBfloatAndHalfRoundTripsThroughF32) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t x = static_cast<uint16_t>(h);
    const bool bf_nan = (x & 0x7F80) == 0x7F80 && (x & 0x7F) != 0;
    const bool hf_nan = (x & 0x7C00) == 0x7C00 && (x & 0x3FF) != 0;
    if (!bf_nan) ASSERT_EQ(bf16_from_f32(f32_from_bf16(x)), x) << std::hex << h;
    else ASSERT_TRUE(std::isnan(f32_from_bf16(bf16_from_f32(f32_from_bf16(x)))));
    if (!hf_nan) {
      ASSERT_EQ(f16_from_f32(f32_from_f16(x)), x) << std::hex << h;
    } else {
      // A quiet half NaN keeps its exact bits (payload lives in the top mantissa bits); a
      // signalling one comes back quieted.
      ASSERT_EQ(f16_from_f32(f32_from_f16(x)), x | 0x0200) << std::hex << h;
    }
  }
}

TEST(FloatFormats, EveryFp8CodeRoundTripsThroughF32) {
  for (int b = 0; b < 256; ++b) {
    const uint8_t c = static_cast<uint8_t>(b);
    EXPECT_EQ(e4m3fn_from_f32(f32_from_e4m3fn(c)), c) << std::hex << b;  // NaN codes too
    const bool e5_nan = (c & 0x7C) == 0x7C && (c & 3) != 0;
    EXPECT_EQ(e5m2_from_f32(f32_from_e5m2(c)), e5_nan ? (c | 0x7F) : c) << std::hex << b;
  }
}

// ---------------------------------------------------------------------------------------------
// Exhaustive bf16 / f16 -> fp8 against the independent reference
// ---------------------------------------------------------------------------------------------

TEST(FloatFormats, EveryBfloatPatternCastsToFp8LikeTheNearestCodeReference) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float x = f32_from_bf16(static_cast<uint16_t>(h));
    const double xd = ref_decode_bf16(static_cast<uint16_t>(h));
    const double in = std::isnan(xd) ? std::copysign(kNaN, std::signbit(x) ? -1.0 : 1.0) : xd;
    ASSERT_EQ(e4m3fn_from_f32(x), ref_e4m3fn(in)) << "bf16 0x" << std::hex << h << " = " << x;
    ASSERT_EQ(e4m3fn_from_f32_sat(x), ref_e4m3fn_sat(in)) << "bf16 0x" << std::hex << h << " = " << x;
    ASSERT_EQ(e5m2_from_f32(x), ref_e5m2(in)) << "bf16 0x" << std::hex << h << " = " << x;
  }
}

TEST(FloatFormats, EveryHalfPatternCastsToFp8LikeTheNearestCodeReference) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float x = f32_from_f16(static_cast<uint16_t>(h));
    const double xd = ref_decode_f16(static_cast<uint16_t>(h));
    const double in = std::isnan(xd) ? std::copysign(kNaN, std::signbit(x) ? -1.0 : 1.0) : xd;
    ASSERT_EQ(e4m3fn_from_f32(x), ref_e4m3fn(in)) << "f16 0x" << std::hex << h << " = " << x;
    ASSERT_EQ(e4m3fn_from_f32_sat(x), ref_e4m3fn_sat(in)) << "f16 0x" << std::hex << h << " = " << x;
    ASSERT_EQ(e5m2_from_f32(x), ref_e5m2(in)) << "f16 0x" << std::hex << h << " = " << x;
  }
}

// Random f32 (all exponents) plus every f32 that sits exactly on, or one ulp around, an fp8
// midpoint.
TEST(FloatFormats, RandomAndMidpointF32CastToFp8LikeTheReference) {
  std::vector<float> xs;
  std::mt19937 rng(12345);
  for (int i = 0; i < 200000; ++i) xs.push_back(from_bits(rng()));
  for (int i = 0; i < 200000; ++i)  // concentrated on the fp8 range: |x| in [2^-20, 2^17)
    xs.push_back(std::ldexp(1.0f + static_cast<float>(rng() % (1u << 23)) / (1u << 23), static_cast<int>(rng() % 37) - 20));
  for (const CodeTable* t : {&e4m3_table(), &e5m2_table()})
    for (size_t i = 0; i + 1 < t->value.size(); ++i) {
      const float mid = static_cast<float>((t->value[i] + t->value[i + 1]) / 2);
      for (float m : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f)}) {
        xs.push_back(m);
        xs.push_back(-m);
      }
    }
  for (float x : xs) {
    ASSERT_EQ(e4m3fn_from_f32(x), ref_e4m3fn(static_cast<double>(x))) << x << " bits " << std::hex << bits(x);
    ASSERT_EQ(e4m3fn_from_f32_sat(x), ref_e4m3fn_sat(static_cast<double>(x))) << x << " bits " << std::hex << bits(x);
    ASSERT_EQ(e5m2_from_f32(x), ref_e5m2(static_cast<double>(x))) << x << " bits " << std::hex << bits(x);
  }
}

// ---------------------------------------------------------------------------------------------
// libquant/NUMERICS.md §8 hand vectors (E4M3FN and E5M2 encoding tables)
// ---------------------------------------------------------------------------------------------

TEST(FloatFormats, E4M3FNEncodingTableOfTheSpecHolds) {
  struct Row { float in; uint8_t byte; float decoded; };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const Row rows[] = {
      {0.0f, 0x00, 0.0f}, {-0.0f, 0x80, -0.0f},
      {1.0f, 0x38, 1.0f}, {-1.0f, 0xB8, -1.0f},
      {0.5f, 0x30, 0.5f},
      {3.0f, 0x44, 3.0f},
      {0.1f, 0x1D, 0.1015625f},
      {100.0f, 0x6C, 96.0f},
      {448.0f, 0x7E, 448.0f}, {-448.0f, 0xFE, -448.0f},
      {464.0f, 0x7E, 448.0f},
      {465.0f, 0x7F, nan}, {479.9f, 0x7F, nan}, {480.0f, 0x7F, nan}, {1e9f, 0x7F, nan}, {inf, 0x7F, nan},
      {-500.0f, 0xFF, -nan}, {-inf, 0xFF, -nan},
      {nan, 0x7F, nan},
      {0.015625f, 0x08, 0.015625f},
      {0.001953125f, 0x01, 0.001953125f}, {-0.001953125f, 0x81, -0.001953125f},
      {std::ldexp(1.0f, -10), 0x00, 0.0f},
      {1.5f * std::ldexp(1.0f, -10), 0x01, 0.001953125f},
      {3.0f * std::ldexp(1.0f, -10), 0x02, std::ldexp(1.0f, -8)},
      {std::ldexp(1.0f, -11), 0x00, 0.0f},
      {1.0625f, 0x38, 1.0f},
      {1.1875f, 0x3A, 1.25f},
  };
  for (const Row& r : rows) {
    EXPECT_EQ(e4m3fn_from_f32(r.in), r.byte) << r.in;
    EXPECT_TRUE(same_float(r.decoded, f32_from_e4m3fn(r.byte))) << r.in;
  }
  // Trap 5 detail: a negative value with |x| <= 2^-10 keeps the sign as -0.
  EXPECT_EQ(e4m3fn_from_f32(-std::ldexp(1.0f, -10)), 0x80);
  EXPECT_EQ(e4m3fn_from_f32(-1e-30f), 0x80);
  // The saturating variant agrees on every row except the overflow ones, which give +-448.
  for (const Row& r : rows) {
    const bool overflow = !std::isnan(r.in) && std::fabs(r.in) > 464.0f;
    EXPECT_EQ(e4m3fn_from_f32_sat(r.in), overflow ? (r.byte & 0x80) | 0x7E : r.byte) << r.in;
  }
  EXPECT_EQ(e4m3fn_from_f32_sat(-nan), 0xFF);
  EXPECT_EQ(e4m3fn_from_f32(-nan), 0xFF);
}

TEST(FloatFormats, E5M2EncodingTableOfTheSpecHolds) {
  struct Row { float in; uint8_t byte; float decoded; };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const Row rows[] = {
      {1.0f, 0x3C, 1.0f},
      {0.1f, 0x2E, 0.09375f},
      {1.125f, 0x3C, 1.0f},
      {1.375f, 0x3E, 1.5f},
      {57344.0f, 0x7B, 57344.0f}, {60000.0f, 0x7B, 57344.0f},
      {61440.0f, 0x7C, inf}, {65536.0f, 0x7C, inf}, {inf, 0x7C, inf},
      {nan, 0x7F, nan},
      {std::ldexp(1.0f, -16), 0x01, std::ldexp(1.0f, -16)},
      {std::ldexp(1.0f, -17), 0x00, 0.0f},
  };
  for (const Row& r : rows) {
    EXPECT_EQ(e5m2_from_f32(r.in), r.byte) << r.in;
    EXPECT_TRUE(same_float(r.decoded, f32_from_e5m2(r.byte))) << r.in;
  }
  EXPECT_EQ(e5m2_from_f32(-inf), 0xFC);
  EXPECT_EQ(e5m2_from_f32(-nan), 0xFF);
}

// ---------------------------------------------------------------------------------------------
// f32 -> bf16 and f32 -> f16
// ---------------------------------------------------------------------------------------------

std::vector<float> bf16_probe_values() {
  std::vector<float> xs;
  std::mt19937 rng(777);
  for (int i = 0; i < 1000000; ++i) xs.push_back(from_bits(rng()));
  // Every bf16 pattern with the dropped half at the tie and one either side of it.
  for (uint32_t hi = 0; hi < 65536; ++hi)
    for (uint32_t lo : {0x0000u, 0x0001u, 0x7FFFu, 0x8000u, 0x8001u, 0xFFFFu}) xs.push_back(from_bits((hi << 16) | lo));
  return xs;
}

TEST(FloatFormats, F32ToBfloatMatchesTheNeighbourReferenceOnRandomAndTieValues) {
  for (float x : bf16_probe_values()) {
    if (std::isnan(x)) continue;  // NaN has its own test
    ASSERT_EQ(bf16_from_f32(x), ref_bf16(x)) << "bits 0x" << std::hex << bits(x);
  }
}

TEST(FloatFormats, F32ToBfloatEdgeCases) {
  EXPECT_EQ(bf16_from_f32(1.0f), 0x3F80);
  EXPECT_EQ(bf16_from_f32(from_bits(0x3F808000)), 0x3F80);  // tie, even kept
  EXPECT_EQ(bf16_from_f32(from_bits(0x3F818000)), 0x3F82);  // tie, odd rounds up
  EXPECT_EQ(bf16_from_f32(from_bits(0x3F808001)), 0x3F81);
  EXPECT_EQ(bf16_from_f32(from_bits(0x7F7F0000)), 0x7F7F);  // max bf16
  EXPECT_EQ(bf16_from_f32(from_bits(0x7F7F7FFF)), 0x7F7F);
  EXPECT_EQ(bf16_from_f32(from_bits(0x7F7F8000)), 0x7F80);  // tie past max (odd) -> inf
  EXPECT_EQ(bf16_from_f32(std::numeric_limits<float>::max()), 0x7F80);
  EXPECT_EQ(bf16_from_f32(-std::numeric_limits<float>::max()), 0xFF80);
  EXPECT_EQ(bf16_from_f32(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(bf16_from_f32(-0.0f), 0x8000);
  EXPECT_EQ(bf16_from_f32(from_bits(0x00000001)), 0x0000);  // smallest f32 subnormal
  EXPECT_EQ(bf16_from_f32(from_bits(0x00008000)), 0x0000);  // tie on the subnormal grid
  EXPECT_EQ(bf16_from_f32(from_bits(0x00018000)), 0x0002);
  EXPECT_EQ(bf16_from_f32(from_bits(0x007FFFFF)), 0x0080);  // rounds up into the normals
  EXPECT_EQ(bf16_from_f32(from_bits(0x80008001)), 0x8001);
}

TEST(FloatFormats, F32NaNBecomesAQuietBfloatNaNWithItsSign) {
  // c10 round_to_nearest_even emits a fixed quiet NaN; this API keeps the sign (0x7FC0|sign).
  for (uint32_t u : {0x7FC00000u, 0x7F800001u, 0x7FFFFFFFu, 0x7F80FFFFu, 0x7FBFFFFFu})
    EXPECT_EQ(bf16_from_f32(from_bits(u)), 0x7FC0) << std::hex << u;
  for (uint32_t u : {0xFFC00000u, 0xFF800001u, 0xFFFFFFFFu})
    EXPECT_EQ(bf16_from_f32(from_bits(u)), 0xFFC0) << std::hex << u;
}

TEST(FloatFormats, F32ToHalfMatchesTheNearestCodeReference) {
  std::vector<float> xs;
  std::mt19937 rng(4242);
  for (int i = 0; i < 300000; ++i) xs.push_back(from_bits(rng()));
  for (int i = 0; i < 300000; ++i)  // |x| in [2^-27, 2^17): all of the half range and a bit beyond
    xs.push_back(std::ldexp(1.0f + static_cast<float>(rng() % (1u << 23)) / (1u << 23), static_cast<int>(rng() % 44) - 27));
  // Every half midpoint, on it and one f32 ulp either side.
  const CodeTable& t = f16_table();
  for (size_t i = 0; i + 1 < t.value.size(); ++i) {
    const float mid = static_cast<float>((t.value[i] + t.value[i + 1]) / 2);
    for (float m : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f)}) xs.push_back(m);
  }
  for (float m : {65520.0f, std::nextafter(65520.0f, 0.0f), 65536.0f, 1e30f}) xs.push_back(m);
  for (float x : xs) {
    if (std::isnan(x)) continue;
    ASSERT_EQ(f16_from_f32(x), ref_f16(x)) << x << " bits 0x" << std::hex << bits(x);
    ASSERT_EQ(f16_from_f32(-x), ref_f16(-static_cast<double>(x))) << -x;
  }
}

TEST(FloatFormats, F32ToHalfEdgeCases) {
  EXPECT_EQ(f16_from_f32(65504.0f), 0x7BFF);
  EXPECT_EQ(f16_from_f32(65519.99f), 0x7BFF);
  EXPECT_EQ(f16_from_f32(65520.0f), 0x7C00);  // tie with odd max -> inf
  EXPECT_EQ(f16_from_f32(-1e10f), 0xFC00);
  EXPECT_EQ(f16_from_f32(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(f16_from_f32(std::ldexp(1.0f, -25)), 0x0000);          // tie to even zero
  EXPECT_EQ(f16_from_f32(-std::ldexp(1.0f, -25)), 0x8000);
  EXPECT_EQ(f16_from_f32(std::ldexp(3.0f, -25)), 0x0002);          // 1.5 ulp tie -> 2
  EXPECT_EQ(f16_from_f32(std::ldexp(1.0f, -14)), 0x0400);          // smallest normal
  EXPECT_EQ(f16_from_f32(std::ldexp(1.0f, -14) - std::ldexp(1.0f, -25)), 0x0400);  // tie, odd 0x3FF up
  EXPECT_EQ(f16_from_f32(1.0f + std::ldexp(1.0f, -11)), 0x3C00);
  EXPECT_EQ(f16_from_f32(1.0f + std::ldexp(3.0f, -11)), 0x3C02);
  // NaN: quieted, sign and top payload bits kept (as torch's F16C-based CPU cast does).
  EXPECT_EQ(f16_from_f32(from_bits(0x7FC00000)), 0x7E00);
  EXPECT_EQ(f16_from_f32(from_bits(0xFF800001)), 0xFE00);
  EXPECT_EQ(f16_from_f32(from_bits(0x7FFFE000)), 0x7FFF);
}

// ---------------------------------------------------------------------------------------------
// PyTorch goldens (testdata/float_formats/make_goldens.py)
// ---------------------------------------------------------------------------------------------

TEST(FloatFormats, EveryBfloatAndHalfPatternCastsToFp8ExactlyAsTorch) {
  // The goldens come from torch 2.15, whose e4m3fn cast saturates (e4m3fn_from_f32_sat).
  struct G { const char* file; bool from_bf16; uint8_t (*cast)(float); };
  const G gs[] = {{"bf16_to_e4m3fn.bin", true, e4m3fn_from_f32_sat}, {"bf16_to_e5m2.bin", true, e5m2_from_f32},
                  {"f16_to_e4m3fn.bin", false, e4m3fn_from_f32_sat}, {"f16_to_e5m2.bin", false, e5m2_from_f32}};
  for (const G& g : gs) {
    const std::vector<uint8_t> want = golden(g.file);
    ASSERT_EQ(want.size(), 65536u) << g.file;
    int mismatches = 0;
    for (uint32_t h = 0; h < 65536; ++h) {
      const float x = g.from_bf16 ? f32_from_bf16(static_cast<uint16_t>(h)) : f32_from_f16(static_cast<uint16_t>(h));
      const uint8_t got = g.cast(x);
      if (got != want[h] && ++mismatches <= 5)
        ADD_FAILURE() << g.file << ": input 0x" << std::hex << h << " torch 0x" << int(want[h]) << " got 0x" << int(got);
    }
    EXPECT_EQ(mismatches, 0) << g.file;
  }
}

// The non-saturating (pre-#178817) cast equals torch 2.15 everywhere except on finite overflow
// and +-inf, where it gives the NaN code instead of +-448.
uint8_t expected_nonsaturating(float x, uint8_t torch_sat) {
  if (!std::isnan(x) && std::fabs(x) > 464.0f) {
    EXPECT_EQ(torch_sat & 0x7F, 0x7E) << x;
    return torch_sat | 0x7F;
  }
  return torch_sat;
}

TEST(FloatFormats, NonSaturatingE4M3FNDiffersFromTorchGoldensOnlyOnOverflow) {
  int overflow_inputs = 0;
  for (const char* file : {"bf16_to_e4m3fn.bin", "f16_to_e4m3fn.bin"}) {
    const std::vector<uint8_t> want = golden(file);
    ASSERT_EQ(want.size(), 65536u) << file;
    const bool from_bf16 = file[0] == 'b';
    for (uint32_t h = 0; h < 65536; ++h) {
      const float x = from_bf16 ? f32_from_bf16(static_cast<uint16_t>(h)) : f32_from_f16(static_cast<uint16_t>(h));
      if (!std::isnan(x) && std::fabs(x) > 464.0f) ++overflow_inputs;
      ASSERT_EQ(e4m3fn_from_f32(x), expected_nonsaturating(x, want[h])) << file << " input 0x" << std::hex << h;
    }
  }
  EXPECT_GT(overflow_inputs, 1000);  // the overflow region was exercised
}

TEST(FloatFormats, TrickyF32ValuesCastExactlyAsTorch) {
  const std::vector<uint8_t> g = golden("f32_tricky.bin");
  ASSERT_GT(g.size(), 0u);
  ASSERT_EQ(g.size() % 12, 0u);
  int nan_rows = 0;
  for (size_t off = 0; off < g.size(); off += 12) {
    uint32_t u; uint16_t bf, hf;
    std::memcpy(&u, &g[off], 4);
    std::memcpy(&bf, &g[off + 4], 2);
    std::memcpy(&hf, &g[off + 6], 2);
    const uint8_t e4 = g[off + 8], e5 = g[off + 9];
    const float x = from_bits(u);
    if (std::isnan(x)) {
      // torch's vectorized CPU bf16 cast writes 0xFFFF for every NaN, c10's scalar rule 0x7FC0;
      // neither is a value anyone can rely on. Just require a NaN of the right sign here.
      ++nan_rows;
      EXPECT_TRUE(std::isnan(f32_from_bf16(bf16_from_f32(x))));
      EXPECT_EQ(bf16_from_f32(x) & 0x8000, (u >> 16) & 0x8000);
    } else {
      EXPECT_EQ(bf16_from_f32(x), bf) << "f32 bits 0x" << std::hex << u;
    }
    EXPECT_EQ(f16_from_f32(x), hf) << "f32 bits 0x" << std::hex << u;
    EXPECT_EQ(e4m3fn_from_f32_sat(x), e4) << "f32 bits 0x" << std::hex << u;
    EXPECT_EQ(e4m3fn_from_f32(x), expected_nonsaturating(x, e4)) << "f32 bits 0x" << std::hex << u;
    EXPECT_EQ(e5m2_from_f32(x), e5) << "f32 bits 0x" << std::hex << u;
  }
  EXPECT_GT(nan_rows, 0);
}

// ---------------------------------------------------------------------------------------------
// decode_to_f32
// ---------------------------------------------------------------------------------------------

// Bytes of n elements of dtype t at an odd offset in a buffer (so loads are unaligned), with the
// expected f32 of each, generated from the references above.
struct Encoded {
  std::vector<uint8_t> buf;  // buf[1..] holds the elements
  std::vector<double> want;
};

Encoded make_input(DType t, uint64_t n, std::mt19937& rng) {
  const size_t esize = static_cast<size_t>(dtype_bits(t) / 8);
  Encoded e;
  e.buf.assign(1 + n * esize, 0);
  for (uint64_t i = 0; i < n; ++i) {
    uint8_t* p = e.buf.data() + 1 + i * esize;
    const uint64_t r = (static_cast<uint64_t>(rng()) << 32) | rng();
    std::memcpy(p, &r, esize);  // random bit pattern of the element's width
    switch (t) {
      case DType::BF16: { uint16_t h; std::memcpy(&h, p, 2); e.want.push_back(ref_decode_bf16(h)); break; }
      case DType::F16: { uint16_t h; std::memcpy(&h, p, 2); e.want.push_back(ref_decode_f16(h)); break; }
      case DType::F8_E4M3: e.want.push_back(ref_decode_e4m3fn(*p)); break;
      case DType::F8_E5M2: e.want.push_back(ref_decode_e5m2(*p)); break;
      case DType::I8: e.want.push_back(static_cast<int8_t>(*p)); break;
      case DType::U8: e.want.push_back(*p); break;
      case DType::BOOL: *p &= 1; e.want.push_back(*p); break;
      case DType::I16: { int16_t v; std::memcpy(&v, p, 2); e.want.push_back(v); break; }
      case DType::F32: { float v; std::memcpy(&v, p, 4); e.want.push_back(v); break; }
      case DType::I32: {
        // Small ints (exact) on even elements, full-range on odd ones (RNE; checked separately).
        int32_t v = static_cast<int32_t>(r);
        if (i % 2 == 0) v %= (1 << 24);
        std::memcpy(p, &v, 4);
        e.want.push_back(i % 2 == 0 ? v : static_cast<double>(static_cast<float>(v)));
        break;
      }
      case DType::I64: {
        int64_t v = static_cast<int64_t>(r) % (int64_t{1} << 24);
        std::memcpy(p, &v, 8);
        e.want.push_back(static_cast<double>(v));
        break;
      }
      case DType::F64: {
        double v = std::ldexp(static_cast<double>(r >> 11) / 9007199254740992.0, static_cast<int>(r % 300) - 150);
        if (r & 1) v = -v;
        std::memcpy(p, &v, 8);
        e.want.push_back(static_cast<double>(static_cast<float>(v)));  // the C++ cast is RNE
        break;
      }
      default: ADD_FAILURE();
    }
  }
  return e;
}

TEST(FloatFormats, DecodeToF32HandlesEveryDtypeAtSizesThatHitBlockRemainders) {
  std::mt19937 rng(99);
  const DType types[] = {DType::F32, DType::F16, DType::BF16, DType::F64, DType::F8_E4M3, DType::F8_E5M2,
                         DType::I8, DType::U8, DType::I16, DType::I32, DType::I64, DType::BOOL};
  for (DType t : types) {
    for (uint64_t n : {0u, 1u, 7u, 63u, 64u, 65u, 127u, 128u, 129u, 1000u, 4099u}) {
      Encoded e = make_input(t, n, rng);
      std::vector<float> out(n + 1, 12345.0f);  // sentinel past the end
      ASSERT_TRUE(decode_to_f32(t, e.buf.data() + 1, n, out.data())) << dtype_name(t);
      for (uint64_t i = 0; i < n; ++i)
        ASSERT_TRUE(same_float(e.want[i], out[i])) << dtype_name(t) << " n=" << n << " i=" << i;
      EXPECT_EQ(out[n], 12345.0f) << "wrote past the end: " << dtype_name(t);
    }
  }
}

TEST(FloatFormats, DecodeToF32RoundsWideValuesToNearestEven) {
  // F64: 1 + 2^-24 is a tie between 1 and 1 + 2^-23 -> 1; 1 + 3*2^-24 -> 1 + 2^-22.
  const double d[] = {1.0 + std::ldexp(1.0, -24), 1.0 + std::ldexp(3.0, -24), 1e300, -1e300, 1e-300,
                      std::ldexp(1.0, -149) * 0.5, std::ldexp(1.0, -149) * 1.5};
  const float dw[] = {1.0f, 1.0f + std::ldexp(1.0f, -22), INFINITY, -INFINITY, 0.0f, 0.0f, std::ldexp(1.0f, -148)};
  float out[7];
  ASSERT_TRUE(decode_to_f32(DType::F64, reinterpret_cast<const uint8_t*>(d), 7, out));
  for (int i = 0; i < 7; ++i) EXPECT_EQ(out[i], dw[i]) << i;
  // Integers beyond 2^24: float(value), RNE.
  const int64_t l[] = {(int64_t{1} << 53) + 1, 16777217, 16777219, INT64_MIN, INT64_MAX};
  const float lw[] = {9007199254740992.0f, 16777216.0f, 16777220.0f, -9223372036854775808.0f, 9223372036854775808.0f};
  ASSERT_TRUE(decode_to_f32(DType::I64, reinterpret_cast<const uint8_t*>(l), 5, out));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(out[i], lw[i]) << i;
  const int32_t w[] = {16777217, -16777219, INT32_MIN};
  ASSERT_TRUE(decode_to_f32(DType::I32, reinterpret_cast<const uint8_t*>(w), 3, out));
  EXPECT_EQ(out[0], 16777216.0f);
  EXPECT_EQ(out[1], -16777220.0f);
  EXPECT_EQ(out[2], -2147483648.0f);
  const uint8_t b[] = {0x80, 0x7F, 0xFF};
  ASSERT_TRUE(decode_to_f32(DType::I8, b, 3, out));
  EXPECT_EQ(out[0], -128.0f); EXPECT_EQ(out[1], 127.0f); EXPECT_EQ(out[2], -1.0f);
  ASSERT_TRUE(decode_to_f32(DType::U8, b, 3, out));
  EXPECT_EQ(out[0], 128.0f); EXPECT_EQ(out[2], 255.0f);
  ASSERT_TRUE(decode_to_f32(DType::BOOL, b, 1, out));
  EXPECT_EQ(out[0], 1.0f);
}

TEST(FloatFormats, DecodeToF32RefusesDtypesItCannotDecode) {
  uint8_t src[16] = {};
  float out[4];
  for (DType t : {DType::F4, DType::F6_E2M3, DType::F6_E3M2, DType::F8_E8M0, DType::F8_E4M3FNUZ,
                  DType::F8_E5M2FNUZ, DType::C64, DType::U16, DType::U32, DType::U64})
    EXPECT_FALSE(decode_to_f32(t, src, 1, out)) << dtype_name(t);
}

// ---------------------------------------------------------------------------------------------
// round_to_dtype, store_float, dtype_eps
// ---------------------------------------------------------------------------------------------

TEST(FloatFormats, RoundToDtypeGivesTheValueATorchTensorOfThatDtypeHolds) {
  EXPECT_EQ(round_to_dtype(DType::F32, 0.1f), 0.1f);
  EXPECT_EQ(round_to_dtype(DType::BF16, 0.1f), 0.10009765625f);     // bf16 0x3DCD
  EXPECT_EQ(round_to_dtype(DType::F16, 0.1f), 0.0999755859375f);    // f16 0x2E66
  EXPECT_EQ(round_to_dtype(DType::BF16, 1.0f / 448.0f), 0.002227783203125f);  // bf16 0x3B12
  EXPECT_EQ(round_to_dtype(DType::F16, 70000.0f), INFINITY);
  EXPECT_EQ(round_to_dtype(DType::BF16, 3.0e38f), from_bits(0x7F620000));  // torch: bf16 0x7F62
}

TEST(FloatFormats, StoreFloatWritesLittleEndianBytesOfTheDtype) {
  uint8_t b[8];
  store_float(DType::BF16, 1.0f, b);
  EXPECT_EQ(b[0], 0x80); EXPECT_EQ(b[1], 0x3F);
  store_float(DType::F16, -2.0f, b);
  EXPECT_EQ(b[0], 0x00); EXPECT_EQ(b[1], 0xC0);
  store_float(DType::F32, 1.0f, b);
  EXPECT_EQ(b[0], 0x00); EXPECT_EQ(b[1], 0x00); EXPECT_EQ(b[2], 0x80); EXPECT_EQ(b[3], 0x3F);
  store_float(DType::F64, 1.0f, b);
  EXPECT_EQ(b[6], 0xF0); EXPECT_EQ(b[7], 0x3F);
  store_float(DType::F8_E4M3, 448.0f, b);
  EXPECT_EQ(b[0], 0x7E);
  store_float(DType::F8_E5M2, 1.0f, b);
  EXPECT_EQ(b[0], 0x3C);
  // store then decode gives the value back for representable inputs.
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::F64}) {
    const float v = round_to_dtype(t == DType::F64 ? DType::F32 : t, 0.3f);
    store_float(t, v, b);
    float back;
    ASSERT_TRUE(decode_to_f32(t, b, 1, &back));
    EXPECT_EQ(back, v) << dtype_name(t);
  }
}

TEST(FloatFormats, DtypeEpsMatchesTorchFinfo) {
  // torch.finfo(torch.bfloat16).eps == 0.0078125, float16 0.0009765625, float32 1.1920928955078125e-07.
  EXPECT_EQ(dtype_eps(DType::BF16), 0.0078125f);
  EXPECT_EQ(dtype_eps(DType::F16), 0.0009765625f);
  EXPECT_EQ(dtype_eps(DType::F32), 1.1920928955078125e-07f);
  EXPECT_EQ(dtype_eps(DType::F8_E4M3), 0.125f);
  EXPECT_EQ(dtype_eps(DType::F8_E5M2), 0.25f);
  EXPECT_EQ(static_cast<double>(dtype_eps(DType::F64)), 2.220446049250313e-16);
}

// Bit patterns by hand: an exponent field of all ones is Inf or NaN (f32, bf16, f16, e5m2); e4m3fn
// has no Inf and one NaN code per sign (0x7F / 0xFF).
TEST(FloatFormats, FirstNonfiniteFindsTheFirstNanOrInfOfEveryFloatDtype) {
  auto at = [](DType t, std::vector<uint8_t> bytes, uint64_t n) { return first_nonfinite_f32(t, bytes.data(), n); };
  // 200 elements (past one 64-element block), the first bad one at index 150 then one at 170.
  auto planted = [&](DType t, size_t elem, std::vector<uint8_t> bad) {
    std::vector<uint8_t> b(200 * elem, 0);
    std::copy(bad.begin(), bad.end(), b.begin() + 150 * elem);
    std::copy(bad.begin(), bad.end(), b.begin() + 170 * elem);
    return at(t, b, 200);
  };
  EXPECT_EQ(planted(DType::F32, 4, {0x00, 0x00, 0x80, 0xFF}), 150);  // -inf
  EXPECT_EQ(planted(DType::F32, 4, {0x01, 0x00, 0x80, 0x7F}), 150);  // NaN
  EXPECT_EQ(planted(DType::BF16, 2, {0xC0, 0x7F}), 150);             // NaN
  EXPECT_EQ(planted(DType::BF16, 2, {0x80, 0x7F}), 150);             // +inf
  EXPECT_EQ(planted(DType::F16, 2, {0x00, 0x7C}), 150);              // +inf
  EXPECT_EQ(planted(DType::F8_E4M3, 1, {0xFF}), 150);                // -NaN
  EXPECT_EQ(planted(DType::F8_E5M2, 1, {0x7C}), 150);                // +inf
  // Largest finite values are not flagged.
  EXPECT_EQ(at(DType::F32, {0xFF, 0xFF, 0x7F, 0x7F}, 1), -1);
  EXPECT_EQ(at(DType::BF16, {0x7F, 0x7F}, 1), -1);
  EXPECT_EQ(at(DType::F16, {0xFF, 0x7B}, 1), -1);
  EXPECT_EQ(at(DType::F8_E4M3, {0x7E}, 1), -1);  // 448
  EXPECT_EQ(at(DType::F8_E5M2, {0x7B}, 1), -1);  // 57344
  // F64: what the value becomes in f32. 3.4028235e38 (between FLT_MAX = 3.40282347e38 and the
  // tie FLT_MAX + half an ulp = 3.40282357e38) rounds down to FLT_MAX; 3.5e38 and 1e39 overflow
  // to inf; NaN stays NaN.
  auto f64 = [&](std::vector<double> v) {
    std::vector<uint8_t> b(v.size() * 8);
    std::memcpy(b.data(), v.data(), b.size());
    return at(DType::F64, b, v.size());
  };
  EXPECT_EQ(f64({1.0, 3.4028235e38, -3.4028235e38}), -1);
  EXPECT_EQ(f64({1.0, 2.0, 3.5e38}), 2);
  EXPECT_EQ(f64({-1e39, 1.0}), 0);
  EXPECT_EQ(f64({0.0, std::nan("")}), 1);
  // Integers are always finite.
  EXPECT_EQ(at(DType::I32, {0xFF, 0xFF, 0x80, 0x7F}, 1), -1);
  EXPECT_EQ(at(DType::BF16, {}, 0), -1);
}

}  // namespace
}  // namespace qt
