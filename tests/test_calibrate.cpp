// Calibration data loading, statistics files and the calibrate() entry point.
#include <gtest/gtest.h>
#include <zstd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <cstring>
#include <functional>
#include <optional>

#include "calib/stats_file.h"
#include "calib/calibrate.h"
#include "calib/dataset.h"
#include "calib/tokenizer/tokenizer.h"
#include "formats/model_folder.h"
#include "formats/safetensors_writer.h"
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

TEST(CalibrationText, AChatRecordWithANonStringRoleIsAnErrorNamingFileAndLine) {
  test::TempDir d;
  test::write_text(d.path() / "a.jsonl", "{\"text\": \"ok\"}\n{\"messages\": [{\"role\": 7, \"content\": \"hi\"}]}\n");
  EXPECT_EQ(error_of([&] { load_calibration_text(d.str("a.jsonl")); }),
            d.str("a.jsonl") + ":2: a message's \"role\" must be a string (got integer)");
}

TEST(CalibrationText, ASmallZstdFileThatExpandsPastTheLimitIsRefusedWhileStreaming) {
  test::TempDir d;
  test::write_text(d.path() / "bomb.txt.zst", zstd(std::string(8u << 20, 'a')));  // 8 MiB of 'a' in ~300 bytes
  EXPECT_LT(fs::file_size(d.path() / "bomb.txt.zst"), 4096u);
  EXPECT_EQ(error_of([&] { load_calibration_text(d.str("bomb.txt.zst"), 1u << 20); }),
            d.str("bomb.txt.zst") + ": the calibration dataset expands to more than 1 MiB; qtool reads at most 1 MiB "
            "of calibration text (calibration uses a few MB: --num-samples x --seq-len tokens)");
  test::write_text(d.path() / "big.txt", std::string((1u << 20) + 1, 'a'));
  EXPECT_EQ(error_of([&] { load_calibration_text(d.str("big.txt"), 1u << 20); }),
            d.str("big.txt") + ": the calibration dataset is 1048577 bytes; qtool reads at most 1 MiB "
            "of calibration text (calibration uses a few MB: --num-samples x --seq-len tokens)");
  EXPECT_EQ(load_calibration_text(d.str("big.txt"), 2u << 20).documents.size(), 1u);  // under the limit: read
}

