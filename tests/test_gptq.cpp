// GPTQ: the numerics of one weight (libquant/gptq.h) against hand derivations and against
// round-to-nearest, and the whole flow (calib/gptq.h, quantize_model) on the tiny model. The
// comparison with the real llm-compressor GPTQModifier is in test_gptq_goldens.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <vector>

#include <nlohmann/json.hpp>

#include "calib/gptq.h"
#include "calib/quantize.h"
#include "formats/model_folder.h"
#include "formats/safetensors.h"
#include "formats/tiny_model.h"
#include "libquant/error.h"
#include "libquant/float_formats.h"
#include "libquant/gptq.h"
#include "libquant/quantize.h"
#include "libquant/schemes.h"
#include "tests/support/test_support.h"

namespace qt {
namespace {

namespace fs = std::filesystem;
using Kind = InputError::Kind;

// A weight view over f32 values owned by the caller.
TensorView f32_view(const std::vector<float>& v, int64_t out, int64_t in) {
  TensorView t;
  t.name = "w.weight";
  t.file = "test";
  t.dtype = DType::F32;
  t.shape = {out, in};
  t.bytes = {reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(float)};
  return t;
}

QuantArgs int8_channel() { return find_scheme("w8a16")->weights; }
QuantArgs int4_group(int64_t g) {
  QuantArgs a = find_scheme("w4a16")->weights;
  a.group_size = g;
  return a;
}

// Deterministic pseudo-random numbers in [-1, 1).
std::vector<float> noise(size_t n, uint64_t seed) {
  std::vector<float> v(n);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto& f : v) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    f = static_cast<float>(static_cast<double>(x >> 40) / 8388608.0 - 1.0);
  }
  return v;
}

// Sum over samples of ||X (W - Q)^T||^2 / N: the output error GPTQ minimises (H = 2/N sum X^T X).
double output_error(const std::vector<float>& w, const std::vector<float>& q, int64_t out, int64_t in,
                    const std::vector<float>& x, int64_t tokens) {
  double e = 0;
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t r = 0; r < out; ++r) {
      double y = 0;
      for (int64_t j = 0; j < in; ++j) y += static_cast<double>(x[t * in + j]) * (w[r * in + j] - q[r * in + j]);
      e += y * y;
    }
  return e;
}

std::vector<float> dequant(const QuantizedWeight& q, const QuantArgs& a) {
  std::vector<float> v(q.codes.size());
  dequantize(q.codes.data(), q.code_dtype, q.shape, q.scale_bytes.data(), q.scale_dtype, scale_grid(q.shape, a), v.data());
  return v;
}

TEST(GptqQuantize, WithAnIdentityHessianGivesRoundToNearestCodes) {
  // X = I: H = 2 I, no column's error reaches another column (Hinv is diagonal), so every
  // code is round-to-nearest's (f32 weights: the f32 quotient is the model-dtype quotient).
  const int64_t out = 24, in = 64;
  const std::vector<float> w = noise(out * in, 1);
  std::vector<float> x(in * in, 0.0f);
  for (int64_t i = 0; i < in; ++i) x[i * in + i] = 1.0f;
  Hessian h(in);
  h.add_sample(x.data(), in);
  for (const QuantArgs& a : {int8_channel(), int4_group(32)}) {
    const GptqResult g = gptq_quantize(f32_view(w, out, in), a, h, {});
    const QuantizedWeight rtn = quantize_weight(f32_view(w, out, in), a);
    EXPECT_EQ(g.q.codes, rtn.codes) << describe_args(a);
    EXPECT_EQ(g.q.scale_bytes, rtn.scale_bytes) << describe_args(a);
    EXPECT_FALSE(g.rtn_fallback);
    EXPECT_EQ(g.dead_columns, 0);
  }
}

