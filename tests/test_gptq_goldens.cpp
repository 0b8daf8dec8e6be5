// qtool's GPTQ against the real llm-compressor 0.14 GPTQModifier (sequential pipeline) on the same
// tiny f32 model and the same calibration token ids (testdata/gptq/README.md: how the goldens were
// made, versions, what is compared and why the bounds are what they are).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "calib/calibrate.h"
#include "calib/forward.h"
#include "calib/gptq.h"
#include "calib/model_config.h"
#include "calib/quant_plan.h"
#include "calib/quantize_pipeline.h"
#include "calib/smoothing.h"
#include "formats/model_folder.h"
#include "formats/safetensors.h"
#include "formats/tiny_model.h"
#include "libquant/gptq.h"
#include "libquant/pack.h"
#include "libquant/quantize.h"
#include "libquant/schemes.h"
#include "tests/support/test_support.h"

namespace qt::calib {
namespace {

namespace fs = std::filesystem;

struct GoldenCase {
  std::string file;    // testdata/gptq/<file>.safetensors
  const char* scheme;  // qtool scheme with the same weight args
  ActOrder actorder;
  // Measured bounds (testdata/gptq/README.md): share of identical codes per module of layer 0
  // (same inputs on both sides), per module of layer 1 (inputs from each side's own quantized
  // layer 0), and over the model.
  double layer0_min, layer1_min, overall_min;
};

std::vector<std::vector<int32_t>> calibration_ids() {
  const nlohmann::json j = nlohmann::json::parse(test::read_text(test::source_path("testdata/gptq/calibration_ids.json")));
  return j.get<std::vector<std::vector<int32_t>>>();
}

// The model make_gptq_goldens.py ran on: `qtool tiny-model --dtype f32 --hidden 256 --intermediate 512`.
std::string golden_model(const test::TempDir& d) {
  TinyModelOptions o;
  o.dtype = DType::F32;
  o.hidden_size = 256;
  o.intermediate_size = 512;
  write_tiny_model(d.str("m"), o);
  return d.str("m");
}

// Layer 0's Linear inputs on the original model (the same in both runs: nothing before layer 0
// is quantized), as Hessians, for the output-error comparison.
class Layer0Hessians : public Observer {
 public:
  void on_linear_input(const std::string& m, const float* x, int64_t t, int64_t in) override { add(m, x, t, in); }
  void on_shared_linear_input(const std::string&, const std::vector<std::string>& ms, const float* x, int64_t t,
                              int64_t in) override {
    for (const auto& m : ms) add(m, x, t, in);
  }
  std::map<std::string, Hessian> h;

 private:
  void add(const std::string& m, const float* x, int64_t t, int64_t in) {
    if (m.rfind("model.layers.0.", 0) != 0) return;
    h.try_emplace(m, in).first->second.add_sample(x, t);
  }
};

// tr(dW H dW^T): the mean squared output change (times 2) the Hessian measures.
double hessian_error(const std::vector<float>& w, const std::vector<float>& q, int64_t out, int64_t in,
                     const std::vector<double>& H) {
  double e = 0;
  std::vector<double> d(in);
  for (int64_t r = 0; r < out; ++r) {
    for (int64_t j = 0; j < in; ++j) d[j] = static_cast<double>(w[r * in + j]) - q[r * in + j];
    for (int64_t i = 0; i < in; ++i) {
      double s = 0;
      for (int64_t j = 0; j < in; ++j) s += H[i * in + j] * d[j];
      e += d[i] * s;
    }
  }
  return e;
}

class GptqGoldens : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(GptqGoldens, AgreeWithLlmCompressorInCodesScalesGidxAndOutputError) {
  const GoldenCase c = GetParam();
  test::TempDir d;
  const ModelFolder model = ModelFolder::open(golden_model(d));
  const SafetensorsFile gold = SafetensorsFile::open(test::source_path("testdata/gptq/" + c.file + ".safetensors").string());
  PlanOptions po;
  po.scheme = find_scheme(c.scheme);
  const QuantPlan plan = build_quant_plan(model.checkpoint().tensors(), po, model.dir());
  const QuantArgs args = po.scheme->weights;
  GptqRunOptions go;
  go.gptq.actorder = c.actorder;
  const auto ids = calibration_ids();
  const GptqRun run = run_gptq(model, plan, ids, go);
  ASSERT_EQ(run.weights.size(), 14u);
  EXPECT_TRUE(run.rtn_fallback.empty());

