// The kernel architecture of `qtool verify` (libquant/kernels): descriptors, vLLM activation
// quantization (libquant/kernels/KERNELS.md §3, vectors V1/V2), the float64 reference against
// hand-derived GEMMs, every other CPU kernel against the reference (INT8 bit for bit, FP8 and
// weight-only within an error bound derived from K), thread-count invariance, and the registry.
#include <gtest/gtest.h>

#include <cpuid.h>

#include <cmath>
#include <cstring>
#include <random>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "libquant/cpu_isa.h"
#include "libquant/error.h"
#include "libquant/float_formats.h"
#include "libquant/kernels/act_quant.h"
#include "libquant/kernels/cpu_common.h"
#include "libquant/kernels/registry.h"
#include "libquant/quantize.h"
#include "libquant/schemes.h"
#include "tests/support/quantized_layer.h"

namespace qt::kernels {
namespace {

bool avx2_cpu() {
  __builtin_cpu_init();
  unsigned a = 0, b = 0, c = 0, d = 0;  // F16C: CPUID.1:ECX bit 29 (clang < 16 lacks the builtin name)
  const bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
}

// ---- a generated quantized layer ----------------------------------------------------------------

using Layer = test::QuantizedLayer;  // tests/support/quantized_layer.h

Layer make_layer(const LinearDescriptor& d, uint32_t seed) {
  std::mt19937 rng(seed);
  Layer L;
  L.d = d;
  L.d.weight_scale_dtype = DType::BF16;
  L.d.input_scale_dtype = DType::F32;
  L.codes.resize(static_cast<size_t>(d.N * d.K));
  for (uint8_t& c : L.codes) {
    const uint32_t r = rng();
    switch (d.weight_type) {
      case QuantType::Float8E4M3:
        c = static_cast<uint8_t>(r & 0xFF);
        if ((c & 0x7F) == 0x7F) c ^= 0x01;  // no NaN codes
        break;
      case QuantType::Int8: c = static_cast<uint8_t>(r & 0xFF); break;  // includes -128
      case QuantType::Int4: c = static_cast<uint8_t>(static_cast<int8_t>(static_cast<int>(r % 16) - 8)); break;
    }
  }
  std::uniform_real_distribution<float> u(-10.0f, -4.0f);
  const int64_t ns = d.weight_scale_rows() * d.weight_scale_cols();
  for (int64_t i = 0; i < ns; ++i) {
    const uint16_t b = bf16_from_f32(std::exp2(u(rng)));
    L.scale_bits.push_back(b);
    L.scales.push_back(f32_from_bf16(b));
  }
  return L;
}

// Activations ~ N(0,1) with occasional outliers of 40x, and a few exact zeros.
std::vector<float> make_x(int64_t M, int64_t K, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(M * K));
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = nd(rng);
    if (rng() % 97 == 0) x[i] *= 40.0f;
    if (rng() % 53 == 0) x[i] = 0.0f;
  }
  return x;
}

// Static input scale: half of amax/448 (or amax/127), so some activations saturate.
void set_static_scale(Layer& L, const std::vector<float>& x) {
  float amax = 0.0f;
  for (float v : x) amax = std::max(amax, std::fabs(v));
  if (amax == 0.0f) amax = 1.0f;
  L.input_scale = 0.5f * amax / (L.d.act_type == ActType::Int8 ? 127.0f : 448.0f);
}

std::vector<float> run_kernel(const Kernel& k, const Layer& L, const std::vector<float>& x, int64_t M) {
  auto p = k.pack(L.d, L.ref());
  std::vector<float> y(static_cast<size_t>(M * L.d.N), -12345.0f);
  k.run(*p, x.data(), M, y.data());
  return y;
}

// Sum over k of |sx(m,k) * sw(n,k) * a(m,k) * b(n,k)|: the magnitude the dot product error scales
// with. Computed per element from the scale grids directly.
std::vector<double> abs_sums(const Layer& L, const std::vector<float>& x, int64_t M) {
  const LinearDescriptor& d = L.d;
  QuantizedActivations qa;
  if (!d.weight_only()) qa = quantize_activations(d, x.data(), M, L.input_scale);
  std::vector<double> s(static_cast<size_t>(M * d.N), 0.0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < d.N; ++n) {
      double acc = 0.0;
      for (int64_t k = 0; k < d.K; ++k) {
        double a, sx = 1.0;
        if (d.weight_only()) {
          a = x[static_cast<size_t>(m * d.K + k)];
        } else {
          const uint8_t c = qa.codes[static_cast<size_t>(m * d.K + k)];
          a = d.act_type == ActType::Float8E4M3 ? f32_from_e4m3fn(c) : static_cast<int8_t>(c);
          sx = qa.scale(m, k);
        }
        acc += std::fabs(sx * L.sw(n, k) * a * L.wval(n, k));
      }
      s[static_cast<size_t>(m * d.N + n)] = acc;
    }
  return s;
}

// ---- descriptors --------------------------------------------------------------------------------

LinearDescriptor desc(QuantType wt, Strategy ws, ActType at, ActScheme as, int64_t N, int64_t K,
                      int64_t wgroup = 0, int64_t ag = 0) {
  LinearDescriptor d;
  d.N = N;
  d.K = K;
  d.weight_type = wt;
  d.weight_strategy = ws;
  if (ws == Strategy::Group) d.weight_group = wgroup;
  if (ws == Strategy::Block) d.block_rows = d.block_cols = wgroup;
  d.act_type = at;
  d.act_scheme = as;
  d.act_group = ag;
  return d;
}

TEST(LinearDescriptor, FromSchemeArgsKeepsEveryGranularity) {
  const Scheme* b = find_scheme("fp8-block");
  ASSERT_NE(b, nullptr);
  LinearDescriptor d = descriptor_from_args(b->weights, b->input, 512, 1024);
  EXPECT_EQ(d.weight_type, QuantType::Float8E4M3);
  EXPECT_EQ(d.weight_strategy, Strategy::Block);
  EXPECT_EQ(d.block_rows, 128);
  EXPECT_EQ(d.block_cols, 128);
  EXPECT_EQ(d.act_type, ActType::Float8E4M3);
  EXPECT_EQ(d.act_scheme, ActScheme::DynamicGroup);
  EXPECT_EQ(d.act_group, 128);
  EXPECT_EQ(d.k_segment(), 128);
  EXPECT_EQ(d.num_segments(), 8);
  EXPECT_EQ(d.weight_scale_rows(), 4);
  EXPECT_EQ(d.weight_scale_cols(), 8);

  const Scheme* s = find_scheme("int8-static");
  d = descriptor_from_args(s->weights, s->input, 64, 96);
  EXPECT_EQ(d.act_scheme, ActScheme::StaticTensor);
  EXPECT_EQ(d.k_segment(), 96);
  EXPECT_EQ(d.describe(),
            "N=64 K=96; weights INT8 per-channel (BF16 scales); activations INT8 static "
            "per-tensor (F32 scale)");

  const Scheme* w4 = find_scheme("w4a16");
  d = descriptor_from_args(w4->weights, w4->input, 64, 256);
  EXPECT_TRUE(d.weight_only());
  EXPECT_EQ(d.k_segment(), 128);
  EXPECT_EQ(d.describe(), "N=64 K=256; weights INT4 per-group of 128 (BF16 scales); activations unquantized");
}

