#include "calib/architectures.h"

namespace qt::calib {

// Class defaults as transformers 5.23's configuration classes state them (calib/MODELS.md §1).
const std::vector<ArchitectureSpec>& architecture_table() {
  static const std::vector<ArchitectureSpec> t = {
      // name                  model_type   arch                    kv  hd   max_pos     theta  eps    bias                     window                      qk_norm moe
      {"LlamaForCausalLM",    "llama",     Architecture::Llama,    0,  0,   2048,       1e4,   1e-6,  BiasRule::LlamaFlags,    WindowRule::None,           false, MoeLayout::Dense},
      {"MistralForCausalLM",  "mistral",   Architecture::Mistral,  8,  0,   4096 * 32,  1e4,   1e-6,  BiasRule::None,          WindowRule::EveryLayer4096, false, MoeLayout::Dense},
      {"Qwen2ForCausalLM",    "qwen2",     Architecture::Qwen2,    32, 0,   32768,      1e4,   1e-6,  BiasRule::QkvAlways,     WindowRule::QwenMaxWindow,  false, MoeLayout::Dense},
      {"Qwen3ForCausalLM",    "qwen3",     Architecture::Qwen3,    32, 128, 32768,      1e4,   1e-6,  BiasRule::AttentionBias, WindowRule::QwenMaxWindow,  true,  MoeLayout::Dense},
      {"MixtralForCausalLM",  "mixtral",   Architecture::Mixtral,  8,  0,   4096 * 32,  1e6,   1e-5,  BiasRule::None,          WindowRule::EveryLayerNone, false, MoeLayout::Mixtral},
      {"Qwen2MoeForCausalLM", "qwen2_moe", Architecture::Qwen2Moe, 16, 0,   32768,      1e4,   1e-6,  BiasRule::QkvFlag,       WindowRule::QwenMoeOdd,     false, MoeLayout::Qwen2},
      {"Qwen3MoeForCausalLM", "qwen3_moe", Architecture::Qwen3Moe, 4,  0,   32768,      1e4,   1e-6,  BiasRule::AttentionBias, WindowRule::QwenMoeAll,     true,  MoeLayout::Qwen3},
  };
  return t;
}

const ArchitectureSpec* find_architecture(const std::string& name) {
  for (const auto& a : architecture_table())
    if (name == a.name) return &a;
  return nullptr;
}

const ArchitectureSpec* find_architecture_by_model_type(const std::string& model_type) {
  for (const auto& a : architecture_table())
    if (model_type == a.model_type) return &a;
  return nullptr;
}

std::string supported_architectures_text() {
  std::string s = "one of ";
  bool first = true;
  for (const auto& a : architecture_table()) {
    if (!first) s += ", ";
    s += a.name;
    first = false;
  }
  return s;
}

}  // namespace qt::calib
