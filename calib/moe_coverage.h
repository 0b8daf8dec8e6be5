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
};

// One entry per block of stats.routed_tokens, in block order.
std::vector<MoeBlockCoverage> moe_coverage(const ActivationStats& stats);

// The default of --moe-min-tokens: an expert observed on fewer routed tokens than this has an
// input scale resting on too little data for the `routed` policy.
inline constexpr int64_t kDefaultMoeMinTokens = 8;

// Policy `routed`: throws InputError(BadValue) naming every block and expert with fewer than
// `min_tokens` routed tokens (with their counts), and suggesting `--moe-calibration all`.
void check_routed_coverage(const std::vector<MoeBlockCoverage>& cov, int64_t min_tokens,
                           const std::string& model_path);

// One line over all blocks ("12 MoE layers x 128 experts, routed tokens per expert min 0 /
// median 37 / max 410, 3 experts in 2 layers saw none") and one per block.
std::string coverage_summary(const std::vector<MoeBlockCoverage>& cov);
std::string coverage_line(const MoeBlockCoverage& c);

// {"<block>": {"routed_tokens": [...], "min", "median", "max", "experts_without_tokens": [...],
//  "input_absmax_spread": {"w13": x, "w2": y}}} for the manifest.
nlohmann::json coverage_json(const std::vector<MoeBlockCoverage>& cov);

}  // namespace qt::calib
