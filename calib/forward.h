// CPU forward pass of the supported decoder LLMs (calib/architectures.h: Llama, Mistral, Qwen2,
// Qwen3, and the mixture-of-experts Mixtral, Qwen2-MoE, Qwen3-MoE) over a whole
// calibration set, layer by layer, as llm-compressor's sequential pipeline runs it
// (calib/MODELS.md §7 'The calibration pipeline'; the layers: §2-§6).
//
// Flow of run_forward():
//   1. load model.embed_tokens.weight, gather the rows of every sample into its hidden state
//      ([tokens, hidden] f32 per sample), free the embedding;
//   2. for each layer l: load ONLY layer l's tensors through the WeightProvider, run the layer
//      on every sample in turn (hidden states of all samples stay in memory between layers);
//      the next layer's weights are loaded and packed into the same buffers (fresh pages cost
//      more than the copy into them), freed after the last layer;
//   3. only when logits are requested (ForwardOptions::on_logits): final norm, then lm_head
//      (or the embedding when tied) in token chunks, streamed to the callback.
// Peak memory ~ 4 bytes * (all calibration tokens * hidden + one layer's parameters + one
// sample's intermediates [tokens, max(q+2kv, 2*intermediate)]) + the caller's mapped files;
// + the row-major copy of a layer's largest fused group (q/k/v or gate/up), the buffers its
// Linears are decoded into before packing. The first
// term leaves anonymous memory for a file-backed mapping above ForwardOptions::hidden_spill.
//
// Numerics: every tensor is f32; weights are decoded to f32 (exact from bf16/f16). Every matrix
// product (the Linears, attention's Q K^T and P V) is libquant/gemm.h's: one f32 FMA chain per
// output, k ascending. exp is vmath.h's exp_f32 (within 2 ulp). RMSNorm's mean of squares and
// softmax's denominator are summed in double then rounded to f32 (more accurate than, and within
// an ulp or two of, torch's f32 cascade sums). Op order otherwise follows transformers' eager f32
// path (calib/MODELS.md §2-§5):
//   RMSNorm  y = w * (x * (1 / sqrt(f32(mean(x^2)) + eps)))
//   linear   y = x W^T (+ b)
//   RoPE     rotate_half pairs (d, d + D/2); cos/sin from f32(p) * inv_freq, times the attention
//            scaling (yarn), in f32
//   attention scores = (q k^T) * D^-0.5, causal (+ sliding window), softmax with max
//            subtraction, masked keys contribute exactly 0
//   MLP      down(silu(gate) * up), silu(z) = z / (1 + exp(-z))
//   MoE      router softmax (f32) -> top-k (-> renormalise) -> per expert, one GEMM over its
//            routed tokens, outputs times the routing weight added in expert order
//            (calib/MODELS.md §10); the experts of one layer are loaded with that layer
//
// bf16 precision (ForwardOptions::precision, `--calib-precision bf16`): every Linear runs
// gemm.h's bf16 GEMM (weights and the Linear's input rounded to bf16, products accumulated in
// f32, output f32), and so do attention's two products, on gemm.h's gemm_tile_bf16 (always the
// own vdpbf16ps chain, also where the Linears use oneDNN): S = bf16(q) bf16(k)^T after RoPE,
// the softmax in f32, then O = bf16(P) bf16(v). Everything else -- norms, RoPE, softmax, SiLU,
// residuals -- stays as above. Observers (and the k / v absmax for --kv-cache) see f32 values
// before their rounding to bf16.
//
// Determinism: results are bit-identical for any thread count, and on any x86-64 CPU (AVX-512,
// AVX2 or neither: the vector kernels and their scalar twins round identically, and forward.cpp
// itself is compiled for baseline x86-64) -- per precision: bf16 gives other (equally
// deterministic) bits than f32; its AVX512-BF16 kernel and its AVX2 and scalar
// emulations agree bit for bit. Every parallel loop splits its work into fixed-size tasks that
// do not depend on the thread count, and each output element is produced by exactly one task in
// a fixed operation order.
//
// Threading contract of the hooks: Observer, ActivationTransform and on_logits are always
// called from the thread that called run_forward, never concurrently, so they need no locks.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "calib/hidden_store.h"
#include "calib/model_config.h"
#include "libquant/activation_stats.h"
#include "libquant/gemm.h"
#include "libquant/tensor_view.h"

