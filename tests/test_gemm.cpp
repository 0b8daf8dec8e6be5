// The calibration forward's packed f32 GEMM (libquant/gemm.h): bit-identical to the scalar FMA chain
// it documents (AVX2 micro-kernel and scalar fallback alike) over sizes that hit every remainder
// (rows vs the 6-row tile and 96-row task, columns vs the 16-column panel and 128-column task, K
// vs the 8-wide vector and the 1024 K block); close to a float64 product within a bound derived
// from K; fused parts, split outputs and the residual add exactly equal to the separate steps;
// independent of the thread count.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "libquant/gemm.h"
#include "libquant/vmath.h"

namespace qt {
namespace {

std::vector<float> random_vec(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct Dims { int64_t T, N, K; };

std::vector<Dims> sweep() {
  std::vector<Dims> d;
  for (int64_t T : {1, 5, 6, 7, 13, 97, 200})
    for (int64_t N : {1, 15, 16, 17, 130})
      for (int64_t K : {1, 7, 8, 9, 64, 1025}) d.push_back({T, N, K});
  return d;
}

class GemmKernel : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override { linear_force_scalar(GetParam()); }
  void TearDown() override { linear_force_scalar(false); }
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

INSTANTIATE_TEST_SUITE_P(Avx2AndScalar, GemmKernel, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "ScalarFallback" : "Dispatched"; });

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
