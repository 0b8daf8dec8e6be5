// The decoder-LLM hyper-parameters the CPU forward pass needs, read from a Hugging Face
// config.json (calib/MODELS.md §1, §3, §6).
//
// Supported architectures (config.json `architectures[0]`, or `model_type` when that key is
// missing): the rows of calib/architectures.h (Llama, Mistral, Qwen2, Qwen3 and the
// mixture-of-experts Mixtral, Qwen2-MoE, Qwen3-MoE). Anything else is refused with
// InputError(Unsupported).
//
// Absent keys take the default of the transformers configuration class of that architecture
// (e.g. Mistral `sliding_window` absent -> 4096, Qwen3 `head_dim` absent -> 128), except the
// five sizes (hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
// vocab_size): every real checkpoint states them, so their absence is reported as a malformed
// file rather than silently replaced by a class default that cannot match the weights.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "calib/architectures.h"

namespace qt::calib {

// RoPE parameters after normalising the three shapes config.json may use:
//   v4: top-level `rope_theta` + `rope_scaling` {"rope_type": ...} (or legacy {"type": ...});
//   v5: `rope_parameters` {"rope_type", "rope_theta", ...}.
// `rope_scaling` / `rope_parameters` null or absent -> "default".
struct RopeConfig {
  std::string type = "default";  // "default", "linear", "llama3", "yarn", "dynamic"
  double theta = 10000.0;        // base; transformers' default_theta when absent
  double factor = 1.0;           // linear / llama3 / yarn / dynamic
  // llama3
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  // llama3 and yarn: pretraining context length L0. Precedence as transformers'
  // standardize_rope_params: top-level `original_max_position_embeddings`, then the key inside
  // rope_scaling / rope_parameters, then max_position_embeddings.
  double original_max_position_embeddings = 0.0;
  // yarn
  std::optional<double> attention_factor;  // explicit attention_factor, else derived
  std::optional<double> mscale, mscale_all_dim;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  bool truncate = true;
};

// The mixture-of-experts part of a config (calib/MODELS.md §10); num_experts 0 for dense models.
struct MoeConfig {
  MoeLayout layout = MoeLayout::Dense;
  int64_t num_experts = 0;          // E: num_local_experts (Mixtral) / num_experts (Qwen)
  int64_t top_k = 0;                // num_experts_per_tok
  int64_t expert_intermediate = 0;  // Mixtral intermediate_size, Qwen moe_intermediate_size
  int64_t shared_intermediate = 0;  // Qwen2-MoE shared_expert_intermediate_size (0: no shared expert)
  bool norm_topk_prob = true;       // renormalise the top-k probabilities (Mixtral always)
  std::vector<bool> sparse_layer;   // per layer: experts (true) or the dense MLP (false)
  // Module names inside a layer: "block_sparse_moe" / "mlp", and the expert projections.
  std::string block, gate_proj, up_proj, down_proj;
};

struct ModelConfig {
  std::string file;          // the config.json this came from (for error messages)
  std::string architecture;  // as written, e.g. "Qwen3ForCausalLM"
  Architecture arch = Architecture::Llama;
  const ArchitectureSpec* spec = nullptr;  // the row of architecture_table()

  int64_t hidden_size = 0;        // H
  int64_t intermediate_size = 0;  // I
  int64_t num_layers = 0;         // L (num_hidden_layers)
  int64_t num_heads = 0;          // nH (num_attention_heads)
  int64_t num_kv_heads = 0;       // nKV (num_key_value_heads; absent/null -> nH or class default)
  int64_t head_dim = 0;           // D (explicit, else H / nH; Qwen3 class default 128)
  int64_t vocab_size = 0;         // V = embedding rows (may exceed the tokenizer's vocabulary)
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  RopeConfig rope;
  bool tie_word_embeddings = false;  // config.json value / class default; see lm_head_tied()

  // Which optional tensors exist, resolved per architecture (calib/MODELS.md §6):
  bool qkv_bias = false;  // q/k/v_proj.bias: Llama attention_bias, Qwen2 always, Qwen3 attention_bias
  bool o_bias = false;    // o_proj.bias: Llama/Qwen3 attention_bias; Mistral/Qwen2 never
  bool mlp_bias = false;  // gate/up/down_proj.bias: Llama mlp_bias only
  bool qk_norm = false;   // Qwen3 per-head q_norm / k_norm

  // Sliding attention window per layer, in tokens including the current one (key j visible
  // from query i iff i - W < j <= i); 0 = full causal attention. Mistral: `sliding_window` on
  // every layer. Qwen2/Qwen3: only when `use_sliding_window`, on the layers `layer_types` marks
  // "sliding_attention" (default: layers >= max_window_layers).
  std::vector<int64_t> sliding_window;

  MoeConfig moe;
  bool is_moe() const { return moe.num_experts > 0; }
  bool layer_is_sparse(int64_t l) const {
    return is_moe() && moe.sparse_layer[static_cast<size_t>(l)];
  }
  // "model.layers.3.block_sparse_moe" / "model.layers.3.mlp": the MoE block of a layer.
  std::string moe_block(int64_t l) const;
  // "model.layers.3.mlp.experts.7" (add "." + moe.gate_proj etc.).
  std::string expert_module(int64_t l, int64_t e) const;

  // Parses and validates config.json. `file` names it in errors. Throws qt::InputError:
  // Unsupported for an architecture, activation (hidden_act != "silu"), rope type
  // (longrope, ...) or partial_rotary_factor != 1 qtool does not handle; BadFile for missing /
  // mistyped / inconsistent values (num_heads % num_kv_heads != 0, odd head_dim, ...).
  static ModelConfig from_json(const nlohmann::json& config, const std::string& file);

  int64_t q_dim() const { return num_heads * head_dim; }      // q_proj rows / o_proj columns
  int64_t kv_dim() const { return num_kv_heads * head_dim; }  // k_proj / v_proj rows

  // The lm_head is the embedding matrix when config says so or the checkpoint has no
  // lm_head.weight (calib/MODELS.md §1, 'Tied embeddings').
  bool lm_head_tied(bool checkpoint_has_lm_head) const {
    return tie_word_embeddings || !checkpoint_has_lm_head;
  }
};

// RoPE inverse frequencies (head_dim / 2 values) and the cos/sin multiplier ("attention
// scaling"), computed as transformers' ROPE_INIT_FUNCTIONS do, in the same f32 operation order
// (calib/MODELS.md §3.1, §3.4):
//   default  inv[i] = 1 / theta^(f32(2i) / D)                    (pow and division in f32)
//   linear   default / factor
//   llama3   per-band rescale of default with wavelen = 2*pi / inv
//   yarn     ramp blend of 1/pos_freq and 1/(factor*pos_freq), attention factor from mscale
//   dynamic  default for every sequence <= max_position_embeddings (the only case accepted)
// Values may differ from torch's by an ulp where libm's powf differs from torch's vectorised pow.
struct RopeTables {
  std::vector<float> inv_freq;
  float attention_scaling = 1.0f;
};
RopeTables rope_tables(const ModelConfig& cfg);

}  // namespace qt::calib
