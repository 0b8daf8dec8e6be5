#include "formats/tiny_model.h"
#include "libquant/float_formats.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "formats/atomic_file.h"
#include "formats/model_folder.h"
#include "formats/output_folder.h"
#include "libquant/error.h"

namespace qt {
namespace fs = std::filesystem;
using Kind = InputError::Kind;

namespace {

// ---- PRNG: splitmix64 (Steele, Lea, Flood 2014); integer-only, so identical everywhere ----
struct SplitMix64 {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Irwin-Hall(12) - 6: mean 0, variance 1. The sum of twelve 53-bit integers is exact in
  // uint64; one conversion to double (RNE) and an exact scaling by 2^-53 follow.
  double normal() {
    uint64_t sum = 0;
    for (int i = 0; i < 12; ++i) sum += next() >> 11;
    return static_cast<double>(sum) * 0x1.0p-53 - 6.0;
  }
};

uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) { h ^= c; h *= 0x100000001b3ull; }
  return h;
}

// Each tensor has its own stream: independent of generation order and thread count.
SplitMix64 stream_for(uint64_t seed, const std::string& name) {
  SplitMix64 g{seed};
  g.state = g.next() ^ fnv1a64(name);
  g.next();
  return g;
}

// RNE conversions of the generated f32 values to the model dtype (libquant/float_formats.h).
uint16_t local_bf16_from_f32(float f) { return bf16_from_f32(f); }
uint16_t local_f16_from_f32(float f) { return f16_from_f32(f); }

// ---- tokenizer -----------------------------------------------------------------------------

