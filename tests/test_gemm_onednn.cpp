// The bf16 GEMM through oneDNN (libquant/kernels/gemm_onednn.h, cpu_isa.h Bf16Backend::Onednn) and
// the AMX tile permission that selects it by default.
//
// oneDNN sums the exact bf16 products in an order of its own, so random inputs are checked
// against bounds: the float64 product (gemm.h's derived bf16 bound) and the own kernel (both f32
// sums of the same exact products: within 2 K 2^-24 sum_k |x_k w_k|). Small integer inputs make
// every summation order exact (every partial sum is an integer below 2^24), so on them the oneDNN
// path must give the reference's bits exactly, whatever the CPU's kernel: that checks the layout,
// the task blocks and every epilogue (bias, residual, GLU, split outputs) bit for bit. Then: the
// same bits at any thread count, and the back-end choice and AMX status on this machine
// (/proc/cpuinfo's amx_bf16 flag is the independent witness of what the CPU has).
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "libquant/cpu_isa.h"
#include "libquant/gemm.h"
#include "libquant/kernels/gemm_onednn.h"
#include "libquant/vmath.h"
#include "tests/support/test_support.h"

namespace qt {
namespace {

std::vector<float> random_vec(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Integers in [-8, 8]: exact in bf16, and a sum of up to 2^18 of their products is exact in f32.
std::vector<float> integer_vec(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(-8, 8);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(d(rng));
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

// Whether /proc/cpuinfo lists `flag` (the kernel's view of CPUID, independent of qtool's checks).
bool cpuinfo_has_flag(const std::string& flag) {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    for (std::string w; words >> w;)
      if (w == flag) return true;
    return false;
  }
  return false;
}

// Runs the test body with the bf16 GEMM forced to one back end; skips where oneDNN is not built.
class OnednnBf16 : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!kernels::onednn::available())
      GTEST_SKIP() << "no oneDNN bf16 matmul here (built without oneDNN, or a CPU without AVX-512)";
    use(Bf16Backend::Onednn);
  }
  void TearDown() override { scope_.reset(); }
  void use(Bf16Backend b) { scope_.reset(), scope_ = std::make_unique<test::Bf16BackendScope>(b); }
  std::unique_ptr<test::Bf16BackendScope> scope_;
  static PackedLinear pack(const std::vector<float>& w, int64_t N, int64_t K, int threads = 2) {
    return pack_linear({{w.data(), N}}, K, threads, GemmPrecision::BF16);
  }
};

TEST_F(OnednnBf16, PacksIntoOnednnsLayoutAndSaysSoInThePathName) {
  const auto w = random_vec(40 * 64, 1);
  const PackedLinear p = pack(w, 40, 64);
  EXPECT_TRUE(p.onednn);
  EXPECT_TRUE(p.panels_bf16.empty());
  EXPECT_EQ(gemm_path_name(true), "onednn-" + kernels::onednn::impl_name() + "+" + test::own_bf16_path());
  if (cpuinfo_has_flag("avx512_bf16") && !std::getenv("ONEDNN_MAX_CPU_ISA") && !std::getenv("DNNL_MAX_CPU_ISA"))
    EXPECT_EQ(kernels::onednn::impl_name().rfind("brg:avx512_core_", 0), 0u) << kernels::onednn::impl_name();
  use(Bf16Backend::Own);
  EXPECT_FALSE(pack(w, 40, 64).onednn);
}

// oneDNN falls back to a much slower implementation (gemm:jit: ~70x slower on SmolLM2's shapes)
// for odd K and for blocks narrower than 128 columns; K is padded to even and every block to 128
// columns so that every primitive is the one the probe names.
TEST_F(OnednnBf16, OddKAndNarrowLastBlocksRunTheSameKernelAsTheProbe) {
  for (const auto& [T, N, K] : std::vector<std::array<int64_t, 3>>{{50, 576, 576}, {37, 64, 7}, {200, 960, 1025}, {5, 1, 1}}) {
    const auto x = random_vec(static_cast<size_t>(T * K), 8), w = random_vec(static_cast<size_t>(N * K), 9);
    std::vector<float> y(static_cast<size_t>(T * N));
    linear_packed(x.data(), T, pack(w, N, K), nullptr, y.data(), N);
  }
  for (const std::string& impl : kernels::onednn::impls_in_use()) EXPECT_EQ(impl, kernels::onednn::impl_name());
}

