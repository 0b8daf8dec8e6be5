// The verify engine (verify/verify.h): hand-derived metrics, activation fake-quantization, sample
// chunking, then whole verifications of tiny-model checkpoints: real output passes, deliberately
// corrupted checkpoints (doubled scale, flipped exponent bit, zero scale, shrunken static input
// scale) trip the gates, INT8 fast and reference kernels agree bit for bit, and model-level KL of
// a checkpoint against itself is exactly 0 while activation quantization makes it positive.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "calib/forward.h"
#include "calib/model_config.h"
#include "verify/verify.h"
#include "formats/checkpoint.h"
#include "formats/ct_config.h"
#include "formats/model_folder.h"
#include "formats/quantized_linear.h"
#include "formats/safetensors.h"
#include "libquant/error.h"
#include "libquant/float_formats.h"
#include "libquant/kernels/registry.h"
#include "tests/support/test_support.h"

namespace qt::verify {
namespace {
namespace fs = std::filesystem;

// ---- fixtures ------------------------------------------------------------------------------

// One tiny model (hidden 128, 2 layers) and its quantized variants, made once per process with
// the qtool binary.
class Models {
 public:
  static Models& get() {
    static Models m;
    return m;
  }
  std::string tiny() const { return dir_.str("tiny"); }
  std::string quantized(const std::string& scheme) {
    const std::string out = dir_.str("q-" + scheme);
    if (!fs::exists(out)) {
      std::vector<std::string> args = {"-q", "quantize", tiny(), "-o", out, "--scheme", scheme};
      if (scheme.find("static") != std::string::npos || scheme == "nvfp4")  // a small calibration run keeps the test fast
        args.insert(args.end(), {"--num-samples", "8", "--seq-len", "64"});
      auto r = test::run_qtool(args);
      EXPECT_EQ(r.exit_code, 0) << scheme << ": " << r.err;
    }
    return out;
  }
  // A copy of a quantized folder whose tensor `tensor` is modified by `patch` (raw bytes).
  std::string corrupted(const std::string& scheme, const std::string& name, const std::string& tensor,
                        const std::function<void(uint8_t* bytes, uint64_t n, DType dt)>& patch) {
    return test::patched_copy(quantized(scheme), dir_.str(name), tensor, patch);
  }

