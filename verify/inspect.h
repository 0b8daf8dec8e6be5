// What is in a checkpoint: the library half of `qtool inspect` (the CLI only prints).
//
// Everything except scale/tensor statistics comes from headers and config.json alone, so a
// 100-shard checkpoint is summarised without reading tensor data.
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "formats/ct_config.h"
#include "libquant/tensor_view.h"

namespace qt {
class Checkpoint;
}

namespace qt::verify {

// One Linear-like module and how it is stored.
struct ModuleCoverage {
  std::string module;
  std::string weight_dtype;        // "BF16", "F8_E4M3", "I32 (packed)"
  std::vector<int64_t> shape;      // logical [out, in]
  bool quantized = false;
  std::string group;               // config group that covers it ("" if none / ignored)
  std::string scheme_text;         // "FP8 E4M3 per-channel; input FP8 dynamic per-token"
};

struct Finding {
  std::string severity;  // "error" (vLLM will refuse or produce garbage) or "warning"
  std::string where;     // tensor or module name, or "config"
  std::string message;
};

// One mixture-of-experts block of a checkpoint with static input scales: the spread of the
// experts' input scales (vLLM's fused-MoE kernels use the maximum over the experts, one for w13
// = gate/up, one for w2 = down), and -- when the folder's qtool_manifest.json has them -- the
// calibration tokens routed to each expert.
struct MoeBlockScales {
  std::string block;              // "model.layers.3.mlp"
  int64_t experts = 0;            // experts with an input_scale
  double w13_min = 0, w13_max = 0, w2_min = 0, w2_max = 0;
  std::vector<int64_t> routed_tokens;  // from the manifest; empty when unknown
  // From the manifest: the experts under --moe-min-tokens that took the layer's maximum
  // (--moe-fallback layer-max); empty when none did or unknown.
  std::vector<int64_t> fallback_experts;
};

struct InspectReport {
  std::string path;
  nlohmann::json config;           // config.json or null
  std::string architecture, model_type, torch_dtype;
  uint64_t parameters = 0;         // logical element count (packed words expanded)
  uint64_t total_bytes = 0;
  std::map<std::string, uint64_t> bytes_per_dtype;
  std::map<std::string, uint64_t> tensors_per_dtype;
  size_t num_tensors = 0;
  std::vector<std::string> shards;
  QuantInfo quant;
  std::vector<ModuleCoverage> modules;
  size_t quantized_modules = 0, high_precision_modules = 0;
  // SmoothQuant applied by qtool (PATH is a folder holding qtool_smoothing.json): "alpha 0.8, 90
  // smoothed layers (qtool_smoothing.json)"; empty otherwise.
  std::string smoothing;
  // How the weights were rounded, when qtool_manifest.json (PATH a folder) names an algorithm other
  // than round-to-nearest: "GPTQ (dampening_frac 0.01, block_size 128, actorder static; 64 samples,
  // 32768 tokens)". Empty for round-to-nearest and for folders without a manifest.
  std::string algorithm;
  std::vector<MoeBlockScales> moe;  // reads the experts' scalar input_scale tensors
  std::vector<Finding> findings;
};

// Header-only analysis. `config` may be null (a bare .safetensors file).
InspectReport inspect_checkpoint(const Checkpoint& ckpt, const nlohmann::json& config,
                                 const std::string& path);

// Statistics of one tensor's values (reads its data).
struct TensorStats {
  uint64_t numel = 0, nan = 0, inf = 0, zero = 0;
  uint64_t negative = 0;           // finite values below zero (-0.0 counts as zero)
  double min = 0, max = 0, mean = 0, std = 0, absmax = 0;
  std::vector<float> first;        // the first few values
};
// Decodable dtypes only (floats and ints); false otherwise.
bool tensor_stats(const TensorView& t, TensorStats& out, size_t first_n = 8);

// One row of `inspect --tensors`: where a tensor lies on disk (headers only, no data read).
struct TensorLocation {
  std::string name, dtype;         // dtype as safetensors spells it ("BF16", "F8_E4M3")
  std::vector<int64_t> shape;
  std::string shard;               // file name of the shard (relative to the checkpoint folder)
  uint64_t offset = 0;             // absolute byte offset of the first byte in that file
  uint64_t bytes = 0;
};
// Every tensor in checkpoint order (shard order, then data offset).
std::vector<TensorLocation> tensor_locations(const Checkpoint& ckpt);
nlohmann::json tensor_locations_to_json(const std::vector<TensorLocation>& rows);

// `inspect --tensor NAME`: the tensor's header (name, dtype, shape, bytes, file), its value
// statistics ("stats", null for undecodable dtypes) and, for a quantized weight -- FP8/INT8 codes,
// packed INT4/INT8 words, NVFP4/MX codes -- the scheme text, the first codes decoded
// ("codes_first" and "logical_shape", NVFP4/MX) and the first values dequantized
// ("dequantized_first": scale * code as compressed-tensors computes it, divided by the global
// scale for NVFP4). Reads that tensor and its scales only. An unknown name is an InputError
// (Missing) naming `path` and the tensor.
nlohmann::json tensor_detail(const Checkpoint& ckpt, const InspectReport& r, const std::string& name,
                             const std::string& path);

// `inspect --scales`: every tensor whose name holds "_scale", in checkpoint order, with dtype,
// shape, min/max and zero/NaN/Inf counts, and its values when it has at most 16. MX weight scales
// (U8 biased exponents, E8M0) are summarised as the powers of two they stand for ("encoding").
// Appends an "error" finding to r.findings for every scale with zero, NaN, Inf or negative values
// (vLLM would divide by it, or flip the sign of what it scales). Reads the scale tensors' data.
nlohmann::json scale_summary(const Checkpoint& ckpt, InspectReport& r);

nlohmann::json report_to_json(const InspectReport& r);
nlohmann::json stats_to_json(const TensorStats& s);

}  // namespace qt::verify
