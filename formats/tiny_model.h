// A seeded generator of tiny Llama-shaped (or mixture-of-experts) model folders for tests and demos.
//
// write_tiny_model(dir, options) writes a complete Hugging Face model folder that transformers
// can load (LlamaForCausalLM by default; MixtralForCausalLM, Qwen3MoeForCausalLM or
// Qwen2MoeForCausalLM with `arch`, see tiny_model_architectures()): config.json, model.safetensors (or shards + index),
// generation_config.json, a small ByteLevel-BPE tokenizer.json and tokenizer_config.json.
// The bytes depend only on the options: every tensor is generated from its own PRNG stream
// (splitmix64 seeded with the seed and the tensor name), using integer arithmetic and IEEE
// operations in a fixed order (no libm), so output is identical on every platform, compiler and
// thread count.
//
// Weights (all drawn in f64, rounded once to f32 (RNE), then to the checkpoint dtype (RNE)):
//   - Linear *_proj.weight [out,in] and lm_head.weight: normal(0, 0.02); in each *_proj weight
//     `outlier_columns` input columns (chosen by the stream) are scaled by `outlier_scale`, like
//     the outlier channels of real LLMs;
//   - embed_tokens: normal(0, 0.02); RMSNorm weights: 1 + normal(0, 0.05);
//   - MoE experts (`experts.N.w1/w2/w3`, `experts.N.*_proj`) as *_proj weights (outlier columns
//     included); routers (`gate.weight`) and `shared_expert_gate.weight`: normal(0, 0.5), so that
//     routing is decisive; biases (Qwen2-MoE q/k/v): normal(0, 0.02).
// "normal" is the Irwin-Hall sum of 12 uniforms minus 6 (mean 0, variance 1, |x| <= 6).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/safetensors_writer.h"
#include "libquant/dtype.h"

namespace qt {

struct TinyModelOptions {
  std::string arch = "llama";  // one of tiny_model_architectures()
  uint64_t seed = 0;
  DType dtype = DType::BF16;  // BF16, F16 or F32
  int hidden_size = 128;
  int intermediate_size = 256;
  int num_layers = 2;
  int num_heads = 4;
  int num_kv_heads = 2;
  int head_dim = 0;      // 0: hidden_size / num_heads; else q_proj has num_heads * head_dim rows
  int vocab_size = 512;  // embedding rows; >= the tokenizer's vocabulary (tiny_tokenizer_size())
  int max_position_embeddings = 256;
  bool tie_word_embeddings = false;  // true: no lm_head.weight tensor
  int num_shards = 1;                // > 1: model-0000i-of-0000n.safetensors + index
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  int outlier_columns = 2;
  float outlier_scale = 10.0f;
  // Mixture-of-experts architectures only (the dense llama ignores them).
  int num_experts = 8;
  int experts_per_token = 2;
  int moe_intermediate_size = 64;      // per expert (Mixtral: written as intermediate_size)
  int shared_intermediate_size = 128;  // qwen2_moe's shared expert
  // qwen3_moe / qwen2_moe: layers with the dense MLP of intermediate_size (mlp_only_layers).
  std::vector<int> mlp_only_layers;
  bool norm_topk_prob = true;          // qwen3_moe / qwen2_moe (Mixtral always renormalises)
};

// The `arch` values: "llama", "mixtral", "qwen3_moe", "qwen2_moe".
const std::vector<std::string>& tiny_model_architectures();

// Number of entries of the tiny tokenizer (256 bytes + merges + <s> + </s>), and its ids.
int tiny_tokenizer_size();
int tiny_bos_id();
int tiny_eos_id();

// Throws InputError(Usage) if the options cannot make a valid model (heads not dividing
// hidden_size, kv heads not dividing heads, vocab too small, shards outside 1..#tensors, dtype
// not BF16/F16/F32, non-positive sizes).
void validate_tiny_model_options(const TinyModelOptions& o);

// The tensors in model order (embed, layers 0.., final norm, lm_head).
std::vector<TensorSpec> tiny_model_tensor_specs(const TinyModelOptions& o);
// The bytes of one tensor of tiny_model_tensor_specs(o) (little-endian, row-major).
std::vector<uint8_t> tiny_model_tensor_bytes(const TinyModelOptions& o, const TensorSpec& spec);
// config.json content.
nlohmann::json tiny_model_config(const TinyModelOptions& o);

// Writes the folder (created if missing; existing files of the same names are replaced).
// Throws InputError(Usage) for bad options, InputError(Io) for OS errors.
void write_tiny_model(const std::string& dir, const TinyModelOptions& o);

// `qtool tiny-model OUT`: writes the model as every writing command publishes its output
// (formats/output_folder.h): under the claim on OUT, into `<OUT>.qtool-partial-<pid>`, renamed to
// OUT only when complete, never replacing anything at OUT (an existing OUT other than an empty
// folder is refused up front; one that appears during the run is left alone and the run fails).
// Returns what taking the claim found about leftovers of killed runs (one line each).
std::vector<std::string> publish_tiny_model(const std::string& out, const TinyModelOptions& o);

}  // namespace qt