TEST(LinearDescriptor, RejectsArgsThatDescribeNoGemm) {
  QuantArgs w{QuantType::Int8, Strategy::Channel, 0, 0, 0, false};
  QuantArgs a4{QuantType::Int4, Strategy::Token, 0, 0, 0, true};
  EXPECT_THROW(descriptor_from_args(w, a4, 8, 8), InputError);
  QuantArgs ach{QuantType::Int8, Strategy::Channel, 0, 0, 0, false};
  EXPECT_THROW(descriptor_from_args(w, ach, 8, 8), InputError);
  QuantArgs wt{QuantType::Int8, Strategy::Token, 0, 0, 0, false};
  EXPECT_THROW(descriptor_from_args(wt, std::nullopt, 8, 8), InputError);
  EXPECT_THROW(descriptor_from_args(w, std::nullopt, 0, 8), InputError);
}

TEST(LinearDescriptor, SegmentIsTheSmallerOfTwoNestedScaleSpans) {
  using QT = QuantType;
  // Channel weights x per-token activations: one segment over all of K.
  EXPECT_EQ(desc(QT::Int8, Strategy::Channel, ActType::Int8, ActScheme::DynamicToken, 8, 300).k_segment(), 300);
  // Group 64 weights x per-group 128 activations: 64.
  EXPECT_EQ(desc(QT::Float8E4M3, Strategy::Group, ActType::Float8E4M3, ActScheme::DynamicGroup, 8, 256, 64, 128).k_segment(), 64);
  // Block 128 weights with a partial last block (K = 200) x per-token: 128, two segments.
  auto b = desc(QT::Float8E4M3, Strategy::Block, ActType::Float8E4M3, ActScheme::DynamicToken, 8, 200, 128);
  EXPECT_EQ(b.k_segment(), 128);
  EXPECT_EQ(b.num_segments(), 2);
  // Block 96 x group 128 (K = 384): neither divides the other.
  EXPECT_EQ(desc(QT::Float8E4M3, Strategy::Block, ActType::Float8E4M3, ActScheme::DynamicGroup, 8, 384, 96, 128).k_segment(), 0);
}

// ---- activation quantization --------------------------------------------------------------------

TEST(ActivationQuant, Fp8PerTokenMatchesVllmVectorV1) {
  // libquant/kernels/KERNELS.md §3 vector V1: token [1, -2, 0.5] -> s = 2/448 =
  // 0.004464285913854837 (f32), codes [0x76, 0xFE, 0x6E] (x/s = 223.99998 -> 224, -447.99997 ->
  // -448, 111.99999 -> 112); all-zero token -> s = 1/229376 (f32 bits 0x36924925), codes 0.
  LinearDescriptor d = desc(QuantType::Float8E4M3, Strategy::Channel, ActType::Float8E4M3,
                            ActScheme::DynamicToken, 1, 3);
  std::vector<float> x = {1.0f, -2.0f, 0.5f, 0.0f, 0.0f, 0.0f};
  QuantizedActivations q = quantize_activations(d, x.data(), 2, 0.0f);
  EXPECT_EQ(q.codes, (std::vector<uint8_t>{0x76, 0xFE, 0x6E, 0x00, 0x00, 0x00}));
  EXPECT_EQ(q.scales[0], 0.004464285913854837f);
  EXPECT_EQ(f32_bits(q.scales[1]), 0x36924925u);
  EXPECT_EQ(f32_bits(kFp8TokenScaleFloor), 0x36924925u);
}

TEST(ActivationQuant, Int8PerTokenMatchesVllmVectorV2) {
  // libquant/kernels/KERNELS.md §3 vector V2: same token, s = 2/127 = 0.015748031...,
  // multiplier 127/2 = 63.5: 63.5 -> 64 (half to even), -127, 31.75 -> 32. All-zero token:
  // multiplier 0, s = 0.
  LinearDescriptor d = desc(QuantType::Int8, Strategy::Channel, ActType::Int8,
                            ActScheme::DynamicToken, 1, 3);
  std::vector<float> x = {1.0f, -2.0f, 0.5f, 0.0f, 0.0f, 0.0f};
  QuantizedActivations q = quantize_activations(d, x.data(), 2, 0.0f);
  EXPECT_EQ(q.codes, (std::vector<uint8_t>{64, static_cast<uint8_t>(-127), 32, 0, 0, 0}));
  EXPECT_EQ(q.scales[0], 2.0f / 127.0f);
  EXPECT_EQ(q.scales[1], 0.0f);
}

TEST(ActivationQuant, Int8StaticDividesRoundsHalfToEvenAndSaturates) {
  // s = 0.5: x/s = 2.5 -> 2, 3.5 -> 4, -1.5 -> -2, 300 -> 127, -300 -> -128, 63.75 -> 64.
  LinearDescriptor d = desc(QuantType::Int8, Strategy::Channel, ActType::Int8,
                            ActScheme::StaticTensor, 1, 6);
  std::vector<float> x = {1.25f, 1.75f, -0.75f, 150.0f, -150.0f, 31.875f};
  QuantizedActivations q = quantize_activations(d, x.data(), 1, 0.5f);
  std::vector<int> got(q.codes.begin(), q.codes.end());
  for (int& g : got) g = static_cast<int8_t>(g);
  EXPECT_EQ(got, (std::vector<int>{2, 4, -2, 127, -128, 64}));
}

TEST(ActivationQuant, Fp8StaticMultipliesByTheReciprocalAndClampsTo448) {
  // s = 0.25 -> inv = 4: 1 -> 4.0 (0x48), -0.1 -> -0.4 -> nearest e4m3 -0.40625 = -2^-2 * 1.625
  // (0xAD: sign, exponent 5, mantissa 5; neighbours 0.375 and 0.4375),
  // 500 -> 2000 -> clamp 448 (0x7E), -1e30 -> -448 (0xFE).
  LinearDescriptor d = desc(QuantType::Float8E4M3, Strategy::Tensor, ActType::Float8E4M3,
                            ActScheme::StaticTensor, 1, 4);
  std::vector<float> x = {1.0f, -0.1f, 500.0f, -1e30f};
  QuantizedActivations q = quantize_activations(d, x.data(), 1, 0.25f);
  EXPECT_EQ(q.codes, (std::vector<uint8_t>{0x48, 0xAD, 0x7E, 0xFE}));
}

TEST(ActivationQuant, Fp8PerGroupGivesEveryGroupItsOwnScale) {
  // Groups of 2: [4, -1] -> s = 4/448, codes 448 (0x7E), -112 (0xEE); [0, 0] -> s = 1e-10/448.
  LinearDescriptor d = desc(QuantType::Float8E4M3, Strategy::Block, ActType::Float8E4M3,
                            ActScheme::DynamicGroup, 1, 4, 2, 2);
  std::vector<float> x = {4.0f, -1.0f, 0.0f, 0.0f};
  QuantizedActivations q = quantize_activations(d, x.data(), 1, 0.0f);
  EXPECT_EQ(q.groups_per_row, 2);
  EXPECT_EQ(q.scales[0], 4.0f / 448.0f);
  EXPECT_EQ(q.scales[1], 1e-10f / 448.0f);
  EXPECT_EQ(q.codes, (std::vector<uint8_t>{0x7E, 0xEE, 0x00, 0x00}));
}

