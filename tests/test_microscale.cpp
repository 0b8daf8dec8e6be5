// FP4 E2M1, E8M0 and the NVFP4 / MX weight quantizers (libquant/microscale.h).
//  (a) scalar encoders against an independent reference written here (nearest grid value by
//      distance, ties to the even code; power-of-two rounding by frexp), exhaustively over every
//      bf16 value;
//  (b) hand-derived vectors (libquant/NUMERICS.md, "FP4 and MX");
//  (c) byte equality with the real compressed-tensors 0.20.1 for every tensor and every model
//      dtype (testdata/fp4/make_goldens.py, README there).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "formats/ct_config.h"
#include "formats/safetensors.h"
#include "libquant/float_formats.h"
#include "libquant/microscale.h"
#include "libquant/quantize.h"
#include "libquant/schemes.h"
#include "tests/support/test_support.h"

namespace qt {
namespace {

// ---- (a) independent references ----------------------------------------------------------

// Nearest E2M1 magnitude index by distance; a tie goes to the even index (even mantissa).
uint8_t ref_e2m1(double x) {
  static const double v[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  const double a = std::fabs(x);
  int best = 0;
  for (int i = 1; i < 8; ++i) {
    const double d = std::fabs(a - v[i]), db = std::fabs(a - v[best]);
    if (d < db || (d == db && i % 2 == 0)) best = i;
  }
  return static_cast<uint8_t>((x < 0 ? 8 : 0) | best);
}

TEST(E2M1, DecodesEveryCodeToItsGridValue) {
  const float mags[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  for (int c = 0; c < 16; ++c) {
    const float v = f32_from_e2m1(static_cast<uint8_t>(c));
    EXPECT_EQ(std::fabs(v), mags[c & 7]) << c;
    EXPECT_EQ(std::signbit(v), (c & 8) != 0) << c;
  }
}

TEST(E2M1, EncodesEveryBf16InRangeAsTheNearestCodeWithTiesToEven) {
  int checked = 0;
  for (uint32_t b = 0; b < 65536; ++b) {
    const float x = f32_from_bf16(static_cast<uint16_t>(b));
    if (!(std::fabs(x) <= 6.0f)) continue;
    ASSERT_EQ(e2m1_from_f32(x), x == 0.0f ? 0 : ref_e2m1(x)) << x;
    ++checked;
  }
  EXPECT_GT(checked, 30000);
}

TEST(E2M1, RoundsTheHandPickedTiesAndSignsAsCompressedTensors) {
  // ties: 0.25->0, 0.75->1, 1.25->1, 1.75->2, 2.5->2, 3.5->4, 5->4
  EXPECT_EQ(e2m1_from_f32(0.25f), 0x0);
  EXPECT_EQ(e2m1_from_f32(0.75f), 0x2);
  EXPECT_EQ(e2m1_from_f32(1.25f), 0x2);
  EXPECT_EQ(e2m1_from_f32(1.75f), 0x4);
  EXPECT_EQ(e2m1_from_f32(2.5f), 0x4);
  EXPECT_EQ(e2m1_from_f32(3.5f), 0x6);
  EXPECT_EQ(e2m1_from_f32(5.0f), 0x6);
  EXPECT_EQ(e2m1_from_f32(std::nextafter(0.25f, 1.0f)), 0x1);
  EXPECT_EQ(e2m1_from_f32(std::nextafter(5.0f, 6.0f)), 0x7);
  EXPECT_EQ(e2m1_from_f32(6.0f), 0x7);
  EXPECT_EQ(e2m1_from_f32(-6.0f), 0xF);
  // A negative value that rounds to zero keeps its sign (|0| * sign(x) = -0.0) ...
  EXPECT_EQ(e2m1_from_f32(-0.1f), 0x8);
  // ... but -0.0 itself has sign(-0.0) = 0, so it becomes +0.
  EXPECT_EQ(e2m1_from_f32(-0.0f), 0x0);
}

TEST(E2M1, PacksTheEvenElementIntoTheLowNibble) {
  const uint8_t codes[4] = {0x1, 0x2, 0xF, 0x8};
  auto p = pack_e2m1(codes, 1, 4);
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0], 0x21);
  EXPECT_EQ(p[1], 0x8F);
  auto u = unpack_e2m1(p.data(), 1, 4);
  EXPECT_EQ(std::vector<uint8_t>(codes, codes + 4), u);
}

TEST(E8M0, DecodesBiasedExponentsAndNaN) {
  EXPECT_EQ(f32_from_e8m0(127), 1.0f);
  EXPECT_EQ(f32_from_e8m0(0), std::ldexp(1.0f, -127));
  EXPECT_EQ(f32_from_e8m0(254), std::ldexp(1.0f, 127));
  EXPECT_TRUE(std::isnan(f32_from_e8m0(255)));
}

TEST(E8M0, RoundsTheGroupMaxUpToTheNextPowerOfTwoFromSignificand1Point75) {
  // FP8 elements (offset 8), bf16 group maxima (NUMERICS.md vector X1).
  EXPECT_EQ(mx_exponent(1.0f, DType::BF16, QuantType::Float8E4M3), 119);
  EXPECT_EQ(mx_exponent(1.5f, DType::BF16, QuantType::Float8E4M3), 119);
  EXPECT_EQ(mx_exponent(1.7421875f, DType::BF16, QuantType::Float8E4M3), 119);
  EXPECT_EQ(mx_exponent(1.75f, DType::BF16, QuantType::Float8E4M3), 120);
  EXPECT_EQ(mx_exponent(3.0f, DType::BF16, QuantType::Float8E4M3), 120);
  EXPECT_EQ(mx_exponent(448.0f, DType::BF16, QuantType::Float8E4M3), 128);
  // FP4 elements (offset 2): 6 = 1.5 * 2^2 -> 2^2 -> E 127 (scale 1, 6 stays 6).
  EXPECT_EQ(mx_exponent(6.0f, DType::BF16, QuantType::Float4E2M1), 127);
  EXPECT_EQ(mx_exponent(1.75f, DType::F32, QuantType::Float4E2M1), 126);
  EXPECT_EQ(mx_exponent(1.74f, DType::F32, QuantType::Float4E2M1), 125);
  EXPECT_EQ(mx_exponent(0.0f, DType::BF16, QuantType::Float4E2M1), 0);
}

TEST(E8M0, MatchesAFrexpReferenceForEveryPositiveBf16) {
  for (uint32_t b = 1; b < 0x7F80; ++b) {
    const float a = f32_from_bf16(static_cast<uint16_t>(b));
    int e;
    const double m = std::frexp(static_cast<double>(a), &e);  // a = m * 2^e, m in [0.5, 1)
    // round up when the significand (2m) is >= 1.75, else down. A subnormal rounds to 0 or to
    // 2^-126, and either gives an exponent below the FP8 offset: E = 0.
    int p = (2 * m >= 1.75) ? e : e - 1;
    const bool subnormal = a < std::ldexp(1.0f, -126);
    // Rounding up past the largest finite power (2^127) gives +inf, whose log2 clamps to 255.
    const int want = subnormal ? 0 : p >= 128 ? 255 : std::clamp(127 + p - 8, 0, 255);
    ASSERT_EQ(mx_exponent(a, DType::BF16, QuantType::Float8E4M3), want) << a;
  }
}

TEST(E8M0, ScaleFallsBackToOneWhereFp16CannotHoldIt) {
  EXPECT_EQ(mx_scale_in_dtype(0, DType::BF16), std::ldexp(1.0f, -127));
  EXPECT_EQ(mx_stored_exponent(mx_scale_in_dtype(0, DType::BF16)), 0);
  EXPECT_EQ(mx_scale_in_dtype(0, DType::F16), 1.0f);  // 2^-127 underflows fp16 -> eps 1
  EXPECT_EQ(mx_stored_exponent(mx_scale_in_dtype(0, DType::F16)), 127);
  EXPECT_EQ(mx_scale_in_dtype(103, DType::F16), std::ldexp(1.0f, -24));
  EXPECT_EQ(mx_scale_in_dtype(102, DType::F16), 1.0f);
}

TEST(Nvfp4Scales, GlobalAndGroupScalesMatchTheHandDerivation) {
  // Tensor amax 3.0 (bf16): bf16(bf16(1/3) * 2688) = bf16(897.75) = 896.
  const float gs = nvfp4_global_scale(3.0f, DType::BF16);
  EXPECT_EQ(gs, 896.0f);
  EXPECT_EQ(nvfp4_group_scale(3.0f, gs, DType::BF16), 0x7E);   // 896 * 0.5 = 448
  EXPECT_EQ(nvfp4_group_scale(1.0f, gs, DType::BF16), 0x71);   // 896 * bf16(1/6) = 149.625 -> 144
  EXPECT_EQ(nvfp4_group_scale(0.10009765625f, gs, DType::BF16), 0x57);  // 14.984375 -> 15
  EXPECT_EQ(nvfp4_group_scale(0.0f, gs, DType::BF16), 0x20);   // zero -> 0.125
  // An all-zero tensor: 2688 / tiny overflows, and the global scale becomes 1.
  EXPECT_EQ(nvfp4_global_scale(0.0f, DType::BF16), 1.0f);
  EXPECT_EQ(nvfp4_global_scale(0.0f, DType::F16), 1.0f);
  EXPECT_EQ(nvfp4_global_scale(0.0f, DType::F32), 1.0f);
}

TEST(Microscale, QuantizesAHandRowWithScaleOneToTheExpectedCodes) {
  // One NVFP4 group whose max is 6 in an f32 tensor: gs = f32(f32(1/6) * 2688) and the group
  // scale e4m3(gs * 1) round-trips, so x / (s / gs) stays within an ulp of x.
  std::vector<float> row = {6.0f, 0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f,
                            -0.25f, -0.75f, -1.25f, -1.75f, -2.5f, -3.5f, -5.0f, -6.0f};
  std::vector<uint8_t> bytes(row.size() * 4);
  std::memcpy(bytes.data(), row.data(), bytes.size());
  TensorView tv;
  tv.name = "x.weight";
  tv.dtype = DType::F32;
  tv.shape = {1, 16};
  tv.bytes = bytes;
  const QuantArgs mx16{QuantType::Float4E2M1, Strategy::Group, 16, 0, 0, false, ScaleFormat::E8M0};
  QuantizedWeight q = quantize_weight(tv, mx16);
  // MX with group max 6: E = 127, scale 1: the codes are the E2M1 rounding of the values.
  const std::vector<uint8_t> want = {0x7, 0x0, 0x2, 0x2, 0x4, 0x4, 0x6, 0x6,
                                     0x8, 0xA, 0xA, 0xC, 0xC, 0xE, 0xE, 0xF};
  EXPECT_EQ(q.codes, want);
  EXPECT_EQ(q.scale_bytes, std::vector<uint8_t>{127});
}

TEST(Microscale, Bf16RowKernelPathEqualsTheScalarPathOnEveryGroupWithoutANaN) {
  // A BF16 tensor without Inf/NaN takes the row-kernel path; the same tensor with one NaN (and
  // --allow-nonfinite) takes the scalar path for the whole tensor. MX scales are per group, so
  // every group but the NaN's must come out the same from both. Values: random bf16 patterns
  // over many binades (subnormals, exact ties of the E2M1 grid after scaling) and zero groups.
  const int64_t rows = 8, cols = 256;
  std::vector<uint16_t> v(static_cast<size_t>(rows * cols));
  uint32_t st = 12345;
  for (auto& h : v) {
    st = st * 1664525u + 1013904223u;
    const uint32_t e = 1 + (st >> 8) % 140;        // exponents 2^-126 .. 2^13, plus subnormals
    h = static_cast<uint16_t>(((st >> 31) << 15) | ((st >> 24) % 3 == 0 ? 0 : e) << 7 | ((st >> 16) & 0x7F));
  }
  for (int64_t j = 0; j < 32; ++j) v[static_cast<size_t>(3 * cols + 64 + j)] = 0;  // a zero group
  std::vector<uint16_t> with_nan = v;
  with_nan[static_cast<size_t>(rows * cols - 1)] = 0x7FC0;  // last group of the last row
  auto view = [&](const std::vector<uint16_t>& d) {
    TensorView tv;
    tv.name = "x.weight";
    tv.dtype = DType::BF16;
    tv.shape = {rows, cols};
    tv.bytes = {reinterpret_cast<const uint8_t*>(d.data()), d.size() * 2};
    return tv;
  };
  for (QuantType t : {QuantType::Float4E2M1, QuantType::Float8E4M3}) {
    const QuantArgs mx{t, Strategy::Group, 32, 0, 0, false, ScaleFormat::E8M0};
    QuantizeOptions allow;
    allow.allow_nonfinite = true;
    const QuantizedWeight fast = quantize_weight(view(v), mx);
    const QuantizedWeight scalar = quantize_weight(view(with_nan), mx, allow);
    const int64_t n = rows * cols - 32;  // all but the NaN's group
    EXPECT_TRUE(std::equal(fast.codes.begin(), fast.codes.begin() + n, scalar.codes.begin()));
    EXPECT_TRUE(std::equal(fast.scale_bytes.begin(), fast.scale_bytes.end() - 1, scalar.scale_bytes.begin()));
    EXPECT_EQ(fast.zero_groups, 1);
    EXPECT_EQ(scalar.zero_groups, 1);
  }
}

// ---- (c) compressed-tensors goldens ------------------------------------------------------

struct Case { std::string dtype, scheme; };
class Fp4Goldens : public ::testing::TestWithParam<Case> {};

std::vector<uint8_t> bytes_of(const TensorView& t) { return {t.bytes.begin(), t.bytes.end()}; }

const std::vector<std::vector<std::string>> kFused = {
    {"layers.0.self_attn.q_proj", "layers.0.self_attn.k_proj", "layers.0.self_attn.v_proj"},
    {"layers.0.mlp.gate_proj", "layers.0.mlp.up_proj"}};

TEST_P(Fp4Goldens, EveryTensorIsByteIdenticalToCompressedTensors) {
  const Case c = GetParam();
  const auto dir = test::source_path("testdata/fp4/" + c.dtype);
  SafetensorsFile in = SafetensorsFile::open((dir / "input.safetensors").string());
  SafetensorsFile gold = SafetensorsFile::open((dir / (c.scheme + ".safetensors")).string());
  const Scheme* s = find_scheme(c.scheme);
  ASSERT_NE(s, nullptr);
  const bool fp4 = s->weights.type == QuantType::Float4E2M1;
  const bool nv = s->weights.scale_format == ScaleFormat::Nvfp4;
  std::map<std::string, float> amax;
  for (const TensorView& w : in.tensors()) amax[w.name.substr(0, w.name.size() - 7)] = tensor_absmax(w);
  size_t checked = 0;
  for (const TensorView& w : in.tensors()) {
    const std::string m = w.name.substr(0, w.name.size() - 7);
    QuantizeOptions qo;
    for (const auto& set : kFused)
      for (const auto& member : set)
        if (member == m)
          for (const auto& other : set) qo.group_amax_override = std::max(qo.group_amax_override, amax[other]);
    QuantizedWeight q = quantize_weight(w, s->weights, qo);
    const TensorView* gs = gold.find(m + ".weight_scale");
    ASSERT_NE(gs, nullptr) << m;
    EXPECT_EQ(gs->dtype, nv ? DType::F8_E4M3 : DType::U8) << m;
    EXPECT_EQ(gs->shape, q.scale_shape) << m;
    EXPECT_EQ(bytes_of(*gs), q.scale_bytes) << c.dtype << "/" << c.scheme << " " << m << ".weight_scale";
    if (fp4) {
      const TensorView* gp = gold.find(m + ".weight_packed");
      ASSERT_NE(gp, nullptr) << m;
      EXPECT_EQ(gp->dtype, DType::U8);
      EXPECT_EQ(gp->shape, (std::vector<int64_t>{w.shape[0], w.shape[1] / 2}));
      EXPECT_EQ(bytes_of(*gp), pack_e2m1(q.codes.data(), w.shape[0], w.shape[1]))
          << c.dtype << "/" << c.scheme << " " << m << ".weight_packed";
    } else {
      const TensorView* gw = gold.find(m + ".weight");
      ASSERT_NE(gw, nullptr) << m;
      EXPECT_EQ(gw->dtype, DType::F8_E4M3);
      EXPECT_EQ(bytes_of(*gw), q.codes) << c.dtype << "/" << c.scheme << " " << m << ".weight";
    }
    const TensorView* gg = gold.find(m + ".weight_global_scale");
    EXPECT_EQ(gg != nullptr, nv) << m;
    if (nv && gg) {
      ASSERT_EQ(gg->dtype, DType::F32);
      float g;
      std::memcpy(&g, gg->bytes.data(), 4);
      EXPECT_EQ(f32_bits(g), f32_bits(q.global_scale)) << c.dtype << " " << m << " global " << g << " vs " << q.global_scale;
    }
    ++checked;
  }
  EXPECT_EQ(checked, in.tensors().size());
  // Nothing else in the golden (no weight_shape, no zero points).
  EXPECT_EQ(gold.tensors().size(), checked * (nv ? 3 : 2));
}

INSTANTIATE_TEST_SUITE_P(AllDtypesAndSchemes, Fp4Goldens,
                         ::testing::Values(Case{"bf16", "nvfp4a16"}, Case{"fp16", "nvfp4a16"},
                                           Case{"fp32", "nvfp4a16"}, Case{"bf16", "mxfp4a16"},
                                           Case{"fp16", "mxfp4a16"}, Case{"fp32", "mxfp4a16"},
                                           Case{"bf16", "mxfp8"}, Case{"fp16", "mxfp8"},
                                           Case{"fp32", "mxfp8"}, Case{"bf16", "nvfp4"},
                                           Case{"fp16", "nvfp4"}, Case{"fp32", "nvfp4"},
                                           Case{"bf16", "mxfp4"}, Case{"fp16", "mxfp4"},
                                           Case{"fp32", "mxfp4"}),
                         [](const auto& info) {
                           std::string n = info.param.dtype + "_" + info.param.scheme;
                           for (auto& ch : n) if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

TEST(Fp4Config, QuantizationArgsCarryWhatCompressedTensorsWritesForThePreset) {
  for (const char* name : {"nvfp4a16", "nvfp4", "mxfp4a16", "mxfp4", "mxfp8"}) {
    const auto golden = nlohmann::json::parse(
        test::read_text(test::source_path(std::string("testdata/fp4/") + name + ".config.json")));
    const Scheme* s = find_scheme(name);
    ASSERT_NE(s, nullptr);
    const auto ours = make_ct_quant_config(*s, CtWriteOptions{{"lm_head"}, false, "static_minmax"});
    EXPECT_EQ(ours["format"], golden["format"]) << name;
    const auto& gg = golden["config_groups"]["group_0"];
    const auto& og = ours["config_groups"]["group_0"];
    for (const char* side : {"weights", "input_activations"}) {
      if (gg[side].is_null()) { EXPECT_TRUE(og[side].is_null()) << name << " " << side; continue; }
      for (const auto& [k, v] : gg[side].items())
        EXPECT_EQ(og[side].value(k, nlohmann::json()), v) << name << " " << side << "." << k;
    }
    // And it reads back as the same args.
    QuantInfo qi = parse_quant_info(nlohmann::json{{"quantization_config", ours}});
    ASSERT_EQ(qi.groups.size(), 1u);
    ASSERT_TRUE(qi.groups[0].weights.has_value()) << name << " " << qi.groups[0].weights_text;
    EXPECT_EQ(qi.groups[0].weights->type, s->weights.type);
    EXPECT_EQ(qi.groups[0].weights->scale_format, s->weights.scale_format);
    EXPECT_EQ(qi.groups[0].weights->group_size, s->weights.group_size);
  }
}

}  // namespace
}  // namespace qt