 private:
  Models() {
    auto r = test::run_qtool({"tiny-model", dir_.str("tiny")});
    EXPECT_EQ(r.exit_code, 0) << r.err;
  }
  test::TempDir dir_;
};

verify::VerifyOptions opts(const std::string& quant, const std::string& ref = {}) {
  verify::VerifyOptions o;
  o.quant_dir = quant;
  o.reference_dir = ref;
  o.bench = false;
  // The tiny model is random and untrained: its next-token distribution is nearly uniform
  // (perplexity ~ 517 for 512 tokens), so its argmax is decided by near-ties that any rounding
  // flips. The top-1 gate is meant for trained models; it is switched off for these checks.
  o.gates.min_top1 = 0.0;
  return o;
}

const LayerReport& layer(const VerifyReport& r, const std::string& module) {
  for (const auto& L : r.layers)
    if (L.module == module) return L;
  ADD_FAILURE() << "no layer " << module;
  static LayerReport none;
  return none;
}

// ---- building blocks -----------------------------------------------------------------------

TEST(LogitComparator, MatchesAHandDerivedTwoTokenCase) {
  // Sample [0, 1], vocabulary of 2.
  //   position 0: ref logits [0, 0] -> p = (1/2, 1/2); quant [ln 3, 0] -> q = (3/4, 1/4)
  //     KL = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3); next token 1: NLL ln 2 (ref), ln 4 (quant)
  //     argmax: 0 and 0 (first maximum wins the tie) -> agree
  //   position 1: ref [1, 0] -> (e, 1)/(e+1); quant [0, 1] -> (1, e)/(e+1)
  //     KL = e/(e+1) - 1/(e+1) = (e-1)/(e+1) = tanh(1/2); argmax 0 vs 1 -> disagree
  verify::LogitComparator c({{0, 1}});
  const float ref[] = {0.0f, 0.0f, 1.0f, 0.0f};
  c.add_reference(0, 0, ref, 2, 2);
  const float q0[] = {static_cast<float>(std::log(3.0)), 0.0f}, q1[] = {0.0f, 1.0f};
  c.add_quantized(0, 0, q0, 1, 2);  // in two chunks
  c.add_quantized(0, 1, q1, 1, 2);
  const ModelMetrics m = c.finish();
  const double kl0 = 0.5 * std::log(4.0 / 3.0), kl1 = std::tanh(0.5);
  EXPECT_EQ(m.tokens, 2);
  EXPECT_EQ(m.predicted, 1);
  EXPECT_NEAR(m.ppl_ref, 2.0, 1e-12);
  EXPECT_NEAR(m.ppl_quant, 4.0, 1e-6);  // ln 3 is rounded to f32
  EXPECT_NEAR(m.kl_mean, (kl0 + kl1) / 2, 1e-7);
  EXPECT_NEAR(m.kl_p99, kl1, 1e-7) << "nearest rank: ceil(0.99 * 2) = 2nd smallest";
  EXPECT_NEAR(m.kl_max, kl1, 1e-7);
  EXPECT_DOUBLE_EQ(m.top1, 0.5);
}

TEST(LogitComparator, IdenticalLogitsGiveExactlyZeroKl) {
  std::vector<float> l(3 * 50);
  for (size_t i = 0; i < l.size(); ++i) l[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)) * 4);
  verify::LogitComparator c({{1, 2, 3}});
  c.add_reference(0, 0, l.data(), 3, 50);
  c.add_quantized(0, 0, l.data(), 3, 50);
  const ModelMetrics m = c.finish();
  EXPECT_EQ(m.kl_mean, 0.0);
  EXPECT_EQ(m.kl_max, 0.0);
  EXPECT_EQ(m.top1, 1.0);
  EXPECT_EQ(m.ppl_ref, m.ppl_quant);
}

TEST(KernelAgreementBound, IsTwoKPlusTwoUlpsOfTheAbsoluteSumPlusTheFinalRoundings) {
  // 2 (K + 2) 2^-24 S + 2^-23 |y| + 2^-149, by hand for K = 126, S = 1 (2 * 128 * 2^-24 = 2^-16),
  // y = 0 and y = -2.
  EXPECT_EQ(verify::kernel_agreement_bound(1.0, 0.0f, 126), 0x1p-16 + 0x1p-149);
  EXPECT_EQ(verify::kernel_agreement_bound(1.0, -2.0f, 126), 0x1p-16 + 0x1p-22 + 0x1p-149);
}

TEST(SyntheticActivations, AreSeededStandardNormalWithTwentyFoldOutlierChannels) {
  const int64_t M = 400, K = 256;
  const auto a = verify::synthetic_activations(M, K, 7), b = verify::synthetic_activations(M, K, 7), c = verify::synthetic_activations(M, K, 8);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  // Column RMS: 4 outlier channels (K/64) near 20, the rest near 1.
  std::vector<double> rms(K, 0.0);
  double mean = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) rms[k] += a[m * K + k] * a[m * K + k];
  int outliers = 0;
  for (int64_t k = 0; k < K; ++k) {
    rms[k] = std::sqrt(rms[k] / M);
    if (rms[k] > 10) {
      ++outliers;
      EXPECT_NEAR(rms[k], 20.0, 3.0);
    } else {
      EXPECT_NEAR(rms[k], 1.0, 0.2) << k;
      for (int64_t m = 0; m < M; ++m) mean += a[m * K + k];
    }
  }
  EXPECT_EQ(outliers, 4);
  EXPECT_NEAR(mean / (M * (K - 4)), 0.0, 0.02);
}

