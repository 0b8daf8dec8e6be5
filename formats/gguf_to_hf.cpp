#include "formats/gguf_to_hf.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <numbers>
#include <set>
#include <unordered_map>

#include "formats/atomic_file.h"
#include "formats/manifest.h"
#include "formats/model_folder.h"
#include "formats/output_folder.h"
#include "formats/safetensors_writer.h"
#include "libquant/error.h"
#include "libquant/float_formats.h"
#include "libquant/tensor_view.h"

namespace qt {
namespace fs = std::filesystem;
using nlohmann::json;
using Kind = InputError::Kind;

// ================================================================================================
// names and rotary order
// ================================================================================================

namespace {

// The inverse of llama.cpp's Llama tensor map (gguf-py tensor_mapping.py / constants.py, LLAMA).
struct BlockName {
  std::string_view gguf;  // after "blk.N."
  std::string_view hf;    // after "model.layers.N."
};
constexpr BlockName kBlockNames[] = {
    {"attn_norm", "input_layernorm"},
    {"attn_q", "self_attn.q_proj"},
    {"attn_k", "self_attn.k_proj"},
    {"attn_v", "self_attn.v_proj"},
    {"attn_output", "self_attn.o_proj"},
    {"ffn_norm", "post_attention_layernorm"},
    {"ffn_gate", "mlp.gate_proj"},
    {"ffn_up", "mlp.up_proj"},
    {"ffn_down", "mlp.down_proj"},
};

bool parse_layer(std::string_view s, int64_t& layer, std::string_view& rest) {
  // "blk.<digits>.<rest>"
  if (s.substr(0, 4) != "blk.") return false;
  size_t i = 4;
  int64_t v = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
    if (v > 1'000'000'000) return false;
    v = v * 10 + (s[i] - '0');
    ++i;
  }
  if (i == 4 || i >= s.size() || s[i] != '.') return false;
  if (i - 4 > 1 && s[4] == '0') return false;  // "blk.01." is not a name llama.cpp writes
  layer = v;
  rest = s.substr(i + 1);
  return true;
}

}  // namespace

std::string gguf_to_hf_name(std::string_view name) {
  if (name == "token_embd.weight") return "model.embed_tokens.weight";
  if (name == "output_norm.weight") return "model.norm.weight";
  if (name == "output.weight") return "lm_head.weight";
  int64_t layer = 0;
  std::string_view rest;
  if (!parse_layer(name, layer, rest)) return {};
  std::string_view suffix;
  if (rest.ends_with(".weight")) suffix = ".weight";
  else if (rest.ends_with(".bias")) suffix = ".bias";
  else return {};
  const std::string_view base = rest.substr(0, rest.size() - suffix.size());
  for (const auto& b : kBlockNames)
    if (base == b.gguf) {
      // Norms have no bias in Llama.
      if (suffix == ".bias" && (base == "attn_norm" || base == "ffn_norm")) return {};
      return "model.layers." + std::to_string(layer) + "." + std::string(b.hf) + std::string(suffix);
    }
  return {};
}

int64_t rotary_gguf_row(int64_t hf_row, int64_t rows_per_head) {
  QT_ASSERT(rows_per_head > 0 && rows_per_head % 2 == 0 && hf_row >= 0);
  const int64_t half = rows_per_head / 2;
  const int64_t head = hf_row / rows_per_head, k = hf_row % rows_per_head;
  // HF row k of a head = (s = k / half, i = k % half) was written to GGUF row 2*i + s.
  return head * rows_per_head + 2 * (k % half) + k / half;
}

void unpermute_rotary_rows(const uint8_t* src, uint8_t* dst, int64_t rows, int64_t row_bytes,
                           int64_t rows_per_head) {
  QT_ASSERT(rows_per_head > 0 && rows_per_head % 2 == 0 && rows % rows_per_head == 0 && row_bytes >= 0);
  for (int64_t k = 0; k < rows; ++k)
    std::memcpy(dst + k * row_bytes, src + rotary_gguf_row(k, rows_per_head) * row_bytes,
                static_cast<size_t>(row_bytes));
}

// ================================================================================================
// hyper-parameters and plan
// ================================================================================================

double shortest_f32_decimal(float f) {
  if (!std::isfinite(f)) return static_cast<double>(f);
  char buf[64];
  for (int p = 1; p <= 9; ++p) {  // 9 significant digits always round-trip an f32
    std::snprintf(buf, sizeof buf, "%.*g", p, static_cast<double>(f));
    if (std::strtof(buf, nullptr) == f) return std::strtod(buf, nullptr);
  }
  return static_cast<double>(f);
}

namespace {

struct Meta {
  const GgufFile& g;
  std::string arch;