// The nvfp4 scheme's activations (libquant/NUMERICS.md §10.5): hand-derived with gs = 256.
TEST(ActivationQuant, Nvfp4GroupsOf16UseFp8ScalesUnderTheGlobalScaleAsVllm) {
  const Scheme* s = find_scheme("nvfp4");
  ASSERT_NE(s, nullptr);
  LinearDescriptor d = descriptor_from_args(QuantArgs{QuantType::Float8E4M3, Strategy::Group, 16, 0, 0, false},
                                            s->input, 4, 48);
  EXPECT_EQ(d.act_group, 16);
  EXPECT_TRUE(d.act_fp4_values);
  EXPECT_TRUE(d.needs_static_act_scale());
  std::vector<float> x(48, 0.0f);
  // Group 0, amax 6: c = e4m3(256 * (6 * f32(1/6)) = 256) = 256, multiplier 1/(256 * (1/256)) = 1:
  // the values round to E2M1 directly (0.7 -> 0.5, 0.25 -> 0 tie to even, 0.76 -> 1, 5 -> 4 tie,
  // 2.5 -> 2 tie, -1.5 exact).
  const float g0[] = {6.0f, 3.0f, -1.5f, 0.7f, 0.25f, 0.76f, 5.0f, 2.5f};
  std::copy(std::begin(g0), std::end(g0), x.begin());
  // Group 1, amax 1: 256 * f32(1/6) = 42.666668 -> E4M3 44 (neighbours 40, 44); multiplier
  // 1/(44/256) = 5.8181820: 1 -> 5.818 -> 6, 0.5 -> 2.909 -> 3, -0.3 -> -1.745 -> -1.5,
  // 0.1 -> 0.582 -> 0.5; dequantized with 44/256 = 0.171875.
  const float g1[] = {1.0f, 0.5f, -0.3f, 0.1f};
  std::copy(std::begin(g1), std::end(g1), x.begin() + 16);
  // Group 2 stays all zero: scale code 0, codes 0.
  QuantizedActivations q = quantize_activations(d, x.data(), 1, 256.0f);
  ASSERT_EQ(q.groups_per_row, 3);
  EXPECT_EQ(q.scales[0], 1.0f);
  EXPECT_EQ(q.scales[1], 0.171875f);
  EXPECT_EQ(q.scales[2], 0.0f);
  auto val = [&](int k) { return f32_from_e4m3fn(q.codes[static_cast<size_t>(k)]) * q.scale(0, k); };
  const float w0[] = {6.0f, 3.0f, -1.5f, 0.5f, 0.0f, 1.0f, 4.0f, 2.0f};
  for (int k = 0; k < 8; ++k) EXPECT_EQ(val(k), w0[k]) << k;
  const float w1[] = {6 * 0.171875f, 3 * 0.171875f, -1.5f * 0.171875f, 0.5f * 0.171875f};
  for (int k = 0; k < 4; ++k) EXPECT_EQ(val(16 + k), w1[k]) << k;
  for (int k = 32; k < 48; ++k) EXPECT_EQ(q.codes[static_cast<size_t>(k)], 0) << k;
  // A global scale calibrated far too large saturates the FP8 group scale at 448 and the codes
  // at 6: gs = 1e6, amax 6 -> code 448, value 6 * 448 / 1e6.
  std::vector<float> y(48, 0.0f);
  y[0] = 6.0f;
  QuantizedActivations big = quantize_activations(d, y.data(), 1, 1e6f);
  EXPECT_EQ(big.scales[0], 448.0f / 1e6f);
  EXPECT_EQ(f32_from_e4m3fn(big.codes[0]), 6.0f);
  EXPECT_EQ(nvfp4_act_group_scale(6.0f, 1e6f), 0x7E);
}

// The mxfp8 scheme's activations (NUMERICS.md §10.6): E8M0 of amax/448 rounded up.
TEST(ActivationQuant, Mxfp8GroupsOf32RoundTheScaleUpToAPowerOfTwo) {
  const Scheme* s = find_scheme("mxfp8");
  ASSERT_NE(s, nullptr);
  LinearDescriptor d = descriptor_from_args(QuantArgs{QuantType::Float8E4M3, Strategy::Group, 32, 0, 0, false},
                                            s->input, 4, 96);
  EXPECT_EQ(d.act_scale_format, ScaleFormat::E8M0);
  EXPECT_FALSE(d.needs_static_act_scale());
  // amax 1: 1 * f32(1/448) = 0.002232143 = 2^-9 * 1.14 -> rounded up to 2^-8 (E 119), multiplier
  // 256: 1 -> 256, 0.3 -> 76.8 -> E4M3 80, -0.001 -> -0.256 -> -0.25.
  // amax 1.75: 1.75 * f32(1/448) is exactly 2^-8 -> E 119 (no rounding up); 1.75 -> 448.
  // amax 0: E 0, codes 0.
  std::vector<float> x(96, 0.0f);
  x[0] = 1.0f, x[1] = 0.3f, x[2] = -0.001f;
  x[32] = 1.75f, x[33] = -1.0f;
  QuantizedActivations q = quantize_activations(d, x.data(), 1, 0.0f);
  EXPECT_EQ(mxfp8_act_exponent(1.0f), 119);
  EXPECT_EQ(mxfp8_act_exponent(1.75f), 119);
  EXPECT_EQ(mxfp8_act_exponent(448.0f), 127);
  EXPECT_EQ(mxfp8_act_exponent(0.0f), 0);
  EXPECT_EQ(mxfp8_act_exponent(1e38f), 245);  // 1e38 / 448 = 2^117.4 -> 2^118 (f32 never reaches 2^127)
  EXPECT_EQ(q.scales[0], 0x1p-8f);
  EXPECT_EQ(q.scales[1], 0x1p-8f);
  EXPECT_EQ(q.scales[2], 0x1p-127f);
  EXPECT_EQ(f32_from_e4m3fn(q.codes[0]), 256.0f);
  EXPECT_EQ(f32_from_e4m3fn(q.codes[1]), 80.0f);
  EXPECT_EQ(f32_from_e4m3fn(q.codes[2]), -0.25f);
  EXPECT_EQ(f32_from_e4m3fn(q.codes[32]), 448.0f);
  EXPECT_EQ(f32_from_e4m3fn(q.codes[33]), -256.0f);
  for (int k = 64; k < 96; ++k) EXPECT_EQ(q.codes[static_cast<size_t>(k)], 0) << k;
}

