// `qtool verify --device cuda` (verify/verify_cuda.h) on the CPU: the accuracy comparison against
// cpu_ref (bit-exact INT8, FP8 bound and relative-L2 gate, NaN), speedups over BF16, the issue's
// throughput targets, --bench-shape parsing, and the command line in a build without CUDA or on a
// machine without a GPU (exit 5 and the exact reason). With a usable GPU the CLI tests check that
// the same command passes instead.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <limits>

#include "verify/verify_cuda.h"
#include "libquant/error.h"
#include "libquant/kernels/gpu.h"
#include "tests/support/test_support.h"

namespace qt::verify {
namespace {

using nlohmann::json;
namespace gpu = kernels::gpu;

TEST(CudaCompare, Int8MustBeBitExactWithExactAccumulators) {
  const std::vector<float> ref = {1.5f, -2.0f, 0.0f, 3.25f};
  std::vector<float> y = ref;
  verify::CudaAccuracy a;
  a.required_exact = true;
  a.acc_exact = true;
  verify::compare_with_reference(y.data(), ref.data(), nullptr, 4, 4096, false, a);
  EXPECT_TRUE(a.bit_exact);
  EXPECT_TRUE(a.ok);
  EXPECT_EQ(a.max_abs_diff, 0.0);
  // One ulp off in one element fails.
  y[3] = std::nextafter(y[3], 10.0f);
  verify::compare_with_reference(y.data(), ref.data(), nullptr, 4, 4096, false, a);
  EXPECT_FALSE(a.bit_exact);
  EXPECT_FALSE(a.ok);
  EXPECT_DOUBLE_EQ(a.max_abs_diff, 0x1p-22);
  // -0.0 vs +0.0 is a different bit pattern: not bit-exact.
  y = ref;
  y[2] = -0.0f;
  verify::compare_with_reference(y.data(), ref.data(), nullptr, 4, 4096, false, a);
  EXPECT_FALSE(a.ok);
  // Identical outputs but wrong int32 accumulators fail too.
  y = ref;
  a.acc_exact = false;
  verify::compare_with_reference(y.data(), ref.data(), nullptr, 4, 4096, false, a);
  EXPECT_FALSE(a.ok);
}

TEST(CudaCompare, Fp8PassesWithinTheBoundAndFailsBeyondIt) {
  // K = 256, S = 64 per output: exact-accumulation bound = 64 (128 2^-12 + 5 2^-24) + 2^-22 |y|.
  const int64_t K = 256;
  const std::vector<float> ref = {10.0f, -20.0f, 30.0f, 40.0f};
  const std::vector<float> S(4, 64.0f);
  std::vector<float> y = ref;
  y[1] += 0.5f;  // 0.5 / bound ~ 0.25
  verify::CudaAccuracy a;
  verify::compare_with_reference(y.data(), ref.data(), S.data(), 4, K, false, a);
  EXPECT_FALSE(a.bit_exact);
  EXPECT_TRUE(a.ok) << a.max_bound_ratio;
  EXPECT_NEAR(a.max_bound_ratio, 0.5 / gpu::fp8_error_bound(64.0, -20.0f, K, false), 1e-12);
  EXPECT_NEAR(a.rel_l2, 0.5 / std::sqrt(100.0 + 400 + 900 + 1600), 1e-12);
  y[1] = ref[1] + 3.0f;  // beyond 2.0 + ...
  verify::compare_with_reference(y.data(), ref.data(), S.data(), 4, K, false, a);
  EXPECT_GT(a.max_bound_ratio, 1.0);
  EXPECT_FALSE(a.ok);
}

TEST(CudaCompare, Fp8FailsOnLargeRelativeErrorEvenInsideTheWorstCaseBound) {
  // A huge S makes the element bound loose; a wrong operand order (outputs permuted) must still
  // fail through the relative-L2 gate.
  const std::vector<float> ref = {1.0f, 2.0f, 3.0f, 4.0f};
  const std::vector<float> y = {4.0f, 3.0f, 2.0f, 1.0f};
  const std::vector<float> S(4, 1e9f);
  verify::CudaAccuracy a;
  verify::compare_with_reference(y.data(), ref.data(), S.data(), 4, 4096, true, a);
  EXPECT_LE(a.max_bound_ratio, 1.0);
  EXPECT_GT(a.rel_l2, gpu::fp8_max_rel_l2(true));
  EXPECT_FALSE(a.ok);
}

TEST(CudaCompare, Fp8RelativeErrorGateIsLooserWithFastAccumulation) {
  EXPECT_EQ(gpu::fp8_max_rel_l2(false), 1e-2);
  EXPECT_EQ(gpu::fp8_max_rel_l2(true), 5e-2);
  // 2 % relative L2 error, inside a loose element bound: fails exact, passes fast.
  const std::vector<float> ref = {100.0f, 100.0f};
  const std::vector<float> y = {102.0f, 98.0f};
  const std::vector<float> S(2, 1e6f);
  verify::CudaAccuracy a;
  verify::compare_with_reference(y.data(), ref.data(), S.data(), 2, 4096, false, a);
  EXPECT_NEAR(a.rel_l2, 0.02, 1e-12);
  EXPECT_FALSE(a.ok);
  verify::compare_with_reference(y.data(), ref.data(), S.data(), 2, 4096, true, a);
  EXPECT_TRUE(a.ok);
}

TEST(CudaCompare, NanAnywhereFails) {
  const std::vector<float> ref = {1.0f, 2.0f};
  const std::vector<float> y = {1.0f, std::numeric_limits<float>::quiet_NaN()};
  const std::vector<float> S(2, 1.0f);
  verify::CudaAccuracy a;
  verify::compare_with_reference(y.data(), ref.data(), S.data(), 2, 16, false, a);
  EXPECT_FALSE(a.ok);
  EXPECT_TRUE(std::isnan(a.rel_l2));
}

verify::CudaBenchRow row(const std::string& k, const std::string& v, int64_t M, int64_t N, int64_t K, double tf, bool peak = false) {
  verify::CudaBenchRow r;
  r.kernel = k;
  r.variant = v;
  r.M = M;
  r.N = N;
  r.K = K;
  r.tflops = tf;
  r.peak = peak;
  return r;
}

TEST(CudaBenchReport, SpeedupsAreAgainstBf16AtTheSameShape) {
  std::vector<verify::CudaBenchRow> rows = {row("cuda_bf16", "", 16, 4096, 4096, 50), row("cuda_fp8_tensor", "fast accum", 16, 4096, 4096, 90),
                                    row("cuda_fp8_tensor", "fast accum", 128, 4096, 4096, 400),
                                    row("cuda_bf16", "", 8192, 8192, 8192, 700, true),
                                    row("cuda_fp8_tensor", "fast accum", 8192, 8192, 8192, 1300, true)};
  rows.push_back(row("cuda_int8", "gemm only", 16, 4096, 4096, 80));
  rows.back().error = "cuBLASLt has no algorithm";
  verify::add_speedups(rows);
  EXPECT_DOUBLE_EQ(rows[0].speedup_bf16, 1.0);
  EXPECT_DOUBLE_EQ(rows[1].speedup_bf16, 1.8);
  EXPECT_EQ(rows[2].speedup_bf16, 0.0);  // no BF16 row at M=128
  EXPECT_NEAR(rows[4].speedup_bf16, 1300.0 / 700.0, 1e-12);
  EXPECT_EQ(rows[5].speedup_bf16, 0.0);  // failed cell
}

TEST(CudaBenchReport, TargetsFollowTheIssueThresholds) {
  std::vector<verify::CudaBenchRow> rows = {
      row("cuda_bf16", "", 8192, 8192, 8192, 700, true),
      row("cuda_fp8_tensor", "fast accum", 8192, 8192, 8192, 1260, true),       // 1.8x
      row("cuda_fp8_channel_token", "fast accum", 8192, 8192, 8192, 1200, true),  // 0.952
      row("cuda_bf16", "", 4096, 4096, 4096, 600),
      row("cuda_fp8_tensor", "fast accum", 4096, 4096, 4096, 1080),              // 1.8x
      row("cuda_fp8_channel_token", "fast accum", 4096, 4096, 4096, 1000),       // 0.926
      row("cuda_bf16", "", 4096, 14336, 4096, 650),
      row("cuda_fp8_tensor", "fast accum", 4096, 14336, 4096, 1040),             // 1.6x: not met
      row("cuda_fp8_channel_token", "fast accum", 4096, 14336, 4096, 1030),
      row("cuda_bf16", "", 16, 4096, 4096, 60)};  // other M: ignored
  const std::vector<verify::TargetCheck> t = verify::evaluate_targets(rows);
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t[0].name, "fp8_peak_vs_bf16");
  EXPECT_TRUE(t[0].measured);
  EXPECT_TRUE(t[0].met);
  EXPECT_NEAR(t[0].value, 1.8, 1e-12);
  EXPECT_EQ(t[1].name, "fp8_m4096_vs_bf16");
  EXPECT_TRUE(t[1].measured);
  EXPECT_FALSE(t[1].met);
  EXPECT_NEAR(t[1].value, 1.6, 1e-12);
  EXPECT_EQ(t[1].detail, "worst at M=4096 N=14336 K=4096");
  EXPECT_EQ(t[2].name, "channel_token_vs_tensor");
  EXPECT_TRUE(t[2].met);
  EXPECT_NEAR(t[2].value, 1000.0 / 1080.0, 1e-12);