  std::string key(const char* k) const { return arch + "." + k; }
  bool has(const std::string& k) const { return g.has(k); }
  // Integer hyper-parameter; scalar only (per-layer arrays are refused).
  int64_t int_key(const std::string& k) const {
    const GgufKv* kv = g.find_kv(k);
    if (!kv) throw InputError(Kind::Missing, g.path(), "", "metadata key '" + k + "' is missing (needed for config.json)");
    if (kv->type == GgufValueType::ARRAY)
      throw InputError(Kind::Unsupported, g.path(), "",
                       "metadata key '" + k + "' is a per-layer array; only uniform layers are supported");
    const int64_t v = g.get_i64(k);
    if (v <= 0) throw InputError(Kind::BadFile, g.path(), "", "metadata key '" + k + "' must be positive", "> 0", std::to_string(v));
    return v;
  }
  int64_t int_key_or(const std::string& k, int64_t def) const { return has(k) ? int_key(k) : def; }
  // A float hyper-parameter that must be finite and positive (or, with `zero_ok`, not negative):
  // JSON has no NaN/Inf (config.json would get a null), and a negative epsilon or rope base makes
  // no model.
  double checked_f32_key_or(const std::string& k, double def, bool zero_ok) const {
    if (!has(k)) return def;
    const float v = g.get_f32(k);
    if (!std::isfinite(v) || v < 0.0f || (!zero_ok && v == 0.0f)) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%g", static_cast<double>(v));
      throw InputError(Kind::BadFile, g.path(), "", "metadata key '" + k + "' must be a finite " +
                       (zero_ok ? "non-negative" : "positive") + " number", zero_ok ? ">= 0" : "> 0", buf);
    }
    return shortest_f32_decimal(v);
  }
};

// llama.cpp's llama3 rope factors for one set of parameters (convert_hf_to_gguf.py
// LlamaModel.generate_extra_tensors, transformers' _compute_llama3_parameters): per rotary
// frequency, 1 (high frequencies), `factor` (low) or 1 / ((1 - smooth) / factor + smooth) between.
// Computed in double; the file holds f32.
std::vector<double> llama3_rope_factors(double theta, int64_t dim, double factor, double low, double high,
                                        double old_ctx) {
  std::vector<double> out;
  const double low_wavelen = old_ctx / low, high_wavelen = old_ctx / high;
  for (int64_t i = 0; i < dim; i += 2) {
    const double freq = 1.0 / std::pow(theta, static_cast<double>(i) / static_cast<double>(dim));
    const double wavelen = 2.0 * std::numbers::pi / freq;
    if (wavelen < high_wavelen) out.push_back(1.0);
    else if (wavelen > low_wavelen) out.push_back(factor);
    else {
      const double smooth = (old_ctx / wavelen - low) / (high - low);
      out.push_back(1.0 / ((1.0 - smooth) / factor + smooth));
    }
  }
  return out;
}

// rope_freqs.weight -> rope_scaling (see the header, point 6).
json rope_scaling_from_freqs(const GgufFile& g, const GgufTensor& t, const LlamaHparams& hp) {
  const std::vector<float> v = dequantize_to_f32(t);
  auto refuse = [&](const std::string& why) {
    return InputError(Kind::Unsupported, g.path(), t.name,
                      "RoPE frequency factors that are not Llama-3 style scaling: " + why);
  };
  if (static_cast<int64_t>(v.size()) != hp.head_dim / 2)
    throw refuse("expected " + std::to_string(hp.head_dim / 2) + " values, got " + std::to_string(v.size()));
  for (float x : v)
    if (!std::isfinite(x) || x <= 0) throw refuse("a factor is not a positive finite number");
  // The factor: a low-frequency entry holds it directly; a medium one gives it through
  // 1/rf = (1 - s)/factor + s, i.e. factor = (1 - s) / (1/rf - s), with s known from the position.
  const double old_ctx = 8192, low = 1, high = 4;
  std::optional<double> est;
  for (size_t i = 0; i < v.size() && !est; ++i) {
    const double freq = 1.0 / std::pow(hp.rope_theta, static_cast<double>(2 * i) / static_cast<double>(hp.head_dim));
    const double wavelen = 2.0 * std::numbers::pi / freq;
    if (wavelen > old_ctx / low) est = v[i];
    else if (wavelen >= old_ctx / high) {
      const double smooth = (old_ctx / wavelen - low) / (high - low);
      if (smooth < 1.0 - 1e-6) est = (1.0 - smooth) / (1.0 / v[i] - smooth);
    }
  }
  if (!est) throw refuse("no low or medium frequency (head dimension too small to tell the scaling factor)");
  // Released models use whole factors (8, 32); keep the estimate's shortest f32 form otherwise.
  std::optional<double> factor;
  for (double cand : {std::round(*est), shortest_f32_decimal(static_cast<float>(*est))}) {
    if (cand <= 0) continue;
    const auto want = llama3_rope_factors(hp.rope_theta, hp.head_dim, cand, low, high, old_ctx);
    bool ok = true;
    for (size_t i = 0; i < v.size(); ++i) ok &= std::fabs(static_cast<double>(v[i]) - want[i]) <= 1e-5 * want[i];
    if (ok) { factor = cand; break; }
  }
  if (!factor)
    throw refuse("the values do not follow the llama3 formula (low_freq_factor 1, high_freq_factor 4, original context 8192) "
                 "for any factor; estimated factor " + std::to_string(*est));
  return json{{"rope_type", "llama3"},
              {"factor", *factor},
              {"low_freq_factor", low},
              {"high_freq_factor", high},
              {"original_max_position_embeddings", static_cast<int64_t>(old_ctx)}};
}

// Order of output tensors: embeddings, layers ascending (names within a layer sorted), final norm,
// lm_head.
struct OrderKey {
  int section = 0;
  int64_t layer = 0;
  std::string name;
  bool operator<(const OrderKey& o) const {
    return std::tie(section, layer, name) < std::tie(o.section, o.layer, o.name);
  }
};

OrderKey order_key(const std::string& gguf_name, const std::string& hf) {
  int64_t layer = 0;
  std::string_view rest;
  if (hf == "model.embed_tokens.weight") return {0, 0, hf};
  if (parse_layer(gguf_name, layer, rest)) return {1, layer, hf};
  if (hf == "model.norm.weight") return {2, 0, hf};
  return {3, 0, hf};
}

}  // namespace