// The mxfp4 scheme's activations (NUMERICS.md §10.7): vLLM's SM >= 100 path (FlashInfer's CuTe-DSL
// MXFP4 quantizer) takes E = ceil(log2(f32(amax * f32(1/6)))) + 127 from the product's bits and
// rounds x * 2^(127-E) to E2M1 nearest-even. Every value below is derived by hand.
TEST(ActivationQuant, Mxfp4GroupsOf32RoundTheScaleOfAmaxOver6UpToAPowerOfTwo) {
  const Scheme* s = find_scheme("mxfp4");
  ASSERT_NE(s, nullptr);
  LinearDescriptor d = descriptor_from_args(QuantArgs{QuantType::Float8E4M3, Strategy::Group, 32, 0, 0, false},
                                            s->input, 4, 128);
  EXPECT_EQ(d.act_scale_format, ScaleFormat::E8M0);
  EXPECT_TRUE(d.act_fp4_values);
  EXPECT_FALSE(d.needs_static_act_scale());
  // f32(1/6) = 0x3E2AAAAB = 11184811 * 2^-26.
  // amax 6.5: r = 1.0833334 (exponent 0, mantissa != 0) -> 2^1, E 128. (compressed-tensors' weight
  //   rule gives scale 1 here: 6.5 = 1.625 * 4 rounds down; OCP's floor(log2 6.5) - 2 = 0 too.)
  // amax 6: 6 * 11184811 * 2^-26 = 1 + 2^-25 rounds to 1.0 exactly -> E 127 (no rounding up).
  // amax 3: 3 * 11184811 * 2^-26 = 0.5 + 2^-26 rounds to 0.5 -> E 126.
  // amax 1: r = 0.16666667 = 1.33 * 2^-3 -> 2^-2, E 125.
  // amax 3e38: r = 5e37 = 1.18 * 2^125 -> 2^126, E 253. amax 1e-40: r subnormal -> E 1. amax 0 -> 0.
  EXPECT_EQ(mxfp4_act_exponent(6.5f), 128);
  EXPECT_EQ(mxfp4_act_exponent(6.0f), 127);
  EXPECT_EQ(mxfp4_act_exponent(3.0f), 126);
  EXPECT_EQ(mxfp4_act_exponent(1.0f), 125);
  EXPECT_EQ(mxfp4_act_exponent(3e38f), 253);
  EXPECT_EQ(mxfp4_act_exponent(1e-40f), 1);
  EXPECT_EQ(mxfp4_act_exponent(0.0f), 0);
  std::vector<float> x(128, 0.0f);
  // group 0 (scale 2, multiplier 1/2): 6.5 -> 3.25 -> 3 (value 6); 2.5 -> 1.25 -> tie -> 1 (value
  //   2); -1 -> -0.5; 0.3 -> 0.15 -> 0.
  x[0] = 6.5f, x[1] = 2.5f, x[2] = -1.0f, x[3] = 0.3f;
  // group 1 (scale 1): 6 -> 6; -5 -> tie 4 | 6 -> -4; 3.5 -> tie 3 | 4 -> 4; 0.25 -> 0; 0.75 -> 1.
  x[32] = 6.0f, x[33] = -5.0f, x[34] = 3.5f, x[35] = 0.25f, x[36] = 0.75f;
  // group 2 (scale 1/4, multiplier 4): 1 -> 4 (value 1); -0.1 -> -0.4 -> -0.5 (value -0.125).
  x[64] = 1.0f, x[65] = -0.1f;
  // group 3: all zero -> E 0, codes 0.
  QuantizedActivations q = quantize_activations(d, x.data(), 1, 0.0f);
  ASSERT_EQ(q.scales.size(), 4u);
  EXPECT_EQ(q.scales[0], 2.0f);
  EXPECT_EQ(q.scales[1], 1.0f);
  EXPECT_EQ(q.scales[2], 0.25f);
  EXPECT_EQ(q.scales[3], 0x1p-127f);
  auto value = [&](int k) { return f32_from_e4m3fn(q.codes[static_cast<size_t>(k)]) * q.scale(0, k); };
  EXPECT_EQ(value(0), 6.0f);
  EXPECT_EQ(value(1), 2.0f);
  EXPECT_EQ(value(2), -1.0f);
  EXPECT_EQ(value(3), 0.0f);
  EXPECT_EQ(value(32), 6.0f);
  EXPECT_EQ(value(33), -4.0f);
  EXPECT_EQ(value(34), 4.0f);
  EXPECT_EQ(value(35), 0.0f);
  EXPECT_EQ(value(36), 1.0f);
  EXPECT_EQ(value(64), 1.0f);
  EXPECT_EQ(value(65), -0.125f);
  for (int k = 96; k < 128; ++k) EXPECT_EQ(q.codes[static_cast<size_t>(k)], 0) << k;
}

TEST(ActivationQuant, RejectsNonFiniteActivationsNamingThePosition) {
  LinearDescriptor d = desc(QuantType::Float8E4M3, Strategy::Channel, ActType::Float8E4M3,
                            ActScheme::DynamicToken, 1, 3);
  std::vector<float> x = {1.0f, 2.0f, 3.0f, 4.0f, NAN, 6.0f};
  try {
    quantize_activations(d, x.data(), 2, 0.0f);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_EQ(e.kind(), InputError::Kind::BadValue);
    EXPECT_NE(std::string(e.what()).find("NaN at [1, 1]"), std::string::npos) << e.what();
  }
}

// ---- the reference kernel against hand-derived GEMMs --------------------------------------------

TEST(CpuRef, ComputesAHandDerivedWeightOnlyInt8Gemm) {
  // W codes [[1, -2, 3], [4, 0, -1]], per-channel scales [0.5, 2]; X [[1, 2, 3], [-1, 0.5, 2]].
  // Y[0][0] = 0.5 * (1 - 4 + 9)    = 3       Y[0][1] = 2 * (4 + 0 - 3)   = 2
  // Y[1][0] = 0.5 * (-1 - 1 + 6)   = 2       Y[1][1] = 2 * (-4 + 0 - 2)  = -12
  Layer L;
  L.d = desc(QuantType::Int8, Strategy::Channel, ActType::None, ActScheme::None, 2, 3);
  for (int v : {1, -2, 3, 4, 0, -1}) L.codes.push_back(static_cast<uint8_t>(static_cast<int8_t>(v)));
  L.scales = {0.5f, 2.0f};
  L.scale_bits = {bf16_from_f32(0.5f), bf16_from_f32(2.0f)};
  std::vector<float> x = {1, 2, 3, -1, 0.5f, 2};
  EXPECT_EQ(run_kernel(cpu_ref_kernel(), L, x, 2), (std::vector<float>{3, 2, 2, -12}));
}

TEST(CpuRef, ComputesAHandDerivedFp8PerTokenGemm) {
  // Token [1, -2, 0.5] quantizes to values [224, -448, 112] with s_x = 0.004464285913854837 (V1).
  // Row 0: codes 0x38 x3 (1.0 each), s_w = 0.5: dot = 224 - 448 + 112 = -112,
  //   (-112 * s_x) * 0.5 = -0.25000001117587090 -> f32 -0.25 (|err| < half ulp 1.49e-8).
  // Row 1: codes [0x40 (2.0), 0x00, 0xC8 (-4.0)], s_w = 0.125: dot = 448 - 448 = 0 -> 0.
  // Row 2: codes [0x01 (2^-9), 0x08 (2^-6), 0x30 (0.5)], s_w = 1:
  //   dot = 224*2^-9 - 448*2^-6 + 112*0.5 = 0.4375 - 7 + 56 = 49.4375 (exact in f64),
  //   49.4375 * 0.004464285913854837 = 0.22070313 (f64 0.2207031294...), f32 0.22070312.
  Layer L;
  L.d = desc(QuantType::Float8E4M3, Strategy::Channel, ActType::Float8E4M3, ActScheme::DynamicToken, 3, 3);
  L.codes = {0x38, 0x38, 0x38, 0x40, 0x00, 0xC8, 0x01, 0x08, 0x30};
  L.scales = {0.5f, 0.125f, 1.0f};
  for (float s : L.scales) L.scale_bits.push_back(bf16_from_f32(s));
  std::vector<float> x = {1.0f, -2.0f, 0.5f};
  std::vector<float> y = run_kernel(cpu_ref_kernel(), L, x, 1);
  const double sx = 0.004464285913854837;
  EXPECT_EQ(y[0], -0.25f);
  EXPECT_EQ(y[1], 0.0f);
  EXPECT_EQ(y[2], static_cast<float>(49.4375 * sx));
  EXPECT_NEAR(y[2], 0.2207031, 1e-7);
}

