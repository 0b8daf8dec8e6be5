// How well calibration covered the experts of a mixture-of-experts model (calib/MODELS.md §10):
// per MoE block, the calibration tokens the router sent to each expert and the spread of the
// experts' input statistics, for the quantize report, the manifest and the `routed` policy's
// refusal. Computed from ActivationStats alone (routed_tokens, input_absmax).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "libquant/activation_stats.h"

namespace qt::calib {

struct MoeBlockCoverage {
  std::string block;                  // "model.layers.3.mlp"
  std::vector<int64_t> tokens;        // routed calibration tokens per expert
  int64_t min = 0, max = 0;
  double median = 0;                  // of the per-expert counts (mean of the middle two when even)
  std::vector<int64_t> zero_experts;  // experts no token was routed to
  // max / min over the experts of the input max |x| of w13 (gate/up, w1/w3) and of w2 (down);
  // 1 when equal, 0 when a statistic is missing.
  double w13_spread = 0, w2_spread = 0;
  // --moe-fallback layer-max (apply_layer_max_fallback): the experts whose w13 and w2 input
  // statistics were replaced by the maximum over the block's experts that met --moe-min-tokens,
  // and those two maxima (0 for a role no such expert has a statistic of). Empty otherwise.
  std::vector<int64_t> fallback_experts;
  float fallback_w13 = 0, fallback_w2 = 0;
  int64_t fallback_sources = 0;  // experts that met the minimum (the maximum's sources)
};

// One entry per block of stats.routed_tokens, in block order.
std::vector<MoeBlockCoverage> moe_coverage(const ActivationStats& stats);

// The default of --moe-min-tokens: an expert observed on fewer routed tokens than this has an
// input scale resting on too little data for the `routed` policy.
inline constexpr int64_t kDefaultMoeMinTokens = 8;

// What policy `routed` does with an expert under --moe-min-tokens (--moe-fallback): refuse the
// run (the default), or give the expert the layer's maximum over the experts that met the minimum.
enum class MoeFallback { Error, LayerMax };
// The names of --moe-fallback, in the order --help lists them.
inline constexpr const char* kMoeFallbackNames[] = {"error", "layer-max"};
const char* moe_fallback_name(MoeFallback f);
// "error" / "layer-max"; false for anything else.
bool parse_moe_fallback(const std::string& name, MoeFallback& out);

// Policy `routed`: throws InputError(BadValue) naming every block and expert with fewer than
// `min_tokens` routed tokens (with their counts), and suggesting `--moe-calibration all` and
// `--moe-fallback layer-max`.
void check_routed_coverage(const std::vector<MoeBlockCoverage>& cov, int64_t min_tokens,
                           const std::string& model_path);

// Policy `routed` with --moe-fallback layer-max. In each block, an expert with fewer than
// max(min_tokens, 1) routed tokens (so an expert that saw none always) falls back: its w13 (gate /
// up, w1 / w3) input statistics become the maximum of the w13 statistics over the block's experts
// that met the minimum, its w2 (down) statistic the maximum of theirs; its own few tokens' values
// are discarded, not merged (they are what the minimum declares too little to stand on). Records
// the experts and the two maxima in `cov` (which must be moe_coverage(stats)). Throws
// InputError(BadValue) naming the block when none of its experts met the minimum, and when a
// maximum is not finite and positive (it would become a zero, NaN or Inf scale).
void apply_layer_max_fallback(ActivationStats& stats, std::vector<MoeBlockCoverage>& cov, int64_t min_tokens,
                              const std::string& model_path);

// "model.layers.0.mlp: experts 1 (0 tokens), 3 (3 tokens) under --moe-min-tokens 5 take the
// layer maximum over its 2 experts that met it: w13 input max|x| 2, w2 3"; "" when none fell back.
std::string fallback_line(const MoeBlockCoverage& c, int64_t min_tokens);

// One line over all blocks ("12 MoE layers x 128 experts, routed tokens per expert min 0 /
// median 37 / max 410, 3 experts in 2 layers saw none") and one per block.
std::string coverage_summary(const std::vector<MoeBlockCoverage>& cov);
std::string coverage_line(const MoeBlockCoverage& c);

// {"<block>": {"routed_tokens": [...], "min", "median", "max", "experts_without_tokens": [...],
//  "input_absmax_spread": {"w13": x, "w2": y}, "fallback_experts": [...]}} for the manifest and
// --json; a block where experts fell back also has "fallback_input_absmax": {"w13": x, "w2": y}.
nlohmann::json coverage_json(const std::vector<MoeBlockCoverage>& cov);

}  // namespace qt::calib