TEST(GptqQuantize, PassesTheFirstColumnsErrorToTheSecondAsDerivedByHand) {
  // One sample X = [[1, 0.5], [0, 1]]: H = 2 X^T X = [[2, 1], [1, 2.5]], damp = 0.01 * 2.25.
  // H^-1 = [[2.5225, -1], [-1, 2.0225]] / det, det = 2.0225 * 2.5225 - 1; its upper Cholesky
  // factor U: U00 = sqrt(2.5225 / det) = 0.784207, U01 = (-1 / det) / U00 = -0.310885.
  // Row w = [0.7, 50.4 s] with s = 0.7 / 127.5 (INT8 per-channel, amax 0.7):
  //   column 0: 0.7 / s = 127.5 -> clamped to 127, error e = (0.7 - 127 s) / U00 = 0.637587 s;
  //   column 1: w1 - e * U01 = (50.4 + 0.198216) s -> 51, where round-to-nearest gives 50.
  const double det = 2.0225 * 2.5225 - 1.0;
  const double u00 = std::sqrt(2.5225 / det), u01 = (-1.0 / det) / u00;
  EXPECT_NEAR(u00, 0.784207, 1e-6);
  EXPECT_NEAR(u01, -0.310885, 1e-6);
  const float s = 0.7f / 127.5f;
  const std::vector<float> w = {0.7f, 50.4f * s};
  const std::vector<float> x = {1.0f, 0.5f, 0.0f, 1.0f};
  Hessian h(2);
  h.add_sample(x.data(), 2);
  GptqOptions o;
  o.actorder = ActOrder::None;
  const GptqResult g = gptq_quantize(f32_view(w, 1, 2), int8_channel(), h, o);
  ASSERT_EQ(g.q.codes.size(), 2u);
  EXPECT_EQ(static_cast<int8_t>(g.q.codes[0]), 127);
  EXPECT_EQ(static_cast<int8_t>(g.q.codes[1]), 51);
  const QuantizedWeight rtn = quantize_weight(f32_view(w, 1, 2), int8_channel());
  EXPECT_EQ(static_cast<int8_t>(rtn.codes[1]), 50);
  // loss = (e0^2 + e1^2) / 2 with e_i = (w_i - q_i) / U_ii.
  const double e0 = (0.7 - 127.0 * s) / u00;
  const double w1 = 50.4 * s - e0 * u01;
  const double u11 = std::sqrt(2.0225 / det - u01 * u01);
  const double e1 = (w1 - 51.0 * s) / u11;
  EXPECT_NEAR(g.loss, (e0 * e0 + e1 * e1) / 2, 1e-4 * g.loss);
}

TEST(GptqQuantize, LowersTheOutputErrorBelowRoundToNearestOnCorrelatedInputs) {
  const int64_t out = 32, in = 128, tokens = 512;
  const std::vector<float> w = noise(out * in, 2);
  // Inputs with correlated columns (each column mixes a few shared factors) and outliers.
  const std::vector<float> f = noise(tokens * 8, 3), z = noise(tokens * in, 4);
  std::vector<float> x(tokens * in);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t j = 0; j < in; ++j)
      x[t * in + j] = f[t * 8 + j % 8] * (j % 16 == 0 ? 8.0f : 1.0f) + 0.2f * z[t * in + j];
  Hessian h(in);
  h.add_sample(x.data(), tokens);
  for (const QuantArgs& a : {int8_channel(), int4_group(128), int4_group(32)}) {
    const GptqResult g = gptq_quantize(f32_view(w, out, in), a, h, {});
    const QuantizedWeight rtn = quantize_weight(f32_view(w, out, in), a);
    EXPECT_EQ(g.q.scale_bytes, rtn.scale_bytes) << "GPTQ keeps round-to-nearest's scales";
    const double eg = output_error(w, g.dequant, out, in, x, tokens);
    const double er = output_error(w, dequant(rtn, a), out, in, x, tokens);
    EXPECT_LT(eg, 0.7 * er) << describe_args(a) << ": GPTQ " << eg << " vs RTN " << er;
    EXPECT_EQ(dequant(g.q, a), g.dequant) << "the written codes decode to the weights later layers saw";
  }
}

