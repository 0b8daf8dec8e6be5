// SmoothQuant over a model folder: which layers are smoothed into which Linears, the factors
// (libquant/smoothquant.h has the numerics), and the smoothed bytes the quantize pipeline
// writes in place of the originals.
//
// Mappings, per decoder layer L (Llama, Mistral, Qwen2, Qwen3 -- Qwen3's q_norm / k_norm sit
// after the projections and are untouched):
//   norms   model.layers.L.input_layernorm           -> self_attn.q_proj, k_proj, v_proj
//           model.layers.L.post_attention_layernorm  -> mlp.gate_proj, up_proj
//           (llm-compressor's default SmoothQuant mappings for these architectures)
//   mlp     model.layers.L.mlp.up_proj               -> mlp.down_proj
//           (up_proj's output channel j, and so down_proj's input silu(gate_j) * up_j, is
//           divided by s_j; down_proj's column j multiplied. Not in llm-compressor's SmoothQuant
//           defaults -- its AWQ mappings balance the same pair -- but down_proj's input carries
//           the largest outliers of these models; the activation range is that of down_proj's
//           real input.)
// Mixture-of-experts layers (Mixtral, Qwen2-MoE, Qwen3-MoE; is_moe_layer):
//   norms   input_layernorm -> q/k/v_proj only (llm-compressor 0.14's mappings for these
//           architectures). post_attention_layernorm feeds the router, every expert's gate/up
//           (w1/w3), and Qwen2-MoE's shared expert gate/up and shared_expert_gate: smoothing it
//           is an identity only when every one of them absorbs the factors. llm-compressor leaves
//           it out (one factor per channel for all experts degraded perplexity in its
//           measurements), and so does qtool unless asked:
//   moe_norm (opt-in) post_attention_layernorm -> the router, every expert's gate/up, the shared
//           expert's gate/up and shared_expert_gate (the unquantized router and shared gate
//           absorb the factors too). Activation range: the norm output over ALL calibration
//           tokens, which the forward records whatever --moe-calibration; the weight range w_j:
//           max over all of these Linears (llm-compressor's rule over a mapping's balance layers).
//   mlp     (with All) Qwen2-MoE's mlp.shared_expert.up_proj -> mlp.shared_expert.down_proj, a
//           local pair like the dense one. The routed experts' up -> down pairs are not smoothed
//           (they would need E x I per-channel ranges per layer, which calibration does not keep).
// Every mapped Linear is smoothed, quantized or not: the function must stay the same.
// up_proj is both a balance layer (columns, norms mapping) and a smoothed layer (rows, mlp
// mapping): columns first, then rows, each rounded to the weight dtype (the order in which
// llm-compressor would apply the two mappings).
//
// Statistics: per-channel ranges (ActivationStats::channel_min / max) from calibration on the
// UNSMOOTHED model. Smoothing is an identity up to one rounding per weight, so later layers'
// activations barely move (llm-compressor's sequential pipeline, which smooths layer by layer,
// sees the same up to that rounding).
//
// Static input scales after smoothing: the balance Linears' input changes, so their input absmax
// is recomputed from the per-channel range (smoothed_input_absmax for norms, exact for the
// deployed norm weight; divided_input_absmax for down_proj) rather than taken from the
// unsmoothed max |x|. llm-compressor observes static input activations in the same calibration
// pass that gathers SmoothQuant's statistics, i.e. before smoothing (testdata/smoothquant/README.md).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "libquant/activation_stats.h"
#include "libquant/tensor_view.h"

namespace qt {
class ModelFolder;
class Checkpoint;
}