TEST(CalibrationText, InvalidUtf8IsReportedWithFileAndByteOffset) {
  test::TempDir d;
  test::write_text(d.path() / "a.txt", "fine\nstill fine\nbad \xff byte\n");  // 0xff at offset 20
  EXPECT_EQ(error_of([&] { load_calibration_text(d.str("a.txt")); }),
            d.str("a.txt") + ": not valid UTF-8 at byte offset 20 (line 3); calibration text must be UTF-8");
  test::write_text(d.path() / "a.txt.zst", zstd("ok\n\xc3("));  // a 2-byte sequence cut short at offset 3
  EXPECT_EQ(error_of([&] { load_calibration_text(d.str("a.txt.zst")); }),
            d.str("a.txt.zst") + ": not valid UTF-8 at byte offset 3 of the decompressed text (line 2); calibration "
            "text must be UTF-8");
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

// The weights are checked in one pass before the forward: a bad tensor in the last layer is named
// before the first layer is calibrated, not after most of the calibration.
TEST_F(CalibrateTiny, ABadWeightInTheLastLayerIsNamedBeforeAnyLayerIsCalibrated) {
  const std::string file = dir.str("m/model.safetensors");
  auto first_error = [&](const std::function<void(TensorSpec&, std::vector<uint8_t>&)>& edit) {
    test::TempDir copy;
    fs::copy(dir.path() / "m", copy.path() / "m");
    test::rewrite_safetensors(copy.str("m/model.safetensors"), edit);
    ModelFolder m = ModelFolder::open(copy.str("m"));
    const Tokenizer tok = Tokenizer::from_dir(copy.str("m"));
    CalibrateOptions o;
    int64_t layers_done = 0;
    o.on_layer_done = [&](int64_t, int64_t) { ++layers_done; };
    std::string err = error_of([&] { calibrate(m, make_samples(tok, builtin_calibration_text(), 2, 32, 0), o); });
    EXPECT_EQ(layers_done, 0) << err;
    const std::string prefix = copy.str("m");
    if (err.rfind(prefix, 0) == 0) err = "M" + err.substr(prefix.size());
    return err;
  };
  // bf16 NaN (0x7FC0) at element 7 of the last layer's down_proj.
  EXPECT_EQ(first_error([](TensorSpec& s, std::vector<uint8_t>& b) {
              if (s.name == "model.layers.1.mlp.down_proj.weight") b[14] = 0xC0, b[15] = 0x7F;
            }),
            "M/model.safetensors: tensor 'model.layers.1.mlp.down_proj.weight': weight element 7 is NaN; "
            "calibration needs finite weights");
  // The same tensor stored as F64 (mixed dtypes are legal) with a value beyond the f32 range.
  EXPECT_EQ(first_error([](TensorSpec& s, std::vector<uint8_t>& b) {
              if (s.name != "model.layers.1.mlp.down_proj.weight") return;
              std::vector<uint8_t> d(b.size() / 2 * 8);
              for (size_t i = 0; i < b.size() / 2; ++i) {
                uint32_t bits = (static_cast<uint32_t>(b[2 * i + 1]) << 24) | (static_cast<uint32_t>(b[2 * i]) << 16);
                float f;
                std::memcpy(&f, &bits, 4);
                double v = i == 3 ? 1e39 : f;
                std::memcpy(d.data() + 8 * i, &v, 8);
              }
              s.dtype = DType::F64;
              b = std::move(d);
            }),
            "M/model.safetensors: tensor 'model.layers.1.mlp.down_proj.weight': weight element 3 is 1e+39, beyond "
            "the f32 range the forward pass computes in; calibration needs finite weights");
  // A missing tensor of the last layer, and one whose shape disagrees with config.json.
  EXPECT_EQ(first_error([](TensorSpec& s, std::vector<uint8_t>&) {
              if (s.name == "model.layers.1.mlp.up_proj.weight") s.name = "model.layers.1.mlp.up_proj.weight_g";
            }),
            "M: tensor 'model.layers.1.mlp.up_proj.weight': tensor is missing from the checkpoint");
  EXPECT_EQ(first_error([](TensorSpec& s, std::vector<uint8_t>&) {
              if (s.name == "model.layers.1.mlp.up_proj.weight") s.shape = {128, 256};
            }),
            "M: tensor 'model.layers.1.mlp.up_proj.weight': tensor shape does not match config.json "
            "(expected [256,128], got [128,256])");
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

// A statistics file for the tiny model (hidden 128), valid as written, then broken one field at
// a time. Expected texts written by hand from the format in man/qtool-files.5.
class StatsFileTiny : public CalibrateTiny {
 protected:
  void SetUp() override {
    CalibrateTiny::SetUp();
    model.emplace(ModelFolder::open(dir.str("m")));
    fp = model_fingerprint(*model);
    good = {{"format", "qtool-activation-stats"},
            {"version", 1},
            {"model_fingerprint", fp},
            {"data", {{"source", "built-in"}, {"sha256", "ab"}, {"num_samples", 4}, {"seq_len", 32}, {"tokens", 128}, {"seed", 0}}},
            {"observer", "static_minmax"},
            {"input_absmax", {{"model.layers.0.mlp.up_proj", 3.25}}},
            {"k_absmax", {{"model.layers.0.self_attn", 1.5}}},
            {"v_absmax", {{"model.layers.0.self_attn", 0.5}}},
            {"channel_min", {{"model.layers.0.input_layernorm", std::vector<float>(128, -1.0f)}}},
            {"channel_max", {{"model.layers.0.input_layernorm", std::vector<float>(128, 2.0f)}}}};
  }
  // The error load_stats gives for `j` ("" if none), with the file's path cut to "S".
  std::string error_for(const nlohmann::json& j) {
    test::write_text(dir.path() / "s.zst", zstd(j.dump()));
    std::string e = error_of([&] { load_stats(dir.str("s.zst"), fp, nullptr, &*model); });
    if (e.rfind(dir.str("s.zst"), 0) == 0) e = "S" + e.substr(dir.str("s.zst").size());
    return e;
  }
  std::optional<ModelFolder> model;
  std::string fp;
  nlohmann::json good;
};

TEST_F(StatsFileTiny, AValidFileLoads) {
  EXPECT_EQ(error_for(good), "");
}

TEST_F(StatsFileTiny, NegativeInputAndKvStatisticsAreRefusedNamingFileAndKey) {
  auto j = good;
  j["input_absmax"]["model.layers.0.mlp.up_proj"] = -1.5;
  EXPECT_EQ(error_for(j), "S: input_absmax 'model.layers.0.mlp.up_proj' is -1.5; an absolute maximum cannot be negative");
  j = good;
  j["k_absmax"]["model.layers.0.self_attn"] = -0.25;
  EXPECT_EQ(error_for(j), "S: k_absmax 'model.layers.0.self_attn' is -0.25; an absolute maximum cannot be negative");
}

TEST_F(StatsFileTiny, NanInfAndOutOfRangeValuesAreRefused) {
  test::write_text(dir.path() / "s.zst", zstd("{\"format\": \"qtool-activation-stats\", \"input_absmax\": {\"a\": NaN}}"));
  EXPECT_NE(error_of([&] { load_stats(dir.str("s.zst"), fp, nullptr, &*model); }).find("s.zst: statistics file is not valid JSON"),
            std::string::npos);
  auto j = good;
  j["v_absmax"]["model.layers.0.self_attn"] = 1e39;  // beyond f32: would become inf
  EXPECT_EQ(error_for(j), "S: v_absmax 'model.layers.0.self_attn' is 1e+39, not a finite f32 value");
  j = good;
  j["channel_max"]["model.layers.0.input_layernorm"][5] = nullptr;  // what a NaN becomes in nlohmann's output
  EXPECT_EQ(error_for(j), "S: channel_max 'model.layers.0.input_layernorm' [5] is null, not a number");
}

TEST_F(StatsFileTiny, AWrongChannelCountOrOrderIsRefused) {
  auto j = good;
  j["channel_min"]["model.layers.0.input_layernorm"] = std::vector<float>(127, -1.0f);
  EXPECT_EQ(error_for(j),
            "S: channel_min 'model.layers.0.input_layernorm' has 127 channels; the model's "
            "model.layers.0.input_layernorm.weight has 128");
  j = good;
  j["channel_min"]["model.layers.0.input_layernorm"][3] = 5.0;
  EXPECT_EQ(error_for(j), "S: channel 3 of 'model.layers.0.input_layernorm': channel_min 5 is above channel_max 2");
  j = good;
  j["channel_max"].erase("model.layers.0.input_layernorm");
  EXPECT_EQ(error_for(j), "S: channel_min 'model.layers.0.input_layernorm' has no channel_max");
}

TEST_F(StatsFileTiny, Bf16KernelsRoundTripAndAnythingButOwnOrOnednnIdsIsRefused) {
  auto j = good;
  j["calib_precision"] = "bf16";
  j["calib_kernels"] = "own,onednn-brg:avx512_core_amx_bf16";
  EXPECT_EQ(error_for(j), "");
  StatsProvenance p;
  load_stats(dir.str("s.zst"), fp, &p, &*model);
  EXPECT_EQ(p.calib_precision, "bf16");
  EXPECT_EQ(p.calib_kernels, "own,onednn-brg:avx512_core_amx_bf16");
  EXPECT_EQ(split_calib_kernels(p.calib_kernels), (std::vector<std::string>{"own", "onednn-brg:avx512_core_amx_bf16"}));
  EXPECT_TRUE(split_calib_kernels("").empty());
  // What save_stats writes: the key for bf16 only.
  ActivationStats s = load_stats(dir.str("s.zst"), fp, nullptr, &*model);
  p.calib_kernels = "own";
  save_stats(dir.str("w.zst"), s, p);
  StatsProvenance back;
  load_stats(dir.str("w.zst"), fp, &back, &*model);
  EXPECT_EQ(back.calib_kernels, "own");
  p.calib_precision = "f32";
  save_stats(dir.str("w.zst"), s, p);
  load_stats(dir.str("w.zst"), fp, &back, &*model);
  EXPECT_EQ(back.calib_kernels, "");
  const std::string refused =
      "', not a comma-separated list of 'own' and 'onednn-<implementation>' of a bf16 file";
  for (const char* bad : {"mkl", "own,", "onednn-", ""}) {
    j["calib_kernels"] = bad;
    EXPECT_EQ(error_for(j), "S: 'calib_kernels' is '" + std::string(bad) + refused) << bad;
  }
  j = good;  // f32 statistics name no kernels
  j["calib_kernels"] = "own";
  EXPECT_EQ(error_for(j), "S: 'calib_kernels' is 'own" + refused);
  j["calib_kernels"] = 3;
  EXPECT_EQ(error_for(j), "S: 'calib_kernels' is an integer, not a string");
}

TEST_F(StatsFileTiny, AWrongJsonShapeIsRefusedNamingTheKey) {
  EXPECT_EQ(error_for(nlohmann::json::array({1, 2})), "S: not a qtool statistics file (the JSON is an array, not an object)");
  auto j = good;
  j["input_absmax"] = nlohmann::json::array({1.0});
  EXPECT_EQ(error_for(j), "S: 'input_absmax' is an array, not an object");
  j = good;
  j["input_absmax"]["model.layers.0.mlp.up_proj"] = "3.25";
  EXPECT_EQ(error_for(j), "S: input_absmax 'model.layers.0.mlp.up_proj' is a string, not a number");
  j = good;
  j["data"].erase("seed");
  EXPECT_EQ(error_for(j), "S: 'data.seed' is missing");
  j = good;
  j["version"] = 2;
  EXPECT_EQ(error_for(j), "S: statistics file version 2 is not one this qtool reads (1)");
  j = good;
  j["input_absmax"]["model.layers.9.mlp.up_proj"] = 1.0;
  EXPECT_EQ(error_for(j),
            "S: input_absmax 'model.layers.9.mlp.up_proj' names no module of the model (no tensor "
            "'model.layers.9.mlp.up_proj.weight')");
}

}  // namespace
}  // namespace qt::calib