TEST(CpuRef, AppliesGroupScalesPerSegment) {
  // INT8 weight-only, group 2 along K = 4: W row [1, 1, 1, 1], scales [1, 0.5]; X [1, 2, 3, 4]:
  // Y = 1 * (1 + 2) + 0.5 * (3 + 4) = 6.5. Second row [2, 0, 0, -1], scales [0.25, 4]:
  // Y = 0.25 * 2 + 4 * (-4) = -15.5.
  Layer L;
  L.d = desc(QuantType::Int8, Strategy::Group, ActType::None, ActScheme::None, 2, 4, 2);
  for (int v : {1, 1, 1, 1, 2, 0, 0, -1}) L.codes.push_back(static_cast<uint8_t>(static_cast<int8_t>(v)));
  L.scales = {1.0f, 0.5f, 0.25f, 4.0f};
  for (float s : L.scales) L.scale_bits.push_back(bf16_from_f32(s));
  std::vector<float> x = {1, 2, 3, 4};
  EXPECT_EQ(run_kernel(cpu_ref_kernel(), L, x, 1), (std::vector<float>{6.5f, -15.5f}));
}

TEST(CpuRef, ComputesAHandDerivedStaticInt8Gemm) {
  // s_x = 0.5, X [1.25, -3] -> codes [2 (2.5 half-even), -6]; W [[3, -128]] per-tensor s_w = 0.25:
  // dot = 6 + 768 = 774; Y = (774 * 0.5) * 0.25 = 96.75.
  Layer L;
  L.d = desc(QuantType::Int8, Strategy::Tensor, ActType::Int8, ActScheme::StaticTensor, 1, 2);
  L.codes = {3, static_cast<uint8_t>(-128)};
  L.scales = {0.25f};
  L.scale_bits = {bf16_from_f32(0.25f)};
  L.input_scale = 0.5f;
  std::vector<float> x = {1.25f, -3.0f};
  EXPECT_EQ(run_kernel(cpu_ref_kernel(), L, x, 1), (std::vector<float>{96.75f}));
}

// ---- every kernel against the reference ----------------------------------------------------------

std::vector<const Kernel*> non_reference_kernels() {
  std::vector<const Kernel*> ks;
  for (const Kernel* k : Registry::builtin().kernels())
    if (k->name() != "cpu_ref") ks.push_back(k);
  return ks;
}

const int64_t kMs[] = {1, 3, 17, 64};
const int64_t kNs[] = {1, 8, 33};
const int64_t kKs[] = {1, 16, 127, 256};

TEST(CpuKernels, Int8W8A8MatchesTheReferenceBitForBit) {
  // INT8 dot products are exact int32 in every kernel and the f64 epilogue runs the same
  // operations in the same order, so Y must be identical bytes.
  int compared = 0;
  for (ActScheme as : {ActScheme::DynamicToken, ActScheme::StaticTensor})
    for (int64_t M : kMs)
      for (int64_t N : kNs)
        for (int64_t K : kKs) {
          LinearDescriptor d = desc(QuantType::Int8, Strategy::Channel, ActType::Int8, as, N, K);
          Layer L = make_layer(d, static_cast<uint32_t>(M * 1000 + N * 10 + K));
          std::vector<float> x = make_x(M, K, static_cast<uint32_t>(K * 7 + M));
          set_static_scale(L, x);
          const std::vector<float> ref = run_kernel(cpu_ref_kernel(), L, x, M);
          for (const Kernel* k : non_reference_kernels()) {
            if (!k->can_implement(L.d).empty()) continue;
            const std::vector<float> y = run_kernel(*k, L, x, M);
            ASSERT_EQ(std::memcmp(y.data(), ref.data(), y.size() * 4), 0)
                << k->name() << " M=" << M << " N=" << N << " K=" << K << " " << L.d.describe();
            ++compared;
          }
        }
  EXPECT_GE(compared, 96);  // at least cpu_portable for every case
}

TEST(CpuKernels, Int8GroupWeightsMatchTheReferenceBitForBitAcrossSegments) {
  // INT8 per-group-64 weights with per-token INT8 activations: four int32 segments per output;
  // N = 140 spans two chunks of cpu_fast panels, M = 9 two row tiles.
  LinearDescriptor d = desc(QuantType::Int8, Strategy::Group, ActType::Int8, ActScheme::DynamicToken, 140, 256, 64);
  Layer L = make_layer(d, 99);
  std::vector<float> x = make_x(9, 256, 5);
  const std::vector<float> ref = run_kernel(cpu_ref_kernel(), L, x, 9);
  for (const Kernel* k : non_reference_kernels()) {
    if (!k->can_implement(L.d).empty()) continue;
    const std::vector<float> y = run_kernel(*k, L, x, 9);
    EXPECT_EQ(std::memcmp(y.data(), ref.data(), y.size() * 4), 0) << k->name();
  }
}

// Error bound for f32 accumulation. A kernel's segment dot product of L terms, summed in f32 with
// one rounding per product and per addition (or one per FMA), differs from the exact sum by at
// most gamma_{2L} * sum|a_k b_k| with gamma_n = n u / (1 - n u), u = 2^-24 (Higham, "Accuracy and
// Stability of Numerical Algorithms", 3.1); summed over segments with their scales that is at most
// 2 (K + 1) u * S with S = sum_k |sx sw a b|, to first order. The reference is exact up to f64
// roundings (relative ~2^-52, negligible). Both round the f64 result to f32 once: another
// 2^-24 |Y| each. Tolerance: 2 (K + 2) 2^-24 S + 2^-23 |Y_ref| + the smallest f32 subnormal.
double tolerance(double S, float yref, int64_t K) {
  return 2.0 * static_cast<double>(K + 2) * 0x1p-24 * S + 0x1p-23 * std::fabs(yref) + 0x1p-149;
}

void expect_within_bound(const Layer& L, const std::vector<float>& x, int64_t M, const char* what) {
  const std::vector<float> ref = run_kernel(cpu_ref_kernel(), L, x, M);
  const std::vector<double> S = abs_sums(L, x, M);
  double maxref = 0.0;
  for (float v : ref) maxref = std::max(maxref, static_cast<double>(std::fabs(v)));
  EXPECT_GT(maxref, 0.0) << "degenerate case " << what;
  for (const Kernel* k : non_reference_kernels()) {
    if (!k->can_implement(L.d).empty()) continue;
    const std::vector<float> y = run_kernel(*k, L, x, M);
    for (size_t i = 0; i < y.size(); ++i) {
      const double err = std::fabs(static_cast<double>(y[i]) - ref[i]);
      ASSERT_LE(err, tolerance(S[i], ref[i], L.d.K))
          << k->name() << " " << what << " M=" << M << " " << L.d.describe() << " element " << i
          << ": " << y[i] << " vs " << ref[i];
    }
  }
}