namespace qt::calib {

// Supplies one tensor, decoded to f32, row-major: fills `out` (resized by the callee) and
// `shape`. Must throw qt::InputError(Missing, ...) when the tensor does not exist. Called once
// per tensor per run (the embedding twice when tied and logits are requested), from the thread
// that called run_forward. run_forward checks the shape against the config.
using WeightProvider = std::function<void(const std::string& tensor_name, std::vector<float>& out,
                                          std::vector<int64_t>& shape)>;

// A WeightProvider over tensor views (e.g. a Checkpoint's mmap'ed tensors): `find` returns the
// view of a tensor or nullptr when absent. Decodes with qt::decode_to_f32 (F32, F16, BF16, F64,
// F8_E4M3, F8_E5M2 and integer dtypes; note F8 weights are decoded WITHOUT their scales -- a
// dequantizing provider is the caller's job). `source` (the model folder) names the checkpoint
// in the Missing error. The views must outlive the provider's use.
WeightProvider make_view_weight_provider(std::function<const TensorView*(const std::string&)> find,
                                         std::string source);

// One tensor run_forward loads: its name and the shape config.json implies.
struct WeightSpec {
  std::string name;
  std::vector<int64_t> shape;
};

// Every tensor run_forward(cfg, ...) asks its WeightProvider for, in the order it asks: the
// embedding, each decoder layer's tensors, and with `logits` (ForwardOptions::on_logits set)
// model.norm.weight and lm_head.weight -- or the embedding a second time when `lm_head_tied`.
// run_forward asserts that it loads exactly this sequence, so the list cannot drift from it.
std::vector<WeightSpec> forward_weights(const ModelConfig& cfg, bool logits = false, bool lm_head_tied = false);

// The checks a view-backed provider makes before decoding (make_view_weight_provider), for a
// caller that validates the tensors up front: InputError(Missing) when `tv` is null (`source`
// names the checkpoint), BadFile when its byte size disagrees with its dtype and shape,
// Unsupported when its dtype cannot be decoded; with a non-empty `expected`, BadFile when its
// shape is not that one.
void check_weight_view(const TensorView* tv, const std::string& name, const std::string& source,
                       const std::vector<int64_t>& expected = {});

// Deterministic pseudo-random weights of the right shapes for `cfg` (uniform in
// [-1/sqrt(in), 1/sqrt(in)] for Linears, [-1, 1] for embeddings, 1 +- 0.1 for norms), for
// benchmarks and tests that need a model without a checkpoint. Same seed -> same weights.
WeightProvider synthetic_weight_provider(const ModelConfig& cfg, uint64_t seed);

// Receives activations as the forward pass produces them. Default implementations do nothing.
class Observer {
 public:
  virtual ~Observer() = default;

  // The input of Linear `module` ("model.layers.3.self_attn.q_proj", ..., "lm_head"), row-major
  // [tokens, in_features], BEFORE any ActivationTransform. Called once per (layer, sample,
  // Linear). q_proj/k_proj/v_proj receive the same buffer (input_layernorm output), as do
  // gate_proj/up_proj (post_attention_layernorm output); o_proj gets the attention output
  // [tokens, nH*D] (head-major columns), down_proj silu(gate)*up. "lm_head" is called (final
  // norm output) only when logits are computed.
  virtual void on_linear_input(const std::string& module, const float* x, int64_t tokens,
                               int64_t in_features) {
    (void)module, (void)x, (void)tokens, (void)in_features;
  }

