// Activation statistics gathered by calibration (calib/) and consumed by the quantize pipeline
// (calib/quantize_pipeline) to set static input scales and KV-cache scales, and by SmoothQuant
// (libquant/smoothquant.h, calib/smoothing.h) to balance activation outliers into the weights.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace qt {

struct ActivationStats {
  // Linear module name ("model.layers.0.self_attn.q_proj") -> max |x| of its input over every
  // calibration token (static_minmax observer), in f32.
  std::map<std::string, float> input_absmax;
  // Attention module name ("model.layers.0.self_attn") -> max |K| after RoPE / max |V|.
  std::map<std::string, float> k_absmax;
  std::map<std::string, float> v_absmax;
  // Per-channel minimum / maximum over every calibration token of (a) a norm output that feeds
  // several Linears, keyed by the norm ("model.layers.0.input_layernorm" -> q/k/v,
  // "model.layers.0.post_attention_layernorm" -> gate/up), [hidden] each, and (b) the input of
  // mlp.down_proj, keyed by that Linear ("model.layers.0.mlp.down_proj"), [intermediate].
  // f32, plain min/max whatever the observer (what SmoothQuant needs); a channel that ever saw
  // a NaN is NaN.
  std::map<std::string, std::vector<float>> channel_min;
  std::map<std::string, std::vector<float>> channel_max;
  std::string observer = "static_minmax";
  // Mixture-of-experts blocks ("model.layers.3.mlp") -> calibration tokens the router sent to
  // each expert (index = expert), summed over samples; each token counts once per chosen expert.
  // Empty for dense models.
  std::map<std::string, std::vector<int64_t>> routed_tokens;
  // The MoE calibration policy that produced the expert statistics ("all" or "routed"); empty
  // for dense models.
  std::string moe_calibration;
};

}  // namespace qt
