// verify/inspect: what `qtool inspect` reports about FP4 / MX checkpoints (coverage of packed FP4
// weights and the NVFP4 fused-set global scale finding). Checkpoints are written here with the
// safetensors writer; the config is compressed-tensors' NVFP4A16 group as qtool writes it.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "formats/ct_config.h"
#include "formats/safetensors_writer.h"
#include "libquant/schemes.h"
#include "tests/support/test_support.h"
#include "verify/inspect.h"

namespace qt::verify {
namespace {

// An NVFP4A16 attention block: q/k/v [32, 64] with the given global scales.
void write_nvfp4_attention(const test::TempDir& d, float gq, float gk, float gv) {
  std::vector<TensorSpec> specs;
  const char* mods[3] = {"q_proj", "k_proj", "v_proj"};
  for (const char* m : mods) {
    const std::string p = std::string("model.layers.0.self_attn.") + m;
    specs.push_back({p + ".weight_packed", DType::U8, {32, 32}});
    specs.push_back({p + ".weight_scale", DType::F8_E4M3, {32, 4}});
    specs.push_back({p + ".weight_global_scale", DType::F32, {1}});
  }
  SafetensorsWriter w(d.str("model.safetensors"), specs);
  const float gs[3] = {gq, gk, gv};
  for (int i = 0; i < 3; ++i) {
    const std::string p = std::string("model.layers.0.self_attn.") + mods[i];
    std::vector<uint8_t> packed(32 * 32, 0x21), scale(32 * 4, 0x38), g(4);
    std::memcpy(g.data(), &gs[i], 4);
    w.write(p + ".weight_packed", packed);
    w.write(p + ".weight_scale", scale);
    w.write(p + ".weight_global_scale", g);
  }
  w.commit();
  nlohmann::json cfg;
  cfg["architectures"] = {"LlamaForCausalLM"};
  cfg["quantization_config"] = make_ct_quant_config(*find_scheme("nvfp4a16"), CtWriteOptions{{"lm_head"}, false, "static_minmax"});
  test::write_text(d.path() / "config.json", cfg.dump());
}

InspectReport inspect_dir(const test::TempDir& d) {
  Checkpoint ck = Checkpoint::open(d.str());
  return inspect_checkpoint(ck, nlohmann::json::parse(test::read_text(d.path() / "config.json")), d.str());
}

TEST(InspectFp4, PackedFp4WeightsAreCoveredWithTheirLogicalShapeAndNoFindings) {
  test::TempDir d;
  write_nvfp4_attention(d, 1000.0f, 1000.0f, 1000.0f);
  const InspectReport r = inspect_dir(d);
  ASSERT_EQ(r.modules.size(), 3u);
  for (const auto& m : r.modules) {
    EXPECT_TRUE(m.quantized) << m.module;
    EXPECT_EQ(m.weight_dtype, "U8 (FP4 packed)");
    EXPECT_EQ(m.shape, (std::vector<int64_t>{32, 64})) << m.module;
    EXPECT_EQ(m.group, "group_0");
  }
  EXPECT_EQ(r.parameters, 3u * 32 * 64);
  EXPECT_TRUE(r.findings.empty()) << r.findings[0].where << ": " << r.findings[0].message;
}

TEST(InspectFp4, DifferentGlobalScalesInOneFusedSetAreAnError) {
  test::TempDir d;
  write_nvfp4_attention(d, 1000.0f, 500.0f, 1000.0f);
  const InspectReport r = inspect_dir(d);
  ASSERT_EQ(r.findings.size(), 1u);
  EXPECT_EQ(r.findings[0].severity, "error");
  EXPECT_EQ(r.findings[0].where, "model.layers.0.self_attn.q_proj.weight_global_scale");
  EXPECT_EQ(r.findings[0].message,
            "weight_global_scale differs across the fused set (q_proj 1000, k_proj 500, v_proj 1000): vLLM "
            "keeps one global scale per fused layer, so the others dequantize wrongly (quantize the set "
            "with one shared global scale)");
}

// An NVFP4 (W4A4) MLP block: gate/up [32, 64] with the given weight and input global scales.
void write_nvfp4_mlp(const test::TempDir& d, float wg, float wu, float ig, float iu) {
  std::vector<TensorSpec> specs;
  const char* mods[2] = {"gate_proj", "up_proj"};
  for (const char* m : mods) {
    const std::string p = std::string("model.layers.0.mlp.") + m;
    specs.push_back({p + ".weight_packed", DType::U8, {32, 32}});
    specs.push_back({p + ".weight_scale", DType::F8_E4M3, {32, 4}});
    specs.push_back({p + ".weight_global_scale", DType::F32, {1}});
    specs.push_back({p + ".input_global_scale", DType::F32, {1}});
  }
  SafetensorsWriter w(d.str("model.safetensors"), specs);
  const float wgs[2] = {wg, wu}, igs[2] = {ig, iu};
  for (int i = 0; i < 2; ++i) {
    const std::string p = std::string("model.layers.0.mlp.") + mods[i];
    std::vector<uint8_t> packed(32 * 32, 0x21), scale(32 * 4, 0x38), g(4), in(4);
    std::memcpy(g.data(), &wgs[i], 4);
    std::memcpy(in.data(), &igs[i], 4);
    w.write(p + ".weight_packed", packed);
    w.write(p + ".weight_scale", scale);
    w.write(p + ".weight_global_scale", g);
    w.write(p + ".input_global_scale", in);
  }
  w.commit();
  nlohmann::json cfg;
  cfg["architectures"] = {"LlamaForCausalLM"};
  cfg["quantization_config"] = make_ct_quant_config(*find_scheme("nvfp4"), CtWriteOptions{{"lm_head"}, false, "static_minmax"});
  test::write_text(d.path() / "config.json", cfg.dump());
}

TEST(InspectFp4, DifferentWeightOrInputGlobalScalesInGateUpAreErrors) {
  {
    test::TempDir d;
    write_nvfp4_mlp(d, 448.0f, 448.0f, 96.0f, 96.0f);
    const InspectReport r = inspect_dir(d);
    EXPECT_TRUE(r.findings.empty()) << r.findings[0].where << ": " << r.findings[0].message;
  }
  test::TempDir d;
  write_nvfp4_mlp(d, 448.0f, 224.5f, 96.0f, 120.25f);
  const InspectReport r = inspect_dir(d);
  ASSERT_EQ(r.findings.size(), 2u);
  EXPECT_EQ(r.findings[0].where, "model.layers.0.mlp.gate_proj.weight_global_scale");
  EXPECT_EQ(r.findings[0].message,
            "weight_global_scale differs across the fused set (gate_proj 448, up_proj 224.5): vLLM keeps one "
            "global scale per fused layer, so the others dequantize wrongly (quantize the set with one shared "
            "global scale)");
  EXPECT_EQ(r.findings[1].where, "model.layers.0.mlp.gate_proj.input_global_scale");
  EXPECT_EQ(r.findings[1].message,
            "input_global_scale differs across the fused set (gate_proj 96, up_proj 120.25): vLLM quantizes the "
            "shared input once with the largest, which clips the activations the smaller ones were calibrated for");
}

// `qtool inspect` on compressed-tensors' own FP4 / MX output (testdata/fp4, make_goldens.py):
// row 0 of t.weight is 6, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5 (bf16 model). By hand:
// - nvfp4a16: t's amax 448 (row 5) -> gs = bf16(bf16(1/448) * 2688) = bf16(0.0022277832 * 2688 =
//   5.98828125) = 6; group amax 6 -> scale e4m3(6 * bf16(6/6)) = 6, effective 6/6 = 1: E2M1 codes
//   6 0 1 1 2 2 4 4 (ties to even), dequantized the same;
// - mxfp4a16: amax 6 = 1.5 * 4 rounds down to 4 -> E = 127 + 2 - 2 = 127, scale 1: the same codes;
// - mxfp8: E = 127 + 2 - 8 = 121, scale 2^-6: codes 384 16 48 80 112 160 224 320 (all E4M3
//   values), dequantized exactly to the inputs.
class InspectFp4Golden : public ::testing::TestWithParam<std::string> {};

TEST_P(InspectFp4Golden, TensorDecodesTheCodesAndScalesByHand) {
  const std::string scheme = GetParam();
  test::TempDir d;
  test::write_file(d.path() / "model.safetensors",
                   test::read_file(test::source_path("testdata/fp4/bf16/" + scheme + ".safetensors")));
  nlohmann::json cfg;
  cfg["architectures"] = {"LlamaForCausalLM"};
  cfg["quantization_config"] = nlohmann::json::parse(test::read_text(test::source_path("testdata/fp4/" + scheme + ".config.json")));
  test::write_text(d.path() / "config.json", cfg.dump());
  const bool fp8 = scheme == "mxfp8";
  auto r = test::run_qtool({"inspect", d.str(), "--tensor", fp8 ? "t.weight" : "t.weight_packed", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  const std::vector<float> inputs = {6, 0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5};
  const std::vector<float> codes = fp8 ? std::vector<float>{384, 16, 48, 80, 112, 160, 224, 320}
                                       : std::vector<float>{6, 0, 1, 1, 2, 2, 4, 4};
  EXPECT_EQ(j.at("codes_first").get<std::vector<float>>(), codes);
  EXPECT_EQ(j.at("dequantized_first").get<std::vector<float>>(), fp8 ? inputs : codes);
  EXPECT_EQ(j.at("logical_shape").get<std::vector<int64_t>>(), (std::vector<int64_t>{16, 64}));

  // --scales: E8M0 bytes are shown as the powers of two they stand for; global scales as F32.
  // z.weight is all zeros: NVFP4 gives gs 1 and eps group scales 0.125 (0x20); MX (bf16) stores
  // E 0, i.e. 2^-127, for every group.
  r = test::run_qtool({"inspect", d.str(), "--scales", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json k = nlohmann::json::parse(r.out);
  std::map<std::string, nlohmann::json> by;
  for (const auto& e : k.at("scales")) by[e.at("name").get<std::string>()] = e;
  ASSERT_TRUE(by.count("z.weight_scale")) << k.at("scales").dump();
  const nlohmann::json& z = by["z.weight_scale"];
  if (scheme == "nvfp4a16") {
    EXPECT_EQ(z.at("dtype"), "F8_E4M3");
    EXPECT_EQ(z.at("values").get<std::vector<float>>(), std::vector<float>(8, 0.125f));
    EXPECT_EQ(by.at("z.weight_global_scale").at("values").get<std::vector<float>>(), std::vector<float>{1.0f});
    EXPECT_EQ(by.at("t.weight_global_scale").at("values").get<std::vector<float>>(), std::vector<float>{6.0f});
    EXPECT_FALSE(z.contains("encoding"));
  } else {
    EXPECT_EQ(z.at("dtype"), "U8");
    EXPECT_EQ(z.at("encoding"), "E8M0 (2^(byte-127))");
    EXPECT_EQ(z.at("values").get<std::vector<float>>(), std::vector<float>(4, 0x1p-127f));
    EXPECT_EQ(by.count("z.weight_global_scale"), 0u);
  }
  for (const auto& f : k.at("findings")) EXPECT_NE(f.at("severity"), "error") << f.dump();
}

INSTANTIATE_TEST_SUITE_P(Schemes, InspectFp4Golden, ::testing::Values("nvfp4a16", "mxfp4a16", "mxfp8"));

}  // namespace
}  // namespace qt::verify