GgufConversionPlan plan_gguf_to_hf(const GgufFile& g) {
  const std::string& file = g.path();
  if (!g.has("general.architecture"))
    throw InputError(Kind::Missing, file, "", "metadata key 'general.architecture' is missing");
  Meta m{g, g.get_string("general.architecture")};
  if (m.arch != "llama")
    throw InputError(Kind::Unsupported, file, "", "architecture '" + m.arch + "' cannot be converted to a Hugging Face folder",
                     "llama (LlamaForCausalLM)");

  GgufConversionPlan plan;
  LlamaHparams& hp = plan.hp;
  hp.hidden_size = m.int_key(m.key("embedding_length"));
  hp.intermediate_size = m.int_key(m.key("feed_forward_length"));
  hp.num_layers = m.int_key(m.key("block_count"));
  hp.num_heads = m.int_key(m.key("attention.head_count"));
  hp.num_kv_heads = m.int_key_or(m.key("attention.head_count_kv"), hp.num_heads);
  hp.context_length = m.int_key(m.key("context_length"));
  if (hp.num_heads % hp.num_kv_heads != 0)
    throw InputError(Kind::BadFile, file, "", "attention.head_count is not a multiple of attention.head_count_kv",
                     "a divisor of " + std::to_string(hp.num_heads), std::to_string(hp.num_kv_heads));
  if (m.has(m.key("attention.key_length"))) {
    hp.head_dim = m.int_key(m.key("attention.key_length"));
  } else {
    if (hp.hidden_size % hp.num_heads != 0)
      throw InputError(Kind::BadFile, file, "", "embedding_length is not a multiple of attention.head_count and no key_length is given");
    hp.head_dim = hp.hidden_size / hp.num_heads;
  }
  if (m.has(m.key("attention.value_length")) && m.int_key(m.key("attention.value_length")) != hp.head_dim)
    throw InputError(Kind::Unsupported, file, "", "attention.value_length differs from key_length (not a Llama layout)");
  if (hp.head_dim % 2 != 0)
    throw InputError(Kind::BadFile, file, "", "head dimension must be even for rotary embeddings", "even", std::to_string(hp.head_dim));
  const int64_t n_rot = m.int_key_or(m.key("rope.dimension_count"), hp.head_dim);
  if (n_rot != hp.head_dim)
    throw InputError(Kind::Unsupported, file, "", "rope.dimension_count " + std::to_string(n_rot) +
                     " is not the head dimension " + std::to_string(hp.head_dim) + " (partial rotary is not LlamaForCausalLM)");
  hp.rms_norm_eps = m.checked_f32_key_or(m.key("attention.layer_norm_rms_epsilon"), 1e-5, /*zero_ok=*/true);
  hp.rope_theta = m.checked_f32_key_or(m.key("rope.freq_base"), 10000.0, /*zero_ok=*/false);
  if (m.has(m.key("expert_count")) && m.int_key(m.key("expert_count")) > 0)
    throw InputError(Kind::Unsupported, file, "", "mixture-of-experts Llama (expert_count > 0) is not supported");

  // RoPE scaling written as metadata (linear only; llama3 comes as rope_freqs, below).
  const std::string st_key = m.key("rope.scaling.type");
  if (m.has(st_key)) {
    const std::string type = g.get_string(st_key);
    if (type == "linear") {
      hp.rope_scaling = json{{"rope_type", "linear"}, {"factor", m.checked_f32_key_or(m.key("rope.scaling.factor"), 1.0, /*zero_ok=*/false)}};
    } else if (type != "none") {
      throw InputError(Kind::Unsupported, file, "", "RoPE scaling type '" + type + "' is not supported", "none or linear");
    }
  }

  const GgufTensor* embd = g.find("token_embd.weight");
  if (!embd) throw InputError(Kind::Missing, file, "token_embd.weight", "the token embedding is missing");
  if (embd->ne.size() != 2 || embd->ne[0] != hp.hidden_size)
    throw InputError(Kind::BadFile, file, embd->name, "shape does not match embedding_length",
                     "[vocab, " + std::to_string(hp.hidden_size) + "]", shape_string(embd->shape_rowmajor()));
  hp.vocab_size = embd->ne[1];
  if (m.has(m.key("vocab_size")) && m.int_key(m.key("vocab_size")) != hp.vocab_size)
    throw InputError(Kind::BadFile, file, "", "llama.vocab_size disagrees with the rows of token_embd.weight",
                     std::to_string(hp.vocab_size), std::to_string(m.int_key(m.key("vocab_size"))));
  hp.tie_word_embeddings = g.find("output.weight") == nullptr;

  const int64_t H = hp.hidden_size, I = hp.intermediate_size, D = hp.head_dim;
  const int64_t Q = hp.num_heads * D, KV = hp.num_kv_heads * D, V = hp.vocab_size;
  // Expected row-major HF shape of a mapped tensor, from its HF name.
  auto expected_shape = [&](const std::string& hf) -> std::vector<int64_t> {
    const bool bias = hf.ends_with(".bias");
    auto w = [&](int64_t out, int64_t in) { return bias ? std::vector<int64_t>{out} : std::vector<int64_t>{out, in}; };
    if (hf == "model.embed_tokens.weight" || hf == "lm_head.weight") return {V, H};
    if (hf == "model.norm.weight" || hf.ends_with("layernorm.weight")) return {H};
    if (hf.ends_with("q_proj.weight") || hf.ends_with("q_proj.bias")) return w(Q, H);
    if (hf.ends_with("k_proj.weight") || hf.ends_with("k_proj.bias") || hf.ends_with("v_proj.weight") ||
        hf.ends_with("v_proj.bias"))
      return w(KV, H);
    if (hf.ends_with("o_proj.weight") || hf.ends_with("o_proj.bias")) return w(H, Q);
    if (hf.ends_with("gate_proj.weight") || hf.ends_with("gate_proj.bias") || hf.ends_with("up_proj.weight") ||
        hf.ends_with("up_proj.bias"))
      return w(I, H);
    if (hf.ends_with("down_proj.weight") || hf.ends_with("down_proj.bias")) return w(H, I);
    QT_ASSERT(false && "unmapped HF name");
    return {};
  };

  std::map<OrderKey, GgufTensorPlan> ordered;
  std::set<std::string> seen;
  const GgufTensor* rope_freqs = nullptr;
  for (const GgufTensor& t : g.tensors()) {
    if (t.name == "rope_freqs.weight") { rope_freqs = &t; continue; }
    const std::string hf = gguf_to_hf_name(t.name);
    if (hf.empty())
      throw InputError(Kind::Unsupported, file, t.name, "tensor is not part of the Llama layout this converter knows",
                       "token_embd, output_norm, output, blk.N.{attn_norm,attn_q,attn_k,attn_v,attn_output,ffn_norm,ffn_gate,ffn_up,ffn_down}");
    int64_t layer = 0;
    std::string_view rest;
    if (parse_layer(t.name, layer, rest) && layer >= hp.num_layers)
      throw InputError(Kind::BadFile, file, t.name, "layer index beyond block_count", "< " + std::to_string(hp.num_layers),
                       std::to_string(layer));
    const GgmlTypeInfo* ti = ggml_type_info(static_cast<uint32_t>(t.type));
    if (!ti || !ti->dequantizable)
      throw InputError(Kind::Unsupported, file, t.name, "tensor type " + ggml_type_name(t.type) + " cannot be dequantized",
                       "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K");
    GgufTensorPlan p;
    p.src = &t;
    p.hf_name = hf;
    p.hf_shape = t.shape_rowmajor();
    const std::vector<int64_t> want = expected_shape(hf);
    if (p.hf_shape != want)
      throw InputError(Kind::BadFile, file, t.name, "shape does not match the hyper-parameters", shape_string(want),
                       shape_string(p.hf_shape));
    if (hf.ends_with("q_proj.weight") || hf.ends_with("q_proj.bias")) p.rotary_heads = hp.num_heads;
    if (hf.ends_with("k_proj.weight") || hf.ends_with("k_proj.bias")) p.rotary_heads = hp.num_kv_heads;
    if (hf.ends_with("q_proj.bias")) hp.attention_bias = true;
    if (hf.ends_with("up_proj.bias")) hp.mlp_bias = true;
    seen.insert(hf);
    ordered.emplace(order_key(t.name, hf), std::move(p));
  }

  // Every layer complete (and biases all-or-nothing, as LlamaConfig has one flag for each).
  auto require = [&](const std::string& hf, const std::string& gguf) {
    if (!seen.count(hf)) throw InputError(Kind::Missing, file, gguf, "tensor is missing (needed for " + hf + ")");
  };
  require("model.norm.weight", "output_norm.weight");
  for (int64_t l = 0; l < hp.num_layers; ++l) {
    const std::string L = std::to_string(l);
    for (const auto& b : kBlockNames) {
      const std::string hf_base = "model.layers." + L + "." + std::string(b.hf);
      const std::string gguf_base = "blk." + L + "." + std::string(b.gguf);
      require(hf_base + ".weight", gguf_base + ".weight");
      const bool is_norm = b.gguf == "attn_norm" || b.gguf == "ffn_norm";
      const bool is_attn = b.hf.substr(0, 9) == "self_attn";
      if (is_norm) continue;
      // Llama: attention_bias covers q,k,v,o; mlp_bias covers gate,up,down.
      if ((is_attn && hp.attention_bias) || (!is_attn && hp.mlp_bias)) require(hf_base + ".bias", gguf_base + ".bias");
      else if (seen.count(hf_base + ".bias"))
        throw InputError(Kind::Unsupported, file, gguf_base + ".bias",
                         "bias present on only some projections (LlamaConfig has one attention_bias and one mlp_bias flag)");
    }
  }

  if (rope_freqs) {
    if (!hp.rope_scaling.is_null())
      throw InputError(Kind::Unsupported, file, rope_freqs->name, "rope_freqs.weight together with rope.scaling.type metadata");
    hp.rope_scaling = rope_scaling_from_freqs(g, *rope_freqs, hp);
    plan.notes.push_back("rope_freqs.weight recognised as Llama-3 RoPE scaling (factor " +
                         hp.rope_scaling["factor"].dump() + "); written as rope_scaling, not as a tensor");
  }
  for (auto& [k, p] : ordered) plan.tensors.push_back(std::move(p));
  return plan;
}