TEST(GptqQuantize, StaticActivationOrderEqualsNoOrderOnColumnsSortedByTheHessianDiagonal) {
  // actorder static: columns by descending diag(H). Quantizing the pre-sorted problem without
  // reordering must give the same codes, column for column (per-channel scales do not depend on
  // column order).
  const int64_t out = 16, in = 48, tokens = 96;
  const std::vector<float> w = noise(out * in, 5);
  std::vector<float> x = noise(tokens * in, 6);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t j = 0; j < in; ++j) x[t * in + j] *= 1.0f + static_cast<float>((j * 7) % in) / 8.0f;
  Hessian h(in);
  h.add_sample(x.data(), tokens);
  const std::vector<double> hn = h.normalized();
  std::vector<int64_t> perm(in);
  std::iota(perm.begin(), perm.end(), 0);
  std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return hn[a * in + a] > hn[b * in + b]; });
  ASSERT_NE(perm[0], 0) << "the test needs a non-trivial order";
  std::vector<float> wp(out * in), xp(tokens * in);
  for (int64_t j = 0; j < in; ++j) {
    for (int64_t r = 0; r < out; ++r) wp[r * in + j] = w[r * in + perm[j]];
    for (int64_t t = 0; t < tokens; ++t) xp[t * in + j] = x[t * in + perm[j]];
  }
  Hessian hp(in);
  hp.add_sample(xp.data(), tokens);
  GptqOptions none;
  none.actorder = ActOrder::None;
  const GptqResult a = gptq_quantize(f32_view(w, out, in), int8_channel(), h, {});
  const GptqResult b = gptq_quantize(f32_view(wp, out, in), int8_channel(), hp, none);
  size_t same = 0;
  for (int64_t r = 0; r < out; ++r)
    for (int64_t j = 0; j < in; ++j) same += a.q.codes[r * in + perm[j]] == b.q.codes[r * in + j];
  // The permuted X^T X sums the same products in the same order, so H is permuted exactly and
  // so is everything after it.
  EXPECT_EQ(same, static_cast<size_t>(out * in));
  const GptqResult c = gptq_quantize(f32_view(w, out, in), int8_channel(), h, none);
  EXPECT_NE(a.q.codes, c.q.codes) << "ordering changes the result on this input";
}

TEST(GptqQuantize, ADeadColumnIsQuantizedAsZero) {
  const int64_t out = 8, in = 16, tokens = 40;
  const std::vector<float> w = noise(out * in, 7);
  std::vector<float> x = noise(tokens * in, 8);
  for (int64_t t = 0; t < tokens; ++t) x[t * in + 5] = 0.0f;  // input channel 5 never fires
  Hessian h(in);
  h.add_sample(x.data(), tokens);
  const GptqResult g = gptq_quantize(f32_view(w, out, in), int8_channel(), h, {});
  EXPECT_EQ(g.dead_columns, 1);
  for (int64_t r = 0; r < out; ++r) {
    EXPECT_EQ(g.q.codes[r * in + 5], 0) << r;
    EXPECT_EQ(g.dequant[r * in + 5], 0.0f) << r;
  }
}

TEST(GptqQuantize, ASingularHessianWithoutDampeningFallsBackToRoundToNearest) {
  // Two identical input columns, X = [[1, 1], [1, 1]]: H = 2 X^T X = [[4, 4], [4, 4]], exactly
  // singular (L00 = 2, L10 = 2, pivot 4 - 2*2 = 0), and dampening 0: the Cholesky factorization
  // fails; llm-compressor then uses an identity factor (round-to-nearest, column by column).
  const int64_t out = 4, in = 2;
  const std::vector<float> w = noise(out * in, 9);
  const std::vector<float> x = {1.0f, 1.0f, 1.0f, 1.0f};
  Hessian h(in);
  h.add_sample(x.data(), 2);
  EXPECT_EQ(h.normalized(), (std::vector<double>{4, 4, 4, 4}));
  GptqOptions o;
  o.dampening_frac = 0.0;
  const GptqResult g = gptq_quantize(f32_view(w, out, in), int8_channel(), h, o);
  EXPECT_TRUE(g.rtn_fallback);
  EXPECT_EQ(g.q.codes, quantize_weight(f32_view(w, out, in), int8_channel()).codes);
}