TEST(HeldoutSamples, CutsConsecutiveChunksEachStartingWithTheSpecialPrefix) {
  const int32_t B = 100, E = 101;
  std::vector<int32_t> ids = {B, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, E};
  using S = std::vector<std::vector<int32_t>>;
  EXPECT_EQ(verify::heldout_samples(ids, {B}, {E}, 100, 4), (S{{B, 1, 2, 3}, {B, 4, 5, 6}, {B, 7, 8, 9}, {B, 10}}));
  EXPECT_EQ(verify::heldout_samples(ids, {B}, {E}, 6, 4), (S{{B, 1, 2, 3}, {B, 4}})) << "max_tokens truncates the last";
  EXPECT_EQ(verify::heldout_samples(ids, {B}, {E}, 5, 4), (S{{B, 1, 2, 3}})) << "a 1-token chunk is dropped";
  EXPECT_EQ(verify::heldout_samples({1, 2, 3, 4, 5}, {}, {}, 100, 2), (S{{1, 2}, {3, 4}})) << "no prefix; [5] dropped";
  EXPECT_EQ(verify::chunk_ids({1, 2, 3, 4, 5}, 100, 2), (S{{1, 2}, {3, 4}}));
  EXPECT_EQ(verify::chunk_ids({1, 2, 3, 4, 5}, 3, 2), (S{{1, 2}}));
}

QuantizedLinearEntry entry(const std::string& module, QuantType t, int64_t N, int64_t K) {
  QuantizedLinearEntry e;
  e.module = module;
  e.weights = {t, Strategy::Channel};
  e.input = QuantArgs{t, Strategy::Token, 0, 0, 0, true};
  e.desc = kernels::descriptor_from_args(e.weights, e.input, N, K);
  return e;
}

TEST(FakeQuantTransform, QuantizesAndDequantizesLikeVllmPerToken) {
  Checkpoint none;
  const std::vector<QuantizedLinearEntry> es = {entry("fp8", QuantType::Float8E4M3, 2, 4),
                                                entry("int8", QuantType::Int8, 2, 4)};
  calib::ActivationTransform t = verify::make_fake_quant_transform(none, es);
  // FP8 dynamic per-token. Row 0: amax 448 -> scale 1; 0.3 rounds to the E4M3 neighbour 0.3125
  // (0.28125 and 0.3125 are the neighbours; 0.3 is nearer the second). Row 1: amax 0.001 ->
  // 0.001/448 is below the floor 1/(448*512), so s = 2^-8/1.75; 0.001/s = 229.376 -> E4M3 224
  // (neighbours 224 and 240) -> 224 * s = 224 / (448 * 512) = 2^-10.
  float x[] = {448.0f, 1.0f, -2.5f, 0.3f, 0.001f, 0.0f, 0.0f, 0.0f};
  t("fp8", x, 2, 4);
  const float want[] = {448.0f, 1.0f, -2.5f, 0.3125f, 0x1p-10f, 0.0f, 0.0f, 0.0f};
  for (int i = 0; i < 8; ++i) EXPECT_FLOAT_EQ(x[i], want[i]) << i;
  // INT8 dynamic per-token: amax 127 -> multiplier 1; round half to even: 0.5 -> 0, -1.5 -> -2,
  // 63.5 -> 64; scale 1.
  float y[] = {127.0f, 0.5f, -1.5f, 63.5f};
  t("int8", y, 1, 4);
  const float want_y[] = {127.0f, 0.0f, -2.0f, 64.0f};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(y[i], want_y[i]) << i;
  // Other modules are left alone.
  float z[] = {0.3f, 1.0f, 2.0f, 3.0f};
  t("lm_head", z, 1, 4);
  EXPECT_EQ(z[0], 0.3f);
}

TEST(DefaultGates, DependOnTheWeightTypeAndActivationsAndAcceptOverrides) {
  const auto fp8 = verify::default_gates(entry("a", QuantType::Float8E4M3, 8, 8).desc);
  EXPECT_EQ(fp8.min_sqnr_db, 25.0);
  EXPECT_EQ(fp8.max_gemm_err, 0.10);
  EXPECT_EQ(fp8.basis, "FP8 W8A8 default");
  const auto w4 = kernels::descriptor_from_args({QuantType::Int4, Strategy::Group, 128}, std::nullopt, 8, 128);
  EXPECT_EQ(verify::default_gates(w4).basis, "INT4 W4A16 default");
  EXPECT_LT(verify::default_gates(w4).min_sqnr_db, fp8.min_sqnr_db);
}

