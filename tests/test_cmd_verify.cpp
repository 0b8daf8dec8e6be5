// `qtool verify` end to end: exit codes (0 pass, 1 gate failed, 2 usage, 4 missing), the --json
// report, --list-kernels, --token-ids / --text-file, the throughput table and thread-count
// invariance. Inputs are made with `qtool tiny-model` and `qtool quantize`.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "formats/safetensors.h"
#include "tests/support/test_support.h"

namespace qt {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;
using test::run_qtool;

// A tiny model and its fp8-dynamic / int8-dynamic checkpoints, made once per process.
struct Inputs {
  test::TempDir dir;
  std::string tiny, fp8, int8;
  Inputs() : tiny(dir.str("tiny")), fp8(dir.str("fp8")), int8(dir.str("int8")) {
    EXPECT_EQ(run_qtool({"tiny-model", tiny}).exit_code, 0);
    EXPECT_EQ(run_qtool({"-q", "quantize", tiny, "-o", fp8, "--scheme", "fp8-dynamic"}).exit_code, 0);
    EXPECT_EQ(run_qtool({"-q", "quantize", tiny, "-o", int8, "--scheme", "int8-dynamic"}).exit_code, 0);
  }
  static Inputs& get() {
    static Inputs i;
    return i;
  }
};

// The tiny model is untrained (near-uniform next-token distribution), so its top-1 choices are
// near-ties; the top-1 gate is for trained models and is off in these runs.
const std::vector<std::string> kFast = {"--no-bench", "--min-top1", "0"};

std::vector<std::string> args(std::vector<std::string> a, const std::vector<std::string>& extra = kFast) {
  a.insert(a.begin(), "verify");
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

TEST(CmdVerify, ExitsZeroWhenEveryGatePassesAndOneWhenOneFails) {
  Inputs& in = Inputs::get();
  auto ok = run_qtool(args({in.fp8, "--reference", in.tiny}));
  EXPECT_EQ(ok.exit_code, 0) << ok.out << ok.err;
  EXPECT_NE(ok.out.find("result      PASS"), std::string::npos) << ok.out;
  EXPECT_NE(ok.out.find("worst 5 by weight SQNR"), std::string::npos) << ok.out;
  EXPECT_NE(ok.out.find("KL mean"), std::string::npos) << ok.out;
  EXPECT_NE(ok.err.find("layer check 14/14"), std::string::npos) << "progress on stderr: " << ok.err;

  // FP8 weights have ~31-35 dB SQNR: a 60 dB gate must fail, naming the worst layer.
  auto bad = run_qtool(args({in.fp8, "--reference", in.tiny, "--min-sqnr", "60"}));
  EXPECT_EQ(bad.exit_code, 1) << bad.out << bad.err;
  EXPECT_NE(bad.out.find("result      FAIL: 14 check(s) failed"), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("weight SQNR"), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("with user overrides"), std::string::npos) << bad.out;

  auto kl = run_qtool(args({in.fp8, "--reference", in.tiny, "--max-kl", "1e-9"}));
  EXPECT_EQ(kl.exit_code, 1);
  EXPECT_NE(kl.out.find("model: mean KL"), std::string::npos) << kl.out;
}

TEST(CmdVerify, ProgressLinesCountUpInOrderAndTheModelRunsShowAnEta) {
  const auto& in = Inputs::get();
  auto r = run_qtool(args({in.fp8, "--reference", in.tiny}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // The tiny model has 14 Linear layers: "layer check k/14" for k = 1..14, in that order.
  size_t pos = 0;
  for (int k = 1; k <= 14; ++k) {
    const std::string want = "layer check " + std::to_string(k) + "/14 ";
    const size_t at = r.err.find(want, pos);
    ASSERT_NE(at, std::string::npos) << want << " missing or out of order in:\n" << r.err;
    pos = at + want.size();
  }
  EXPECT_EQ(r.err.find("(text X)"), std::string::npos) << r.err;
  EXPECT_CONTAINS(r.err, "(text activations)");
  // 2 layers x (reference + quantized run) = 4 steps; every step but the last has an ETA.
  EXPECT_CONTAINS(r.err, "model: reference run, layer 1/2, ");
  const size_t first = r.err.find("model: reference run, layer 1/2, ");
  EXPECT_NE(r.err.find(", ETA ", first), std::string::npos) << r.err;
  const size_t last = r.err.find("model: quantized run, layer 2/2, ");
  ASSERT_NE(last, std::string::npos) << r.err;
  const std::string last_line = r.err.substr(last, r.err.find('\n', last) - last);
  EXPECT_EQ(last_line.find("ETA"), std::string::npos) << last_line;
}

TEST(CmdVerify, CorruptedScaleExitsOne) {
  Inputs& in = Inputs::get();
  test::TempDir d;
  const std::string bad = d.str("bad");
  fs::copy(in.int8, bad, fs::copy_options::recursive);
  const std::string file = bad + "/model.safetensors";
  uint64_t off = 0;
  {
    SafetensorsFile f = SafetensorsFile::open(file);
    off = f.file_offset(*f.find("model.layers.0.mlp.gate_proj.weight_scale"));
  }
  std::vector<uint8_t> bytes = test::read_file(file);
  bytes[off + 1] = static_cast<uint8_t>(bytes[off + 1] + 1);  // BF16 scale of row 0: exponent + 2 (x4)
  test::write_file(file, bytes);
  auto r = run_qtool(args({bad, "--reference", in.tiny}));
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("model.layers.0.mlp.gate_proj"), std::string::npos) << r.out;
}

TEST(CmdVerify, JsonReportParsesAndHoldsEverySection) {
  Inputs& in = Inputs::get();
  auto r = run_qtool(args({in.int8, "--reference", in.tiny, "--json"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["pass"], true);
  EXPECT_EQ(j["quant_method"], "compressed-tensors");
  ASSERT_EQ(j["layers"].size(), 14u);
  const json& L = j["layers"][0];
  for (const char* k : {"module", "N", "K", "descriptor", "kernel", "gates", "weight", "activations", "gemm_err", "act_err", "agreement", "pass"})
    EXPECT_TRUE(L.contains(k)) << k;
  EXPECT_GT(L["weight"]["sqnr_db"].get<double>(), 20.0);
  EXPECT_EQ(L["agreement"][0]["bit_exact"], true);
  EXPECT_EQ(j["model"]["ran"], true);
  EXPECT_EQ(j["model"]["tokens"], 512);
  EXPECT_GT(j["model"]["kl_mean"].get<double>(), 0.0);
  EXPECT_EQ(j["registry"].size(), 3u);
  EXPECT_TRUE(j["bench"]["rows"].empty()) << "--no-bench";
}

TEST(CmdVerify, WithoutAReferenceChecksStructureAndActivationQuantizationOnly) {
  Inputs& in = Inputs::get();
  auto r = run_qtool(args({in.fp8, "--json"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_TRUE(j["reference_dir"].is_null());
  EXPECT_TRUE(j["layers"][0]["weight"].is_null());
  EXPECT_GT(j["layers"][0]["act_err"].get<double>(), 0.0);
  EXPECT_EQ(j["model"]["gated"], false);
  EXPECT_EQ(j["model"]["against"], "dequantized weights without activation quantization");
}

TEST(CmdVerify, SmoothQuantIsUndoneAgainstTheReferenceFromTheNormsAndTheFactorsFile) {
  const Inputs& in = Inputs::get();
  test::TempDir d;
  ASSERT_EQ(run_qtool({"-q", "quantize", in.tiny, "-o", d.str("sq"), "--scheme", "int8-dynamic", "--smoothquant",
                       "--num-samples", "4", "--seq-len", "32"}).exit_code, 0);
  auto layers = [](const json& j) {
    std::map<std::string, json> m;
    for (const auto& L : j["layers"]) m[L["module"]] = L;
    return m;
  };
  auto r = run_qtool(args({d.str("sq"), "--reference", in.tiny, "--json"}));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["smoothed_layers"].size(), 6u);  // 4 norms seen against the reference + 2 up_proj from the file
  const auto plain = layers(json::parse(run_qtool(args({in.int8, "--reference", in.tiny, "--json"})).out));
  // Each smoothed layer, undone, is as close to the original as INT8 allows: SQNR in the range
  // of the unsmoothed checkpoint's (not the ~0 dB a missed factor gives).
  for (const auto& [name, L] : layers(j))
    EXPECT_GT(L["weight"]["sqnr_db"].get<double>(), plain.at(name)["weight"]["sqnr_db"].get<double>() - 6.0) << name;

  // A failing INT8 checkpoint is told to try SmoothQuant, unless it is smoothed already.
  auto strict = run_qtool(args({in.int8, "--reference", in.tiny, "--max-kl", "0", "--json"}));
  EXPECT_EQ(strict.exit_code, 1);
  ASSERT_EQ(json::parse(strict.out)["hints"].size(), 1u) << strict.out;
  EXPECT_NE(json::parse(strict.out)["hints"][0].get<std::string>().find("--smoothquant"), std::string::npos);
  auto strict_sq = run_qtool(args({d.str("sq"), "--reference", in.tiny, "--max-kl", "0", "--json"}));
  EXPECT_EQ(strict_sq.exit_code, 1);
  EXPECT_EQ(json::parse(strict_sq.out)["hints"].size(), 0u) << strict_sq.out;

  // Without the factors file the norms are still seen, but up_proj -> down_proj is not.
  fs::remove(d.path() / "sq/qtool_smoothing.json");
  auto n = run_qtool(args({d.str("sq"), "--reference", in.tiny, "--json"}));
  EXPECT_EQ(json::parse(n.out)["smoothed_layers"].size(), 4u) << n.out;
  // A damaged factors file is refused naming it.
  test::write_text(d.path() / "sq/qtool_smoothing.json", "{\"format\": \"qtool-smoothing-factors\", \"mappings\": "
                                                         "[{\"smooth\": \"model.layers.0.mlp.up_proj\", \"balance\": "
                                                         "[\"model.layers.0.mlp.down_proj\"], \"factors\": [1, 2]}]}");
  auto bad = run_qtool(args({d.str("sq"), "--reference", in.tiny}));
  EXPECT_EQ(bad.exit_code, 3) << bad.err;
  EXPECT_NE(bad.err.find("qtool_smoothing.json: tensor 'model.layers.0.mlp.up_proj': smoothing factors do not match"),
            std::string::npos) << bad.err;
  test::write_text(d.path() / "sq/qtool_smoothing.json", "{\"mappings\": []}");
  auto unknown = run_qtool(args({d.str("sq"), "--reference", in.tiny}));
  EXPECT_EQ(unknown.exit_code, 3) << unknown.err;
  EXPECT_NE(unknown.err.find("not a qtool smoothing factors file"), std::string::npos) << unknown.err;
}

TEST(CmdVerify, ListKernelsNamesEveryCpuKernelWithItsReason) {
  Inputs& in = Inputs::get();
  auto r = run_qtool({"verify", in.fp8, "--list-kernels"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* k : {"cpu_fast", "cpu_portable", "cpu_ref"}) EXPECT_NE(r.out.find(k), std::string::npos) << k;
  EXPECT_NE(r.out.find("CHOSEN"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("not chosen: lower priority"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("4 descriptor group(s)"), std::string::npos) << r.out;

  auto d = run_qtool({"verify", in.fp8, "--list-kernels", "--disable-kernel", "cpu_fast", "--json"});
  ASSERT_EQ(d.exit_code, 0) << d.err;
  const json j = json::parse(d.out);
  ASSERT_EQ(j["kernels"].size(), 4u);
  EXPECT_EQ(j["kernels"][0]["chosen"], "cpu_portable");
  EXPECT_EQ(j["kernels"][0]["candidates"][0]["reason"], "disabled");

  // The heading names the CPU kernels' ISA path; QTOOL_ISA caps it (the child inherits it).
  ::setenv("QTOOL_ISA", "scalar", 1);
  auto s = run_qtool({"verify", in.fp8, "--list-kernels"});
  auto sj = run_qtool({"verify", in.fp8, "--list-kernels", "--json"});
  ::unsetenv("QTOOL_ISA");
  ASSERT_EQ(s.exit_code, 0) << s.err;
  EXPECT_NE(s.out.find("kernels (highest priority first; CPU path scalar):"), std::string::npos) << s.out;
  ASSERT_EQ(sj.exit_code, 0) << sj.err;
  EXPECT_EQ(json::parse(sj.out)["cpu_isa"], "scalar");
}

TEST(CmdVerify, BadInputsGiveTheDocumentedExitCodes) {
  Inputs& in = Inputs::get();
  test::TempDir d;
  auto missing = run_qtool({"verify", d.str("nope")});
  EXPECT_EQ(missing.exit_code, 4) << missing.err;
  EXPECT_NE(missing.err.find("nope"), std::string::npos) << missing.err;
  EXPECT_EQ(run_qtool({"verify", in.fp8, "--reference", d.str("nope")}).exit_code, 4);
  auto unq = run_qtool({"verify", in.tiny});
  EXPECT_EQ(unq.exit_code, 2);
  EXPECT_NE(unq.err.find("not quantized"), std::string::npos) << unq.err;
  EXPECT_EQ(run_qtool({"verify"}).exit_code, 2);
  EXPECT_EQ(run_qtool({"verify", in.fp8, "--token-ids", d.str("nope.json")}).exit_code, 4);
  test::write_text(d.path() / "bad.json", "[1, 2, \"x\"]");
  EXPECT_EQ(run_qtool({"verify", in.fp8, "--token-ids", d.str("bad.json")}).exit_code, 3);
  test::write_text(d.path() / "big.json", "[1, 2, 512]");  // the tiny vocabulary has 512 entries
  auto big = run_qtool({"verify", in.fp8, "--token-ids", d.str("big.json"), "--no-bench"});
  EXPECT_EQ(big.exit_code, 6) << big.err;
  EXPECT_NE(big.err.find("big.json"), std::string::npos) << big.err;
}

TEST(CmdVerify, TokenIdsFromQtoolTokenizeAndTextFilesFeedTheModelLevel) {
  Inputs& in = Inputs::get();
  test::TempDir d;
  test::write_text(d.path() / "t.txt", "Rain fell on the roofs of the village for three days, and the river rose to the bridge.");
  auto tok = run_qtool({"tokenize", in.fp8, "--file", d.str("t.txt")});
  ASSERT_EQ(tok.exit_code, 0) << tok.err;
  test::write_text(d.path() / "ids.json", tok.out);
  const json ids = json::parse(tok.out);

  auto a = run_qtool(args({in.fp8, "--reference", in.tiny, "--json", "--token-ids", d.str("ids.json"), "--seq-len", "13"}));
  ASSERT_EQ(a.exit_code, 0) << a.err;
  const json ja = json::parse(a.out);
  EXPECT_EQ(ja["model"]["text_source"], d.str("ids.json"));
  // 65 ids (BOS + 64) in samples of 13; a 1-token remainder would be dropped.
  ASSERT_EQ(ids["count"], 65);
  EXPECT_EQ(ja["model"]["tokens"], 65);
  EXPECT_EQ(ja["model"]["samples"], 5);

  auto b = run_qtool(args({in.fp8, "--reference", in.tiny, "--json", "--text-file", d.str("t.txt"), "--seq-len", "16"}));
  ASSERT_EQ(b.exit_code, 0) << b.err;
  const json jb = json::parse(b.out);
  EXPECT_EQ(jb["model"]["text_source"], d.str("t.txt"));
  // Chunks of 16 each start with BOS: same text, one extra BOS per extra chunk.
  EXPECT_GE(jb["model"]["tokens"].get<int64_t>(), ids["count"].get<int64_t>());
  EXPECT_GT(jb["model"]["samples"].get<int64_t>(), 1);
}

TEST(CmdVerify, ThroughputTableCoversEveryDistinctShapeAtThreeTokenCounts) {
  Inputs& in = Inputs::get();
  auto r = run_qtool({"verify", in.int8, "--json", "--no-model", "--bench-seconds", "0.002", "-j", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  ASSERT_EQ(j["bench"]["rows"].size(), 4u * 3u) << "4 distinct shapes x M in {1, 16, 128}";
  EXPECT_EQ(j["bench"]["threads"], 1);
  for (const auto& row : j["bench"]["rows"]) {
    EXPECT_GT(row["kernel_gflops_best"].get<double>(), 0.0);
    EXPECT_GT(row["eigen_f32_gflops_best"].get<double>(), 0.0);
    EXPECT_EQ(row["kernel"], "cpu_fast");
  }
  auto text = run_qtool({"verify", in.int8, "--no-model", "--bench-seconds", "0.002"});
  EXPECT_NE(text.out.find("throughput"), std::string::npos) << text.out;
}

TEST(CmdVerify, ResultsDoNotDependOnTheThreadCount) {
  Inputs& in = Inputs::get();
  auto a = run_qtool(args({in.fp8, "--reference", in.tiny, "--json", "-j", "1"}));
  auto b = run_qtool(args({in.fp8, "--reference", in.tiny, "--json", "-j", "2"}));
  ASSERT_EQ(a.exit_code, 0);
  ASSERT_EQ(b.exit_code, 0);
  json ja = json::parse(a.out), jb = json::parse(b.out);
  for (json* j : {&ja, &jb}) {
    j->erase("seconds");
    (*j)["model"].erase("seconds");
  }
  EXPECT_EQ(ja, jb);
}

}  // namespace
}  // namespace qt

namespace qt {
namespace {
TEST(CmdVerify, DefaultGatesSkipTopOneForANearUniformReferenceAndSaySo) {
  // No --min-top1 override: the random tiny model's perplexity (~517) exceeds half its vocabulary
  // (512), so top-1 agreement is reported but not gated, and a note says why.
  test::TempDir d;
  ASSERT_EQ(test::run_qtool({"tiny-model", d.str("m")}).exit_code, 0);
  ASSERT_EQ(test::run_qtool({"-q", "quantize", d.str("m"), "-o", d.str("q"), "--scheme", "fp8-dynamic"}).exit_code, 0);
  auto r = test::run_qtool({"verify", d.str("q"), "--reference", d.str("m"), "--no-bench", "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.out.substr(0, 2000);
  nlohmann::json j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["model"]["notes"].size(), 1u) << j["model"].dump();
  EXPECT_NE(j["model"]["notes"][0].get<std::string>().find("near-uniform"), std::string::npos);
}
}  // namespace
}  // namespace qt
