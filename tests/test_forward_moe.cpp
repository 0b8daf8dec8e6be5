// Tests for the mixture-of-experts part of calib/model_config and calib/forward: Mixtral,
// Qwen3-MoE and Qwen2-MoE against transformers goldens (testdata/forward/{mixtral,qwen3_moe,
// qwen2_moe}, made by testdata/forward/make_moe_goldens.py): logits, every non-expert Linear
// input, and every expert's input statistics under both calibration policies (all experts /
// routed tokens only), and the routed-token counts.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "calib/forward.h"
#include "calib/model_config.h"
#include "calib/moe_coverage.h"
#include "calib/observers.h"
#include "calib/quant_plan.h"
#include "calib/quantize_pipeline.h"
#include "calib/smoothing.h"
#include "calib/stats_file.h"
#include "formats/model_folder.h"
#include "formats/tiny_model.h"
#include "libquant/float_formats.h"
#include "libquant/quantize.h"
#include "libquant/schemes.h"
#include "libquant/error.h"
#include "tests/support/forward_golden.h"
#include "tests/support/test_support.h"

namespace {

using nlohmann::json;
using qt::InputError;
using qt::calib::AbsMaxObserver;
using qt::calib::ForwardOptions;
using qt::calib::ModelConfig;
using qt::calib::WeightProvider;

using qt::test::read_f32;
using qt::test::rel_max_diff;

using qt::test::forward_golden_dir;

// A MoE golden: the model, and transformers' statistics and token samples.
struct Golden : qt::test::GoldenModel {
  json stats;
  std::vector<std::vector<int32_t>> tokens;

