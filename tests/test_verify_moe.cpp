// verify on mixture-of-experts checkpoints (issue 14): the served view (verify/moe_served.h) --
// vLLM's fused-MoE FP8 method keeps one static input scale per block for w13 and one for w2 (the
// maximum over the experts) and requantizes an expert's per-tensor gate/up weights to the larger
// of their two scales through float16 -- and whole verifications of tiny Qwen3-MoE and Mixtral
// checkpoints in fp8-dynamic and fp8-static.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>

#include "formats/checkpoint.h"
#include "formats/ct_config.h"
#include "formats/model_folder.h"
#include "formats/quantized_linear.h"
#include "formats/safetensors.h"
#include "libquant/float_formats.h"
#include "libquant/tensor_view.h"
#include "tests/support/test_support.h"
#include "verify/moe_served.h"
#include "verify/verify.h"

namespace qt::verify {
namespace {
namespace fs = std::filesystem;

TEST(MoeServed, RequantizesACodeThroughFloat16AsVllmDoesByHand) {
  // 0x38 = 1.0 at scale 0.5 is 0.5; at the common scale 1.0 that is 0.5 = 0x30.
  EXPECT_EQ(requantize_e4m3_code(0x38, 0.5f, 1.0f), 0x30);
  // 0x3B = 1.375 at scale 1 -> 1.375 / 1.25 = 1.1, nearest E4M3 1.125 = 0x39 (1.0 is 0.1 away).
  EXPECT_EQ(requantize_e4m3_code(0x3B, 1.0f, 1.25f), 0x39);
  // The smallest subnormal code 0x01 = 2^-9 at scale 2^-20 is 2^-29, below half of float16's
  // smallest subnormal 2^-24: the f16 dequantization makes it 0, even at its own scale.
  EXPECT_EQ(requantize_e4m3_code(0x01, std::ldexp(1.0f, -20), std::ldexp(1.0f, -20)), 0x00);
  // At scale 2^-10 the same code is 2^-19, a normal f16: kept.
  EXPECT_EQ(requantize_e4m3_code(0x01, std::ldexp(1.0f, -10), std::ldexp(1.0f, -10)), 0x01);
  // -448 at scale 2 over common scale 1 is -896: clamped to -448 = 0xFE.
  EXPECT_EQ(requantize_e4m3_code(0xFE, 2.0f, 1.0f), 0xFE);
}

// Tiny MoE models and their quantized variants, made once per process with the qtool binary.
class MoeModels {
 public:
  static MoeModels& get() {
    static MoeModels m;
    return m;
  }
  std::string model(const std::string& arch) {
    const std::string out = dir_.str(arch);
    if (!fs::exists(out)) {
      auto r = test::run_qtool({"tiny-model", "--arch", arch, out});
      EXPECT_EQ(r.exit_code, 0) << r.err;
    }
    return out;
  }
  std::string quantized(const std::string& arch, const std::string& scheme) {
    const std::string out = dir_.str(arch + "-" + scheme);
    if (!fs::exists(out)) {
      std::vector<std::string> args = {"-q", "quantize", model(arch), "-o", out, "--scheme", scheme, "--no-hash"};
      if (scheme.find("static") != std::string::npos) args.insert(args.end(), {"--num-samples", "8", "--seq-len", "64"});
      auto r = test::run_qtool(args);
      EXPECT_EQ(r.exit_code, 0) << scheme << ": " << r.err;
    }
    return out;
  }
  // A copy of `src` whose F32/BF16 scalar `tensor` is multiplied by `factor`.
  std::string scaled(const std::string& src, const std::string& name, const std::string& tensor, float factor) {
    return test::patched_copy(src, dir_.str(name), tensor, [&](uint8_t* b, uint64_t, DType dt) {
      if (dt == DType::F32) {
        float v;
        std::memcpy(&v, b, 4);
        v *= factor;
        std::memcpy(b, &v, 4);
      } else {
        EXPECT_EQ(dt, DType::BF16) << tensor;
        const uint16_t h = static_cast<uint16_t>(b[0] | (b[1] << 8));
        const uint16_t n = bf16_from_f32(f32_from_bf16(h) * factor);
        b[0] = static_cast<uint8_t>(n & 0xFF), b[1] = static_cast<uint8_t>(n >> 8);
      }
    });
  }

