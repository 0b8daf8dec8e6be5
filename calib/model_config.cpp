#include "calib/model_config.h"

#include <cmath>
#include <cstdio>
#include <numbers>

#include "libquant/error.h"

namespace qt::calib {
namespace {

using json = nlohmann::json;
using Kind = InputError::Kind;

std::string fmt_double(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}


std::string type_name(const json& v) { return v.type_name(); }

// Key present and not null.
bool has(const json& j, const char* key) { return j.contains(key) && !j.at(key).is_null(); }

int64_t get_int(const json& j, const char* key, const std::string& file, std::optional<int64_t> def,
                const std::string& where = {}) {
  if (!has(j, key)) {
    if (def) return *def;
    throw InputError(Kind::BadFile, file, "", "config key '" + where + key + "' is missing",
                     "an integer", "nothing");
  }
  const json& v = j.at(key);
  if (v.is_number_integer()) return v.get<int64_t>();
  // Some configs write sizes as 4096.0; accept integral floats.
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) return static_cast<int64_t>(d);
  }
  throw InputError(Kind::BadFile, file, "", "config key '" + where + key + "' is not an integer",
                   "an integer", v.dump());
}

double get_num(const json& j, const char* key, const std::string& file, double def,
               const std::string& where = {}) {
  if (!has(j, key)) return def;
  const json& v = j.at(key);
  if (!v.is_number())
    throw InputError(Kind::BadFile, file, "", "config key '" + where + key + "' is not a number",
                     "a number", v.dump());
  return v.get<double>();
}

std::optional<double> get_opt_num(const json& j, const char* key, const std::string& file,
                                  const std::string& where) {
  if (!has(j, key)) return std::nullopt;
  return get_num(j, key, file, 0.0, where);
}

bool get_bool(const json& j, const char* key, const std::string& file, bool def) {
  if (!has(j, key)) return def;
  const json& v = j.at(key);
  if (!v.is_boolean())
    throw InputError(Kind::BadFile, file, "", std::string("config key '") + key + "' is not a boolean",
                     "true or false", v.dump());
  return v.get<bool>();
}

std::string get_str(const json& j, const char* key, const std::string& file, const std::string& def,
                    const std::string& where = {}) {
  if (!has(j, key)) return def;
  const json& v = j.at(key);
  if (!v.is_string())
    throw InputError(Kind::BadFile, file, "", "config key '" + where + key + "' is not a string",
                     "a string", v.dump());
  return v.get<std::string>();
}

void require_positive(int64_t v, const char* key, const std::string& file) {
  if (v <= 0)
    throw InputError(Kind::BadFile, file, "", std::string("config key '") + key + "' must be positive",
                     "> 0", std::to_string(v));
  // Sizes multiply into buffer sizes (tokens x hidden x 4 bytes ...): bounded so that no product
  // overflows and an absurd value is named here, not reported as "out of memory" later.
  constexpr int64_t kMax = (int64_t{1} << 31) - 1;
  if (v > kMax)
    throw InputError(Kind::BadFile, file, "", std::string("config key '") + key + "' is too large",
                     "at most " + std::to_string(kMax), std::to_string(v));
}

