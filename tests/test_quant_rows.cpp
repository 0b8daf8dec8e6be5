// The row kernels of weight quantization (libquant/quant_rows.h): every ISA body this CPU has
// gives the scalar twin's result bit for bit, and the scalar twin gives what the element-wise
// reference (quantize_element; decode + |x| + max) gives. Independent reference: quantize_element
// and decode_to_f32, which the FP8/INT8 goldens from compressed-tensors already pin down.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "libquant/cpu_isa.h"
#include "libquant/float_formats.h"
#include "libquant/microscale.h"
#include "libquant/quant_rows.h"
#include "libquant/quantize.h"
#include "libquant/schemes.h"
#include "tests/support/test_support.h"

namespace qt {
namespace {

using test::for_each_isa;

TEST(QuantRows, E2m1CodesEqualTheScalarNvfp4StepForEveryBf16PatternAndEveryIsa) {
  // All 65536 patterns at an odd byte offset, under divisors that put the quotient exactly on
  // the rounding thresholds (1.0, 0.5: x/d = 0.25, 0.75, ... for bf16 x), far above 6, into f32
  // subnormals, and to Inf / 0; a NaN divisor too. The reference is the scalar step written out
  // here: clamp the f32 quotient to [-6, 6], then e2m1_from_f32 (pinned by the NVFP4 goldens).
  std::vector<uint8_t> raw(1 + 65536 * 2);
  for (uint32_t b = 0; b < 65536; ++b) {
    const uint16_t h = static_cast<uint16_t>(b);
    std::memcpy(raw.data() + 1 + 2 * b, &h, 2);
  }
  const uint8_t* x = raw.data() + 1;
  std::vector<float> divisors = {1.0f, 0.5f, 2.0f, 0.0052083335f, 1.3e-3f, 7.5f, 1e-38f, 1e-45f, 3.0e38f, -1.0f, NAN};
  // The divisors NVFP4 itself uses: f32(e4m3 group scale) / global scale (libquant/NUMERICS.md
  // §10.3), for the smallest, a middle and the largest group-scale codes and global scales of a
  // tensor max of 3.0 (896), 0.02 and 40.
  for (uint8_t c : {0x01, 0x20, 0x38, 0x57, 0x71, 0x7E})
    for (float gs : {896.0f, nvfp4_global_scale(0.02f, DType::BF16), nvfp4_global_scale(40.0f, DType::BF16)})
      divisors.push_back(f32_from_e4m3fn(c) / gs);
  for (float d : divisors) {
    std::vector<uint8_t> ref(65536);
    e2m1_codes_bf16_row_ref(x, 65536, d, ref.data());
    for (uint32_t b = 0; b < 65536; ++b)
      ASSERT_EQ(ref[b], e2m1_from_f32(std::clamp(f32_from_bf16(static_cast<uint16_t>(b)) / d, -6.0f, 6.0f)))
          << "pattern 0x" << std::hex << b << " divisor " << d;
    for_each_isa([&](Isa isa) {
      std::vector<uint8_t> got(65536);
      e2m1_codes_bf16_row(x, 65536, d, got.data());
      EXPECT_EQ(got, ref) << isa_name(isa) << " divisor " << d;
      for (int64_t n = 0; n <= 40; ++n) {  // every tail length; exactly n codes written
        std::vector<uint8_t> part(64, 0xAB);
        e2m1_codes_bf16_row(x + 2 * 1000, n, d, part.data());
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(part[i], ref[1000 + i]) << isa_name(isa) << " n " << n;
        for (int64_t i = n; i < 64; ++i) ASSERT_EQ(part[i], 0xAB) << isa_name(isa) << " wrote past n " << n;
      }
    });
  }
}

TEST(QuantRows, Bf16CodesEqualTheElementReferenceForEveryBf16PatternAndEveryIsa) {
  // All 65536 patterns (NaNs, infinities, subnormals, both zeros), stored at an odd byte offset
  // so that the loads are unaligned, under scales that put the quotient in every regime: inside
  // the code range, clamped, subnormal in bf16, overflowing f32 to Inf.
  std::vector<uint8_t> raw(1 + 65536 * 2);
  for (uint32_t b = 0; b < 65536; ++b) {
    const uint16_t h = static_cast<uint16_t>(b);
    std::memcpy(raw.data() + 1 + 2 * b, &h, 2);
  }
  const uint8_t* x = raw.data() + 1;
  for (QuantType t : {QuantType::Float8E4M3, QuantType::Int8, QuantType::Int4}) {
    const uint8_t* table = code_table(DType::BF16, t);
    for (float s : {1.0f, 0.0078125f, 3.0517578e-05f, 0.11279297f, 2.5f, 1e-30f, 3.0e38f}) {
      std::vector<uint8_t> ref(65536);
      quantize_bf16_row_ref(x, 65536, s, table, ref.data());
      for (uint32_t b = 0; b < 65536; ++b)
        ASSERT_EQ(ref[b], quantize_element(f32_from_bf16(static_cast<uint16_t>(b)), s, t, DType::BF16))
            << "pattern 0x" << std::hex << b << " scale " << s;
      for_each_isa([&](Isa isa) {
        std::vector<uint8_t> got(65536);
        quantize_bf16_row(x, 65536, s, table, got.data());
        EXPECT_EQ(got, ref) << isa_name(isa) << " scale " << s;
        // Every tail length (n mod 16 and mod 8), written exactly n codes.
        for (int64_t n = 0; n <= 40; ++n) {
          std::vector<uint8_t> part(64, 0xAB);
          quantize_bf16_row(x + 2 * 1000, n, s, table, part.data());
          for (int64_t i = 0; i < n; ++i) ASSERT_EQ(part[i], ref[1000 + i]) << isa_name(isa) << " n " << n;
          for (int64_t i = n; i < 64; ++i) ASSERT_EQ(part[i], 0xAB) << isa_name(isa) << " wrote past n " << n;
        }
      });
    }
  }
}

TEST(QuantRows, ArithmeticCastEqualsTheElementReferenceForEveryBf16PatternEveryScaleAndEveryIsa) {
  // quantize_bf16_row_cast computes the clamp and cast in the registers instead of the table: the
  // reference is quantize_element itself (pinned by the compressed-tensors FP8 / INT8 goldens).
  // All 65536 patterns at an odd byte offset, under scales that put the quotient inside the
  // code range, into the E4M3 subnormals (x / s below 2^-6 for most patterns at s = 2^7 and 3e2),
  // into saturation (s = 2^-10, 1e-30), to f32 Inf (3e38 with the largest patterns the other way,
  // 1e-40: a subnormal scale), a negative scale, a zero scale (x / 0 = +-Inf, 0 / 0 = NaN) and a
  // NaN scale, plus random scales.
  std::vector<uint8_t> raw(1 + 65536 * 2);
  for (uint32_t b = 0; b < 65536; ++b) {
    const uint16_t h = static_cast<uint16_t>(b);
    std::memcpy(raw.data() + 1 + 2 * b, &h, 2);
  }
  const uint8_t* x = raw.data() + 1;
  std::vector<float> scales = {1.0f, 128.0f, 300.0f, 0.0009765625f, 0.0078125f, 3.0517578e-05f, 0.11279297f,
                               2.5f, 1e-30f, 3.0e38f, 1e-40f, -0.5f, 0.0f, -0.0f, NAN};
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> ex(-40.0f, 40.0f);
  for (int k = 0; k < 6; ++k) scales.push_back(round_to_dtype(DType::BF16, std::exp2(ex(rng))));
  for (QuantType t : {QuantType::Float8E4M3, QuantType::Int8, QuantType::Int4}) {
    for (float s : scales) {
      std::vector<uint8_t> want(65536);
      for (uint32_t b = 0; b < 65536; ++b)
        want[b] = quantize_element(f32_from_bf16(static_cast<uint16_t>(b)), s, t, DType::BF16);
      for_each_isa([&](Isa isa) {
        std::vector<uint8_t> got(65536);
        quantize_bf16_row_cast(x, 65536, s, t, got.data());
        for (uint32_t b = 0; b < 65536; ++b)
          ASSERT_EQ(got[b], want[b]) << isa_name(isa) << " type " << static_cast<int>(t) << " scale " << s
                                     << " pattern 0x" << std::hex << b;
        for (int64_t n = 0; n <= 40; ++n) {  // every tail length; exactly n codes written
          std::vector<uint8_t> part(64, 0xAB);
          quantize_bf16_row_cast(x + 2 * 1000, n, s, t, part.data());
          for (int64_t i = 0; i < n; ++i) ASSERT_EQ(part[i], want[1000 + i]) << isa_name(isa) << " n " << n;
          for (int64_t i = n; i < 64; ++i) ASSERT_EQ(part[i], 0xAB) << isa_name(isa) << " wrote past n " << n;
        }
      });
    }
  }
}

TEST(QuantRows, ArithmeticE4m3CastGivesTheHandDerivedCodesAtTheEdges) {
  // Scale 1, so the code is E4M3(clamp(x)) of the bf16 value itself. Derived by hand from the
  // E4M3 layout (bias 7, 3 mantissa bits, subnormal step 2^-9, largest 448 = 0x7E, NaN 0x7F).
  struct Case { uint16_t bf16; uint8_t code; };
  const Case cases[] = {
      {0x0000, 0x00},  // +0
      {0x8000, 0x80},  // -0 keeps its sign
      {0x3B00, 0x01},  // 2^-9: the smallest subnormal
      {0x3A80, 0x00},  // 2^-10: half the step, a tie, to even 0
      {0x3B40, 0x02},  // 3 * 2^-10 = 1.5 steps, a tie, to even 2
      {0x3C60, 0x07},  // 7 * 2^-9 (0x3C60 = 1.75 * 2^-7): the largest subnormal
      {0x3C80, 0x08},  // 2^-6: the smallest normal
      {0x3F80, 0x38},  // 1.0: exponent 7, mantissa 0
      {0x3F90, 0x39},  // 1.125 = 1 + 1/8: exponent 7, mantissa 1
      {0x43E0, 0x7E},  // 448
      {0x43E8, 0x7E},  // 464: clamped to 448 first (unclamped it would round up to the NaN code)
      {0x4400, 0x7E},  // 512: clamped
      {0x7F80, 0x7E},  // +Inf: clamped to 448
      {0xFF80, 0xFE},  // -Inf: -448
      {0x7FC0, 0x7F},  // NaN
      {0xFFC1, 0xFF},  // -NaN keeps its sign
  };
  for_each_isa([&](Isa isa) {
    std::vector<uint8_t> raw(2 * 32);
    for (int rep = 0; rep < 2; ++rep)
      for (size_t i = 0; i < std::size(cases); ++i) std::memcpy(raw.data() + 2 * (rep * 16 + i), &cases[i].bf16, 2);
    std::vector<uint8_t> got(32);
    quantize_bf16_row_cast(raw.data(), 32, 1.0f, QuantType::Float8E4M3, got.data());
    for (size_t i = 0; i < 32; ++i)
      EXPECT_EQ(got[i], cases[i % 16].code) << isa_name(isa) << " bf16 0x" << std::hex << cases[i % 16].bf16;
  });
}

TEST(QuantRows, AbsmaxBitsEqualsTheDecodedMaximumAndFindsTheFirstInfOrNaN) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  for (DType m : {DType::BF16, DType::F16}) {
    const uint16_t special = m == DType::BF16 ? 0x7F80 : 0x7C00;
    const uint16_t inf = special, nan = m == DType::BF16 ? 0xFFC1 : 0xFE01;  // -NaN with payload
    for (int64_t n : {0, 1, 7, 8, 15, 16, 17, 31, 33, 100, 1000}) {
      for (int64_t bad_at : {int64_t(-1), int64_t(0), n / 2, n - 1}) {
        for (uint16_t bad : {inf, nan}) {
          if (n == 0 && bad_at >= 0) continue;
          std::vector<uint8_t> raw(1 + 2 * static_cast<size_t>(n));
          std::vector<float> dec(static_cast<size_t>(n));
          for (int64_t i = 0; i < n; ++i) {
            float v = nd(rng) * (i % 37 == 0 ? 100.0f : 1.0f);
            uint16_t h = m == DType::BF16 ? bf16_from_f32(v) : f16_from_f32(v);
            if (i == bad_at) h = bad;
            if (bad_at >= 0 && i == n - 1 && n > 2) h = inf;  // a later Inf never moves the first index
            std::memcpy(raw.data() + 1 + 2 * i, &h, 2);
            dec[i] = std::fabs(m == DType::BF16 ? f32_from_bf16(h) : f32_from_f16(h));
          }
          // The reference: decoded |x| with NaN propagating; first index of a non-finite value.
          float want = 0.0f;
          bool saw_nan = false;
          int64_t first = -1;
          for (int64_t i = 0; i < n; ++i) {
            if (!std::isfinite(dec[i]) && first < 0) first = i;
            if (std::isnan(dec[i])) saw_nan = true;
            else want = std::max(want, dec[i]);
          }
          for_each_isa([&](Isa isa) {
            int64_t got_first = -2;
            const uint16_t b = absmax_bits16(raw.data() + 1, n, special, &got_first);
            const float got = m == DType::BF16 ? f32_from_bf16(b) : f32_from_f16(b);
            EXPECT_EQ(got_first, first) << isa_name(isa) << " n " << n << " bad at " << bad_at;
            if (saw_nan) EXPECT_TRUE(std::isnan(got)) << isa_name(isa) << " n " << n;
            else EXPECT_EQ(got, want) << isa_name(isa) << " n " << n << " bad at " << bad_at;
          });
        }
      }
    }
  }
}

TEST(QuantRows, QuantizeWeightGivesTheSameCodesAndScalesOnEveryIsa) {
  // The whole weight path (both passes) on a bf16 and an f16 tensor, per tensor / channel / group.
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  for (DType m : {DType::BF16, DType::F16}) {
    std::vector<uint16_t> bits(48 * 256);
    for (auto& b : bits) b = m == DType::BF16 ? bf16_from_f32(nd(rng)) : f16_from_f32(nd(rng));
    TensorView v;
    v.name = "w"; v.dtype = m; v.shape = {48, 256};
    v.bytes = {reinterpret_cast<const uint8_t*>(bits.data()), bits.size() * 2};
    for (Strategy st : {Strategy::Tensor, Strategy::Channel, Strategy::Group}) {
      QuantArgs a{QuantType::Float8E4M3, st, st == Strategy::Group ? 64 : 0, 0, 0, false};
      isa_cap_for_tests(Isa::Scalar);
      const QuantizedWeight ref = quantize_weight(v, a);
      isa_cap_for_tests(Isa::Avx512);
      for_each_isa([&](Isa isa) {
        const QuantizedWeight q = quantize_weight(v, a);
        EXPECT_EQ(q.codes, ref.codes) << isa_name(isa);
        EXPECT_EQ(q.scale_bytes, ref.scale_bytes) << isa_name(isa);
        EXPECT_EQ(q.amax, ref.amax) << isa_name(isa);
      });
    }
  }
}

TEST(QuantRows, MicroscaleWeightsGiveTheSameCodesAndScalesOnEveryIsa) {
  // NVFP4 (e2m1_codes_bf16_row) and MXFP4 / MXFP8 (quantize_bf16_row) on a bf16 tensor with
  // outlier columns, against the scalar path.
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  std::vector<uint16_t> bits(40 * 512);
  for (size_t i = 0; i < bits.size(); ++i) bits[i] = bf16_from_f32(nd(rng) * (i % 512 == 7 ? 40.0f : 1.0f));
  TensorView v;
  v.name = "w"; v.dtype = DType::BF16; v.shape = {40, 512};
  v.bytes = {reinterpret_cast<const uint8_t*>(bits.data()), bits.size() * 2};
  for (const char* name : {"nvfp4a16", "mxfp4a16", "mxfp8"}) {
    const QuantArgs a = find_scheme(name)->weights;
    isa_cap_for_tests(Isa::Scalar);
    const QuantizedWeight ref = quantize_weight(v, a);
    isa_cap_for_tests(Isa::Avx512);
    for_each_isa([&](Isa isa) {
      const QuantizedWeight q = quantize_weight(v, a);
      EXPECT_EQ(q.codes, ref.codes) << name << " " << isa_name(isa);
      EXPECT_EQ(q.scale_bytes, ref.scale_bytes) << name << " " << isa_name(isa);
      EXPECT_EQ(q.global_scale, ref.global_scale) << name << " " << isa_name(isa);
    });
  }
}

}  // namespace
}  // namespace qt
