// Elementwise math of the forward pass (libquant/vmath.h): exp_f32 within 2 ulp of the exact value
// (float64 std::exp as the reference) over its whole finite range, the documented edge rules,
// the AVX2 body bit-identical to the scalar twin (lengths that hit the 8-lane tail), and the
// softmax row steps equal to the scalar loops they replace on every path.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "libquant/cpu_isa.h"
#include "libquant/vmath.h"
#include "libquant/float_formats.h"

namespace qt {
namespace {

// |got - exact| in units of the f32 ulp at the exact value.
double ulp_error(float got, double exact) {
  const float e = static_cast<float>(exact);
  const double ulp = std::nextafter(std::fabs(e), INFINITY) - std::fabs(e);
  return std::fabs(static_cast<double>(got) - exact) / ulp;
}

std::vector<float> exp_inputs() {
  std::vector<float> x;
  for (float v = -87.3f; v < 88.7f; v += 0.000731f) x.push_back(v);  // ~240k points, all binades
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  for (int i = 0; i < 100000; ++i) x.push_back(d(rng) * 1e-3f);  // tiny |x|: e^x ~ 1 + x
  return x;
}

std::vector<float> edge_inputs() {
  const float inf = std::numeric_limits<float>::infinity();
  return {0.0f, -0.0f, 1.0f, -1.0f, 88.72283172607421875f, 88.72283935546875f, 89.0f, 1e30f, inf,
          -87.33654022216797f, -87.3366f, -100.0f, -1e30f, -inf, std::numeric_limits<float>::quiet_NaN(),
          std::numeric_limits<float>::denorm_min(), 0.5f * 0.693147f, -0.5f * 0.693147f, 44.0f, -44.0f, 7.0f};
}

// One ISA path at a time (cpu_isa.h cap); a path above what this CPU has is skipped.
class Vmath : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (static_cast<int>(cpu_isa()) < static_cast<int>(GetParam()))
      GTEST_SKIP() << "this CPU lacks " << isa_name(GetParam()) << " (best path here: " << isa_name(cpu_isa()) << ")";
    isa_cap_for_tests(GetParam());
  }
  void TearDown() override { isa_cap_for_tests(Isa::Avx512); }
};

TEST_P(Vmath, ExpIsWithinTwoUlpOfTheExactValue) {
  const auto x = exp_inputs();
  std::vector<float> y(x.size());
  exp_f32(x.data(), y.data(), static_cast<int64_t>(x.size()));
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double exact = std::exp(static_cast<double>(x[i]));
    worst = std::max(worst, ulp_error(y[i], exact));
    ASSERT_LE(ulp_error(y[i], exact), 2.0) << "x=" << x[i] << " got " << y[i] << " exact " << exact;
  }
  RecordProperty("max_ulp", std::to_string(worst));
}

TEST_P(Vmath, ExpFollowsTheDocumentedEdgeRules) {
  const auto x = edge_inputs();
  std::vector<float> y(x.size());
  exp_f32(x.data(), y.data(), static_cast<int64_t>(x.size()));
  EXPECT_EQ(y[0], 1.0f);                       // exp(0) = 1 exactly
  EXPECT_EQ(y[1], 1.0f);                       // exp(-0) = 1
  EXPECT_TRUE(std::isfinite(y[4]));            // largest finite input
  EXPECT_EQ(y[5], INFINITY);                   // above it
  EXPECT_EQ(y[7], INFINITY);
  EXPECT_EQ(y[8], INFINITY);                   // exp(+inf)
  EXPECT_GT(y[9], 0.0f);                       // ln(FLT_MIN) itself: ~FLT_MIN
  EXPECT_EQ(y[10], 0.0f);                      // below: flushed to 0
  EXPECT_EQ(y[11], 0.0f);
  EXPECT_EQ(y[13], 0.0f);                      // exp(-inf)
  EXPECT_TRUE(std::isnan(y[14]));              // NaN propagates
  EXPECT_EQ(y[15], 1.0f);
}

TEST_P(Vmath, SiluMulIsWithinFourUlpOfTheFloat64Formula) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> d(-30.0f, 30.0f), du(-4.0f, 4.0f);
  std::vector<float> g(4099), u(g.size()), out(g.size());
  for (size_t i = 0; i < g.size(); ++i) g[i] = d(rng), u[i] = du(rng);
  silu_mul_f32(g.data(), u.data(), out.data(), static_cast<int64_t>(g.size()));
  for (size_t i = 0; i < g.size(); ++i) {
    const double z = g[i], exact = z / (1.0 + std::exp(-z)) * u[i];
    if (std::fabs(exact) < 1e-30) continue;  // ulp of a denormal-scale value is meaningless here
    ASSERT_LE(ulp_error(out[i], exact), 4.0) << "g=" << g[i] << " u=" << u[i];
  }
}

INSTANTIATE_TEST_SUITE_P(EveryIsa, Vmath, ::testing::Values(Isa::Scalar, Isa::Avx2, Isa::Avx512),
                         [](const auto& info) { return std::string(isa_name(info.param)); });