// ---- whole verifications -------------------------------------------------------------------

TEST(VerifyCheckpoint, PassesOnRealOutputWithTheReference) {
  for (const char* scheme : {"fp8-dynamic", "int8-dynamic", "w8a16"}) {
    SCOPED_TRACE(scheme);
    Models& m = Models::get();
    const VerifyReport r = verify::verify_checkpoint(opts(m.quantized(scheme), m.tiny()));
    EXPECT_TRUE(r.pass) << (r.failures.empty() ? "" : r.failures[0]);
    EXPECT_TRUE(r.findings.empty());
    ASSERT_EQ(r.layers.size(), 14u);
    for (const auto& L : r.layers) {
      EXPECT_EQ(L.kernel, "cpu_fast");
      EXPECT_EQ(L.activations, "text") << "inputs captured from the reference model";
      EXPECT_EQ(L.gemm_tokens, 64);
      ASSERT_TRUE(L.weight.has_value());
      EXPECT_GT(L.weight->sqnr_db, 30.0);
      EXPECT_GT(L.weight->cosine, 0.999);
      EXPECT_GT(L.gemm_err, 0.0);
      EXPECT_LT(L.gemm_err, 0.05);
      EXPECT_EQ(L.agreement.size(), 2u) << "cpu_fast and cpu_portable against cpu_ref";
      for (const auto& a : L.agreement) EXPECT_TRUE(a.ok) << a.kernel;
    }
    EXPECT_TRUE(r.model.ran) << r.model.skipped;
    EXPECT_EQ(r.model.metrics.tokens, 512);
    EXPECT_GT(r.model.metrics.kl_mean, 0.0) << "quantization changes the output distribution";
    EXPECT_LT(r.model.metrics.kl_mean, 1e-3);
    EXPECT_GE(r.model.metrics.kl_p99, r.model.metrics.kl_mean);
    EXPECT_NEAR(r.model.metrics.ppl_quant / r.model.metrics.ppl_ref, 1.0, 0.01);
  }
}

TEST(VerifyCheckpoint, SimulatesNvfp4Mxfp4AndMxfp8ActivationsAndPassesTheirGates) {
  for (const char* scheme : {"nvfp4", "mxfp4", "mxfp8"}) {
    SCOPED_TRACE(scheme);
    Models& m = Models::get();
    const VerifyReport r = verify::verify_checkpoint(opts(m.quantized(scheme), m.tiny()));
    EXPECT_TRUE(r.pass) << (r.failures.empty() ? "" : r.failures[0]);
    EXPECT_TRUE(r.findings.empty()) << (r.findings.empty() ? "" : r.findings[0].message);
    ASSERT_EQ(r.layers.size(), 14u) << "every Linear is verified, none skipped";
    const std::string sc = scheme;
    const std::string act =
        sc == "nvfp4"   ? "activations FP4 E2M1 (as E4M3 codes) dynamic per-group of 16 (FP8 E4M3 scales under the F32 "
                          "input_global_scale)"
        : sc == "mxfp4" ? "activations FP4 E2M1 (as E4M3 codes) dynamic per-group of 32 (E8M0 scales)"
                        : "activations FP8 E4M3 dynamic per-group of 32 (E8M0 scales)";
    for (const auto& L : r.layers) {
      EXPECT_NE(L.descriptor.find(act), std::string::npos) << L.descriptor;
      EXPECT_TRUE(L.gates.basis.starts_with(sc == "mxfp8" ? "FP8 W8A8 default" : "FP4 W4A4 default")) << L.gates.basis;
      EXPECT_GT(L.act_err, 0.0) << "activation quantization changes the GEMM";
      for (const auto& a : L.agreement) EXPECT_TRUE(a.ok) << L.module << " " << a.kernel;
    }
    EXPECT_TRUE(r.model.ran) << r.model.skipped;
    EXPECT_GT(r.model.metrics.kl_mean, 0.0);
  }
}