TEST(CpuKernels, Fp8AndWeightOnlyStayWithinTheKDerivedErrorBound) {
  struct Case {
    const char* what;
    QuantType wt;
    Strategy ws;
    ActType at;
    ActScheme as;
    int64_t wg, ag;
  };
  const Case cases[] = {
      {"fp8 channel x token", QuantType::Float8E4M3, Strategy::Channel, ActType::Float8E4M3, ActScheme::DynamicToken, 0, 0},
      {"fp8 tensor x static", QuantType::Float8E4M3, Strategy::Tensor, ActType::Float8E4M3, ActScheme::StaticTensor, 0, 0},
      {"fp8 tensor x dynamic tensor", QuantType::Float8E4M3, Strategy::Tensor, ActType::Float8E4M3, ActScheme::DynamicTensor, 0, 0},
      {"fp8 block16 x group16", QuantType::Float8E4M3, Strategy::Block, ActType::Float8E4M3, ActScheme::DynamicGroup, 16, 16},
      {"fp8 weight-only", QuantType::Float8E4M3, Strategy::Channel, ActType::None, ActScheme::None, 0, 0},
      {"int8 weight-only", QuantType::Int8, Strategy::Channel, ActType::None, ActScheme::None, 0, 0},
      {"int4 group16 weight-only", QuantType::Int4, Strategy::Group, ActType::None, ActScheme::None, 16, 0},
  };
  int run = 0;
  for (const Case& c : cases)
    for (int64_t M : kMs)
      for (int64_t N : kNs)
        for (int64_t K : kKs) {
          LinearDescriptor d = desc(c.wt, c.ws, c.at, c.as, N, K, c.wg, c.ag);
          if (!cpu_ref_kernel().can_implement(d).empty()) continue;  // groups need 16 | K
          Layer L = make_layer(d, static_cast<uint32_t>(M * 7919 + N * 31 + K));
          std::vector<float> x = make_x(M, K, static_cast<uint32_t>(N * 13 + K));
          set_static_scale(L, x);
          expect_within_bound(L, x, M, c.what);
          ++run;
        }
  EXPECT_GE(run, 7 * 4 * 3 * 2);
}

TEST(CpuKernels, LongAndBlockedProblemsStayWithinTheBound) {
  // K > 256 (several decoded k-blocks per segment), N past two chunks of 8 panels, M past one
  // row tile, and 128-wide weight blocks with a partial last block (K = 600) against per-token
  // activations.
  Layer a = make_layer(desc(QuantType::Float8E4M3, Strategy::Channel, ActType::Float8E4M3,
                            ActScheme::DynamicToken, 150, 600), 1);
  expect_within_bound(a, make_x(13, 600, 2), 13, "fp8 long K");
  Layer b = make_layer(desc(QuantType::Float8E4M3, Strategy::Block, ActType::Float8E4M3,
                            ActScheme::DynamicToken, 70, 600, 128), 3);
  expect_within_bound(b, make_x(7, 600, 4), 7, "fp8 partial block");
  Layer c = make_layer(desc(QuantType::Int4, Strategy::Group, ActType::None, ActScheme::None, 50, 512, 128), 5);
  expect_within_bound(c, make_x(20, 512, 6), 20, "int4 group 128");
}

TEST(CpuKernels, ResultsDoNotDependOnTheThreadCountOrTheRun) {
#ifdef _OPENMP
  const int saved = omp_get_max_threads();
  for (const Kernel* k : Registry::builtin().kernels()) {
    for (ActType at : {ActType::Float8E4M3, ActType::Int8}) {
      const QuantType wt = at == ActType::Int8 ? QuantType::Int8 : QuantType::Float8E4M3;
      // 20 x 150 x 800 = 2.4M multiply-adds: above detail::kParallelMinWork, so threads are used.
      Layer L = make_layer(desc(wt, Strategy::Channel, at, ActScheme::DynamicToken, 150, 800), 11);
      if (!k->can_implement(L.d).empty()) continue;
      ASSERT_GE(20 * 150 * 800, detail::kParallelMinWork);
      std::vector<float> x = make_x(20, 800, 12);
      omp_set_num_threads(1);
      const std::vector<float> y1 = run_kernel(*k, L, x, 20);
      for (int t : {2, 3, 4}) {
        omp_set_num_threads(t);
        const std::vector<float> yt = run_kernel(*k, L, x, 20);
        EXPECT_EQ(std::memcmp(y1.data(), yt.data(), y1.size() * 4), 0) << k->name() << " threads " << t;
      }
      EXPECT_EQ(std::memcmp(y1.data(), run_kernel(*k, L, x, 20).data(), y1.size() * 4), 0);
    }
  }
  omp_set_num_threads(saved);
#else
  GTEST_SKIP() << "built without OpenMP";
#endif
}

TEST(CpuKernels, ATokensResultDoesNotDependOnTheBatchItCameIn) {
  // cpu_fast runs one row (M = 1) through a register-decoding GEMV and larger batches through
  // packed f32 panels; both keep one FMA chain per output in increasing k, so row 4 of a batch of
  // 7 must equal the same row run alone, bit for bit (for every kernel and weight type).
  for (const Kernel* k : Registry::builtin().kernels())
    for (QuantType wt : {QuantType::Float8E4M3, QuantType::Int8, QuantType::Int4}) {
      const bool fp8 = wt == QuantType::Float8E4M3;
      LinearDescriptor d = desc(wt, fp8 ? Strategy::Block : Strategy::Group,
                                fp8 ? ActType::Float8E4M3 : ActType::None,
                                fp8 ? ActScheme::DynamicToken : ActScheme::None, 150, 640, 128);
      if (!k->can_implement(d).empty()) continue;
      Layer L = make_layer(d, 21);
      const std::vector<float> x = make_x(7, 640, 22);
      const std::vector<float> batch = run_kernel(*k, L, x, 7);
      const std::vector<float> row(x.begin() + 4 * 640, x.begin() + 5 * 640);
      const std::vector<float> alone = run_kernel(*k, L, row, 1);
      EXPECT_EQ(std::memcmp(alone.data(), batch.data() + 4 * 150, 150 * 4), 0)
          << k->name() << " " << d.describe();
    }
}

TEST(CpuKernels, CpuFastGivesTheSameBitsOnItsAvx512AndAvx2MicroKernels) {
  // The f32 path's micro-kernels (tile and one-row GEMV) exist for AVX-512 F and AVX2; both keep
  // one FMA chain per output in increasing k, so capping the ISA must change no bit.
  if (cpu_isa() != Isa::Avx512) GTEST_SKIP() << "this CPU has no AVX-512 F: only the AVX2 micro-kernels run";
  const Kernel& k = cpu_fast_kernel();
  for (QuantType wt : {QuantType::Float8E4M3, QuantType::Int8, QuantType::Int4}) {
    const bool fp8 = wt == QuantType::Float8E4M3;
    LinearDescriptor d = desc(wt, fp8 ? Strategy::Block : Strategy::Group, fp8 ? ActType::Float8E4M3 : ActType::None,
                              fp8 ? ActScheme::DynamicToken : ActScheme::None, 150, 640, 128);
    ASSERT_EQ(k.can_implement(d), "") << d.describe();
    Layer L = make_layer(d, 31);
    for (int64_t M : {1, 5, 13}) {
      const std::vector<float> x = make_x(M, 640, 32);
      isa_cap_for_tests(Isa::Avx2);
      const std::vector<float> y2 = run_kernel(k, L, x, M);
      isa_cap_for_tests(Isa::Avx512);
      const std::vector<float> y5 = run_kernel(k, L, x, M);
      EXPECT_EQ(std::memcmp(y2.data(), y5.data(), y2.size() * 4), 0) << d.describe() << " M " << M;
    }
  }
}