  // Layer-0 Hessians on the unquantized model.
  Layer0Hessians l0;
  {
    const ModelConfig cfg = ModelConfig::from_json(model.config(), model.config_path());
    ForwardOptions fo;
    fo.observer = &l0;
    const Checkpoint& ck = model.checkpoint();
    run_forward(cfg, make_view_weight_provider([&ck](const std::string& n) { return ck.find(n); }, model.dir()), ids, fo);
  }

  size_t codes = 0, same = 0;
  for (const std::string& module : run.weights.modules()) {
    const QuantizedWeight q = run.weights.get(module);
    // g_idx: llm-compressor 0.14 writes none (static/weight ordering keeps the format); neither does qtool.
    EXPECT_EQ(gold.find(module + ".weight_g_idx"), nullptr) << module;
    const TensorView* gs = gold.find(module + ".weight_scale");
    const TensorView* gp = gold.find(module + ".weight_packed");
    ASSERT_NE(gs, nullptr) << module;
    ASSERT_NE(gp, nullptr) << module;
    // Scales: round-to-nearest's on the original weight in both: identical bytes.
    ASSERT_EQ(gs->dtype, DType::F32);
    EXPECT_EQ(gs->shape, q.scale_shape) << module;
    EXPECT_TRUE(std::equal(gs->bytes.begin(), gs->bytes.end(), q.scale_bytes.begin(), q.scale_bytes.end()))
        << module << ".weight_scale";
    const int64_t out = q.shape[0], in = q.shape[1];
    std::vector<int32_t> words(gp->bytes.size() / 4);
    std::memcpy(words.data(), gp->bytes.data(), gp->bytes.size());
    const std::vector<int8_t> theirs = unpack_int_codes(words.data(), out, in, args.num_bits());
    size_t m_same = 0;
    for (size_t i = 0; i < theirs.size(); ++i) m_same += static_cast<int8_t>(q.codes[i]) == theirs[i];
    codes += theirs.size();
    same += m_same;
    // A code differs where a column's value lies within rounding noise of a boundary; each such
    // difference changes the error fed to the rest of its row, and layer 1 sees each side's own
    // quantized layer 0.
    const double share = static_cast<double>(m_same) / theirs.size();
    const bool layer0 = module.rfind("model.layers.0.", 0) == 0;
    EXPECT_GE(share, layer0 ? c.layer0_min : c.layer1_min)
        << module << ": " << theirs.size() - m_same << " of " << theirs.size() << " codes differ";
    std::printf("  %-36s %.4f %% identical\n", module.c_str(), 100.0 * share);
    // Output error on layer 0 (same inputs in both runs): qtool's within 2 % of llm-compressor's,
    // and both well below round-to-nearest's.
    auto it = l0.h.find(module);
    if (it != l0.h.end()) {
      const std::vector<double> H = it->second.normalized();
      const TensorView* tw = model.checkpoint().find(module + ".weight");
      const std::vector<float> w = decode_tensor_f32(*tw);
      const ScaleGrid grid = scale_grid(q.shape, args);
      std::vector<float> ours(w.size()), gold_w(w.size()), rtn_w(w.size());
      dequantize(q.codes.data(), DType::I8, q.shape, q.scale_bytes.data(), DType::F32, grid, ours.data());
      dequantize(reinterpret_cast<const uint8_t*>(theirs.data()), DType::I8, q.shape, gs->bytes.data(), DType::F32, grid,
                 gold_w.data());
      const QuantizedWeight r = quantize_weight(*tw, args);
      dequantize(r.codes.data(), DType::I8, q.shape, r.scale_bytes.data(), DType::F32, grid, rtn_w.data());
      const double eo = hessian_error(w, ours, out, in, H), eg = hessian_error(w, gold_w, out, in, H),
                   er = hessian_error(w, rtn_w, out, in, H);
      EXPECT_LE(eo, 1.02 * eg) << module << ": qtool " << eo << ", llm-compressor " << eg << ", RTN " << er;
      EXPECT_LT(eg, 0.9 * er) << module;
      EXPECT_LT(eo, 0.9 * er) << module;
    }
  }
  EXPECT_GE(static_cast<double>(same) / codes, c.overall_min) << codes - same << " of " << codes << " codes differ";
  std::printf("%s: %zu of %zu codes identical (%.4f %%)\n", c.file.c_str(), same, codes, 100.0 * same / codes);
}

// The golden model with llm-compressor's quantized layer 0 in place of the original (the f32
// values code * scale its sequential pipeline propagated with), so that layer 1 sees the same
// inputs on both sides.
std::string model_with_their_layer0(const test::TempDir& d, const SafetensorsFile& gold, const QuantArgs& args) {
  const std::string dir = golden_model(d);
  const fs::path file = fs::path(dir) / "model.safetensors";
  std::vector<uint8_t> bytes = test::read_file(file);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  const nlohmann::json header = nlohmann::json::parse(std::string(bytes.begin() + 8, bytes.begin() + 8 + header_len));
  const size_t data = 8 + header_len;
  int replaced = 0;
  for (const auto& [name, info] : header.items()) {
    if (name.rfind("model.layers.0.", 0) != 0 || name.find("_proj.weight") == std::string::npos) continue;
    const std::string module = name.substr(0, name.size() - 7);
    const TensorView* gs = gold.find(module + ".weight_scale");
    const TensorView* gp = gold.find(module + ".weight_packed");
    EXPECT_TRUE(gs && gp) << module;
    if (!gs || !gp) continue;
    const std::vector<int64_t> shape = info.at("shape").get<std::vector<int64_t>>();
    std::vector<int32_t> words(gp->bytes.size() / 4);
    std::memcpy(words.data(), gp->bytes.data(), gp->bytes.size());
    const std::vector<int8_t> codes = unpack_int_codes(words.data(), shape[0], shape[1], args.num_bits());
    std::vector<float> w(codes.size());
    dequantize(reinterpret_cast<const uint8_t*>(codes.data()), DType::I8, shape, gs->bytes.data(), DType::F32,
               scale_grid(shape, args), w.data());
    const auto off = info.at("data_offsets").get<std::vector<size_t>>();
    EXPECT_EQ(off[1] - off[0], w.size() * 4) << name;
    std::memcpy(bytes.data() + data + off[0], w.data(), w.size() * 4);
    ++replaced;
  }
  EXPECT_EQ(replaced, 7);
  test::write_file(file, bytes);
  return dir;
}

// Where the static-ordering divergence of layer 1 comes from (testdata/gptq/README.md): give
// qtool's layer 1 the inputs llm-compressor's layer 1 saw (its quantized layer 0, layer 0 itself
// left alone) and layer 1 agrees as closely as layer 0 does.
TEST_P(GptqGoldens, Layer1AgreesLikeLayer0WhenItSeesLlmCompressorsQuantizedLayer0) {
  const GoldenCase c = GetParam();
  test::TempDir d;
  const SafetensorsFile gold = SafetensorsFile::open(test::source_path("testdata/gptq/" + c.file + ".safetensors").string());
  PlanOptions po;
  po.scheme = find_scheme(c.scheme);
  const QuantArgs args = po.scheme->weights;
  const ModelFolder model = ModelFolder::open(model_with_their_layer0(d, gold, args));
  po.ignore = {"re:model\\.layers\\.0\\..*"};
  const QuantPlan plan = build_quant_plan(model.checkpoint().tensors(), po, model.dir());
  GptqRunOptions go;
  go.gptq.actorder = c.actorder;
  const GptqRun run = run_gptq(model, plan, calibration_ids(), go);
  ASSERT_EQ(run.weights.size(), 7u);
  size_t codes = 0, same = 0;
  for (const std::string& module : run.weights.modules()) {
    const QuantizedWeight q = run.weights.get(module);
    const TensorView* gp = gold.find(module + ".weight_packed");
    ASSERT_NE(gp, nullptr) << module;
    std::vector<int32_t> words(gp->bytes.size() / 4);
    std::memcpy(words.data(), gp->bytes.data(), gp->bytes.size());
    const std::vector<int8_t> theirs = unpack_int_codes(words.data(), q.shape[0], q.shape[1], args.num_bits());
    size_t m_same = 0;
    for (size_t i = 0; i < theirs.size(); ++i) m_same += static_cast<int8_t>(q.codes[i]) == theirs[i];
    codes += theirs.size();
    same += m_same;
    // Measured 99.87 % at worst (testdata/gptq/README.md), as close as layer 0.
    EXPECT_GE(static_cast<double>(m_same) / theirs.size(), 0.998) << module << ": " << theirs.size() - m_same << " differ";
    std::printf("  %-36s %.4f %% identical (layer 0 from llm-compressor)\n", module.c_str(), 100.0 * m_same / theirs.size());
  }
  EXPECT_GE(static_cast<double>(same) / codes, 0.9995) << codes - same << " of " << codes << " codes differ";
  std::printf("%s layer 1 on their layer 0: %zu of %zu codes identical (%.4f %%)\n", c.file.c_str(), same, codes,
              100.0 * same / codes);
}

INSTANTIATE_TEST_SUITE_P(LlmCompressor014, GptqGoldens,
                         ::testing::Values(GoldenCase{"w4a16_g128_static", "w4a16", ActOrder::Static, 0.99, 0.75, 0.93},
                                           GoldenCase{"w4a16_g128_none", "w4a16", ActOrder::None, 0.999, 0.999, 0.9995},
                                           GoldenCase{"w8a16_channel_static", "w8a16", ActOrder::Static, 0.99, 0.98, 0.997}),
                         [](const auto& info) { return info.param.file; });

// ---- GPTQ combined with SmoothQuant and with static activation / KV scales ------------------
// testdata/gptq/make_gptq_w8a8_goldens.py: llm-compressor 0.14 runs the recipe in one sequential
// pipeline on the same model and ids; testdata/gptq/README.md says what is compared and why the
// bounds are what they are.

SafetensorsFile w8a8_golden(const char* name) {
  return SafetensorsFile::open(test::source_path(std::string("testdata/gptq/") + name + ".safetensors").string());
}

double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i)
    m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]) / std::max(1e-30, std::fabs(static_cast<double>(b[i]))));
  return m;
}