TEST(VerifyCheckpoint, Int8FastKernelEqualsTheReferenceKernelBitForBit) {
  Models& m = Models::get();
  const VerifyReport r = verify::verify_checkpoint(opts(m.quantized("int8-dynamic")));
  for (const auto& L : r.layers)
    for (const auto& a : L.agreement) {
      EXPECT_TRUE(a.required_exact);
      EXPECT_TRUE(a.bit_exact) << L.module << " " << a.kernel;
    }
  // Directly too, at a token count with remainders (37 = 6*6 + 1 rows for the 6x16 tiles).
  ModelFolder f = ModelFolder::open(m.quantized("int8-dynamic"));
  const auto entries = find_quantized_linears(f.checkpoint(), parse_quant_info(f.config()));
  ASSERT_FALSE(entries.empty());
  const auto& reg = kernels::Registry::builtin();
  for (const auto& e : entries) {
    const LoadedLinear l = load_quantized_linear(f.checkpoint(), e);
    const auto X = verify::synthetic_activations(37, e.desc.K, 3);
    std::vector<float> yf(37 * e.desc.N), yr(yf.size());
    const auto* fast = reg.find("cpu_fast");
    const auto* ref = reg.find("cpu_ref");
    if (!fast->can_implement(e.desc).empty()) GTEST_SKIP() << "no AVX2: " << fast->can_implement(e.desc);
    fast->run(*fast->pack(e.desc, l.ref), X.data(), 37, yf.data());
    ref->run(*ref->pack(e.desc, l.ref), X.data(), 37, yr.data());
    EXPECT_EQ(std::memcmp(yf.data(), yr.data(), yf.size() * 4), 0) << e.module;
  }
}

TEST(VerifyCheckpoint, DoubledWeightScaleFailsTheSqnrAndGemmGates) {
  Models& m = Models::get();
  // Every BF16 scale of the layer * 2: +1 in the exponent field (bits 7..14).
  const std::string bad = m.corrupted("fp8-dynamic", "doubled", "model.layers.0.self_attn.q_proj.weight_scale",
                                      [](uint8_t* b, uint64_t n, DType dt) {
                                        ASSERT_EQ(dt, DType::BF16);
                                        for (uint64_t i = 0; i < n; i += 2) {
                                          uint16_t v;
                                          std::memcpy(&v, b + i, 2);
                                          v = static_cast<uint16_t>(v + 0x80);
                                          std::memcpy(b + i, &v, 2);
                                        }
                                      });
  const VerifyReport r = verify::verify_checkpoint(opts(bad, m.tiny()));
  EXPECT_FALSE(r.pass);
  const LayerReport& L = layer(r, "model.layers.0.self_attn.q_proj");
  EXPECT_FALSE(L.pass);
  ASSERT_TRUE(L.weight.has_value());
  EXPECT_NEAR(L.weight->sqnr_db, 0.0, 0.5) << "error = the weight itself";
  EXPECT_GT(L.weight->max_rel, 0.9);
  EXPECT_GT(L.gemm_err, 0.5) << "every output of the layer doubles";
  ASSERT_EQ(L.failures.size(), 2u);
  EXPECT_NE(L.failures[1].find("GEMM error"), std::string::npos) << L.failures[1];
  EXPECT_NE(L.failures[0].find("weight SQNR"), std::string::npos) << L.failures[0];
  EXPECT_TRUE(layer(r, "model.layers.0.self_attn.k_proj").pass) << "other layers unaffected";
  EXPECT_TRUE(r.findings.empty()) << "a doubled scale is structurally valid; only the reference reveals it";
}

