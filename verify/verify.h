// `qtool verify`: is a quantized checkpoint right, and how much did it lose? The library half of
// the command (the CLI only parses options and prints the VerifyReport).
//
// What verify_checkpoint() does, in order:
//   1. Structure: inspect_checkpoint()'s findings (config loadable by vLLM's rules, scale shapes,
//      coverage), every weight/input scale finite and > 0, every quantized Linear loadable
//      (find_quantized_linears / load_quantized_linear) and its codes accepted by the kernel
//      (no NaN FP8 codes, INT4 codes in range).
//   2. Kernels: the registry's choice for every layer (Registry::select), with every other
//      kernel's reason; identical descriptors are grouped (`--list-kernels`).
//   3. Per quantized Linear, with a reference checkpoint: the dequantized weight against the
//      reference weight (SQNR, cosine, max abs / rel error; libquant/metrics.h).
//   4. GEMM check per layer: Y = X W^T computed (a) in float64 from the reference weights (or,
//      without a reference, from the dequantized weights, so that only the activation
//      quantization and the kernel's arithmetic are measured) and (b) by the selected kernel
//      exactly as deployed (activations quantized per the descriptor). X are the layer's real
//      inputs captured while the reference model runs on the held-out text, or synthetic
//      activations (synthetic_activations) when the model is not run. Every other implementable
//      kernel is compared with the float64 reference kernel cpu_ref on the first rows of X: INT8
//      (W8A8) bit for bit, FP8 and weight-only within kernel_agreement_bound().
//   5. Model level: the reference model and the quantized model (dequantized weights, each
//      Linear's input fake-quantized as the scheme does it: make_fake_quant_transform) run on
//      held-out text; perplexity of both, per-token KL(ref || quant) (mean, 99th percentile,
//      max) and top-1 agreement. Without a reference the "reference" is the dequantized model
//      without activation quantization (only computed when some layer quantizes activations).
//   6. Throughput: GFLOP/s of the selected kernel at each distinct descriptor for M in {1, 16,
//      128} tokens, against an f32 Eigen GEMM of the dequantized weights.
//   7. Gates (VerifyGates, defaults per layer type: default_gates()); the report passes when no
//      structural error, kernel disagreement or gate failure was found.
//
// Cost: the float64 oracle and cpu_ref are O(M N K) per layer with M = gemm_tokens (64) and 8
// rows; the model level is two forward passes over max_tokens (512) tokens and holds the
// reference logits [tokens, vocab] in f32 (512 x 152k x 4 B = 311 MB for a Qwen
// vocabulary). Memory otherwise: one layer's weights in f32/f64 at a time plus the checkpoints'
// memory maps.
//
// Threading: OpenMP inside the kernels, the forward pass and the oracle; every result except
// the throughput numbers is identical at any thread count.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "calib/forward.h"
#include "formats/quantized_linear.h"
#include "libquant/kernels/descriptor.h"
#include "libquant/kernels/registry.h"
#include "libquant/metrics.h"

namespace qt {
class Checkpoint;
}

