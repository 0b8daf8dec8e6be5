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

#include <functional>
#include <string>
#include <vector>

#include "libquant/kernels/registry.h"
#include "verify/gates.h"
#include "verify/layer_numerics.h"
#include "verify/model_metrics.h"
#include "verify/report.h"

namespace qt::verify {

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

}  // namespace qt::verify