// Reads the three RoPE layouts into one RopeConfig (see header).
RopeConfig parse_rope(const json& cfg, const std::string& file, int64_t max_pos, double default_theta) {
  RopeConfig r;
  r.theta = get_num(cfg, "rope_theta", file, default_theta);
  const json* params = nullptr;
  std::string where;
  if (has(cfg, "rope_parameters")) {
    params = &cfg.at("rope_parameters");
    where = "rope_parameters.";
  } else if (has(cfg, "rope_scaling")) {
    params = &cfg.at("rope_scaling");
    where = "rope_scaling.";
  }
  if (params && !params->is_object())
    throw InputError(Kind::BadFile, file, "", "config key '" + where.substr(0, where.size() - 1) +
                     "' is not an object", "an object or null", params->dump());
  if (params && !params->empty()) {
    const json& p = *params;
    // v5 per-layer-type nesting ({"full_attention": {...}, "sliding_attention": {...}}) is a
    // Gemma3-family feature; none of the supported architectures writes it.
    if (p.contains("full_attention") || p.contains("sliding_attention"))
      throw InputError(Kind::Unsupported, file, "", "per-layer-type rope_parameters are not supported",
                       "one rope_parameters object", p.dump());
    r.type = get_str(p, "rope_type", file, get_str(p, "type", file, "default", where), where);
    r.theta = get_num(p, "rope_theta", file, r.theta, where);
    double prf = get_num(p, "partial_rotary_factor", file,
                         get_num(cfg, "partial_rotary_factor", file, 1.0), where);
    if (prf != 1.0)
      throw InputError(Kind::Unsupported, file, "", "partial_rotary_factor is not supported for this architecture",
                       "1.0", std::to_string(prf));
    if (r.type == "default") {
      // nothing else to read
    } else if (r.type == "linear" || r.type == "dynamic") {
      r.factor = get_num(p, "factor", file, NAN, where);
      if (!std::isfinite(r.factor))
        throw InputError(Kind::BadFile, file, "", "config key '" + where + "factor' is missing",
                         "a number", "nothing");
    } else if (r.type == "llama3" || r.type == "yarn") {
      // standardize_rope_params: a top-level original_max_position_embeddings wins.
      r.original_max_position_embeddings = static_cast<double>(
          has(cfg, "original_max_position_embeddings")
              ? get_int(cfg, "original_max_position_embeddings", file, std::nullopt)
              : get_int(p, "original_max_position_embeddings", file, max_pos, where));
      if (r.original_max_position_embeddings <= 0)
        throw InputError(Kind::BadFile, file, "", "original_max_position_embeddings must be positive",
                         "> 0", std::to_string(r.original_max_position_embeddings));
      if (r.type == "llama3") {
        for (const char* k : {"factor", "low_freq_factor", "high_freq_factor"})
          if (!has(p, k))
            throw InputError(Kind::BadFile, file, "", "config key '" + where + k + "' is missing",
                             "a number (llama3 rope scaling)", "nothing");
        r.factor = get_num(p, "factor", file, 1.0, where);
        r.low_freq_factor = get_num(p, "low_freq_factor", file, 1.0, where);
        r.high_freq_factor = get_num(p, "high_freq_factor", file, 4.0, where);
        if (!(r.high_freq_factor > r.low_freq_factor))
          throw InputError(Kind::BadFile, file, "", "llama3 rope scaling needs high_freq_factor > low_freq_factor",
                           "high > low", std::to_string(r.high_freq_factor) + " <= " +
                                             std::to_string(r.low_freq_factor));
      } else {
        // Explicit factor wins; derive it from the context ratio only when absent
        // (transformers after PR #40320; see calib/MODELS.md §3.4, 'Version trap').
        r.factor = has(p, "factor") ? get_num(p, "factor", file, 1.0, where)
                                    : static_cast<double>(max_pos) / r.original_max_position_embeddings;
        r.attention_factor = get_opt_num(p, "attention_factor", file, where);
        r.mscale = get_opt_num(p, "mscale", file, where);
        r.mscale_all_dim = get_opt_num(p, "mscale_all_dim", file, where);
        // transformers: `get("beta_fast") or 32` -- a 0 also means the default.
        r.beta_fast = get_num(p, "beta_fast", file, 32.0, where);
        if (r.beta_fast == 0.0) r.beta_fast = 32.0;
        r.beta_slow = get_num(p, "beta_slow", file, 1.0, where);
        if (r.beta_slow == 0.0) r.beta_slow = 1.0;
        r.truncate = get_bool(p, "truncate", file, true);
      }
    } else {
      throw InputError(Kind::Unsupported, file, "", "rope type '" + r.type + "' is not supported",
                       "default, linear, dynamic, llama3 or yarn", r.type);
    }
    if (!(r.factor > 0.0) || !std::isfinite(r.factor))
      throw InputError(Kind::BadFile, file, "", "rope scaling factor must be a positive number", "> 0",
                       std::to_string(r.factor));
  } else if (has(cfg, "partial_rotary_factor") && get_num(cfg, "partial_rotary_factor", file, 1.0) != 1.0) {
    throw InputError(Kind::Unsupported, file, "", "partial_rotary_factor is not supported for this architecture",
                     "1.0", cfg.at("partial_rotary_factor").dump());
  }
  if (!(r.theta > 0.0) || !std::isfinite(r.theta))
    throw InputError(Kind::BadFile, file, "", "rope_theta must be a positive number", "> 0",
                     std::to_string(r.theta));
  return r;
}

}  // namespace