namespace {

const char* torch_dtype_name(DType t) {
  switch (t) {
    case DType::BF16: return "bfloat16";
    case DType::F16: return "float16";
    default: return "float32";
  }
}

}  // namespace

json llama_config_json(const GgufFile& g, const LlamaHparams& hp, DType dtype) {
  json c = {{"architectures", {"LlamaForCausalLM"}},
            {"attention_bias", hp.attention_bias},
            {"attention_dropout", 0.0},
            {"head_dim", hp.head_dim},
            {"hidden_act", "silu"},
            {"hidden_size", hp.hidden_size},
            {"initializer_range", 0.02},
            {"intermediate_size", hp.intermediate_size},
            {"max_position_embeddings", hp.context_length},
            {"mlp_bias", hp.mlp_bias},
            {"model_type", "llama"},
            {"num_attention_heads", hp.num_heads},
            {"num_hidden_layers", hp.num_layers},
            {"num_key_value_heads", hp.num_kv_heads},
            {"pretraining_tp", 1},
            {"rms_norm_eps", hp.rms_norm_eps},
            {"rope_scaling", hp.rope_scaling},
            {"rope_theta", hp.rope_theta},
            {"tie_word_embeddings", hp.tie_word_embeddings},
            {"torch_dtype", torch_dtype_name(dtype)},
            {"use_cache", true},
            {"vocab_size", hp.vocab_size}};
  const int64_t n_tokens = g.has("tokenizer.ggml.tokens") ? static_cast<int64_t>(g.find_kv("tokenizer.ggml.tokens")->count)
                                                         : hp.vocab_size;
  if (auto v = gguf_token_id(g, "tokenizer.ggml.bos_token_id", n_tokens, nullptr)) c["bos_token_id"] = *v;
  if (auto v = gguf_token_id(g, "tokenizer.ggml.eos_token_id", n_tokens, nullptr)) c["eos_token_id"] = *v;
  if (auto v = gguf_token_id(g, "tokenizer.ggml.padding_token_id", n_tokens, nullptr)) c["pad_token_id"] = *v;
  return c;
}

