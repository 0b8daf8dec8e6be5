// qtool's nvfp4 (W4A4) checkpoints against the real llm-compressor 0.14
// QuantizationModifier(scheme="NVFP4") on the same tiny model and calibration token ids
// (testdata/nvfp4/README.md: how the goldens were made, versions, the bounds and why).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "calib/calibrate.h"
#include "calib/quant_plan.h"
#include "calib/quantize_pipeline.h"
#include "formats/model_folder.h"
#include "formats/safetensors.h"
#include "formats/tiny_model.h"
#include "libquant/schemes.h"
#include "tests/support/test_support.h"

namespace qt::calib {
namespace {

using nlohmann::json;

std::vector<std::vector<int32_t>> calibration_ids() {
  const json j = json::parse(test::read_text(test::source_path("testdata/gptq/calibration_ids.json")));
  return j.get<std::vector<std::vector<int32_t>>>();
}

struct Quantized {
  std::string dir;
  json config;
};

// `qtool tiny-model --dtype D --hidden 256 --intermediate 512`, calibrated on the goldens' ids and
// quantized to nvfp4 through the library (what `qtool quantize --scheme nvfp4` runs).
Quantized quantize_nvfp4(const test::TempDir& d, DType dt) {
  TinyModelOptions o;
  o.dtype = dt;
  o.hidden_size = 256;
  o.intermediate_size = 512;
  write_tiny_model(d.str("m"), o);
  const ModelFolder m = ModelFolder::open(d.str("m"));
  const CalibrationRun run = calibrate(m, calibration_ids(), CalibrateOptions{});
  PlanOptions po;
  po.scheme = find_scheme("nvfp4");
  const QuantPlan plan = build_quant_plan(m.checkpoint().tensors(), po, m.dir());
  QuantizeJob job;
  job.output_dir = d.str("out");
  job.hash_inputs = false;
  job.command_line = "test";
  job.stats = &run.stats;
  run_quantize(m, plan, job);
  return {d.str("out"), json::parse(test::read_text(d.path() / "out/config.json"))};
}

float f32_of(const TensorView& t) {
  float v;
  std::memcpy(&v, t.bytes.data(), 4);
  return v;
}

struct Case {
  DType dtype;
  const char* golden;
  double input_scale_rel;  // bound on |qtool / llm-compressor - 1| for input_global_scale
  double exact_share;      // share of input_global_scales that must be bit-identical
};

class Nvfp4Goldens : public ::testing::TestWithParam<Case> {};

TEST_P(Nvfp4Goldens, WeightsAreByteIdenticalAndInputGlobalScalesAgreeWithLlmCompressor) {
  const Case c = GetParam();
  test::TempDir d;
  const Quantized q = quantize_nvfp4(d, c.dtype);
  const SafetensorsFile gold = SafetensorsFile::open(test::source_path(std::string("testdata/nvfp4/") + c.golden).string());
  const SafetensorsFile ours = SafetensorsFile::open((d.path() / "out/model.safetensors").string());
  size_t compared = 0, input_scales = 0, input_exact = 0;
  double worst = 0;
  for (const TensorView& g : gold.tensors()) {
    const TensorView* t = ours.find(g.name);
    ASSERT_NE(t, nullptr) << g.name << " is in llm-compressor's checkpoint but not in qtool's";
    EXPECT_EQ(t->dtype, g.dtype) << g.name;
    EXPECT_EQ(t->shape, g.shape) << g.name;
    if (g.name.ends_with(".input_global_scale")) {
      const double rel = std::fabs(static_cast<double>(f32_of(*t)) / f32_of(g) - 1.0);
      worst = std::max(worst, rel);
      EXPECT_LE(rel, c.input_scale_rel) << g.name << ": qtool " << f32_of(*t) << ", llm-compressor " << f32_of(g);
      ++input_scales;
      if (std::memcmp(t->bytes.data(), g.bytes.data(), 4) == 0) ++input_exact;
      else std::printf("  %s: qtool %.9g, llm-compressor %.9g\n", g.name.c_str(), f32_of(*t), f32_of(g));
    } else {
      // weight_packed, weight_scale, weight_global_scale: data-free, so byte for byte.
      EXPECT_TRUE(t->bytes.size() == g.bytes.size() && std::memcmp(t->bytes.data(), g.bytes.data(), g.bytes.size()) == 0)
          << g.name << " differs from llm-compressor's";
    }
    ++compared;
  }
  EXPECT_EQ(compared, 56u);  // 14 Linears x 4 tensors
  EXPECT_EQ(input_scales, 14u);
  EXPECT_GE(static_cast<double>(input_exact) / input_scales, c.exact_share);
  std::printf("input_global_scale: %zu of %zu bit-identical, largest relative difference %.3g\n", input_exact,
              input_scales, worst);
  // Every quantization tensor qtool writes for a decoder Linear is one llm-compressor writes too.
  for (const TensorView& t : ours.tensors())
    for (const char* suf : {".weight_packed", ".weight_scale", ".weight_global_scale", ".input_global_scale",
                            ".input_scale", ".weight_shape"}) {
      if (t.name.find(".layers.") != std::string::npos && t.name.ends_with(suf)) {
        EXPECT_NE(gold.find(t.name), nullptr) << t.name << " is written by qtool only";
      }
    }
}

INSTANTIATE_TEST_SUITE_P(LlmCompressor014, Nvfp4Goldens,
                         ::testing::Values(Case{DType::F32, "nvfp4_f32.safetensors", 2e-6, 0.25},
                                           Case{DType::BF16, "nvfp4_bf16.safetensors", 0.02, 0.75}),
                         [](const auto& info) { return std::string(info.param.dtype == DType::F32 ? "f32" : "bf16"); });

TEST(Nvfp4Goldens, ConfigInputActivationsAreTheOnesLlmCompressorWrites) {
  test::TempDir d;
  const Quantized q = quantize_nvfp4(d, DType::BF16);
  const json gold = json::parse(test::read_text(test::source_path("testdata/nvfp4/nvfp4.config.json")));
  const json& ga = gold["config_groups"]["group_0"]["input_activations"];
  const json& qa = q.config["quantization_config"]["config_groups"]["group_0"]["input_activations"];
  for (const char* k : {"num_bits", "type", "strategy", "symmetric", "dynamic", "group_size", "observer", "scale_dtype"})
    EXPECT_EQ(qa[k], ga[k]) << k;
  const json& gw = gold["config_groups"]["group_0"]["weights"];
  const json& qw = q.config["quantization_config"]["config_groups"]["group_0"]["weights"];
  for (const char* k : {"num_bits", "type", "strategy", "symmetric", "dynamic", "group_size", "scale_dtype"})
    EXPECT_EQ(qw[k], gw[k]) << k;
  EXPECT_EQ(q.config["quantization_config"]["format"], gold["format"]);
}

}  // namespace
}  // namespace qt::calib
