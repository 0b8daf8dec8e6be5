// The calibration forward's packed f32 GEMM (libquant/gemm.h): bit-identical to the scalar FMA chain
// it documents (AVX-512 and AVX2 micro-kernels and the scalar fallback alike) over sizes that hit every remainder
// (rows vs the 6-row tile and 96-row task, columns vs the 16-column panel and 128-column task, K
// vs the 8-wide vector and the 1024 K block); close to a float64 product within a bound derived
// from K; fused parts, split outputs and the residual add exactly equal to the separate steps;
// independent of the thread count. The bf16 GEMM: the AVX512-BF16 kernel bit-identical to its
// scalar emulation, the emulation to the documented vdpbf16ps chain, within the derived bound of
// the float64 product. Paths this CPU lacks are skipped with the reason.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iterator>
#include <memory>
#include <random>
#include <vector>

#include "libquant/cpu_isa.h"
#include "libquant/gemm.h"
#include "libquant/kernels/gemm_avx512.h"
#include "libquant/vmath.h"
#include "tests/support/test_support.h"

namespace qt {
namespace {

// Every test here is about the own kernels (oneDNN's bf16 path: test_gemm_onednn), also on AMX
// machines, where the bf16 GEMM would otherwise default to oneDNN.
class OwnBf16Kernel : public ::testing::Environment {
  void SetUp() override { own_ = std::make_unique<test::Bf16BackendScope>(Bf16Backend::Own); }
  void TearDown() override { own_.reset(); }
  std::unique_ptr<test::Bf16BackendScope> own_;
};
[[maybe_unused]] ::testing::Environment* const g_own_bf16 = ::testing::AddGlobalTestEnvironment(new OwnBf16Kernel);

std::vector<float> random_vec(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  // memcmp of two empty vectors would pass null pointers (undefined even for 0 bytes; UBSan).
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

struct Dims { int64_t T, N, K; };

std::vector<Dims> sweep() {
  std::vector<Dims> d;
  for (int64_t T : {1, 5, 6, 7, 13, 97, 200})
    for (int64_t N : {1, 15, 16, 17, 130})
      for (int64_t K : {1, 7, 8, 9, 64, 1025}) d.push_back({T, N, K});
  return d;
}

// One ISA path at a time (cpu_isa.h cap); a path above what this CPU has is skipped.
class GemmKernel : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (static_cast<int>(cpu_isa()) < static_cast<int>(GetParam()))
      GTEST_SKIP() << "this CPU lacks " << isa_name(GetParam()) << " (best path here: " << isa_name(cpu_isa()) << ")";
    isa_cap_for_tests(GetParam());
    ASSERT_EQ(active_isa(), GetParam()) << "QTOOL_ISA caps the path below the one under test";
  }
  void TearDown() override { isa_cap_for_tests(Isa::Avx512); }
};

TEST_P(GemmKernel, EqualsTheScalarFmaChainBitForBitAtEverySize) {
  for (const Dims& d : sweep()) {
    SCOPED_TRACE("T=" + std::to_string(d.T) + " N=" + std::to_string(d.N) + " K=" + std::to_string(d.K));
    const auto x = random_vec(static_cast<size_t>(d.T * d.K), 1);
    const auto w = random_vec(static_cast<size_t>(d.N * d.K), 2);
    const auto b = random_vec(static_cast<size_t>(d.N), 3);
    const PackedLinear p = pack_linear({{w.data(), d.N}}, d.K, 2);
    for (const float* bias : {static_cast<const float*>(nullptr), b.data()}) {
      std::vector<float> got(static_cast<size_t>(d.T * d.N), NAN), want(got.size(), NAN);
      linear_packed(x.data(), d.T, p, bias, got.data(), d.N, 2);
      linear_ref(x.data(), d.T, w.data(), d.N, d.K, bias, want.data(), d.N);
      ASSERT_TRUE(same_bits(got, want)) << (bias ? "with bias" : "no bias");
    }
  }
}

TEST_P(GemmKernel, AttentionTileEqualsTheScalarFmaChainForEveryRowCount) {
  const int64_t K = 77, lda = 90;
  const auto a = random_vec(static_cast<size_t>(kTileRows * lda), 90);
  const auto b = random_vec(static_cast<size_t>(K * kTileCols), 91);
  const auto c0 = random_vec(static_cast<size_t>(kTileRows * kTileCols), 92);
  for (int rows = 1; rows <= kTileRows; ++rows)
    for (bool accumulate : {false, true}) {
      std::vector<float> got(c0), want(c0);
      gemm_tile(rows, a.data(), lda, b.data(), K, got.data(), accumulate);
      for (int r = 0; r < rows; ++r)
        for (int j = 0; j < kTileCols; ++j) {
          float s = accumulate ? c0[r * kTileCols + j] : 0.0f;
          for (int64_t k = 0; k < K; ++k) s = std::fma(a[r * lda + k], b[k * kTileCols + j], s);
          want[r * kTileCols + j] = s;
        }
      ASSERT_TRUE(same_bits(got, want)) << "rows " << rows << (accumulate ? " accumulate" : "");
    }
}

INSTANTIATE_TEST_SUITE_P(EveryIsa, GemmKernel, ::testing::Values(Isa::Scalar, Isa::Avx2, Isa::Avx512),
                         [](const auto& info) { return std::string(isa_name(info.param)); });

// ---- bf16 ----------------------------------------------------------------------------------

float f32_of_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST(Bf16, RoundingIsToNearestEvenWithSubnormalsToZeroAndQuietNaN) {
  EXPECT_EQ(bf16_round(1.0f), 0x3F80);
  EXPECT_EQ(bf16_round(1.0f + 0x1p-8f), 0x3F80);        // halfway between 1 and 1 + 2^-7: even
  EXPECT_EQ(bf16_round(1.0f + 3 * 0x1p-8f), 0x3F82);    // halfway between 0x3F81 and 0x3F82: even
  EXPECT_EQ(bf16_round(1.0f + 0x1p-8f + 0x1p-20f), 0x3F81);  // above halfway
  EXPECT_EQ(bf16_round(-2.0f), 0xC000);
  EXPECT_EQ(bf16_round(f32_of_bits(0x7F7FFFFFu)), 0x7F80);  // FLT_MAX rounds to +inf
  EXPECT_EQ(bf16_round(f32_of_bits(0x00000001u)), 0x0000);  // subnormal -> +0
  EXPECT_EQ(bf16_round(f32_of_bits(0x807FFFFFu)), 0x8000);  // -subnormal -> -0
  EXPECT_EQ(bf16_round(f32_of_bits(0x7F800001u)), 0x7FC0);  // signalling NaN -> quiet NaN
  EXPECT_EQ(bf16_to_f32(0x3F81), 1.0078125f);
}

TEST(Bf16, HardwareConversionEqualsTheScalarRounding) {
  if (!kernels::avx512::bf16_ok()) GTEST_SKIP() << "this CPU lacks AVX512-BF16";
  std::vector<float> x;
  for (uint32_t u = 0; u < 0xFFFFFFFFu - 65521u; u += 65521u) x.push_back(f32_of_bits(u));  // every exponent, both signs
  for (uint32_t u : {0x00000001u, 0x807FFFFFu, 0x7F800000u, 0xFF800000u, 0x7F800001u, 0x7FC00000u, 0x3F808000u,
                     0x3F818000u, 0x7F7FFFFFu})
    x.push_back(f32_of_bits(u));
  for (size_t n : {x.size(), size_t{1}, size_t{17}, size_t{33}}) {
    std::vector<uint16_t> got(n);
    kernels::avx512::f32_to_bf16(x.data(), got.data(), static_cast<int64_t>(n));
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(got[i], bf16_round(x[i])) << "x = " << x[i];
  }
}

// Every own bf16 path -- AVX512-BF16, its AVX2 + FMA emulation (the ISA capped at AVX2), the
// scalar emulation -- equals linear_ref_bf16, the documented chain, at every size.
enum class Bf16Path { Hardware, Avx2Emulation, ScalarEmulation };
class Bf16Gemm : public ::testing::TestWithParam<Bf16Path> {
 protected:
  void SetUp() override {
    if (GetParam() == Bf16Path::Hardware && !bf16_hardware())
      GTEST_SKIP() << "this CPU lacks AVX512-BF16 (the emulations are tested)";
    if (GetParam() == Bf16Path::Avx2Emulation && static_cast<int>(cpu_isa()) < static_cast<int>(Isa::Avx2))
      GTEST_SKIP() << "this CPU lacks AVX2 and FMA (the scalar emulation is tested)";
    if (GetParam() == Bf16Path::Avx2Emulation) isa_cap_for_tests(Isa::Avx2);
    linear_force_scalar(GetParam() == Bf16Path::ScalarEmulation);
    if (GetParam() != Bf16Path::ScalarEmulation)  // (linear_force_scalar leaves bf16_hardware() alone)
      ASSERT_EQ(bf16_hardware(), GetParam() == Bf16Path::Hardware) << "QTOOL_ISA caps the path below the one under test";
  }
  void TearDown() override {
    linear_force_scalar(false);
    isa_cap_for_tests(Isa::Avx512);
  }
};

TEST_P(Bf16Gemm, EqualsTheDocumentedVdpbf16psChainBitForBitAtEverySize) {
  for (const Dims& d : sweep()) {
    SCOPED_TRACE("T=" + std::to_string(d.T) + " N=" + std::to_string(d.N) + " K=" + std::to_string(d.K));
    const auto x = random_vec(static_cast<size_t>(d.T * d.K), 1);
    const auto w = random_vec(static_cast<size_t>(d.N * d.K), 2);
    const auto b = random_vec(static_cast<size_t>(d.N), 3);
    const PackedLinear p = pack_linear({{w.data(), d.N}}, d.K, 2, GemmPrecision::BF16);
    for (const float* bias : {static_cast<const float*>(nullptr), b.data()}) {
      std::vector<float> got(static_cast<size_t>(d.T * d.N), NAN), want(got.size(), NAN);
      linear_packed(x.data(), d.T, p, bias, got.data(), d.N, 2);
      linear_ref_bf16(x.data(), d.T, w.data(), d.N, d.K, bias, want.data(), d.N);
      ASSERT_TRUE(same_bits(got, want)) << (bias ? "with bias" : "no bias");
    }
  }
}

TEST_P(Bf16Gemm, GluPairAndThreadCountsGiveTheSameBitsAsSeparateGemms) {
  const int64_t T = 130, I = 70, K = 301;
  const auto x = random_vec(static_cast<size_t>(T * K), 70, -3.0f, 3.0f);
  const auto wg = random_vec(static_cast<size_t>(I * K), 71), wu = random_vec(static_cast<size_t>(I * K), 72);
  std::vector<float> g(static_cast<size_t>(T * I)), u(g.size()), want(g.size()), got1(g.size()), got3(g.size());
  linear_packed(x.data(), T, pack_linear({{wg.data(), I}}, K, 1, GemmPrecision::BF16), nullptr, g.data(), I, 1);
  linear_packed(x.data(), T, pack_linear({{wu.data(), I}}, K, 1, GemmPrecision::BF16), nullptr, u.data(), I, 1);
  silu_mul_f32(g.data(), u.data(), want.data(), static_cast<int64_t>(g.size()));
  const PackedLinear glu = pack_glu(wg.data(), wu.data(), I, K, 3, GemmPrecision::BF16);
  linear_packed(x.data(), T, glu, nullptr, got1.data(), I, 1);
  linear_packed(x.data(), T, glu, nullptr, got3.data(), I, 3);
  EXPECT_TRUE(same_bits(got1, want));
  EXPECT_TRUE(same_bits(got3, want));
}

// The attention's bf16 tile (gemm_tile_bf16), written out here from gemm.h's documented chain:
// per output, for each k pair p ascending, s = ftz(fma(a[2p+1], b[2p+1], s)), then
// s = ftz(fma(a[2p], b[2p], s)) (vdpbf16ps: products of two bf16 are exact in f32; subnormal
// inputs and results flushed to signed zero). Operands are bf16 bit patterns made by truncating random f32 (so the
// test does not rely on bf16_round); the accumulator starts from C or from 0.
TEST_P(Bf16Gemm, AttentionTileEqualsTheDocumentedChainForEveryRowCount) {
  const int64_t kpn = 39, lda = 2 * kpn + 12;  // 78 k values in a row of 90
  auto bf16_bits = [](size_t n, uint32_t seed) {
    const auto f = random_vec(n, seed, -2.0f, 2.0f);
    std::vector<uint16_t> b(n);
    for (size_t i = 0; i < n; ++i) {
      uint32_t u;
      std::memcpy(&u, &f[i], 4);
      b[i] = static_cast<uint16_t>(u >> 16);
    }
    return b;
  };
  auto ftz = [](float x) { return std::fpclassify(x) == FP_SUBNORMAL ? std::copysign(0.0f, x) : x; };
  auto val = [&](uint16_t b) { return ftz(f32_of_bits(static_cast<uint32_t>(b) << 16)); };  // inputs flushed too
  auto a = bf16_bits(static_cast<size_t>(kTileRows * lda), 93);
  auto b = bf16_bits(static_cast<size_t>(kpn * kTileCols * 2), 94);
  // Edge values every path must treat alike: bf16 subnormals (flushed on input), the smallest
  // normals and tiny values whose products and sums fall below 2^-126 (flushed results), zeros.
  const uint16_t special[] = {0x0001, 0x807F, 0x0040, 0x0080, 0x8080, 0x0100, 0x1000, 0x9000, 0x0000, 0x8000};
  for (size_t i = 0; i < a.size(); i += 7) a[i] = special[(i / 7) % std::size(special)];
  for (size_t i = 0; i < b.size(); i += 5) b[i] = special[(i / 5) % std::size(special)];
  // A few rows of small values only, so that whole chains stay near the subnormal range.
  for (int64_t k = 0; k < 2 * kpn; ++k) a[static_cast<size_t>(2 * lda + k)] = special[k % std::size(special)];
  // Row 4: +-2^-125 with bf16 subnormals between, so that an unflushed subnormal input would move
  // a sum that stays near 2^-125 (its ulp is far below the subnormal product).
  for (int64_t k = 0; k < 2 * kpn; ++k)
    a[static_cast<size_t>(4 * lda + k)] = k % 4 == 3 ? 0x807F : 0x0100 ^ static_cast<uint16_t>(k & 1 ? 0x8000 : 0);
  // Column 3 of B the same way (against A's ordinary rows: sums near 2^-124).
  for (int64_t k = 0; k < 2 * kpn; ++k)
    b[static_cast<size_t>(((k / 2) * kTileCols + 3) * 2 + k % 2)] =
        k % 4 == 3 ? 0x807F : 0x0100 ^ static_cast<uint16_t>(k & 1 ? 0x8000 : 0);
  const auto c0 = random_vec(static_cast<size_t>(kTileRows * kTileCols), 95);
  for (int rows = 1; rows <= kTileRows; ++rows)
    for (bool accumulate : {false, true}) {
      std::vector<float> got(c0), want(c0);
      gemm_tile_bf16(rows, a.data(), lda, b.data(), kpn, got.data(), accumulate);
      for (int r = 0; r < rows; ++r)
        for (int j = 0; j < kTileCols; ++j) {
          float s = accumulate ? c0[r * kTileCols + j] : 0.0f;
          for (int64_t p = 0; p < kpn; ++p) {
            const uint16_t* ap = &a[static_cast<size_t>(r * lda + 2 * p)];
            const uint16_t* bp = &b[static_cast<size_t>((p * kTileCols + j) * 2)];
            s = ftz(std::fma(val(ap[1]), val(bp[1]), s));
            s = ftz(std::fma(val(ap[0]), val(bp[0]), s));
          }
          want[r * kTileCols + j] = s;
        }
      ASSERT_TRUE(same_bits(got, want)) << "rows " << rows << (accumulate ? " accumulate" : "");
    }
}

INSTANTIATE_TEST_SUITE_P(HardwareAndEmulations, Bf16Gemm,
                         ::testing::Values(Bf16Path::Hardware, Bf16Path::Avx2Emulation, Bf16Path::ScalarEmulation),
                         [](const auto& info) {
                           return info.param == Bf16Path::Hardware        ? "Avx512Bf16"
                                  : info.param == Bf16Path::Avx2Emulation ? "Avx2Emulation"
                                                                          : "ScalarEmulation";
                         });

// The bound derived in gemm.h: |y_bf16 - y_f32| <= (2^-7 + 2^-16 + 2.01 K 2^-24) S + K 2^-126,
// S = sum |x_k w_k|; checked against the float64 product (which the f32 result is within
// K 2^-24 S of, so the bf16 result is within the sum of the two of it).
TEST(Bf16, IsWithinTheDerivedBoundOfAFloat64Product) {
  const int64_t T = 37, N = 70, K = 2048;
  const auto x = random_vec(static_cast<size_t>(T * K), 4);
  const auto w = random_vec(static_cast<size_t>(N * K), 5);
  std::vector<float> y(static_cast<size_t>(T * N));
  linear_packed(x.data(), T, pack_linear({{w.data(), N}}, K, 0, GemmPrecision::BF16), nullptr, y.data(), N);
  double worst = 0;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n) {
      double exact = 0, mag = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double prod = static_cast<double>(x[t * K + k]) * w[n * K + k];
        exact += prod, mag += std::fabs(prod);
      }
      const double bound = (0x1p-7 + 0x1p-16 + 3.01 * K * 0x1p-24) * mag + K * 0x1p-126;
      worst = std::max(worst, std::fabs(y[t * N + n] - exact) / mag);
      ASSERT_NEAR(y[t * N + n], exact, bound) << t << "," << n;
    }
  RecordProperty("worst_relative_to_sum_of_magnitudes", std::to_string(worst));
}