struct CodeShare {
  size_t same = 0, total = 0;
  double share() const { return total ? static_cast<double>(same) / total : 0.0; }
};

// Share of identical INT8 codes (golden "M.weight" I8 [out, in]) and the largest relative
// difference of the per-channel scales.
CodeShare compare_int8(const QuantizedWeight& q, const SafetensorsFile& gold, const std::string& module, double& scale_rel) {
  const TensorView* gw = gold.find(module + ".weight");
  const TensorView* gs = gold.find(module + ".weight_scale");
  EXPECT_TRUE(gw && gs) << module;
  CodeShare c;
  if (!gw || !gs) return c;
  EXPECT_EQ(gw->dtype, DType::I8);
  EXPECT_EQ(gw->bytes.size(), q.codes.size()) << module;
  for (size_t i = 0; i < gw->bytes.size() && i < q.codes.size(); ++i) c.same += gw->bytes[i] == q.codes[i];
  c.total = gw->bytes.size();
  TensorView ours = *gs;
  ours.bytes = q.scale_bytes;
  scale_rel = max_rel_diff(decode_tensor_f32(ours), decode_tensor_f32(*gs));
  return c;
}

TEST(GptqW8a8Goldens, SmoothQuantThenGptqAgreesWithLlmCompressorsSequentialRecipe) {
  test::TempDir d;
  const ModelFolder model = ModelFolder::open(golden_model(d));
  const Checkpoint& ck = model.checkpoint();
  const SafetensorsFile gold = w8a8_golden("sq_gptq_w8a8");
  PlanOptions po;
  po.scheme = find_scheme("int8-dynamic");
  const QuantPlan plan = build_quant_plan(ck.tensors(), po, model.dir());
  GptqRunOptions go;
  go.observer = "static_minmax";
  go.smoothing = GptqSmoothing{0.8, SmoothingMappings::Norms};  // llm-compressor's default mappings
  const auto ids = calibration_ids();
  const GptqRun run = run_gptq(model, plan, ids, go);
  ASSERT_TRUE(run.smoothing.has_value());
  ASSERT_EQ(run.smoothing->mappings.size(), 4u);
  ASSERT_EQ(run.weights.size(), 14u);

  // Smoothed norms: layer 0's factors come from the same inputs on both sides (only the f32
  // forward differs); layer 1's from each side's own quantized layer 0.
  std::map<std::string, std::vector<float>> ours_norm, gold_norm;
  for (int l = 0; l < 2; ++l)
    for (const char* n : {"input_layernorm", "post_attention_layernorm"}) {
      const std::string name = "model.layers." + std::to_string(l) + "." + n + ".weight";
      TensorView t = *ck.find(name);
      const std::vector<uint8_t> b = run.smoothing->smoothed_bytes(t);
      ASSERT_FALSE(b.empty()) << name;
      t.bytes = b;
      ours_norm[name] = decode_tensor_f32(t);
      gold_norm[name] = decode_tensor_f32(*gold.find(name));
      const double rel = max_rel_diff(ours_norm[name], gold_norm[name]);
      std::printf("  %-44s smoothed norm max rel diff %.3g\n", name.c_str(), rel);
      EXPECT_LE(rel, l == 0 ? 2e-6 : 1e-3) << name;
    }

  Layer0Hessians l0;
  {
    const ModelConfig cfg = ModelConfig::from_json(model.config(), model.config_path());
    ForwardOptions fo;
    fo.observer = &l0;
    run_forward(cfg, make_view_weight_provider([&ck](const std::string& n) { return ck.find(n); }, model.dir()), ids, fo);
  }
  const QuantArgs args = po.scheme->weights;
  CodeShare all;
  for (const std::string& module : run.weights.modules()) {
    const QuantizedWeight q = run.weights.get(module);
    double scale_rel = 0;
    const CodeShare c = compare_int8(q, gold, module, scale_rel);
    all.same += c.same, all.total += c.total;
    const bool layer0 = module.rfind("model.layers.0.", 0) == 0;
    std::printf("  %-36s %.4f %% identical codes, scales max rel diff %.3g\n", module.c_str(), 100.0 * c.share(), scale_rel);
    EXPECT_GE(c.share(), layer0 ? 0.99 : 0.97) << module;
    EXPECT_LE(scale_rel, layer0 ? 2e-6 : 1e-3) << module;
    // Output error of layer 0 as deployed, in the original input coordinates: the Linear reads
    // x * g'/g (the smoothed norm over the original one), so its effective original-space weight
    // is Q[:, j] * g'_j / g_j (Q for o_proj / down_proj, which no mapping smooths).
    auto it = l0.h.find(module);
    if (it == l0.h.end()) continue;
    const std::string p = "model.layers.0.";
    const std::string norm = module.find("self_attn.") != std::string::npos && module.find("o_proj") == std::string::npos
                                 ? p + "input_layernorm.weight"
                             : module.find("gate_proj") != std::string::npos || module.find("up_proj") != std::string::npos
                                 ? p + "post_attention_layernorm.weight"
                                 : "";
    const TensorView* tw = ck.find(module + ".weight");
    const std::vector<float> w = decode_tensor_f32(*tw);
    const int64_t out = q.shape[0], in = q.shape[1];
    const ScaleGrid grid = scale_grid(q.shape, args);
    std::vector<float> ours(w.size()), theirs(w.size()), rtn(w.size());
    dequantize(q.codes.data(), DType::I8, q.shape, q.scale_bytes.data(), DType::F32, grid, ours.data());
    dequantize(gold.find(module + ".weight")->bytes.data(), DType::I8, q.shape, gold.find(module + ".weight_scale")->bytes.data(),
               DType::F32, grid, theirs.data());
    // Round-to-nearest of the same smoothed weight, for scale.
    TensorView sw = *tw;
    const std::vector<uint8_t> sb = run.smoothing->smoothed_bytes(*tw);
    if (!sb.empty()) sw.bytes = sb;
    const QuantizedWeight r = quantize_weight(sw, args);
    dequantize(r.codes.data(), DType::I8, q.shape, r.scale_bytes.data(), DType::F32, grid, rtn.data());
    if (!norm.empty()) {
      const std::vector<float> g = decode_tensor_f32(*ck.find(norm));
      for (int64_t row = 0; row < out; ++row)
        for (int64_t j = 0; j < in; ++j) {
          ours[row * in + j] *= ours_norm[norm][j] / g[j];
          rtn[row * in + j] *= ours_norm[norm][j] / g[j];
          theirs[row * in + j] *= gold_norm[norm][j] / g[j];
        }
    }
    const std::vector<double> H = it->second.normalized();
    const double eo = hessian_error(w, ours, out, in, H), eg = hessian_error(w, theirs, out, in, H),
                 er = hessian_error(w, rtn, out, in, H);
    std::printf("    output error: qtool %.4g, llm-compressor %.4g, round-to-nearest %.4g\n", eo, eg, er);
    EXPECT_LE(eo, 1.02 * eg) << module;
  }
  std::printf("sq_gptq_w8a8: %zu of %zu codes identical (%.4f %%)\n", all.same, all.total, 100.0 * all.share());
  EXPECT_GE(all.share(), 0.99);
}