// ================================================================================================
// the conversion
// ================================================================================================

namespace {

// f32 -> output dtype, RNE (float_formats.h), little-endian bytes.
void encode_f32(const float* src, size_t n, DType dt, uint8_t* dst) {
  const int64_t nn = static_cast<int64_t>(n);
  if (dt == DType::F32) {
    std::memcpy(dst, src, n * 4);
  } else if (dt == DType::BF16) {
#pragma omp parallel for schedule(static) if (nn >= (1 << 16))
    for (int64_t i = 0; i < nn; ++i) {
      const uint16_t h = bf16_from_f32(src[i]);
      dst[2 * i] = static_cast<uint8_t>(h);
      dst[2 * i + 1] = static_cast<uint8_t>(h >> 8);
    }
  } else {
    QT_ASSERT(dt == DType::F16);
#pragma omp parallel for schedule(static) if (nn >= (1 << 16))
    for (int64_t i = 0; i < nn; ++i) {
      const uint16_t h = f16_from_f32(src[i]);
      dst[2 * i] = static_cast<uint8_t>(h);
      dst[2 * i + 1] = static_cast<uint8_t>(h >> 8);
    }
  }
}

}  // namespace

ConvertSummary convert_gguf_to_hf(const GgufFile& g, DType dtype, const ConvertJob& job) {
  if (dtype != DType::BF16 && dtype != DType::F16 && dtype != DType::F32)
    throw InputError(Kind::Usage, "", "", "output dtype must be bf16, f16 or f32", "", std::string(dtype_short_name(dtype)));
  const GgufConversionPlan plan = plan_gguf_to_hf(g);
  const HfTokenizerFiles tok = build_hf_tokenizer(g);
  const json config = llama_config_json(g, plan.hp, dtype);

  PartialFolder out = PartialFolder::create(job.output_dir, g.path(), job.overwrite);
  const fs::path dir = out.path();
  InputHashes hashes({g.path()}, job.hash_inputs);  // alongside the conversion (formats/manifest.h)

  ConvertSummary sum;
  sum.output_notes = out.notes();
  sum.tensors_in = g.tensors().size();
  sum.tensors_out = plan.tensors.size();
  sum.notes = plan.notes;
  sum.notes.insert(sum.notes.end(), tok.notes.begin(), tok.notes.end());

  std::vector<TensorSpec> specs;
  for (const auto& p : plan.tensors) specs.push_back({p.hf_name, dtype, p.hf_shape});
  const auto shards = plan_shards(specs, job.max_shard_bytes);
  std::map<std::string, size_t> shard_of;
  std::vector<std::unique_ptr<SafetensorsWriter>> writers;
  for (size_t s = 0; s < shards.size(); ++s) {
    for (const auto& sp : shards[s].tensors) shard_of[sp.name] = s;
    writers.push_back(std::make_unique<SafetensorsWriter>((dir / shards[s].file_name).string(), shards[s].tensors,
                                                          std::map<std::string, std::string>{{"format", "pt"}}));
  }
  const size_t esize = static_cast<size_t>(dtype_bits(dtype) / 8);

  std::vector<float> f32, perm;
  std::vector<uint8_t> enc;
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    const GgufTensorPlan& p = plan.tensors[i];
    const GgufTensor& t = *p.src;
    const GgmlTypeInfo* ti = ggml_type_info(static_cast<uint32_t>(t.type));
    const int64_t cols = t.ne.empty() ? 1 : t.ne[0];
    // A bias / norm is one "row" of its elements, except a q/k bias, whose elements are the rows
    // to un-permute.
    const bool vector_rows = p.rotary_heads > 0 && t.ne.size() == 1;
    const int64_t rows = vector_rows ? cols : static_cast<int64_t>(t.numel() / static_cast<uint64_t>(cols));
    const int64_t row_elems = vector_rows ? 1 : cols;
    const int64_t rows_per_head = p.rotary_heads > 0 ? rows / p.rotary_heads : 0;
    if (p.rotary_heads > 0 && (rows % p.rotary_heads != 0 || rows_per_head % 2 != 0))
      throw InputError(Kind::BadFile, g.path(), t.name, "rows cannot be split into rotary heads",
                       "a multiple of 2 x " + std::to_string(p.rotary_heads), std::to_string(rows));
    int64_t chunk_rows = std::max<int64_t>(1, std::max<int64_t>(1, job.chunk_elements) / std::max<int64_t>(1, row_elems));
    if (rows_per_head > 0) chunk_rows = std::max<int64_t>(rows_per_head, chunk_rows / rows_per_head * rows_per_head);
    chunk_rows = std::min(chunk_rows, rows);
    // Bytes of one GGUF row (a whole number of blocks: ne[0] % block_size == 0, checked at open).
    // For a bias dequantized element-wise the "rows" are the blocks of the whole vector, so
    // dequantize it in one go below.
    SafetensorsWriter& w = *writers[shard_of.at(p.hf_name)];
    if (vector_rows) {
      f32.resize(static_cast<size_t>(rows));
      dequantize_to_f32(t, f32.data());
      perm.resize(f32.size());
      unpermute_rotary_rows(reinterpret_cast<const uint8_t*>(f32.data()), reinterpret_cast<uint8_t*>(perm.data()), rows, 4,
                            rows_per_head);
      enc.resize(perm.size() * esize);
      encode_f32(perm.data(), perm.size(), dtype, enc.data());
      w.write(p.hf_name, enc);
    } else {
      const uint64_t row_bytes = static_cast<uint64_t>(cols) / ti->block_size * ti->type_size;
      for (int64_t r0 = 0; r0 < rows; r0 += chunk_rows) {
        const int64_t nr = std::min(chunk_rows, rows - r0);
        const uint64_t ne = static_cast<uint64_t>(nr) * static_cast<uint64_t>(cols);
        f32.resize(ne);
        const bool ok = ggml_dequantize(t.type, t.bytes.data() + static_cast<uint64_t>(r0) * row_bytes, ne, f32.data());
        QT_ASSERT(ok);  // checked in the plan
        const float* src = f32.data();
        if (rows_per_head > 0) {  // chunks hold whole heads, so the permutation stays inside
          perm.resize(ne);
          unpermute_rotary_rows(reinterpret_cast<const uint8_t*>(f32.data()), reinterpret_cast<uint8_t*>(perm.data()), nr,
                                cols * 4, rows_per_head);
          src = perm.data();
        }
        enc.resize(ne * esize);
        encode_f32(src, ne, dtype, enc.data());
        w.write_chunk(p.hf_name, static_cast<uint64_t>(r0) * static_cast<uint64_t>(cols) * esize, enc);
      }
    }
    sum.output_bytes += t.numel() * esize;
    if (job.on_tensor) {
      ConvertProgress pr;
      pr.index = i + 1;
      pr.total = plan.tensors.size();
      pr.source = t.name;
      pr.name = p.hf_name;
      pr.shape = shape_string(p.hf_shape);
      pr.from = std::string(ti->name);
      pr.to = std::string(dtype_short_name(dtype));
      pr.out_bytes = t.numel() * esize;
      job.on_tensor(pr);
    }
  }
  for (auto& w : writers) w->commit();
  std::map<std::string, std::string> weight_map;
  for (const auto& sh : shards) {
    sum.output_files.push_back(sh.file_name);
    for (const auto& sp : sh.tensors) weight_map[sp.name] = sh.file_name;
  }
  sum.shards = shards.size();
  if (shards.size() > 1) {
    write_index_json(dir.string(), sum.output_bytes, weight_map);
    sum.output_files.push_back(kIndexFileName);
  }
  write_config_json(dir.string(), config);
  write_json_file((dir / "generation_config.json").string(), tok.generation_config);
  // tokenizer.json compact (vocabulary and merges of large models would be tens of MB indented).
  write_file_atomic((dir / "tokenizer.json").string(), tok.tokenizer.dump() + "\n");
  write_json_file((dir / "tokenizer_config.json").string(), tok.tokenizer_config);
  for (const char* f : {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"})
    sum.output_files.push_back(f);

  json manifest = manifest_base(job.command_line, hashes);
  manifest["conversion"] = "gguf-to-hf";
  manifest["dtype"] = std::string(dtype_short_name(dtype));
  manifest["notes"] = sum.notes;
  write_manifest(dir.string(), manifest);
  sum.output_files.push_back(kManifestFile);
  out.publish();
  return sum;
}

}  // namespace qt