TEST(Bf16, BfloatInputsGiveTheF32ChainUpToTheSumOrder) {
  // Weights and activations already bf16: the products are the f32 chain's products, so the two
  // GEMMs differ only by the pair order of the additions (within 2 K 2^-24 of S).
  const int64_t T = 13, N = 33, K = 515;
  auto x = random_vec(static_cast<size_t>(T * K), 6);
  auto w = random_vec(static_cast<size_t>(N * K), 7);
  for (auto& v : x) v = bf16_to_f32(bf16_round(v));
  for (auto& v : w) v = bf16_to_f32(bf16_round(v));
  std::vector<float> yb(static_cast<size_t>(T * N)), yf(yb.size());
  linear_packed(x.data(), T, pack_linear({{w.data(), N}}, K, 0, GemmPrecision::BF16), nullptr, yb.data(), N);
  linear_packed(x.data(), T, pack_linear({{w.data(), N}}, K), nullptr, yf.data(), N);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n) {
      double mag = 0;
      for (int64_t k = 0; k < K; ++k) mag += std::fabs(static_cast<double>(x[t * K + k]) * w[n * K + k]);
      ASSERT_NEAR(yb[t * N + n], yf[t * N + n], 2.0 * K * 0x1p-24 * mag);
    }
}

// The independent reference: the same product in float64. An f32 FMA chain over K terms is
// within K * 2^-24 * sum |x_k w_k| of the exact value (one rounding per step, each relative to
// a partial sum bounded by the sum of magnitudes).
TEST(Gemm, IsWithinTheFmaChainErrorBoundOfAFloat64Product) {
  const int64_t T = 37, N = 70, K = 2048;
  const auto x = random_vec(static_cast<size_t>(T * K), 4);
  const auto w = random_vec(static_cast<size_t>(N * K), 5);
  const PackedLinear p = pack_linear({{w.data(), N}}, K);
  std::vector<float> y(static_cast<size_t>(T * N));
  linear_packed(x.data(), T, p, nullptr, y.data(), N);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n) {
      double exact = 0, mag = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double prod = static_cast<double>(x[t * K + k]) * w[n * K + k];
        exact += prod, mag += std::fabs(prod);
      }
      ASSERT_NEAR(y[t * N + n], exact, K * std::ldexp(1.0, -24) * mag) << t << "," << n;
    }
}