  explicit Golden(const std::string& name)
      : GoldenModel(name),
        stats(qt::read_json_file(forward_golden_dir(name) + "/stats.json")),
        tokens(stats.at("tokens").get<std::vector<std::vector<int32_t>>>()) {}
};

struct RunResult {
  std::vector<float> logits;
  qt::ActivationStats stats;
};

RunResult run(const Golden& g, bool all_experts, int threads = 0, bool identity_transform = false) {
  RunResult r;
  AbsMaxObserver obs;
  ForwardOptions o;
  o.observer = &obs;
  o.num_threads = threads;
  o.moe_all_experts = all_experts;
  o.lm_head_tied = g.tied;
  if (identity_transform) o.transform = [](const std::string&, float*, int64_t, int64_t) {};
  o.on_logits = [&](size_t, int64_t, const float* l, int64_t t, int64_t v) {
    r.logits.insert(r.logits.end(), l, l + t * v);
  };
  qt::calib::run_forward(g.cfg, g.weights, g.tokens, o);
  r.stats = obs.stats();
  return r;
}

// The statistics transformers' run gives for the policy: every nn.Linear input except the
// routers (never observed: never quantized), plus the expert statistics of that policy.
std::map<std::string, double> expected_inputs(const json& stats, const char* expert_key) {
  std::map<std::string, double> m;
  for (const auto& [k, v] : stats.at("input_absmax").items())
    if (k.find("shared_expert_gate") == std::string::npos) m[k] = v.get<double>();
  for (const auto& [k, v] : stats.at(expert_key).items()) m[k] = v.get<double>();
  return m;
}

void expect_inputs(const std::map<std::string, double>& want, const std::map<std::string, float>& got) {
  EXPECT_EQ(got.size(), want.size());
  for (const auto& [name, ref] : want) {
    auto it = got.find(name);
    ASSERT_NE(it, got.end()) << "no statistic for " << name;
    EXPECT_LE(std::fabs(it->second - ref), 1e-5 * ref) << name << ": " << it->second << " vs " << ref;
  }
  for (const auto& [name, v] : got) EXPECT_TRUE(want.count(name)) << "unexpected statistic " << name;
}

class MoeGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(MoeGolden, LogitsMatchTransformersWithin1e4Relative) {
  Golden g(GetParam());
  const RunResult r = run(g, true);
  const std::vector<float> ref = read_f32(forward_golden_dir(GetParam()) + "/logits.bin");
  ASSERT_EQ(r.logits.size(), ref.size());
  EXPECT_LE(rel_max_diff(r.logits, ref), 1e-4);
}

TEST_P(MoeGolden, PolicyAllObservesEveryTokenInEveryExpertAsTransformersComputesIt) {
  Golden g(GetParam());
  const RunResult r = run(g, true);
  expect_inputs(expected_inputs(g.stats, "expert_all"), r.stats.input_absmax);
  for (const char* kv : {"k_absmax", "v_absmax"}) {
    const auto& got = std::string(kv) == "k_absmax" ? r.stats.k_absmax : r.stats.v_absmax;
    for (const auto& [k, v] : g.stats.at(kv).items()) {
      ASSERT_TRUE(got.count(k)) << k;
      EXPECT_LE(std::fabs(got.at(k) - v.get<double>()), 1e-5 * v.get<double>()) << kv << " " << k;
    }
  }
}

TEST_P(MoeGolden, PolicyRoutedObservesEachExpertOnItsRoutedTokensOnly) {
  Golden g(GetParam());
  const RunResult r = run(g, false);
  expect_inputs(expected_inputs(g.stats, "expert_routed"), r.stats.input_absmax);
  // The policy changes statistics only: the logits are the same computation.
  const RunResult a = run(g, true);
  ASSERT_EQ(a.logits.size(), r.logits.size());
  EXPECT_EQ(std::memcmp(a.logits.data(), r.logits.data(), a.logits.size() * 4), 0);
}

TEST_P(MoeGolden, RoutedTokenCountsEqualTransformersRouterChoices) {
  Golden g(GetParam());
  const RunResult r = run(g, true);
  const auto want = g.stats.at("routed_tokens").get<std::map<std::string, std::vector<int64_t>>>();
  EXPECT_EQ(r.stats.routed_tokens, want);
  for (const auto& [block, counts] : r.stats.routed_tokens) {
    int64_t sum = 0;
    for (int64_t c : counts) sum += c;
    EXPECT_EQ(sum, 19 * g.cfg.moe.top_k) << block;  // every token routed to exactly top_k experts
  }
}

TEST_P(MoeGolden, ResultsAreBitIdenticalForOneAndThreeThreadsAndWithoutFusedExperts) {
  Golden g(GetParam());
  const RunResult a = run(g, true, 1), b = run(g, true, 3), c = run(g, true, 2, /*identity_transform=*/true);
  ASSERT_EQ(a.logits.size(), b.logits.size());
  EXPECT_EQ(std::memcmp(a.logits.data(), b.logits.data(), a.logits.size() * 4), 0);
  EXPECT_EQ(std::memcmp(a.logits.data(), c.logits.data(), a.logits.size() * 4), 0);
  EXPECT_EQ(a.stats.input_absmax, b.stats.input_absmax);
  EXPECT_EQ(a.stats.input_absmax, c.stats.input_absmax);
}

INSTANTIATE_TEST_SUITE_P(Architectures, MoeGolden, ::testing::Values("mixtral", "qwen3_moe", "qwen2_moe"),
                         [](const auto& info) { return info.param; });

// ---- config -------------------------------------------------------------------------------

json qwen3_moe_json() {
  return json{{"architectures", {"Qwen3MoeForCausalLM"}}, {"hidden_size", 64}, {"intermediate_size", 128},
              {"num_hidden_layers", 4}, {"num_attention_heads", 4}, {"vocab_size", 100}};
}

TEST(MoeConfig, MixtralTakesItsClassDefaultsForAbsentKeys) {
  const ModelConfig c = ModelConfig::from_json(
      json{{"model_type", "mixtral"}, {"hidden_size", 64}, {"intermediate_size", 96}, {"num_hidden_layers", 2},
           {"num_attention_heads", 8}, {"vocab_size", 100}},
      "c");
  EXPECT_EQ(c.architecture, "MixtralForCausalLM");
  EXPECT_EQ(c.moe.num_experts, 8);
  EXPECT_EQ(c.moe.top_k, 2);
  EXPECT_EQ(c.moe.expert_intermediate, 96);
  EXPECT_TRUE(c.moe.norm_topk_prob);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.rope.theta, 1e6);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.sliding_window, (std::vector<int64_t>{0, 0}));
  EXPECT_EQ(c.moe_block(1), "model.layers.1.block_sparse_moe");
  EXPECT_EQ(c.expert_module(1, 7), "model.layers.1.block_sparse_moe.experts.7");
}

TEST(MoeConfig, Qwen3MoeSparseLayersFollowDecoderSparseStepAndMlpOnlyLayers) {
  json j = qwen3_moe_json();
  j["decoder_sparse_step"] = 2;
  j["mlp_only_layers"] = {3};
  const ModelConfig c = ModelConfig::from_json(j, "c");
  EXPECT_EQ(c.moe.sparse_layer, (std::vector<bool>{false, true, false, false}));
  EXPECT_EQ(c.moe.num_experts, 128);
  EXPECT_EQ(c.moe.top_k, 8);
  EXPECT_EQ(c.moe.expert_intermediate, 768);
  EXPECT_FALSE(c.moe.norm_topk_prob);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_EQ(c.head_dim, 16);  // Qwen3-MoE has no class head_dim: H / nH
  EXPECT_EQ(c.num_kv_heads, 4);
}

TEST(MoeConfig, ExpertCountIsReadFromEitherNumExpertsOrNumLocalExperts) {
  json j = qwen3_moe_json();
  j["num_experts_per_tok"] = 2;
  j["num_local_experts"] = 6;  // what transformers 5 writes for Qwen3-MoE (attribute_map)
  EXPECT_EQ(ModelConfig::from_json(j, "c").moe.num_experts, 6);
  j["num_experts"] = 12;  // what the hub's Qwen3-30B-A3B config.json says
  EXPECT_EQ(ModelConfig::from_json(j, "c").moe.num_experts, 12);
}

