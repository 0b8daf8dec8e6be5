// Weight quantization against the hand-derived vectors of libquant/NUMERICS.md §8 (derived
// there from the PyTorch/compressed-tensors op sequence, independently of this code) and
// structural properties. Byte equality with the real compressed-tensors package is in
// test_ct_goldens.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "libquant/float_formats.h"
#include "libquant/error.h"
#include "libquant/quantize.h"

namespace qt {
namespace {

// A 2-D BF16 view over values rounded to bf16 (the test owns the storage).
struct Bf16Tensor {
  std::vector<uint16_t> bits;
  TensorView view;
  Bf16Tensor(std::vector<float> v, std::vector<int64_t> shape) {
    for (float x : v) bits.push_back(bf16_from_f32(x));
    view.name = "w";
    view.dtype = DType::BF16;
    view.shape = std::move(shape);
    view.bytes = {reinterpret_cast<const uint8_t*>(bits.data()), bits.size() * 2};
  }
};

std::vector<uint16_t> scale_bits(const QuantizedWeight& q) {
  std::vector<uint16_t> s(q.scale_bytes.size() / 2);
  std::memcpy(s.data(), q.scale_bytes.data(), q.scale_bytes.size());
  return s;
}

QuantArgs fp8(Strategy s) { return {QuantType::Float8E4M3, s, 0, 0, 0, false}; }
QuantArgs int8(Strategy s) { return {QuantType::Int8, s, 0, 0, 0, false}; }

TEST(ScaleFromAmax, MatchesTheS1TableForBf16) {
  // libquant/NUMERICS.md §8 "S1, scales from amax": ct FP8 bf16(amax/448), INT8 bf16(amax/127.5).
  struct Row { float amax; uint16_t fp8, int8; };
  for (Row r : {Row{3.5f, 0x3C00, 0x3CE1}, Row{1.0f, 0x3B12, 0x3C01}, Row{3.0f, 0x3BDB, 0x3CC1},
                Row{0.5f, 0x3A92, 0x3B81}, Row{12.25f, 0x3CE0, 0x3DC5}, Row{0.0234375f, 0x385B, 0x3941}}) {
    EXPECT_EQ(bf16_from_f32(scale_from_amax(r.amax, QuantType::Float8E4M3, DType::BF16)), r.fp8) << r.amax;
    EXPECT_EQ(bf16_from_f32(scale_from_amax(r.amax, QuantType::Int8, DType::BF16)), r.int8) << r.amax;
  }
}

TEST(ScaleFromAmax, AllZeroGroupGetsTheDtypeEpsilon) {
  // Z1: bf16 2^-7, fp16 2^-10, fp32 2^-23.
  EXPECT_EQ(scale_from_amax(0.0f, QuantType::Float8E4M3, DType::BF16), 0.0078125f);
  EXPECT_EQ(scale_from_amax(0.0f, QuantType::Int8, DType::F16), std::ldexp(1.0f, -10));
  EXPECT_EQ(scale_from_amax(0.0f, QuantType::Int8, DType::F32), std::ldexp(1.0f, -23));
}

TEST(QuantizeWeight, PerTensorFp8MatchesVectorP1) {
  Bf16Tensor w({-3.5f, 1.0f, 0.25f, 2.0f, -0.001f, 0.0f, 3.0f, -1.1f}, {1, 8});
  QuantizedWeight q = quantize_weight(w.view, fp8(Strategy::Tensor));
  EXPECT_EQ(q.scale_shape, (std::vector<int64_t>{1}));
  EXPECT_EQ(scale_bits(q), (std::vector<uint16_t>{0x3C00}));
  EXPECT_EQ(q.codes, (std::vector<uint8_t>{0xFE, 0x70, 0x60, 0x78, 0xA0, 0x00, 0x7C, 0xF1}));
}

TEST(QuantizeWeight, PerTensorFp8RoundsTheQuotientToBf16FirstP2) {
  // amax 1.0: 1.0/scale = 448.88 rounds to bf16 448 -> 0x7E (not NaN, not clamped from above).
  Bf16Tensor w({1.0f, -1.0f, 0.5f, 0.25f, 0.1f, 0.003f}, {1, 6});
  QuantizedWeight q = quantize_weight(w.view, fp8(Strategy::Tensor));
  EXPECT_EQ(scale_bits(q), (std::vector<uint16_t>{0x3B12}));
  EXPECT_EQ(q.codes, (std::vector<uint8_t>{0x7E, 0xFE, 0x76, 0x6E, 0x63, 0x3B}));
}

TEST(QuantizeWeight, PerChannelInt8AndFp8MatchVectorC1) {
  Bf16Tensor w({0.5f, -0.25f, 0.125f, 0.0625f, 10.0f, -3.0f, 7.5f, 1.0f}, {2, 4});
  QuantizedWeight qi = quantize_weight(w.view, int8(Strategy::Channel));
  EXPECT_EQ(qi.scale_shape, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(scale_bits(qi), (std::vector<uint16_t>{0x3B81, 0x3DA1}));
  std::vector<int8_t> codes(qi.codes.begin(), qi.codes.end());
  // -63.5 ties to even -64; 95.4 -> bf16 95.5 -> 96 (a single-rounding implementation gives 95).
  EXPECT_EQ(codes, (std::vector<int8_t>{127, -64, 32, 16, 127, -38, 96, 13}));
  QuantizedWeight qf = quantize_weight(w.view, fp8(Strategy::Channel));
  EXPECT_EQ(scale_bits(qf), (std::vector<uint16_t>{0x3A92, 0x3CB7}));
  EXPECT_EQ(qf.codes, (std::vector<uint8_t>{0x7E, 0xF6, 0x6E, 0x66, 0x7E, 0xF0, 0x7A, 0x63}));
}

TEST(QuantizeWeight, BlockFp8MatchesVectorB1) {
  Bf16Tensor w({1, 2, 0.5f, 0.25f, -4, 0, 0.125f, -0.5f}, {2, 4});
  QuantArgs a{QuantType::Float8E4M3, Strategy::Block, 0, 2, 2, false};
  QuantizedWeight q = quantize_weight(w.view, a);
  EXPECT_EQ(q.scale_shape, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(scale_bits(q), (std::vector<uint16_t>{0x3C12, 0x3A92}));
  EXPECT_EQ(q.codes, (std::vector<uint8_t>{0x6E, 0x76, 0x7E, 0x76, 0xFE, 0x00, 0x6E, 0xFE}));
}

TEST(QuantizeElement, Int8EdgeCasesMatchVectorsD1ToD3) {
  // D1: scale 2.0 (exact): half-even rounding and the asymmetric clamp [-128, 127].
  auto q8 = [](float x, float s) { return static_cast<int8_t>(quantize_element(x, s, QuantType::Int8, DType::BF16)); };
  EXPECT_EQ(q8(-255, 2), -128);
  EXPECT_EQ(q8(255, 2), 127);
  EXPECT_EQ(q8(1, 2), 0);
  EXPECT_EQ(q8(3, 2), 2);
  EXPECT_EQ(q8(5, 2), 2);
  EXPECT_EQ(q8(-5, 2), -2);
  EXPECT_EQ(q8(100, 2), 50);
  EXPECT_EQ(q8(-0.5f, 2), 0);
  // D2: scale 0x3C01.
  const float s2 = f32_from_bf16(0x3C01);
  EXPECT_EQ(q8(1.0f, s2), 127);
  EXPECT_EQ(q8(-1.0f, s2), -127);
  EXPECT_EQ(q8(0.5f, s2), 64);
  EXPECT_EQ(q8(0.25f, s2), 32);
  EXPECT_EQ(q8(f32_from_bf16(bf16_from_f32(0.1f)), s2), 13);
  // D3: 75.5 / 0.75 = 100.667 -> bf16 100.5 -> half-even 100 (single rounding gives 101).
  EXPECT_EQ(q8(75.5f, 0.75f), 100);
}

TEST(QuantizeElement, Fp8DoubleRoundingMatchesVectorD4) {
  // 1/0.84375 = 1.18519 -> bf16 1.1875 (a midpoint) -> ties to even 0x3A.
  EXPECT_EQ(quantize_element(1.0f, 0.84375f, QuantType::Float8E4M3, DType::BF16), 0x3A);
}

TEST(QuantizeWeight, NegativeZeroKeepsItsSignWithoutAZeroPoint) {
  Bf16Tensor w({-0.0f, 1.0f}, {1, 2});
  QuantizedWeight q = quantize_weight(w.view, fp8(Strategy::Tensor));
  EXPECT_EQ(q.codes[0], 0x80);
}

TEST(QuantizeWeight, AllZeroRowGetsEpsilonScaleAndZeroCodes) {
  Bf16Tensor w({0, 0, 0, 0, 1, 2, 3, 4}, {2, 4});
  QuantizedWeight q = quantize_weight(w.view, int8(Strategy::Channel));
  EXPECT_EQ(scale_bits(q)[0], 0x3C00);  // bf16 eps 2^-7
  EXPECT_EQ(q.zero_groups, 1);
  for (int j = 0; j < 4; ++j) EXPECT_EQ(q.codes[j], 0);
}

TEST(QuantizeWeight, RefusesNaNNamingTheTensorAndPosition) {
  Bf16Tensor w({1, 2, NAN, 4}, {2, 2});
  w.view.name = "model.layers.0.mlp.up_proj.weight";
  w.view.file = "model.safetensors";
  try {
    quantize_weight(w.view, fp8(Strategy::Channel));
    FAIL() << "expected an error";
  } catch (const InputError& e) {
    EXPECT_EQ(e.kind(), InputError::Kind::BadValue);
    EXPECT_NE(std::string(e.what()).find("model.safetensors: tensor 'model.layers.0.mlp.up_proj.weight': contains NaN at [1, 0]"),
              std::string::npos) << e.what();
  }
}

TEST(TensorAbsmax, Bf16TakesTheExactMaxAndNamesTheFirstNonFiniteElement) {
  // tensor_absmax reads 16-bit rows as raw bits (no decode); the results must be those of
  // decoding: the exact max |x|, NaN when a NaN is allowed anywhere, Inf for an allowed Inf,
  // and the refusal naming the first non-finite element in row-major order.
  Bf16Tensor finite({1, -2.5f, 0.0f, -0.0f, 3.0f, -7.0f}, {3, 2});
  EXPECT_EQ(tensor_absmax(finite.view), 7.0f);
  Bf16Tensor inf({1, 2, 3, -INFINITY, NAN, 4}, {3, 2});
  inf.view.name = "w.weight";
  inf.view.file = "m.safetensors";
  try {
    tensor_absmax(inf.view);
    FAIL() << "expected an error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("m.safetensors: tensor 'w.weight': contains Inf at [1, 1]"),
              std::string::npos) << e.what();
  }
  EXPECT_TRUE(std::isnan(tensor_absmax(inf.view, true)));
  Bf16Tensor only_inf({1, 2, 3, -INFINITY}, {2, 2});
  EXPECT_EQ(tensor_absmax(only_inf.view, true), INFINITY);
}

TEST(QuantizeWeight, GroupStrategyNeedsDivisibleColumns) {
  QuantArgs g{QuantType::Int4, Strategy::Group, 128, 0, 0, false};
  EXPECT_NE(check_weight_shape({64, 320}, g).find("not a multiple of the group size 128"), std::string::npos);
  EXPECT_EQ(check_weight_shape({64, 256}, g), "");
}

TEST(QuantizeWeight, DequantizeInvertsCodesWithinThreeQuartersOfAStep) {
  // Sweep sizes that hit remainders. The error bound: the bf16 quotient w/s is off by at most
  // half a bf16 ulp, which is 0.25 for |q| in [64, 128), then round-half-even adds <= 0.5 and
  // the clamp at 127 (amax maps to 127.5) adds <= 0.5: |w - deq| <= 0.75 * s.
  for (int64_t cols : {1, 3, 16, 33}) {
    std::vector<float> v;
    for (int64_t i = 0; i < 5 * cols; ++i) v.push_back(std::sin(0.37f * static_cast<float>(i)) * 0.1f);
    Bf16Tensor w(v, {5, cols});
    QuantizedWeight q = quantize_weight(w.view, int8(Strategy::Channel));
    std::vector<float> deq(v.size());
    dequantize(q.codes.data(), q.code_dtype, q.shape, q.scale_bytes.data(), q.scale_dtype,
               scale_grid(q.shape, int8(Strategy::Channel)), deq.data());
    for (int64_t i = 0; i < 5 * cols; ++i) {
      const float s = f32_from_bf16(scale_bits(q)[static_cast<size_t>(i / cols)]);
      EXPECT_LE(std::fabs(deq[i] - f32_from_bf16(w.bits[i])), s * 0.75f) << cols << " " << i;
    }
  }
}

}  // namespace
}  // namespace qt

namespace qt {
namespace {
TEST(QuantizeWeight, TableDrivenCodesEqualTheScalarReference) {
  // quantize_weight's fast path (table lookup after the rounded quotient) must give exactly
  // quantize_element's codes, for every model dtype and code type, on varied data.
  for (DType m : {DType::BF16, DType::F16}) {
    std::vector<uint16_t> bits;
    for (int i = 0; i < 64 * 96; ++i) {
      float x = std::sin(0.01f * i) * std::exp(0.002f * (i % 500)) * ((i % 97) == 0 ? 50.0f : 0.05f);
      bits.push_back(m == DType::BF16 ? bf16_from_f32(x) : f16_from_f32(x));
    }
    TensorView v;
    v.name = "w"; v.dtype = m; v.shape = {64, 96};
    v.bytes = {reinterpret_cast<const uint8_t*>(bits.data()), bits.size() * 2};
    for (QuantType t : {QuantType::Float8E4M3, QuantType::Int8, QuantType::Int4}) {
      QuantArgs a{t, Strategy::Group, 32, 0, 0, false};
      QuantizedWeight q = quantize_weight(v, a);
      std::vector<float> s(q.scale_bytes.size() / 2);
      decode_to_f32(m, q.scale_bytes.data(), s.size(), s.data());
      for (int64_t i = 0; i < 64; ++i)
        for (int64_t j = 0; j < 96; ++j) {
          const float w = m == DType::BF16 ? f32_from_bf16(bits[i * 96 + j]) : f32_from_f16(bits[i * 96 + j]);
          ASSERT_EQ(q.codes[i * 96 + j], quantize_element(w, s[i * 3 + j / 32], t, m)) << i << "," << j;
        }
    }
  }
}
}  // namespace
}  // namespace qt