TEST(VerifyCheckpoint, FlippedSignBitOfOneCodeFailsTheSqnrGate) {
  Models& m = Models::get();
  // The sign bit of the first largest-magnitude E4M3 code (an outlier column's +-448) flips:
  // one weight changes by twice the row maximum (a flipped low-order bit of a small code would
  // hide below the FP8 rounding noise).
  const std::string bad = m.corrupted("fp8-dynamic", "flipped", "model.layers.1.mlp.down_proj.weight",
                                      [](uint8_t* b, uint64_t n, DType dt) {
                                        ASSERT_EQ(dt, DType::F8_E4M3);
                                        uint64_t best = 0;
                                        for (uint64_t i = 1; i < n; ++i)
                                          if ((b[i] & 0x7F) > (b[best] & 0x7F)) best = i;
                                        ASSERT_EQ(b[best] & 0x7F, 0x7E) << "per-channel: the row maximum is 448";
                                        b[best] ^= 0x80;
                                      });
  const VerifyReport r = verify::verify_checkpoint(opts(bad, m.tiny()));
  EXPECT_FALSE(r.pass);
  const LayerReport& L = layer(r, "model.layers.1.mlp.down_proj");
  EXPECT_FALSE(L.pass);
  ASSERT_TRUE(L.weight.has_value());
  EXPECT_LT(L.weight->sqnr_db, 25.0);
  size_t failing = 0;
  for (const auto& x : r.layers) failing += !x.pass;
  EXPECT_EQ(failing, 1u);
}

TEST(VerifyCheckpoint, ZeroScaleIsAStructuralErrorWithoutAReference) {
  Models& m = Models::get();
  const std::string bad = m.corrupted("int8-dynamic", "zero-scale", "model.layers.1.mlp.up_proj.weight_scale",
                                      [](uint8_t* b, uint64_t, DType) { b[0] = b[1] = 0; });
  const VerifyReport r = verify::verify_checkpoint(opts(bad));
  EXPECT_FALSE(r.pass);
  ASSERT_FALSE(r.findings.empty());
  EXPECT_EQ(r.findings[0].severity, "error");
  EXPECT_EQ(r.findings[0].where, "model.layers.1.mlp.up_proj.weight_scale");
  EXPECT_NE(r.findings[0].message.find("1 zero"), std::string::npos) << r.findings[0].message;
  EXPECT_FALSE(layer(r, "model.layers.1.mlp.up_proj").pass);
  EXPECT_FALSE(r.model.ran) << "the model is not run with unusable layers";
}

TEST(VerifyCheckpoint, ShrunkenStaticInputScaleFailsTheGemmGateWithoutAReference) {
  Models& m = Models::get();
  // input_scale / 64 (F32 or BF16 exponent - 6): activations clip at 448 * s / 64.
  const std::string bad = m.corrupted("fp8-static", "small-input-scale", "model.layers.0.mlp.gate_proj.input_scale",
                                      [](uint8_t* b, uint64_t n, DType dt) {
                                        if (dt == DType::F32) {
                                          ASSERT_EQ(n, 4u);
                                          float f;
                                          std::memcpy(&f, b, 4);
                                          f /= 64.0f;
                                          std::memcpy(b, &f, 4);
                                        } else {
                                          ASSERT_EQ(dt, DType::BF16);
                                          uint16_t v;
                                          std::memcpy(&v, b, 2);
                                          v = static_cast<uint16_t>(v - 6 * 0x80);
                                          std::memcpy(b, &v, 2);
                                        }
                                      });
  const VerifyReport good = verify::verify_checkpoint(opts(m.quantized("fp8-static")));
  EXPECT_TRUE(good.pass) << (good.failures.empty() ? "" : good.failures[0]);
  const VerifyReport r = verify::verify_checkpoint(opts(bad));
  EXPECT_FALSE(r.pass);
  const LayerReport& L = layer(r, "model.layers.0.mlp.gate_proj");
  EXPECT_FALSE(L.pass);
  EXPECT_GT(L.gemm_err, 0.10);
  EXPECT_LT(layer(good, "model.layers.0.mlp.gate_proj").gemm_err, 0.10);
}

TEST(VerifyCheckpoint, WithoutTheModelLevelUsesSeededSyntheticActivations) {
  Models& m = Models::get();
  verify::VerifyOptions o = opts(m.quantized("fp8-block"));
  o.model_eval = false;
  const VerifyReport a = verify::verify_checkpoint(o), b = verify::verify_checkpoint(o);
  EXPECT_FALSE(a.model.ran);
  ASSERT_EQ(a.layers.size(), 14u);
  for (size_t i = 0; i < a.layers.size(); ++i) {
    EXPECT_EQ(a.layers[i].activations, "synthetic");
    EXPECT_GT(a.layers[i].gemm_err, 0.0);
    EXPECT_EQ(a.layers[i].gemm_err, b.layers[i].gemm_err) << "seeded";
  }
  EXPECT_TRUE(a.pass);
}

