// Tests for calib/quant_plan: which tensors a scheme quantizes, the output tensors (names,
// dtypes, shapes, bytes) and the ignore list, decided from names and shapes alone. The tensors are
// headers only (no data is read by the plan). Expected layouts are written out by hand from the
// compressed-tensors conventions the header describes (weight_scale [out,1] per channel,
// [out, in/group] per group, packed int32 words [out, in*bits/32], scalars [] in legacy fp8).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "calib/quant_plan.h"
#include "libquant/error.h"
#include "libquant/schemes.h"
#include "tests/support/test_support.h"

namespace qt::calib {
namespace {

using Kind = InputError::Kind;

// A Llama-shaped layer set: one decoder layer (hidden 256, intermediate 512), embeddings, norms,
// lm_head, a MoE router and a vision-tower Linear. bf16 unless said otherwise.
std::vector<TensorView> llama_like(DType dt = DType::BF16) {
  auto T = [dt](std::string n, std::vector<int64_t> s) { return TensorView{std::move(n), dt, std::move(s), {}, "m.safetensors"}; };
  return {
      T("model.embed_tokens.weight", {1000, 256}),
      T("model.layers.0.input_layernorm.weight", {256}),
      T("model.layers.0.self_attn.q_proj.weight", {256, 256}),
      T("model.layers.0.self_attn.k_proj.weight", {128, 256}),
      T("model.layers.0.self_attn.v_proj.weight", {128, 256}),
      T("model.layers.0.self_attn.o_proj.weight", {256, 256}),
      T("model.layers.0.post_attention_layernorm.weight", {256}),
      T("model.layers.0.mlp.gate_proj.weight", {512, 256}),
      T("model.layers.0.mlp.up_proj.weight", {512, 256}),
      T("model.layers.0.mlp.down_proj.weight", {256, 512}),
      T("model.layers.0.mlp.gate.weight", {8, 256}),  // a router name: never a target
      T("model.vision_tower.layers.0.proj.weight", {256, 256}),
      T("model.norm.weight", {256}),
      T("lm_head.weight", {1000, 256}),
  };
}

PlanOptions opts(const char* scheme) {
  PlanOptions o;
  o.scheme = find_scheme(scheme);
  EXPECT_NE(o.scheme, nullptr) << scheme;
  return o;
}

const OutputTensor* output(const QuantPlan& p, const std::string& name) {
  for (const auto& o : p.outputs)
    if (o.name == name) return &o;
  return nullptr;
}

InputError plan_error(const std::vector<TensorView>& t, const PlanOptions& o) {
  try {
    build_quant_plan(t, o, "m");
  } catch (const InputError& e) {
    return e;
  }
  ADD_FAILURE() << "no InputError";
  return InputError(Kind::Usage, "", "", "(no error was thrown)");
}

TEST(QuantPlan, QuantizesTheDecoderLinearsAndKeepsEverythingElse) {
  const QuantPlan p = build_quant_plan(llama_like(), opts("fp8-dynamic"), "m");
  EXPECT_EQ(p.quantized_modules,
            (std::vector<std::string>{"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj",
                                      "model.layers.0.self_attn.v_proj", "model.layers.0.self_attn.o_proj",
                                      "model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj",
                                      "model.layers.0.mlp.down_proj"}));
  // Sorted: every unquantized 2-D weight module, lm_head always.
  EXPECT_EQ(p.ignore_written, (std::vector<std::string>{"lm_head", "model.embed_tokens", "model.layers.0.mlp.gate",
                                                        "model.vision_tower.layers.0.proj"}));
  ASSERT_EQ(p.decisions.size(), 14u);
  EXPECT_FALSE(p.decisions[1].quantize);  // input_layernorm
  EXPECT_EQ(p.decisions[10].reason, "not a target (kept in high precision)");
}

TEST(QuantPlan, PerChannelFp8WritesCodesAndAChannelScaleInTheModelDtype) {
  const QuantPlan p = build_quant_plan(llama_like(), opts("fp8-dynamic"), "m");
  const OutputTensor* w = output(p, "model.layers.0.mlp.down_proj.weight");
  const OutputTensor* s = output(p, "model.layers.0.mlp.down_proj.weight_scale");
  ASSERT_TRUE(w && s);
  EXPECT_EQ(w->dtype, DType::F8_E4M3);
  EXPECT_EQ(w->shape, (std::vector<int64_t>{256, 512}));
  EXPECT_EQ(w->nbytes, 256u * 512u);
  EXPECT_EQ(w->kind, OutputTensor::Kind::QuantWeight);
  EXPECT_EQ(s->dtype, DType::BF16);
  EXPECT_EQ(s->shape, (std::vector<int64_t>{256, 1}));
  EXPECT_EQ(output(p, "model.layers.0.mlp.down_proj.input_scale"), nullptr);  // dynamic activations
}

TEST(QuantPlan, W4a16PacksEightCodesPerInt32WithGroupScalesAndTheShape) {
  const QuantPlan p = build_quant_plan(llama_like(DType::F16), opts("w4a16"), "m");
  const OutputTensor* w = output(p, "model.layers.0.mlp.down_proj.weight_packed");
  const OutputTensor* s = output(p, "model.layers.0.mlp.down_proj.weight_scale");
  const OutputTensor* sh = output(p, "model.layers.0.mlp.down_proj.weight_shape");
  ASSERT_TRUE(w && s && sh);
  EXPECT_EQ(w->dtype, DType::I32);
  EXPECT_EQ(w->shape, (std::vector<int64_t>{256, 512 / 8}));
  EXPECT_EQ(s->dtype, DType::F16);
  EXPECT_EQ(s->shape, (std::vector<int64_t>{256, 512 / 128}));
  EXPECT_EQ(sh->dtype, DType::I64);
  EXPECT_EQ(sh->shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(output(p, "model.layers.0.mlp.down_proj.weight"), nullptr);
}

TEST(QuantPlan, OutputBytesAreTheSumOfEveryOutputTensor) {
  const auto t = llama_like();
  const QuantPlan p = build_quant_plan(t, opts("int8-dynamic"), "m");
  // Kept (bf16): embed 1000*256, 2 norms + final norm 3*256, router 8*256, vision 256*256,
  // lm_head 1000*256 -> 2 bytes each. Quantized (int8 codes, 1 byte) with bf16 [out,1] scales:
  // q 256x256, k 128x256, v 128x256, o 256x256, gate/up 512x256 each, down 256x512.
  const uint64_t kept = 2ull * (1000 * 256 + 3 * 256 + 8 * 256 + 256 * 256 + 1000 * 256);
  const uint64_t codes = 256 * 256 + 2 * 128 * 256 + 256 * 256 + 2 * 512 * 256 + 256 * 512;
  const uint64_t scales = 2ull * (256 + 128 + 128 + 256 + 512 + 512 + 256);
  EXPECT_EQ(p.output_bytes, kept + codes + scales);
  EXPECT_EQ(p.input_bytes, 0u);  // the sum of the views' byte spans, empty here (headers only)
}

TEST(QuantPlan, LegacyFp8WritesScalarF32ScalesAndKvScalesAfterVProj) {
  PlanOptions o = opts("fp8-static");
  o.format = OutputFormat::LegacyFp8;
  o.kv_cache_fp8 = true;
  const QuantPlan p = build_quant_plan(llama_like(), o, "m");
  const OutputTensor* s = output(p, "model.layers.0.self_attn.q_proj.weight_scale");
  const OutputTensor* in = output(p, "model.layers.0.self_attn.q_proj.input_scale");
  ASSERT_TRUE(s && in);
  EXPECT_EQ(s->dtype, DType::F32);
  EXPECT_TRUE(s->shape.empty());
  EXPECT_TRUE(in->shape.empty());
  EXPECT_EQ(p.attention_modules, (std::vector<std::string>{"model.layers.0.self_attn"}));
  // k_scale / v_scale follow v_proj's tensors, before o_proj.
  size_t v = 0, k = 0, o_idx = 0;
  for (size_t i = 0; i < p.outputs.size(); ++i) {
    if (p.outputs[i].name == "model.layers.0.self_attn.v_proj.input_scale") v = i;
    if (p.outputs[i].name == "model.layers.0.self_attn.k_scale") k = i;
    if (p.outputs[i].name == "model.layers.0.self_attn.o_proj.weight") o_idx = i;
  }
  EXPECT_LT(v, k);
  EXPECT_LT(k, o_idx);
}

TEST(QuantPlan, LegacyFp8RefusesASchemeThatIsNotPerTensorFp8) {
  PlanOptions o = opts("fp8-dynamic");
  o.format = OutputFormat::LegacyFp8;
  const InputError e = plan_error(llama_like(), o);
  EXPECT_EQ(e.kind(), Kind::Usage);
  EXPECT_EQ(e.problem(), "--format legacy-fp8 needs a per-tensor FP8 scheme (fp8-static); 'fp8-dynamic' is not one");
}

TEST(QuantPlan, IgnoringOneMemberOfAFusedGroupIsRefused) {
  PlanOptions o = opts("fp8-dynamic");
  o.ignore = {"model.layers.0.self_attn.k_proj"};
  const InputError e = plan_error(llama_like(), o);
  EXPECT_EQ(e.kind(), Kind::Usage);
  EXPECT_EQ(e.problem(),
            "'model.layers.0.self_attn.k_proj' is left unquantized but 'model.layers.0.self_attn.q_proj' is quantized; "
            "vLLM fuses them and refuses different schemes for the shards of one layer");
}

TEST(QuantPlan, IgnoringTheWholeFusedGroupByPatternWorks) {
  PlanOptions o = opts("int8-dynamic");
  o.ignore = {"re:.*self_attn\\.[qkv]_proj"};
  const QuantPlan p = build_quant_plan(llama_like(), o, "m");
  EXPECT_EQ(p.quantized_modules.size(), 4u);  // o, gate, up, down
  EXPECT_EQ(p.decisions[2].reason, "ignored (--ignore)");
}

TEST(QuantPlan, APatternThatMatchesNothingIsAUsageError) {
  PlanOptions o = opts("fp8-dynamic");
  o.ignore = {"re:.*mlp.dwon_proj"};
  const InputError e = plan_error(llama_like(), o);
  EXPECT_EQ(e.kind(), Kind::Usage);
  EXPECT_EQ(e.problem(), "--ignore 're:.*mlp.dwon_proj' matches no Linear module");
}

// Expected texts: PCRE2 10.42's own messages; the offsets counted by hand (the end of the pattern
// for an unclosed group). Python's re.match gives the same True/False for every pattern below
// (checked with CPython 3.11: re.match("layers", "model.layers.0") is None, and so on).
TEST(QuantPlan, AnInvalidPatternIsReportedAsInvalidWithPcre2sMessage) {
  PlanOptions o = opts("fp8-dynamic");
  o.ignore = {"re:model.(layers"};
  InputError e = plan_error(llama_like(), o);
  EXPECT_EQ(e.kind(), Kind::Usage);
  EXPECT_EQ(e.problem(),
            "--ignore 're:model.(layers' is not a valid regular expression: missing closing parenthesis at offset 13");
  o.ignore.clear();
  o.targets = {"re:[z-a]"};
  e = plan_error(llama_like(), o);
  EXPECT_EQ(e.problem(),
            "--targets 're:[z-a]' is not a valid regular expression: range out of order in character class at offset 3");
}

TEST(QuantPlan, PatternsMatchLikePythonReMatchAnchoredAtTheStartOnly) {
  const PatternSource src{Kind::Usage, "", "--ignore"};
  EXPECT_FALSE(target_matches("re:layers", "model.layers.0.mlp.up_proj", false, src));
  EXPECT_TRUE(target_matches("re:model\\.layers", "model.layers.0.mlp.up_proj", false, src));  // not anchored at the end
  EXPECT_TRUE(target_matches("re:.*up_proj$", "model.layers.0.mlp.up_proj", false, src));
  EXPECT_FALSE(target_matches("re:.*up$", "model.layers.0.mlp.up_proj", false, src));
  EXPECT_TRUE(target_matches("Linear", "model.layers.0.mlp.up_proj", true, src));
  EXPECT_FALSE(target_matches("Linear", "model.layers.0.mlp.up_proj", false, src));
}

TEST(QuantPlan, APatternThatBacktracksForeverIsACleanErrorNamingPatternAndModule) {
  auto t = llama_like();
  const std::string module = "model." + std::string(40, 'a') + "z.b";
  t.push_back(TensorView{module + ".weight", DType::BF16, {256, 256}, {}, "m.safetensors"});
  PlanOptions o = opts("fp8-dynamic");
  o.ignore = {"re:model\\.(a+)+b"};  // exponential backtracking in a backtracking engine
  const InputError e = plan_error(t, o);
  EXPECT_EQ(e.kind(), Kind::Usage);
  EXPECT_EQ(e.problem(), "--ignore 're:model\\.(a+)+b' needs too much backtracking on module name '" + module +
                             "' (match limit exceeded); simplify the pattern");
}

TEST(QuantPlan, AModuleNameLongerThanTheBoundIsRefusedNotMatched) {
  auto t = llama_like();
  const std::string module(100000, 'm');  // std::regex overflowed the stack on this
  t.push_back(TensorView{module + ".weight", DType::BF16, {256, 256}, {}, "m.safetensors"});
  PlanOptions o = opts("fp8-dynamic");
  o.ignore = {"re:.*x"};
  const InputError e = plan_error(t, o);
  EXPECT_EQ(e.kind(), Kind::Usage);
  EXPECT_EQ(e.problem(), "module name '" + std::string(200, 'm') +
                             "...' is 100000 bytes long; qtool matches names of at most 4096 bytes against --ignore 're:.*x'");
}

TEST(QuantPlan, ALinearWeightThatIsNot2dIsRefusedNamingTheTensor) {
  for (const std::vector<int64_t>& shape : {std::vector<int64_t>{256}, std::vector<int64_t>{2, 128, 256}}) {
    auto t = llama_like();
    t[3].shape = shape;  // model.layers.0.self_attn.k_proj.weight
    const InputError e = plan_error(t, opts("fp8-dynamic"));
    EXPECT_EQ(e.kind(), Kind::BadFile);
    EXPECT_EQ(e.file(), "m.safetensors");
    EXPECT_EQ(e.tensor(), "model.layers.0.self_attn.k_proj.weight");
    EXPECT_EQ(e.problem(), "a Linear weight must be 2-D [out_features, in_features], but this one has shape " +
                               shape_string(shape) +
                               "; qtool will not leave it unquantized beside the rest of its layer (vLLM would "
                               "expect it quantized)");
  }
  // Named in --ignore (with its siblings): copied as it is.
  auto t = llama_like();
  t[3].shape = {256};
  PlanOptions o = opts("fp8-dynamic");
  o.ignore = {"re:.*self_attn\\.[qkv]_proj"};
  EXPECT_EQ(build_quant_plan(t, o, "m").decisions[3].reason, "kept");
}

TEST(QuantPlan, TargetsReplaceTheDefaultRule) {
  PlanOptions o = opts("fp8-dynamic");
  o.targets = {"model.layers.0.mlp.down_proj", "lm_head"};
  const QuantPlan p = build_quant_plan(llama_like(), o, "m");
  EXPECT_EQ(p.quantized_modules, (std::vector<std::string>{"model.layers.0.mlp.down_proj", "lm_head"}));
  EXPECT_NE(output(p, "lm_head.weight_scale"), nullptr);
}

TEST(QuantPlan, AShapeTheSchemeCannotTakeNamesTheTensorAndTheWayOut) {
  auto t = llama_like();
  t[9].shape = {256, 320};  // down_proj with in = 320: not a multiple of the group size 128
  const InputError e = plan_error(t, opts("w4a16"));
  EXPECT_EQ(e.kind(), Kind::Unsupported);
  EXPECT_EQ(e.tensor(), "model.layers.0.mlp.down_proj.weight");
  EXPECT_CONTAINS(e.problem(), "scheme w4a16 cannot quantize it: ");
  // 320 = 5 x 64: the smaller group size that fits is offered first.
  EXPECT_CONTAINS(e.problem(), "(--group-size 64 fits it, or add --ignore model.layers.0.mlp.down_proj to keep it in bf16)");
}

TEST(QuantPlan, AWeightThatIsNotFloatingPointIsKeptWithAWarning) {
  auto t = llama_like();
  t[5].dtype = DType::I8;  // o_proj already integer
  const QuantPlan p = build_quant_plan(t, opts("fp8-dynamic"), "m");
  EXPECT_FALSE(p.decisions[5].quantize);
  ASSERT_EQ(p.warnings.size(), 1u);
  EXPECT_EQ(p.warnings[0], "model.layers.0.self_attn.o_proj.weight: stored as I8, not BF16/F16/F32; left unquantized");
}

TEST(QuantPlan, KvCacheWithoutAQuantizedVProjIsRefused) {
  PlanOptions o = opts("fp8-dynamic");
  o.kv_cache_fp8 = true;
  o.targets = {"model.layers.0.mlp.down_proj"};
  const InputError e = plan_error(llama_like(), o);
  EXPECT_EQ(e.kind(), Kind::Unsupported);
  EXPECT_EQ(e.problem(), "--kv-cache fp8: no quantized attention v_proj found to attach k_scale/v_scale to");
}

TEST(QuantPlanNames, RoutersNormsAndEmbeddingsAreNeverDefaultTargets) {
  EXPECT_TRUE(is_linear_weight_name("model.layers.3.mlp.experts.7.w1.weight", {14336, 4096}));
  EXPECT_FALSE(is_linear_weight_name("model.layers.3.input_layernorm.weight", {4096, 1}));
  EXPECT_FALSE(is_linear_weight_name("model.embed_tokens.weight", {32000, 4096}));
  EXPECT_FALSE(is_linear_weight_name("model.layers.3.mlp.up_proj.bias", {4096, 1}));
  EXPECT_FALSE(is_default_target("model.layers.3.block_sparse_moe.gate"));
  EXPECT_FALSE(is_default_target("model.layers.3.mlp.shared_expert_gate"));
  EXPECT_FALSE(is_default_target("lm_head"));
  EXPECT_FALSE(is_default_target("model.visual.blocks.0.attn.qkv"));
  EXPECT_TRUE(is_default_target("model.layers.3.mlp.experts.0.down_proj"));
  EXPECT_EQ(fused_siblings("model.layers.1.mlp.up_proj"),
            (std::vector<std::string>{"model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj"}));
  EXPECT_TRUE(fused_siblings("model.layers.1.self_attn.o_proj").empty());
}

}  // namespace
}  // namespace qt::calib