ModelConfig ModelConfig::from_json(const json& cfg, const std::string& file) {
  if (!cfg.is_object())
    throw InputError(Kind::BadFile, file, "", "config.json is not a JSON object", "an object", type_name(cfg));
  ModelConfig c;
  c.file = file;

  // --- architecture dispatch: architectures[0], else model_type --------------------------------
  const ArchitectureSpec* spec = nullptr;
  if (has(cfg, "architectures")) {
    const json& a = cfg.at("architectures");
    if (!a.is_array() || a.empty() || !a.at(0).is_string())
      throw InputError(Kind::BadFile, file, "", "config key 'architectures' is not a list of names",
                       "[\"LlamaForCausalLM\"]", a.dump());
    c.architecture = a.at(0).get<std::string>();
    spec = find_architecture(c.architecture);
    if (!spec)
      throw InputError(Kind::Unsupported, file, "", "architecture '" + c.architecture + "' is not supported",
                       supported_architectures_text());
  } else {
    const std::string mt = get_str(cfg, "model_type", file, "");
    spec = find_architecture_by_model_type(mt);
    if (!spec)
      throw InputError(Kind::Unsupported, file, "",
                       mt.empty() ? std::string("config.json names no architecture")
                                  : "model_type '" + mt + "' is not supported",
                       supported_architectures_text());
    c.architecture = spec->name;
  }
  c.spec = spec;
  c.arch = spec->arch;

  // --- sizes ---------------------------------------------------------------------------------
  c.hidden_size = get_int(cfg, "hidden_size", file, std::nullopt);
  c.intermediate_size = get_int(cfg, "intermediate_size", file, std::nullopt);
  c.num_layers = get_int(cfg, "num_hidden_layers", file, std::nullopt);
  c.num_heads = get_int(cfg, "num_attention_heads", file, std::nullopt);
  c.vocab_size = get_int(cfg, "vocab_size", file, std::nullopt);
  require_positive(c.hidden_size, "hidden_size", file);
  require_positive(c.intermediate_size, "intermediate_size", file);
  require_positive(c.num_layers, "num_hidden_layers", file);
  require_positive(c.num_heads, "num_attention_heads", file);
  require_positive(c.vocab_size, "vocab_size", file);

  // num_key_value_heads: null -> nH for every class; absent -> the class default
  // (Llama None -> nH, Mistral 8, Qwen2/Qwen3 32).
  if (cfg.contains("num_key_value_heads") && cfg.at("num_key_value_heads").is_null()) {
    c.num_kv_heads = c.num_heads;
  } else {
    const int64_t def = spec->kv_heads_default > 0 ? spec->kv_heads_default : c.num_heads;
    c.num_kv_heads = get_int(cfg, "num_key_value_heads", file, def);
  }
  require_positive(c.num_kv_heads, "num_key_value_heads", file);
  if (c.num_heads % c.num_kv_heads != 0)
    throw InputError(Kind::BadFile, file, "", "num_attention_heads is not a multiple of num_key_value_heads",
                     "a multiple of " + std::to_string(c.num_kv_heads), std::to_string(c.num_heads));

  // head_dim: absent -> class default (Qwen3 128, others H/nH); null -> H/nH (the modeling code's
  // `getattr(config, "head_dim", None) or H // nH`).
  {
    std::optional<int64_t> def;
    if (!cfg.contains("head_dim") || cfg.at("head_dim").is_null()) {
      if (spec->head_dim_default > 0 && !cfg.contains("head_dim")) {
        def = spec->head_dim_default;
      } else {
        if (c.hidden_size % c.num_heads != 0)
          throw InputError(Kind::BadFile, file, "", "head_dim is not given and hidden_size is not a multiple of num_attention_heads",
                           "a multiple of " + std::to_string(c.num_heads), std::to_string(c.hidden_size));
        def = c.hidden_size / c.num_heads;
      }
    }
    c.head_dim = get_int(cfg, "head_dim", file, def);
    require_positive(c.head_dim, "head_dim", file);
    if (c.head_dim > 65536)
      throw InputError(Kind::BadFile, file, "",
                       def ? "head_dim (hidden_size / num_attention_heads: head_dim is not given) is too large"
                           : "head_dim is too large",
                       "at most 65536", std::to_string(c.head_dim));
    if (c.head_dim % 2 != 0)
      throw InputError(Kind::BadFile, file, "", "head_dim must be even for rotary embeddings", "an even number",
                       std::to_string(c.head_dim));
  }

  c.max_position_embeddings = get_int(cfg, "max_position_embeddings", file, spec->max_position_default);
  require_positive(c.max_position_embeddings, "max_position_embeddings", file);

  c.rms_norm_eps = get_num(cfg, "rms_norm_eps", file, spec->rms_norm_eps_default);
  if (!(c.rms_norm_eps >= 0.0) || !std::isfinite(c.rms_norm_eps))
    throw InputError(Kind::BadFile, file, "", "rms_norm_eps must be a non-negative number", ">= 0",
                     std::to_string(c.rms_norm_eps));

  const std::string act = get_str(cfg, "hidden_act", file, "silu");
  if (act != "silu")
    throw InputError(Kind::Unsupported, file, "", "hidden_act '" + act + "' is not supported", "silu", act);

  c.tie_word_embeddings = get_bool(cfg, "tie_word_embeddings", file, false);
  c.rope = parse_rope(cfg, file, c.max_position_embeddings, spec->rope_theta_default);

  // --- biases and norms per architecture --------------------------------------------------------
  const bool attention_bias = get_bool(cfg, "attention_bias", file, false);
  switch (spec->bias) {
    case BiasRule::LlamaFlags:
      c.qkv_bias = c.o_bias = attention_bias;
      c.mlp_bias = get_bool(cfg, "mlp_bias", file, false);
      break;
    case BiasRule::None:  // no bias anywhere (hard-coded bias=False)
      break;
    case BiasRule::QkvAlways:  // q/k/v bias hard-coded True, o_proj and MLP without
      c.qkv_bias = true;
      break;
    case BiasRule::AttentionBias:
      c.qkv_bias = c.o_bias = attention_bias;
      break;
    case BiasRule::QkvFlag:
      c.qkv_bias = get_bool(cfg, "qkv_bias", file, true);
      break;
  }
  c.qk_norm = spec->qk_norm;

  // --- sliding window -----------------------------------------------------------------------
  c.sliding_window.assign(static_cast<size_t>(c.num_layers), 0);
  auto read_window = [&](int64_t def) {
    int64_t w = cfg.contains("sliding_window") && cfg.at("sliding_window").is_null()
                    ? 0
                    : get_int(cfg, "sliding_window", file, def);
    if (w < 0)
      throw InputError(Kind::BadFile, file, "", "sliding_window must be positive or null", "> 0",
                       std::to_string(w));
    return w;
  };
  auto read_layer_types = [&](int64_t w) {
    const json& lt = cfg.at("layer_types");
    if (!lt.is_array() || static_cast<int64_t>(lt.size()) != c.num_layers)
      throw InputError(Kind::BadFile, file, "", "layer_types must list one type per layer",
                       std::to_string(c.num_layers) + " entries", lt.dump());
    for (int64_t l = 0; l < c.num_layers; ++l) {
      const json& t = lt.at(static_cast<size_t>(l));
      if (!t.is_string() || (t != "sliding_attention" && t != "full_attention"))
        throw InputError(Kind::Unsupported, file, "", "layer type at index " + std::to_string(l) + " is not supported",
                         "\"full_attention\" or \"sliding_attention\"", t.dump());
      if (t == "sliding_attention") c.sliding_window[static_cast<size_t>(l)] = w;
    }
  };
  switch (spec->window) {
    case WindowRule::None:
      break;
    case WindowRule::EveryLayer4096:  // absent -> class default 4096; null -> none
    case WindowRule::EveryLayerNone: {  // absent or null -> none
      const int64_t w = read_window(spec->window == WindowRule::EveryLayer4096 ? 4096 : 0);
      for (auto& x : c.sliding_window) x = w;
      break;
    }
    case WindowRule::QwenMaxWindow:
    case WindowRule::QwenMoeAll:
    case WindowRule::QwenMoeOdd: {
      // The window exists only with use_sliding_window; which layers use it comes from
      // layer_types (Qwen2/Qwen3/Qwen2-MoE), else from the family's rule.
      const bool use = get_bool(cfg, "use_sliding_window", file, false);
      const int64_t w = use ? read_window(4096) : 0;
      if (spec->window != WindowRule::QwenMoeAll && has(cfg, "layer_types")) {
        read_layer_types(w);
      } else if (w > 0) {
        const int64_t mwl = get_int(cfg, "max_window_layers", file, 28);
        for (int64_t l = 0; l < c.num_layers; ++l) {
          bool slides = true;
          if (spec->window == WindowRule::QwenMaxWindow) slides = l >= mwl;
          else if (spec->window == WindowRule::QwenMoeOdd) slides = (l + 1) % 2 != 0 && l < mwl;
          if (slides) c.sliding_window[static_cast<size_t>(l)] = w;
        }
      }
      break;
    }
  }
  // The rotary tables these parameters give must be usable: each field can be in range while the
  // combination (or its f32 rounding: rope_theta 1e-300 is 0 in f32) gives a zero, infinite or
  // NaN frequency or attention scaling, which would make every hidden state NaN.
  if (!std::isfinite(static_cast<float>(c.rope.theta)) || !(static_cast<float>(c.rope.theta) > 0.0f))
    throw InputError(Kind::BadFile, file, "", "rope_theta is outside the f32 range", "a positive f32 value",
                     fmt_double(c.rope.theta));
  const RopeTables rt = rope_tables(c);
  if (!std::isfinite(rt.attention_scaling) || !(rt.attention_scaling > 0.0f))
    throw InputError(Kind::BadFile, file, "",
                     "the rope parameters (rope_theta, rope_scaling / rope_parameters) give an attention scaling of " +
                         fmt_double(rt.attention_scaling),
                     "a positive finite number");
  for (size_t i = 0; i < rt.inv_freq.size(); ++i)
    if (!std::isfinite(rt.inv_freq[i]) || !(rt.inv_freq[i] > 0.0f))
      throw InputError(Kind::BadFile, file, "",
                       "the rope parameters (rope_theta, rope_scaling / rope_parameters) give rotary frequency " +
                           std::to_string(i) + " = " + fmt_double(rt.inv_freq[i]),
                       "a positive finite number");

  // --- mixture of experts ---------------------------------------------------------------------
  if (spec->moe != MoeLayout::Dense) {
    MoeConfig& m = c.moe;
    m.layout = spec->moe;
    m.sparse_layer.assign(static_cast<size_t>(c.num_layers), true);
    if (spec->moe == MoeLayout::Mixtral) {
      // transformers maps `num_experts` to `num_local_experts` for both families (attribute_map):
      // either key may appear in config.json.
      m.num_experts = get_int(cfg, "num_local_experts", file, get_int(cfg, "num_experts", file, 8));
      m.top_k = get_int(cfg, "num_experts_per_tok", file, 2);
      m.expert_intermediate = c.intermediate_size;
      m.norm_topk_prob = true;
      m.block = "block_sparse_moe";
      m.gate_proj = "w1", m.up_proj = "w3", m.down_proj = "w2";
      require_positive(m.num_experts, "num_local_experts", file);
    } else {
      const bool qwen2 = spec->moe == MoeLayout::Qwen2;
      m.num_experts = get_int(cfg, "num_experts", file, get_int(cfg, "num_local_experts", file, qwen2 ? 60 : 128));
      m.top_k = get_int(cfg, "num_experts_per_tok", file, qwen2 ? 4 : 8);
      m.expert_intermediate = get_int(cfg, "moe_intermediate_size", file, qwen2 ? 1408 : 768);
      require_positive(m.expert_intermediate, "moe_intermediate_size", file);
      if (qwen2) {
        m.shared_intermediate = get_int(cfg, "shared_expert_intermediate_size", file, 5632);
        require_positive(m.shared_intermediate, "shared_expert_intermediate_size", file);
      }
      m.norm_topk_prob = get_bool(cfg, "norm_topk_prob", file, false);
      m.block = "mlp";
      m.gate_proj = "gate_proj", m.up_proj = "up_proj", m.down_proj = "down_proj";
      // A layer has experts iff it is not in mlp_only_layers, num_experts > 0 and
      // (l + 1) % decoder_sparse_step == 0; otherwise the dense MLP of intermediate_size.
      const int64_t step = get_int(cfg, "decoder_sparse_step", file, 1);
      if (step <= 0)
        throw InputError(Kind::BadFile, file, "", "config key 'decoder_sparse_step' must be positive", "> 0",
                         std::to_string(step));
      std::vector<bool> mlp_only(static_cast<size_t>(c.num_layers), false);
      if (has(cfg, "mlp_only_layers")) {
        const json& mo = cfg.at("mlp_only_layers");
        if (!mo.is_array())
          throw InputError(Kind::BadFile, file, "", "config key 'mlp_only_layers' is not a list of layer indices",
                           "[0, 3, ...]", mo.dump());
        for (const json& v : mo) {
          if (!v.is_number_integer())
            throw InputError(Kind::BadFile, file, "", "config key 'mlp_only_layers' is not a list of layer indices",
                             "[0, 3, ...]", mo.dump());
          const int64_t l = v.get<int64_t>();
          if (l >= 0 && l < c.num_layers) mlp_only[static_cast<size_t>(l)] = true;
        }
      }
      for (int64_t l = 0; l < c.num_layers; ++l)
        m.sparse_layer[static_cast<size_t>(l)] =
            !mlp_only[static_cast<size_t>(l)] && m.num_experts > 0 && (l + 1) % step == 0;
      if (m.num_experts == 0) m.sparse_layer.assign(static_cast<size_t>(c.num_layers), false);
    }
    if (m.num_experts < 0)
      throw InputError(Kind::BadFile, file, "", "the number of experts must not be negative", ">= 0",
                       std::to_string(m.num_experts));
    if (m.num_experts > 0 && (m.top_k <= 0 || m.top_k > m.num_experts))
      throw InputError(Kind::BadFile, file, "", "config key 'num_experts_per_tok' must be between 1 and the number of experts",
                       "1.." + std::to_string(m.num_experts), std::to_string(m.top_k));
  }
  return c;
}