TEST(GptqQuantize, FloatingPointWeightsAreRefusedWithTheReason) {
  const std::vector<float> w = noise(8, 11);
  Hessian h(4);
  const std::optional<InputError> e =
      test::input_error([&] { gptq_quantize(f32_view(w, 2, 4), find_scheme("fp8-dynamic")->weights, h, {}); });
  ASSERT_TRUE(e) << "no error";
  EXPECT_EQ(e->kind(), Kind::Unsupported);
  EXPECT_EQ(e->problem(),
            "GPTQ is implemented for integer weights with per-channel or per-group scales, not FP8 E4M3 per-channel");
}

TEST(GptqQuantize, TheResultDoesNotDependOnTheThreadCount) {
  const int64_t out = 70, in = 256, tokens = 300;
  const std::vector<float> w = noise(out * in, 12), x = noise(tokens * in, 13);
  Hessian h1(in), h2(in);
  h1.add_sample(x.data(), tokens, 1);
  h2.add_sample(x.data(), tokens, 2);
  EXPECT_EQ(h1.normalized(), h2.normalized());
  GptqOptions o;
  o.block_size = 64;
  const GptqResult a = gptq_quantize(f32_view(w, out, in), int4_group(64), h1, o, 1);
  const GptqResult b = gptq_quantize(f32_view(w, out, in), int4_group(64), h1, o, 2);
  EXPECT_EQ(a.q.codes, b.q.codes);
  EXPECT_EQ(a.dequant, b.dequant);
}

TEST(UpperCholeskyOfInverse, GivesTheFactorDerivedByHandForATwoByTwoMatrix) {
  // H = [[4, 2], [2, 3]]: H^-1 = [[3, -2], [-2, 4]] / 8. U^T U = H^-1 with U upper:
  // U00 = sqrt(3/8), U01 = (-2/8) / U00, U11 = sqrt(4/8 - U01^2) = sqrt(1/3).
  std::vector<double> h = {4, 2, 2, 3};
  std::vector<float> u(4, -1.0f);
  ASSERT_TRUE(upper_cholesky_of_inverse(h, 2, u.data()));
  const double u00 = std::sqrt(3.0 / 8.0), u01 = -0.25 / u00;
  EXPECT_FLOAT_EQ(u[0], static_cast<float>(u00));
  EXPECT_FLOAT_EQ(u[1], static_cast<float>(u01));
  EXPECT_EQ(u[2], 0.0f);
  EXPECT_FLOAT_EQ(u[3], static_cast<float>(std::sqrt(1.0 / 3.0)));
}

TEST(UpperCholeskyOfInverse, InvertsMatricesAcrossTileBoundariesAtAnyThreadCount) {
  for (int64_t n : {1, 7, 128, 129, 300}) {
    // H = X^T X / T + I/4 from a correlated X: symmetric positive definite, moderately conditioned.
    const int64_t T = n + 16;
    std::vector<float> x = noise(static_cast<size_t>(T * n), 40 + n);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 1; j < n; ++j) x[t * n + j] += 0.5f * x[t * n + j - 1];
    std::vector<double> H(static_cast<size_t>(n * n));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t t = 0; t < T; ++t) s += static_cast<double>(x[t * n + i]) * x[t * n + j];
        H[i * n + j] = s / T + (i == j ? 0.25 : 0.0);
      }
    std::vector<double> h1 = H, h2 = H;
    std::vector<float> u1(n * n), u2(n * n);
    ASSERT_TRUE(upper_cholesky_of_inverse(h1, n, u1.data(), 1));
    ASSERT_TRUE(upper_cholesky_of_inverse(h2, n, u2.data(), 2));
    EXPECT_EQ(u1, u2) << "n " << n << ": the thread count changed the result";
    // U upper, and U^T U H = I within f32 rounding of U.
    double worst = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < i; ++j) EXPECT_EQ(u1[i * n + j], 0.0f);
    std::vector<double> hinv(n * n, 0.0);  // U^T U
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t k = 0; k <= std::min(i, j); ++k) s += static_cast<double>(u1[k * n + i]) * u1[k * n + j];
        hinv[i * n + j] = s;
      }
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t k = 0; k < n; ++k) s += hinv[i * n + k] * H[k * n + j];
        worst = std::max(worst, std::fabs(s - (i == j ? 1.0 : 0.0)));
      }
    EXPECT_LT(worst, 1e-4) << "n " << n;
  }
}

