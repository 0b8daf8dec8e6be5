// `qtool convert`: GGUF -> Hugging Face (formats/gguf_to_hf.h), legacy fp8 <-> compressed-tensors
// and --dequantize (formats/convert_quantized.h).
//
// Independent references:
//   - testdata/convert/*.gguf and *.expected.safetensors (testdata/convert/make_tiny_gguf.py):
//     GGUFs written by gguf-py from HF-layout weights permuted with llama.cpp's own permute(), and
//     those HF-layout weights (the answer);
//   - the rotary row order worked by hand below, and a literal transcription of llama.cpp's
//     reshape/swapaxes permute;
//   - quantized checkpoints built here byte by byte with SafetensorsWriter, and `qtool quantize`
//     output checked against the original weights with the quantization error bound.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <span>

#include "formats/checkpoint.h"
#include "formats/convert_quantized.h"
#include "formats/gguf.h"
#include "formats/gguf_to_hf.h"
#include "formats/model_folder.h"
#include "formats/output_folder.h"
#include "formats/safetensors.h"
#include "formats/safetensors_writer.h"
#include "formats/sha256.h"
#include "libquant/error.h"
#include "libquant/float_formats.h"
#include "libquant/pack.h"
#include "libquant/quantize.h"
#include "libquant/schemes.h"
#include "tests/support/test_support.h"

namespace qt {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;
using test::run_qtool;
using Kind = InputError::Kind;

// ---- helpers -----------------------------------------------------------------------------------

InputError expect_error(const std::function<void()>& fn, Kind kind, const std::vector<std::string>& needles) {
  try {
    fn();
  } catch (const InputError& e) {
    EXPECT_EQ(static_cast<int>(e.kind()), static_cast<int>(kind)) << e.what();
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << "'" << n << "' not in: " << e.what();
    return e;
  }
  ADD_FAILURE() << "no InputError thrown";
  return InputError(kind, "", "", "");
}

std::vector<float> values_f32(const TensorView& t) {
  std::vector<float> v(t.numel());
  EXPECT_TRUE(decode_to_f32(t.dtype, t.bytes.data(), v.size(), v.data())) << t.name;
  return v;
}

json read_json(const fs::path& p) { return json::parse(test::read_text(p)); }

ConvertJob job_for(const fs::path& out) {
  ConvertJob j;
  j.output_dir = out.string();
  j.hash_inputs = false;
  return j;
}

// A GGUF v3 writer for hand-made files (F32 tensors only; alignment 32).
struct GgufBuilder {
  std::vector<uint8_t> kv;
  uint64_t n_kv = 0;
  struct T { std::string name; std::vector<uint64_t> ne; std::vector<float> data; };
  std::vector<T> tensors;