TEST(Gemm, PackedLayoutIsSixteenRowPanelsKMajorZeroPadded) {
  // 17 rows of K = 3: panel 0 holds rows 0..15, panel 1 row 16 then 15 zero columns.
  std::vector<float> w(17 * 3);
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i + 1);
  const PackedLinear p = pack_linear({{w.data(), 17}}, 3);
  ASSERT_EQ(p.out, 17);
  ASSERT_EQ(p.in, 3);
  ASSERT_EQ(p.panels.size(), 2u * 3 * 16);
  EXPECT_EQ(p.panels[0 * 16 + 0], 1.0f);       // W[0][0]
  EXPECT_EQ(p.panels[1 * 16 + 0], 2.0f);       // W[0][1]
  EXPECT_EQ(p.panels[0 * 16 + 5], 16.0f);      // W[5][0] = 5*3 + 1
  EXPECT_EQ(p.panels[48 + 2 * 16 + 0], 51.0f); // W[16][2]
  EXPECT_EQ(p.panels[48 + 2 * 16 + 1], 0.0f);  // padding
}

TEST(Gemm, PackingIntoAUsedPackedLinearEqualsAFreshPackInBothPrecisions) {
  // A large pack first, then smaller ones into the same object (odd K, partial panels, a GLU
  // pair with padding rows): every slot must be rewritten, the padding with zeros.
  const auto big = random_vec(static_cast<size_t>(70 * 301), 60);
  const auto w = random_vec(static_cast<size_t>(37 * 259), 61);
  const auto g = random_vec(static_cast<size_t>(21 * 259), 62);
  for (GemmPrecision prec : {GemmPrecision::F32, GemmPrecision::BF16}) {
    PackedLinear used;
    pack_linear_into(used, {{big.data(), 70}}, 301, 2, prec);
    pack_linear_into(used, {{w.data(), 37}}, 259, 2, prec);
    const PackedLinear fresh = pack_linear({{w.data(), 37}}, 259, 2, prec);
    EXPECT_EQ(used.out, 37);
    EXPECT_TRUE(same_bits(used.panels, fresh.panels));
    EXPECT_EQ(used.panels_bf16, fresh.panels_bf16);
    pack_glu_into(used, g.data(), w.data(), 21, 259, 2, prec);
    const PackedLinear fresh_glu = pack_glu(g.data(), w.data(), 21, 259, 2, prec);
    EXPECT_TRUE(used.glu);
    EXPECT_TRUE(same_bits(used.panels, fresh_glu.panels));
    EXPECT_EQ(used.panels_bf16, fresh_glu.panels_bf16);
    pack_linear_into(used, {{w.data(), 37}}, 259, 2, prec);
    EXPECT_FALSE(used.glu);
  }
}