TEST(UpperCholeskyOfInverse, RefusesAMatrixThatIsNotPositiveDefinite) {
  std::vector<double> h = {1, 2, 2, 1};  // eigenvalues 3 and -1
  std::vector<float> u(4);
  EXPECT_FALSE(upper_cholesky_of_inverse(h, 2, u.data()));
  std::vector<double> z(300 * 300, 0.0);  // zero beyond the first tile
  for (int64_t i = 0; i < 128; ++i) z[i * 300 + i] = 1.0;
  std::vector<float> uz(300 * 300);
  EXPECT_FALSE(upper_cholesky_of_inverse(z, 300, uz.data()));
}

// ---- the whole flow on the tiny model --------------------------------------------------------

std::string tiny(const test::TempDir& d) {
  TinyModelOptions o;
  write_tiny_model(d.str("m"), o);
  return d.str("m");
}

calib::QuantizeRequest gptq_request(const test::TempDir& d, const std::string& model, const std::string& out,
                                    const char* scheme) {
  calib::QuantizeRequest r;
  r.model = model;
  r.output = d.str(out);
  r.scheme = find_scheme(scheme);
  r.algorithm = calib::WeightAlgorithm::Gptq;
  r.num_samples = 4;
  r.seq_len = 32;
  r.hash_inputs = false;
  return r;
}

TEST(QuantizeModelGptq, WritesRoundToNearestScalesWithGptqCodesAndSaysSoInTheManifest) {
  test::TempDir d;
  const std::string m = tiny(d);
  const calib::QuantizeOutcome o = calib::quantize_model(gptq_request(d, m, "gptq", "w4a16"));
  EXPECT_EQ(o.gptq.modules, 14);
  EXPECT_GT(o.gptq.tokens, 4);
  EXPECT_GT(o.gptq.peak_hessian_bytes, 0u);
  calib::QuantizeRequest rtn = gptq_request(d, m, "rtn", "w4a16");
  rtn.algorithm = calib::WeightAlgorithm::Rtn;
  calib::quantize_model(rtn);
  const Checkpoint g = Checkpoint::open(d.str("gptq")), r = Checkpoint::open(d.str("rtn"));
  size_t packed_differ = 0;
  for (const TensorView& t : r.tensors()) {
    const TensorView* u = g.find(t.name);
    ASSERT_NE(u, nullptr) << t.name;
    const bool same = std::equal(t.bytes.begin(), t.bytes.end(), u->bytes.begin(), u->bytes.end());
    if (t.name.find("weight_packed") != std::string::npos) packed_differ += !same;
    else EXPECT_TRUE(same) << t.name << ": everything but the codes is round-to-nearest's";
  }
  EXPECT_EQ(packed_differ, 14u);
  EXPECT_EQ(g.tensors().size(), r.tensors().size());
  const nlohmann::json man = nlohmann::json::parse(test::read_text(fs::path(d.str("gptq")) / "qtool_manifest.json"));
  EXPECT_EQ(man.at("algorithm"), "gptq");
  EXPECT_EQ(man.at("gptq").at("actorder"), "static");
  EXPECT_EQ(man.at("gptq").at("block_size"), 128);
  EXPECT_EQ(man.at("gptq").at("dampening_frac"), 0.01);
  EXPECT_EQ(man.at("gptq").at("samples"), 4);
  const nlohmann::json man_rtn = nlohmann::json::parse(test::read_text(fs::path(d.str("rtn")) / "qtool_manifest.json"));
  EXPECT_EQ(man_rtn.at("algorithm"), "rtn");
  EXPECT_FALSE(man_rtn.contains("gptq"));
}