TEST_F(OnednnBf16, IntegerInputsGiveTheReferenceBitsAtEverySizeAndTaskEdge) {
  for (int64_t T : {1, 17, 96, 97, 200})
    for (int64_t N : {1, 127, 128, 129, 300})
      for (int64_t K : {1, 2, 7, 1025}) {
        SCOPED_TRACE("T=" + std::to_string(T) + " N=" + std::to_string(N) + " K=" + std::to_string(K));
        const auto x = integer_vec(static_cast<size_t>(T * K), 1);
        const auto w = integer_vec(static_cast<size_t>(N * K), 2);
        const auto b = integer_vec(static_cast<size_t>(N), 3);
        const PackedLinear p = pack(w, N, K);
        for (const float* bias : {static_cast<const float*>(nullptr), b.data()}) {
          std::vector<float> got(static_cast<size_t>(T * N), NAN), want(got.size(), NAN);
          linear_packed(x.data(), T, p, bias, got.data(), N, 2);
          linear_ref_bf16(x.data(), T, w.data(), N, K, bias, want.data(), N);
          ASSERT_TRUE(same_bits(got, want)) << (bias ? "with bias" : "no bias");
        }
      }
}

TEST_F(OnednnBf16, IntegerInputsThroughSplitOutputsResidualAndGluGiveTheUnfusedBits) {
  const int64_t T = 131, K = 90;
  const auto x = integer_vec(static_cast<size_t>(T * K), 10);
  // q/k/v-like parts straddling panels and tasks (150 | 9 | 9): split outputs.
  const int64_t rows[3] = {150, 9, 9};
  std::vector<std::vector<float>> w(3), got(3);
  std::vector<OutputColumns> outs;
  for (int i = 0; i < 3; ++i) {
    w[i] = integer_vec(static_cast<size_t>(rows[i] * K), 11 + i);
    got[i].assign(static_cast<size_t>(T * rows[i]), NAN);
    outs.push_back({got[i].data(), rows[i], rows[i]});
  }
  linear_packed(x.data(), T, pack_linear({{w[0].data(), 150}, {w[1].data(), 9}, {w[2].data(), 9}}, K, 2, GemmPrecision::BF16),
                nullptr, outs, false);
  for (int i = 0; i < 3; ++i) {
    std::vector<float> want(got[i].size());
    linear_ref_bf16(x.data(), T, w[i].data(), rows[i], K, nullptr, want.data(), rows[i]);
    EXPECT_TRUE(same_bits(got[i], want)) << "part " << i;
  }
  // Residual: y = y + (r + b), rounding as h = h + linear(x).
  const int64_t N = 140;
  const auto wr = integer_vec(static_cast<size_t>(N * K), 20);
  const auto b = integer_vec(static_cast<size_t>(N), 21);
  const auto h0 = random_vec(static_cast<size_t>(T * N), 22, -100.0f, 100.0f);
  std::vector<float> r(static_cast<size_t>(T * N)), want(h0), res(h0);
  linear_ref_bf16(x.data(), T, wr.data(), N, K, b.data(), r.data(), N);
  for (size_t i = 0; i < want.size(); ++i) want[i] = want[i] + r[i];
  linear_packed(x.data(), T, pack(wr, N, K), b.data(), {{res.data(), N, N}}, true);
  EXPECT_TRUE(same_bits(res, want)) << "residual";
  // GLU: silu(gate + bg) * (up + bu) through the same silu_mul_f32.
  for (int64_t I : {1, 70, 130}) {
    const auto wg = integer_vec(static_cast<size_t>(I * K), 30), wu = integer_vec(static_cast<size_t>(I * K), 31);
    const auto bias = integer_vec(static_cast<size_t>(2 * I), 32);
    std::vector<float> g(static_cast<size_t>(T * I)), u(g.size()), m(g.size()), glu(g.size(), NAN);
    linear_ref_bf16(x.data(), T, wg.data(), I, K, bias.data(), g.data(), I);
    linear_ref_bf16(x.data(), T, wu.data(), I, K, bias.data() + I, u.data(), I);
    silu_mul_f32(g.data(), u.data(), m.data(), static_cast<int64_t>(g.size()));
    linear_packed(x.data(), T, pack_glu(wg.data(), wu.data(), I, K, 2, GemmPrecision::BF16), bias.data(), glu.data(), I);
    EXPECT_TRUE(same_bits(glu, m)) << "GLU, I=" << I;
  }
}