// GPT-2 bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 bytes (in
// increasing order) to U+0100.. (calib/MODELS.md §9 'Tokenizer: the ByteLevel
// byte-to-character table').
std::string byte_char(int b) {
  uint32_t cp;
  if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) {
    cp = static_cast<uint32_t>(b);
  } else {
    int k = 0;
    for (int c = 0; c < b; ++c)
      if (!((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF))) ++k;
    cp = 256u + static_cast<uint32_t>(k);
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {  // all code points here are < 0x800: two UTF-8 bytes
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

const std::string kG = "\xC4\xA0";  // "Ġ" = byte_char(' ')

// Merges in rank order; each result is a new vocabulary entry (ids 256...).
const std::vector<std::pair<std::string, std::string>>& merges() {
  static const std::vector<std::pair<std::string, std::string>> m = {
      {kG, "t"}, {"h", "e"}, {kG + "t", "he"}, {"i", "n"}, {"e", "r"}, {"a", "n"},
      {"o", "n"}, {kG, "a"}, {"r", "e"}, {kG, "s"}, {"e", "n"}, {"in", "g"},
      {kG, "o"}, {kG, "an"}, {kG + "an", "d"}, {"o", "r"}, {"a", "t"}, {kG, "w"},
  };
  return m;
}

nlohmann::ordered_json added_token(int id, const std::string& content) {
  nlohmann::ordered_json t;
  t["id"] = id;
  t["content"] = content;
  t["single_word"] = false;
  t["lstrip"] = false;
  t["rstrip"] = false;
  t["normalized"] = false;
  t["special"] = true;
  return t;
}

// tokenizer.json in the layout the `tokenizers` library writes (keys in its order).
std::string tokenizer_json() {
  using oj = nlohmann::ordered_json;
  oj vocab = oj::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  int id = 256;
  oj merge_list = oj::array();
  for (const auto& [a, b] : merges()) {
    vocab[a + b] = id++;
    merge_list.push_back(a + " " + b);  // legacy "a b" form: read by every tokenizers version
  }
  const int bos = tiny_bos_id(), eos = tiny_eos_id();
  oj seq_a = {{"Sequence", {{"id", "A"}, {"type_id", 0}}}};
  oj seq_b = {{"Sequence", {{"id", "B"}, {"type_id", 1}}}};
  oj bos_item = {{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}};
  oj bos_item1 = {{"SpecialToken", {{"id", "<s>"}, {"type_id", 1}}}};

  oj j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = oj::array({added_token(bos, "<s>"), added_token(eos, "</s>")});
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", oj::array({bos_item, seq_a})},
      {"pair", oj::array({bos_item, seq_a, bos_item1, seq_b})},
      {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", oj::array({bos})}, {"tokens", oj::array({"<s>"})}}}}}};
  j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"ignore_merges", false},
                {"vocab", vocab},
                {"merges", merge_list}};
  return j.dump(2, ' ', /*ensure_ascii=*/false) + "\n";
}

nlohmann::json tokenizer_config_json(const TinyModelOptions& o) {
  nlohmann::json decoder;
  for (const auto& [id, content] : {std::pair{tiny_bos_id(), "<s>"}, std::pair{tiny_eos_id(), "</s>"}}) {
    nlohmann::json t;
    t["content"] = content;
    t["lstrip"] = false;
    t["normalized"] = false;
    t["rstrip"] = false;
    t["single_word"] = false;
    t["special"] = true;
    decoder[std::to_string(id)] = t;
  }
  return {{"add_bos_token", true},
          {"add_eos_token", false},
          {"added_tokens_decoder", decoder},
          {"bos_token", "<s>"},
          {"clean_up_tokenization_spaces", false},
          {"eos_token", "</s>"},
          {"model_max_length", o.max_position_embeddings},
          {"tokenizer_class", "PreTrainedTokenizerFast"}};
}

const char* torch_dtype_name(DType t) {
  switch (t) {
    case DType::BF16: return "bfloat16";
    case DType::F16: return "float16";
    default: return "float32";
  }
}

// The tensors in model order, without validating the options.
std::vector<TensorSpec> specs_unchecked(const TinyModelOptions& o) {
  const int64_t H = o.hidden_size, I = o.intermediate_size, V = o.vocab_size;
  const int64_t D = o.head_dim > 0 ? o.head_dim : o.num_heads > 0 ? H / o.num_heads : 0, KV = D * o.num_kv_heads;
  const int64_t Q = D * o.num_heads;
  const bool mixtral = o.arch == "mixtral", qwen3 = o.arch == "qwen3_moe", qwen2 = o.arch == "qwen2_moe";
  const int64_t E = o.num_experts, EI = o.moe_intermediate_size, SI = o.shared_intermediate_size;
  std::vector<TensorSpec> s;
  s.push_back({"model.embed_tokens.weight", o.dtype, {V, H}});
  for (int l = 0; l < o.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    s.push_back({p + "input_layernorm.weight", o.dtype, {H}});
    s.push_back({p + "self_attn.q_proj.weight", o.dtype, {Q, H}});
    if (qwen2) s.push_back({p + "self_attn.q_proj.bias", o.dtype, {Q}});
    s.push_back({p + "self_attn.k_proj.weight", o.dtype, {KV, H}});
    if (qwen2) s.push_back({p + "self_attn.k_proj.bias", o.dtype, {KV}});
    s.push_back({p + "self_attn.v_proj.weight", o.dtype, {KV, H}});
    if (qwen2) s.push_back({p + "self_attn.v_proj.bias", o.dtype, {KV}});
    s.push_back({p + "self_attn.o_proj.weight", o.dtype, {H, Q}});
    if (qwen3) {
      s.push_back({p + "self_attn.q_norm.weight", o.dtype, {D}});
      s.push_back({p + "self_attn.k_norm.weight", o.dtype, {D}});
    }
    s.push_back({p + "post_attention_layernorm.weight", o.dtype, {H}});
    const bool dense = o.arch == "llama" ||
                       std::find(o.mlp_only_layers.begin(), o.mlp_only_layers.end(), l) != o.mlp_only_layers.end();
    if (dense) {
      s.push_back({p + "mlp.gate_proj.weight", o.dtype, {I, H}});
      s.push_back({p + "mlp.up_proj.weight", o.dtype, {I, H}});
      s.push_back({p + "mlp.down_proj.weight", o.dtype, {H, I}});
      continue;
    }
    const std::string b = p + (mixtral ? "block_sparse_moe." : "mlp.");
    s.push_back({b + "gate.weight", o.dtype, {E, H}});
    for (int64_t e = 0; e < E; ++e) {
      const std::string x = b + "experts." + std::to_string(e) + ".";
      if (mixtral) {
        s.push_back({x + "w1.weight", o.dtype, {EI, H}});
        s.push_back({x + "w2.weight", o.dtype, {H, EI}});
        s.push_back({x + "w3.weight", o.dtype, {EI, H}});
      } else {
        s.push_back({x + "gate_proj.weight", o.dtype, {EI, H}});
        s.push_back({x + "up_proj.weight", o.dtype, {EI, H}});
        s.push_back({x + "down_proj.weight", o.dtype, {H, EI}});
      }
    }
    if (qwen2) {
      s.push_back({b + "shared_expert.gate_proj.weight", o.dtype, {SI, H}});
      s.push_back({b + "shared_expert.up_proj.weight", o.dtype, {SI, H}});
      s.push_back({b + "shared_expert.down_proj.weight", o.dtype, {H, SI}});
      s.push_back({b + "shared_expert_gate.weight", o.dtype, {1, H}});
    }
  }
  s.push_back({"model.norm.weight", o.dtype, {H}});
  if (!o.tie_word_embeddings) s.push_back({"lm_head.weight", o.dtype, {V, H}});
  return s;
}

}  // namespace