TEST(QuantizeModelGptq, GivesIdenticalBytesAtOneAndTwoThreads) {
  test::TempDir d;
  const std::string m = tiny(d);
  calib::QuantizeRequest a = gptq_request(d, m, "t1", "w8a16"), b = gptq_request(d, m, "t2", "w8a16");
  a.threads = 1;
  b.threads = 2;
  calib::quantize_model(a);
  calib::quantize_model(b);
  const Checkpoint x = Checkpoint::open(d.str("t1")), y = Checkpoint::open(d.str("t2"));
  for (const TensorView& t : x.tensors()) {
    const TensorView* u = y.find(t.name);
    ASSERT_NE(u, nullptr);
    EXPECT_TRUE(std::equal(t.bytes.begin(), t.bytes.end(), u->bytes.begin(), u->bytes.end())) << t.name;
  }
}

TEST(QuantizeModelGptq, WithSmoothQuantWritesSmoothedNormsAndFactorsBesideGptqCodes) {
  test::TempDir d;
  const std::string m = tiny(d);
  for (const auto which : {calib::SmoothingMappings::Norms, calib::SmoothingMappings::All}) {
    const bool all = which == calib::SmoothingMappings::All;
    const std::string out = all ? "sq_all" : "sq_norms";
    calib::QuantizeRequest r = gptq_request(d, m, out, "int8-dynamic");
    r.smoothquant = true;
    r.smoothing_mappings = which;
    const calib::QuantizeOutcome o = calib::quantize_model(r);
    EXPECT_EQ(o.gptq.modules, 14);
    ASSERT_TRUE(o.smoothing.has_value());
    EXPECT_EQ(o.smoothing->mappings.size(), all ? 6u : 4u);
    const Checkpoint in = Checkpoint::open(m), q = Checkpoint::open(d.str(out));
    // The norms (and with "all" nothing else unquantized) are written smoothed, as the plan the
    // GPTQ pass built says; the factors file lists every mapping.
    for (const char* n : {"model.layers.0.input_layernorm.weight", "model.layers.1.post_attention_layernorm.weight"}) {
      const TensorView* a = in.find(n);
      const TensorView* b = q.find(n);
      ASSERT_TRUE(a && b) << n;
      const std::vector<uint8_t> want = o.smoothing->smoothed_bytes(*a);
      EXPECT_TRUE(std::equal(b->bytes.begin(), b->bytes.end(), want.begin(), want.end())) << n;
      EXPECT_FALSE(std::equal(b->bytes.begin(), b->bytes.end(), a->bytes.begin(), a->bytes.end())) << n;
    }
    const nlohmann::json f = nlohmann::json::parse(test::read_text(fs::path(d.str(out)) / "qtool_smoothing.json"));
    EXPECT_EQ(f.at("mappings").size(), all ? 6u : 4u);
    const nlohmann::json man = nlohmann::json::parse(test::read_text(fs::path(d.str(out)) / "qtool_manifest.json"));
    EXPECT_EQ(man.at("algorithm"), "gptq");
    EXPECT_EQ(man.at("smoothquant").at("alpha"), 0.8);
    EXPECT_EQ(man.at("calibration").at("statistics"),
              "observed in the GPTQ pass (each layer on the outputs of the quantized layers before it)");
  }
}