// gemm.h's bound for the bf16 GEMM against the float64 product, which holds for any f32
// summation order: (2^-7 + 2^-16 + 2.01 K 2^-24) S + K 2^-126 (checked with 3.01 K as in
// test_gemm: the float64 sum itself is not exact).
TEST_F(OnednnBf16, RandomInputsAreWithinTheDerivedBoundOfAFloat64Product) {
  for (int64_t K : {768, 2048}) {
    const int64_t T = 100, N = 140;
    const auto x = random_vec(static_cast<size_t>(T * K), 4);
    const auto w = random_vec(static_cast<size_t>(N * K), 5);
    std::vector<float> y(static_cast<size_t>(T * N));
    linear_packed(x.data(), T, pack(w, N, K), nullptr, y.data(), N);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t n = 0; n < N; ++n) {
        double exact = 0, mag = 0;
        for (int64_t k = 0; k < K; ++k) {
          const double prod = static_cast<double>(x[t * K + k]) * w[n * K + k];
          exact += prod, mag += std::fabs(prod);
        }
        ASSERT_NEAR(y[t * N + n], exact, (0x1p-7 + 0x1p-16 + 3.01 * K * 0x1p-24) * mag + K * 0x1p-126)
            << "K=" << K << " " << t << "," << n;
      }
  }
}

// The same exact products summed in two f32 orders: each sum is within K 2^-24 S of the exact
// one, so the two are within 2 K 2^-24 S of each other.
TEST_F(OnednnBf16, RandomInputsAreWithinTwoKUnitRoundoffsOfTheOwnKernel) {
  const int64_t T = 150, N = 200, K = 2048;
  const auto x = random_vec(static_cast<size_t>(T * K), 6);
  const auto w = random_vec(static_cast<size_t>(N * K), 7);
  std::vector<float> dnn(static_cast<size_t>(T * N)), own(dnn.size());
  linear_packed(x.data(), T, pack(w, N, K), nullptr, dnn.data(), N);
  use(Bf16Backend::Own);
  linear_packed(x.data(), T, pack(w, N, K), nullptr, own.data(), N);
  size_t differ = 0;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n) {
      double mag = 0;
      for (int64_t k = 0; k < K; ++k)
        mag += std::fabs(static_cast<double>(bf16_to_f32(bf16_round(x[t * K + k]))) * bf16_to_f32(bf16_round(w[n * K + k])));
      ASSERT_NEAR(dnn[t * N + n], own[t * N + n], 2.0 * K * 0x1p-24 * mag) << t << "," << n;
      differ += dnn[t * N + n] != own[t * N + n];
    }
  RecordProperty("outputs_differing_from_the_own_kernel", std::to_string(differ) + " of " + std::to_string(T * N));
}

TEST_F(OnednnBf16, ResultDoesNotDependOnTheThreadCountOfThePackOrTheProduct) {
  const int64_t T = 300, N = 520, K = 2048;  // several row and column tasks, K above one chunk
  const auto x = random_vec(static_cast<size_t>(T * K), 50);
  const auto w = random_vec(static_cast<size_t>(N * K), 51);
  const PackedLinear p1 = pack(w, N, K, 1), p3 = pack(w, N, K, 3);
  std::vector<float> y1(static_cast<size_t>(T * N)), y(y1.size());
  linear_packed(x.data(), T, p1, nullptr, y1.data(), N, 1);
  for (int threads : {2, 3}) {
    linear_packed(x.data(), T, p1, nullptr, y.data(), N, threads);
    EXPECT_TRUE(same_bits(y1, y)) << threads << " threads";
  }
  linear_packed(x.data(), T, p3, nullptr, y.data(), N, 2);
  EXPECT_TRUE(same_bits(y1, y)) << "packed with 3 threads";
}

