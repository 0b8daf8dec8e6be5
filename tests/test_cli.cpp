// The qtool binary end to end: output, files written, exit codes and error messages
// (man/qtool.1 documents the codes). Each test builds its inputs with `qtool tiny-model`.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <zstd.h>

#include <filesystem>
#include <functional>
#include <fstream>

#include "formats/safetensors.h"
#include "formats/safetensors_writer.h"
#include "libquant/cpu_isa.h"
#include "libquant/float_formats.h"
#include "libquant/kernels/gemm_onednn.h"
#include "libquant/schemes.h"
#include "tests/support/test_support.h"

namespace qt {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;
using test::run_qtool;

std::string tiny(const test::TempDir& d, const std::string& name = "tiny", std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"tiny-model", d.str(name)};
  args.insert(args.end(), extra.begin(), extra.end());
  auto r = run_qtool(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return d.str(name);
}

std::map<std::string, std::vector<uint8_t>> all_files(const fs::path& dir) {
  std::map<std::string, std::vector<uint8_t>> m;
  for (const auto& e : fs::directory_iterator(dir)) m[e.path().filename().string()] = test::read_file(e.path());
  return m;
}

TEST(Cli, VersionListsCompiledInFeatures) {
  auto r = run_qtool({"--version"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("qtool 0.1.0"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("openmp="), std::string::npos);
  EXPECT_NE(r.out.find("cuda="), std::string::npos);
}

TEST(Cli, VersionSaysWhetherAmxIsUsableAndWhichBf16GemmRuns) {
  // The amx line is amx_status()'s sentence; QTOOL_BF16_GEMM picks the bf16 back end it names.
  const char* saved = std::getenv("QTOOL_BF16_GEMM");
  const std::string keep = saved ? saved : "";
  setenv("QTOOL_BF16_GEMM", "own", 1);
  auto own = run_qtool({"--version"});
  setenv("QTOOL_BF16_GEMM", "onednn", 1);
  auto dnn = run_qtool({"--version"});
  if (saved) setenv("QTOOL_BF16_GEMM", keep.c_str(), 1); else unsetenv("QTOOL_BF16_GEMM");
  ASSERT_EQ(own.exit_code, 0) << own.err;
  EXPECT_CONTAINS(own.out, "\namx: " + amx_status().detail + "\n");
  EXPECT_CONTAINS(own.out, "bf16 GEMM: " + test::own_bf16_path() + ")");
  if (kernels::onednn::available())
    EXPECT_CONTAINS(dnn.out, "bf16 GEMM: onednn-" + kernels::onednn::impl_name() + "+" +
                                 test::own_bf16_path() + ")");
  else
    EXPECT_CONTAINS(dnn.out, "bf16 GEMM: " + test::own_bf16_path() + ")");
}

TEST(Cli, OpenMpThreadsWaitPassivelyUnlessTheUserChoseAPolicy) {
  // qtool sets OMP_WAIT_POLICY=passive and re-executes itself when the variable is unset (libgomp
  // reads it before main); a value the user set is kept. --version reports what is in effect.
  const char* saved = std::getenv("OMP_WAIT_POLICY");
  const std::string keep = saved ? saved : "";
  unsetenv("OMP_WAIT_POLICY");
  auto unset = run_qtool({"--version"});
  setenv("OMP_WAIT_POLICY", "active", 1);
  auto active = run_qtool({"--version"});
  if (saved) setenv("OMP_WAIT_POLICY", keep.c_str(), 1); else unsetenv("OMP_WAIT_POLICY");
  ASSERT_EQ(unset.exit_code, 0) << unset.err;
  EXPECT_CONTAINS(unset.out, "OMP_WAIT_POLICY=passive");
  EXPECT_CONTAINS(active.out, "OMP_WAIT_POLICY=active");
}

TEST(Cli, MissingArgumentsIsAUsageErrorWithExitCode2) {
  EXPECT_EQ(run_qtool({}).exit_code, 2);
  auto r = run_qtool({"quantize"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("MODEL"), std::string::npos) << r.err;
  EXPECT_EQ(run_qtool({"quantize", "x", "-o", "y", "--scheme", "fp9"}).exit_code, 2);
}

TEST(Cli, QuantizeHelpShowsEverySchemeAndTheDefaults) {
  auto r = run_qtool({"quantize", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  for (const auto& s : all_schemes()) EXPECT_NE(r.out.find(s.name), std::string::npos) << s.name;
  EXPECT_NE(r.out.find("=fp8-dynamic"), std::string::npos) << "default scheme shown";
  EXPECT_NE(r.out.find("=5GB"), std::string::npos) << "default shard size shown";
}

TEST(Cli, ManPagesListEverySchemeOfTheTable) {
  // man/*.1 are generated from the one schemes table (scripts/gen_man.sh); this catches drift.
  for (const char* page : {"man/qtool-schemes.1", "man/qtool-quantize.1"}) {
    const std::string text = test::read_text(test::source_path(page));
    ASSERT_FALSE(text.empty()) << page;
    for (const auto& s : all_schemes()) {
      std::string n = s.name, roff;
      for (char c : n) roff += (c == '-') ? std::string("\\-") : std::string(1, c);
      EXPECT_TRUE(text.find(n) != std::string::npos || text.find(roff) != std::string::npos) << page << " lacks " << n;
    }
  }
}

TEST(Cli, FilesManPageDocumentsEveryKeyQtoolWrites) {
  // man/qtool-files.5 is the written spec of qtool's own files; every key the code writes is in it.
  const std::string spec = test::read_text(test::source_path("man/qtool-files.5.md"));
  ASSERT_FALSE(spec.empty());
  test::TempDir d;
  const std::string in = tiny(d);
  auto r = run_qtool({"quantize", in, "-o", d.str("out"), "--scheme", "int8-static", "--smoothquant", "--kv-cache", "fp8",
                      "--num-samples", "2", "--seq-len", "16", "--save-stats", d.str("s.zst")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto keys_in = [&](const json& j, const std::string& what) {
    for (const auto& [k, v] : j.items()) {
      EXPECT_NE(spec.find("**" + k + "**"), std::string::npos) << what << " key '" << k << "' is not in man/qtool-files.5.md";
      if (v.is_object() && (k == "smoothquant" || k == "data" || k == "calibration")) {
        for (const auto& [k2, v2] : v.items())
          EXPECT_NE(spec.find("**" + k2 + "**"), std::string::npos) << what << " key '" << k << "." << k2 << "'";
      }
    }
  };
  keys_in(json::parse(test::read_text(d.path() / "out/qtool_manifest.json")), "qtool_manifest.json");
  keys_in(json::parse(test::read_text(d.path() / "out/qtool_smoothing.json")), "qtool_smoothing.json");
  // Named first: a range-for over a member of a temporary reads freed memory (AddressSanitizer).
  const json smoothing = json::parse(test::read_text(d.path() / "out/qtool_smoothing.json"));
  for (const auto& m : smoothing["mappings"]) keys_in(m, "mapping");
  // The statistics file: a zstd frame holding the JSON object.
  const auto z = test::read_file(d.path() / "s.zst");
  const unsigned long long n = ZSTD_getFrameContentSize(z.data(), z.size());
  ASSERT_NE(n, ZSTD_CONTENTSIZE_ERROR);
  std::string text(n, '\0');
  ASSERT_EQ(ZSTD_decompress(text.data(), text.size(), z.data(), z.size()), n);
  const json st = json::parse(text);
  EXPECT_EQ(st["format"], "qtool-activation-stats");
  keys_in(st, "statistics file");
}

TEST(Cli, SchemesJsonListsTheTable) {
  auto r = run_qtool({"schemes", "--json"});
  ASSERT_EQ(r.exit_code, 0);
  json j = json::parse(r.out);
  ASSERT_EQ(j.size(), all_schemes().size());
  EXPECT_EQ(j[0]["name"], all_schemes()[0].name);
}

TEST(Cli, QuantizeWritesALoadableCheckpointAndInspectDescribesIt) {
  test::TempDir d;
  const std::string in = tiny(d);
  auto r = run_qtool({"quantize", in, "-o", d.str("out"), "--scheme", "fp8-dynamic"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // One log line per tensor and a summary.
  EXPECT_NE(r.err.find("[1/21] "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("bf16 -> fp8"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("done: 14 of 21 tensors quantized"), std::string::npos) << r.err;
  for (const char* f : {"model.safetensors", "config.json", "tokenizer.json", "generation_config.json", "qtool_manifest.json"})
    EXPECT_TRUE(fs::exists(d.path() / "out" / f)) << f;
  json cfg = json::parse(test::read_text(d.path() / "out/config.json"));
  EXPECT_EQ(cfg["quantization_config"]["quant_method"], "compressed-tensors");
  EXPECT_EQ(cfg["quantization_config"]["format"], "float-quantized");
  EXPECT_EQ(cfg["quantization_config"]["quantization_status"], "compressed");
  EXPECT_EQ(cfg["hidden_size"], 128) << "unknown keys are kept";
  json man = json::parse(test::read_text(d.path() / "out/qtool_manifest.json"));
  EXPECT_EQ(man["scheme"], "fp8-dynamic");
  EXPECT_EQ(man["inputs"][0]["sha256"].get<std::string>().size(), 64u);

  auto i = run_qtool({"inspect", d.str("out"), "--json"});
  ASSERT_EQ(i.exit_code, 0) << i.err;
  json rep = json::parse(i.out);
  EXPECT_EQ(rep["quantized_modules"], 14);
  EXPECT_EQ(rep["findings"].size(), 0u) << rep["findings"].dump();
  EXPECT_EQ(rep["quantization"]["groups"][0]["weights"], "FP8 E4M3 per-channel");
  EXPECT_FALSE(fs::exists(d.str("out") + ".qtool-partial-0"));
  for (const auto& e : fs::directory_iterator(d.path()))
    EXPECT_EQ(e.path().filename().string().find("qtool-partial"), std::string::npos) << e.path();
}

TEST(Cli, EverySchemeQuantizesTheTinyModelWithoutFindings) {
  test::TempDir d;
  const std::string in = tiny(d);
  for (const auto& s : all_schemes()) {
    auto r = run_qtool({"quantize", in, "-o", d.str(std::string("out-") + s.name), "--scheme", s.name});
    EXPECT_EQ(r.exit_code, 0) << s.name << ": " << r.err;
    if (s.needs_calibration) {
      EXPECT_NE(r.err.find("calibration: "), std::string::npos) << r.err;
      EXPECT_NE(r.err.find("calibration took "), std::string::npos) << "summary lacks calibration time: " << r.err;
    }
    auto i = run_qtool({"inspect", d.str(std::string("out-") + s.name), "--json", "--scales"});
    ASSERT_EQ(i.exit_code, 0) << i.err;
    EXPECT_EQ(json::parse(i.out)["findings"].size(), 0u) << s.name << ": " << json::parse(i.out)["findings"].dump();
  }
}

TEST(Cli, JsonSummaryReportsCalibrationCost) {
  test::TempDir d;
  const std::string in = tiny(d);
  auto r = run_qtool({"quantize", in, "-o", d.str("out"), "--scheme", "fp8-static", "--num-samples", "4",
                      "--seq-len", "32", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  ASSERT_TRUE(j.contains("calibration")) << r.out;
  EXPECT_EQ(j["calibration"]["samples"], 4);
  EXPECT_GT(j["calibration"]["tokens"].get<int64_t>(), 0);
  EXPECT_LE(j["calibration"]["tokens"].get<int64_t>(), 4 * 32);
  EXPECT_GE(j["calibration"]["seconds"].get<double>(), 0.0);
  auto dyn = run_qtool({"quantize", in, "-o", d.str("out-dyn"), "--scheme", "fp8-dynamic", "--json"});
  ASSERT_EQ(dyn.exit_code, 0) << dyn.err;
  EXPECT_FALSE(json::parse(dyn.out).contains("calibration"));
}

TEST(Cli, StaticFp8WithKvCacheWritesInputAndKvScales) {
  test::TempDir d;
  const std::string in = tiny(d);
  auto r = run_qtool({"quantize", in, "-o", d.str("out"), "--scheme", "fp8-static", "--kv-cache", "fp8",
                      "--num-samples", "8", "--seq-len", "64", "--save-stats", d.str("stats.zst")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  SafetensorsFile f = SafetensorsFile::open(d.str("out/model.safetensors"));
  for (const char* n : {"model.layers.0.self_attn.q_proj.input_scale", "model.layers.1.mlp.down_proj.input_scale",
                        "model.layers.0.self_attn.k_scale", "model.layers.1.self_attn.v_scale"}) {
    const TensorView* t = f.find(n);
    ASSERT_NE(t, nullptr) << n;
    EXPECT_EQ(t->shape, (std::vector<int64_t>{1})) << n;
    EXPECT_GT(f32_from_bf16(static_cast<uint16_t>(t->bytes[0] | (t->bytes[1] << 8))), 0.0f) << n;
  }
  // q/k/v share one input scale, gate/up another (vLLM keeps one slot for a fused layer).
  EXPECT_TRUE(std::equal(f.find("model.layers.0.self_attn.q_proj.input_scale")->bytes.begin(),
                         f.find("model.layers.0.self_attn.q_proj.input_scale")->bytes.end(),
                         f.find("model.layers.0.self_attn.k_proj.input_scale")->bytes.begin()));
  json cfg = json::parse(test::read_text(d.path() / "out/config.json"));
  EXPECT_EQ(cfg["quantization_config"]["kv_cache_scheme"]["type"], "float");
  EXPECT_EQ(cfg["quantization_config"]["config_groups"]["group_0"]["input_activations"]["strategy"], "tensor");
  // The saved statistics give byte-identical output without calibrating again.
  auto again = run_qtool({"quantize", in, "-o", d.str("out2"), "--scheme", "fp8-static", "--kv-cache", "fp8",
                          "--stats", d.str("stats.zst")});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(test::read_file(d.path() / "out/model.safetensors"), test::read_file(d.path() / "out2/model.safetensors"));
  // ...and are refused for another model.
  const std::string other = tiny(d, "other", {"--seed", "9"});
  auto refused = run_qtool({"quantize", other, "-o", d.str("out3"), "--scheme", "fp8-static", "--stats", d.str("stats.zst")});
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_NE(refused.err.find("different model"), std::string::npos) << refused.err;
}

TEST(Cli, SmoothQuantRewritesNormsAndLinearsAndRecordsItsFactors) {
  test::TempDir d;
  const std::string in = tiny(d);
  auto r = run_qtool({"quantize", in, "-o", d.str("out"), "--scheme", "int8-static", "--smoothquant",
                      "--smoothing-strength", "0.8", "--num-samples", "4", "--seq-len", "32", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["smoothquant"]["alpha"].get<double>(), 0.8);  // as typed, not 0.800000011920929
  EXPECT_EQ(j["smoothquant"]["mappings"], "all");
  EXPECT_EQ(j["smoothquant"]["smoothed_layers"], 6);  // 2 layers x (2 norms + up_proj)
  EXPECT_GT(j["smoothquant"]["max_factor"].get<double>(), j["smoothquant"]["min_factor"].get<double>());
  SafetensorsFile orig = SafetensorsFile::open(in + "/model.safetensors");
  SafetensorsFile out = SafetensorsFile::open(d.str("out/model.safetensors"));
  auto same = [&](const std::string& n) {
    const TensorView *a = orig.find(n), *b = out.find(n);
    return a && b && std::equal(a->bytes.begin(), a->bytes.end(), b->bytes.begin(), b->bytes.end());
  };
  EXPECT_FALSE(same("model.layers.0.input_layernorm.weight"));
  EXPECT_FALSE(same("model.layers.1.post_attention_layernorm.weight"));
  EXPECT_TRUE(same("model.norm.weight"));  // the final norm feeds lm_head, which stays unquantized
  EXPECT_TRUE(same("model.embed_tokens.weight"));
  const json side = json::parse(test::read_text(d.path() / "out/qtool_smoothing.json"));
  ASSERT_EQ(side["mappings"].size(), 6u);
  EXPECT_EQ(side["mappings"][2]["smooth"], "model.layers.0.mlp.up_proj");
  EXPECT_EQ(side["mappings"][2]["factors"].size(), 256u);
  const json man = json::parse(test::read_text(d.path() / "out/qtool_manifest.json"));
  EXPECT_EQ(man["smoothquant"]["factors_file"], "qtool_smoothing.json");
  auto ins = run_qtool({"inspect", d.str("out")});
  EXPECT_NE(ins.out.find("smoothing    SmoothQuant, alpha 0.8, 6 smoothed layers (qtool_smoothing.json)"), std::string::npos)
      << ins.out;
  // verify sees the smoothing against the original and checks every layer as deployed.
  auto v = run_qtool({"verify", d.str("out"), "--reference", in, "--no-bench", "--json"});
  ASSERT_EQ(v.exit_code, 0) << v.out << v.err;
  const json vj = json::parse(v.out);
  EXPECT_EQ(vj["smoothed_layers"].size(), 6u);
  // Undone wrongly, the factors (0.0x to 10x) would give O(1) errors and SQNRs near 0 dB; undone
  // right, what is left is INT8 rounding: the activation part (act_err, against the deployed
  // weights) accounts for nearly all of the GEMM error against the original weights.
  for (const auto& L : vj["layers"]) {
    EXPECT_LT(L["gemm_err"].get<double>(), 0.15) << L["module"];  // the INT8 W8A8 default gate
    EXPECT_LT(L["gemm_err"].get<double>() - L["act_err"].get<double>(), 0.02) << L["module"];
    EXPECT_GT(L["weight"]["sqnr_db"].get<double>(), 30.0) << L["module"];
  }
  // Same statistics and strength: byte-identical output at another thread count.
  auto again = run_qtool({"quantize", in, "-o", d.str("out2"), "--scheme", "int8-static", "--smoothquant",
                          "--smoothing-strength", "0.8", "--num-samples", "4", "--seq-len", "32", "-j", "1"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(test::read_file(d.path() / "out/model.safetensors"), test::read_file(d.path() / "out2/model.safetensors"));
}

TEST(Cli, SmoothQuantNeedsQuantizedActivationsAndItsOwnFlag) {
  test::TempDir d;
  const std::string in = tiny(d);
  auto w = run_qtool({"quantize", in, "-o", d.str("out"), "--scheme", "w8a16", "--smoothquant"});
  EXPECT_EQ(w.exit_code, 2);
  EXPECT_NE(w.err.find("--smoothquant needs a scheme that quantizes activations; w8a16 is weight-only"), std::string::npos) << w.err;
  auto alone = run_qtool({"quantize", in, "-o", d.str("out"), "--scheme", "int8-static", "--smoothing-strength", "0.5"});
  EXPECT_EQ(alone.exit_code, 2);
  EXPECT_NE(alone.err.find("--smoothquant"), std::string::npos) << alone.err;
  auto range = run_qtool({"quantize", in, "-o", d.str("out"), "--scheme", "int8-static", "--smoothquant",
                          "--smoothing-strength", "1.5"});
  EXPECT_EQ(range.exit_code, 2);
  EXPECT_FALSE(fs::exists(d.path() / "out"));
  auto dry = run_qtool({"quantize", in, "-o", d.str("out"), "--scheme", "fp8-dynamic", "--smoothquant", "--dry-run"});
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_NE(dry.out.find("smoothquant: alpha 0.8, mappings all, 6 smoothed layers"), std::string::npos) << dry.out;
  EXPECT_EQ(dry.err.find("It is meant for INT8"), std::string::npos) << dry.err;  // per-channel FP8: no warning
  auto tensor_fp8 = run_qtool({"quantize", in, "-o", d.str("out"), "--scheme", "fp8-static", "--smoothquant", "--dry-run"});
  ASSERT_EQ(tensor_fp8.exit_code, 0) << tensor_fp8.err;
  EXPECT_NE(tensor_fp8.err.find("It is meant for INT8"), std::string::npos) << tensor_fp8.err;
}

// A BF16 tiny model with layer 0's q_proj taken from the F32 tiny model and its k_proj and
// layer 1's down_proj from the F16 one (same seed: the same draws, rounded to each dtype).
std::string mixed_dtype_tiny(const test::TempDir& d) {
  const std::string bf = tiny(d, "bf16"), f32 = tiny(d, "f32", {"--dtype", "f32"}), f16 = tiny(d, "f16", {"--dtype", "f16"});
  const std::map<std::string, std::string> from = {{"model.layers.0.self_attn.q_proj.weight", f32},
                                                   {"model.layers.0.self_attn.k_proj.weight", f16},
                                                   {"model.layers.1.mlp.down_proj.weight", f16}};
  fs::copy(bf, d.path() / "mixed");
  std::map<std::string, SafetensorsFile> opened;
  for (const auto& dir : {f32, f16}) opened.emplace(dir, SafetensorsFile::open(dir + "/model.safetensors"));
  test::rewrite_safetensors(d.str("mixed/model.safetensors"), [&](TensorSpec& spec, std::vector<uint8_t>& bytes) {
    auto it = from.find(spec.name);
    if (it == from.end()) return;
    const TensorView* src = opened.at(it->second).find(spec.name);
    spec = {spec.name, src->dtype, src->shape};
    bytes.assign(src->bytes.begin(), src->bytes.end());
  });
  return d.str("mixed");
}

TEST(Cli, AModelMixingBf16F16AndF32LayersQuantizesEachTensorFromItsOwnDtype) {
  test::TempDir d;
  const std::string in = mixed_dtype_tiny(d);
  auto r = run_qtool({"quantize", in, "-o", d.str("out"), "--scheme", "fp8-dynamic"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto f32 = run_qtool({"quantize", d.str("f32"), "-o", d.str("out32"), "--scheme", "fp8-dynamic"});
  ASSERT_EQ(f32.exit_code, 0) << f32.err;
  auto f16 = run_qtool({"quantize", d.str("f16"), "-o", d.str("out16"), "--scheme", "fp8-dynamic"});
  ASSERT_EQ(f16.exit_code, 0) << f16.err;
  // Each module's codes and scales (in its own dtype, as compressed-tensors stores them) are
  // those of the uniform model it came from.
  SafetensorsFile m = SafetensorsFile::open(d.str("out/model.safetensors"));
  SafetensorsFile u32 = SafetensorsFile::open(d.str("out32/model.safetensors"));
  SafetensorsFile u16 = SafetensorsFile::open(d.str("out16/model.safetensors"));
  auto same = [&](const SafetensorsFile& u, const std::string& name, DType want) {
    const TensorView* a = m.find(name);
    const TensorView* b = u.find(name);
    ASSERT_NE(a, nullptr) << name;
    ASSERT_NE(b, nullptr) << name;
    EXPECT_EQ(a->dtype, want) << name;
    EXPECT_EQ(a->dtype, b->dtype) << name;
    EXPECT_TRUE(std::equal(a->bytes.begin(), a->bytes.end(), b->bytes.begin(), b->bytes.end())) << name;
  };
  same(u32, "model.layers.0.self_attn.q_proj.weight", DType::F8_E4M3);
  same(u32, "model.layers.0.self_attn.q_proj.weight_scale", DType::F32);
  same(u16, "model.layers.0.self_attn.k_proj.weight_scale", DType::F16);
  same(u16, "model.layers.1.mlp.down_proj.weight_scale", DType::F16);
  EXPECT_EQ(m.find("model.layers.0.self_attn.v_proj.weight_scale")->dtype, DType::BF16);
  // Static activations and KV-cache scales: input_scale in the Linear's dtype, k/v_scale in
  // that of the attention's first parameter (q_proj).
  auto st = run_qtool({"quantize", in, "-o", d.str("static"), "--scheme", "fp8-static", "--kv-cache", "fp8",
                       "--num-samples", "4", "--seq-len", "32"});
  ASSERT_EQ(st.exit_code, 0) << st.err;
  SafetensorsFile s = SafetensorsFile::open(d.str("static/model.safetensors"));
  EXPECT_EQ(s.find("model.layers.0.self_attn.q_proj.input_scale")->dtype, DType::F32);
  EXPECT_EQ(s.find("model.layers.0.self_attn.k_proj.input_scale")->dtype, DType::F16);
  EXPECT_EQ(s.find("model.layers.0.self_attn.v_proj.input_scale")->dtype, DType::BF16);
  EXPECT_EQ(s.find("model.layers.0.self_attn.k_scale")->dtype, DType::F32);
  EXPECT_EQ(s.find("model.layers.1.self_attn.k_scale")->dtype, DType::BF16);
}

// A copy of the BF16 tiny model at d/NAME with `edit` applied to one tensor's bytes.
std::string edited_tiny(const test::TempDir& d, const std::string& name, const std::string& tensor,
                        const std::function<void(std::vector<uint8_t>&)>& edit) {
  fs::copy(tiny(d, name + "-src"), d.path() / name);
  test::rewrite_safetensors(d.str(name + "/model.safetensors"), [&](TensorSpec& spec, std::vector<uint8_t>& bytes) {
    if (spec.name == tensor) edit(bytes);
  });
  return d.str(name);
}

void set_bf16(std::vector<uint8_t>& b, size_t i, uint16_t bits) {
  b[2 * i] = static_cast<uint8_t>(bits & 0xff);
  b[2 * i + 1] = static_cast<uint8_t>(bits >> 8);
}

TEST(Cli, ANanOrInfWeightInACalibratedRunIsNamedNotReportedAsAMissingStatistic) {
  test::TempDir d;
  const std::string nan_in = edited_tiny(d, "nan", "model.layers.1.mlp.up_proj.weight",
                                         [](std::vector<uint8_t>& b) { set_bf16(b, 5, 0x7fc0); });
  auto r = run_qtool({"quantize", nan_in, "-o", d.str("out"), "--scheme", "fp8-static", "--num-samples", "2", "--seq-len", "32"});
  EXPECT_EQ(r.exit_code, 6) << r.err;
  EXPECT_CONTAINS(r.err, "model.safetensors: tensor 'model.layers.1.mlp.up_proj.weight': weight element 5 is NaN; "
                         "calibration needs finite weights");
  const std::string inf_norm = edited_tiny(d, "infnorm", "model.layers.0.input_layernorm.weight",
                                           [](std::vector<uint8_t>& b) { set_bf16(b, 3, 0x7f80); });
  r = run_qtool({"quantize", inf_norm, "-o", d.str("out"), "--scheme", "int8-static", "--num-samples", "2", "--seq-len", "32"});
  EXPECT_EQ(r.exit_code, 6) << r.err;
  EXPECT_CONTAINS(r.err, "tensor 'model.layers.0.input_layernorm.weight': weight element 3 is +Inf; calibration needs "
                         "finite weights");
}

TEST(Cli, AWeightThatOverflowsF32InCalibrationIsNamedWithItsLayer) {
  test::TempDir d;
  // Row 0 of layer 0's up_proj at the largest finite BF16 value (3.39e38): finite, but any input
  // of magnitude > 1 overflows the f32 dot product.
  const std::string in = edited_tiny(d, "big", "model.layers.0.mlp.up_proj.weight", [](std::vector<uint8_t>& b) {
    for (size_t i = 0; i < 128; ++i) set_bf16(b, i, 0x7f7f);
  });
  auto r = run_qtool({"quantize", in, "-o", d.str("out"), "--scheme", "fp8-static", "--num-samples", "2", "--seq-len", "32"});
  EXPECT_EQ(r.exit_code, 6) << r.err;
  EXPECT_CONTAINS(r.err, "model.layers.0: the calibration forward pass is not finite in this layer (");
  EXPECT_CONTAINS(r.err, "; its largest weight is 3.38953e+38 in model.layers.0.mlp.up_proj.weight (f32 arithmetic "
                         "overflows on weights that large)");
  EXPECT_FALSE(fs::exists(d.path() / "out"));
}

TEST(Cli, ConfigValuesThatBreakCalibrationAreNamedBeforeCalibrating) {
  test::TempDir d;
  const std::string in = tiny(d);
  const json good = json::parse(test::read_text(fs::path(in) / "config.json"));
  auto with = [&](const std::string& key, const json& v) {
    json c = good;
    c[key] = v;
    test::write_text(fs::path(in) / "config.json", c.dump(2));
    return run_qtool({"quantize", in, "-o", d.str("out"), "--scheme", "fp8-static", "--num-samples", "2", "--seq-len", "32"});
  };
  auto r = with("num_hidden_layers", 1);
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_CONTAINS(r.err, "config.json: num_hidden_layers is 1, but the checkpoint has 2 layers (model.layers.0 .. model.layers.1)");
  r = with("rope_theta", 1e-300);  // positive in double, 0 in f32: every angle NaN
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_CONTAINS(r.err, "config.json: rope_theta is outside the f32 range (expected a positive f32 value, got 1e-300)");
  EXPECT_EQ(r.err.find("calibration: layer"), std::string::npos) << r.err;
  // Huge sizes: named as config values, never a bare "out of memory".
  r = with("hidden_size", 3000000000LL);
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_CONTAINS(r.err, "config.json: config key 'hidden_size' is too large (expected at most 2147483647, got 3000000000)");
  json c = good;
  c["hidden_size"] = 1 << 30;
  c["head_dim"] = 32;
  test::write_text(fs::path(in) / "config.json", c.dump(2));
  r = run_qtool({"quantize", in, "-o", d.str("out"), "--scheme", "fp8-static", "--num-samples", "2", "--seq-len", "32"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_CONTAINS(r.err, "tensor 'model.embed_tokens.weight': tensor shape does not match config.json");
  EXPECT_EQ(r.err.find("out of memory"), std::string::npos) << r.err;
}

TEST(Cli, AnInvalidResumeFileIsTreatedAsAbsentAndSaidSoInOneLine) {
  test::TempDir d;
  const std::string in = tiny(d);
  test::write_text(d.path() / "out.qtool-stats.zst", "garbage, not zstd");
  auto r = run_qtool({"quantize", in, "-o", d.str("out"), "--scheme", "int8-static", "--num-samples", "4",
                      "--seq-len", "32"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find(".qtool-stats.zst from an interrupted run (not a qtool statistics file (zstd frame "
                       "expected)); calibrating again\n"),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(d.path() / "out.qtool-stats.zst"));
}

TEST(Cli, AStatisticsFileWithANegativeValueIsRefusedNamingTheFile) {
  test::TempDir d;
  const std::string in = tiny(d);
  auto r = run_qtool({"quantize", in, "-o", d.str("out"), "--scheme", "fp8-static", "--num-samples", "4",
                      "--seq-len", "32", "--save-stats", d.str("s.zst")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Flip the sign of one input statistic (decompress, edit, compress).
  const std::string raw = test::read_text(d.path() / "s.zst");
  std::string text(ZSTD_getFrameContentSize(raw.data(), raw.size()), '\0');
  text.resize(ZSTD_decompress(text.data(), text.size(), raw.data(), raw.size()));
  json j = json::parse(text);
  const std::string key = j["input_absmax"].begin().key();
  const float v = j["input_absmax"][key].get<float>();
  j["input_absmax"][key] = -v;
  const std::string edited = j.dump();
  std::string z(ZSTD_compressBound(edited.size()), '\0');
  z.resize(ZSTD_compress(z.data(), z.size(), edited.data(), edited.size(), 3));
  test::write_text(d.path() / "s.zst", z);
  auto bad = run_qtool({"quantize", in, "-o", d.str("out2"), "--scheme", "fp8-static", "--stats", d.str("s.zst")});
  EXPECT_EQ(bad.exit_code, 3) << bad.err;
  EXPECT_NE(bad.err.find(d.str("s.zst") + ": input_absmax '" + key + "' is -"), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("; an absolute maximum cannot be negative"), std::string::npos) << bad.err;
  EXPECT_FALSE(fs::exists(d.path() / "out2"));
}

TEST(Cli, ARunKilledAfterCalibrationIsResumedWithoutCalibratingAgain) {
  test::TempDir d;
  const std::string in = tiny(d);
  const std::vector<std::string> cmd = {"quantize", in, "-o", d.str("out"), "--scheme", "int8-static",
                                        "--num-samples", "6", "--seq-len", "48"};
  // Killed right after calibrating (the test hook aborts the process): OUT does not exist, the
  // statistics do, next to it.
  ::setenv("QTOOL_FAULT_INJECT", "after-calibration", 1);
  auto killed = run_qtool(cmd);
  ::unsetenv("QTOOL_FAULT_INJECT");
  EXPECT_NE(killed.exit_code, 0);
  EXPECT_FALSE(fs::exists(d.path() / "out"));
  ASSERT_TRUE(fs::exists(d.path() / "out.qtool-stats.zst")) << killed.err;
  // The same command picks them up, says so, and removes them once OUT is published (and writes
  // --save-stats from them when asked).
  std::vector<std::string> cmd_save = cmd;
  cmd_save.insert(cmd_save.end(), {"--save-stats", d.str("saved.zst")});
  auto resumed = run_qtool(cmd_save);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("reusing the statistics an interrupted run saved in"), std::string::npos) << resumed.err;
  EXPECT_EQ(resumed.err.find("calibration: layer"), std::string::npos) << "calibrated again:\n" << resumed.err;
  EXPECT_FALSE(fs::exists(d.path() / "out.qtool-stats.zst"));
  EXPECT_TRUE(fs::exists(d.path() / "saved.zst"));
  // Same bytes as an uninterrupted run.
  auto fresh = run_qtool({"quantize", in, "-o", d.str("fresh"), "--scheme", "int8-static", "--num-samples", "6",
                          "--seq-len", "48"});
  ASSERT_EQ(fresh.exit_code, 0) << fresh.err;
  EXPECT_EQ(test::read_file(d.path() / "out/model.safetensors"), test::read_file(d.path() / "fresh/model.safetensors"));
  EXPECT_FALSE(fs::exists(d.path() / "fresh.qtool-stats.zst"));
  // Other calibration settings: the leftover is not used.
  ::setenv("QTOOL_FAULT_INJECT", "after-calibration", 1);
  run_qtool({"quantize", in, "-o", d.str("o2"), "--scheme", "fp8-static", "--num-samples", "6", "--seq-len", "48"});
  ::unsetenv("QTOOL_FAULT_INJECT");
  auto other = run_qtool({"quantize", in, "-o", d.str("o2"), "--scheme", "fp8-static", "--num-samples", "5",
                          "--seq-len", "48"});
  ASSERT_EQ(other.exit_code, 0) << other.err;
  EXPECT_NE(other.err.find("was made with other calibration settings; calibrating again"), std::string::npos) << other.err;
}

// bf16 statistics left by an interrupted run are reused only by a run with the same kernels (own
// vs oneDNN give other bits, gemm.h): the statistics file records them (calib_kernels).
TEST(Cli, Bf16StatisticsOfAnInterruptedRunAreReusedOnlyWithTheSameKernels) {
  if (!kernels::onednn::available())
    GTEST_SKIP() << "no oneDNN bf16 matmul here (built without oneDNN, or a CPU without AVX-512)";
  test::TempDir d;
  const std::string in = tiny(d);
  const std::vector<std::string> cmd = {"quantize", in, "-o", d.str("out"), "--scheme", "fp8-static", "--num-samples",
                                        "4", "--seq-len", "32", "--calib-precision", "bf16"};
  const char* saved = std::getenv("QTOOL_BF16_GEMM");
  const std::string keep = saved ? saved : "";
  auto interrupted_then = [&](const char* first, const char* second) {
    ::setenv("QTOOL_BF16_GEMM", first, 1);
    ::setenv("QTOOL_FAULT_INJECT", "after-calibration", 1);
    run_qtool(cmd);
    ::unsetenv("QTOOL_FAULT_INJECT");
    EXPECT_TRUE(fs::exists(d.path() / "out.qtool-stats.zst"));
    ::setenv("QTOOL_BF16_GEMM", second, 1);
    auto r = run_qtool(cmd);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    fs::remove_all(d.path() / "out");
    return r.err;
  };
  const std::string same = interrupted_then("onednn", "onednn"), other = interrupted_then("own", "onednn");
  if (saved) ::setenv("QTOOL_BF16_GEMM", keep.c_str(), 1); else ::unsetenv("QTOOL_BF16_GEMM");
  EXPECT_CONTAINS(same, "reusing the statistics an interrupted run saved in");
  EXPECT_CONTAINS(other, "was made with other calibration settings; calibrating again");
}

TEST(Cli, CalibrationHiddenStatesAboveTheMemoryCapGoToADiskFileWithTheSameResult) {
  test::TempDir d;
  const std::string in = tiny(d);
  auto ram = run_qtool({"quantize", in, "-o", d.str("ram"), "--scheme", "fp8-static", "--num-samples", "4", "--seq-len", "32"});
  ASSERT_EQ(ram.exit_code, 0) << ram.err;
  EXPECT_EQ(ram.err.find("kept in a temporary file"), std::string::npos);
  auto disk = run_qtool({"quantize", in, "-o", d.str("disk"), "--scheme", "fp8-static", "--num-samples", "4", "--seq-len",
                         "32", "--calib-memory", "1KiB"});
  ASSERT_EQ(disk.exit_code, 0) << disk.err;
  EXPECT_NE(disk.err.find("kept in a temporary file in " + fs::weakly_canonical(d.path()).string()), std::string::npos)
      << disk.err;
  EXPECT_EQ(test::read_file(d.path() / "ram/model.safetensors"), test::read_file(d.path() / "disk/model.safetensors"));
  for (const auto& e : fs::directory_iterator(d.path()))  // the spill file is gone
    EXPECT_EQ(e.path().filename().string().find(".qtool-calib-hidden"), std::string::npos) << e.path();
}

TEST(Cli, LegacyFp8WritesTheAutoFp8Layout) {
  test::TempDir d;
  const std::string in = tiny(d);
  auto r = run_qtool({"quantize", in, "-o", d.str("out"), "--scheme", "fp8-static", "--format", "legacy-fp8",
                      "--num-samples", "4", "--seq-len", "32"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json cfg = json::parse(test::read_text(d.path() / "out/config.json"));
  EXPECT_EQ(cfg["quantization_config"]["quant_method"], "fp8");
  EXPECT_EQ(cfg["quantization_config"]["activation_scheme"], "static");
  SafetensorsFile f = SafetensorsFile::open(d.str("out/model.safetensors"));
  const TensorView* ws = f.find("model.layers.0.mlp.up_proj.weight_scale");
  ASSERT_NE(ws, nullptr);
  EXPECT_EQ(ws->dtype, DType::F32);
  EXPECT_TRUE(ws->shape.empty()) << "AutoFP8 scales are 0-rank";
  auto i = run_qtool({"inspect", d.str("out"), "--json"});
  EXPECT_EQ(json::parse(i.out)["findings"].size(), 0u) << i.out;
}

TEST(Cli, OutputIsByteIdenticalAtAnyThreadCount) {
  test::TempDir d;
  const std::string in = tiny(d, "tiny", {"--shards", "2"});
  ASSERT_EQ(run_qtool({"quantize", in, "-o", d.str("a"), "--scheme", "fp8-block", "-j", "1"}).exit_code, 0);
  ASSERT_EQ(run_qtool({"quantize", in, "-o", d.str("b"), "--scheme", "fp8-block", "-j", "2"}).exit_code, 0);
  auto a = all_files(d.path() / "a"), b = all_files(d.path() / "b");
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, bytes] : a) {
    if (name == "qtool_manifest.json") continue;  // records the command line, which differs
    EXPECT_EQ(bytes, b[name]) << name;
  }
}

TEST(Cli, SmallShardCapWritesAnIndexWithHuggingFaceNames) {
  test::TempDir d;
  const std::string in = tiny(d);
  auto r = run_qtool({"quantize", in, "-o", d.str("out"), "--scheme", "int8-dynamic", "--max-shard-size", "200KB"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(d.path() / "out/model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(d.path() / "out/model-00001-of-00003.safetensors") ||
              fs::exists(d.path() / "out/model-00001-of-00004.safetensors"));
  EXPECT_EQ(run_qtool({"inspect", d.str("out/model.safetensors.index.json")}).exit_code, 0);
}

TEST(Cli, DryRunPrintsThePlanAndWritesNothing) {
  test::TempDir d;
  const std::string in = tiny(d);
  auto r = run_qtool({"quantize", in, "-o", d.str("out"), "--scheme", "w4a16", "--dry-run", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["tensors"].size(), 21u);
  EXPECT_FALSE(fs::exists(d.path() / "out"));
}

TEST(Cli, RefusesAnOutputInsideTheInputOrAnExistingOne) {
  test::TempDir d;
  const std::string in = tiny(d);
  auto r = run_qtool({"quantize", in, "-o", in + "/q", "--scheme", "fp8-dynamic"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("inside"), std::string::npos) << r.err;
  ASSERT_EQ(run_qtool({"quantize", in, "-o", d.str("out")}).exit_code, 0);
  auto again = run_qtool({"quantize", in, "-o", d.str("out")});
  EXPECT_EQ(again.exit_code, 2);
  EXPECT_NE(again.err.find("--overwrite"), std::string::npos) << again.err;
  EXPECT_EQ(run_qtool({"quantize", in, "-o", d.str("out"), "--overwrite", "--scheme", "int8-dynamic"}).exit_code, 0);
  json cfg = json::parse(test::read_text(d.path() / "out/config.json"));
  EXPECT_EQ(cfg["quantization_config"]["format"], "int-quantized");
}

TEST(Cli, SplittingAFusedGroupWithIgnoreIsRefused) {
  test::TempDir d;
  const std::string in = tiny(d);
  auto r = run_qtool({"quantize", in, "-o", d.str("out"), "--ignore", "model.layers.0.self_attn.q_proj"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("vLLM fuses them"), std::string::npos) << r.err;
  auto ok = run_qtool({"quantize", in, "-o", d.str("out2"), "--ignore", "re:model\\.layers\\.0\\.self_attn\\.[qkv]_proj"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  json cfg = json::parse(test::read_text(d.path() / "out2/config.json"));
  const auto& ig = cfg["quantization_config"]["ignore"];
  EXPECT_NE(std::find(ig.begin(), ig.end(), "model.layers.0.self_attn.k_proj"), ig.end()) << ig.dump();
  auto typo = run_qtool({"quantize", in, "-o", d.str("out3"), "--ignore", "model.layers.9.mlp.up_proj"});
  EXPECT_EQ(typo.exit_code, 2);
  EXPECT_NE(typo.err.find("matches no Linear module"), std::string::npos) << typo.err;
}

TEST(Cli, NaNWeightIsRefusedNamingTheTensorAndNothingIsLeftBehind) {
  test::TempDir d;
  const std::string in = tiny(d);
  // Poke a NaN into the first element of a quantized weight (bf16 0x7FC0), in place.
  const std::string file = in + "/model.safetensors";
  uint64_t off = 0;
  {
    SafetensorsFile f = SafetensorsFile::open(file);
    const TensorView* t = f.find("model.layers.1.mlp.up_proj.weight");
    ASSERT_NE(t, nullptr);
    off = f.file_offset(*t);
  }
  {
    std::fstream s(file, std::ios::in | std::ios::out | std::ios::binary);
    s.seekp(static_cast<std::streamoff>(off));
    const uint16_t nan = 0x7FC0;
    s.write(reinterpret_cast<const char*>(&nan), 2);
  }
  auto r = run_qtool({"quantize", in, "-o", d.str("out")});
  EXPECT_EQ(r.exit_code, 6);
  EXPECT_NE(r.err.find("tensor 'model.layers.1.mlp.up_proj.weight': contains NaN at [0, 0]"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(d.path() / "out"));
  for (const auto& e : fs::directory_iterator(d.path()))
    EXPECT_EQ(e.path().filename().string().find("qtool-partial"), std::string::npos) << e.path();
  EXPECT_EQ(run_qtool({"quantize", in, "-o", d.str("out"), "--allow-nonfinite"}).exit_code, 0);
}

TEST(Cli, LegacyFp8NeedsAPerTensorScheme) {
  test::TempDir d;
  const std::string in = tiny(d);
  auto r = run_qtool({"quantize", in, "-o", d.str("out"), "--format", "legacy-fp8", "--scheme", "fp8-dynamic"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("per-tensor FP8"), std::string::npos) << r.err;
}

TEST(Cli, InspectNamesTheMissingPathAndTheBadFile) {
  test::TempDir d;
  auto r = run_qtool({"inspect", d.str("nope")});
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_NE(r.err.find(d.str("nope")), std::string::npos) << r.err;
  test::write_text(d.path() / "bad.safetensors", std::string("\x10\0\0\0\0\0\0\0{\"a\":1}", 15));
  auto b = run_qtool({"inspect", d.str("bad.safetensors")});
  EXPECT_EQ(b.exit_code, 3) << b.err;
  EXPECT_NE(b.err.find("bad.safetensors"), std::string::npos) << b.err;
}

TEST(Cli, InspectFindsAQuantizedWeightWithoutItsScale) {
  test::TempDir d;
  const std::string in = tiny(d);
  ASSERT_EQ(run_qtool({"quantize", in, "-o", d.str("out")}).exit_code, 0);
  // Rewrite the checkpoint without one weight_scale, with the Python-free writer: qtool itself.
  // Simplest: a config that claims the lm_head is quantized is a finding too.
  json cfg = json::parse(test::read_text(d.path() / "out/config.json"));
  cfg["quantization_config"]["ignore"] = json::array();
  test::write_text(d.path() / "out/config.json", cfg.dump(2));
  auto r = run_qtool({"inspect", d.str("out"), "--json"});
  ASSERT_EQ(r.exit_code, 0);
  json rep = json::parse(r.out);
  bool found = false;
  for (const auto& f : rep["findings"])
    if (f["where"] == "lm_head" && f["message"].get<std::string>().find("add it to ignore") != std::string::npos) found = true;
  EXPECT_TRUE(found) << rep["findings"].dump();
}

TEST(Cli, InspectTensorShowsStatsAndDequantizedValues) {
  test::TempDir d;
  const std::string in = tiny(d);
  ASSERT_EQ(run_qtool({"quantize", in, "-o", d.str("out"), "--scheme", "w4a16"}).exit_code, 0);
  auto r = run_qtool({"inspect", d.str("out"), "--tensor", "model.layers.0.mlp.up_proj.weight_packed", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["dtype"], "I32");
  ASSERT_TRUE(j.contains("dequantized_first")) << j.dump();
  // The dequantized values approximate the original bf16 weights within one INT4 step.
  auto o = run_qtool({"inspect", in, "--tensor", "model.layers.0.mlp.up_proj.weight", "--json"});
  json orig = json::parse(o.out);
  for (int k = 0; k < 8; ++k)
    EXPECT_NEAR(j["dequantized_first"][k].get<double>(), orig["stats"]["first"][k].get<double>(),
                orig["stats"]["absmax"].get<double>() / 7.5) << k;
  auto missing = run_qtool({"inspect", d.str("out"), "--tensor", "nope"});
  EXPECT_EQ(missing.exit_code, 4);
  EXPECT_NE(missing.err.find("'nope'"), std::string::npos) << missing.err;
}

TEST(Cli, AMistypedSchemeSuggestsTheClosestName) {
  auto r = run_qtool({"quantize", "m", "-o", "out", "--scheme", "fp8-dynamc"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_CONTAINS(r.err, "--scheme: unknown scheme 'fp8-dynamc'; did you mean 'fp8-dynamic'? (one of: fp8-dynamic, ");
  auto far = run_qtool({"quantize", "m", "-o", "out", "--scheme", "nonsense"});
  EXPECT_EQ(far.exit_code, 2);
  EXPECT_CONTAINS(far.err, "--scheme: unknown scheme 'nonsense' (one of: ");
}

TEST(Cli, TinyModelJsonCountsEveryParameter) {
  test::TempDir d;
  auto r = run_qtool({"tiny-model", d.str("m"), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  // Hand count for the defaults (hidden 128, intermediate 256, 2 layers, 4/2 heads of 32, vocab
  // 512): embed 512*128 + 2 * (q 128*128 + k 64*128 + v 64*128 + o 128*128 + 3 * 256*128 + two
  // norms 2*128) + final norm 128 + lm_head 512*128 = 426624; bf16: 2 bytes each.
  EXPECT_EQ(j.at("parameters"), 426624);
  EXPECT_EQ(j.at("tensor_bytes"), 2 * 426624);
  EXPECT_EQ(j.at("config").at("hidden_size"), 128);
  EXPECT_NE(std::find(j.at("files").begin(), j.at("files").end(), "tokenizer.json"), j.at("files").end());
}

TEST(Cli, InspectTensorsListsWhereEveryTensorLiesInEveryShard) {
  test::TempDir d;
  const std::string in = tiny(d);
  ASSERT_EQ(run_qtool({"quantize", in, "-o", d.str("out"), "--scheme", "int8-dynamic", "--max-shard-size", "200KB"})
                .exit_code, 0);
  auto r = run_qtool({"inspect", d.str("out"), "--tensors", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json rows = json::parse(r.out).at("tensors");
  // Independent reading of every shard's header (8-byte little-endian length, then JSON):
  // absolute offset = 8 + N + data_offsets[0], size = data_offsets[1] - data_offsets[0].
  std::map<std::string, json> want;
  for (const auto& e : fs::directory_iterator(d.path() / "out")) {
    if (e.path().extension() != ".safetensors") continue;
    const auto bytes = test::read_file(e.path());
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
    const json h = json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<long>(n));
    for (const auto& [name, v] : h.items()) {
      if (name == "__metadata__") continue;
      const uint64_t b = v["data_offsets"][0], end = v["data_offsets"][1];
      want[name] = {{"shard", e.path().filename().string()}, {"offset", 8 + n + b}, {"bytes", end - b},
                    {"dtype", v["dtype"]}, {"shape", v["shape"]}};
    }
  }
  ASSERT_GE(want.size(), 20u);
  ASSERT_EQ(rows.size(), want.size());
  for (const auto& row : rows) {
    const std::string name = row.at("name");
    ASSERT_TRUE(want.count(name)) << name;
    const json& w = want[name];
    EXPECT_EQ(row.at("shard"), w["shard"]) << name;
    EXPECT_EQ(row.at("offset"), w["offset"]) << name;
    EXPECT_EQ(row.at("bytes"), w["bytes"]) << name;
    EXPECT_EQ(row.at("dtype"), w["dtype"]) << name;
    EXPECT_EQ(row.at("shape"), w["shape"]) << name;
  }
  auto text = run_qtool({"inspect", d.str("out"), "--tensors"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_CONTAINS(text.out, "model.layers.0.mlp.up_proj.weight_scale");
  EXPECT_CONTAINS(text.out, "model-00001-of-");
}

}  // namespace
}  // namespace qt