TEST(QuantizeModelGptq, IsRefusedForFp8WeightsWithTheReason) {
  test::TempDir d;
  const std::optional<InputError> e =
      test::input_error([&] { calib::quantize_model(gptq_request(d, tiny(d), "out", "fp8-dynamic")); });
  ASSERT_TRUE(e) << "no error";
  EXPECT_EQ(e->kind(), Kind::Usage);
  EXPECT_EQ(e->problem(), "--algorithm gptq needs integer weights (w4a16, w8a16, int8-dynamic, int8-static); fp8-dynamic has FP8 "
                          "E4M3 per-channel weights, which qtool rounds to nearest (GPTQ's error feedback is "
                          "implemented for integer codes)");
}

TEST(QuantizeModelGptq, IsRefusedWithStatisticsFilesWithTheReason) {
  test::TempDir d;
  calib::QuantizeRequest r = gptq_request(d, tiny(d), "out", "int8-dynamic");
  r.smoothquant = true;
  r.stats_in = {d.str("stats.zst")};
  const std::optional<InputError> e = test::input_error([&] { calib::quantize_model(r); });
  ASSERT_TRUE(e) << "no error";
  EXPECT_EQ(e->kind(), Kind::Usage);
  EXPECT_EQ(e->problem(), "--algorithm gptq observes the activations in its own layer-by-layer pass (each layer on the "
                          "outputs of the quantized layers before it): --stats and --save-stats (statistics of the "
                          "unquantized model) do not apply");
}

TEST(QuantizeModelGptq, ObservesStaticInputAndKvScalesInItsOwnPassOnTheQuantizedLayersBefore) {
  test::TempDir d;
  const std::string m = tiny(d);
  calib::QuantizeRequest g = gptq_request(d, m, "gptq", "int8-static");
  g.kv_cache_fp8 = true;
  const calib::QuantizeOutcome o = calib::quantize_model(g);
  EXPECT_EQ(o.gptq.modules, 14);
  calib::QuantizeRequest r = gptq_request(d, m, "rtn", "int8-static");
  r.kv_cache_fp8 = true;
  r.algorithm = calib::WeightAlgorithm::Rtn;
  calib::quantize_model(r);
  const Checkpoint a = Checkpoint::open(d.str("gptq")), b = Checkpoint::open(d.str("rtn"));
  // Layer 0 sees the original model's hidden states in both runs: the same statistics, the same
  // scale bytes. Layer 1 sees GPTQ's quantized layer 0, and RTN's calibration the unquantized one.
  int scales = 0, layer1_differ = 0;
  for (const TensorView& t : b.tensors()) {
    const std::string& n = t.name;
    const bool scale = n.ends_with(".input_scale") || n.ends_with(".k_scale") || n.ends_with(".v_scale");
    if (!scale) continue;
    const TensorView* u = a.find(n);
    ASSERT_NE(u, nullptr) << n;
    ++scales;
    const bool same = std::equal(t.bytes.begin(), t.bytes.end(), u->bytes.begin(), u->bytes.end());
    if (n.rfind("model.layers.0.", 0) == 0) EXPECT_TRUE(same) << n;
    else layer1_differ += !same;
  }
  EXPECT_EQ(scales, 2 * (7 + 2));
  EXPECT_GT(layer1_differ, 0);
  EXPECT_EQ(a.tensors().size(), b.tensors().size());
  const nlohmann::json man = nlohmann::json::parse(test::read_text(fs::path(d.str("gptq")) / "qtool_manifest.json"));
  EXPECT_EQ(man.at("calibration").at("statistics"),
            "observed in the GPTQ pass (each layer on the outputs of the quantized layers before it)");
  EXPECT_EQ(man.at("calibration").at("samples"), 4);
}

// ---- disk space for GPTQ's temporary files --------------------------------------------------