const std::vector<std::string>& tiny_model_architectures() {
  static const std::vector<std::string> a = {"llama", "mixtral", "qwen3_moe", "qwen2_moe"};
  return a;
}

int tiny_tokenizer_size() { return 256 + static_cast<int>(merges().size()) + 2; }
int tiny_bos_id() { return 256 + static_cast<int>(merges().size()); }
int tiny_eos_id() { return tiny_bos_id() + 1; }

void validate_tiny_model_options(const TinyModelOptions& o) {
  auto usage = [](const std::string& problem) { throw InputError(Kind::Usage, "", "", "tiny model: " + problem); };
  if (o.dtype != DType::BF16 && o.dtype != DType::F16 && o.dtype != DType::F32)
    usage("dtype must be BF16, F16 or F32 (got " + std::string(dtype_name(o.dtype)) + ")");
  if (o.hidden_size <= 0 || o.intermediate_size <= 0 || o.num_layers <= 0 || o.num_heads <= 0 ||
      o.num_kv_heads <= 0 || o.max_position_embeddings <= 0 || o.head_dim < 0)
    usage("sizes, layer and head counts must be positive");
  if (o.head_dim == 0 && o.hidden_size % o.num_heads != 0)
    usage("hidden_size " + std::to_string(o.hidden_size) + " is not divisible by num_heads " + std::to_string(o.num_heads));
  if (o.num_heads % o.num_kv_heads != 0)
    usage("num_heads " + std::to_string(o.num_heads) + " is not divisible by num_kv_heads " + std::to_string(o.num_kv_heads));
  if (o.vocab_size < tiny_tokenizer_size())
    usage("vocab_size " + std::to_string(o.vocab_size) + " is smaller than the tokenizer's " +
          std::to_string(tiny_tokenizer_size()) + " tokens");
  if (o.outlier_columns < 0 || o.outlier_columns > o.hidden_size) usage("outlier_columns out of range");
  const auto& archs = tiny_model_architectures();
  if (std::find(archs.begin(), archs.end(), o.arch) == archs.end())
    usage("architecture '" + o.arch + "' is not one of llama, mixtral, qwen3_moe, qwen2_moe");
  if (o.arch != "llama") {
    if (o.num_experts <= 0 || o.experts_per_token <= 0 || o.experts_per_token > o.num_experts)
      usage("experts per token must be between 1 and the number of experts " + std::to_string(o.num_experts));
    if (o.moe_intermediate_size <= 0 || o.shared_intermediate_size <= 0)
      usage("expert sizes must be positive");
    for (int l : o.mlp_only_layers)
      if (l < 0 || l >= o.num_layers) usage("mlp_only_layers entry " + std::to_string(l) + " is not a layer");
  }
  const int n_tensors = static_cast<int>(specs_unchecked(o).size());
  if (o.num_shards < 1 || o.num_shards > n_tensors)
    usage("num_shards must be between 1 and the tensor count " + std::to_string(n_tensors));
}