// qtool's own up_proj -> down_proj mapping (--smoothquant-mappings all; llm-compressor has no such
// mapping to follow): down_proj is solved with the Hessian of its smoothed input, so its GPTQ
// result must beat round-to-nearest of the same smoothed weight on the error the deployed layer
// makes (with the observed Hessian it did not, and SmolLM2's down_proj broke: bench/RESULTS.md).
TEST(GptqW8a8Goldens, DownProjAfterUpProjSmoothingIsSolvedForItsSmoothedInput) {
  test::TempDir d;
  const ModelFolder model = ModelFolder::open(golden_model(d));
  const Checkpoint& ck = model.checkpoint();
  PlanOptions po;
  po.scheme = find_scheme("int8-dynamic");
  const QuantPlan plan = build_quant_plan(ck.tensors(), po, model.dir());
  GptqRunOptions go;
  go.observer = "static_minmax";
  go.smoothing = GptqSmoothing{0.8, SmoothingMappings::All};
  const auto ids = calibration_ids();
  const GptqRun run = run_gptq(model, plan, ids, go);
  ASSERT_TRUE(run.smoothing.has_value());
  Layer0Hessians l0;
  {
    const ModelConfig cfg = ModelConfig::from_json(model.config(), model.config_path());
    ForwardOptions fo;
    fo.observer = &l0;
    run_forward(cfg, make_view_weight_provider([&ck](const std::string& n) { return ck.find(n); }, model.dir()), ids, fo);
  }
  const std::string down = "model.layers.0.mlp.down_proj";
  const std::vector<float>& sv = run.smoothing->factors.at("model.layers.0.mlp.up_proj");
  const QuantizedWeight q = run.weights.get(down);
  const TensorView* tw = ck.find(down + ".weight");
  TensorView sw = *tw;
  const std::vector<uint8_t> sb = run.smoothing->smoothed_bytes(*tw);
  ASSERT_FALSE(sb.empty());
  sw.bytes = sb;
  const std::vector<float> ws = decode_tensor_f32(sw);
  const int64_t out = q.shape[0], in = q.shape[1];
  const QuantArgs args = po.scheme->weights;
  const ScaleGrid grid = scale_grid(q.shape, args);
  std::vector<float> ours(ws.size()), rtn(ws.size());
  dequantize(q.codes.data(), DType::I8, q.shape, q.scale_bytes.data(), DType::F32, grid, ours.data());
  const QuantizedWeight r = quantize_weight(sw, args);
  dequantize(r.codes.data(), DType::I8, q.shape, r.scale_bytes.data(), DType::F32, grid, rtn.data());
  // The deployed input is x / s: its Hessian is diag(1/s) H diag(1/s).
  std::vector<double> H = l0.h.at(down).normalized();
  for (int64_t i = 0; i < in; ++i)
    for (int64_t j = 0; j < in; ++j) H[i * in + j] /= static_cast<double>(sv[i]) * sv[j];
  const double eo = hessian_error(ws, ours, out, in, H), er = hessian_error(ws, rtn, out, in, H);
  std::printf("down_proj after up_proj smoothing: GPTQ %.4g, round-to-nearest %.4g\n", eo, er);
  EXPECT_LT(eo, 0.5 * er);
}