TEST(Bf16, PackedPanelsAreTheScalarRoundingOfEveryWeightWithAndWithoutHardware) {
  // K = 301 (odd, two 256 blocks), 18 rows (a partial second panel); special values included.
  const int64_t N = 18, K = 301;
  auto w = random_vec(static_cast<size_t>(N * K), 63, -3.0f, 3.0f);
  const uint32_t special[] = {0x00000001u, 0x807FFFFFu, 0x7F800000u, 0xFF800000u, 0x7F800001u,
                              0x7FC00000u, 0x3F808000u, 0x3F818000u, 0x7F7FFFFFu, 0x80000000u};
  for (size_t i = 0; i < std::size(special); ++i) w[i * 97 % w.size()] = f32_of_bits(special[i]);
  std::vector<uint16_t> want(2 * 2 * ((K + 1) / 2) * 16, 0);  // 2 panels [K/2][16][2]
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k)
      want[static_cast<size_t>((n / 16) * ((K + 1) / 2) * 32 + ((k / 2) * 16 + n % 16) * 2 + k % 2)] =
          bf16_round(w[static_cast<size_t>(n * K + k)]);
  for (bool scalar : {false, true}) {
    linear_force_scalar(scalar);
    EXPECT_EQ(pack_linear({{w.data(), N}}, K, 2, GemmPrecision::BF16).panels_bf16, want) << (scalar ? "scalar" : "dispatched");
  }
  linear_force_scalar(false);
}