TEST(VerifyCheckpoint, ReferenceOfADifferentModelIsAUsageError) {
  Models& m = Models::get();
  test::TempDir d;
  ASSERT_EQ(test::run_qtool({"tiny-model", d.str("wide"), "--hidden", "64"}).exit_code, 0);
  const std::optional<InputError> e =
      test::input_error([&] { verify::verify_checkpoint(opts(m.quantized("fp8-dynamic"), d.str("wide"))); });
  ASSERT_TRUE(e) << "no error";
  EXPECT_EQ(e->kind(), InputError::Kind::Usage);
  EXPECT_NE(std::string(e->what()).find("hidden_size"), std::string::npos) << e->what();
}

TEST(ModelLevel, KlOfACheckpointAgainstItselfDequantizedIsZeroAndPositiveWithActivationQuantization) {
  Models& m = Models::get();
  ModelFolder f = ModelFolder::open(m.quantized("fp8-dynamic"));
  const Checkpoint& ck = f.checkpoint();
  const auto entries = find_quantized_linears(ck, parse_quant_info(f.config()));
  const calib::ModelConfig cfg = calib::ModelConfig::from_json(f.config(), f.config_path());
  const std::vector<std::vector<int32_t>> samples = {{1, 50, 70, 90, 110, 130, 150, 170}, {2, 3, 5, 7, 11, 13}};
  auto run = [&](bool fake_quant) {
    verify::LogitComparator c(samples);
    calib::ForwardOptions fo;
    fo.lm_head_tied = cfg.lm_head_tied(ck.find("lm_head.weight") != nullptr);
    fo.on_logits = [&](size_t s, int64_t t, const float* l, int64_t n, int64_t V) { c.add_reference(s, t, l, n, V); };
    calib::run_forward(cfg, verify::make_dequantizing_provider(ck, entries, f.dir()), samples, fo);
    if (fake_quant) fo.transform = verify::make_fake_quant_transform(ck, entries);
    fo.on_logits = [&](size_t s, int64_t t, const float* l, int64_t n, int64_t V) { c.add_quantized(s, t, l, n, V); };
    calib::run_forward(cfg, verify::make_dequantizing_provider(ck, entries, f.dir()), samples, fo);
    return c.finish();
  };
  const ModelMetrics same = run(false);
  EXPECT_EQ(same.kl_mean, 0.0);
  EXPECT_EQ(same.kl_max, 0.0);
  EXPECT_EQ(same.top1, 1.0);
  EXPECT_EQ(same.ppl_ref, same.ppl_quant);
  const ModelMetrics fq = run(true);
  EXPECT_GT(fq.kl_mean, 0.0);
  EXPECT_LT(fq.kl_mean, 1e-3);
}

TEST(ListKernels, GroupsIdenticalDescriptorsAndGivesEveryKernelsReason) {
  Models& m = Models::get();
  const VerifyReport r = list_kernels(opts(m.quantized("w4a16")));
  ASSERT_EQ(r.kernels.size(), 4u) << "q/o, k/v, gate/up and down have four distinct shapes";
  size_t layers = 0;
  for (const auto& g : r.kernels) {
    layers += g.modules.size();
    EXPECT_EQ(g.chosen, "cpu_fast");
    ASSERT_EQ(g.candidates.size(), 3u);
    EXPECT_EQ(g.candidates[0], (std::pair<std::string, std::string>{"cpu_fast", ""}));
    EXPECT_EQ(g.candidates[1].second, "lower priority");
  }
  EXPECT_EQ(layers, 14u);
  verify::VerifyOptions o = opts(m.quantized("w4a16"));
  o.select.disabled = {"cpu_fast"};
  const VerifyReport d = list_kernels(o);
  EXPECT_EQ(d.kernels[0].chosen, "cpu_portable");
  EXPECT_EQ(d.kernels[0].candidates[0].second, "disabled");
}

}  // namespace
}  // namespace qt::verify
