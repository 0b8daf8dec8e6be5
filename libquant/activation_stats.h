// Activation statistics gathered by calibration (calib/) and consumed by the quantize pipeline
// (formats/quantize_pipeline) to set static input scales and KV-cache scales.
#pragma once

#include <map>
#include <string>

namespace qt {

struct ActivationStats {
  // Linear module name ("model.layers.0.self_attn.q_proj") -> max |x| of its input over every
  // calibration token (static_minmax observer), in f32.
  std::map<std::string, float> input_absmax;
  // Attention module name ("model.layers.0.self_attn") -> max |K| after RoPE / max |V|.
  std::map<std::string, float> k_absmax;
  std::map<std::string, float> v_absmax;
  std::string observer = "static_minmax";
};

}  // namespace qt