namespace qt::verify {

// ---- gates ---------------------------------------------------------------------------------

// Thresholds. Per-layer gates (SQNR, GEMM error) are checked on every quantized Linear; the
// model gates on the model-level numbers. nullopt = the default for the layer type.
struct VerifyGates {
  std::optional<double> min_sqnr_db;   // weight SQNR vs the reference, dB (needs a reference)
  std::optional<double> max_gemm_err;  // relative L2 error |Y_kernel - Y_f64| / |Y_f64|
  std::optional<double> max_kl;        // mean KL(ref || quant) per token, nats (needs a reference)
  std::optional<double> min_top1;      // fraction of tokens whose argmax agrees, in [0, 1]
};

// The defaults for one layer type, from the weight code type and whether activations are
// quantized (values and their reasoning: verify.cpp, default_gates):
//   weights   activations   min SQNR   max GEMM err   max KL   min top-1
//   FP8 E4M3  FP8           25 dB      0.10           0.02     0.90
//   FP8 E4M3  none          25 dB      0.08           0.02     0.90
//   INT8      INT8          20 dB      0.15           0.03     0.88
//   INT8      none          20 dB      0.12           0.03     0.88
//   INT4      none          12 dB      0.35           0.10     0.75
struct GateValues {
  double min_sqnr_db = 0, max_gemm_err = 0, max_kl = 0, min_top1 = 0;
  std::string basis;  // "FP8 W8A8 default", "user", ...
};
GateValues default_gates(const kernels::LinearDescriptor& d);

// ---- building blocks (public for tests and other tools) -----------------------------------

// Synthetic activations X[M, K] (row-major f32): N(0, 1) (Box-Muller on splitmix64 streams) with
// `outliers` input channels (chosen by the stream, distinct) multiplied by 20, like the outlier
// channels of real LLM activations. Same seed -> same values with the same binary and libm
// (std::log / std::cos may differ by an ulp between C libraries; sqrt is exact).
std::vector<float> synthetic_activations(int64_t M, int64_t K, uint64_t seed, int64_t outliers = -1);

// Upper bound on |Y_kernel - Y_cpu_ref| for one output element of an f32-accumulating kernel (FP8
// codes decoded to f32, weight-only layers): a segment dot product of L terms summed in f32
// errs by at most gamma_{2L} * sum |a b| (Higham, Accuracy and Stability, 3.1), so over K terms
//   bound = 2 (K + 2) 2^-24 S + 2^-23 |y_ref| + 2^-149,   S = sum_k |x_q(k) w(k)|
// where x_q are the (dequantized) activations the GEMM consumed and w the dequantized weights;
// the last two terms cover both sides' final f32 rounding. INT8 x INT8 kernels accumulate
// exactly in integers and must agree bit for bit instead.
double kernel_agreement_bound(double S, float y_ref, int64_t K);

// How one non-reference kernel compared with cpu_ref on the same X.
struct KernelAgreement {
  std::string kernel;
  bool bit_exact = false;      // every output bit identical
  bool required_exact = false; // INT8 x INT8 (W8A8): must be bit_exact
  double max_abs_diff = 0;     // max |y - y_ref|
  double max_bound_ratio = 0;  // max |y - y_ref| / bound (f32 kernels; <= 1 is within bound)
  bool ok = false;
  std::string error;           // pack/run refused (InputError message), "" otherwise
};

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

// ---- the whole verification ----------------------------------------------------------------

struct VerifyOptions {
  std::string quant_dir;               // the quantized model folder
  std::string reference_dir;           // the original model folder; "" = none
  // Model level. Token samples in priority order: `samples` if non-empty; else `text` encoded
  // with the quantized folder's tokenizer.json (+ tokenizer_config.json); else the built-in
  // held-out text with that tokenizer. No usable tokenizer: the model level is skipped with
  // the reason in the report.
  bool model_eval = true;
  std::vector<std::vector<int32_t>> samples;
  std::string text;                    // "" = builtin_heldout_text()
  std::string text_source = "built-in held-out text";
  int64_t max_tokens = 512;
  int64_t seq_len = 128;
  // GEMM check.
  int64_t gemm_tokens = 64;            // rows of X per layer
  int64_t agree_tokens = 8;            // rows on which every kernel is compared with cpu_ref
  uint64_t seed = 0;                   // synthetic activations
  // Throughput.
  bool bench = true;
  std::vector<int64_t> bench_m = {1, 16, 128};
  double bench_seconds = 0.2;          // timed time per cell (after one warm-up call), >= 3 calls
  VerifyGates gates;
  kernels::SelectOptions select;       // --force-kernel / --disable-kernel
  int num_threads = 0;                 // forward pass threads; 0 = OpenMP default
  // Progress lines for the log (called from the calling thread).
  std::function<void(const std::string&)> on_progress;
};

struct StructuralFinding {
  std::string severity;  // "error" (fails verification) or "warning"
  std::string where;     // tensor, module or "config"
  std::string message;
};

// One group of layers with identical descriptors and the registry's answer for it.
struct KernelGroup {
  std::string descriptor;                 // LinearDescriptor::describe()
  std::vector<std::string> modules;
  std::string chosen;                     // "" = none can run it
  std::vector<std::pair<std::string, std::string>> candidates;  // every kernel: name, reason ("" = chosen)
  std::string error;                      // Selection::error
};

// The group for layers with descriptor `d`: the registry's choice `sel` and every kernel of `reg`
// in priority order with its reason ("" for the chosen one). `modules` is left empty.
KernelGroup make_kernel_group(const kernels::Registry& reg, const kernels::LinearDescriptor& d,
                              const kernels::Selection& sel);

struct LayerReport {
  std::string module;
  std::string descriptor;
  std::string kernel;                     // chosen kernel ("" = none)
  int64_t N = 0, K = 0;
  GateValues gates;                       // thresholds applied to this layer
  std::optional<ErrorMetrics> weight;     // dequantized vs reference weight (with a reference)
  std::string activations;                // "text" (captured from the model) or "synthetic"
  int64_t gemm_tokens = 0;
  // |Y_kernel - Y_f64| / |Y_f64| against the reference weights (or the dequantized ones without
  // a reference): what the gate checks. NaN when not computed.
  double gemm_err = 0;
  // Against the dequantized weights: the activation quantization + kernel part alone.
  double act_err = 0;
  std::vector<KernelAgreement> agreement; // every other implementable kernel vs cpu_ref
  bool pass = true;
  std::vector<std::string> failures;      // why not
};

struct ModelReport {
  bool ran = false;
  std::string skipped;                    // why the model level did not run ("" when it ran)
  std::vector<std::string> notes;         // gates deliberately not applied, and why
  std::string against;                    // "reference" or "dequantized (no activation quantization)"
  std::string text_source;
  ModelMetrics metrics;
  bool compared = false;                  // KL / top-1 computed (false: perplexity only)
  bool gated = false;                     // KL / top-1 gates applied (with a reference only)
  GateValues gates;
  double seconds = 0;
  bool pass = true;
  std::vector<std::string> failures;
};

struct BenchRow {
  std::string descriptor, kernel;
  std::vector<std::string> modules;
  int64_t M = 0, N = 0, K = 0;
  double kernel_gflops_best = 0, kernel_gflops_median = 0;
  double eigen_gflops_best = 0, eigen_gflops_median = 0;  // f32 Eigen GEMM of the dequantized weight
};

struct KernelInfo {
  std::string name, summary;
  int priority = 0;
};

struct VerifyReport {
  std::string quant_dir, reference_dir;
  std::vector<KernelInfo> registry;       // every registered kernel, highest priority first
  std::string quant_method, format;
  std::vector<std::string> groups;        // "group_0: weights ..., activations ..."
  std::vector<StructuralFinding> findings;
  // SmoothQuant seen against the reference: the layers whose output was divided by per-channel
  // factors: norms (input_layernorm / post_attention_layernorm) whose weights differ from the
  // reference's -- the factor is then g/g', exactly what the checkpoint deploys -- and mlp.up_proj
  // layers listed in the folder's qtool_smoothing.json (formats/smoothing.h; their factors are not
  // recoverable from the quantized weights). Each Linear they feed is checked as deployed: its
  // captured input x becomes x / s before the kernel, the GEMM error is still measured against
  // x W_ref^T, and the weight SQNR compares with W_ref * s (columns; up_proj's rows also / s).
  std::vector<std::string> smoothed_layers;
  std::vector<KernelGroup> kernels;
  std::vector<LayerReport> layers;        // checkpoint order
  ModelReport model;
  std::vector<BenchRow> bench;
  int bench_threads = 0;
  bool pass = true;
  std::vector<std::string> failures;      // one line per failed check (summary)
  // What to try next when checks failed: a failing checkpoint with INT8 activations and no
  // smoothing gets "quantize again with --smoothquant" (bench/RESULTS.md measures why).
  std::vector<std::string> hints;
  double seconds = 0;
};

// Opens the folders and runs everything above. Throws qt::InputError for unusable input:
// Missing (no folder, config.json or weights; a quantized layer's weight absent from the
// reference), BadFile, Usage (QUANT_DIR not quantized; the reference quantized, or a different
// model: sizes or weight shapes differ), BadValue (a token id outside the model's vocabulary,
// naming text_source). Problems *in* the quantized checkpoint (bad scales, NaN codes, uncovered
// modules, a forward pass that produces NaN) are findings or failures in the report, not
// exceptions.
VerifyReport verify_checkpoint(const VerifyOptions& opts);

// Only steps 1-2 (structure and kernel choice; no tensor data beyond scales): `--list-kernels`.
VerifyReport list_kernels(const VerifyOptions& opts);

// The report as JSON (the `--json` output). Infinite SQNR (bit-identical weights) is written as
// null with "identical": true; NaN metrics (not measured) as null.
nlohmann::json verify_report_to_json(const VerifyReport& r);

}  // namespace qt::verify