std::string ModelConfig::moe_block(int64_t l) const {
  return "model.layers." + std::to_string(l) + "." + moe.block;
}

std::string ModelConfig::expert_module(int64_t l, int64_t e) const {
  return moe_block(l) + ".experts." + std::to_string(e);
}

RopeTables rope_tables(const ModelConfig& cfg) {
  const RopeConfig& r = cfg.rope;
  const int64_t dim = cfg.head_dim;  // rotary dim Dr (partial_rotary_factor is always 1 here)
  const int64_t half = dim / 2;
  RopeTables t;
  t.inv_freq.resize(static_cast<size_t>(half));
  const float theta = static_cast<float>(r.theta);
  const float fdim = static_cast<float>(dim);

  // pos_freq[i] = theta ** (f32(2i) / f32(dim)): torch.arange(0, dim, 2) cast to f32, one f32
  // division, then pow(scalar, tensor) in f32.
  auto pos_freq = [&](int64_t i) {
    const float e = static_cast<float>(2 * i) / fdim;
    return std::pow(theta, e);  // float overload: f32 in, f32 out
  };
  auto base_inv = [&](int64_t i) { return 1.0f / pos_freq(i); };

  if (r.type == "default" || r.type == "dynamic") {
    for (int64_t i = 0; i < half; ++i) t.inv_freq[i] = base_inv(i);
  } else if (r.type == "linear") {
    // inv_freq /= factor: f32 tensor divided by a Python float, computed in f32.
    const float f = static_cast<float>(r.factor);
    for (int64_t i = 0; i < half; ++i) t.inv_freq[i] = base_inv(i) / f;
  } else if (r.type == "llama3") {
    // All tensor arithmetic is f32: torch converts a Python scalar operand to the tensor's f32,
    // including in the band comparisons. Only Python-side arithmetic (the band limits L0/lf and
    // L0/hf, the denominator hf - lf) is done in double and then enters as f32.
    const float factor = static_cast<float>(r.factor);
    const float lo = static_cast<float>(r.low_freq_factor);
    const float band = static_cast<float>(r.high_freq_factor - r.low_freq_factor);
    const double L0 = r.original_max_position_embeddings;
    const float lo_wl = static_cast<float>(L0 / r.low_freq_factor);
    const float hi_wl = static_cast<float>(L0 / r.high_freq_factor);
    const float two_pi = static_cast<float>(2.0 * std::numbers::pi);
    const float fL0 = static_cast<float>(L0);
    for (int64_t i = 0; i < half; ++i) {
      const float inv = base_inv(i);
      const float wavelen = two_pi / inv;
      float v = wavelen > lo_wl ? inv / factor : inv;  // low-frequency band: fully interpolated
      if (!(wavelen < hi_wl) && !(wavelen > lo_wl)) {  // medium band: smooth blend
        const float s = (fL0 / wavelen - lo) / band;
        v = (1.0f - s) * v / factor + s * v;
      }
      t.inv_freq[i] = v;
    }
  } else if (r.type == "yarn") {
    const double factor = r.factor;
    auto get_mscale = [](double scale, double m) { return scale <= 1.0 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; };
    double af;
    if (r.attention_factor) {
      af = *r.attention_factor;
    } else if (r.mscale && r.mscale_all_dim && *r.mscale != 0.0 && *r.mscale_all_dim != 0.0) {
      af = get_mscale(factor, *r.mscale) / get_mscale(factor, *r.mscale_all_dim);
    } else {
      af = get_mscale(factor, 1.0);
    }
    t.attention_scaling = static_cast<float>(af);

    // Correction range in double (Python math), as find_correction_range does.
    const double base = r.theta;
    const double L0 = r.original_max_position_embeddings;
    auto correction_dim = [&](double rot) {
      return (static_cast<double>(dim) * std::log(L0 / (rot * 2.0 * std::numbers::pi))) / (2.0 * std::log(base));
    };
    double low = correction_dim(r.beta_fast);
    double high = correction_dim(r.beta_slow);
    if (r.truncate) {
      low = std::floor(low);
      high = std::ceil(high);
    }
    low = std::max(low, 0.0);
    high = std::min(high, static_cast<double>(dim - 1));
    if (low == high) high += 0.001;  // avoid a zero-width ramp
    // ramp[i] = clamp((f32(i) - low) / (high - low), 0, 1) in f32: torch subtracts the Python
    // number `low` (as f32) from the f32 arange, then divides by the Python double (high - low)
    // converted to f32.
    const float flow = static_cast<float>(low);
    const float fwidth = static_cast<float>(high - low);
    const float ffactor = static_cast<float>(factor);
    for (int64_t i = 0; i < half; ++i) {
      const float pf = pos_freq(i);
      const float extra = 1.0f / pf;
      const float inter = 1.0f / (ffactor * pf);
      float ramp = (static_cast<float>(i) - flow) / fwidth;
      ramp = std::min(std::max(ramp, 0.0f), 1.0f);
      const float extra_w = 1.0f - ramp;  // inv_freq_extrapolation_factor
      t.inv_freq[i] = inter * (1.0f - extra_w) + extra * extra_w;
    }
  } else {
    QT_ASSERT(false && "rope type validated in from_json");
  }
  return t;
}

}  // namespace qt::calib