TEST(Gemm, StridedRowsPackLikeTheirContiguousCopy) {
  // Rows of 10 values inside rows of 25 (one head's keys inside a [T, heads * D] buffer).
  const int64_t rows = 19, in = 10, ld = 25, off = 7;
  const auto buf = random_vec(static_cast<size_t>(rows * ld), 80);
  std::vector<float> dense(static_cast<size_t>(rows * in));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < in; ++k) dense[r * in + k] = buf[r * ld + off + k];
  EXPECT_TRUE(same_bits(pack_linear({{buf.data() + off, rows, ld}}, in).panels,
                        pack_linear({{dense.data(), rows}}, in).panels));
}

TEST(Gemm, FusedPartsIntoSplitOutputsEqualSeparateGemms) {
  // q/k/v-like parts with sizes that straddle panel boundaries (20 | 9 | 9).
  const int64_t T = 29, K = 40;
  const int64_t rows[3] = {20, 9, 9};
  std::vector<std::vector<float>> w, b;
  for (int i = 0; i < 3; ++i) {
    w.push_back(random_vec(static_cast<size_t>(rows[i] * K), 10 + i));
    b.push_back(random_vec(static_cast<size_t>(rows[i]), 20 + i));
  }
  const auto x = random_vec(static_cast<size_t>(T * K), 7);
  const PackedLinear fused = pack_linear({{w[0].data(), 20}, {w[1].data(), 9}, {w[2].data(), 9}}, K);
  std::vector<float> bias(b[0]);
  bias.insert(bias.end(), b[1].begin(), b[1].end());
  bias.insert(bias.end(), b[2].begin(), b[2].end());
  std::vector<std::vector<float>> got(3);
  std::vector<OutputColumns> outs;
  for (int i = 0; i < 3; ++i) {
    got[i].assign(static_cast<size_t>(T * rows[i]), NAN);
    outs.push_back({got[i].data(), rows[i], rows[i]});
  }
  linear_packed(x.data(), T, fused, bias.data(), outs, false);
  for (int i = 0; i < 3; ++i) {
    std::vector<float> want(got[i].size());
    linear_packed(x.data(), T, pack_linear({{w[i].data(), rows[i]}}, K), b[i].data(), want.data(), rows[i]);
    EXPECT_TRUE(same_bits(got[i], want)) << "part " << i;
  }
}