namespace qt::calib {

enum class SmoothingMappings {
  Norms,  // input_layernorm -> q/k/v, post_attention_layernorm -> gate/up (llm-compressor's)
  All,    // Norms + up_proj -> down_proj
};

struct SmoothingMapping {
  std::string smooth;                 // "model.layers.0.input_layernorm" / "model.layers.0.mlp.up_proj"
  bool smooth_is_linear = false;      // true: divide the rows of smooth.weight, else the 1-D norm
  std::string stats_key;              // the channel range: the norm, or the balance Linear (down_proj)
  std::vector<std::string> balance;   // ["model.layers.0.self_attn.q_proj", ...]
};

// The mappings of `model` (see above), in layer order, norms before mlp within a layer. A
// mixture-of-experts layer (is_moe_layer) gets input_layernorm -> q/k/v_proj, with `moe_norm`
// post_attention_layernorm -> every consumer, and with All its shared expert's up -> down.
// Throws InputError(Unsupported) naming the tensor when a layer has the norm but not every
// balance Linear.
std::vector<SmoothingMapping> smoothing_mappings(const ModelFolder& model, SmoothingMappings which,
                                                 bool moe_norm = false);

// Whether a balance Linear only absorbs the factors and is never quantized (a MoE router,
// shared_expert_gate): it has no static input scale to recompute.
bool absorbs_only(const std::string& linear);

// Whether layer `layer_prefix` ("model.layers.3.") has a mixture-of-experts router.
bool is_moe_layer(const Checkpoint& ck, const std::string& layer_prefix);

struct SmoothingPlan {
  double alpha = 0.8;  // as given (a decimal such as 0.8; see smoothing_scales for its f32 uses)
  SmoothingMappings which = SmoothingMappings::All;
  bool moe_norm = false;  // MoE layers' post_attention_layernorm smoothed into every consumer
  std::vector<SmoothingMapping> mappings;
  // smooth module -> factors s (f32, >= 1e-5), one per channel of its output.
  std::map<std::string, std::vector<float>> factors;
  // tensor name -> smooth module whose factors multiply its columns (balance Linears) / divide
  // it (norm weights, up_proj's rows and, with mlp_bias, its bias).
  std::map<std::string, std::string> column_factors, divide_factors;
  // The calibration statistics with every balance Linear's input_absmax replaced by the
  // smoothed absmax (what static input scales must be made from; for the moving-average
  // "minmax" observer, its value times smoothed / unsmoothed plain absmax); all else unchanged.
  ActivationStats stats;
  float min_factor = 0, max_factor = 0;  // over every factor (for the summary)
  // max over balance Linears of (unsmoothed input absmax / smoothed input absmax).
  float max_range_reduction = 0;

  // The bytes to write for tensor `t` instead of its own, empty for a tensor smoothing leaves
  // alone.
  std::vector<uint8_t> smoothed_bytes(const TensorView& t) const;
};

// Computes the plan: reads every balance weight once (column absmax; memory-mapped, one tensor
// at a time) and every mapped norm weight. alpha in (0, 1]. Throws InputError:
//   Usage     stats lack a mapping's per-channel range (statistics file from a qtool without
//             SmoothQuant support) -- names the module;
//   BadValue  a NaN/Inf per-channel statistic or weight, a channel whose min > max, a factor
//             that is not finite, a smoothed norm that overflows -- names the module / tensor;
//   Unsupported  a weight dtype other than F32/F16/BF16, a layer without its balance Linears.
SmoothingPlan plan_smoothing(const ModelFolder& model, const ActivationStats& stats, double alpha,
                             SmoothingMappings which = SmoothingMappings::All, bool moe_norm = false);

// plan_smoothing one mapping at a time (the GPTQ pass smooths layer by layer, calib/gptq.h):
// begin_smoothing_plan checks alpha and returns an empty plan (its stats empty, min_factor
// INFINITY until the first mapping); add_smoothing_mapping computes `m`'s factors from `stats`
// (its channel range and, for a moving-average observer, the balance Linears' unsmoothed
// input_absmax), appends `m` and writes the balance Linears' smoothed input_absmax into
// plan.stats. Same checks and errors as plan_smoothing.
SmoothingPlan begin_smoothing_plan(double alpha, SmoothingMappings which, bool moe_norm = false);
void add_smoothing_mapping(const ModelFolder& model, const SmoothingMapping& m, const ActivationStats& stats,
                           SmoothingPlan& plan);

// The name of the smoothing factors file qtool writes next to a smoothed checkpoint (JSON:
// {"alpha", "mappings": [{"smooth", "balance", "factors"}]}, factors as f32 values; "moe_norm":
// true when the MoE norms were smoothed, absent otherwise): verify
// needs the up_proj -> down_proj factors, which the checkpoint alone does not reveal.
inline constexpr const char* kSmoothingFactorsFile = "qtool_smoothing.json";

// The JSON text of that file for `plan`.
std::string smoothing_factors_json(const SmoothingPlan& plan);

// A plan for `model` from a factors file another checkpoint carries (`qtool quantize --like`):
// the same mappings and factors (f32 values exactly as written), applied to `model`'s tensors,
// with `stats` as the plan's statistics (min/max factor recomputed; max_range_reduction 0, as
// no activation ranges are known). Throws InputError naming the file and the module: BadFile
// (not a factors file, malformed), Unsupported (a mapping whose smooth or balance tensor `model`
// lacks, or whose factor count differs from its channel count).
SmoothingPlan smoothing_plan_from_file(const ModelFolder& model, const std::string& path, const ActivationStats& stats);

// `raw` (static_minmax statistics of the unsmoothed `model`) with every balance Linear's
// input_absmax replaced by its input absmax once `plan`'s factors are applied, exactly as
// plan_smoothing computes it (what a static input scale of the smoothed model needs). Throws
// InputError(Usage) naming the module when `raw` lacks a mapping's per-channel range.
ActivationStats smoothed_input_stats(const ModelFolder& model, const SmoothingPlan& plan, const ActivationStats& raw);

}  // namespace qt::calib
