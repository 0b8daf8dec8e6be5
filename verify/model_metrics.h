// The model-level check: the quantized model as vLLM runs it (dequantized weights, activations
// fake-quantized as the scheme does), held-out token samples, and the comparison of two runs'
// logits (perplexity, per-token KL, top-1 agreement).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "calib/forward.h"
#include "formats/quantized_linear.h"

namespace qt {
class Checkpoint;
}

namespace qt::verify {

// A calib::WeightProvider for the forward pass that returns every quantized Linear's weight
// dequantized to f32 (x = f32(code) * f32(scale), one f32 multiply: qt::dequantize) and every
// other tensor decoded as stored. `entries` must describe `ckpt`; both must outlive the provider.
calib::WeightProvider make_dequantizing_provider(const Checkpoint& ckpt, const std::vector<QuantizedLinearEntry>& entries,
                                          std::string source);

// An calib::ActivationTransform that fake-quantizes the input of every quantized Linear whose scheme
// quantizes activations, exactly as the kernels do before their GEMM
// (kernels::quantize_activations: vLLM's static / dynamic per-tensor / per-token / per-group
// rules), then dequantizes in f32: x = f32(code) * scale (one f32 multiply; the product of an
// 8-bit code and an f32 scale may round by half an ulp). Static layers use their stored
// input_scale (must be finite and > 0: throws InputError(BadValue) naming the tensor).
// Modules not in `entries` and weight-only layers are left unchanged.
calib::ActivationTransform make_fake_quant_transform(const Checkpoint& ckpt, const std::vector<QuantizedLinearEntry>& entries);

// Model-level comparison, accumulated token by token from two runs' logits.
struct ModelMetrics {
  int64_t samples = 0, tokens = 0;   // tokens with logits (every position)
  int64_t predicted = 0;             // tokens with a next token (perplexity denominator)
  double ppl_ref = 0, ppl_quant = 0; // exp(mean NLL of the next token), each model
  double kl_mean = 0, kl_p99 = 0, kl_max = 0;  // per-token KL(ref || quant), nats
  double top1 = 0;                   // fraction of positions whose argmax agrees (first max wins)
};

// Accumulates ModelMetrics from logits. Feed the reference run first (all samples), then the
// quantized run, in any chunking; `samples` are the token ids both runs saw. Log-softmax and KL
// are computed in f64 from the f32 logits: KL = sum_v p_ref(v) (log p_ref(v) - log p_q(v)),
// clamped at 0 (it is >= 0 mathematically; identical logits give exactly 0). The reference
// logits are kept as given (f32 [tokens, vocab]) and their log-softmax recomputed per token.
class LogitComparator {
 public:
  explicit LogitComparator(std::vector<std::vector<int32_t>> samples);
  void add_reference(size_t sample, int64_t first_token, const float* logits, int64_t tokens, int64_t vocab);
  void add_quantized(size_t sample, int64_t first_token, const float* logits, int64_t tokens, int64_t vocab);
  // Every token of both runs must have been added (QT_ASSERT).
  ModelMetrics finish() const;
  // Reference-only perplexity (when there is nothing to compare against).
  double reference_perplexity() const;

 private:
  std::vector<std::vector<int32_t>> samples_;
  std::vector<size_t> offset_;     // first global token index of each sample
  size_t total_ = 0;
  int64_t vocab_ = 0;
  std::vector<float> ref_logits_;  // [tokens, vocab]
  std::vector<int32_t> ref_argmax_;
  std::vector<double> ref_nll_, q_nll_, kl_;
  std::vector<uint8_t> agree_, ref_seen_, q_seen_;
};

// Held-out English text compiled into the binary (~2.5 KB; topics unrelated to the built-in
// calibration set): paragraphs separated by blank lines.
const std::string& builtin_heldout_text();

// Token samples for the model-level check: `text` encoded once by `encode` (with the tokenizer's
// special tokens), cut into consecutive chunks of at most `seq_len` tokens, each chunk after the
// first prefixed with `special_prefix` (so every sample starts like a sequence); stops after
// `max_tokens` tokens in total (the last chunk is truncated). Chunks of fewer than 2 tokens are
// dropped.
std::vector<std::vector<int32_t>> heldout_samples(const std::vector<int32_t>& ids_with_specials,
                                                  const std::vector<int32_t>& special_prefix,
                                                  const std::vector<int32_t>& special_suffix,
                                                  int64_t max_tokens, int64_t seq_len);
// Pre-tokenized ids (e.g. `--token-ids`) cut into samples of at most `seq_len` tokens, at most
// `max_tokens` in total (no prefixes added).
std::vector<std::vector<int32_t>> chunk_ids(const std::vector<int32_t>& ids, int64_t max_tokens, int64_t seq_len);

}  // namespace qt::verify