  // Missing rows: not measured (never "met").
  const std::vector<verify::TargetCheck> none = verify::evaluate_targets({});
  for (const auto& c : none) {
    EXPECT_FALSE(c.measured) << c.name;
    EXPECT_FALSE(c.met) << c.name;
  }
}

TEST(CudaBenchReport, ShapesParseAsNByK) {
  EXPECT_EQ(verify::parse_shape("4096x14336"), (std::pair<int64_t, int64_t>{4096, 14336}));
  for (const char* bad : {"12x", "x12", "4096", "4096x-1", "0x16", "4096X4096", "1e3x16", "1234567890x16"}) {
    try {
      verify::parse_shape(bad);
      ADD_FAILURE() << bad;
    } catch (const InputError& e) {
      EXPECT_EQ(e.kind(), InputError::Kind::Usage);
      EXPECT_EQ(e.problem(), "--bench-shape '" + std::string(bad) + "' is not NxK (e.g. 4096x14336)");
    }
  }
}

// ---- the command line ---------------------------------------------------------------------

struct Fp8Model {
  test::TempDir dir;
  std::string tiny, fp8;
  Fp8Model() : tiny(dir.str("tiny")), fp8(dir.str("fp8")) {
    EXPECT_EQ(test::run_qtool({"tiny-model", tiny}).exit_code, 0);
    EXPECT_EQ(test::run_qtool({"-q", "quantize", tiny, "-o", fp8, "--scheme", "fp8-dynamic"}).exit_code, 0);
  }
  static Fp8Model& get() {
    static Fp8Model m;
    return m;
  }
};

TEST(CmdVerifyCuda, ExitsFiveNamingWhatIsMissingWithoutAUsableDevice) {
  Fp8Model& m = Fp8Model::get();
  const auto r = test::run_qtool({"verify", m.fp8, "--device", "cuda"});
  if (gpu::device_info().usable) {
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_CONTAINS(r.out, "result      PASS");
    return;
  }
  EXPECT_EQ(r.exit_code, 5) << r.out << r.err;
  EXPECT_CONTAINS(r.err, "qtool: error: --device cuda: " + gpu::device_info().error);
  if (!gpu::built_with_cuda()) {
    EXPECT_CONTAINS(r.err, "qtool was built without CUDA");
  }
  EXPECT_EQ(r.out, "");
}

TEST(CmdVerifyCuda, ListKernelsWorksWithoutADeviceAndGivesEveryReason) {
  Fp8Model& m = Fp8Model::get();
  const auto r = test::run_qtool({"verify", m.fp8, "--device", "cuda", "--list-kernels", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["device"]["usable"], gpu::device_info().usable);
  EXPECT_EQ(j["device"]["built_with_cuda"], gpu::built_with_cuda());
  ASSERT_FALSE(j["kernels"].empty());
  if (!gpu::built_with_cuda()) {
    EXPECT_TRUE(j["registry"].empty());
    return;
  }
  EXPECT_EQ(j["registry"].size(), 5u);
  for (const auto& g : j["kernels"]) {
    EXPECT_EQ(g["candidates"].size(), 5u);
    if (!gpu::device_info().usable) {
      for (const auto& c : g["candidates"]) EXPECT_EQ(c["reason"], gpu::device_info().error);
    }
  }
}

TEST(CmdVerifyCuda, BadBenchOptionsAreUsageErrorsBeforeAnyDeviceWork) {
  Fp8Model& m = Fp8Model::get();
  auto r = test::run_qtool({"verify", m.fp8, "--device", "cuda", "--bench", "--bench-shape", "12x"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_CONTAINS(r.err, "--bench-shape '12x' is not NxK");
  r = test::run_qtool({"verify", m.fp8, "--device", "cuda", "--bench", "--bench-m", "0"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_CONTAINS(r.err, "--bench-m values must be at least 1");
  r = test::run_qtool({"verify", m.fp8, "--device", "tpu"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
}

}  // namespace
}  // namespace qt::verify