  void raw(const void* p, size_t n) { kv.insert(kv.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n); }
  void u32v(uint32_t v) { raw(&v, 4); }
  void u64v(uint64_t v) { raw(&v, 8); }
  void strv(const std::string& s) { u64v(s.size()); raw(s.data(), s.size()); }
  void key(const std::string& k, uint32_t type) { strv(k); u32v(type); ++n_kv; }
  void str(const std::string& k, const std::string& v) { key(k, 8); strv(v); }
  void u32(const std::string& k, uint32_t v) { key(k, 4); u32v(v); }
  void f32(const std::string& k, float v) { key(k, 6); raw(&v, 4); }
  void boolean(const std::string& k, bool v) { key(k, 7); uint8_t b = v; raw(&b, 1); }
  void strs(const std::string& k, const std::vector<std::string>& v) {
    key(k, 9); u32v(8); u64v(v.size());
    for (const auto& s : v) strv(s);
  }
  void i32s(const std::string& k, const std::vector<int32_t>& v) {
    key(k, 9); u32v(5); u64v(v.size());
    for (int32_t x : v) raw(&x, 4);
  }
  void f32s(const std::string& k, const std::vector<float>& v) {
    key(k, 9); u32v(6); u64v(v.size());
    for (float x : v) raw(&x, 4);
  }
  // ne in ggml order (ne[0] = columns).
  void tensor(const std::string& name, std::vector<uint64_t> ne, std::vector<float> data = {}) {
    uint64_t n = 1;
    for (auto d : ne) n *= d;
    if (data.empty()) {
      data.resize(n);
      for (uint64_t i = 0; i < n; ++i) data[i] = static_cast<float>(tensors.size() * 1000 + i);
    }
    tensors.push_back({name, std::move(ne), std::move(data)});
  }
  std::vector<uint8_t> build() const {
    std::vector<uint8_t> b = {'G', 'G', 'U', 'F'};
    auto put = [&](const void* p, size_t n) { b.insert(b.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n); };
    uint32_t version = 3;
    uint64_t nt = tensors.size();
    put(&version, 4);
    put(&nt, 8);
    put(&n_kv, 8);
    b.insert(b.end(), kv.begin(), kv.end());
    uint64_t off = 0;
    for (const auto& t : tensors) {
      uint64_t len = t.name.size();
      put(&len, 8);
      put(t.name.data(), t.name.size());
      uint32_t nd = static_cast<uint32_t>(t.ne.size()), type = 0;
      put(&nd, 4);
      for (uint64_t d : t.ne) put(&d, 8);
      put(&type, 4);
      put(&off, 8);
      off += (t.data.size() * 4 + 31) / 32 * 32;
    }
    while (b.size() % 32) b.push_back(0);
    for (const auto& t : tensors) {
      put(t.data.data(), t.data.size() * 4);
      while (b.size() % 32) b.push_back(0);
    }
    return b;
  }
};

// A minimal valid Llama GGUF: hidden 8, 2 heads of 4 (q rows 8), 1 KV head (k rows 4),
// intermediate 8, 1 layer, 4 tokens, tied embeddings. `edit` may change keys / tensors before
// they are written: it gets the builder after the architecture keys, and `skip` names keys or
// tensors to leave out.
struct TinyGgufSpec {
  std::string arch = "llama", tok_model = "gpt2", pre = "gpt-2";
  std::vector<std::string> skip;
  std::function<void(GgufBuilder&)> extra_keys, extra_tensors;
  bool output = false;
};

bool skipped(const TinyGgufSpec& s, const std::string& n) { return std::find(s.skip.begin(), s.skip.end(), n) != s.skip.end(); }

std::vector<uint8_t> tiny_gguf(const TinyGgufSpec& s = {}) {
  GgufBuilder b;
  b.str("general.architecture", s.arch);
  auto u = [&](const std::string& k, uint32_t v) { if (!skipped(s, k)) b.u32(s.arch + "." + k, v); };
  u("context_length", 16);
  u("embedding_length", 8);
  u("feed_forward_length", 8);
  u("block_count", 1);
  u("attention.head_count", 2);
  u("attention.head_count_kv", 1);
  if (!skipped(s, "rms")) b.f32(s.arch + ".attention.layer_norm_rms_epsilon", 1e-5f);
  if (!skipped(s, "tokenizer")) {
    b.str("tokenizer.ggml.model", s.tok_model);
    if (!s.pre.empty()) b.str("tokenizer.ggml.pre", s.pre);
    b.strs("tokenizer.ggml.tokens", {"a", "b", "ab", "<|end|>"});
    b.i32s("tokenizer.ggml.token_type", {1, 1, 1, 3});
    if (!skipped(s, "merges")) b.strs("tokenizer.ggml.merges", {"a b"});
    b.f32s("tokenizer.ggml.scores", {-1, -2, -0.5f, 0});
    b.u32("tokenizer.ggml.eos_token_id", 3);
  }
  if (s.extra_keys) s.extra_keys(b);
  auto t = [&](const std::string& n, std::vector<uint64_t> ne) { if (!skipped(s, n)) b.tensor(n, std::move(ne)); };
  t("token_embd.weight", {8, 4});
  t("blk.0.attn_norm.weight", {8});
  t("blk.0.attn_q.weight", {8, 8});
  t("blk.0.attn_k.weight", {8, 4});
  t("blk.0.attn_v.weight", {8, 4});
  t("blk.0.attn_output.weight", {8, 8});
  t("blk.0.ffn_norm.weight", {8});
  t("blk.0.ffn_gate.weight", {8, 8});
  t("blk.0.ffn_up.weight", {8, 8});
  t("blk.0.ffn_down.weight", {8, 8});
  t("output_norm.weight", {8});
  if (s.output) t("output.weight", {8, 4});
  if (s.extra_tensors) s.extra_tensors(b);
  return b.build();
}

GgufFile open_built(const std::vector<uint8_t>& bytes) { return GgufFile::from_bytes("built.gguf", bytes); }

fs::path testdata(const std::string& f) { return test::source_path("testdata/convert/" + f); }

// ================================================================================================
// rotary order and names
// ================================================================================================

// llama.cpp (convert_hf_to_gguf.py LlamaModel.permute) writes
//   w.reshape(n_head, 2, d/2, cols).swapaxes(1, 2).reshape(rows, cols)
// so GGUF row h*d + 2*i + s holds HF row h*d + s*d/2 + i. Worked by hand for d = 4:
//   GGUF rows of a head: [hf0, hf2, hf1, hf3]  =>  HF row k comes from GGUF row [0, 2, 1, 3][k]
// and for d = 8: GGUF [hf0, hf4, hf1, hf5, hf2, hf6, hf3, hf7] => HF k from [0,2,4,6,1,3,5,7][k].
TEST(GgufToHf, RotaryRowOrderMatchesTheHandWorkedExample) {
  const int64_t d4[] = {0, 2, 1, 3};
  for (int64_t k = 0; k < 8; ++k) EXPECT_EQ(rotary_gguf_row(k, 4), (k / 4) * 4 + d4[k % 4]) << k;
  const int64_t d8[] = {0, 2, 4, 6, 1, 3, 5, 7};
  for (int64_t k = 0; k < 24; ++k) EXPECT_EQ(rotary_gguf_row(k, 8), (k / 8) * 8 + d8[k % 8]) << k;
  EXPECT_EQ(rotary_gguf_row(0, 2), 0);
  EXPECT_EQ(rotary_gguf_row(1, 2), 1);  // d = 2: nothing moves
}

// The forward permute transcribed literally (index of the reshaped/swapped array), then undone.
TEST(GgufToHf, UnpermuteInvertsLlamaCppPermuteForEverySize) {
  std::mt19937 rng(7);
  for (int64_t n_head : {1, 2, 3, 9}) {
    for (int64_t d : {2, 4, 6, 8, 64}) {
      for (int64_t row_bytes : {1, 3, 8, 12}) {
        const int64_t rows = n_head * d;
        std::vector<uint8_t> hf(static_cast<size_t>(rows * row_bytes));
        for (auto& x : hf) x = static_cast<uint8_t>(rng());
        // permuted[h][i][s] = hf[h][s][i]  (shape (n_head, d/2, 2) after swapaxes(1, 2))
        std::vector<uint8_t> gg(hf.size());
        for (int64_t h = 0; h < n_head; ++h)
          for (int64_t s = 0; s < 2; ++s)
            for (int64_t i = 0; i < d / 2; ++i)
              std::memcpy(&gg[static_cast<size_t>((h * d + i * 2 + s) * row_bytes)],
                          &hf[static_cast<size_t>((h * d + s * (d / 2) + i) * row_bytes)], static_cast<size_t>(row_bytes));
        std::vector<uint8_t> back(hf.size());
        unpermute_rotary_rows(gg.data(), back.data(), rows, row_bytes, d);
        EXPECT_EQ(back, hf) << "heads " << n_head << " d " << d << " row bytes " << row_bytes;
      }
    }
  }
}

TEST(GgufToHf, NameMapCoversEveryLlamaTensorAndNothingElse) {
  const std::pair<const char*, const char*> table[] = {
      {"token_embd.weight", "model.embed_tokens.weight"},
      {"output_norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"},
      {"blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight"},
      {"blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight"},
      {"blk.1.attn_k.weight", "model.layers.1.self_attn.k_proj.weight"},
      {"blk.12.attn_v.weight", "model.layers.12.self_attn.v_proj.weight"},
      {"blk.3.attn_output.weight", "model.layers.3.self_attn.o_proj.weight"},
      {"blk.3.ffn_norm.weight", "model.layers.3.post_attention_layernorm.weight"},
      {"blk.29.ffn_gate.weight", "model.layers.29.mlp.gate_proj.weight"},
      {"blk.29.ffn_up.weight", "model.layers.29.mlp.up_proj.weight"},
      {"blk.29.ffn_down.weight", "model.layers.29.mlp.down_proj.weight"},
      {"blk.0.attn_q.bias", "model.layers.0.self_attn.q_proj.bias"},
      {"blk.0.attn_output.bias", "model.layers.0.self_attn.o_proj.bias"},
      {"blk.7.ffn_down.bias", "model.layers.7.mlp.down_proj.bias"},
  };
  for (const auto& [g, h] : table) EXPECT_EQ(gguf_to_hf_name(g), h) << g;
  for (const char* bad : {"rope_freqs.weight", "blk.0.ffn_gate_exps.weight", "blk.x.attn_q.weight", "blk.01.attn_q.weight",
                          "blk.0.attn_norm.bias", "blk.0.attn_q", "blk..attn_q.weight", "token_embd.bias", ""})
    EXPECT_EQ(gguf_to_hf_name(bad), "") << bad;
}

TEST(GgufToHf, ShortestDecimalGivesBackTheConfigValues) {
  EXPECT_EQ(shortest_f32_decimal(1e-5f), 1e-5);
  EXPECT_EQ(shortest_f32_decimal(1e-6f), 1e-6);
  EXPECT_EQ(shortest_f32_decimal(0.1f), 0.1);
  EXPECT_EQ(shortest_f32_decimal(100000.0f), 100000.0);
  EXPECT_EQ(shortest_f32_decimal(500000.0f), 500000.0);
  EXPECT_EQ(static_cast<float>(shortest_f32_decimal(1.0f / 3.0f)), 1.0f / 3.0f);
}

// ================================================================================================
// conversion of the gguf-py files
// ================================================================================================

class TinyGguf : public ::testing::TestWithParam<std::string> {};

TEST_P(TinyGguf, ConvertsToTheHfLayoutWeightsExactly) {
  test::TempDir d;
  auto r = run_qtool({"convert", testdata(GetParam() + ".gguf").string(), "-o", d.str("out"), "--dtype", "f32"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  SafetensorsFile got = SafetensorsFile::open(d.str("out/model.safetensors"));
  SafetensorsFile want = SafetensorsFile::open(testdata(GetParam() + ".expected.safetensors").string());
  ASSERT_EQ(got.tensors().size(), want.tensors().size());
  for (const auto& w : want.tensors()) {
    const TensorView* g = got.find(w.name);
    ASSERT_NE(g, nullptr) << w.name;
    EXPECT_EQ(g->dtype, DType::F32);
    EXPECT_EQ(g->shape, w.shape) << w.name;
    EXPECT_TRUE(std::equal(g->bytes.begin(), g->bytes.end(), w.bytes.begin(), w.bytes.end())) << w.name;
  }
}

TEST_P(TinyGguf, ShardsAndIndexHoldTheSameTensors) {
  test::TempDir d;
  auto r = run_qtool({"convert", testdata(GetParam() + ".gguf").string(), "-o", d.str("out"), "--dtype", "f32",
                      "--max-shard-size", "40KB", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_GT(j["shards"].get<int>(), 1);
  ASSERT_TRUE(fs::exists(d.path() / "out/model.safetensors.index.json"));
  const Checkpoint ck = Checkpoint::open(d.str("out"));
  SafetensorsFile want = SafetensorsFile::open(testdata(GetParam() + ".expected.safetensors").string());
  ASSERT_EQ(ck.tensors().size(), want.tensors().size());
  for (const auto& w : want.tensors()) {
    const TensorView* g = ck.find(w.name);
    ASSERT_NE(g, nullptr) << w.name;
    EXPECT_TRUE(std::equal(g->bytes.begin(), g->bytes.end(), w.bytes.begin(), w.bytes.end())) << w.name;
  }
}

TEST_P(TinyGguf, SmallChunksGiveTheSameBytes) {
  // 40 elements = one 32-column row per chunk, widened to whole rotary heads (8 rows) for q/k.
  test::TempDir d;
  const GgufFile g = GgufFile::open(testdata(GetParam() + ".gguf").string());
  ConvertJob small = job_for(d.path() / "small");
  small.chunk_elements = 40;
  convert_gguf_to_hf(g, DType::F32, small);
  convert_gguf_to_hf(g, DType::F32, job_for(d.path() / "whole"));
  EXPECT_EQ(test::read_file(d.path() / "small/model.safetensors"), test::read_file(d.path() / "whole/model.safetensors"));
}

TEST_P(TinyGguf, DefaultBf16OutputIsTheRoundedF32) {
  test::TempDir d;
  const GgufFile g = GgufFile::open(testdata(GetParam() + ".gguf").string());
  convert_gguf_to_hf(g, DType::BF16, job_for(d.path() / "out"));
  SafetensorsFile got = SafetensorsFile::open(d.str("out/model.safetensors"));
  SafetensorsFile want = SafetensorsFile::open(testdata(GetParam() + ".expected.safetensors").string());
  for (const auto& w : want.tensors()) {
    const TensorView* t = got.find(w.name);
    ASSERT_NE(t, nullptr) << w.name;
    ASSERT_EQ(t->dtype, DType::BF16);
    const std::vector<float> ref = values_f32(w);
    for (size_t i = 0; i < ref.size(); ++i) {
      const uint16_t b = static_cast<uint16_t>(t->bytes[2 * i] | (t->bytes[2 * i + 1] << 8));
      ASSERT_EQ(b, bf16_from_f32(ref[i])) << w.name << " element " << i;
    }
  }
  EXPECT_EQ(read_json(d.path() / "out/config.json")["torch_dtype"], "bfloat16");
}

TEST_P(TinyGguf, OutputIsDeterministicAndAtomic) {
  test::TempDir d;
  const std::string in = testdata(GetParam() + ".gguf").string();
  ASSERT_EQ(run_qtool({"convert", in, "-o", d.str("a"), "-j", "1"}).exit_code, 0);
  ASSERT_EQ(run_qtool({"convert", in, "-o", d.str("b"), "-j", "2"}).exit_code, 0);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(d.path() / "a")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  const std::vector<std::string> want = {"config.json", "generation_config.json", "model.safetensors", "qtool_manifest.json",
                                         "tokenizer.json", "tokenizer_config.json"};
  EXPECT_EQ(names, want);
  for (const auto& n : names) {
    if (n == "qtool_manifest.json") continue;  // records the command line
    EXPECT_EQ(test::read_file(d.path() / "a" / n), test::read_file(d.path() / "b" / n)) << n;
  }
  for (const auto& e : fs::directory_iterator(d.path()))
    EXPECT_EQ(e.path().filename().string().find("partial"), std::string::npos) << e.path();
  auto again = run_qtool({"convert", in, "-o", d.str("a")});
  EXPECT_EQ(again.exit_code, 2) << again.err;
  EXPECT_NE(again.err.find("not empty"), std::string::npos) << again.err;
  EXPECT_EQ(run_qtool({"convert", in, "-o", d.str("a"), "--overwrite"}).exit_code, 0);
  const json man = read_json(d.path() / "a/qtool_manifest.json");
  EXPECT_EQ(man["conversion"], "gguf-to-hf");
  EXPECT_EQ(man["inputs"][0]["sha256"].get<std::string>().size(), 64u);
}

INSTANTIATE_TEST_SUITE_P(Files, TinyGguf, ::testing::Values("tiny_gpt2", "tiny_spm"));

// Values as make_tiny_gguf.py writes them.
TEST(GgufToHf, ConfigFieldsComeFromTheMetadata) {
  const GgufFile g = GgufFile::open(testdata("tiny_gpt2.gguf").string());
  const GgufConversionPlan plan = plan_gguf_to_hf(g);
  const json c = llama_config_json(g, plan.hp, DType::BF16);
  EXPECT_EQ(c["architectures"], json::array({"LlamaForCausalLM"}));
  EXPECT_EQ(c["model_type"], "llama");
  EXPECT_EQ(c["hidden_size"], 32);
  EXPECT_EQ(c["intermediate_size"], 32);
  EXPECT_EQ(c["num_hidden_layers"], 2);
  EXPECT_EQ(c["num_attention_heads"], 4);
  EXPECT_EQ(c["num_key_value_heads"], 2);
  EXPECT_EQ(c["head_dim"], 8);
  EXPECT_EQ(c["max_position_embeddings"], 128);
  EXPECT_EQ(c["rms_norm_eps"].get<double>(), 1e-6);
  EXPECT_EQ(c["rope_theta"].get<double>(), 500000.0);
  EXPECT_EQ(c["vocab_size"], 300);
  EXPECT_EQ(c["tie_word_embeddings"], false);
  EXPECT_EQ(c["attention_bias"], true);
  EXPECT_EQ(c["mlp_bias"], false);
  EXPECT_EQ(c["bos_token_id"], 1);
  EXPECT_EQ(c["eos_token_id"], 2);
  EXPECT_EQ(c["pad_token_id"], 0);
  EXPECT_TRUE(c["rope_scaling"].is_null());
  EXPECT_EQ(c["torch_dtype"], "bfloat16");

  const GgufFile s = GgufFile::open(testdata("tiny_spm.gguf").string());
  const GgufConversionPlan sp = plan_gguf_to_hf(s);
  const json cs = llama_config_json(s, sp.hp, DType::F32);
  EXPECT_EQ(cs["tie_word_embeddings"], true);
  EXPECT_EQ(cs["attention_bias"], false);
  EXPECT_EQ(cs["rope_theta"].get<double>(), 10000.0);
  EXPECT_EQ(cs["torch_dtype"], "float32");
  // rope_freqs.weight (made with convert_hf_to_gguf's llama3 formula, factor 8) -> rope_scaling.
  EXPECT_EQ(cs["rope_scaling"], (json{{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                                      {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}}));
  for (const auto& t : sp.tensors) EXPECT_NE(t.hf_name.find("model."), std::string::npos) << t.hf_name;
  ASSERT_FALSE(sp.notes.empty());
  EXPECT_NE(sp.notes[0].find("rope_freqs"), std::string::npos);
}

TEST(GgufToHf, PlanOrdersTensorsEmbeddingsLayersNormHead) {
  const GgufFile g = GgufFile::open(testdata("tiny_gpt2.gguf").string());
  const GgufConversionPlan plan = plan_gguf_to_hf(g);
  ASSERT_EQ(plan.tensors.size(), 29u);  // embed + 2 x 13 + norm + lm_head
  EXPECT_EQ(plan.tensors.front().hf_name, "model.embed_tokens.weight");
  EXPECT_EQ(plan.tensors[1].hf_name.rfind("model.layers.0.", 0), 0u);
  EXPECT_EQ(plan.tensors[14].hf_name.rfind("model.layers.1.", 0), 0u);
  EXPECT_EQ(plan.tensors[27].hf_name, "model.norm.weight");
  EXPECT_EQ(plan.tensors[28].hf_name, "lm_head.weight");
  for (const auto& t : plan.tensors) {
    const bool q = t.hf_name.find("q_proj") != std::string::npos, k = t.hf_name.find("k_proj") != std::string::npos;
    EXPECT_EQ(t.rotary_heads, q ? 4 : k ? 2 : 0) << t.hf_name;
  }
}

// ================================================================================================
// tokenizer
// ================================================================================================

TEST(GgufTokenizer, Gpt2VocabularyMergesAndSmollmPreTokenizer) {
  const GgufFile g = GgufFile::open(testdata("tiny_gpt2.gguf").string());
  const HfTokenizerFiles t = build_hf_tokenizer(g);
  const json& m = t.tokenizer["model"];
  const auto tokens = g.get_array<std::string>("tokenizer.ggml.tokens");
  const auto merges = g.get_array<std::string>("tokenizer.ggml.merges");
  ASSERT_EQ(m["vocab"].size(), tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) EXPECT_EQ(m["vocab"][tokens[i]], i) << tokens[i];
  EXPECT_EQ(m["type"], "BPE");
  EXPECT_EQ(m["byte_fallback"], false);
  EXPECT_EQ(m["ignore_merges"], false);
  ASSERT_EQ(m["merges"].size(), merges.size());
  for (size_t i = 0; i < merges.size(); ++i)
    EXPECT_EQ(m["merges"][i][0].get<std::string>() + " " + m["merges"][i][1].get<std::string>(), merges[i]) << i;
  // smollm = llama.cpp's digits-then-GPT-2 split, then byte-level.
  const json& pre = t.tokenizer["pre_tokenizer"]["pretokenizers"];
  ASSERT_EQ(pre.size(), 3u);
  EXPECT_EQ(pre[0]["pattern"]["Regex"], "\\p{N}");
  EXPECT_EQ(pre[0]["behavior"], "Isolated");
  EXPECT_EQ(pre[1]["pattern"]["Regex"], "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+");
  EXPECT_EQ(pre[2]["type"], "ByteLevel");
  EXPECT_EQ(pre[2]["use_regex"], false);
  EXPECT_EQ(t.tokenizer["decoder"]["type"], "ByteLevel");
  EXPECT_EQ(t.tokenizer["post_processor"]["type"], "ByteLevel");  // add_bos_token false
  // Control tokens special, the user-defined one not; all matched in raw text.
  const json& added = t.tokenizer["added_tokens"];
  ASSERT_EQ(added.size(), 4u);
  EXPECT_EQ(added[0]["content"], "<|endoftext|>");
  EXPECT_EQ(added[2]["id"], 2);
  EXPECT_EQ(added[2]["special"], true);
  EXPECT_EQ(added[3]["content"], "<think>");
  EXPECT_EQ(added[3]["id"], 299);
  EXPECT_EQ(added[3]["special"], false);
  for (const auto& a : added) EXPECT_EQ(a["normalized"], false);
  const json& tc = t.tokenizer_config;
  EXPECT_EQ(tc["tokenizer_class"], "PreTrainedTokenizerFast");
  EXPECT_EQ(tc["bos_token"], "<|im_start|>");
  EXPECT_EQ(tc["eos_token"], "<|im_end|>");
  EXPECT_EQ(tc["pad_token"], "<|endoftext|>");
  EXPECT_EQ(tc["add_bos_token"], false);
  EXPECT_EQ(tc["chat_template"], g.get_string("tokenizer.chat_template"));
  EXPECT_EQ(tc["model_max_length"], 128);
  EXPECT_EQ(tc["added_tokens_decoder"]["299"]["special"], false);
  // eos plus the end-of-turn token.
  EXPECT_EQ(t.generation_config["eos_token_id"], json::array({2, 0}));
  EXPECT_EQ(t.generation_config["bos_token_id"], 1);
}

TEST(GgufTokenizer, SentencePieceGetsByteFallbackSpacePrefixAndBos) {
  const GgufFile g = GgufFile::open(testdata("tiny_spm.gguf").string());
  const HfTokenizerFiles t = build_hf_tokenizer(g);
  const json& m = t.tokenizer["model"];
  EXPECT_EQ(m["byte_fallback"], true);
  EXPECT_EQ(m["fuse_unk"], true);
  EXPECT_EQ(m["unk_token"], "<unk>");
  EXPECT_EQ(m["vocab"]["<0x41>"], 3 + 0x41);
  const json& norms = t.tokenizer["normalizer"]["normalizers"];
  ASSERT_EQ(norms.size(), 2u);
  EXPECT_EQ(norms[0]["type"], "Prepend");
  EXPECT_EQ(norms[0]["prepend"], "\u2581");
  EXPECT_EQ(norms[1]["type"], "Replace");
  EXPECT_TRUE(t.tokenizer["pre_tokenizer"].is_null());
  const json& post = t.tokenizer["post_processor"];
  EXPECT_EQ(post["type"], "TemplateProcessing");
  EXPECT_EQ(post["single"][0]["SpecialToken"]["id"], "<s>");
  EXPECT_EQ(post["special_tokens"]["<s>"]["ids"], json::array({1}));
  EXPECT_EQ(t.tokenizer_config["add_bos_token"], true);
  EXPECT_EQ(t.tokenizer_config["unk_token"], "<unk>");
  // The first merge builds the best-scoring mergeable token.
  const auto tokens = g.get_array<std::string>("tokenizer.ggml.tokens");
  const auto scores = g.get_array<float>("tokenizer.ggml.scores");
  const auto types = g.get_array<int32_t>("tokenizer.ggml.token_type");
  ASSERT_FALSE(m["merges"].empty());
  size_t best = 0;
  float best_score = -1e30f;
  for (size_t i = 0; i < tokens.size(); ++i)
    if (types[i] == 1 && tokens[i].size() > 1 && scores[i] > best_score) { best_score = scores[i]; best = i; }
  EXPECT_EQ(m["merges"][0][0].get<std::string>() + m["merges"][0][1].get<std::string>(), tokens[best]);
}

TEST(GgufTokenizer, SentencePieceMergesFollowScoresByHand) {
  // pieces: abc (score -0.5) > ab (-1) > bc (-2); "<s>" control and "<0x61>" byte take no part.
  const std::vector<std::string> tokens = {"<s>", "<0x61>", "a", "b", "c", "ab", "bc", "abc", "x\xC3\xA9"};
  const std::vector<int32_t> types = {3, 6, 1, 1, 1, 1, 1, 1, 1};
  const std::vector<float> scores = {0, 0, -10, -11, -12, -1, -2, -0.5f, -3};
  const auto m = sentencepiece_merges(tokens, types, scores);
  // abc splits as a|bc and ab|c (shorter left first), then ab, then bc; "xé" has no split whose
  // halves are both tokens ("é" is not one), and splits only at character boundaries.
  const std::vector<std::pair<std::string, std::string>> want = {{"a", "bc"}, {"ab", "c"}, {"a", "b"}, {"b", "c"}};
  EXPECT_EQ(m, want);
}

// ================================================================================================
// hand-made GGUFs: the whole pipeline on known values, and every refusal
// ================================================================================================

TEST(GgufToHf, HandMadeGgufRowsLandWhereTheHandWorkedOrderSays) {
  test::TempDir d;
  test::write_file(d.path() / "m.gguf", tiny_gguf());
  const GgufFile g = GgufFile::open(d.str("m.gguf"));
  convert_gguf_to_hf(g, DType::F32, job_for(d.path() / "out"));
  SafetensorsFile st = SafetensorsFile::open(d.str("out/model.safetensors"));
  // Builder values: tensor #t (in tiny_gguf order) element e = t*1000 + e; q is #2, k #3, v #4.
  auto check = [&](const char* name, int64_t tensor_index, int64_t rows, const std::vector<int64_t>& src_row_of) {
    const TensorView* t = st.find(name);
    ASSERT_NE(t, nullptr) << name;
    ASSERT_EQ(t->shape, (std::vector<int64_t>{rows, 8}));
    const std::vector<float> v = values_f32(*t);
    for (int64_t k = 0; k < rows; ++k)
      for (int64_t c = 0; c < 8; ++c)
        ASSERT_EQ(v[static_cast<size_t>(k * 8 + c)], static_cast<float>(tensor_index * 1000 + src_row_of[static_cast<size_t>(k)] * 8 + c))
            << name << " row " << k;
  };
  check("model.layers.0.self_attn.q_proj.weight", 2, 8, {0, 2, 1, 3, 4, 6, 5, 7});  // 2 heads of 4
  check("model.layers.0.self_attn.k_proj.weight", 3, 4, {0, 2, 1, 3});              // 1 KV head
  check("model.layers.0.self_attn.v_proj.weight", 4, 4, {0, 1, 2, 3});              // untouched
  const json cfg = read_json(d.path() / "out/config.json");
  EXPECT_EQ(cfg["tie_word_embeddings"], true);
  EXPECT_EQ(cfg["head_dim"], 4);
  EXPECT_EQ(cfg["eos_token_id"], 3);
  EXPECT_FALSE(cfg.contains("bos_token_id"));
  EXPECT_EQ(st.tensors().size(), 11u);
}

TEST(GgufToHf, RefusesWhatItCannotConvertNamingTheKeyOrTensor) {
  auto plan = [](const TinyGgufSpec& s) { return [s] { plan_gguf_to_hf(open_built(tiny_gguf(s))); }; };
  {
    TinyGgufSpec s;
    s.arch = "qwen2";
    expect_error(plan(s), Kind::Unsupported, {"built.gguf", "qwen2", "llama"});
  }
  {
    TinyGgufSpec s;
    s.skip = {"block_count"};
    expect_error(plan(s), Kind::Missing, {"llama.block_count"});
  }
  {
    TinyGgufSpec s;
    s.skip = {"blk.0.ffn_up.weight"};
    expect_error(plan(s), Kind::Missing, {"blk.0.ffn_up.weight"});
  }
  {
    TinyGgufSpec s;
    s.extra_tensors = [](GgufBuilder& b) { b.tensor("blk.0.ffn_gate_exps.weight", {8, 8, 2}); };
    expect_error(plan(s), Kind::Unsupported, {"blk.0.ffn_gate_exps.weight", "not part of the Llama layout"});
  }
  {
    TinyGgufSpec s;  // k has 4 rows for 1 KV head; give it 6
    s.skip = {"blk.0.attn_k.weight"};
    s.extra_tensors = [](GgufBuilder& b) { b.tensor("blk.0.attn_k.weight", {8, 6}); };
    expect_error(plan(s), Kind::BadFile, {"blk.0.attn_k.weight", "[4,8]", "[6,8]"});
  }
  {
    TinyGgufSpec s;
    s.extra_tensors = [](GgufBuilder& b) { b.tensor("blk.3.attn_norm.weight", {8}); };
    expect_error(plan(s), Kind::BadFile, {"blk.3.attn_norm.weight", "block_count"});
  }
  {
    TinyGgufSpec s;  // a q bias without k/v/o biases
    s.extra_tensors = [](GgufBuilder& b) { b.tensor("blk.0.attn_q.bias", {8}); };
    expect_error(plan(s), Kind::Missing, {"blk.0.attn_k.bias"});
  }
  {
    TinyGgufSpec s;
    s.extra_keys = [](GgufBuilder& b) { b.str("llama.rope.scaling.type", "yarn"); };
    expect_error(plan(s), Kind::Unsupported, {"yarn"});
  }
  {
    TinyGgufSpec s;  // factors that follow no llama3 curve
    s.extra_tensors = [](GgufBuilder& b) { b.tensor("rope_freqs.weight", {2}, {3.0f, 1.0f}); };
    expect_error(plan(s), Kind::Unsupported, {"rope_freqs.weight"});
  }
  // Float hyper-parameters: JSON has no NaN/Inf (config.json would get null) and a negative
  // epsilon or rope base makes no model.
  {
    TinyGgufSpec s;
    s.skip = {"rms"};
    s.extra_keys = [](GgufBuilder& b) { b.f32("llama.attention.layer_norm_rms_epsilon", std::nanf("")); };
    expect_error(plan(s), Kind::BadFile,
                 {"built.gguf: metadata key 'llama.attention.layer_norm_rms_epsilon' must be a finite non-negative "
                  "number (expected >= 0, got nan)"});
  }
  {
    TinyGgufSpec s;
    s.skip = {"rms"};
    s.extra_keys = [](GgufBuilder& b) { b.f32("llama.attention.layer_norm_rms_epsilon", -1e-5f); };
    expect_error(plan(s), Kind::BadFile, {"must be a finite non-negative number (expected >= 0, got -1e-05)"});
  }
  for (const float theta : {0.0f, -10000.0f, INFINITY}) {
    TinyGgufSpec s;
    s.extra_keys = [theta](GgufBuilder& b) { b.f32("llama.rope.freq_base", theta); };
    char got[32];
    std::snprintf(got, sizeof got, "%g", static_cast<double>(theta));
    expect_error(plan(s), Kind::BadFile,
                 {"metadata key 'llama.rope.freq_base' must be a finite positive number (expected > 0, got " +
                  std::string(got) + ")"});
  }
  auto tok = [](const TinyGgufSpec& s) { return [s] { build_hf_tokenizer(open_built(tiny_gguf(s))); }; };
  {
    TinyGgufSpec s;
    s.tok_model = "bert";
    expect_error(tok(s), Kind::Unsupported, {"bert", "gpt2"});
  }
  {
    TinyGgufSpec s;
    s.pre = "no-such-pre";
    expect_error(tok(s), Kind::Unsupported, {"no-such-pre", "smollm", "llama-bpe"});
  }
  {
    TinyGgufSpec s;
    s.skip = {"merges"};
    expect_error(tok(s), Kind::Missing, {"tokenizer.ggml.merges"});
  }
  {
    TinyGgufSpec s;
    s.skip = {"tokenizer"};
    expect_error(tok(s), Kind::Missing, {"tokenizer.ggml.model"});
  }
  {
    TinyGgufSpec s;
    s.extra_keys = [](GgufBuilder& b) { b.u32("tokenizer.ggml.bos_token_id", 99); };
    const HfTokenizerFiles t = build_hf_tokenizer(open_built(tiny_gguf(s)));
    EXPECT_FALSE(t.bos_id.has_value());  // out of range: ignored with a note, as llama.cpp does
    ASSERT_FALSE(t.notes.empty());
    EXPECT_NE(t.notes[0].find("bos_token_id"), std::string::npos);
  }
  {
    TinyGgufSpec s;  // no pre key: llama.cpp's "default" (with a note)
    s.pre = "";
    const HfTokenizerFiles t = build_hf_tokenizer(open_built(tiny_gguf(s)));
    EXPECT_EQ(t.tokenizer["pre_tokenizer"]["pretokenizers"].size(), 5u);
  }
}

TEST(OutputFolder, RelativeOutputPathsWorkAndAreAtomic) {
  test::TempDir d;
  const fs::path old = fs::current_path();
  fs::current_path(d.path());
  {
    PartialFolder pf = PartialFolder::create("out", "", false);  // nothing of "out" exists yet
    EXPECT_EQ(pf.out(), (fs::canonical(d.path()) / "out").string());
    test::write_text(fs::path(pf.path()) / "f", "x");
    EXPECT_FALSE(fs::exists("out"));
    pf.publish();
  }
  EXPECT_EQ(test::read_text("out/f"), "x");
  {
    PartialFolder pf = PartialFolder::create("slash/", "", false);  // a trailing separator names the folder
    EXPECT_EQ(pf.out(), (fs::canonical(d.path()) / "slash").string());
    pf.publish();
  }
  EXPECT_TRUE(fs::is_directory("slash"));
  fs::remove_all("slash");
  {
    PartialFolder pf = PartialFolder::create("out2", "", false);
    test::write_text(fs::path(pf.path()) / "f", "x");
  }  // not published: nothing is left
  EXPECT_FALSE(fs::exists("out2"));
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(".")) n += e.path().filename().string() != "out";
  EXPECT_EQ(n, 0u);
  expect_error([] { check_output_folder("out", "", false); }, Kind::Usage, {"not empty"});
  expect_error([] { check_output_folder("out/inside", "out", false); }, Kind::Usage, {"inside"});
  expect_error([] { check_output_folder("no/such/parent/x", "", false); }, Kind::Missing, {"parent"});
  fs::current_path(old);
}

TEST(GgufToHf, CliRefusesNonGgufFilesAndMeaninglessOptions) {
  test::TempDir d;
  test::write_text(d.path() / "x.gguf", "not a gguf");
  auto r = run_qtool({"convert", d.str("x.gguf"), "-o", d.str("out")});
  EXPECT_EQ(r.exit_code, 5) << r.err;
  EXPECT_NE(r.err.find("x.gguf"), std::string::npos);
  r = run_qtool({"convert", testdata("tiny_spm.gguf").string(), "-o", d.str("out"), "--dequantize"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  r = run_qtool({"convert", d.str("nope.gguf"), "-o", d.str("out")});
  EXPECT_EQ(r.exit_code, 4) << r.err;
  r = run_qtool({"convert", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  for (const char* opt : {"--dtype", "--dequantize", "--format", "--scale-dtype", "=bf16"})
    EXPECT_NE(r.out.find(opt), std::string::npos) << opt;
}

// ================================================================================================
// quantized layouts
// ================================================================================================

constexpr int kH = 32, kI = 64, kV = 64;

struct Tensor {
  TensorSpec spec;
  std::vector<uint8_t> bytes;
};

std::vector<uint8_t> f32le(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}
std::vector<uint8_t> bf16le(const std::vector<float>& v) {
  std::vector<uint8_t> b;
  for (float f : v) {
    const uint16_t h = bf16_from_f32(f);
    b.push_back(static_cast<uint8_t>(h));
    b.push_back(static_cast<uint8_t>(h >> 8));
  }
  return b;
}

void write_checkpoint(const fs::path& dir, const std::vector<Tensor>& ts, const json& config) {
  fs::create_directories(dir);
  std::vector<TensorSpec> specs;
  for (const auto& t : ts) specs.push_back(t.spec);
  SafetensorsWriter w((dir / "model.safetensors").string(), specs);
  for (const auto& t : ts) w.write(t.spec.name, t.bytes);
  w.commit();
  write_config_json(dir.string(), config);
  test::write_text(dir / "tokenizer.json", "{\"dummy\": true}\n");
}

// A per-tensor FP8 checkpoint, as AutoFP8 (legacy) or compressed-tensors lays it out: FP8 codes
// (random, never the NaN codes), scales of `scale_dtype` with shape [] (legacy) or [1] (CT) whose
// values are BF16-representable (so any scale dtype holds them exactly), static input scales,
// k/v cache scales; embeddings, norms and lm_head in BF16.
std::vector<Tensor> fp8_tensor_checkpoint(bool legacy, DType scale_dtype, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uni(0.001f, 0.05f);
  auto scale = [&] { return round_to_dtype(DType::BF16, uni(rng)); };
  auto scalar = [&](const std::string& name) {
    const float v = scale();
    std::vector<uint8_t> b(static_cast<size_t>(dtype_bits(scale_dtype) / 8));
    store_float(scale_dtype, v, b.data());
    return Tensor{{name, scale_dtype, legacy ? std::vector<int64_t>{} : std::vector<int64_t>{1}}, b};
  };
  auto codes = [&](int64_t out, int64_t in) {
    std::vector<uint8_t> b(static_cast<size_t>(out * in));
    for (auto& x : b) {
      x = static_cast<uint8_t>(rng());
      if ((x & 0x7F) == 0x7F) x ^= 1;  // not NaN
    }
    return b;
  };
  auto dense = [&](int64_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = uni(rng);
    return bf16le(v);
  };
  std::vector<Tensor> ts;
  ts.push_back({{"model.embed_tokens.weight", DType::BF16, {kV, kH}}, dense(kV * kH)});
  const std::string p = "model.layers.0.";
  ts.push_back({{p + "input_layernorm.weight", DType::BF16, {kH}}, dense(kH)});
  const std::pair<const char*, std::pair<int, int>> mods[] = {
      {"self_attn.q_proj", {kH, kH}}, {"self_attn.k_proj", {kH / 2, kH}}, {"self_attn.v_proj", {kH / 2, kH}},
      {"self_attn.o_proj", {kH, kH}}, {"mlp.gate_proj", {kI, kH}},        {"mlp.up_proj", {kI, kH}},
      {"mlp.down_proj", {kH, kI}}};
  for (const auto& [m, shape] : mods) {
    ts.push_back({{p + m + ".weight", DType::F8_E4M3, {shape.first, shape.second}}, codes(shape.first, shape.second)});
    ts.push_back(scalar(p + m + ".weight_scale"));
    ts.push_back(scalar(p + m + ".input_scale"));
  }
  ts.push_back(scalar(p + "self_attn.k_scale"));
  ts.push_back(scalar(p + "self_attn.v_scale"));
  ts.push_back({{p + "post_attention_layernorm.weight", DType::BF16, {kH}}, dense(kH)});
  ts.push_back({{"model.norm.weight", DType::BF16, {kH}}, dense(kH)});
  ts.push_back({{"lm_head.weight", DType::BF16, {kV, kH}}, dense(kV * kH)});
  return ts;
}

json base_config() {
  return {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"hidden_size", kH},
          {"torch_dtype", "bfloat16"}, {"num_hidden_layers", 1}};
}

json legacy_config() {
  json c = base_config();
  c["quantization_config"] = {{"quant_method", "fp8"}, {"activation_scheme", "static"},
                              {"ignored_layers", {"lm_head"}}, {"kv_cache_scheme", "static"}};
  return c;
}

json ct_tensor_config() {
  json c = base_config();
  const json w = {{"num_bits", 8}, {"type", "float"}, {"symmetric", true}, {"strategy", "tensor"}, {"dynamic", false}};
  c["quantization_config"] = {{"quant_method", "compressed-tensors"}, {"format", "float-quantized"},
                              {"quantization_status", "compressed"},
                              {"config_groups", {{"group_0", {{"targets", {"Linear"}}, {"weights", w}, {"input_activations", w}}}}},
                              {"kv_cache_scheme", w},
                              {"ignore", {"lm_head"}}};
  return c;
}

TEST(ConvertQuantized, LegacyFp8ToCompressedTensorsAndBackIsByteExact) {
  test::TempDir d;
  const auto ts = fp8_tensor_checkpoint(true, DType::F32, 1);
  write_checkpoint(d.path() / "legacy", ts, legacy_config());
  auto r = run_qtool({"convert", d.str("legacy"), "-o", d.str("ct"), "--format", "compressed-tensors"});
  ASSERT_EQ(r.exit_code, 0) << r.err;

  const json cfg = read_json(d.path() / "ct/config.json");
  const json& qc = cfg["quantization_config"];
  EXPECT_EQ(qc["quant_method"], "compressed-tensors");
  EXPECT_EQ(qc["format"], "float-quantized");
  EXPECT_EQ(qc["quantization_status"], "compressed");
  const json& g = qc["config_groups"]["group_0"];
  EXPECT_EQ(g["weights"]["strategy"], "tensor");
  EXPECT_EQ(g["weights"]["type"], "float");
  EXPECT_EQ(g["input_activations"]["strategy"], "tensor");
  EXPECT_EQ(g["input_activations"]["dynamic"], false);
  EXPECT_EQ(qc["kv_cache_scheme"]["strategy"], "tensor");
  // The source's list, then every other unquantized 2-D weight (compressed-tensors' model-free
  // reader would otherwise expect the embedding quantized).
  EXPECT_EQ(qc["ignore"], json::array({"lm_head", "model.embed_tokens"}));
  EXPECT_EQ(cfg["hidden_size"], kH);  // the rest of config.json is kept
  EXPECT_EQ(test::read_text(d.path() / "ct/tokenizer.json"), "{\"dummy\": true}\n");
  const QuantInfo info = parse_quant_info(cfg);
  EXPECT_TRUE(info.problems.empty()) << info.problems.front();

  // Same codes, same scale values, CT shapes.
  SafetensorsFile ct = SafetensorsFile::open(d.str("ct/model.safetensors"));
  ASSERT_EQ(ct.tensors().size(), ts.size());
  for (const auto& t : ts) {
    const TensorView* o = ct.find(t.spec.name);
    ASSERT_NE(o, nullptr) << t.spec.name;
    EXPECT_EQ(std::vector<uint8_t>(o->bytes.begin(), o->bytes.end()), t.bytes) << t.spec.name;
    EXPECT_EQ(o->dtype, t.spec.dtype);
    EXPECT_EQ(o->shape, t.spec.shape.empty() ? std::vector<int64_t>{1} : t.spec.shape) << t.spec.name;
  }

  r = run_qtool({"convert", d.str("ct"), "-o", d.str("back"), "--format", "legacy-fp8"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(test::read_file(d.path() / "back/model.safetensors"), test::read_file(d.path() / "legacy/model.safetensors"));
  json want = legacy_config();
  want["quantization_config"]["ignored_layers"] = {"lm_head", "model.embed_tokens"};
  EXPECT_EQ(read_json(d.path() / "back/config.json"), want);
}

TEST(CtConfig, AnInvalidIgnorePatternInACheckpointIsAProblemAndAnErrorNamingTheFile) {
  json cfg = {{"quantization_config",
               {{"quant_method", "compressed-tensors"},
                {"format", "float-quantized"},
                {"quantization_status", "compressed"},
                {"ignore", {"lm_head", "re:.*mlp.(gate"}},
                {"config_groups",
                 {{"group_0",
                   {{"targets", {"Linear", "re:*x"}},
                    {"weights", {{"num_bits", 8}, {"type", "float"}, {"strategy", "channel"}}}}}}}}}};
  const QuantInfo info = parse_quant_info(cfg, "/m/config.json");
  EXPECT_EQ(info.problems,
            (std::vector<std::string>{
                "ignore 're:.*mlp.(gate' is not a valid regular expression: missing closing parenthesis at offset 11",
                "config group 'group_0' targets 're:*x' is not a valid regular expression: quantifier does not "
                "follow a repeatable item at offset 0"}));
  try {
    group_for_module(info, "model.layers.0.mlp.up_proj");
    ADD_FAILURE() << "no error";
  } catch (const InputError& e) {
    EXPECT_EQ(e.kind(), InputError::Kind::BadFile);
    EXPECT_EQ(std::string(e.what()),
              "/m/config.json: quantization_config.ignore 're:.*mlp.(gate' is not a valid regular expression: "
              "missing closing parenthesis at offset 11");
  }
}

TEST(CtConfig, AnUnknownFormatIsAProblemAndConvertRefusesIt) {
  test::TempDir d;
  write_checkpoint(d.path() / "legacy", fp8_tensor_checkpoint(true, DType::F32, 1), legacy_config());
  auto r = run_qtool({"convert", d.str("legacy"), "-o", d.str("ct"), "--format", "compressed-tensors"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json cfg = read_json(d.path() / "ct/config.json");
  cfg["quantization_config"]["format"] = "float-quantised";
  test::write_text(d.path() / "ct/config.json", cfg.dump(2));
  const QuantInfo info = parse_quant_info(cfg);
  EXPECT_EQ(info.unknown_format, "float-quantised");
  const std::string problem =
      "format 'float-quantised' is not a compressed-tensors format (dense, sparse-bitmask, sparse-24-bitmask, "
      "int-quantized, float-quantized, naive-quantized, pack-quantized, marlin-24, mixed-precision, "
      "nvfp4-pack-quantized, mxfp4-pack-quantized, mxfp6-pack-quantized, mxfp8-quantized)";
  EXPECT_EQ(info.problems, std::vector<std::string>{problem});
  auto back = run_qtool({"convert", d.str("ct"), "-o", d.str("back"), "--format", "legacy-fp8"});
  EXPECT_EQ(back.exit_code, 3) << back.err;
  EXPECT_CONTAINS(back.err, "config.json: quantization_config: " + problem);
}

TEST(ConvertQuantized, CompressedTensorsBf16ScalesSurviveTheLegacyF32RoundTrip) {
  test::TempDir d;
  const auto ts = fp8_tensor_checkpoint(false, DType::BF16, 2);
  write_checkpoint(d.path() / "ct", ts, ct_tensor_config());
  ASSERT_EQ(run_qtool({"convert", d.str("ct"), "-o", d.str("legacy"), "--format", "legacy-fp8"}).exit_code, 0);
  SafetensorsFile lg = SafetensorsFile::open(d.str("legacy/model.safetensors"));
  const TensorView* s = lg.find("model.layers.0.mlp.up_proj.weight_scale");
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->dtype, DType::F32);  // AutoFP8 layout
  EXPECT_TRUE(s->shape.empty());
  const json qc = read_json(d.path() / "legacy/config.json")["quantization_config"];
  EXPECT_EQ(qc, (json{{"quant_method", "fp8"}, {"activation_scheme", "static"}, {"ignored_layers", {"lm_head", "model.embed_tokens"}},
                      {"kv_cache_scheme", "static"}}));
  auto r = run_qtool({"convert", d.str("legacy"), "-o", d.str("back"), "--format", "compressed-tensors", "--scale-dtype", "bf16"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(test::read_file(d.path() / "back/model.safetensors"), test::read_file(d.path() / "ct/model.safetensors"));
}

TEST(ConvertQuantized, NarrowingScalesRefusesValuesThatAreNotExact) {
  test::TempDir d;
  auto ts = fp8_tensor_checkpoint(true, DType::F32, 3);
  for (auto& t : ts)
    if (t.spec.name == "model.layers.0.mlp.gate_proj.weight_scale") t.bytes = f32le({0.1f});  // not a bf16 value
  write_checkpoint(d.path() / "legacy", ts, legacy_config());
  auto r = run_qtool({"convert", d.str("legacy"), "-o", d.str("ct"), "--format", "compressed-tensors", "--scale-dtype", "bf16"});
  EXPECT_EQ(r.exit_code, 6) << r.err;
  EXPECT_NE(r.err.find("model.layers.0.mlp.gate_proj.weight_scale"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("0.1"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(d.path() / "ct"));
  // Widening (the default keeps F32) is always exact.
  EXPECT_EQ(run_qtool({"convert", d.str("legacy"), "-o", d.str("ct"), "--format", "compressed-tensors"}).exit_code, 0);
}

TEST(ConvertQuantized, QtoolFp8BlockConvertsToLegacyBlockAndBackByteExact) {
  test::TempDir d;
  ASSERT_EQ(run_qtool({"tiny-model", d.str("tiny")}).exit_code, 0);
  ASSERT_EQ(run_qtool({"quantize", d.str("tiny"), "-o", d.str("ct"), "--scheme", "fp8-block"}).exit_code, 0);
  auto r = run_qtool({"convert", d.str("ct"), "-o", d.str("legacy"), "--format", "legacy-fp8"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json qc = read_json(d.path() / "legacy/config.json")["quantization_config"];
  EXPECT_EQ(qc["quant_method"], "fp8");
  EXPECT_EQ(qc["activation_scheme"], "dynamic");
  EXPECT_EQ(qc["weight_block_size"], json::array({128, 128}));
  // The source's ignore list, in order (qtool names the embedding too).
  EXPECT_EQ(qc["ignored_layers"], read_json(d.path() / "ct/config.json")["quantization_config"]["ignore"]);
  SafetensorsFile ct = SafetensorsFile::open(d.str("ct/model.safetensors"));
  SafetensorsFile lg = SafetensorsFile::open(d.str("legacy/model.safetensors"));
  const TensorView* a = ct.find("model.layers.1.mlp.down_proj.weight_scale");
  const TensorView* b = lg.find("model.layers.1.mlp.down_proj.weight_scale_inv");
  ASSERT_TRUE(a && b);
  EXPECT_EQ(b->dtype, DType::F32);
  EXPECT_EQ(b->shape, a->shape);
  EXPECT_EQ(values_f32(*b), values_f32(*a));
  EXPECT_EQ(lg.find("model.layers.1.mlp.down_proj.weight_scale"), nullptr);

  r = run_qtool({"convert", d.str("legacy"), "-o", d.str("back"), "--format", "compressed-tensors", "--scale-dtype", "bf16"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(test::read_file(d.path() / "back/model.safetensors"), test::read_file(d.path() / "ct/model.safetensors"));
  const json back = read_json(d.path() / "back/config.json")["quantization_config"];
  const json orig = read_json(d.path() / "ct/config.json")["quantization_config"];
  EXPECT_EQ(back["config_groups"], orig["config_groups"]);
  EXPECT_EQ(back["format"], orig["format"]);
  EXPECT_EQ(back["ignore"], orig["ignore"]);
  // The tokenizer travels along; the old manifest is replaced by the conversion's own.
  EXPECT_EQ(test::read_file(d.path() / "back/tokenizer.json"), test::read_file(d.path() / "tiny/tokenizer.json"));
  EXPECT_EQ(read_json(d.path() / "back/qtool_manifest.json")["conversion"], "legacy-fp8-to-compressed-tensors");
}

TEST(ConvertQuantized, RefusesWhatHasNoLegacyEquivalent) {
  test::TempDir d;
  ASSERT_EQ(run_qtool({"tiny-model", d.str("tiny")}).exit_code, 0);
  for (const char* scheme : {"fp8-dynamic", "int8-dynamic", "fp8-w8a16", "w4a16"}) {
    const std::string q = d.str(std::string("q-") + scheme);
    ASSERT_EQ(run_qtool({"quantize", d.str("tiny"), "-o", q, "--scheme", scheme}).exit_code, 0);
    auto r = run_qtool({"convert", q, "-o", d.str("out"), "--format", "legacy-fp8"});
    EXPECT_EQ(r.exit_code, 5) << scheme << ": " << r.err;
    EXPECT_NE(r.err.find("config.json"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(d.path() / "out"));
  }
  auto r = run_qtool({"convert", d.str("q-fp8-dynamic"), "-o", d.str("out"), "--format", "compressed-tensors"});
  EXPECT_EQ(r.exit_code, 2) << r.err;  // already that layout
  r = run_qtool({"convert", d.str("tiny"), "-o", d.str("out"), "--dequantize"});
  EXPECT_EQ(r.exit_code, 2) << r.err;  // not quantized
  r = run_qtool({"convert", d.str("q-fp8-dynamic"), "-o", d.str("out")});
  EXPECT_EQ(r.exit_code, 2) << r.err;  // no mode
  r = run_qtool({"convert", d.str("q-fp8-dynamic"), "-o", d.str("out"), "--format", "legacy-fp8", "--dtype", "f32"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
}

TEST(ConvertQuantized, ReadingRejectsBrokenLayoutsNamingTheTensor) {
  auto read = [](const fs::path& dir) { return [dir] { read_quantized_checkpoint(ModelFolder::open(dir.string())); }; };
  {
    test::TempDir d;
    auto ts = fp8_tensor_checkpoint(true, DType::F32, 4);
    for (auto& t : ts)
      if (t.spec.name == "model.layers.0.mlp.up_proj.weight_scale") { t.spec.shape = {2}; t.bytes = f32le({1, 1}); }
    write_checkpoint(d.path(), ts, legacy_config());
    expect_error(read(d.path()), Kind::BadFile, {"model.layers.0.mlp.up_proj.weight_scale", "[] or [1]", "[2]"});
  }
  {
    test::TempDir d;
    auto ts = fp8_tensor_checkpoint(true, DType::F32, 5);
    ts.erase(std::remove_if(ts.begin(), ts.end(), [](const Tensor& t) { return t.spec.name == "model.layers.0.mlp.up_proj.weight_scale"; }), ts.end());
    write_checkpoint(d.path(), ts, legacy_config());
    expect_error(read(d.path()), Kind::Missing, {"model.layers.0.mlp.up_proj.weight_scale", "without its scale"});
  }
  {
    test::TempDir d;
    auto ts = fp8_tensor_checkpoint(false, DType::BF16, 6);
    ts.push_back({{"model.layers.0.mlp.up_proj.weight_zero_point", DType::I8, {1}}, {0}});
    write_checkpoint(d.path(), ts, ct_tensor_config());
    expect_error(read(d.path()), Kind::Unsupported, {"weight_zero_point", "asymmetric"});
  }
  {
    test::TempDir d;
    write_checkpoint(d.path(), fp8_tensor_checkpoint(false, DType::BF16, 7), base_config());
    expect_error(read(d.path()), Kind::Usage, {"not quantized"});
  }
}

// ---- dequantization ------------------------------------------------------------------------------

// The codes of one module as one I8/F8 byte per element (unpacking pack-quantized words).
std::vector<uint8_t> module_codes(const Checkpoint& ck, const std::string& m, const QuantArgs& a, std::vector<int64_t>& shape) {
  if (const TensorView* w = ck.find(m + ".weight")) {
    shape = w->shape;
    return {w->bytes.begin(), w->bytes.end()};
  }
  const TensorView* p = ck.find(m + ".weight_packed");
  const TensorView* s = ck.find(m + ".weight_shape");
  int64_t sh[2];
  std::memcpy(sh, s->bytes.data(), 16);
  shape = {sh[0], sh[1]};
  auto u = unpack_int_codes(reinterpret_cast<const int32_t*>(p->bytes.data()), sh[0], sh[1], a.num_bits());
  return {reinterpret_cast<const uint8_t*>(u.data()), reinterpret_cast<const uint8_t*>(u.data()) + u.size()};
}

class DequantizeScheme : public ::testing::TestWithParam<std::string> {};

TEST_P(DequantizeScheme, GivesLibquantValuesWithinTheQuantizationErrorOfTheOriginal) {
  const Scheme* scheme = find_scheme(GetParam());
  ASSERT_NE(scheme, nullptr);
  test::TempDir d;
  ASSERT_EQ(run_qtool({"tiny-model", d.str("tiny")}).exit_code, 0);
  ASSERT_EQ(run_qtool({"quantize", d.str("tiny"), "-o", d.str("q"), "--scheme", scheme->name}).exit_code, 0);
  auto r = run_qtool({"convert", d.str("q"), "-o", d.str("deq"), "--dequantize", "--dtype", "f32"});
  ASSERT_EQ(r.exit_code, 0) << r.err;

  const Checkpoint orig = Checkpoint::open(d.str("tiny"));
  const Checkpoint q = Checkpoint::open(d.str("q"));
  const Checkpoint deq = Checkpoint::open(d.str("deq"));
  ASSERT_EQ(deq.tensors().size(), orig.tensors().size());
  size_t checked = 0;
  for (const auto& o : orig.tensors()) {
    const TensorView* t = deq.find(o.name);
    ASSERT_NE(t, nullptr) << o.name;
    ASSERT_EQ(t->dtype, DType::F32) << o.name;
    ASSERT_EQ(t->shape, o.shape) << o.name;
    const std::vector<float> got = values_f32(*t), ref = values_f32(o);
    const std::string m = o.name.substr(0, o.name.size() - 7);
    const TensorView* sc = q.find(m + ".weight_scale");
    if (!sc) {  // unquantized: BF16 -> F32 is exact
      EXPECT_EQ(got, ref) << o.name;
      continue;
    }
    ++checked;
    std::vector<int64_t> shape;
    const std::vector<uint8_t> codes = module_codes(q, m, scheme->weights, shape);
    std::vector<float> want(got.size());
    dequantize(codes.data(), scheme->weights.is_float() ? DType::F8_E4M3 : DType::I8, shape, sc->bytes.data(), sc->dtype,
               scale_grid(shape, scheme->weights), want.data());
    EXPECT_EQ(got, want) << o.name;
    // Independent sanity: within the rounding error of the original weights. Per element the
    // error is at most half a code step times the scale (INT), or a relative 2^-4 of |w| plus
    // half the smallest subnormal step (FP8 E4M3), plus the BF16 rounding of w/scale
    // (relative 2^-8) that compressed-tensors' arithmetic adds.
    const std::vector<float> s = values_f32(*sc);
    const ScaleGrid grid = scale_grid(shape, scheme->weights);
    const int64_t scols = (shape[1] + grid.cols_per - 1) / grid.cols_per;
    for (int64_t i = 0; i < shape[0]; ++i)
      for (int64_t j = 0; j < shape[1]; ++j) {
        const size_t k = static_cast<size_t>(i * shape[1] + j);
        const double st = s[static_cast<size_t>((i / grid.rows_per) * scols + j / grid.cols_per)];
        const double w = std::fabs(ref[k]);
        const double bound = scheme->weights.is_float() ? w * (0.0625 + 0.0045) + st * std::ldexp(1.0, -10)
                                                        : st * 0.5 + w * 0.0045;
        ASSERT_LE(std::fabs(static_cast<double>(got[k]) - ref[k]), bound * 1.001 + 1e-12) << o.name << " [" << i << "," << j << "]";
      }
  }
  EXPECT_EQ(checked, 14u);  // 7 Linear modules x 2 layers
  // Row chunks (1 element asks for one row, or one row of 128x128 blocks) change nothing.
  ConvertJob small = job_for(d.path() / "deq-small");
  small.chunk_elements = 1;
  dequantize_model(ModelFolder::open(d.str("q")), DType::F32, small);
  EXPECT_EQ(test::read_file(d.path() / "deq-small/model.safetensors"), test::read_file(d.path() / "deq/model.safetensors"));
  const json cfg = read_json(d.path() / "deq/config.json");
  EXPECT_FALSE(cfg.contains("quantization_config"));
  EXPECT_EQ(cfg["torch_dtype"], "float32");
  EXPECT_EQ(read_json(d.path() / "deq/config.json")["hidden_size"], read_json(d.path() / "tiny/config.json")["hidden_size"]);
}

std::vector<std::string> data_free_schemes() {
  std::vector<std::string> v;
  for (const auto& s : all_schemes())
    if (!s.needs_calibration && !s.weights.microscale()) v.push_back(s.name);  // FP4 / MX: refused below
  return v;
}
INSTANTIATE_TEST_SUITE_P(EveryDataFreeScheme, DequantizeScheme, ::testing::ValuesIn(data_free_schemes()),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (auto& c : n) if (c == '-') c = '_';
                           return n;
                         });

TEST(ConvertQuantized, DequantizeRefusesAZeroNegativeOrNanScaleNamingTheTensor) {
  for (const float bad : {0.0f, -0.02f, std::nanf("")}) {
    test::TempDir d;
    auto ts = fp8_tensor_checkpoint(true, DType::F32, 8);
    for (auto& t : ts)
      if (t.spec.name == "model.layers.0.mlp.up_proj.weight_scale") std::memcpy(t.bytes.data(), &bad, 4);
    write_checkpoint(d.path() / "legacy", ts, legacy_config());
    char got[32];
    std::snprintf(got, sizeof got, "%g", static_cast<double>(bad));
    const InputError e = expect_error(
        [&] { dequantize_model(ModelFolder::open(d.str("legacy")), DType::BF16, job_for(d.path() / "out")); },
        Kind::BadValue, {});
    EXPECT_EQ(e.tensor(), "model.layers.0.mlp.up_proj.weight_scale");
    EXPECT_EQ(e.problem(), "scale element 0 is " + std::string(got) + "; a quantization scale must be positive and finite");
    EXPECT_FALSE(fs::exists(d.path() / "out"));
  }
}

TEST(ConvertQuantized, InspectScalesFlagsANegativeScaleAsAFinding) {
  test::TempDir d;
  auto ts = fp8_tensor_checkpoint(true, DType::F32, 8);
  const float bad = -0.02f;
  for (auto& t : ts)
    if (t.spec.name == "model.layers.0.mlp.up_proj.weight_scale") std::memcpy(t.bytes.data(), &bad, 4);
  write_checkpoint(d.path() / "legacy", ts, legacy_config());
  auto r = run_qtool({"inspect", d.str("legacy"), "--scales", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  const json want = {{"severity", "error"},
                     {"where", "model.layers.0.mlp.up_proj.weight_scale"},
                     {"message", "scale has 1 negative values; a quantization scale is positive (a negative one flips the "
                                 "sign of what it scales)"}};
  bool found = false;
  for (const auto& f : j["findings"]) found |= f == want;
  EXPECT_TRUE(found) << j["findings"].dump(1);
}

// ---- FP4 / MX dequantization ----------------------------------------------------------------------
// Goldens: testdata/fp4/<D>/<S>.safetensors are compressed-tensors 0.20.1's own compression of
// testdata/fp4/<D>/input.safetensors (make_goldens.py); testdata/fp4/make_dequant_goldens.py gave
// them to compressed-tensors' model-free dequantizer (CompressedTensorsDequantizer) for every
// output dtype and recorded the sha256 of each result tensor (dequant_sha256.json) and the BF16
// results themselves (<D>/<S>.dequant.safetensors for nvfp4a16, mxfp4a16, mxfp8).

// A model folder holding the golden compressed tensors of scheme `s` for model dtype `d`, with the
// scheme's compressed-tensors config (the tensors may be edited first by `patch`).
void fp4_checkpoint(const fs::path& dir, const std::string& d, const std::string& s,
                    const std::function<void(std::vector<Tensor>&)>& patch = {}) {
  SafetensorsFile f = SafetensorsFile::open(test::source_path("testdata/fp4/" + d + "/" + s + ".safetensors").string());
  std::vector<Tensor> ts;
  for (const auto& t : f.tensors()) ts.push_back({{t.name, t.dtype, t.shape}, {t.bytes.begin(), t.bytes.end()}});
  if (patch) patch(ts);
  json c = base_config();
  c["quantization_config"] = read_json(test::source_path("testdata/fp4/" + s + ".config.json"));
  write_checkpoint(dir, ts, c);
}

Tensor& tensor_named(std::vector<Tensor>& ts, const std::string& name) {
  for (auto& t : ts)
    if (t.spec.name == name) return t;
  throw std::runtime_error("no tensor " + name);
}

std::string sha256_of(std::span<const uint8_t> b) {
  Sha256 h;
  h.update(b.data(), b.size());
  return h.hex();
}

class DequantizeFp4 : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(DequantizeFp4, EqualsCompressedTensorsDecompressionByteForByteInEveryOutputDtype) {
  const auto& [md, scheme] = GetParam();
  const json want = read_json(test::source_path("testdata/fp4/dequant_sha256.json"))[md][scheme];
  test::TempDir d;
  fp4_checkpoint(d.path() / "q", md, scheme);
  for (const auto& [o, dt] : std::vector<std::pair<std::string, DType>>{{"bf16", DType::BF16}, {"f16", DType::F16}, {"f32", DType::F32}}) {
    const fs::path out = d.path() / ("deq-" + o);
    const ConvertSummary s = dequantize_model(ModelFolder::open(d.str("q")), dt, job_for(out));
    SafetensorsFile f = SafetensorsFile::open((out / "model.safetensors").string());
    ASSERT_EQ(f.tensors().size(), want[o].size()) << o;  // scales and global scales are gone
    EXPECT_EQ(s.tensors_out, want[o].size());
    for (const auto& t : f.tensors()) {
      ASSERT_TRUE(want[o].contains(t.name)) << o << " " << t.name;
      EXPECT_EQ(t.dtype, dt) << o << " " << t.name;
      EXPECT_EQ(sha256_of(t.bytes), want[o][t.name].get<std::string>()) << md << " " << scheme << " -> " << o << ": " << t.name;
    }
    const json cfg = read_json(out / "config.json");
    EXPECT_FALSE(cfg.contains("quantization_config"));
  }
  // The BF16 result itself (a readable diff when a hash differs).
  const std::string stored = scheme == "nvfp4" ? "nvfp4a16" : scheme == "mxfp4" ? "mxfp4a16" : scheme;
  SafetensorsFile gold = SafetensorsFile::open(test::source_path("testdata/fp4/" + md + "/" + stored + ".dequant.safetensors").string());
  SafetensorsFile got = SafetensorsFile::open(d.str("deq-bf16/model.safetensors"));
  for (const auto& g : gold.tensors()) {
    const TensorView* t = got.find(g.name);
    ASSERT_NE(t, nullptr) << g.name;
    EXPECT_EQ(t->shape, g.shape) << g.name;
    for (size_t i = 0; i + 1 < g.bytes.size(); i += 2)
      ASSERT_TRUE(t->bytes[i] == g.bytes[i] && t->bytes[i + 1] == g.bytes[i + 1]) << g.name << " element " << i / 2;
  }
  // Row chunks of any size change nothing; the CLI gives the same bytes.
  ConvertJob small = job_for(d.path() / "deq-small");
  small.chunk_elements = 1;
  dequantize_model(ModelFolder::open(d.str("q")), DType::BF16, small);
  EXPECT_EQ(test::read_file(d.path() / "deq-small/model.safetensors"), test::read_file(d.path() / "deq-bf16/model.safetensors"));
  auto r = run_qtool({"convert", d.str("q"), "-o", d.str("deq-cli"), "--dequantize", "--no-hash"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(test::read_file(d.path() / "deq-cli/model.safetensors"), test::read_file(d.path() / "deq-bf16/model.safetensors"));
}

INSTANTIATE_TEST_SUITE_P(EveryFp4SchemeAndModelDtype, DequantizeFp4,
                         ::testing::Combine(::testing::Values("bf16", "fp16", "fp32"),
                                            ::testing::Values("nvfp4a16", "nvfp4", "mxfp4a16", "mxfp4", "mxfp8")),
                         [](const auto& info) { return std::get<0>(info.param) + "_" + std::get<1>(info.param); });

TEST(ConvertQuantized, DequantizesQtoolsOwnFp4OutputWithinTheQuantizationErrorOfTheOriginal) {
  for (const char* scheme : {"nvfp4a16", "mxfp4a16", "mxfp4", "mxfp8"}) {
    test::TempDir d;
    ASSERT_EQ(run_qtool({"tiny-model", d.str("tiny")}).exit_code, 0);
    ASSERT_EQ(run_qtool({"quantize", d.str("tiny"), "-o", d.str("q"), "--scheme", scheme}).exit_code, 0);
    auto r = run_qtool({"convert", d.str("q"), "-o", d.str("deq"), "--dequantize", "--dtype", "f32"});
    ASSERT_EQ(r.exit_code, 0) << scheme << ": " << r.err;
    const Checkpoint orig = Checkpoint::open(d.str("tiny"));
    const Checkpoint deq = Checkpoint::open(d.str("deq"));
    ASSERT_EQ(deq.tensors().size(), orig.tensors().size()) << scheme;
    size_t quantized = 0;
    for (const auto& o : orig.tensors()) {
      const TensorView* t = deq.find(o.name);
      ASSERT_NE(t, nullptr) << scheme << " " << o.name;
      ASSERT_EQ(t->shape, o.shape);
      const std::vector<float> got = values_f32(*t), ref = values_f32(o);
      if (got == ref) continue;  // unquantized (BF16 -> F32 is exact)
      ++quantized;
      // Bound per element, from the group max |w| = a (libquant/NUMERICS.md §10): FP4's widest
      // gap is 4..6, so the error is at most one scale s; s <= a / 3.5 for MX (a / s lies in
      // [3.5, 7)), s ~ a / 6 within FP8's 1/16 for NVFP4: 0.35 a covers both. MXFP8: E4M3's
      // relative half step 1/16 of |w| <= a / 16, below 0.07 a.
      const int64_t g = std::string(scheme).starts_with("nvfp4") ? 16 : 32;
      const double rel = std::string(scheme) == "mxfp8" ? 0.07 : 0.35;
      for (int64_t i = 0; i < o.shape[0]; ++i)
        for (int64_t k = 0; k < o.shape[1] / g; ++k) {
          double amax = 0;
          for (int64_t j = 0; j < g; ++j) amax = std::max(amax, std::fabs(static_cast<double>(ref[i * o.shape[1] + k * g + j])));
          for (int64_t j = 0; j < g; ++j) {
            const size_t x = static_cast<size_t>(i * o.shape[1] + k * g + j);
            ASSERT_LE(std::fabs(static_cast<double>(got[x]) - ref[x]), rel * amax + 1e-30) << scheme << " " << o.name << " " << x;
          }
        }
    }
    EXPECT_EQ(quantized, 14u) << scheme;
    EXPECT_EQ(read_json(d.path() / "deq/qtool_manifest.json")["numerics"].get<std::string>().rfind("FP4 / MX weights: x = bf16_rne(", 0), 0u);
  }
}

TEST(ConvertQuantized, Fp4DequantizeRefusesMalformedTensorsNamingTheTensor) {
  const std::string q = "layers.0.self_attn.q_proj";
  auto case_ = [&](const std::string& scheme, const std::function<void(std::vector<Tensor>&)>& patch) {
    auto d = std::make_shared<test::TempDir>();
    fp4_checkpoint(d->path() / "q", "bf16", scheme, patch);
    return [d] { dequantize_model(ModelFolder::open(d->str("q")), DType::BF16, job_for(d->path() / "out")); };
  };
  InputError e = expect_error(case_("nvfp4a16", [&](auto& ts) {
                                Tensor& t = tensor_named(ts, q + ".weight_packed");
                                t.spec.dtype = DType::I32;
                                t.spec.shape = {64, 8};
                              }),
                              Kind::BadFile, {});
  EXPECT_EQ(e.tensor(), q + ".weight_packed");
  EXPECT_EQ(e.problem(), "packed FP4 weight must be a 2-D U8 tensor [out, in/2]");
  EXPECT_EQ(e.expected(), "U8 [out, in/2]");
  EXPECT_EQ(e.got(), "I32 [64,8]");
  e = expect_error(case_("nvfp4a16", [&](auto& ts) {
                     Tensor& t = tensor_named(ts, q + ".weight_scale");
                     t.spec.shape = {32, 8};  // same bytes, wrong shape
                   }),
                   Kind::BadFile, {});
  EXPECT_EQ(e.tensor(), q + ".weight_scale");
  EXPECT_EQ(e.problem(), "scale shape does not match FP4 E2M1 per-group of 16 (FP8 E4M3 scales, FP32 global scale) for weight [64,64]");
  EXPECT_EQ(e.expected(), "[64,4]");
  EXPECT_EQ(e.got(), "[32,8]");
  e = expect_error(case_("mxfp4a16", [&](auto& ts) { tensor_named(ts, q + ".weight_scale").spec.dtype = DType::I8; }), Kind::BadFile, {});
  EXPECT_EQ(e.tensor(), q + ".weight_scale");
  EXPECT_EQ(e.problem(), "scale dtype does not match FP4 E2M1 per-group of 32 (E8M0 scales)");
  EXPECT_EQ(e.expected(), "U8");
  EXPECT_EQ(e.got(), "I8");
  e = expect_error(case_("mxfp8", [&](auto& ts) {
                     Tensor& t = tensor_named(ts, q + ".weight");
                     t.spec.dtype = DType::U8;
                   }),
                   Kind::BadFile, {});
  EXPECT_EQ(e.tensor(), q + ".weight");
  EXPECT_EQ(e.problem(), "quantized weight must be a 2-D F8_E4M3 tensor for FP8 E4M3 per-group of 32 (E8M0 scales)");
  e = expect_error(case_("nvfp4a16", [&](auto& ts) {
                     std::erase_if(ts, [&](const Tensor& t) { return t.spec.name == q + ".weight_global_scale"; });
                   }),
                   Kind::Missing, {});
  EXPECT_EQ(e.tensor(), q + ".weight_global_scale");
  EXPECT_EQ(e.problem(), "NVFP4 weight without its global scale");
  e = expect_error(case_("nvfp4a16", [&](auto& ts) { tensor_named(ts, q + ".weight_global_scale").bytes = f32le({0.0f}); }),
                   Kind::BadValue, {});
  EXPECT_EQ(e.tensor(), q + ".weight_global_scale");
  EXPECT_EQ(e.problem(), "global scale is 0; it must be positive and finite");
  e = expect_error(case_("nvfp4a16", [&](auto& ts) { tensor_named(ts, q + ".weight_scale").bytes[5] = 0xFF; }),
                   Kind::BadValue, {});
  EXPECT_EQ(e.tensor(), q + ".weight_scale");
  EXPECT_EQ(e.problem(), "scale element 5 is NaN (byte 0xFF); a quantization scale must be positive and finite");
  e = expect_error(case_("mxfp4a16", [&](auto& ts) { tensor_named(ts, q + ".weight_scale").bytes[3] = 255; }),
                   Kind::BadValue, {});
  EXPECT_EQ(e.problem(), "scale element 3 is NaN (byte 0xFF); a quantization scale must be positive and finite");
  e = expect_error(case_("mxfp4a16", [&](auto& ts) {
                     tensor_named(ts, q + ".weight_scale").bytes[0] = 254;    // 2^127
                     tensor_named(ts, q + ".weight_packed").bytes[0] = 0x07;  // code 6: 6 * 2^127 overflows
                   }),
                   Kind::BadValue, {});
  EXPECT_EQ(e.tensor(), q + ".weight_packed");
  EXPECT_EQ(e.problem(), "dequantized value at row 0, column 0 is not finite (NaN code, or beyond BF16's range)");
  e = expect_error(case_("mxfp8", [&](auto& ts) { tensor_named(ts, q + ".weight").bytes[70] = 0x7F; }), Kind::BadValue, {});
  EXPECT_EQ(e.problem(), "dequantized value at row 1, column 6 is not finite (NaN code, or beyond BF16's range)");
}

TEST(ConvertQuantized, Fp4CheckpointsHaveNoLegacyFp8Layout) {
  test::TempDir d;
  fp4_checkpoint(d.path() / "q", "bf16", "nvfp4a16");
  const InputError e = expect_error(
      [&] { convert_quant_layout(ModelFolder::open(d.str("q")), OutputFormat::LegacyFp8, std::nullopt, job_for(d.path() / "out")); },
      Kind::Unsupported, {"legacy fp8 holds FP8 per-tensor or block weights only"});
  EXPECT_FALSE(fs::exists(d.path() / "out"));
}

TEST(ConvertQuantized, DequantizesLegacyFp8AsCodeTimesScaleRoundedToBf16) {
  test::TempDir d;
  const auto ts = fp8_tensor_checkpoint(true, DType::F32, 8);
  write_checkpoint(d.path() / "legacy", ts, legacy_config());
  const ConvertSummary s = dequantize_model(ModelFolder::open(d.str("legacy")), DType::BF16, job_for(d.path() / "out"));
  EXPECT_EQ(s.tensors_out, 12u);  // embed, 2 layer norms, 7 weights, final norm, lm_head
  SafetensorsFile out = SafetensorsFile::open(d.str("out/model.safetensors"));
  std::map<std::string, const Tensor*> in;
  for (const auto& t : ts) in[t.spec.name] = &t;
  for (const auto& t : out.tensors()) {
    EXPECT_EQ(t.name.find("_scale"), std::string::npos) << t.name;
    ASSERT_EQ(t.dtype, DType::BF16) << t.name;
    const Tensor& src = *in.at(t.name);
    if (src.spec.dtype != DType::F8_E4M3) {
      EXPECT_TRUE(std::equal(t.bytes.begin(), t.bytes.end(), src.bytes.begin(), src.bytes.end())) << t.name;
      continue;
    }
    float scale;
    std::memcpy(&scale, in.at(t.name.substr(0, t.name.size() - 7) + ".weight_scale")->bytes.data(), 4);
    for (size_t i = 0; i < src.bytes.size(); ++i) {
      const float x = f32_from_e4m3fn(src.bytes[i]) * scale;  // one f32 multiply
      const uint16_t b = static_cast<uint16_t>(t.bytes[2 * i] | (t.bytes[2 * i + 1] << 8));
      ASSERT_EQ(b, bf16_from_f32(x)) << t.name << " " << i;
    }
  }
  EXPECT_EQ(out.tensors().size(), 12u);
  EXPECT_FALSE(read_json(d.path() / "out/config.json").contains("quantization_config"));
}

}  // namespace
}  // namespace qt
