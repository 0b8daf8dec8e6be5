// The drift kernel of `quantize --like` (libquant/drift_rows.h): every ISA body this CPU has gives
// the reference's statistics bit for bit from the stored bytes, and the reference's sums lie within
// the f32 summation bound of an independent computation (terms summed in double), its maxima and
// clipping count equal exactly. The independent computation decodes with decode_to_f32 (pinned by
// the float-format tests) and follows the element formulas of the header.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "libquant/cpu_isa.h"
#include "libquant/drift_rows.h"
#include "libquant/dtype.h"
#include "libquant/float_formats.h"
#include "tests/support/test_support.h"

namespace qt {
namespace {

using test::for_each_isa;

bool same(float x, float y) { return (std::isnan(x) && std::isnan(y)) || std::memcmp(&x, &y, 4) == 0; }

// One group's data: n bf16 weights (at an odd byte offset) and n codes.
struct Group {
  std::vector<uint8_t> raw;  // 1 + 2n bytes; weights from raw.data() + 1
  std::vector<uint8_t> codes;
  std::vector<float> a, c;  // decoded
  const uint8_t* w() const { return raw.data() + 1; }
};

Group make_group(int64_t n, DType code_dtype, float s, std::mt19937& rng, bool specials, int code_start) {
  Group g;
  g.raw.resize(1 + 2 * static_cast<size_t>(n));
  g.codes.resize(static_cast<size_t>(n));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int64_t j = 0; j < n; ++j) {
    // Codes walk through all 256 patterns (E4M3 NaNs 0x7F / 0xFF and subnormals included).
    const uint8_t code = static_cast<uint8_t>(code_start + j);
    g.codes[static_cast<size_t>(j)] = code;
    const float cv = code_dtype == DType::F8_E4M3 ? f32_from_e4m3fn(code) : static_cast<float>(static_cast<int8_t>(code));
    // NEW near QUANT's value, sometimes far (clipped), sometimes special.
    float v = (std::isnan(cv) ? 1.0f : cv) * s * (1.0f + 0.05f * nd(rng));
    if (j % 29 == 3) v *= 1000.0f;
    uint16_t h = bf16_from_f32(v);
    if (specials && j % 37 == 5) h = 0x7FC0;        // NaN
    if (specials && j % 41 == 7) h = 0xFF80;        // -Inf
    if (j % 43 == 11) h = 0x0003;                   // a bf16 subnormal
    if (j % 47 == 13) h = 0x8000;                   // -0
    std::memcpy(g.raw.data() + 1 + 2 * j, &h, 2);
  }
  g.a.resize(static_cast<size_t>(n));
  g.c.resize(static_cast<size_t>(n));
  decode_to_f32(DType::BF16, g.w(), static_cast<uint64_t>(n), g.a.data());
  decode_to_f32(code_dtype, g.codes.data(), static_cast<uint64_t>(n), g.c.data());
  return g;
}

TEST(DriftRows, FusedKernelGivesTheReferenceStatisticsBitForBitOnEveryIsa) {
  std::mt19937 rng(5);
  std::vector<int64_t> lengths;
  for (int64_t n = 0; n <= 70; ++n) lengths.push_back(n);
  for (int64_t n : {128, 255, 256, 4096, 4099}) lengths.push_back(n);
  for (DType cd : {DType::F8_E4M3, DType::I8}) {
    for (float s : {0.0123f, 1.0f, 3.0e-8f, 0.0f, INFINITY, 2.0e36f}) {
      for (bool specials : {false, true}) {
        for (int64_t n : lengths) {
          const Group g = make_group(n, cd, s == 0.0f || std::isinf(s) ? 0.01f : s, rng, specials, static_cast<int>(n * 7));
          const float lim_s = 464.0f * s;
          const DriftGroup want = drift_group_ref(g.a.data(), g.c.data(), n, s, lim_s);
          for_each_isa([&](Isa isa) {
            const DriftGroup got = drift_group_bf16(g.w(), g.codes.data(), cd, n, s, lim_s);
            const std::string where = std::string(isa_name(isa)) + " n " + std::to_string(n) + " s " +
                                      std::to_string(s) + (cd == DType::I8 ? " int8" : " e4m3");
            EXPECT_TRUE(same(got.d2, want.d2)) << where << ": " << got.d2 << " vs " << want.d2;
            EXPECT_TRUE(same(got.r2, want.r2)) << where << ": " << got.r2 << " vs " << want.r2;
            EXPECT_TRUE(same(got.max_d, want.max_d)) << where;
            EXPECT_TRUE(same(got.amax_new, want.amax_new)) << where;
            EXPECT_TRUE(same(got.amax_quant, want.amax_quant)) << where;
            EXPECT_EQ(got.clipped, want.clipped) << where;
          });
        }
      }
    }
  }
}

TEST(DriftRows, ReferenceSumsLieWithinTheF32BoundOfADoubleSumAndItsMaximaAndCountAreExact) {
  // Each term is formed in f32 as the header says; the independent sum adds the same terms in
  // double (exact to ~n * 2^-53). The reference's 16 partial sums and 4-level tree add each term
  // through at most ceil(n / 16) - 1 + 4 roundings, all of nonnegative values, so its relative
  // error is at most gamma(k) = k u / (1 - k u), u = 2^-24, k = ceil(n / 16) + 3. (A plain
  // left-to-right f32 sum, the loop this replaced, has k = n - 1: the two agree within the sum of
  // the two bounds.)
  std::mt19937 rng(9);
  for (DType cd : {DType::F8_E4M3, DType::I8}) {
    for (int64_t n : {1, 15, 16, 17, 100, 128, 1000, 4096, 14336}) {
      const float s = 0.0071f;
      const Group g = make_group(n, cd, s, rng, false, 3);
      std::vector<float> c = g.c;
      for (float& x : c) if (std::isnan(x)) x = 0.0f;  // finite codes only: sums stay finite
      const float lim_s = 464.0f * s;
      double d2 = 0, r2 = 0;
      float md = 0, an = 0, aq = 0;
      int64_t cl = 0;
      for (int64_t j = 0; j < n; ++j) {
        const float deq = c[j] * s, d = g.a[j] - deq;
        d2 += static_cast<double>(d * d);
        r2 += static_cast<double>(deq * deq);
        md = std::max(md, std::fabs(d)), an = std::max(an, std::fabs(g.a[j])), aq = std::max(aq, std::fabs(deq));
        cl += std::fabs(g.a[j]) > lim_s;
      }
      const DriftGroup got = drift_group_ref(g.a.data(), c.data(), n, s, lim_s);
      const double u = std::ldexp(1.0, -24), k = static_cast<double>((n + 15) / 16 + 3);
      const double gamma = k * u / (1 - k * u);
      EXPECT_LE(std::fabs(got.d2 - d2), gamma * d2 + 1e-300) << "n " << n;
      EXPECT_LE(std::fabs(got.r2 - r2), gamma * r2 + 1e-300) << "n " << n;
      EXPECT_EQ(got.max_d, md) << "n " << n;
      EXPECT_EQ(got.amax_new, an) << "n " << n;
      EXPECT_EQ(got.amax_quant, aq) << "n " << n;
      EXPECT_EQ(got.clipped, cl) << "n " << n;
      if (n >= 100) {
        EXPECT_GT(cl, 0) << "n " << n << ": the data has clipped elements";
      }
    }
  }
}

TEST(DriftRows, EveryPathAddsThePartialSumsInTheDocumentedOrder) {
  // Terms a^2 with c = 0, powers of two so every value and square is exact (in bf16 too), u = 2^-23
  // the spacing above 1. Partial sum 0 = 1 + 2^-24 (element 16 after element 0): a tie, to even 1.
  // Partial sum 8 = 2^-24 + 2^-24 (elements 8 and 24) = 2^-23. Tree level 8: 1 + 2^-23, exact.
  // A left-to-right f32 sum would give 1 (each 2^-24 added to 1 alone is a tie that rounds to 1).
  std::vector<float> a(32, 0.0f), c(32, 0.0f);
  a[0] = 1.0f;
  a[8] = a[16] = a[24] = std::ldexp(1.0f, -12);
  const float want = 1.0f + std::ldexp(1.0f, -23);
  EXPECT_EQ(drift_group_ref(a.data(), c.data(), 32, 1.0f, 10.0f).d2, want);
  float seq = 0;
  for (float x : a) seq += x * x;
  EXPECT_EQ(seq, 1.0f);  // the order matters for these terms
  std::vector<uint8_t> w(64), codes(32, 0);
  for (int j = 0; j < 32; ++j) {
    const uint16_t h = bf16_from_f32(a[static_cast<size_t>(j)]);
    std::memcpy(w.data() + 2 * j, &h, 2);
  }
  for_each_isa([&](Isa isa) {
    EXPECT_EQ(drift_group_bf16(w.data(), codes.data(), DType::F8_E4M3, 32, 1.0f, 10.0f).d2, want) << isa_name(isa);
    EXPECT_EQ(drift_group_bf16(w.data(), codes.data(), DType::I8, 32, 1.0f, 10.0f).d2, want) << isa_name(isa);
  });
}

}  // namespace
}  // namespace qt
