// Tiny model generator: deterministic, loadable by our reader, Llama-shaped, realistic statistics.
// (Bit-exactness of the generator against an independent Python implementation, and loading by
// transformers, are checked in tests/python/test_safetensors_interop.py.)
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "formats/json_util.h"
#include "formats/model_folder.h"
#include "formats/tiny_model.h"
#include "libquant/error.h"
#include "tests/support/test_support.h"

namespace qt {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

std::vector<std::string> files_in(const fs::path& p) {
  std::vector<std::string> v;
  for (const auto& e : fs::directory_iterator(p)) v.push_back(e.path().filename().string());
  std::sort(v.begin(), v.end());
  return v;
}

float bf16_to_f32(const uint8_t* p) {  // exact: bf16 is the top half of an f32
  const uint32_t u = (static_cast<uint32_t>(p[0]) << 16) | (static_cast<uint32_t>(p[1]) << 24);
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST(TinyModel, SameSeedGivesTheSameBytesInEveryFile) {
  TempDir a, b;
  TinyModelOptions o;
  o.seed = 42;
  write_tiny_model(a.str(), o);
  write_tiny_model(b.str(), o);
  EXPECT_EQ(files_in(a.path()), (std::vector<std::string>{"config.json", "generation_config.json",
                                                            "model.safetensors", "tokenizer.json",
                                                            "tokenizer_config.json"}));
  for (const auto& f : files_in(a.path())) EXPECT_EQ(test::read_file(a.path() / f), test::read_file(b.path() / f)) << f;
}

TEST(TinyModel, DifferentSeedsGiveDifferentWeightsButTheSameConfig) {
  TempDir a, b;
  TinyModelOptions o;
  o.seed = 1;
  write_tiny_model(a.str(), o);
  o.seed = 2;
  write_tiny_model(b.str(), o);
  EXPECT_NE(test::read_file(a.path() / "model.safetensors"), test::read_file(b.path() / "model.safetensors"));
  EXPECT_EQ(test::read_text(a.path() / "config.json"), test::read_text(b.path() / "config.json"));
  // Every tensor differs, not just some.
  const auto fa = SafetensorsFile::open(a.str("model.safetensors"));
  const auto fb = SafetensorsFile::open(b.str("model.safetensors"));
  for (const auto& t : fa.tensors()) {
    const auto& u = fb.find(t.name)->bytes;
    EXPECT_FALSE(std::equal(t.bytes.begin(), t.bytes.end(), u.begin(), u.end())) << t.name;
  }
}

TEST(TinyModel, HasTheLlamaTensorsTheConfigDescribes) {
  TempDir d;
  TinyModelOptions o;  // defaults: H=128, I=256, L=2, heads 4, kv 2, V=512
  write_tiny_model(d.str(), o);
  const auto m = ModelFolder::open(d.str());
  const auto& c = m.config();
  EXPECT_EQ(c.at("model_type"), "llama");
  EXPECT_EQ(c.at("torch_dtype"), "bfloat16");
  EXPECT_EQ(c.at("head_dim"), 32);
  const auto& ck = m.checkpoint();
  EXPECT_EQ(ck.tensors().size(), 2u + 9u * 2u + 1u);
  auto shape = [&](const std::string& n) { return ck.find(n)->shape; };
  EXPECT_EQ(shape("model.embed_tokens.weight"), (std::vector<int64_t>{512, 128}));
  EXPECT_EQ(shape("model.layers.1.self_attn.q_proj.weight"), (std::vector<int64_t>{128, 128}));
  EXPECT_EQ(shape("model.layers.1.self_attn.k_proj.weight"), (std::vector<int64_t>{64, 128}));
  EXPECT_EQ(shape("model.layers.0.mlp.down_proj.weight"), (std::vector<int64_t>{128, 256}));
  EXPECT_EQ(shape("model.layers.0.mlp.gate_proj.weight"), (std::vector<int64_t>{256, 128}));
  EXPECT_EQ(shape("model.norm.weight"), (std::vector<int64_t>{128}));
  EXPECT_EQ(shape("lm_head.weight"), (std::vector<int64_t>{512, 128}));
  for (const auto& t : ck.tensors()) EXPECT_EQ(t.dtype, DType::BF16);
  EXPECT_EQ(ck.metadata(0).at("format"), "pt");
}

TEST(TinyModel, ExplicitHeadDimWidensQAndOButNotTheHiddenSize) {
  // Qwen3-30B-A3B: hidden 2048, 32 heads of 128 (q_proj 4096 rows), 4 kv heads. Scaled down.
  TempDir d;
  TinyModelOptions o;
  o.arch = "qwen3_moe";
  o.num_heads = 4;  // 4 x 64 = 256 q rows with hidden 128
  o.head_dim = 64;
  write_tiny_model(d.str(), o);
  const auto m = ModelFolder::open(d.str());
  EXPECT_EQ(m.config().at("head_dim"), 64);
  EXPECT_EQ(m.config().at("hidden_size"), 128);
  auto shape = [&](const std::string& n) { return m.checkpoint().find(n)->shape; };
  EXPECT_EQ(shape("model.layers.0.self_attn.q_proj.weight"), (std::vector<int64_t>{256, 128}));
  EXPECT_EQ(shape("model.layers.0.self_attn.k_proj.weight"), (std::vector<int64_t>{128, 128}));
  EXPECT_EQ(shape("model.layers.0.self_attn.o_proj.weight"), (std::vector<int64_t>{128, 256}));
  EXPECT_EQ(shape("model.layers.0.self_attn.q_norm.weight"), (std::vector<int64_t>{64}));
  o.head_dim = 0;  // the default stays hidden / heads
  EXPECT_EQ(tiny_model_config(o).at("head_dim"), 32);
}

TEST(TinyModel, TiedEmbeddingsHaveNoLmHead) {
  TempDir d;
  TinyModelOptions o;
  o.tie_word_embeddings = true;
  write_tiny_model(d.str(), o);
  const auto m = ModelFolder::open(d.str());
  EXPECT_EQ(m.checkpoint().find("lm_head.weight"), nullptr);
  EXPECT_EQ(m.config().at("tie_word_embeddings"), true);
}

TEST(TinyModel, ShardedOutputHoldsTheSameTensorBytes) {
  TempDir one, three;
  TinyModelOptions o;
  o.seed = 7;
  write_tiny_model(one.str(), o);
  o.num_shards = 3;
  write_tiny_model(three.str(), o);
  EXPECT_TRUE(fs::exists(three.path() / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(three.path() / "model.safetensors"));
  const auto a = Checkpoint::open(one.str());
  const auto b = Checkpoint::open(three.str());
  EXPECT_EQ(b.num_shards(), 3u);
  EXPECT_EQ(b.shard_paths()[2], three.str("model-00003-of-00003.safetensors"));
  EXPECT_EQ(b.index_total_size(), b.total_bytes());
  EXPECT_EQ(a.total_bytes(), b.total_bytes());
  for (const auto& t : a.tensors()) {
    const TensorView* u = b.find(t.name);
    ASSERT_NE(u, nullptr) << t.name;
    EXPECT_TRUE(std::equal(t.bytes.begin(), t.bytes.end(), u->bytes.begin(), u->bytes.end())) << t.name;
  }
}

TEST(TinyModel, WritesEachDtypeWithItsElementSize) {
  for (DType t : {DType::F32, DType::F16, DType::BF16}) {
    TempDir d;
    TinyModelOptions o;
    o.dtype = t;
    write_tiny_model(d.str(), o);
    const auto c = Checkpoint::open(d.str());
    const TensorView* e = c.find("model.embed_tokens.weight");
    EXPECT_EQ(e->dtype, t);
    EXPECT_EQ(e->bytes.size(), 512u * 128u * static_cast<size_t>(dtype_bits(t) / 8));
  }
}

TEST(TinyModel, WeightsLookLikeATrainedModelWithOutlierColumns) {
  TinyModelOptions o;
  o.seed = 3;
  const auto specs = tiny_model_tensor_specs(o);
  for (const auto& s : specs) {
    const auto bytes = tiny_model_tensor_bytes(o, s);
    const size_t n = bytes.size() / 2;
    if (s.shape.size() == 1) {  // RMSNorm: around 1
      double sum = 0;
      for (size_t i = 0; i < n; ++i) sum += bf16_to_f32(&bytes[2 * i]);
      EXPECT_NEAR(sum / static_cast<double>(n), 1.0, 0.02) << s.name;
      continue;
    }
    const size_t cols = static_cast<size_t>(s.shape[1]), rows = n / cols;
    std::vector<double> col_rms(cols, 0.0);
    for (size_t r = 0; r < rows; ++r)
      for (size_t c = 0; c < cols; ++c) {
        const double v = bf16_to_f32(&bytes[2 * (r * cols + c)]);
        col_rms[c] += v * v / static_cast<double>(rows);
      }
    int outliers = 0;
    double normal_sum = 0;
    for (double& v : col_rms) {
      v = std::sqrt(v);
      if (v > 0.1) ++outliers; else normal_sum += v;
    }
    const bool is_proj = s.name.find("_proj") != std::string::npos;
    EXPECT_GE(outliers, is_proj ? 1 : 0) << s.name;
    EXPECT_LE(outliers, is_proj ? 2 : 0) << s.name;
    EXPECT_NEAR(normal_sum / static_cast<double>(cols - static_cast<size_t>(outliers)), 0.02, 0.003) << s.name;
  }
}

TEST(TinyModel, TokenizerFitsTheVocabularyAndMatchesTheConfigIds) {
  TempDir d;
  write_tiny_model(d.str(), TinyModelOptions{});
  const auto tok = read_json_file(d.str("tokenizer.json"));
  const auto& vocab = tok.at("model").at("vocab");
  EXPECT_EQ(vocab.size() + tok.at("added_tokens").size(), static_cast<size_t>(tiny_tokenizer_size()));
  EXPECT_LE(tiny_tokenizer_size(), 512);
  EXPECT_EQ(vocab.at("\xC4\xA0the"), 258);  // "Ġthe" is the third merge
  EXPECT_EQ(tok.at("added_tokens")[0].at("content"), "<s>");
  EXPECT_EQ(tok.at("added_tokens")[0].at("id"), tiny_bos_id());
  const auto cfg = read_json_file(d.str("config.json"));
  EXPECT_EQ(cfg.at("bos_token_id"), tiny_bos_id());
  EXPECT_EQ(cfg.at("eos_token_id"), tiny_eos_id());
  const auto gen = read_json_file(d.str("generation_config.json"));
  EXPECT_EQ(gen.at("eos_token_id"), tiny_eos_id());
  EXPECT_EQ(read_json_file(d.str("tokenizer_config.json")).at("eos_token"), "</s>");
}

TEST(TinyModel, RejectsOptionsThatCannotMakeAModel) {
  auto expect_usage = [](TinyModelOptions o, const std::string& msg) {
    try {
      tiny_model_tensor_specs(o);
      ADD_FAILURE() << msg;
    } catch (const InputError& e) {
      EXPECT_EQ(e.kind(), InputError::Kind::Usage);
      EXPECT_NE(std::string(e.what()).find(msg), std::string::npos) << e.what();
    }
  };
  TinyModelOptions o;
  o.num_heads = 3;
  expect_usage(o, "hidden_size 128 is not divisible by num_heads 3");
  o = {};
  o.num_kv_heads = 3;
  expect_usage(o, "num_heads 4 is not divisible by num_kv_heads 3");
  o = {};
  o.vocab_size = 100;
  expect_usage(o, "vocab_size 100 is smaller than the tokenizer's");
  o = {};
  o.dtype = DType::F8_E4M3;
  expect_usage(o, "dtype must be BF16, F16 or F32");
  o = {};
  o.num_shards = 100;
  expect_usage(o, "num_shards must be between 1 and the tensor count 21");
}

}  // namespace
}  // namespace qt