TEST(Gemm, GluPairEqualsSeparateGateAndUpThenSiluMulBitForBit) {
  for (int64_t I : {1, 15, 16, 17, 70, 130}) {  // pair counts around the 8-panel task
    SCOPED_TRACE("I=" + std::to_string(I));
    const int64_t T = 19, K = 33;
    const auto x = random_vec(static_cast<size_t>(T * K), 70, -3.0f, 3.0f);
    const auto wg = random_vec(static_cast<size_t>(I * K), 71), wu = random_vec(static_cast<size_t>(I * K), 72);
    const auto bias = random_vec(static_cast<size_t>(2 * I), 73);  // gate biases, then up biases
    const PackedLinear glu = pack_glu(wg.data(), wu.data(), I, K);
    EXPECT_TRUE(glu.glu);
    EXPECT_EQ(glu.out, I);
    for (const float* b : {static_cast<const float*>(nullptr), bias.data()}) {
      std::vector<float> g(static_cast<size_t>(T * I)), u(g.size()), want(g.size()), got(g.size(), NAN);
      linear_packed(x.data(), T, pack_linear({{wg.data(), I}}, K), b, g.data(), I);
      linear_packed(x.data(), T, pack_linear({{wu.data(), I}}, K), b ? b + I : nullptr, u.data(), I);
      silu_mul_f32(g.data(), u.data(), want.data(), static_cast<int64_t>(g.size()));
      linear_packed(x.data(), T, glu, b, got.data(), I);
      EXPECT_TRUE(same_bits(got, want)) << (b ? "with bias" : "no bias");
    }
  }
}