TEST(CpuKernels, ZeroTokensProduceNothingAndTouchNothing) {
  Layer L = make_layer(desc(QuantType::Int8, Strategy::Channel, ActType::Int8, ActScheme::DynamicToken, 5, 8), 1);
  for (const Kernel* k : Registry::builtin().kernels()) {
    if (!k->can_implement(L.d).empty()) continue;
    auto p = k->pack(L.d, L.ref());
    float sentinel = 7.0f;
    k->run(*p, nullptr, 0, &sentinel);
    EXPECT_EQ(sentinel, 7.0f) << k->name();
  }
}

// ---- qtool's schemes, end to end from float weights ---------------------------------------------

TEST(CpuKernels, EveryQtoolSchemeGetsAKernelThatAgreesWithTheReference) {
  const int64_t N = 80, K = 256, M = 5;
  std::mt19937 rng(2024);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  std::vector<uint16_t> wbits(static_cast<size_t>(N * K));
  for (uint16_t& b : wbits) b = bf16_from_f32(nd(rng));
  TensorView wv;
  wv.name = "w";
  wv.dtype = DType::BF16;
  wv.shape = {N, K};
  wv.bytes = {reinterpret_cast<const uint8_t*>(wbits.data()), wbits.size() * 2};
  const std::vector<float> x = make_x(M, K, 77);

  for (const Scheme& s : all_schemes()) {
    // FP4 / MX layers reach the kernels only as their FP8 + F32-scale equivalent
    // (formats/quantized_linear.h); test_microscale and the verify tests cover that path.
    if (s.weights.microscale()) continue;
    LinearDescriptor d = descriptor_from_args(s.weights, s.input, N, K);
    const Selection sel = Registry::builtin().select(d);
    ASSERT_NE(sel.chosen, nullptr) << s.name << ": " << sel.error;
    EXPECT_EQ(sel.chosen->name(), avx2_cpu() ? "cpu_fast" : "cpu_portable") << s.name;

    QuantizedWeight q = quantize_weight(wv, s.weights);
    const float in_scale = 0.02f;  // F32 static input scale (static schemes only)
    QuantizedWeightRef ref = weight_ref(q, d, reinterpret_cast<const uint8_t*>(&in_scale));
    // Convert the layer's codes/scales into a Layer for the shared checks.
    Layer L;
    L.d = d;
    L.codes = q.codes;
    L.scale_bits.resize(q.scale_bytes.size() / 2);
    std::memcpy(L.scale_bits.data(), q.scale_bytes.data(), q.scale_bytes.size());
    for (uint16_t b : L.scale_bits) L.scales.push_back(f32_from_bf16(b));
    L.input_scale = in_scale;
    ASSERT_EQ(ref.codes, q.codes.data());
    if (d.act_type == ActType::Int8) {
      const std::vector<float> yr = run_kernel(cpu_ref_kernel(), L, x, M);
      const std::vector<float> yk = run_kernel(*sel.chosen, L, x, M);
      EXPECT_EQ(std::memcmp(yr.data(), yk.data(), yr.size() * 4), 0) << s.name;
    } else {
      expect_within_bound(L, x, M, s.name);
    }
  }
}

TEST(CpuKernels, WeightOnlyLayersApproximateTheFloatGemm) {
  // Sanity of the whole chain: quantize float weights (W8A16 INT8 per-channel), run the kernel, and
  // compare with X . W^T in f64 from the original bf16 weights. INT8 rounding error per weight is
  // at most half a step (amax/127.5/2), so |Y - Y_float| <= sum_k |x_k| * step_n / 2.
  const int64_t N = 24, K = 64, M = 3;
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> wf(static_cast<size_t>(N * K));
  std::vector<uint16_t> wbits;
  for (float& v : wf) { v = f32_from_bf16(bf16_from_f32(nd(rng))); wbits.push_back(bf16_from_f32(v)); }
  TensorView wv;
  wv.name = "w";
  wv.dtype = DType::BF16;
  wv.shape = {N, K};
  wv.bytes = {reinterpret_cast<const uint8_t*>(wbits.data()), wbits.size() * 2};
  const Scheme* s = find_scheme("w8a16");
  QuantizedWeight q = quantize_weight(wv, s->weights);
  LinearDescriptor d = descriptor_from_args(s->weights, s->input, N, K);
  const Kernel* k = Registry::builtin().select(d).chosen;
  ASSERT_NE(k, nullptr);
  auto p = k->pack(d, weight_ref(q, d));
  const std::vector<float> x = make_x(M, K, 6);
  std::vector<float> y(static_cast<size_t>(M * N));
  k->run(*p, x.data(), M, y.data());
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double exact = 0.0, xabs = 0.0;
      for (int64_t kk = 0; kk < K; ++kk) {
        exact += static_cast<double>(x[static_cast<size_t>(m * K + kk)]) * wf[static_cast<size_t>(n * K + kk)];
        xabs += std::fabs(x[static_cast<size_t>(m * K + kk)]);
      }
      const double step = f32_from_bf16(reinterpret_cast<const uint16_t*>(q.scale_bytes.data())[n]);
      EXPECT_NEAR(y[static_cast<size_t>(m * N + n)], exact, xabs * step * 0.5 * 1.01 + 1e-5);
    }
}

// ---- can_implement reasons, pack validation, registry --------------------------------------------

std::string reason(const Kernel& k, const LinearDescriptor& d) { return k.can_implement(d); }

TEST(CpuKernels, CanImplementReasonsNameTheExactProblem) {
  for (const Kernel* k : Registry::builtin().kernels()) {
    if (k->name() == "cpu_fast" && !avx2_cpu()) {
      EXPECT_EQ(reason(*k, desc(QuantType::Int8, Strategy::Channel, ActType::Int8, ActScheme::DynamicToken, 8, 8)),
                "this CPU lacks AVX2, FMA or F16C");
      continue;
    }
    EXPECT_EQ(reason(*k, desc(QuantType::Int4, Strategy::Group, ActType::Int8, ActScheme::DynamicToken, 8, 256, 128)),
              "INT4 weights run weight-only (W4A16); INT4 weights with INT8 activations (W4A8) are not implemented")
        << k->name();
    EXPECT_EQ(reason(*k, desc(QuantType::Float8E4M3, Strategy::Channel, ActType::Int8, ActScheme::DynamicToken, 8, 8)),
              "FP8 weights with INT8 activations: no GEMM multiplies E4M3 by INT8 codes");
    EXPECT_EQ(reason(*k, desc(QuantType::Float8E4M3, Strategy::Channel, ActType::Float8E4M3, ActScheme::DynamicGroup, 8, 100, 0, 128)),
              "activation group size 128 does not divide K=100");
    EXPECT_EQ(reason(*k, desc(QuantType::Float8E4M3, Strategy::Block, ActType::Float8E4M3, ActScheme::DynamicGroup, 8, 384, 96, 128)),
              "weight scales span 96 columns and activation scales 128: neither divides the other, "
              "so no K-segment has constant scales");
    EXPECT_EQ(reason(*k, desc(QuantType::Int8, Strategy::Channel, ActType::Int8, ActScheme::DynamicGroup, 8, 256, 0, 128)),
              "INT8 activations per-group of 128: block-scaled GEMMs (vLLM cutlass_scaled_mm) are FP8-only");
    EXPECT_EQ(reason(*k, desc(QuantType::Int8, Strategy::Group, ActType::None, ActScheme::None, 8, 100, 64)),
              "weight group size 64 does not divide K=100");
    LinearDescriptor zp = desc(QuantType::Int8, Strategy::Channel, ActType::None, ActScheme::None, 8, 8);
    zp.weight_zero_points = true;
    EXPECT_EQ(reason(*k, zp), "asymmetric weights (zero points) are not implemented by the CPU "
                              "kernels (qtool writes symmetric weights only)");
  }
  // Kernel-specific limits.
  EXPECT_EQ(reason(cpu_ref_kernel(), desc(QuantType::Float8E4M3, Strategy::Channel, ActType::Float8E4M3,
                                          ActScheme::DynamicToken, 8, 131073)),
            "K-segment of 131073 exceeds 131072 = 2^17, the longest FP8 dot product float64 sums exactly");
  EXPECT_EQ(reason(cpu_ref_kernel(), desc(QuantType::Float8E4M3, Strategy::Channel, ActType::Float8E4M3,
                                          ActScheme::DynamicToken, 8, 131072)), "");
  EXPECT_EQ(reason(cpu_portable_kernel(), desc(QuantType::Int8, Strategy::Channel, ActType::Int8,
                                               ActScheme::DynamicToken, 8, 131072)),
            "K-segment of 131072 could overflow the int32 INT8 accumulator (limit 131071)");
  if (avx2_cpu()) {
    EXPECT_EQ(reason(cpu_fast_kernel(), desc(QuantType::Int8, Strategy::Group, ActType::Int8,
                                             ActScheme::DynamicToken, 8, 12, 3)),
              "INT8 scale segments of odd length 3 cannot be split into the k-pairs vpmaddwd consumes");
  }
}