TEST(MoeConfig, Qwen2MoeHasQkvBiasesAndASharedExpert) {
  json j = qwen3_moe_json();
  j["architectures"] = {"Qwen2MoeForCausalLM"};
  j["num_key_value_heads"] = 4;  // the class default 16 does not divide 4 heads
  const ModelConfig c = ModelConfig::from_json(j, "c");
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_EQ(c.moe.shared_intermediate, 5632);
  EXPECT_EQ(c.moe.num_experts, 60);
  j["qkv_bias"] = false;
  EXPECT_FALSE(ModelConfig::from_json(j, "c").qkv_bias);
}

TEST(MoeConfig, RefusesMoreExpertsPerTokenThanExperts) {
  json j = qwen3_moe_json();
  j["num_experts"] = 4;
  j["num_experts_per_tok"] = 5;
  const std::optional<InputError> e = qt::test::input_error([&] { ModelConfig::from_json(j, "/m/config.json"); });
  ASSERT_TRUE(e) << "no error";
  EXPECT_EQ(e->kind(), InputError::Kind::BadFile);
  EXPECT_EQ(std::string(e->what()),
            "/m/config.json: config key 'num_experts_per_tok' must be between 1 and the number of experts "
            "(expected 1..4, got 5)");
}

// ---- coverage report and the routed policy's refusal ------------------------------------------

qt::ActivationStats coverage_stats() {
  qt::ActivationStats s;
  s.routed_tokens["model.layers.0.mlp"] = {5, 0, 12, 3};
  s.routed_tokens["model.layers.10.mlp"] = {4, 6, 6, 8};
  s.routed_tokens["model.layers.2.mlp"] = {9, 9, 9, 9};
  for (const char* b : {"model.layers.0.mlp", "model.layers.2.mlp", "model.layers.10.mlp"})
    for (int e = 0; e < 4; ++e) {
      const std::string p = std::string(b) + ".experts." + std::to_string(e) + ".";
      s.input_absmax[p + "gate_proj"] = s.input_absmax[p + "up_proj"] = 2.0f;
      s.input_absmax[p + "down_proj"] = 1.0f + static_cast<float>(e);
    }
  return s;
}

TEST(MoeCoverage, ReportsMinMedianMaxAndExpertsWithoutTokensPerLayerInLayerOrder) {
  const auto cov = qt::calib::moe_coverage(coverage_stats());
  ASSERT_EQ(cov.size(), 3u);
  EXPECT_EQ(cov[0].block, "model.layers.0.mlp");
  EXPECT_EQ(cov[1].block, "model.layers.2.mlp");
  EXPECT_EQ(cov[2].block, "model.layers.10.mlp");
  EXPECT_EQ(cov[0].min, 0);
  EXPECT_EQ(cov[0].max, 12);
  EXPECT_EQ(cov[0].median, 4.0);  // (3 + 5) / 2
  EXPECT_EQ(cov[0].zero_experts, (std::vector<int64_t>{1}));
  EXPECT_EQ(cov[0].w13_spread, 1.0);
  EXPECT_EQ(cov[0].w2_spread, 4.0);
  EXPECT_EQ(qt::calib::coverage_summary(cov),
            "3 MoE layers x 4 experts, routed calibration tokens per expert min 0 / median 7 / max 12, "
            "1 expert in 1 layer saw none");
  EXPECT_EQ(qt::calib::coverage_line(cov[0]),
            "model.layers.0.mlp: 4 experts, routed tokens per expert min 0 / median 4 / max 12, none routed to "
            "expert(s) 1; input max|x| spread across experts w13 1x, w2 4x");
  const json j = qt::calib::coverage_json(cov);
  EXPECT_EQ(j.at("model.layers.0.mlp").at("experts_without_tokens"), json::array({1}));
  EXPECT_EQ(j.at("model.layers.10.mlp").at("routed_tokens"), json::array({4, 6, 6, 8}));
}

TEST(MoeCoverage, RoutedPolicyRefusesExpertsUnderTheMinimumNamingLayersAndExperts) {
  const auto cov = qt::calib::moe_coverage(coverage_stats());
  const std::optional<InputError> e = qt::test::input_error([&] { qt::calib::check_routed_coverage(cov, 5, "/m"); });
  ASSERT_TRUE(e) << "no error";
  EXPECT_EQ(e->kind(), InputError::Kind::BadValue);
  EXPECT_EQ(std::string(e->what()),
            "/m: --moe-calibration routed: 3 experts saw fewer than --moe-min-tokens 5 routed calibration tokens: "
            "model.layers.0.mlp expert 1 (0 tokens), 3 (3 tokens); model.layers.10.mlp expert 0 (4 tokens). Their "
            "input scales would rest on too few tokens; use --moe-calibration all (every token through every "
            "expert, the default), more calibration samples, a lower --moe-min-tokens, or --moe-fallback layer-max "
            "(such an expert takes the layer's maximum over the experts that met the minimum)");
  EXPECT_NO_THROW(qt::calib::check_routed_coverage(cov, 0, "/m"));
}

