// Static FP8 input scales of the tiny MoE models against llm-compressor 0.14.0.1 with
// moe_calibrate_all_experts=True (testdata/moe_llmc, made by make_goldens.py there with the real
// package, pipeline "basic"; why not its default "sequential": calib/MODELS.md section 10).
// llm-compressor writes one truthful scale per module, max |input| / 448 over the calibration
// tokens (every token through every expert); qtool's `all` policy statistics give the same.
// Bound: 1e-5 relative, the agreement of qtool's f32 forward with transformers' maxima
// (tests/test_forward_moe.cpp); llm-compressor's basic pipeline equals transformers' maxima / 448
// to 1e-6 (asserted by the generator).
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "calib/forward.h"
#include "calib/model_config.h"
#include "calib/observers.h"
#include "formats/model_folder.h"
#include "formats/model_folder.h"
#include "tests/support/test_support.h"

namespace {

using nlohmann::json;

class LlmCompressorMoeScales : public ::testing::TestWithParam<std::string> {};

TEST_P(LlmCompressorMoeScales, EqualQtoolsAllExpertsStatisticsOverFourFortyEight) {
  const std::string name = GetParam();
  const json g = qt::read_json_file(qt::test::source_path("testdata/moe_llmc/" + name + ".json").string());
  ASSERT_EQ(g.at("versions").at("llmcompressor"), "0.14.0.1");
  ASSERT_TRUE(g.at("moe_calibrate_all_experts").get<bool>());
  const qt::ModelFolder folder = qt::ModelFolder::open(qt::test::source_path("testdata/forward/" + name).string());
  const qt::calib::ModelConfig cfg = qt::calib::ModelConfig::from_json(folder.config(), folder.config_path());
  auto weights = qt::calib::make_view_weight_provider([&](const std::string& n) { return folder.checkpoint().find(n); },
                                                      folder.dir());
  qt::calib::AbsMaxObserver obs;
  qt::calib::ForwardOptions o;
  o.observer = &obs;
  o.moe_all_experts = true;
  o.lm_head_tied = cfg.lm_head_tied(folder.checkpoint().find("lm_head.weight") != nullptr);
  qt::calib::run_forward(cfg, weights, g.at("tokens").get<std::vector<std::vector<int32_t>>>(), o);
  const auto& got = obs.stats().input_absmax;
  const json& want = g.at("input_scale");
  size_t experts = 0;
  for (const auto& [module, scale] : want.items()) {
    auto it = got.find(module);
    ASSERT_NE(it, got.end()) << "qtool has no statistic for " << module;
    const double ours = static_cast<double>(it->second / 448.0f), ref = scale.get<double>();
    EXPECT_LE(std::fabs(ours - ref), 1e-5 * ref) << module << ": qtool " << ours << " vs llm-compressor " << ref;
    experts += module.find(".experts.") != std::string::npos;
  }
  EXPECT_GT(experts, 0u);
  // Nothing qtool quantizes is missing from llm-compressor's list (routers are in neither).
  for (const auto& [module, v] : got)
    if (module.find("shared_expert_gate") == std::string::npos) {
      EXPECT_TRUE(want.contains(module)) << module;
    }
}

INSTANTIATE_TEST_SUITE_P(Models, LlmCompressorMoeScales, ::testing::Values("mixtral", "qwen3_moe", "qwen2_moe"));

}  // namespace