TEST_F(OnednnBf16, PackingIntoAUsedPackedLinearEqualsAFreshPack) {
  const int64_t T = 40, K = 300;
  const auto x = random_vec(static_cast<size_t>(T * K), 60);
  const auto big = random_vec(static_cast<size_t>(700 * K), 61), small = random_vec(static_cast<size_t>(90 * K), 62);
  PackedLinear reused;
  pack_linear_into(reused, {{big.data(), 700}}, K, 2, GemmPrecision::BF16);
  pack_linear_into(reused, {{small.data(), 90}}, K, 2, GemmPrecision::BF16);
  std::vector<float> a(static_cast<size_t>(T * 90)), b(a.size());
  linear_packed(x.data(), T, reused, nullptr, a.data(), 90);
  linear_packed(x.data(), T, pack(small, 90, K), nullptr, b.data(), 90);
  EXPECT_TRUE(same_bits(a, b));
}

// ---- AMX permission and the default back end -----------------------------------------------

TEST(AmxStatus, OnACpuWithoutAmxSaysSoAndTheBf16GemmStaysOnTheOwnKernel) {
  if (cpuinfo_has_flag("amx_bf16")) GTEST_SKIP() << "this CPU has AMX-BF16 (the other case is tested)";
  EXPECT_FALSE(amx_status().usable);
  EXPECT_EQ(amx_status().detail, "the CPU has no AMX-BF16");
  const char* env = std::getenv("QTOOL_BF16_GEMM");
  if (env && *env) GTEST_SKIP() << "QTOOL_BF16_GEMM=" << env << " overrides the default";
  EXPECT_EQ(bf16_backend(), Bf16Backend::Own);
  EXPECT_EQ(gemm_path_name(true).rfind("onednn", 0), std::string::npos);
}

TEST(AmxStatus, OnACpuWithAmxTheTileDataRequestDecidesAndOnednnIsTheDefault) {
  if (!cpuinfo_has_flag("amx_bf16") || !cpuinfo_has_flag("amx_tile")) GTEST_SKIP() << "this CPU has no AMX-BF16";
  if (amx_status().usable) {
    EXPECT_EQ(amx_status().detail, "granted");
    if (kernels::onednn::available() && !std::getenv("QTOOL_BF16_GEMM")) {
      EXPECT_EQ(bf16_backend(), Bf16Backend::Onednn);
      EXPECT_EQ(kernels::onednn::impl_name(), "brg:avx512_core_amx_bf16");
    }
  } else {
    EXPECT_NE(amx_status().detail.find("refused"), std::string::npos) << amx_status().detail;
    EXPECT_EQ(bf16_backend(), Bf16Backend::Own);
  }
}

// The request goes to the real kernel on every machine: granted on a CPU with AMX (Linux >= 5.16),
// refused with the errno text elsewhere: EOPNOTSUPP where the CPU lacks the feature (seen on this
// project's Zen 4 machines, Linux 6.x), EINVAL from a kernel older than 5.16, which does not know
// the request.
TEST(AmxStatus, LinuxAnswersTheTileDataRequestAndARefusalIsOneSentenceWithTheReason) {
  const std::string r = request_amx_tile_data();
  if (cpuinfo_has_flag("amx_tile")) {
    EXPECT_EQ(r.empty(), amx_status().usable) << r;
  } else {
    const std::string prefix = "Linux refused AMX tile data (arch_prctl ARCH_REQ_XCOMP_PERM): ";
    EXPECT_TRUE(r == prefix + "Operation not supported" || r == prefix + "Invalid argument") << r;
  }
}

}  // namespace
}  // namespace qt