  // The one input of several Linears (q/k/v, gate/up), produced by the norm module `producer`
  // ("model.layers.3.input_layernorm" for q/k/v, "model.layers.3.post_attention_layernorm" for
  // gate/up): by default on_linear_input for each module in turn. Override to process a shared
  // input once (AbsMaxObserver does).
  virtual void on_shared_linear_input(const std::string& producer, const std::vector<std::string>& modules,
                                      const float* x, int64_t tokens, int64_t in_features) {
    (void)producer;
    for (const auto& m : modules) on_linear_input(m, x, tokens, in_features);
  }

  // Keys after k_proj (+bias), Qwen3 k_norm and RoPE, and values (v_proj output), both row-major
  // [tokens, nKV*D] with head-major columns, for attention module "model.layers.3.self_attn".
  // Called once per (layer, sample).
  virtual void on_kv(const std::string& attn_module, const float* k_post_rope, const float* v,
                     int64_t tokens, int64_t kv_dim) {
    (void)attn_module, (void)k_post_rope, (void)v, (void)tokens, (void)kv_dim;
  }

  // Mixture-of-experts layers: how many of this sample's `tokens` the router of `moe_block`
  // ("model.layers.3.mlp", "model.layers.3.block_sparse_moe") sent to each of its
  // `num_experts` experts (each token counts once for each of its top-k experts). Called once
  // per (sparse layer, sample), before that block's expert inputs are observed. Expert inputs
  // arrive as Linear inputs named "<block>.experts.<e>.<proj>": with
  // ForwardOptions::moe_all_experts, every expert's gate/up input is the whole norm output
  // (one on_shared_linear_input for all of them) and its down input covers every token;
  // otherwise each expert's inputs are its routed rows only, and an expert without routed
  // tokens in a sample is not called for that sample.
  virtual void on_moe_routing(const std::string& moe_block, const int64_t* tokens_per_expert,
                              int64_t num_experts, int64_t tokens) {
    (void)moe_block, (void)tokens_per_expert, (void)num_experts, (void)tokens;
  }
};

// Rewrites the input of Linear `module` in place just before its matmul (for verify's fake
// activation quantization). x is a private copy per module, so q/k/v (gate/up) may be
// transformed differently; the Observer has already seen the untransformed values.
using ActivationTransform =
    std::function<void(const std::string& module, float* x, int64_t tokens, int64_t in_features)>;

// Logits of tokens [first_token, first_token + tokens) of sample `sample`, row-major
// [tokens, vocab] f32, valid only during the call. Chunks of one sample arrive in order.
using LogitsCallback = std::function<void(size_t sample, int64_t first_token, const float* logits,
                                          int64_t tokens, int64_t vocab)>;

// One decoder Linear's weight as the forward pass holds it: row-major f32 [out, in] (decoded
// from the checkpoint), which the ForwardOptions::rewrite_layer hook may overwrite in place.
struct LayerLinear {
  std::string module;  // "model.layers.3.self_attn.q_proj"
  int64_t out = 0, in = 0;
  std::vector<float>* weight = nullptr;
};

// One decoder norm's weight as the forward pass holds it (f32 [hidden]), for the same hook
// (SmoothQuant in the GPTQ pass divides it by its factors).
struct LayerNorm {
  std::string module;  // "model.layers.3.input_layernorm", "model.layers.3.post_attention_layernorm"
  std::vector<float>* weight = nullptr;
};

struct ForwardOptions {
  Observer* observer = nullptr;        // not owned; may be null
  ActivationTransform transform;       // empty: inputs unchanged
  LogitsCallback on_logits;            // empty: stop after the last layer (no norm / lm_head)
  int64_t logits_chunk_tokens = 256;   // tokens per on_logits call (bounds [chunk, vocab] memory)
  // Whether lm_head is the embedding matrix. Unset: cfg.tie_word_embeddings. Callers reading a
  // checkpoint should pass cfg.lm_head_tied(checkpoint has "lm_head.weight").
  std::optional<bool> lm_head_tied;
  int num_threads = 0;                 // OpenMP threads; 0 = the OpenMP default
  GemmPrecision precision = GemmPrecision::F32;  // the Linears' GEMM (see bf16 precision above)
  // Progress: called after each layer (0-based index) has run on every sample.
  std::function<void(int64_t layer, int64_t num_layers)> on_layer_done;
  std::string source;                  // names the model in errors (e.g. the model folder)
  // Where the hidden states of all samples live between layers (calib/hidden_store.h): RAM by
  // default; a temporary file in hidden_spill.dir once they exceed hidden_spill.above_bytes.
  HiddenSpill hidden_spill;
  // Stop with InputError(BadValue) naming the layer as soon as a layer leaves a hidden state
  // (or its MLP activation) that is not finite: f32 overflow from outlier weights, or NaN/Inf
  // weights that slipped through. `explain_overflow(layer)` may add the likely cause.
  bool check_finite = false;
  std::function<std::string(int64_t layer)> explain_overflow;
  // Sequential weight rewriting (GPTQ, calib/gptq.h). When set, each decoder layer runs over
  // every sample twice: an observation pass (the observer sees every Linear input; the hidden
  // states are not changed, and the layer's last GEMM is skipped), then rewrite_layer(l, linears)
  // may overwrite the layer's seven Linear weights in place, then a propagation pass with the
  // rewritten weights and no observer produces the hidden states layer l + 1 reads -- as
  // llm-compressor's sequential pipeline does with propagate_error (its default). Called from
  // the thread that called run_forward.
  // The layer's two norms (input_layernorm, post_attention_layernorm) may be overwritten too.
  std::function<void(int64_t layer, const std::vector<LayerLinear>& linears, const std::vector<LayerNorm>& norms)>
      rewrite_layer;
  // Mixture-of-experts calibration policy (only with an observer): true ("all", llm-compressor's
  // moe_calibrate_all_experts) runs every token through every expert's gate/up for the
  // statistics; false ("routed") observes each expert on its routed tokens only. Either way only
  // the routed experts' outputs, weighted by the router, continue the forward pass.
  bool moe_all_experts = true;
};

// What a run cost (the benchmark hook): tokens processed and wall-clock seconds per phase.
struct ForwardStats {
  int64_t samples = 0;
  int64_t tokens = 0;              // sum of sample lengths
  double seconds = 0.0;            // whole run, including weight loading/decoding
  double weight_seconds = 0.0;     // inside WeightProvider calls (load + decode)
  double embed_seconds = 0.0;      // gathering embeddings (excluding weight loading)
  double layer_seconds = 0.0;      // decoder layers (excluding weight loading)
  double head_seconds = 0.0;       // final norm + lm_head + on_logits (excluding weight loading)
  double rewrite_seconds = 0.0;    // inside ForwardOptions::rewrite_layer (part of layer_seconds)
  uint64_t hidden_bytes = 0;       // the hidden states of all samples
  bool hidden_spilled = false;     // ...kept in a temporary file rather than RAM
  double tokens_per_second() const { return seconds > 0 ? static_cast<double>(tokens) / seconds : 0.0; }
};

// Runs the model on `samples` (token ids; each sample is one sequence with positions 0..T-1,
// no padding, no batching across samples). Throws qt::InputError: BadValue for an empty sample
// or a token id outside [0, vocab_size); BadFile when a provided tensor's shape disagrees with
// the config (file = opts.source); Unsupported for a "dynamic" rope model fed a sample longer
// than max_position_embeddings; whatever the WeightProvider throws.
ForwardStats run_forward(const ModelConfig& cfg, const WeightProvider& weights,
                         const std::vector<std::vector<int32_t>>& samples, const ForwardOptions& opts);

// Benchmark convenience: `num_samples` sequences of `seq_len` pseudo-random token ids (seeded),
// no observer, no logits; returns the run's ForwardStats.
ForwardStats benchmark_forward(const ModelConfig& cfg, const WeightProvider& weights,
                               int64_t num_samples, int64_t seq_len, int num_threads = 0,
                               uint64_t seed = 1);

}  // namespace qt::calib