TEST(GptqW8a8Goldens, StaticInputAndKvScalesFromTheGptqPassAgreeWithLlmCompressor) {
  test::TempDir d;
  const ModelFolder model = ModelFolder::open(golden_model(d));
  const SafetensorsFile gold = w8a8_golden("gptq_w8a8_static_kv");
  PlanOptions po;
  po.scheme = find_scheme("int8-static");
  po.kv_cache_fp8 = true;
  const QuantPlan plan = build_quant_plan(model.checkpoint().tensors(), po, model.dir());
  GptqRunOptions go;
  go.observer = "static_minmax";
  const GptqRun run = run_gptq(model, plan, calibration_ids(), go);
  ASSERT_EQ(run.weights.size(), 14u);
  // What a calibration of the unquantized model (--algorithm rtn's) gives, to show where
  // llm-compressor observes: its layer-1 scales match the GPTQ pass's, not these.
  CalibrateOptions co;
  const CalibrationRun unquantized = calibrate(model, calibration_ids(), co);
  double layer1_ours = 0, layer1_unquantized = 0;
  CodeShare all;
  for (const std::string& module : run.weights.modules()) {
    const bool layer0 = module.rfind("model.layers.0.", 0) == 0;
    double scale_rel = 0;
    const CodeShare c = compare_int8(run.weights.get(module), gold, module, scale_rel);
    all.same += c.same, all.total += c.total;
    // Weight scales: round-to-nearest's of the stored weight on both sides.
    EXPECT_EQ(scale_rel, 0.0) << module;
    EXPECT_GE(c.share(), layer0 ? 0.99 : 0.98) << module;
    // The static input scale (f32, amax / 127) of what the GPTQ pass saw. Bounds
    // (testdata/gptq/README.md): layer 0, the f32 forward's summation order (measured <= 4.6e-7);
    // layer 1, each side's own quantized layer 0 (measured <= 7.4e-5).
    const float ours = static_input_scale(run.stats, module, QuantType::Int8, DType::F32, model.dir());
    const TensorView* gs = gold.find(module + ".input_scale");
    ASSERT_NE(gs, nullptr) << module;
    const float theirs = decode_tensor_f32(*gs).at(0);
    const double rel = std::fabs(static_cast<double>(ours) - theirs) / theirs;
    std::printf("  %-36s %.4f %% identical codes; input_scale %.9g vs %.9g (rel %.3g)\n", module.c_str(),
                100.0 * c.share(), ours, theirs, rel);
    EXPECT_LE(rel, layer0 ? 2e-6 : 2e-4) << module;
    if (!layer0) {
      const float other = static_input_scale(unquantized.stats, module, QuantType::Int8, DType::F32, model.dir());
      layer1_ours = std::max(layer1_ours, rel);
      layer1_unquantized = std::max(layer1_unquantized, std::fabs(static_cast<double>(other) - theirs) / theirs);
    }
  }
  std::printf("layer 1 input scales, max relative difference to llm-compressor's: GPTQ pass %.3g, unquantized model %.3g\n",
              layer1_ours, layer1_unquantized);
  EXPECT_GT(layer1_unquantized, 10 * layer1_ours);
  EXPECT_GE(all.share(), 0.99);
  for (int l = 0; l < 2; ++l) {
    const std::string attn = "model.layers." + std::to_string(l) + ".self_attn";
    for (const bool is_k : {true, false}) {
      const auto& m = is_k ? run.stats.k_absmax : run.stats.v_absmax;
      ASSERT_TRUE(m.count(attn)) << attn;
      const float ours = scale_from_amax(m.at(attn), QuantType::Float8E4M3, DType::F32);
      const TensorView* gs = gold.find(attn + (is_k ? ".k_scale" : ".v_scale"));
      ASSERT_NE(gs, nullptr) << attn;
      const float theirs = decode_tensor_f32(*gs).at(0);
      const double rel = std::fabs(static_cast<double>(ours) - theirs) / theirs;
      std::printf("  %s.%s %.9g vs %.9g (rel %.3g)\n", attn.c_str(), is_k ? "k_scale" : "v_scale", ours, theirs, rel);
      EXPECT_LE(rel, l == 0 ? 2e-6 : 2e-4) << attn;
    }
  }
}

}  // namespace
}  // namespace qt::calib