 private:
  test::TempDir dir_;
};

std::vector<QuantizedLinearEntry> entries_of(const ModelFolder& m) {
  return find_quantized_linears(m.checkpoint(), parse_quant_info(m.config(), m.config_path()));
}
const QuantizedLinearEntry& entry(const std::vector<QuantizedLinearEntry>& es, const std::string& module) {
  for (const auto& e : es)
    if (e.module == module) return e;
  ADD_FAILURE() << "no entry " << module;
  static QuantizedLinearEntry none;
  return none;
}
float scalar(const ModelFolder& m, const std::string& tensor) { return decode_tensor_f32(*m.checkpoint().find(tensor))[0]; }

VerifyOptions opts(const std::string& quant, const std::string& ref) {
  VerifyOptions o;
  o.quant_dir = quant;
  o.reference_dir = ref;
  o.bench = false;
  o.gates.min_top1 = 0.0;  // random tiny model: near-uniform next-token distribution
  return o;
}

TEST(MoeServed, RaisesEveryExpertInputScaleOfABlockToItsMaximumPerW13AndW2) {
  auto& M = MoeModels::get();
  // qtool already writes the block maximum everywhere; make expert 3's gate_proj scale larger,
  // as a checkpoint with one truthful scale per expert would have it.
  const std::string hot = "model.layers.0.mlp.experts.3.gate_proj.input_scale";
  const std::string dir = M.scaled(M.quantized("qwen3_moe", "fp8-static"), "q3-hot", hot, 2.0f);
  const ModelFolder m = ModelFolder::open(dir);
  auto es = entries_of(m);
  const MoeServedSummary s = apply_vllm_moe_rules(m.checkpoint(), es);
  EXPECT_EQ(s.blocks, 2);
  EXPECT_EQ(s.input_scales_raised, 15);  // the other 7 gate_proj and 8 up_proj of layer 0
  EXPECT_NEAR(s.max_input_spread, 2.0, 0.02);  // bf16 rounding of the doubled scale
  for (int e = 0; e < 8; ++e) {
    const std::string x = "model.layers.0.mlp.experts." + std::to_string(e) + ".";
    EXPECT_EQ(entry(es, x + "gate_proj").input_scale_tensor, hot);
    EXPECT_EQ(entry(es, x + "up_proj").input_scale_tensor, hot);
    // w2 is its own group: unchanged values (all equal: the first expert's tensor).
    EXPECT_EQ(scalar(m, entry(es, x + "down_proj").input_scale_tensor),
              scalar(m, "model.layers.0.mlp.experts.0.down_proj.input_scale"));
  }
  EXPECT_EQ(entry(es, "model.layers.0.self_attn.q_proj").input_scale_tensor, "model.layers.0.self_attn.q_proj.input_scale");
  EXPECT_CONTAINS(s.describe(), "2 MoE block(s)");
  EXPECT_CONTAINS(s.describe(), "15 expert input scale(s) raised");
}

TEST(MoeServed, RequantizesAnExpertsGateAndUpToTheLargerWeightScaleAndLeavesDownAlone) {
  auto& M = MoeModels::get();
  const ModelFolder m = ModelFolder::open(M.quantized("qwen3_moe", "fp8-static"));  // per-tensor weights
  auto es = entries_of(m);
  const MoeServedSummary s = apply_vllm_moe_rules(m.checkpoint(), es);
  EXPECT_EQ(s.weights_requantized, 2 * 8 * 2);  // gate and up of 8 experts in 2 layers
  const std::string x = "model.layers.1.mlp.experts.5.";
  const float sg = scalar(m, x + "gate_proj.weight_scale"), su = scalar(m, x + "up_proj.weight_scale");
  ASSERT_NE(sg, su);  // independent per-tensor scales as compressed-tensors writes them
  const std::string larger = sg > su ? "gate_proj" : "up_proj", smaller = sg > su ? "up_proj" : "gate_proj";
  EXPECT_EQ(entry(es, x + "gate_proj").served_scale_tensor, x + larger + ".weight_scale");
  EXPECT_EQ(entry(es, x + "up_proj").served_scale_tensor, x + larger + ".weight_scale");
  EXPECT_EQ(entry(es, x + "down_proj").served_scale_tensor, "");
  EXPECT_EQ(entry(es, "model.layers.1.self_attn.q_proj").served_scale_tensor, "");  // not an expert
  const QuantizedLinearEntry& e = entry(es, x + smaller);
  const LoadedLinear stored = load_quantized_linear(m.checkpoint(), e), served = load_served_linear(m.checkpoint(), e);
  const float own = std::min(sg, su), common = std::max(sg, su);
  EXPECT_EQ(served.ref.scales, m.checkpoint().find(x + larger + ".weight_scale")->bytes.data());
  const size_t n = static_cast<size_t>(e.desc.N * e.desc.K);
  size_t changed = 0;
  for (size_t j = 0; j < n; ++j) {
    ASSERT_EQ(served.ref.codes[j], requantize_e4m3_code(stored.ref.codes[j], own, common)) << j;
    changed += served.ref.codes[j] != stored.ref.codes[j];
  }
  EXPECT_GT(changed, n / 2);  // a smaller scale means larger codes: most of them move
}

TEST(VerifyMoe, PassesTinyQwen3MoeAndMixtralInFp8DynamicAndStatic) {
  auto& M = MoeModels::get();
  for (const std::string arch : {"qwen3_moe", "mixtral"})
    for (const std::string scheme : {"fp8-dynamic", "fp8-static"}) {
      SCOPED_TRACE(arch + " " + scheme);
      const VerifyReport r = verify_checkpoint(opts(M.quantized(arch, scheme), M.model(arch)));
      EXPECT_TRUE(r.pass) << (r.failures.empty() ? "" : r.failures[0]);
      EXPECT_EQ(r.layers.size(), 2u * (4u + 8u * 3u));
      for (const auto& L : r.layers) {
        EXPECT_EQ(L.activations, "text") << L.module;  // every expert saw held-out tokens
        ASSERT_TRUE(L.weight.has_value()) << L.module;
        EXPECT_GT(L.weight->sqnr_db, 25.0) << L.module;
        EXPECT_LT(L.gemm_err, 0.1) << L.module;
      }
      EXPECT_TRUE(r.model.ran);
      EXPECT_LT(r.model.metrics.kl_mean, 0.01);
      EXPECT_GT(r.model.metrics.kl_mean, 0.0);
      EXPECT_CONTAINS(r.moe_served, "2 MoE block(s)");
      // fp8-static: per-tensor weights, so 32 gate/up (w1/w3) requantized; qtool wrote the block
      // maxima, so no input scale is raised. fp8-dynamic: per-channel weights, nothing changes.
      EXPECT_CONTAINS(r.moe_served, scheme == "fp8-static" ? "0 expert input scale(s) raised to their block's maximum (largest spread 1)"
                                                           : "0 expert input scale(s) raised");
      EXPECT_CONTAINS(r.moe_served, scheme == "fp8-static" ? "32 expert gate/up" : "0 expert gate/up");
    }
}

TEST(VerifyMoe, MeasuresTheRaisedInputScaleThatVllmWouldServe) {
  // Expert 3's w13 input scale x65536 in a copy: vLLM serves every expert's gate/up of layer 0
  // with it. FP8 E4M3 keeps its relative precision while the scale grows (values move down an
  // exponent range of 2^-9 .. 448) until they reach the subnormals: x / s <= 448 / 65536 < 2^-7
  // leaves every input on the 2^-9 subnormal grid (at most code 3) or at 0, so the GEMM errors of
  // the other experts' gate/up grow (a x1024 scale barely changes them: measured 0.044 both).
  auto& M = MoeModels::get();
  const std::string src = M.quantized("qwen3_moe", "fp8-static");
  const std::string hot = M.scaled(src, "q3-hot65536", "model.layers.0.mlp.experts.3.gate_proj.input_scale", 65536.0f);
  const VerifyReport a = verify_checkpoint(opts(src, M.model("qwen3_moe")));
  const VerifyReport b = verify_checkpoint(opts(hot, M.model("qwen3_moe")));
  auto err = [](const VerifyReport& r, const std::string& mod) {
    for (const auto& L : r.layers)
      if (L.module == mod) return L.gemm_err;
    return -1.0;
  };
  for (const std::string mod : {"model.layers.0.mlp.experts.0.up_proj", "model.layers.0.mlp.experts.6.gate_proj"})
    EXPECT_GT(err(b, mod), 3.0 * err(a, mod)) << mod;
  // down_proj's group is not affected.
  EXPECT_EQ(err(b, "model.layers.0.mlp.experts.0.down_proj"), err(a, "model.layers.0.mlp.experts.0.down_proj"));
  EXPECT_CONTAINS(b.moe_served, "15 expert input scale(s) raised");
}

TEST(VerifyMoe, UndoesTheMoeNormSmoothingAgainstTheReferenceAndPasses) {
  // Qwen2-MoE (shared expert): --smoothquant-moe-norm smooths post_attention_layernorm into the
  // router, the 8 experts' gate/up and the shared expert's gate/up and gate; all (the default set)
  // adds the shared expert's up -> down. verify reads the norm ratio off the reference for every
  // expert (calib::smoothing_mappings with the MoE norm) and the up -> down factors off
  // qtool_smoothing.json, so the comparison is against the same function.
  auto& M = MoeModels::get();
  test::TempDir tmp;
  const std::string out = tmp.str("sq");
  auto q = test::run_qtool({"-q", "quantize", M.model("qwen2_moe"), "-o", out, "--scheme", "fp8-static", "--no-hash",
                            "--num-samples", "8", "--seq-len", "64", "--smoothquant", "--smoothquant-moe-norm"});
  ASSERT_EQ(q.exit_code, 0) << q.err;
  const VerifyReport r = verify_checkpoint(opts(out, M.model("qwen2_moe")));
  EXPECT_TRUE(r.pass) << (r.failures.empty() ? "" : r.failures[0]);
  for (const std::string l : {"model.layers.0.post_attention_layernorm", "model.layers.1.post_attention_layernorm",
                              "model.layers.0.mlp.shared_expert.up_proj (qtool_smoothing.json)"})
    EXPECT_NE(std::find(r.smoothed_layers.begin(), r.smoothed_layers.end(), l), r.smoothed_layers.end()) << l;
  EXPECT_TRUE(r.model.ran);
  EXPECT_LT(r.model.metrics.kl_mean, 0.01);
  for (const auto& L : r.layers) {
    ASSERT_TRUE(L.weight.has_value()) << L.module;
    EXPECT_GT(L.weight->sqnr_db, 25.0) << L.module;  // smoothing undone: the weights compare as the same function
  }
}

}  // namespace
}  // namespace qt::verify