std::vector<TensorSpec> tiny_model_tensor_specs(const TinyModelOptions& o) {
  validate_tiny_model_options(o);
  return specs_unchecked(o);
}

std::vector<uint8_t> tiny_model_tensor_bytes(const TinyModelOptions& o, const TensorSpec& spec) {
  SplitMix64 g = stream_for(o.seed, spec.name);
  const uint64_t rows = spec.shape.size() == 2 ? static_cast<uint64_t>(spec.shape[0]) : 1;
  const uint64_t cols = static_cast<uint64_t>(spec.shape.back());
  const bool is_bias = spec.name.ends_with(".bias");
  const bool is_norm = spec.shape.size() == 1 && !is_bias;
  const bool is_proj = spec.name.ends_with("_proj.weight") || spec.name.ends_with(".w1.weight") ||
                       spec.name.ends_with(".w2.weight") || spec.name.ends_with(".w3.weight");
  const bool is_router = spec.name.ends_with(".gate.weight") || spec.name.ends_with("shared_expert_gate.weight");
  // Outlier input columns first (from the same stream, so they too depend only on seed+name).
  std::vector<double> col_scale(cols, 1.0);
  if (is_proj)
    for (int k = 0; k < o.outlier_columns; ++k) col_scale[g.next() % cols] = o.outlier_scale;

  const size_t esize = static_cast<size_t>(dtype_bits(spec.dtype) / 8);
  std::vector<uint8_t> out(rows * cols * esize);
  size_t pos = 0;
  for (uint64_t r = 0; r < rows; ++r) {
    for (uint64_t c = 0; c < cols; ++c) {
      const double n = g.normal();
      // f64 value, rounded once to f32 (RNE, as the C++ conversion does by default).
      const double v = is_norm ? 1.0 + 0.05 * n : is_router ? 0.5 * n : 0.02 * n * col_scale[c];
      const float f = static_cast<float>(v);
      if (spec.dtype == DType::F32) {
        const uint32_t u = f32_bits(f);
        for (int b = 0; b < 4; ++b) out[pos++] = static_cast<uint8_t>(u >> (8 * b));
      } else {
        const uint16_t h = spec.dtype == DType::BF16 ? local_bf16_from_f32(f) : local_f16_from_f32(f);
        out[pos++] = static_cast<uint8_t>(h & 0xFF);
        out[pos++] = static_cast<uint8_t>(h >> 8);
      }
    }
  }
  return out;
}

namespace {
nlohmann::json llama_config(const TinyModelOptions& o);
}

nlohmann::json tiny_model_config(const TinyModelOptions& o) {
  validate_tiny_model_options(o);
  nlohmann::json c = llama_config(o);
  if (o.arch == "llama") return c;
  // The MoE families: the Llama keys they share, their own class names and expert keys
  // (transformers' MixtralConfig / Qwen3MoeConfig / Qwen2MoeConfig), float32 rope theta as given.
  for (const char* k : {"mlp_bias", "pretraining_tp", "attention_bias"}) c.erase(k);
  c["num_experts_per_tok"] = o.experts_per_token;
  if (o.arch == "mixtral") {
    c["architectures"] = {"MixtralForCausalLM"};
    c["model_type"] = "mixtral";
    c["num_local_experts"] = o.num_experts;
    c["intermediate_size"] = o.moe_intermediate_size;
    c["sliding_window"] = nullptr;
    c["router_jitter_noise"] = 0.0;
    return c;
  }
  const bool qwen2 = o.arch == "qwen2_moe";
  c["architectures"] = {qwen2 ? "Qwen2MoeForCausalLM" : "Qwen3MoeForCausalLM"};
  c["model_type"] = o.arch;
  c["num_experts"] = o.num_experts;
  c["moe_intermediate_size"] = o.moe_intermediate_size;
  c["norm_topk_prob"] = o.norm_topk_prob;
  c["decoder_sparse_step"] = 1;
  c["mlp_only_layers"] = o.mlp_only_layers;
  c["use_sliding_window"] = false;
  if (qwen2) {
    c["shared_expert_intermediate_size"] = o.shared_intermediate_size;
    c["qkv_bias"] = true;
  } else {
    c["attention_bias"] = false;
  }
  return c;
}

