// What `qtool verify` found: structure, kernel choice, every layer's numbers, the model level,
// throughput, gates; and the report as JSON (`--json`).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "libquant/kernels/registry.h"
#include "libquant/metrics.h"
#include "verify/gates.h"
#include "verify/layer_numerics.h"
#include "verify/model_metrics.h"

namespace qt::verify {

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
  std::string cpu_isa;                    // the CPU kernels' ISA path (libquant/cpu_isa.h isa_name)
  std::string quant_method, format;
  std::vector<std::string> groups;        // "group_0: weights ..., activations ..."
  std::vector<StructuralFinding> findings;
  // SmoothQuant seen against the reference: the layers whose output was divided by per-channel
  // factors: norms (input_layernorm / post_attention_layernorm) whose weights differ from the
  // reference's -- the factor is then g/g', exactly what the checkpoint deploys -- and mlp.up_proj
  // layers listed in the folder's qtool_smoothing.json (calib/smoothing.h; their factors are not
  // recoverable from the quantized weights). Each Linear they feed is checked as deployed: its
  // captured input x becomes x / s before the kernel, the GEMM error is still measured against
  // x W_ref^T, and the weight SQNR compares with W_ref * s (columns; up_proj's rows also / s).
  std::vector<std::string> smoothed_layers;
  // Mixture of experts: what verify changed to compute as vLLM's fused-MoE method does
  // (verify/moe_served.h); "" for checkpoints without quantized experts.
  std::string moe_served;
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

// The report as JSON (the `--json` output). Infinite SQNR (bit-identical weights) is written as
// null with "identical": true; NaN metrics (not measured) as null.
nlohmann::json verify_report_to_json(const VerifyReport& r);

}  // namespace qt::verify
