// Calibration shards (quantize --calib-shard K/N) and their exact merge (qtool stats merge,
// calib/stats_merge.h): merged statistics equal a single run's bit for bit, so the quantized
// checkpoint is byte-identical; every way of mixing up shards is refused naming the file.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "calib/stats_file.h"
#include "calib/stats_merge.h"
#include "formats/model_folder.h"
#include "formats/tiny_model.h"
#include "libquant/cpu_isa.h"
#include "libquant/error.h"
#include "libquant/kernels/gemm_onednn.h"
#include "tests/support/test_support.h"

namespace qt::calib {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;
using test::run_qtool;

template <typename F>
std::string error_of(F f) {
  try { f(); } catch (const InputError& e) { return e.what(); }
  return "";
}

TEST(StatsShard, SplitsTheSelectionIntoContiguousNearlyEqualParts) {
  const std::vector<std::vector<int32_t>> samples(10, std::vector<int32_t>{1, 2, 3});
  const StatsShard a = make_shard(0, 3, samples), b = make_shard(1, 3, samples), c = make_shard(2, 3, samples);
  EXPECT_EQ(a.first, 0);
  EXPECT_EQ(a.end, 3);
  EXPECT_EQ(b.first, 3);
  EXPECT_EQ(b.end, 6);
  EXPECT_EQ(c.first, 6);
  EXPECT_EQ(c.end, 10);
  EXPECT_EQ(a.selection_sha256, c.selection_sha256);
  EXPECT_EQ(a.selection_samples, 10);
  EXPECT_CONTAINS(error_of([&] { make_shard(0, 11, samples); }),
                  "--calib-shard: 10 samples cannot be split 11 ways (a shard would be empty)");
  // The selection hash sees every id and every boundary.
  EXPECT_NE(sample_selection_sha256({{1, 2}, {3}}), sample_selection_sha256({{1}, {2, 3}}));
}

TEST(StatsShard, ParsesKSlashNAndRefusesAnythingElse) {
  EXPECT_EQ(parse_shard_spec("0/8"), (std::pair<int64_t, int64_t>{0, 8}));
  EXPECT_EQ(parse_shard_spec("7/8"), (std::pair<int64_t, int64_t>{7, 8}));
  for (const char* bad : {"8/8", "1", "/8", "1/", "-1/8", "1/0", "a/b", "1/8/9", "12345678901/99999999999"})
    EXPECT_CONTAINS(error_of([&] { parse_shard_spec(bad); }), std::string("--calib-shard '") + bad +
                                                                  "': expected K/N with 0 <= K < N (e.g. 0/8)");
}

class ShardedCalibration : public ::testing::Test {
 protected:
  void SetUp() override {
    TinyModelOptions o;
    o.seed = 11;
    write_tiny_model(d.str("m"), o);
  }
  // quantize --calib-shard K/N; returns its stats file.
  std::string shard(int k, int n, const std::vector<std::string>& extra = {}) {
    const std::string f = d.str("s" + std::to_string(k) + "of" + std::to_string(n) + std::to_string(extra.size()) + ".zst");
    std::vector<std::string> args = {"quantize", d.str("m"), "--scheme", "fp8-static", "--num-samples", "7", "--seq-len", "32",
                                     "--calib-shard", std::to_string(k) + "/" + std::to_string(n), "--save-stats", f};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = run_qtool(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return f;
  }
  test::TempDir d;
};

TEST_F(ShardedCalibration, MergedShardsGiveTheSingleRunsStatisticsAndAByteIdenticalCheckpoint) {
  // The single run.
  auto one = run_qtool({"quantize", d.str("m"), "-o", d.str("one"), "--scheme", "int8-static", "--kv-cache", "fp8",
                        "--smoothquant", "--num-samples", "7", "--seq-len", "32", "--save-stats", d.str("all.zst")});
  ASSERT_EQ(one.exit_code, 0) << one.err;
  // Three shards, merged in another order.
  const std::string s0 = shard(0, 3), s1 = shard(1, 3), s2 = shard(2, 3);
  auto m = run_qtool({"stats", "merge", s2, s0, s1, "-o", d.str("merged.zst"), "--json"});
  ASSERT_EQ(m.exit_code, 0) << m.err;
  const json mj = json::parse(m.out);
  EXPECT_EQ(mj["shards"], 3);
  EXPECT_EQ(mj["samples"], 7);

  const ModelFolder model = ModelFolder::open(d.str("m"));
  const std::string fp = model_fingerprint(model);
  StatsProvenance pa, pm;
  const ActivationStats a = load_stats(d.str("all.zst"), fp, &pa), b = load_stats(d.str("merged.zst"), fp, &pm);
  EXPECT_EQ(a.input_absmax, b.input_absmax);
  EXPECT_EQ(a.k_absmax, b.k_absmax);
  EXPECT_EQ(a.v_absmax, b.v_absmax);
  EXPECT_EQ(a.channel_min, b.channel_min);
  EXPECT_EQ(a.channel_max, b.channel_max);
  EXPECT_EQ(pa.num_samples, pm.num_samples);
  EXPECT_EQ(pa.tokens, pm.tokens);
  EXPECT_EQ(pa.data_sha256, pm.data_sha256);

  auto two = run_qtool({"quantize", d.str("m"), "-o", d.str("two"), "--scheme", "int8-static", "--kv-cache", "fp8",
                        "--smoothquant", "--stats", d.str("merged.zst")});
  ASSERT_EQ(two.exit_code, 0) << two.err;
  for (const auto& e : fs::directory_iterator(d.path() / "one")) {
    const std::string n = e.path().filename().string();
    if (n == "qtool_manifest.json") continue;  // records the command line
    EXPECT_TRUE(test::read_file(e.path()) == test::read_file(d.path() / "two" / n)) << n << " differs";
  }

  // The merge left to the quantize: --stats repeated with the shard files (in any order) writes the
  // same checkpoint.
  auto three = run_qtool({"quantize", d.str("m"), "-o", d.str("three"), "--scheme", "int8-static", "--kv-cache", "fp8",
                          "--smoothquant", "--stats", s1, "--stats", s2, "--stats", s0});
  ASSERT_EQ(three.exit_code, 0) << three.err;
  EXPECT_CONTAINS(three.err, "calibration: merged 3 shard files (7 samples x 32 tokens");
  for (const auto& e : fs::directory_iterator(d.path() / "one")) {
    const std::string n = e.path().filename().string();
    if (n == "qtool_manifest.json") continue;
    EXPECT_TRUE(test::read_file(e.path()) == test::read_file(d.path() / "three" / n)) << n << " differs";
  }
  const json manifest = json::parse(test::read_file(d.path() / "three" / "qtool_manifest.json"));
  EXPECT_EQ(manifest["calibration"]["statistics"], json({s1, s2, s0}));
  EXPECT_EQ(manifest["calibration"]["samples"], 7);
}

TEST_F(ShardedCalibration, ShardsCalibrateWithTheRunsPrecisionAndRecordIt) {
  // --calib-precision bf16 applies to a shard as to a single run: the merged shards equal the
  // single bf16 run's statistics bit for bit (they differ from f32's), and record the precision.
  auto one = run_qtool({"quantize", d.str("m"), "--scheme", "fp8-static", "--num-samples", "7", "--seq-len", "32",
                        "--calib-precision", "bf16", "--calib-shard", "0/1", "--save-stats", d.str("bf16-all.zst")});
  ASSERT_EQ(one.exit_code, 0) << one.err;
  const std::string s0 = shard(0, 2, {"--calib-precision", "bf16"}), s1 = shard(1, 2, {"--calib-precision", "bf16"});
  const std::string f0 = shard(0, 2), f1 = shard(1, 2);
  auto m = run_qtool({"stats", "merge", s0, s1, "-o", d.str("bf16.zst")});
  ASSERT_EQ(m.exit_code, 0) << m.err;
  m = run_qtool({"stats", "merge", f0, f1, "-o", d.str("f32.zst")});
  ASSERT_EQ(m.exit_code, 0) << m.err;
  const std::string fp = model_fingerprint(ModelFolder::open(d.str("m")));
  StatsProvenance pb, pf;
  const ActivationStats all = merge_stats_files({d.str("bf16-all.zst")}, fp).stats;
  const ActivationStats b = load_stats(d.str("bf16.zst"), fp, &pb), f = load_stats(d.str("f32.zst"), fp, &pf);
  EXPECT_EQ(b.input_absmax, all.input_absmax);
  EXPECT_NE(b.input_absmax, f.input_absmax);
  EXPECT_EQ(pb.calib_precision, "bf16");
  EXPECT_EQ(pf.calib_precision, "f32");
}

// Shards of one selection at two precisions would mix f32 and bf16 maxima: refused. bf16 shards
// record whose kernels computed them (stats_file.h calib_kernels), and the merge keeps every id.
TEST_F(ShardedCalibration, ShardsAtAnotherPrecisionAreRefusedAndBf16ShardsKeepTheirKernels) {
  const std::string b0 = shard(0, 2, {"--calib-precision", "bf16"}), f1 = shard(1, 2);
  auto m = run_qtool({"stats", "merge", b0, f1, "-o", d.str("mixed.zst")});
  EXPECT_EQ(m.exit_code, 2) << m.err;
  EXPECT_CONTAINS(m.err, f1 + ": calibrated at another --calib-precision than " + b0 +
                             " (its statistics would mix precisions) (expected bf16, got f32)");
  EXPECT_FALSE(fs::exists(d.path() / "mixed.zst"));

  const std::string fp = model_fingerprint(ModelFolder::open(d.str("m")));
  const std::string b1 = shard(1, 2, {"--calib-precision", "bf16"});
  m = run_qtool({"stats", "merge", b0, b1, "-o", d.str("bf16.zst")});
  ASSERT_EQ(m.exit_code, 0) << m.err;
  StatsProvenance p;
  load_stats(d.str("bf16.zst"), fp, &p);
  EXPECT_EQ(p.calib_kernels, bf16_kernels_id());  // this CPU's default bf16 kernels, in each shard
  if (!kernels::onednn::available()) return;  // the mixed case needs oneDNN
  const char* saved = std::getenv("QTOOL_BF16_GEMM");
  const std::string keep = saved ? saved : "";
  ::setenv("QTOOL_BF16_GEMM", "own", 1);
  const std::string o0 = shard(0, 2, {"--calib-precision", "bf16", "--seed", "0"});
  ::setenv("QTOOL_BF16_GEMM", "onednn", 1);
  const std::string o1 = shard(1, 2, {"--calib-precision", "bf16", "--seed", "0"});
  if (saved) ::setenv("QTOOL_BF16_GEMM", keep.c_str(), 1); else ::unsetenv("QTOOL_BF16_GEMM");
  m = run_qtool({"stats", "merge", o1, o0, "-o", d.str("both.zst")});
  ASSERT_EQ(m.exit_code, 0) << m.err;
  load_stats(d.str("both.zst"), fp, &p);
  EXPECT_EQ(p.calib_kernels, "own,onednn-" + kernels::onednn::impl_name());  // in shard order
}

TEST_F(ShardedCalibration, QuantizeWithSeveralStatsFilesRefusesWhatStatsMergeRefuses) {
  const std::string s0 = shard(0, 3), s1 = shard(1, 3);
  auto r = run_qtool({"quantize", d.str("m"), "-o", d.str("q"), "--scheme", "fp8-static", "--stats", s0, "--stats", s1});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_CONTAINS(r.err, "shard 2/3 is missing (2 of 3 shard files given)");
  EXPECT_FALSE(fs::exists(d.path() / "q"));
  // Shards of another model than the one quantized.
  TinyModelOptions o;
  o.seed = 12;
  write_tiny_model(d.str("m2"), o);
  const std::string s2 = shard(2, 3);
  r = run_qtool({"quantize", d.str("m2"), "-o", d.str("q"), "--scheme", "fp8-static", "--stats", s0, "--stats", s1,
                 "--stats", s2});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_CONTAINS(r.err, "different model");
  EXPECT_FALSE(fs::exists(d.path() / "q"));
}

TEST_F(ShardedCalibration, MergeRefusesMissingOverlappingForeignAndUnshardedFiles) {
  const std::string s0 = shard(0, 3), s1 = shard(1, 3), s2 = shard(2, 3);
  auto r = run_qtool({"stats", "merge", s0, s1, "-o", d.str("x.zst")});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_CONTAINS(r.err, "shard 2/3 is missing (2 of 3 shard files given)");
  r = run_qtool({"stats", "merge", s0, s1, s2, s1, "-o", d.str("x.zst")});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_CONTAINS(r.err, "shard 1/3 is also in");
  // Another selection: another seed (same model, same text).
  const std::string other = shard(2, 3, {"--seed", "1"});
  r = run_qtool({"stats", "merge", s0, s1, other, "-o", d.str("x.zst")});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_CONTAINS(r.err, "another sample selection than");
  EXPECT_CONTAINS(r.err, "(seed differs)");
  // Another N.
  const std::string half = shard(1, 2);
  r = run_qtool({"stats", "merge", s0, half, "-o", d.str("x.zst")});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_CONTAINS(r.err, "(shard count N differs)");
  // A complete statistics file is not a shard.
  auto full = run_qtool({"quantize", d.str("m"), "-o", d.str("q"), "--scheme", "fp8-static", "--num-samples", "7",
                         "--seq-len", "32", "--save-stats", d.str("all.zst")});
  ASSERT_EQ(full.exit_code, 0) << full.err;
  r = run_qtool({"stats", "merge", s0, d.str("all.zst"), "-o", d.str("x.zst")});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_CONTAINS(r.err, "not a calibration shard (saved without --calib-shard)");
  // Another model.
  TinyModelOptions o;
  o.seed = 12;
  write_tiny_model(d.str("m2"), o);
  auto foreign = run_qtool({"quantize", d.str("m2"), "--scheme", "fp8-static", "--num-samples", "7", "--seq-len", "32",
                            "--calib-shard", "2/3", "--save-stats", d.str("f.zst")});
  ASSERT_EQ(foreign.exit_code, 0) << foreign.err;
  r = run_qtool({"stats", "merge", s0, s1, d.str("f.zst"), "-o", d.str("x.zst")});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_CONTAINS(r.err, "statistics were gathered on a different model (fingerprint mismatch)");
  EXPECT_FALSE(fs::exists(d.path() / "x.zst"));
}

TEST_F(ShardedCalibration, ShardRunRefusesTheMovingAverageObserverAndAMissingStatsFile) {
  auto r = run_qtool({"quantize", d.str("m"), "--scheme", "fp8-static", "--calib-shard", "0/2", "--observer", "minmax",
                      "--save-stats", d.str("s.zst")});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_CONTAINS(r.err, "--calib-shard: the moving-average observer 'minmax' depends on every sample before it, so its "
                         "shards cannot be merged; use static_minmax");
  r = run_qtool({"quantize", d.str("m"), "--scheme", "fp8-static", "--calib-shard", "0/2"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_CONTAINS(r.err, "--calib-shard needs --save-stats FILE (the shard's statistics)");
  r = run_qtool({"quantize", d.str("m"), "--scheme", "fp8-static"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_CONTAINS(r.err, "--output is required (only a --calib-shard run writes no output folder)");
}

}  // namespace
}  // namespace qt::calib