// softmax_exp_f32 and div_f32 against the loops they replace, written out here (calib/forward.cpp's
// attention before them): t = x * scale in f32, m = std::max over t in index order, exp_f32(t - m)
// (exp_f32 itself is checked above); x / d. Rows that hit every tail length, plus rows whose
// largest value is a tie of +0 and -0 (the vector max may keep either zero: vmath.h says the
// result is the same), rows with NaN scores (skipped by the max) and rows of one value.
TEST_P(Vmath, SoftmaxStepsEqualTheScalarLoopsTheyReplaceBitForBit) {
  std::mt19937 rng(21);
  std::normal_distribution<float> d(0.0f, 4.0f);
  std::vector<std::vector<float>> rows;
  for (int64_t n : {1, 2, 7, 8, 9, 15, 16, 17, 31, 33, 300, 1000}) {
    std::vector<float> r(static_cast<size_t>(n));
    for (float& v : r) v = d(rng);
    rows.push_back(r);
  }
  for (int64_t n : {3, 17, 40}) {  // largest = a tie of zeros, in both orders
    std::vector<float> r(static_cast<size_t>(n));
    for (float& v : r) v = -std::fabs(d(rng)) - 0.5f;
    r[1] = -0.0f, r[static_cast<size_t>(n - 1)] = 0.0f;
    rows.push_back(r);
    std::swap(r[1], r[static_cast<size_t>(n - 1)]);
    rows.push_back(r);
  }
  {
    std::vector<float> r(37);
    for (float& v : r) v = d(rng);
    r[0] = r[20] = std::numeric_limits<float>::quiet_NaN();
    rows.push_back(r);
  }
  for (const float scale : {0.125f, 0.08838834764831845f}) {
    for (const auto& row : rows) {
      const int64_t n = static_cast<int64_t>(row.size());
      std::vector<float> want(row);
      float m = -std::numeric_limits<float>::infinity();
      for (float& v : want) {
        v *= scale;
        m = std::max(m, v);
      }
      for (float& v : want) v -= m;
      exp_f32(want.data(), want.data(), n);
      std::vector<float> got(row);
      softmax_exp_f32(got.data(), n, scale);
      for (size_t i = 0; i < row.size(); ++i)
        ASSERT_EQ(f32_bits(got[i]), f32_bits(want[i])) << "n=" << n << " i=" << i << " x=" << row[i];
      // The division by the row's sum (any f32 divisor; rounding is per element).
      const float sum = 3.0f + static_cast<float>(n) / 7.0f;
      std::vector<float> q(got);
      div_f32(q.data(), n, sum);
      for (size_t i = 0; i < row.size(); ++i)
        ASSERT_EQ(f32_bits(q[i]), f32_bits(got[i] / sum)) << "n=" << n << " i=" << i;
    }
  }
}

TEST(VmathTwins, Avx512AndScalarGiveTheSameBitsAtEveryLength) {
  if (cpu_isa() != Isa::Avx512) GTEST_SKIP() << "this CPU lacks AVX-512 F";
  auto x = exp_inputs();
  const auto e = edge_inputs();
  x.insert(x.begin(), e.begin(), e.end());
  for (size_t n : {size_t{1}, size_t{15}, size_t{16}, size_t{17}, size_t{33}, x.size()}) {
    std::vector<float> a(n), b(n), sa(n), sb(n);
    std::vector<float> u(n, 1.5f);
    isa_cap_for_tests(Isa::Avx512);
    exp_f32(x.data(), a.data(), static_cast<int64_t>(n));
    silu_mul_f32(x.data(), u.data(), sa.data(), static_cast<int64_t>(n));
    isa_cap_for_tests(Isa::Scalar);
    exp_f32(x.data(), b.data(), static_cast<int64_t>(n));
    silu_mul_f32(x.data(), u.data(), sb.data(), static_cast<int64_t>(n));
    isa_cap_for_tests(Isa::Avx512);
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(f32_bits(a[i]), f32_bits(b[i])) << "exp x=" << x[i];
      ASSERT_EQ(f32_bits(sa[i]), f32_bits(sb[i])) << "silu x=" << x[i];
    }
  }
}

TEST(VmathTwins, Avx2AndScalarGiveTheSameBitsAtEveryLength) {
  if (static_cast<int>(cpu_isa()) < static_cast<int>(Isa::Avx2)) GTEST_SKIP() << "this CPU lacks AVX2";
  isa_cap_for_tests(Isa::Avx2);
  auto x = exp_inputs();
  const auto e = edge_inputs();
  x.insert(x.begin(), e.begin(), e.end());
  for (size_t n : {size_t{1}, size_t{7}, size_t{8}, size_t{9}, size_t{21}, x.size()}) {
    std::vector<float> a(n), b(n), sa(n), sb(n);
    std::vector<float> u(n, 1.5f);
    vmath_force_scalar(false);
    exp_f32(x.data(), a.data(), static_cast<int64_t>(n));
    silu_mul_f32(x.data(), u.data(), sa.data(), static_cast<int64_t>(n));
    vmath_force_scalar(true);
    exp_f32(x.data(), b.data(), static_cast<int64_t>(n));
    silu_mul_f32(x.data(), u.data(), sb.data(), static_cast<int64_t>(n));
    vmath_force_scalar(false);
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(f32_bits(a[i]), f32_bits(b[i])) << "exp x=" << x[i];
      ASSERT_EQ(f32_bits(sa[i]), f32_bits(sb[i])) << "silu x=" << x[i];
    }
  }
  isa_cap_for_tests(Isa::Avx512);
}

TEST(VmathTwins, OutputMayAliasTheInput) {
  std::vector<float> x = {0.5f, -2.0f, 3.0f}, want(3);
  exp_f32(x.data(), want.data(), 3);
  exp_f32(x.data(), x.data(), 3);
  EXPECT_EQ(x, want);
}

}  // namespace
}  // namespace qt
