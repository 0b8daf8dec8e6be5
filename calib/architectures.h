// The one table of decoder architectures the calibration engine runs (calib/MODELS.md §1, §6).
// Each row says, for one transformers model class, everything ModelConfig::from_json and the
// forward pass need that differs between families: class defaults, which biases exist, how the
// sliding window is chosen, q/k norms, and the mixture-of-experts layout. A new family is a new
// row (plus, for a genuinely new block such as MLA, its forward code), never a new switch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qt::calib {

enum class Architecture { Llama, Mistral, Qwen2, Qwen3, Mixtral, Qwen2Moe, Qwen3Moe };

// Which q/k/v/o and MLP biases a family has (transformers' hard-coded bias= arguments).
enum class BiasRule {
  LlamaFlags,     // q/k/v/o when `attention_bias`, gate/up/down when `mlp_bias`
  None,           // never (Mistral, Mixtral)
  QkvAlways,      // q/k/v always, o and MLP never (Qwen2)
  AttentionBias,  // q/k/v/o when `attention_bias` (Qwen3, Qwen3-MoE)
  QkvFlag,        // q/k/v when `qkv_bias` (class default true), o never (Qwen2-MoE)
};

// Which layers slide, and over how many tokens.
enum class WindowRule {
  None,            // full causal attention (Llama)
  EveryLayer4096,  // `sliding_window` on every layer, class default 4096, null = none (Mistral)
  EveryLayerNone,  // `sliding_window` on every layer, class default none (Mixtral)
  QwenMaxWindow,   // with `use_sliding_window`: `layer_types`, else layers >= `max_window_layers` (Qwen2, Qwen3)
  QwenMoeAll,      // with `use_sliding_window`: every layer (Qwen3-MoE)
  QwenMoeOdd,      // with `use_sliding_window`: `layer_types`, else even-indexed layers below
                   // `max_window_layers` (Qwen2-MoE's `(i + 1) % 2 and i < max_window_layers`)
};

// Mixture-of-experts layout of the MLP block (calib/MODELS.md §10).
enum class MoeLayout {
  Dense,    // one SwiGLU MLP per layer
  Mixtral,  // block_sparse_moe.{gate, experts.N.w1/w3/w2}; softmax, top-k, always renormalised
  Qwen3,    // mlp.{gate, experts.N.gate_proj/up_proj/down_proj}; norm_topk_prob; dense layers by
            // decoder_sparse_step / mlp_only_layers
  Qwen2,    // Qwen3's layout plus mlp.shared_expert.* and the sigmoid mlp.shared_expert_gate
};

struct ArchitectureSpec {
  const char* name;        // config.json architectures[0], e.g. "MixtralForCausalLM"
  const char* model_type;  // the model_type that implies it when `architectures` is missing
  Architecture arch;
  int64_t kv_heads_default;        // num_key_value_heads absent; 0 = num_attention_heads
  int64_t head_dim_default;        // head_dim absent; 0 = hidden_size / num_attention_heads
  int64_t max_position_default;
  double rope_theta_default;
  double rms_norm_eps_default;
  BiasRule bias;
  WindowRule window;
  bool qk_norm;  // per-head RMSNorm of q and k before RoPE
  MoeLayout moe;
};

// Every supported architecture, in the order error messages list them.
const std::vector<ArchitectureSpec>& architecture_table();
// The row for a class name / model_type; nullptr when unsupported.
const ArchitectureSpec* find_architecture(const std::string& name);
const ArchitectureSpec* find_architecture_by_model_type(const std::string& model_type);
// "one of LlamaForCausalLM, MistralForCausalLM, ..." for error messages.
std::string supported_architectures_text();

}  // namespace qt::calib
