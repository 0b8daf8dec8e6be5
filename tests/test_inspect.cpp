// verify/inspect: what `qtool inspect` reports about FP4 / MX checkpoints (coverage of packed FP4
// weights and the NVFP4 fused-set global scale finding). Checkpoints are written here with the
// safetensors writer; the config is compressed-tensors' NVFP4A16 group as qtool writes it.
#include <gtest/gtest.h>

#include <cstring>
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

}  // namespace
}  // namespace qt::verify