// ---- --moe-fallback layer-max -------------------------------------------------------------------

TEST(MoeFallback, LayerMaxGivesExpertsUnderTheMinimumTheMaximumOverTheExpertsThatMetIt) {
  // coverage_stats(), minimum 5. Layer 0: tokens 5, 0, 12, 3 -> experts 1 and 3 fall back; the
  // experts that met it, 0 and 2, have w13 maxima 2, 2 and w2 maxima 1, 3: by hand w13 2, w2 3
  // (expert 3's own w2 of 4 rests on 3 tokens and is replaced). Layer 10: tokens 4, 6, 6, 8 ->
  // expert 0 falls back to w2 max(2, 3, 4) = 4. Layer 2: 9 tokens each, nothing falls back.
  qt::ActivationStats s = coverage_stats();
  auto cov = qt::calib::moe_coverage(s);
  qt::calib::apply_layer_max_fallback(s, cov, 5, "/m");
  ASSERT_EQ(cov.size(), 3u);
  EXPECT_EQ(cov[0].fallback_experts, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(cov[1].fallback_experts, (std::vector<int64_t>{}));
  EXPECT_EQ(cov[2].fallback_experts, (std::vector<int64_t>{0}));
  const std::map<std::string, float> want = {
      {"model.layers.0.mlp.experts.0.down_proj", 1.0f}, {"model.layers.0.mlp.experts.1.down_proj", 3.0f},
      {"model.layers.0.mlp.experts.2.down_proj", 3.0f}, {"model.layers.0.mlp.experts.3.down_proj", 3.0f},
      {"model.layers.0.mlp.experts.1.gate_proj", 2.0f}, {"model.layers.0.mlp.experts.3.up_proj", 2.0f},
      {"model.layers.10.mlp.experts.0.down_proj", 4.0f}, {"model.layers.10.mlp.experts.1.down_proj", 2.0f},
      {"model.layers.2.mlp.experts.0.down_proj", 1.0f}, {"model.layers.2.mlp.experts.3.down_proj", 4.0f}};
  for (const auto& [m, v] : want) EXPECT_EQ(s.input_absmax.at(m), v) << m;
  // Written as vLLM serves it: every expert of layer 0 gets w2 3 / 448 (f32 model), not 4 / 448.
  for (int e = 0; e < 4; ++e)
    EXPECT_EQ(qt::calib::static_input_scale(s, "model.layers.0.mlp.experts." + std::to_string(e) + ".down_proj",
                                            qt::QuantType::Float8E4M3, qt::DType::F32, "/m"),
              3.0f / 448.0f)
        << e;
  EXPECT_EQ(qt::calib::fallback_line(cov[0], 5),
            "model.layers.0.mlp: experts 1 (0 tokens), 3 (3 tokens) under --moe-min-tokens 5 take the layer maximum "
            "over its 2 experts that met it: w13 input max|x| 2, w2 3");
  EXPECT_EQ(qt::calib::fallback_line(cov[2], 5),
            "model.layers.10.mlp: expert 0 (4 tokens) under --moe-min-tokens 5 takes the layer maximum over its 3 "
            "experts that met it: w13 input max|x| 2, w2 4");
  EXPECT_EQ(qt::calib::fallback_line(cov[1], 5), "");
  const json j = qt::calib::coverage_json(cov);
  EXPECT_EQ(j.at("model.layers.0.mlp").at("fallback_experts"), json::array({1, 3}));
  EXPECT_EQ(j.at("model.layers.0.mlp").at("fallback_input_absmax"), json({{"w13", 2.0}, {"w2", 3.0}}));
  EXPECT_EQ(j.at("model.layers.2.mlp").at("fallback_experts"), json::array());
  EXPECT_FALSE(j.at("model.layers.2.mlp").contains("fallback_input_absmax"));
}

TEST(MoeFallback, LayerMaxFillsAnExpertThatSawNoTokenEvenWithMinimumZero) {
  // Minimum 0 accepts every expert that has a statistic; one with no token has none, and would
  // be refused when its scale is written: layer-max gives it the layer's maximum instead.
  qt::ActivationStats s = coverage_stats();
  for (const char* p : {"gate_proj", "up_proj", "down_proj"})
    s.input_absmax.erase(std::string("model.layers.0.mlp.experts.1.") + p);
  auto cov = qt::calib::moe_coverage(s);
  qt::calib::apply_layer_max_fallback(s, cov, 0, "/m");
  EXPECT_EQ(cov[0].fallback_experts, (std::vector<int64_t>{1}));
  EXPECT_EQ(s.input_absmax.at("model.layers.0.mlp.experts.1.down_proj"), 4.0f);  // max(1, 3, 4)
  EXPECT_EQ(s.input_absmax.at("model.layers.0.mlp.experts.1.gate_proj"), 2.0f);
  EXPECT_EQ(s.input_absmax.at("model.layers.0.mlp.experts.1.up_proj"), 2.0f);
  EXPECT_EQ(qt::calib::fallback_line(cov[0], 0),
            "model.layers.0.mlp: expert 1 (0 tokens) under --moe-min-tokens 1 takes the layer maximum over its 3 "
            "experts that met it: w13 input max|x| 2, w2 4");
}

TEST(MoeFallback, LayerMaxRefusesALayerWhereNoExpertMetTheMinimum) {
  qt::ActivationStats s = coverage_stats();
  auto cov = qt::calib::moe_coverage(s);
  const std::optional<InputError> e =
      qt::test::input_error([&] { qt::calib::apply_layer_max_fallback(s, cov, 13, "/m"); });
  ASSERT_TRUE(e) << "no error";
  EXPECT_EQ(e->kind(), InputError::Kind::BadValue);
  EXPECT_EQ(std::string(e->what()),
            "/m: --moe-fallback layer-max: no expert of model.layers.0.mlp saw --moe-min-tokens 13 routed calibration "
            "tokens (the most any saw: 12), so the layer has no maximum to fall back on; use --moe-calibration all, "
            "more calibration samples, or a lower --moe-min-tokens");
}

TEST(MoeFallback, LayerMaxRefusesAZeroMaximumRatherThanWriteAZeroScale) {
  qt::ActivationStats s = coverage_stats();
  s.input_absmax["model.layers.2.mlp.experts.0.down_proj"] = 0.0f;
  s.routed_tokens["model.layers.2.mlp"] = {9, 1, 1, 1};
  for (int e = 1; e < 4; ++e) s.input_absmax["model.layers.2.mlp.experts." + std::to_string(e) + ".down_proj"] = 5.0f;
  auto cov = qt::calib::moe_coverage(s);
  const std::optional<InputError> e =
      qt::test::input_error([&] { qt::calib::apply_layer_max_fallback(s, cov, 5, "/m"); });
  ASSERT_TRUE(e) << "no error";
  EXPECT_EQ(std::string(e->what()),
            "/m: --moe-fallback layer-max: a w2 input statistic of the experts of model.layers.2.mlp that met "
            "--moe-min-tokens is zero, negative or not finite; it cannot serve as the layer's maximum");
}

TEST(MoeFallback, ParsesItsTwoNamesOnly) {
  qt::calib::MoeFallback f = qt::calib::MoeFallback::Error;
  EXPECT_TRUE(qt::calib::parse_moe_fallback("layer-max", f));
  EXPECT_EQ(f, qt::calib::MoeFallback::LayerMax);
  EXPECT_STREQ(qt::calib::moe_fallback_name(f), "layer-max");
  EXPECT_TRUE(qt::calib::parse_moe_fallback("error", f));
  EXPECT_EQ(f, qt::calib::MoeFallback::Error);
  EXPECT_FALSE(qt::calib::parse_moe_fallback("max", f));
}

// End to end on a tiny Qwen3-MoE (f32): statistics of a routed calibration on few tokens, then a
// quantize from them with a minimum some experts miss. Expected scales derived here from the
// statistics file: per layer, max over the experts with at least N routed tokens, / 448.
TEST(MoeFallback, QuantizeWritesTheLayerMaximumOfTheExpertsThatMetTheMinimumAndReportsTheOthers) {
  qt::test::TempDir tmp;
  const std::string model = tmp.str("model"), stats = tmp.str("s.stats.zst");
  ASSERT_EQ(qt::test::run_qtool({"tiny-model", "--arch", "qwen3_moe", "--dtype", "f32", model}).exit_code, 0);
  auto a = qt::test::run_qtool({"-q", "quantize", model, "-o", tmp.str("dyn"), "--scheme", "fp8-dynamic", "--no-hash",
                                "--moe-calibration", "routed", "--moe-min-tokens", "0", "--num-samples", "2",
                                "--seq-len", "24", "--save-stats", stats});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  const json sj = qt::calib::read_stats_json(stats);
  ASSERT_EQ(sj.at("moe_calibration"), "routed");
  const auto routed = sj.at("routed_tokens").get<std::map<std::string, std::vector<int64_t>>>();
  const auto absmax = sj.at("input_absmax").get<std::map<std::string, float>>();
  // N: one more than the largest per-layer minimum, so every layer has an expert under it; each
  // layer must keep one that met it (checked, so the test cannot pass vacuously).
  int64_t n = 0;
  for (const auto& [b, t] : routed) n = std::max(n, *std::min_element(t.begin(), t.end()) + 1);
  for (const auto& [b, t] : routed) ASSERT_GE(*std::max_element(t.begin(), t.end()), n) << b;

  // Without the fallback: refused, and the message offers it.
  auto r = qt::test::run_qtool({"quantize", model, "-o", tmp.str("refused"), "--scheme", "fp8-static", "--stats", stats,
                                "--moe-min-tokens", std::to_string(n), "--no-hash"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_CONTAINS(r.err, "or --moe-fallback layer-max (such an expert takes the layer's maximum over the experts that met the minimum)");

  const std::string out = tmp.str("fp8s");
  auto q = qt::test::run_qtool({"quantize", model, "-o", out, "--scheme", "fp8-static", "--stats", stats,
                                "--moe-min-tokens", std::to_string(n), "--moe-fallback", "layer-max", "--no-hash", "--json"});
  ASSERT_EQ(q.exit_code, 0) << q.err;
  const json qj = json::parse(q.out);
  EXPECT_EQ(qj.at("moe").at("fallback"), "layer-max");
  EXPECT_EQ(qj.at("moe").at("min_tokens"), n);
  const json manifest = qt::read_json_file(out + "/qtool_manifest.json");
  EXPECT_EQ(manifest.at("moe").at("fallback"), "layer-max");
  const json ins = json::parse(qt::test::run_qtool({"inspect", out, "--json"}).out);
  const qt::ModelFolder written = qt::ModelFolder::open(out);
  size_t fell_back = 0;
  for (const auto& [block, tokens] : routed) {
    SCOPED_TRACE(block);
    std::vector<int64_t> under;
    float w13 = 0, w2 = 0;
    for (size_t e = 0; e < tokens.size(); ++e) {
      const std::string p = block + ".experts." + std::to_string(e) + ".";
      if (tokens[e] < n) {
        under.push_back(static_cast<int64_t>(e));
        continue;
      }
      w13 = std::max({w13, absmax.at(p + "gate_proj"), absmax.at(p + "up_proj")});
      w2 = std::max(w2, absmax.at(p + "down_proj"));
    }
    fell_back += under.size();
    EXPECT_EQ(qj.at("moe").at("layers").at(block).at("fallback_experts"), json(under));
    EXPECT_EQ(manifest.at("moe").at("layers").at(block).at("fallback_experts"), json(under));
    EXPECT_EQ(qj.at("moe").at("layers").at(block).at("fallback_input_absmax"), json({{"w13", w13}, {"w2", w2}}));
    EXPECT_CONTAINS(q.err, "moe: --moe-fallback layer-max: " + block + ": expert");
    bool listed = false;
    for (const auto& b : ins.at("moe"))
      if (b.at("block") == block) {
        EXPECT_EQ(b.at("fallback_experts"), json(under));
        listed = true;
      }
    EXPECT_TRUE(listed);
    for (size_t e = 0; e < tokens.size(); ++e) {
      const std::string p = block + ".experts." + std::to_string(e) + ".";
      for (const auto& [proj, amax] : {std::pair{"gate_proj", w13}, std::pair{"up_proj", w13}, std::pair{"down_proj", w2}}) {
        const qt::TensorView* t = written.checkpoint().find(p + proj + ".input_scale");
        ASSERT_NE(t, nullptr) << p << proj;
        float v = 0;
        ASSERT_TRUE(qt::decode_to_f32(t->dtype, t->bytes.data(), 1, &v));
        EXPECT_EQ(v, amax / 448.0f) << p << proj;
        EXPECT_TRUE(std::isfinite(v) && v > 0) << p << proj;
      }
    }
  }
  EXPECT_GT(fell_back, 0u);
}

// ---- scales as vLLM uses them ------------------------------------------------------------------

TEST(MoeScales, EveryExpertGetsTheLayerMaximumOfItsW13OrW2InputScale) {
  const qt::ActivationStats s = coverage_stats();
  const auto scale = [&](const std::string& m) {
    return qt::calib::static_input_scale(s, m, qt::QuantType::Float8E4M3, qt::DType::F32, "/m");
  };
  const float w2 = qt::scale_from_amax(4.0f, qt::QuantType::Float8E4M3, qt::DType::F32);
  const float w13 = qt::scale_from_amax(2.0f, qt::QuantType::Float8E4M3, qt::DType::F32);
  for (int e = 0; e < 4; ++e) {
    const std::string p = "model.layers.2.mlp.experts." + std::to_string(e) + ".";
    EXPECT_EQ(scale(p + "down_proj"), w2) << e;  // max over experts 1..4 = 4
    EXPECT_EQ(scale(p + "gate_proj"), w13) << e;
    EXPECT_EQ(scale(p + "up_proj"), w13) << e;
  }
  // Layer 10's experts do not take layer 1's or layer 100's maxima (prefix match is exact).
  qt::ActivationStats t = s;
  t.input_absmax["model.layers.1.mlp.experts.0.down_proj"] = 100.0f;
  EXPECT_EQ(qt::calib::static_input_scale(t, "model.layers.10.mlp.experts.0.down_proj", qt::QuantType::Float8E4M3,
                                          qt::DType::F32, "/m"),
            w2);
}

TEST(MoeScales, AnExpertWithoutItsOwnStatisticIsStillRefused) {
  qt::ActivationStats s = coverage_stats();
  s.input_absmax.erase("model.layers.2.mlp.experts.3.down_proj");
  const std::optional<InputError> e = qt::test::input_error([&] {
    qt::calib::static_input_scale(s, "model.layers.2.mlp.experts.3.down_proj", qt::QuantType::Float8E4M3,
                                  qt::DType::F32, "/m");
  });
  ASSERT_TRUE(e) << "no error";
  EXPECT_EQ(std::string(e->what()),
            "/m: tensor 'model.layers.2.mlp.experts.3.down_proj.input_scale': no calibration statistic (the module saw no "
            "tokens, or stats do not match the model)");
}

// ---- tiny-model --arch: folders qtool's own forward runs, and the plan's MoE rules -----------------

class TinyMoe : public ::testing::TestWithParam<std::string> {};

TEST_P(TinyMoe, WritesAModelWhoseEveryTensorTheForwardPassReads) {
  qt::test::TempDir tmp;
  const auto dir = tmp.path() / "model";
  qt::TinyModelOptions o;
  o.arch = GetParam();
  o.dtype = qt::DType::F32;
  o.num_layers = 3;
  if (o.arch != "mixtral") o.mlp_only_layers = {1};
  qt::write_tiny_model(dir.string(), o);
  const qt::ModelFolder f = qt::ModelFolder::open(dir.string());
  const ModelConfig cfg = ModelConfig::from_json(f.config(), f.config_path());
  EXPECT_TRUE(cfg.is_moe());
  EXPECT_EQ(cfg.moe.num_experts, 8);
  EXPECT_EQ(cfg.moe.top_k, 2);
  EXPECT_EQ(cfg.layer_is_sparse(1), o.arch == "mixtral");
  std::set<std::string> read;
  WeightProvider base = qt::calib::make_view_weight_provider(
      [&f](const std::string& n) { return f.checkpoint().find(n); }, f.dir());
  WeightProvider spy = [&](const std::string& n, std::vector<float>& out, std::vector<int64_t>& shape) {
    read.insert(n);
    base(n, out, shape);
  };
  AbsMaxObserver obs;
  ForwardOptions fo;
  fo.observer = &obs;
  fo.lm_head_tied = false;
  std::vector<float> logits;
  fo.on_logits = [&](size_t, int64_t, const float* l, int64_t t, int64_t v) { logits.insert(logits.end(), l, l + t * v); };
  qt::calib::run_forward(cfg, spy, {{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}}, fo);
  for (const auto& t : f.checkpoint().tensors()) EXPECT_TRUE(read.count(t.name)) << "never read: " << t.name;
  for (float x : logits) ASSERT_TRUE(std::isfinite(x));
  EXPECT_EQ(obs.stats().routed_tokens.size(), o.arch == "mixtral" ? 3u : 2u);
}

TEST_P(TinyMoe, Int8StaticIsRefusedForExpertsBecauseVllmFusedMoeTakesDynamicActivationsOnly) {
  qt::test::TempDir tmp;
  const auto dir = tmp.path() / "model";
  qt::TinyModelOptions o;
  o.arch = GetParam();
  qt::write_tiny_model(dir.string(), o);
  const qt::ModelFolder f = qt::ModelFolder::open(dir.string());
  qt::calib::PlanOptions po;
  po.scheme = qt::find_scheme("int8-static");
  const std::string blk = o.arch == "mixtral" ? "block_sparse_moe" : "mlp";
  // The first expert projection in checkpoint order (the writer orders tensors by name).
  const std::string first = "model.layers.0." + blk + ".experts.0." + (o.arch == "mixtral" ? "w1" : "down_proj");
  const std::optional<InputError> e =
      qt::test::input_error([&] { qt::calib::build_quant_plan(f.checkpoint().tensors(), po, "/m"); });
  ASSERT_TRUE(e) << "no error";
  EXPECT_EQ(e->kind(), InputError::Kind::Unsupported);
  EXPECT_EQ(std::string(e->what()),
            "/m: tensor '" + first + ".weight': int8-static quantizes mixture-of-experts experts with static INT8 input scales, "
            "which vLLM's fused-MoE INT8 kernels refuse (they take dynamic per-token activations only); use "
            "int8-dynamic or fp8-static, or keep the experts unquantized with --ignore 're:.*\\.experts\\..*'");
  // fp8-static: routers (and Qwen2-MoE's shared_expert_gate) kept and listed in ignore.
  po.scheme = qt::find_scheme("fp8-static");
  const auto plan = qt::calib::build_quant_plan(f.checkpoint().tensors(), po, "/m");
  const std::set<std::string> ig(plan.ignore_written.begin(), plan.ignore_written.end());
  EXPECT_TRUE(ig.count("model.layers.0." + blk + ".gate"));
  EXPECT_EQ(ig.count("model.layers.0.mlp.shared_expert_gate"), o.arch == "qwen2_moe" ? 1u : 0u);
  EXPECT_EQ(std::count(plan.quantized_modules.begin(), plan.quantized_modules.end(), first), 1);
}

// Without --smoothquant-moe-norm (tests/test_smoothquant.cpp has it): llm-compressor's MoE
// mappings, the attention side only, plus (mappings all) Qwen2-MoE's local shared-expert pair.
TEST_P(TinyMoe, SmoothQuantSmoothsTheAttentionSideAndTheSharedExpertPairOfMoeLayers) {
  qt::test::TempDir tmp;
  const auto dir = tmp.path() / "model";
  qt::TinyModelOptions o;
  o.arch = GetParam();
  o.num_layers = 2;
  if (o.arch != "mixtral") o.mlp_only_layers = {1};
  qt::write_tiny_model(dir.string(), o);
  const qt::ModelFolder f = qt::ModelFolder::open(dir.string());
  std::vector<std::string> got;
  for (const auto& m : qt::calib::smoothing_mappings(f, qt::calib::SmoothingMappings::All)) got.push_back(m.smooth);
  std::vector<std::string> want = {"model.layers.0.input_layernorm", "model.layers.1.input_layernorm"};
  if (o.arch == "qwen3_moe")  // layer 1 is dense: all three mappings
    want = {"model.layers.0.input_layernorm", "model.layers.1.input_layernorm",
            "model.layers.1.post_attention_layernorm", "model.layers.1.mlp.up_proj"};
  if (o.arch == "qwen2_moe")  // and layer 0's shared expert up -> down
    want = {"model.layers.0.input_layernorm", "model.layers.0.mlp.shared_expert.up_proj", "model.layers.1.input_layernorm",
            "model.layers.1.post_attention_layernorm", "model.layers.1.mlp.up_proj"};
  EXPECT_EQ(got, want);
}

TEST(MoeSmoothQuantCli, MoeNormIsRecordedForAMoeModelAndRefusedForADenseOne) {
  qt::test::TempDir tmp;
  const std::string moe = tmp.str("moe"), dense = tmp.str("dense");
  ASSERT_EQ(qt::test::run_qtool({"tiny-model", "--arch", "mixtral", moe}).exit_code, 0);
  ASSERT_EQ(qt::test::run_qtool({"tiny-model", dense}).exit_code, 0);
  auto q = qt::test::run_qtool({"quantize", moe, "-o", tmp.str("out"), "--scheme", "fp8-dynamic", "--smoothquant",
                                "--smoothquant-moe-norm", "--num-samples", "2", "--seq-len", "32", "--no-hash", "--json"});
  ASSERT_EQ(q.exit_code, 0) << q.err;
  EXPECT_EQ(json::parse(q.out).at("smoothquant").at("moe_norm"), true);
  EXPECT_EQ(qt::read_json_file(tmp.str("out/qtool_manifest.json")).at("smoothquant").at("moe_norm"), true);
  const json f = qt::read_json_file(tmp.str("out/qtool_smoothing.json"));
  EXPECT_EQ(f.at("mappings").at(1).at("smooth"), "model.layers.0.post_attention_layernorm");
  EXPECT_EQ(f.at("mappings").at(1).at("balance").at(0), "model.layers.0.block_sparse_moe.gate");
  EXPECT_CONTAINS(q.err, "smoothquant: MoE layers' post_attention_layernorm smoothed into the router");
  auto d = qt::test::run_qtool({"quantize", dense, "-o", tmp.str("out2"), "--scheme", "int8-dynamic", "--smoothquant",
                                "--smoothquant-moe-norm", "--no-hash"});
  EXPECT_EQ(d.exit_code, 2) << d.err;
  EXPECT_CONTAINS(d.err, dense + "/config.json: --smoothquant-moe-norm applies to mixture-of-experts models; this one has "
                         "no MoE layer");
  // Without the flag a MoE model is smoothed on the attention side, and says why.
  auto w = qt::test::run_qtool({"quantize", moe, "-o", tmp.str("out3"), "--scheme", "fp8-dynamic", "--smoothquant",
                                "--num-samples", "2", "--seq-len", "32", "--no-hash"});
  ASSERT_EQ(w.exit_code, 0) << w.err;
  EXPECT_CONTAINS(w.err, "(llm-compressor omits it for that reason); --smoothquant-moe-norm smooths it into all of them");
}

INSTANTIATE_TEST_SUITE_P(Architectures, TinyMoe, ::testing::Values("mixtral", "qwen3_moe", "qwen2_moe"),
                         [](const auto& info) { return info.param; });

}  // namespace