TEST(CheckFreeSpace, NamesTheOutputAndGptqsTemporaryFilesWhenTheyDoNotFit) {
  const uint64_t MiB = 1ull << 20;
  calib::ScratchFiles s;
  s.owner = "GPTQ's temporary files";
  s.during_write_what = "quantized weights";
  s.during_write = 30 * MiB;
  s.before_write_what = "hidden states";
  s.before_write = 200 * MiB;
  // Peak: output 50 + weights 30 + (hidden 200 - output 50) + margin 64 = 294 MiB.
  const std::optional<InputError> e =
      test::input_error([&] { calib::check_free_space("/data/out-parent", 293 * MiB, 50 * MiB, s); });
  ASSERT_TRUE(e) << "no error";
  EXPECT_EQ(e->kind(), Kind::Io);
  EXPECT_EQ(e->file(), "/data/out-parent");
  EXPECT_EQ(e->problem(), "not enough free disk space");
  EXPECT_EQ(e->expected(), "294 MiB (the output 50 MiB; GPTQ's temporary files: quantized weights 30 MiB while "
                           "writing, hidden states 200 MiB before)");
  EXPECT_EQ(e->got(), "293 MiB free");
  EXPECT_NO_THROW(calib::check_free_space("/data/out-parent", 294 * MiB, 50 * MiB, s));
  // Hidden states smaller than the output: the output's space serves them first.
  s.before_write = 20 * MiB;
  EXPECT_NO_THROW(calib::check_free_space("/data/out-parent", 144 * MiB, 50 * MiB, s));
  EXPECT_THROW(calib::check_free_space("/data/out-parent", 143 * MiB, 50 * MiB, s), InputError);
  // Without temporary files: the output and the margin, as before.
  const std::optional<InputError> e2 =
      test::input_error([&] { calib::check_free_space("/data/out-parent", 100 * MiB, 50 * MiB); });
  ASSERT_TRUE(e2) << "no error";
  EXPECT_EQ(e2->expected(), "114 MiB");
  EXPECT_EQ(e2->got(), "100 MiB free");
}

TEST(GptqScratchFiles, AreTheSizesOfTheSpillFilesARunReallyKeeps) {
  test::TempDir d;
  const ModelFolder model = ModelFolder::open(tiny(d));
  std::vector<std::vector<int32_t>> samples;
  int64_t tokens = 0;
  for (int i = 0; i < 3; ++i) {
    samples.emplace_back();
    for (int t = 0; t < 20 + 7 * i; ++t) samples.back().push_back((i * 31 + t * 7) % 100 + 3);
    tokens += static_cast<int64_t>(samples.back().size());
  }
  for (const char* scheme : {"w4a16", "int8-dynamic"}) {
    calib::PlanOptions po;
    po.scheme = find_scheme(scheme);
    const calib::QuantPlan plan = calib::build_quant_plan(model.checkpoint().tensors(), po, model.dir());
    calib::GptqRunOptions go;
    go.weights_spill_dir = d.str();
    go.hidden_spill.dir = d.str();
    go.hidden_spill.above_bytes = 0;  // always spill
    const calib::ScratchFiles s = calib::gptq_scratch_files(model, plan, tokens, go);
    const calib::GptqRun run = calib::run_gptq(model, plan, samples, go);
    ASSERT_TRUE(run.weights.spilled()) << scheme;
    ASSERT_TRUE(run.hidden_spilled) << scheme;
    EXPECT_EQ(s.before_write, run.hidden_bytes) << scheme;
    // INT4 codes two per byte exactly; INT8 one byte each unless a whole weight fits four bits.
    if (std::string(scheme) == "w4a16") {
      EXPECT_EQ(s.during_write, run.weights.spill_bytes());
    } else {
      EXPECT_GE(s.during_write, run.weights.spill_bytes());
      EXPECT_LE(s.during_write, run.weights.spill_bytes() * 2);
    }
    // Nothing spilled: nothing counted.
    calib::GptqRunOptions ram;
    ram.hidden_spill.above_bytes = UINT64_MAX;
    const calib::ScratchFiles none = calib::gptq_scratch_files(model, plan, tokens, ram);
    EXPECT_TRUE(none.empty()) << scheme;
  }
}

}  // namespace
}  // namespace qt
