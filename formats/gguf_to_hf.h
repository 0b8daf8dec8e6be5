// GGUF (llama.cpp) -> Hugging Face model folder, for the Llama architecture
// (general.architecture == "llama": Llama 1-3, Mistral 7B, SmolLM, TinyLlama, ...).
//
// What llama.cpp's convert_hf_to_gguf.py does to a Llama checkpoint, and what is undone here:
//   1. Names: HF "model.layers.N.self_attn.q_proj.weight" became "blk.N.attn_q.weight", etc.
//      (gguf_to_hf_name; the full table is in gguf_to_hf.cpp).
//   2. Rotary order: q_proj and k_proj rows (weights and biases) were permuted so that llama.cpp's
//      RoPE, which rotates adjacent pairs (x0,x1),(x2,x3).., gives the same result as HF's
//      rotate_half, which pairs x_i with x_{i+d/2}. Within each head of d = rows / n_heads rows
//      (n_heads = attention.head_count for q, attention.head_count_kv for k), HF row
//          k = s * d/2 + i   (s in {0,1}, i in [0, d/2))   was written to GGUF row  2*i + s.
//      So HF row k is read from GGUF row  2*(k % (d/2)) + k / (d/2)  (rotary_gguf_row).
//   3. Dimension order: ggml ne[] is reversed (GgufTensor::shape_rowmajor gives the HF shape).
//   4. Quantization: block-quantized tensors are dequantized exactly as ggml does (gguf.h) and
//      written in the output dtype (BF16 by default; RNE from f32). This is not lossless: BF16 or
//      F16 output of F32/F16 GGUF tensors rounds; F32 output is exact.
//   5. config.json from the llama.* metadata; tokenizer.json, tokenizer_config.json and
//      generation_config.json from the tokenizer.* metadata (build_hf_tokenizer).
//   6. rope_freqs.weight (Llama 3.1+ "llama3" RoPE scaling, which llama.cpp stores as per-dimension
//      factors, not as parameters) is turned back into config.json's rope_scaling when it is
//      exactly the llama3 formula with low_freq_factor 1, high_freq_factor 4 and original context
//      8192 (every released Llama 3.x); anything else is refused.
// Not handled (refused with InputError(Unsupported) naming the key or tensor): other
// architectures, MoE Llama (ffn_*_exps), per-layer head counts, YaRN/other RoPE scaling types,
// tokenizer models other than "gpt2" (byte-level BPE) and "llama" (SentencePiece BPE), and
// pre-tokenizers not in the table (gguf_pre_tokenizer_names()).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/convert_job.h"
#include "formats/gguf.h"
#include "formats/gguf_vocab.h"
#include "libquant/dtype.h"

namespace qt {

// ---- names and rotary order --------------------------------------------------------------------

// HF tensor name for a Llama GGUF tensor name, e.g. "blk.3.ffn_down.weight" ->
// "model.layers.3.mlp.down_proj.weight", "token_embd.weight" -> "model.embed_tokens.weight",
// "output.weight" -> "lm_head.weight". "" for names outside the table (including rope_freqs.weight,
// which is not a weight of the HF model).
std::string gguf_to_hf_name(std::string_view gguf_name);

// For a q/k tensor whose rows form heads of `rows_per_head` (even) rows each: the GGUF row that
// holds HF row `hf_row` (see point 2 above). Rows of different heads never mix.
int64_t rotary_gguf_row(int64_t hf_row, int64_t rows_per_head);

// Un-permutes rows: dst row k = src row rotary_gguf_row(k, rows_per_head), for `rows` rows of
// `row_bytes` bytes each (any element type; a bias is rows of one element). rows must be a
// multiple of rows_per_head, rows_per_head even (QT_ASSERT). src and dst must not overlap.
void unpermute_rotary_rows(const uint8_t* src, uint8_t* dst, int64_t rows, int64_t row_bytes,
                           int64_t rows_per_head);

// ---- hyper-parameters and plan -----------------------------------------------------------------

struct LlamaHparams {
  int64_t hidden_size = 0;          // llama.embedding_length
  int64_t intermediate_size = 0;    // llama.feed_forward_length
  int64_t num_layers = 0;           // llama.block_count
  int64_t num_heads = 0;            // llama.attention.head_count
  int64_t num_kv_heads = 0;         // llama.attention.head_count_kv (default: num_heads)
  int64_t head_dim = 0;             // llama.attention.key_length, else hidden_size / num_heads
  int64_t context_length = 0;       // llama.context_length
  int64_t vocab_size = 0;           // rows of token_embd.weight
  double rms_norm_eps = 1e-5;       // llama.attention.layer_norm_rms_epsilon (shortest decimal)
  double rope_theta = 10000.0;      // llama.rope.freq_base (shortest decimal)
  bool tie_word_embeddings = false; // no output.weight tensor
  bool attention_bias = false;      // blk.*.attn_q.bias present
  bool mlp_bias = false;            // blk.*.ffn_up.bias present
  nlohmann::json rope_scaling;      // null, or config.json's rope_scaling object
};

// One output tensor of the conversion.
struct GgufTensorPlan {
  const GgufTensor* src = nullptr;
  std::string hf_name;
  std::vector<int64_t> hf_shape;  // row-major
  int64_t rotary_heads = 0;       // > 0: rows un-permuted with this many heads (q: heads, k: kv heads)
};

struct GgufConversionPlan {
  LlamaHparams hp;
  std::vector<GgufTensorPlan> tensors;  // output order: embeddings, layers 0.., norm, lm_head
  std::vector<std::string> notes;       // e.g. "rope_freqs.weight turned into rope_scaling llama3"
};

// Reads the hyper-parameters and maps every tensor. Throws InputError naming the file and the
// key or tensor: Unsupported (architecture not "llama", an unmapped tensor, a type that cannot be
// dequantized, RoPE scaling that is not representable), Missing (a required key or tensor),
// BadFile (a shape that does not match the hyper-parameters, rows not divisible into heads).
GgufConversionPlan plan_gguf_to_hf(const GgufFile& g);

// config.json for LlamaForCausalLM (torch_dtype from `dtype`; bos/eos/pad ids from the tokenizer
// metadata when present).
nlohmann::json llama_config_json(const GgufFile& g, const LlamaHparams& hp, DType dtype);

// The shortest decimal that reads back as the same f32 (GGUF stores f32: 1e-5 is stored as
// 9.99999974738e-06 and comes back here as 1e-05, what the original config.json said).
double shortest_f32_decimal(float f);

// ---- the conversion ----------------------------------------------------------------------------

// Writes the HF folder: model.safetensors (or shards + index) in `dtype` (BF16, F16 or F32),
// config.json, the tokenizer files, qtool_manifest.json. Streams tensor by tensor (rows in
// chunks; memory bounded by a few tens of MB plus the input mapping), atomically (PartialFolder).
ConvertSummary convert_gguf_to_hf(const GgufFile& g, DType dtype, const ConvertJob& job);

}  // namespace qt
