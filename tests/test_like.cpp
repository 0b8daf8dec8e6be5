// `qtool quantize NEW --like QUANT` (calib/like.h): the recipe of a qtool-made checkpoint applied
// to the same model gives the same bytes; applied to changed weights it keeps QUANT's static
// scales and reports the drift; a model that does not fit is refused naming the tensor.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "formats/checkpoint.h"
#include "formats/model_folder.h"
#include "formats/safetensors_writer.h"
#include "formats/tiny_model.h"
#include "libquant/float_formats.h"
#include "tests/support/test_support.h"

namespace qt {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;
using test::run_qtool;

std::string tiny(const test::TempDir& d, const std::string& name = "m", uint64_t seed = 5) {
  TinyModelOptions o;
  o.seed = seed;
  write_tiny_model(d.str(name), o);
  return d.str(name);
}

// A copy of model folder `in` at `out` whose decoder Linear weights (BF16) are multiplied by
// `factor` (a power of two: exact in BF16); every other tensor and file is unchanged.
void scaled_copy(const std::string& in, const std::string& out, float factor) {
  fs::create_directories(out);
  for (const auto& e : fs::directory_iterator(in))
    if (e.path().extension() != ".safetensors") fs::copy_file(e.path(), fs::path(out) / e.path().filename());
  const ModelFolder m = ModelFolder::open(in);
  std::vector<TensorSpec> specs;
  for (const auto& t : m.checkpoint().tensors()) specs.push_back({t.name, t.dtype, t.shape});
  SafetensorsWriter w(out + "/model.safetensors", specs);
  for (const auto& t : m.checkpoint().tensors()) {
    std::vector<uint8_t> b(t.bytes.begin(), t.bytes.end());
    if (t.name.find(".layers.") != std::string::npos && t.name.find("_proj.weight") != std::string::npos) {
      EXPECT_EQ(t.dtype, DType::BF16);
      for (size_t i = 0; i < b.size(); i += 2) {
        const float v = f32_from_bf16(static_cast<uint16_t>(b[i] | (b[i + 1] << 8))) * factor;
        store_float(DType::BF16, v, b.data() + i);
      }
    }
    w.write(t.name, b);
  }
  w.commit();
}

// Every file of `a` equals the same file of `b` (qtool_manifest.json aside: it records the
// command line); both folders hold the same file names.
void expect_same_files(const std::string& a, const std::string& b) {
  std::vector<std::string> na, nb;
  for (const auto& e : fs::directory_iterator(a)) na.push_back(e.path().filename().string());
  for (const auto& e : fs::directory_iterator(b)) nb.push_back(e.path().filename().string());
  std::sort(na.begin(), na.end());
  std::sort(nb.begin(), nb.end());
  EXPECT_EQ(na, nb);
  for (const auto& n : na) {
    if (n == "qtool_manifest.json") continue;
    EXPECT_TRUE(test::read_file(fs::path(a) / n) == test::read_file(fs::path(b) / n)) << n << " differs";
  }
}

std::vector<uint8_t> tensor_bytes(const std::string& dir, const std::string& name) {
  const ModelFolder m = ModelFolder::open(dir);
  const TensorView* t = m.checkpoint().find(name);
  if (!t) return {};
  return {t->bytes.begin(), t->bytes.end()};
}

TEST(QuantizeLike, SameModelGivesByteIdenticalFilesForStaticFp8WithKvCacheAndSmoothQuant) {
  test::TempDir d;
  const std::string a = tiny(d);
  auto q = run_qtool({"quantize", a, "-o", d.str("q"), "--scheme", "fp8-static", "--kv-cache", "fp8", "--smoothquant",
                      "--num-samples", "4", "--seq-len", "32"});
  ASSERT_EQ(q.exit_code, 0) << q.err;
  auto r = run_qtool({"quantize", a, "-o", d.str("o"), "--like", d.str("q"), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_same_files(d.str("q"), d.str("o"));
  EXPECT_CONTAINS(r.err, "scheme fp8-static, kv-cache fp8, SmoothQuant factors, 14 quantized modules");
  EXPECT_EQ(r.err.find("calibration"), std::string::npos) << "--like never calibrates: " << r.err;
  const json j = json::parse(r.out);
  ASSERT_EQ(j["drift"].size(), 14u);
  for (const auto& l : j["drift"]) {
    // The same weights: only QUANT's own rounding error (FP8 E4M3: at most 2^-4 relative per element).
    EXPECT_LT(l["rel_l2"].get<double>(), 0.05) << l.dump();
    EXPECT_EQ(l["clipped"], 0) << l.dump();
  }
  const json man = json::parse(test::read_text(d.path() / "o/qtool_manifest.json"));
  EXPECT_EQ(man["like"]["scheme"], "fp8-static");
  EXPECT_EQ(man["like"]["static_scales"], 14 + 4);  // 14 input scales, k/v of 2 layers
  EXPECT_EQ(man["like"]["smoothing_factors"], "qtool_smoothing.json");
}

TEST(QuantizeLike, SameModelGivesByteIdenticalFilesForEveryOtherRecipe) {
  test::TempDir d;
  const std::string a = tiny(d);
  const std::vector<std::vector<std::string>> recipes = {
      {"--scheme", "int8-static", "--smoothquant", "--smoothquant-mappings", "norms"},
      {"--scheme", "fp8-static", "--format", "legacy-fp8", "--kv-cache", "fp8"},
      {"--scheme", "w4a16", "--ignore", "re:.*down_proj"},
      {"--scheme", "w4a16", "--group-size", "64"},  // QUANT's group size, not the scheme's 128
      {"--scheme", "w4a16", "--group-size", "32"},
      {"--scheme", "fp8-block"},
      {"--scheme", "w8a16", "--kv-cache", "fp8"},
      {"--scheme", "nvfp4"},  // input_global_scale taken byte for byte
      {"--scheme", "nvfp4a16"},  // weight_global_scale recomputed from the weights
      {"--scheme", "mxfp4a16"},
      {"--scheme", "mxfp8"},
  };
  int k = 0;
  for (const auto& rc : recipes) {
    const std::string qd = d.str("q" + std::to_string(k)), od = d.str("o" + std::to_string(k));
    ++k;
    std::vector<std::string> args = {"quantize", a, "-o", qd, "--num-samples", "4", "--seq-len", "32"};
    args.insert(args.end(), rc.begin(), rc.end());
    auto q = run_qtool(args);
    ASSERT_EQ(q.exit_code, 0) << q.err;
    auto r = run_qtool({"quantize", a, "-o", od, "--like", qd});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    SCOPED_TRACE(rc[1]);
    expect_same_files(qd, od);
  }
}

TEST(QuantizeLike, ChangedWeightsKeepQuantsStaticScalesAndReportTheDrift) {
  test::TempDir d;
  const std::string a = tiny(d);
  auto q = run_qtool({"quantize", a, "-o", d.str("q"), "--scheme", "fp8-static", "--kv-cache", "fp8", "--smoothquant",
                      "--num-samples", "4", "--seq-len", "32"});
  ASSERT_EQ(q.exit_code, 0) << q.err;
  scaled_copy(a, d.str("a2"), 2.0f);
  auto r = run_qtool({"quantize", d.str("a2"), "-o", d.str("o"), "--like", d.str("q"), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string layer = "model.layers.1.";
  for (const std::string n : {"model.layers.0.self_attn.q_proj.input_scale", "model.layers.1.mlp.down_proj.input_scale",
                              "model.layers.0.self_attn.k_scale", "model.layers.1.self_attn.v_scale"}) {
    const auto qb = tensor_bytes(d.str("q"), n);
    ASSERT_FALSE(qb.empty()) << n;
    EXPECT_EQ(tensor_bytes(d.str("o"), n), qb) << n;
  }
  // Weights are quantized anew: the per-tensor FP8 weight scale doubles exactly (BF16 amax / 448
  // of a weight times 2), the codes stay the same.
  for (const std::string m : {"model.layers.0.self_attn.q_proj", "model.layers.1.mlp.up_proj"}) {
    EXPECT_EQ(tensor_bytes(d.str("o"), m + ".weight"), tensor_bytes(d.str("q"), m + ".weight")) << m;
    const auto so = tensor_bytes(d.str("o"), m + ".weight_scale"), sq = tensor_bytes(d.str("q"), m + ".weight_scale");
    ASSERT_EQ(so.size(), 2u);
    EXPECT_EQ(f32_from_bf16(static_cast<uint16_t>(so[0] | so[1] << 8)),
              2.0f * f32_from_bf16(static_cast<uint16_t>(sq[0] | sq[1] << 8)))
        << m;
  }
  EXPECT_EQ(json::parse(test::read_text(d.path() / "o/config.json"))["quantization_config"],
            json::parse(test::read_text(d.path() / "q/config.json"))["quantization_config"]);
  EXPECT_EQ(test::read_text(d.path() / "o/qtool_smoothing.json"), test::read_text(d.path() / "q/qtool_smoothing.json"));
  // Drift of 2W against deq(Q) ~ W: ||2W - W|| / ||W|| = 1 up to QUANT's rounding; every element
  // above 232/448 of the old amax now lies beyond 464 old scales, so every module clips somewhere.
  const json j = json::parse(r.out);
  ASSERT_EQ(j["drift"].size(), 14u);
  for (const auto& l : j["drift"]) {
    EXPECT_NEAR(l["rel_l2"].get<double>(), 1.0, 0.05) << l.dump();
    EXPECT_GT(l["clipped"].get<int64_t>(), 0) << l.dump();
    // amax_quant = 448 x QUANT's scale = the old amax up to the scale's BF16 rounding (2^-9 relative).
    EXPECT_NEAR(l["amax_new"].get<double>() / (2.0 * l["amax_quant"].get<double>()), 1.0, 1.0 / 256) << l.dump();
  }
}

TEST(QuantizeLike, CheckScalesSaysWhichStaticScalesNoLongerCoverTheActivations) {
  test::TempDir d;
  const std::string a = tiny(d);
  const std::vector<std::string> calib = {"--num-samples", "4", "--seq-len", "32"};
  std::vector<std::string> args = {"quantize", a, "-o", d.str("q"), "--scheme", "fp8-static", "--kv-cache", "fp8", "--smoothquant"};
  args.insert(args.end(), calib.begin(), calib.end());
  auto q = run_qtool(args);
  ASSERT_EQ(q.exit_code, 0) << q.err;
  // The same model and the same calibration settings: every scale asked for is QUANT's exactly.
  args = {"quantize", a, "-o", d.str("o1"), "--like", d.str("q"), "--check-scales", "--json"};
  args.insert(args.end(), calib.begin(), calib.end());
  auto r = run_qtool(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out);
  ASSERT_EQ(j["check_scales"].size(), 18u);  // 14 input scales, k and v of 2 layers
  for (const auto& c : j["check_scales"]) {
    EXPECT_EQ(c["ratio"].get<double>(), 1.0) << c.dump();
    EXPECT_TRUE(c["covered"].get<bool>()) << c.dump();
  }
  // Linear weights doubled: layer 0's q/k/v still read the (unchanged) embeddings' norm, so their
  // input scale is QUANT's; its K (RoPE is linear) and V double exactly, and so do their FP8
  // scales (a power of two is exact in BF16).
  scaled_copy(a, d.str("a2"), 2.0f);
  args = {"quantize", d.str("a2"), "-o", d.str("o2"), "--like", d.str("q"), "--check-scales", "--json"};
  args.insert(args.end(), calib.begin(), calib.end());
  r = run_qtool(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  j = json::parse(r.out);
  std::map<std::string, json> by;
  for (const auto& c : j["check_scales"]) by[c["tensor"].get<std::string>()] = c;
  EXPECT_EQ(by.at("model.layers.0.self_attn.q_proj.input_scale")["ratio"].get<double>(), 1.0);
  for (const char* t : {"model.layers.0.self_attn.k_scale", "model.layers.0.self_attn.v_scale"}) {
    EXPECT_EQ(by.at(t)["ratio"].get<double>(), 2.0) << t;
    EXPECT_FALSE(by.at(t)["covered"].get<bool>()) << t;
  }
  EXPECT_CONTAINS(r.err, "check-scales: model.layers.0.self_attn.k_scale = ");
  EXPECT_CONTAINS(r.err, "no longer covers the model's activations: they need");
  // The written scales are still QUANT's.
  EXPECT_EQ(tensor_bytes(d.str("o2"), "model.layers.0.self_attn.k_scale"),
            tensor_bytes(d.str("q"), "model.layers.0.self_attn.k_scale"));
}

TEST(QuantizeLike, RefusesAModelThatDoesNotFitNamingTheTensor) {
  test::TempDir d;
  const std::string a = tiny(d);
  auto q = run_qtool({"quantize", a, "-o", d.str("q"), "--scheme", "fp8-dynamic"});
  ASSERT_EQ(q.exit_code, 0) << q.err;
  // Another size: config key and shapes differ.
  TinyModelOptions big;
  big.intermediate_size = 384;
  write_tiny_model(d.str("big"), big);
  auto r = run_qtool({"quantize", d.str("big"), "-o", d.str("o"), "--like", d.str("q")});
  EXPECT_EQ(r.exit_code, 5) << r.err;
  EXPECT_CONTAINS(r.err, "--like: config.json 'intermediate_size' differs from");
  EXPECT_FALSE(fs::exists(d.path() / "o"));
  // A missing module: the config agrees, one Linear is gone.
  {
    fs::create_directories(d.path() / "miss");
    for (const auto& e : fs::directory_iterator(a))
      if (e.path().extension() != ".safetensors") fs::copy_file(e.path(), d.path() / "miss" / e.path().filename());
    const ModelFolder m = ModelFolder::open(a);
    std::vector<TensorSpec> specs;
    for (const auto& t : m.checkpoint().tensors())
      if (t.name != "model.layers.1.mlp.down_proj.weight") specs.push_back({t.name, t.dtype, t.shape});
    SafetensorsWriter w(d.str("miss/model.safetensors"), specs);
    for (const auto& t : m.checkpoint().tensors())
      if (t.name != "model.layers.1.mlp.down_proj.weight") w.write(t.name, t.bytes);
    w.commit();
  }
  r = run_qtool({"quantize", d.str("miss"), "-o", d.str("o"), "--like", d.str("q")});
  EXPECT_EQ(r.exit_code, 5) << r.err;
  EXPECT_CONTAINS(r.err, "model.layers.1.mlp.down_proj.weight");
  EXPECT_CONTAINS(r.err, "--like: the model lacks module model.layers.1.mlp.down_proj, which");
  // QUANT itself as NEW, an unquantized folder as QUANT, options --like decides.
  r = run_qtool({"quantize", d.str("q"), "-o", d.str("o"), "--like", d.str("q")});
  EXPECT_EQ(r.exit_code, 5) << r.err;
  EXPECT_CONTAINS(r.err, "the model is already quantized");
  r = run_qtool({"quantize", a, "-o", d.str("o"), "--like", a});
  EXPECT_EQ(r.exit_code, 5) << r.err;
  EXPECT_CONTAINS(r.err, "--like: this checkpoint is not quantized (config.json has no quantization_config)");
  r = run_qtool({"quantize", a, "-o", d.str("o"), "--like", d.str("q"), "--scheme", "w4a16"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_CONTAINS(r.err, "--like takes the scheme, format, targets, group size, KV-cache scales and SmoothQuant "
                         "factors from " + d.str("q") + " and runs no calibration (calibration options need "
                         "--check-scales); drop --scheme");
  // Recipe options, and calibration options without --check-scales.
  for (const std::vector<std::string>& extra :
       std::vector<std::vector<std::string>>{{"--group-size", "64"}, {"--algorithm", "gptq"}, {"--moe-fallback", "layer-max"},
                                             {"--observer", "minmax"}, {"--calib-precision", "bf16"},
                                             {"--moe-calibration", "routed"}, {"--num-samples", "4"}}) {
    std::vector<std::string> args = {"quantize", a, "-o", d.str("o"), "--like", d.str("q")};
    args.insert(args.end(), extra.begin(), extra.end());
    r = run_qtool(args);
    EXPECT_EQ(r.exit_code, 2) << extra[0] << ": " << r.err;
    EXPECT_CONTAINS(r.err, "; drop " + extra[0]);
  }
  EXPECT_FALSE(fs::exists(d.path() / "o"));
}

TEST(QuantizeLike, CalibrationOptionsShapeTheCheckScalesCalibration) {
  test::TempDir d;
  const std::string a = tiny(d);
  auto q = run_qtool({"quantize", a, "-o", d.str("q"), "--scheme", "fp8-static", "--num-samples", "4", "--seq-len", "32"});
  ASSERT_EQ(q.exit_code, 0) << q.err;
  // With --check-scales they are accepted, and --calib-precision reaches that calibration: a bf16
  // calibration of the same model asks for scales that are not all QUANT's f32 ones bit for bit,
  // while an f32 one asks for exactly QUANT's (the test above).
  auto r = run_qtool({"quantize", a, "-o", d.str("o"), "--like", d.str("q"), "--check-scales", "--json", "--num-samples",
                      "4", "--seq-len", "32", "--calib-precision", "bf16", "--calib-memory", "1GiB"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  ASSERT_EQ(j["check_scales"].size(), 14u);
  int differ = 0;
  for (const auto& c : j["check_scales"]) differ += c["ratio"].get<double>() != 1.0;
  EXPECT_GT(differ, 0) << "a bf16 calibration gave f32's scales exactly: was --calib-precision ignored?";
}

TEST(QuantizeLike, GptqCheckpointIsRoundedToNearestWithAWarning) {
  test::TempDir d;
  const std::string a = tiny(d);
  auto q = run_qtool({"quantize", a, "-o", d.str("qg"), "--scheme", "w4a16", "--group-size", "64", "--algorithm", "gptq",
                      "--num-samples", "4", "--seq-len", "32"});
  ASSERT_EQ(q.exit_code, 0) << q.err;
  auto rtn = run_qtool({"quantize", a, "-o", d.str("qr"), "--scheme", "w4a16", "--group-size", "64"});
  ASSERT_EQ(rtn.exit_code, 0) << rtn.err;
  auto r = run_qtool({"quantize", a, "-o", d.str("o"), "--like", d.str("qg")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_CONTAINS(r.err, "warning: " + d.str("qg") + "'s weights were made by gptq (its qtool_manifest.json); --like "
                         "rounds to nearest, with its scales and recipe. For gptq weights, quantize MODEL with --scheme "
                         "w4a16 --algorithm gptq (a calibration pass)");
  expect_same_files(d.str("qr"), d.str("o"));  // what round-to-nearest with the recipe writes
}

}  // namespace
}  // namespace qt
