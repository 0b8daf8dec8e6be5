// Calibration data loading, statistics files and the calibrate() entry point.
#include <gtest/gtest.h>
#include <zstd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "calib/stats_file.h"
#include "calib/calibrate.h"
#include "calib/dataset.h"
#include "calib/tokenizer/tokenizer.h"
#include "formats/model_folder.h"
#include "formats/tiny_model.h"
#include "libquant/error.h"
#include "tests/support/test_support.h"

namespace qt::calib {
namespace {
namespace fs = std::filesystem;

std::string zstd(const std::string& s) {
  std::string out(ZSTD_compressBound(s.size()), '\0');
  out.resize(ZSTD_compress(out.data(), out.size(), s.data(), s.size(), 3));
  return out;
}

template <typename F>
std::string error_of(F f) {
  try { f(); } catch (const InputError& e) { return e.what(); }
  return "";
}

TEST(CalibrationText, PlainTextSplitsDocumentsOnBlankLines) {
  test::TempDir d;
  test::write_text(d.path() / "a.txt", "first line\nsecond line\n\n\n  \nnext doc\r\n\nlast");
  CalibrationText t = load_calibration_text(d.str("a.txt"));
  ASSERT_EQ(t.documents.size(), 3u);
  EXPECT_EQ(t.documents[0], "first line\nsecond line");
  EXPECT_EQ(t.documents[1], "next doc");
  EXPECT_EQ(t.sha256.size(), 64u);
}

TEST(CalibrationText, JsonLinesTakesTextOrRendersChatMessages) {
  test::TempDir d;
  test::write_text(d.path() / "a.jsonl",
                   "{\"text\": \"hello world\"}\n\n{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"},"
                   " {\"role\": \"assistant\", \"content\": \"hello\"}]}\n");
  CalibrationText t = load_calibration_text(d.str("a.jsonl"));
  ASSERT_EQ(t.documents.size(), 2u);
  EXPECT_EQ(t.documents[0], "hello world");
  EXPECT_EQ(t.documents[1], "user: hi\nassistant: hello\n");
}

TEST(CalibrationText, ZstdCompressedFilesGiveTheSameDocuments) {
  test::TempDir d;
  const std::string body = "{\"text\": \"a\"}\n{\"text\": \"b\"}\n";
  test::write_text(d.path() / "a.jsonl", body);
  test::write_text(d.path() / "a.jsonl.zst", zstd(body));
  EXPECT_EQ(load_calibration_text(d.str("a.jsonl.zst")).documents, load_calibration_text(d.str("a.jsonl")).documents);
  EXPECT_EQ(load_calibration_text(d.str("a.jsonl.zst")).sha256, load_calibration_text(d.str("a.jsonl")).sha256);
}

TEST(CalibrationText, BadInputNamesTheFileAndLine) {
  test::TempDir d;
  test::write_text(d.path() / "a.jsonl", "{\"text\": \"ok\"}\n{\"txt\": 1}\n");
  EXPECT_NE(error_of([&] { load_calibration_text(d.str("a.jsonl")); }).find("a.jsonl:2: a JSON Lines record needs"), std::string::npos);
  test::write_text(d.path() / "b.jsonl", "{not json\n");
  EXPECT_NE(error_of([&] { load_calibration_text(d.str("b.jsonl")); }).find("b.jsonl:1: invalid JSON"), std::string::npos);
  test::write_text(d.path() / "c.txt.zst", "not zstd at all");
  EXPECT_NE(error_of([&] { load_calibration_text(d.str("c.txt.zst")); }).find("not a valid zstd stream"), std::string::npos);
  test::write_text(d.path() / "e.txt", "\n\n   \n");
  EXPECT_NE(error_of([&] { load_calibration_text(d.str("e.txt")); }).find("holds no text"), std::string::npos);
  EXPECT_NE(error_of([&] { load_calibration_text(d.str("missing.txt")); }).find("missing.txt"), std::string::npos);
}

TEST(CalibrationText, BuiltInSetIsVaried) {
  CalibrationText t = builtin_calibration_text();
  EXPECT_GE(t.documents.size(), 20u);
  std::string all;
  for (const auto& doc : t.documents) all += doc;
  for (const char* must : {"def merge_sorted", "SELECT", "User:", "x = 6", "\"Are you sure"})
    EXPECT_NE(all.find(must), std::string::npos) << must;
}

class CalibrateTiny : public ::testing::Test {
 protected:
  void SetUp() override {
    TinyModelOptions o;
    o.seed = 3;
    write_tiny_model(dir.str("m"), o);
  }
  test::TempDir dir;
};

TEST_F(CalibrateTiny, SamplesAreDeterministicChunksStartingWithTheSpecialPrefix) {
  const Tokenizer tok = Tokenizer::from_dir(dir.str("m"));
  const CalibrationText text = builtin_calibration_text();
  auto a = make_samples(tok, text, 8, 32, 7), b = make_samples(tok, text, 8, 32, 7), c = make_samples(tok, text, 8, 32, 8);
  ASSERT_EQ(a.size(), 8u);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  for (const auto& s : a) {
    EXPECT_LE(s.size(), 32u);
    EXPECT_GE(s.size(), 16u);
    ASSERT_GE(s.size(), tok.special_prefix().size());
    EXPECT_TRUE(std::equal(tok.special_prefix().begin(), tok.special_prefix().end(), s.begin()));
  }
}

TEST_F(CalibrateTiny, StaticMinmaxSeesEveryTargetedLinearAndEveryAttention) {
  ModelFolder m = ModelFolder::open(dir.str("m"));
  const Tokenizer tok = Tokenizer::from_dir(dir.str("m"));
  auto samples = make_samples(tok, builtin_calibration_text(), 4, 64, 0);
  CalibrationRun r = calibrate(m, samples, {});
  EXPECT_EQ(r.samples, 4);
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (const char* mod : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                            "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}) {
      ASSERT_TRUE(r.stats.input_absmax.count(p + mod)) << p + mod;
      EXPECT_GT(r.stats.input_absmax.at(p + mod), 0.0f) << p + mod;
    }
    // q/k/v read the same normed input: identical statistics.
    EXPECT_EQ(r.stats.input_absmax.at(p + "self_attn.q_proj"), r.stats.input_absmax.at(p + "self_attn.v_proj"));
    EXPECT_GT(r.stats.k_absmax.at(p + "self_attn"), 0.0f);
    EXPECT_GT(r.stats.v_absmax.at(p + "self_attn"), 0.0f);
  }
  // The moving-average observer never exceeds the global max.
  CalibrateOptions ema;
  ema.observer = "minmax";
  CalibrationRun e = calibrate(m, samples, ema);
  for (const auto& [k, v] : e.stats.input_absmax) EXPECT_LE(v, r.stats.input_absmax.at(k) * 1.0001f) << k;
  // Both observers record the plain per-channel range of every norm output and of down_proj's
  // input (SmoothQuant's statistics); its extremes are the Linear input's absmax.
  for (const CalibrationRun* run : {&r, &e}) {
    ASSERT_EQ(run->stats.channel_min.size(), 6u);
    for (int l = 0; l < 2; ++l) {
      const std::string down = "model.layers." + std::to_string(l) + ".mlp.down_proj";
      const auto& mn = run->stats.channel_min.at(down);
      const auto& mx = run->stats.channel_max.at(down);
      ASSERT_EQ(mn.size(), 256u);  // intermediate_size
      float amax = 0;
      for (size_t j = 0; j < mn.size(); ++j) amax = std::max({amax, std::fabs(mn[j]), std::fabs(mx[j])});
      EXPECT_EQ(amax, r.stats.input_absmax.at(down));
    }
    for (int l = 0; l < 2; ++l)
      for (const char* norm : {"input_layernorm", "post_attention_layernorm"}) {
        const std::string n = "model.layers." + std::to_string(l) + "." + norm;
        const auto& mn = run->stats.channel_min.at(n);
        const auto& mx = run->stats.channel_max.at(n);
        ASSERT_EQ(mn.size(), 128u) << n;
        float amax = 0;
        for (size_t j = 0; j < mn.size(); ++j) {
          EXPECT_LE(mn[j], mx[j]) << n << " channel " << j;
          amax = std::max({amax, std::fabs(mn[j]), std::fabs(mx[j])});
        }
        const std::string lin = "model.layers." + std::to_string(l) +
                                (std::string(norm) == "input_layernorm" ? ".self_attn.q_proj" : ".mlp.gate_proj");
        EXPECT_EQ(amax, r.stats.input_absmax.at(lin)) << n;
      }
  }
  EXPECT_EQ(e.stats.channel_max, r.stats.channel_max);
}