TEST(Gemm, AddToOutputRoundsLikeAResidualAddOfTheBiasedProduct) {
  const int64_t T = 11, N = 33, K = 50;
  const auto x = random_vec(static_cast<size_t>(T * K), 30);
  const auto w = random_vec(static_cast<size_t>(N * K), 31);
  const auto b = random_vec(static_cast<size_t>(N), 32);
  const auto h0 = random_vec(static_cast<size_t>(T * N), 33, -100.0f, 100.0f);
  const PackedLinear p = pack_linear({{w.data(), N}}, K);
  std::vector<float> r(static_cast<size_t>(T * N)), want(h0), got(h0);
  linear_packed(x.data(), T, p, b.data(), r.data(), N);
  for (size_t i = 0; i < want.size(); ++i) want[i] = want[i] + r[i];  // h = h + linear(x)
  linear_packed(x.data(), T, p, b.data(), {{got.data(), N, N}}, true);
  EXPECT_TRUE(same_bits(got, want));
}

TEST(Gemm, OutputRowStrideLeavesOtherColumnsUntouched) {
  const int64_t T = 8, N = 5, K = 9, ld = 12;
  const auto x = random_vec(static_cast<size_t>(T * K), 40);
  const auto w = random_vec(static_cast<size_t>(N * K), 41);
  std::vector<float> y(static_cast<size_t>(T * ld), -7.0f);
  linear_packed(x.data(), T, pack_linear({{w.data(), N}}, K), nullptr, y.data(), ld);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = N; c < ld; ++c) EXPECT_EQ(y[t * ld + c], -7.0f);
}