namespace {
nlohmann::json llama_config(const TinyModelOptions& o) {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"attention_bias", false},
          {"attention_dropout", 0.0},
          {"bos_token_id", tiny_bos_id()},
          {"eos_token_id", tiny_eos_id()},
          {"head_dim", o.head_dim > 0 ? o.head_dim : o.hidden_size / o.num_heads},
          {"hidden_act", "silu"},
          {"hidden_size", o.hidden_size},
          {"initializer_range", 0.02},
          {"intermediate_size", o.intermediate_size},
          {"max_position_embeddings", o.max_position_embeddings},
          {"mlp_bias", false},
          {"model_type", "llama"},
          {"num_attention_heads", o.num_heads},
          {"num_hidden_layers", o.num_layers},
          {"num_key_value_heads", o.num_kv_heads},
          {"pretraining_tp", 1},
          {"rms_norm_eps", o.rms_norm_eps},
          {"rope_scaling", nullptr},
          {"rope_theta", o.rope_theta},
          {"tie_word_embeddings", o.tie_word_embeddings},
          {"torch_dtype", torch_dtype_name(o.dtype)},
          {"use_cache", true},
          {"vocab_size", o.vocab_size}};
}
}  // namespace

void write_tiny_model(const std::string& dir, const TinyModelOptions& o) {
  const std::vector<TensorSpec> specs = tiny_model_tensor_specs(o);  // validates
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw InputError(Kind::Io, dir, "", "cannot create folder: " + ec.message());

  // Shards by tensor count (tensor i goes to shard i*n/count): exactly num_shards non-empty
  // shards in model order.
  const size_t n = static_cast<size_t>(o.num_shards);
  std::vector<std::vector<TensorSpec>> shards(n);
  for (size_t i = 0; i < specs.size(); ++i) shards[i * n / specs.size()].push_back(specs[i]);
  std::map<std::string, std::string> weight_map;
  uint64_t total = 0;
  for (size_t s = 0; s < n; ++s) {
    const std::string file = shard_file_name(s, n);
    SafetensorsWriter w((fs::path(dir) / file).string(), shards[s]);
    for (const TensorSpec& t : shards[s]) {
      const std::vector<uint8_t> bytes = tiny_model_tensor_bytes(o, t);
      w.write(t.name, bytes);
      weight_map[t.name] = file;
      total += bytes.size();
    }
    w.commit();
  }
  if (n > 1) write_index_json(dir, total, weight_map);

  write_config_json(dir, tiny_model_config(o));
  write_json_file((fs::path(dir) / "generation_config.json").string(),
                  {{"_from_model_config", true}, {"bos_token_id", tiny_bos_id()}, {"eos_token_id", tiny_eos_id()}});
  write_file_atomic((fs::path(dir) / "tokenizer.json").string(), tokenizer_json());
  write_json_file((fs::path(dir) / "tokenizer_config.json").string(), tokenizer_config_json(o));
}

std::vector<std::string> publish_tiny_model(const std::string& out, const TinyModelOptions& o) {
  validate_tiny_model_options(o);
  PartialFolder folder = PartialFolder::create(out, "", false, nullptr, /*offers_overwrite=*/false);
  write_tiny_model(folder.path(), o);
  std::vector<std::string> notes = folder.notes();
  folder.publish();
  return notes;
}

}  // namespace qt