TEST_F(CalibrateTiny, SavedStatsRoundTripAndAreRefusedForAnotherModel) {
  ModelFolder m = ModelFolder::open(dir.str("m"));
  ActivationStats s;
  s.input_absmax["model.layers.0.mlp.up_proj"] = 3.25f;
  s.k_absmax["model.layers.0.self_attn"] = 1.5f;
  s.v_absmax["model.layers.0.self_attn"] = 0.1f;
  s.channel_min["model.layers.0.input_layernorm"] = {-1.25f, 0.0f, -3.0e-8f};
  s.channel_max["model.layers.0.input_layernorm"] = {2.5f, 0.1f, 7.0e5f};
  StatsProvenance p;
  p.model_fingerprint = model_fingerprint(m);
  p.num_samples = 4;
  save_stats(dir.str("s.zst"), s, p);
  StatsProvenance back;
  ActivationStats l = load_stats(dir.str("s.zst"), model_fingerprint(m), &back);
  EXPECT_EQ(l.input_absmax, s.input_absmax);
  EXPECT_EQ(l.v_absmax, s.v_absmax);
  EXPECT_EQ(l.channel_min, s.channel_min);  // f32 values survive the JSON text exactly
  EXPECT_EQ(l.channel_max, s.channel_max);
  EXPECT_EQ(back.num_samples, 4);
  TinyModelOptions o;
  o.seed = 4;  // same shapes, other weights
  write_tiny_model(dir.str("m2"), o);
  ModelFolder m2 = ModelFolder::open(dir.str("m2"));
  EXPECT_NE(model_fingerprint(m2), model_fingerprint(m));
  EXPECT_NE(error_of([&] { load_stats(dir.str("s.zst"), model_fingerprint(m2)); }).find("different model"), std::string::npos);
}

}  // namespace
}  // namespace qt::calib