TEST(Gemm, ResultDoesNotDependOnTheThreadCount) {
  const int64_t T = 300, N = 520, K = 300;  // several tasks in both directions
  const auto x = random_vec(static_cast<size_t>(T * K), 50);
  const auto w = random_vec(static_cast<size_t>(N * K), 51);
  const PackedLinear p1 = pack_linear({{w.data(), N}}, K, 1), p3 = pack_linear({{w.data(), N}}, K, 3);
  ASSERT_TRUE(same_bits(p1.panels, p3.panels));
  std::vector<float> y1(static_cast<size_t>(T * N)), y2(y1.size()), y3(y1.size());
  linear_packed(x.data(), T, p1, nullptr, y1.data(), N, 1);
  linear_packed(x.data(), T, p1, nullptr, y2.data(), N, 2);
  linear_packed(x.data(), T, p1, nullptr, y3.data(), N, 3);
  EXPECT_TRUE(same_bits(y1, y2));
  EXPECT_TRUE(same_bits(y1, y3));
}

TEST(Gemm, ZeroRowsIsANoOp) {
  const auto w = random_vec(16, 60);
  std::vector<float> y(4, 3.0f);
  linear_packed(nullptr, 0, pack_linear({{w.data(), 4}}, 4), nullptr, y.data(), 4);
  EXPECT_EQ(y, std::vector<float>(4, 3.0f));
}

}  // namespace
}  // namespace qt