TEST(CpuKernels, PackRejectsCodesAndScalesNoDeployedKernelCouldUse) {
  for (const Kernel* k : Registry::builtin().kernels()) {
    Layer f = make_layer(desc(QuantType::Float8E4M3, Strategy::Channel, ActType::Float8E4M3, ActScheme::DynamicToken, 4, 8), 1);
    if (!k->can_implement(f.d).empty()) continue;
    f.codes[13] = 0xFF;  // FP8 NaN at [1, 5]
    try {
      k->pack(f.d, f.ref());
      ADD_FAILURE() << k->name() << " accepted a NaN code";
    } catch (const InputError& e) {
      EXPECT_EQ(e.kind(), InputError::Kind::BadValue);
      EXPECT_EQ(e.tensor(), "layers.0.mlp.down_proj.weight");
      EXPECT_EQ(e.file(), "model.safetensors");
      EXPECT_EQ(e.problem(), "weight code 0xFF (FP8 NaN) at [1, 5]");
    }
    Layer i4 = make_layer(desc(QuantType::Int4, Strategy::Group, ActType::None, ActScheme::None, 2, 16, 8), 2);
    i4.codes[3] = 9;
    EXPECT_THROW(k->pack(i4.d, i4.ref()), InputError) << k->name();
    Layer st = make_layer(desc(QuantType::Int8, Strategy::Channel, ActType::Int8, ActScheme::StaticTensor, 2, 4), 3);
    QuantizedWeightRef r = st.ref();
    r.input_scale = nullptr;
    try {
      k->pack(st.d, r);
      ADD_FAILURE() << k->name() << " accepted a missing input scale";
    } catch (const InputError& e) {
      EXPECT_EQ(e.kind(), InputError::Kind::Missing);
    }
    st.input_scale = -1.0f;
    EXPECT_THROW(k->pack(st.d, st.ref()), InputError) << k->name();
    Layer ns = make_layer(desc(QuantType::Int8, Strategy::Channel, ActType::None, ActScheme::None, 2, 4), 4);
    ns.scale_bits[1] = 0x7FC0;  // bf16 NaN
    EXPECT_THROW(k->pack(ns.d, ns.ref()), InputError) << k->name();
  }
}

TEST(Registry, PrefersCpuFastWhenTheCpuHasAvx2) {
  const Registry& r = Registry::builtin();
  ASSERT_EQ(r.kernels().size(), 3u);
  EXPECT_EQ(r.kernels()[0]->name(), "cpu_fast");
  EXPECT_EQ(r.kernels()[1]->name(), "cpu_portable");
  EXPECT_EQ(r.kernels()[2]->name(), "cpu_ref");
  LinearDescriptor d = desc(QuantType::Float8E4M3, Strategy::Channel, ActType::Float8E4M3, ActScheme::DynamicToken, 64, 64);
  Selection s = r.select(d);
  ASSERT_NE(s.chosen, nullptr);
  EXPECT_EQ(s.chosen->name(), avx2_cpu() ? "cpu_fast" : "cpu_portable");
  EXPECT_TRUE(s.error.empty());
}

TEST(Registry, ReportsEveryRejectedKernelWithItsReason) {
  const Registry& r = Registry::builtin();
  LinearDescriptor d = desc(QuantType::Int8, Strategy::Channel, ActType::Int8, ActScheme::DynamicToken, 64, 64);
  Selection s = r.select(d, {"", {"cpu_fast"}});
  ASSERT_NE(s.chosen, nullptr);
  EXPECT_EQ(s.chosen->name(), "cpu_portable");
  ASSERT_EQ(s.rejected.size(), 2u);
  EXPECT_EQ(s.rejected[0].kernel->name(), "cpu_fast");
  EXPECT_EQ(s.rejected[0].reason, "disabled");
  EXPECT_EQ(s.rejected[1].kernel->name(), "cpu_ref");
  EXPECT_EQ(s.rejected[1].reason, "lower priority");

  s = r.select(d, {"cpu_ref", {}});
  ASSERT_NE(s.chosen, nullptr);
  EXPECT_EQ(s.chosen->name(), "cpu_ref");

  s = r.select(d, {"cuda_magic", {}});
  EXPECT_EQ(s.chosen, nullptr);
  EXPECT_EQ(s.error, "unknown kernel 'cuda_magic' (known: cpu_fast, cpu_portable, cpu_ref)");

  LinearDescriptor w4a8 = desc(QuantType::Int4, Strategy::Group, ActType::Int8, ActScheme::DynamicToken, 8, 256, 128);
  s = r.select(w4a8);
  EXPECT_EQ(s.chosen, nullptr);
  EXPECT_EQ(s.rejected.size(), 3u);
  EXPECT_NE(s.error.find("no kernel can run N=8 K=256"), std::string::npos) << s.error;
  EXPECT_NE(s.error.find("cpu_ref: INT4 weights run weight-only (W4A16)"), std::string::npos) << s.error;
}

TEST(Registry, TakesCustomKernelsInPriorityOrder) {
  Registry r({&cpu_ref_kernel(), &cpu_portable_kernel()});
  EXPECT_EQ(r.kernels()[0]->name(), "cpu_portable");
  EXPECT_EQ(r.find("cpu_ref"), &cpu_ref_kernel());
  EXPECT_EQ(r.find("cpu_fast"), nullptr);
  std::vector<Candidate> c = r.candidates(desc(QuantType::Int8, Strategy::Channel, ActType::None, ActScheme::None, 4, 4));
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].reason, "");
  EXPECT_EQ(c[1].reason, "");
}

}  // namespace
}  // namespace qt::kernels
