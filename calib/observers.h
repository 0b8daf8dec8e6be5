// Observers: what the calibration forward pass records about activations (calib/forward.h calls
// them; calib/calibrate.h picks one by name).
//
//   static_minmax  AbsMaxObserver: max |x| over every calibration token (llm-compressor's rule for
//                  static activations since 0.11; exact and order-independent)
//   minmax         EmaObserver: each sample's max |x| folded into an exponential moving average
//                  amax = amax * (1 - c) + cur * c (llm-compressor >= 0.9's formula, here in f32),
//                  the first sample initialising it; depends on sample order (fixed by --seed)
// Both also record the per-channel min / max SmoothQuant needs (every norm output, and
// down_proj's own input), a plain running min / max whatever the observer.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "calib/forward.h"
#include "libquant/activation_stats.h"

namespace qt::calib {

// Observer that records max |x| per Linear input and per attention K / V into
// qt::ActivationStats (the static_minmax statistics of fp8-static / int8-static calibration),
// and the per-channel min / max of every shared (norm) output (update_channel_range).
// Maxima are exact (order-independent); NaN inputs propagate as NaN.
class AbsMaxObserver : public Observer {
 public:
  void on_linear_input(const std::string& module, const float* x, int64_t tokens,
                       int64_t in_features) override;
  void on_shared_linear_input(const std::string& producer, const std::vector<std::string>& modules,
                              const float* x, int64_t tokens, int64_t in_features) override;
  void on_kv(const std::string& attn_module, const float* k_post_rope, const float* v,
             int64_t tokens, int64_t kv_dim) override;
  void on_moe_routing(const std::string& moe_block, const int64_t* tokens_per_expert, int64_t num_experts,
                      int64_t tokens) override;
  const ActivationStats& stats() const { return stats_; }
  ActivationStats& stats() { return stats_; }

 private:
  ActivationStats stats_;
};

// max |x| over n f32 values; NaN if any value is NaN (a NaN activation must never be silently
// ignored). Parallel with OpenMP when n is large; a maximum is exact and order-independent, so
// the result does not depend on the thread count.
float absmax_f32(const float* x, int64_t n);

// Whether a Linear's own (unshared) input gets a per-channel range, keyed by the Linear's name:
// mlp.down_proj and Qwen2-MoE's mlp.shared_expert.down_proj (SmoothQuant's up_proj -> down_proj
// mappings need them).
bool wants_channel_range(const std::string& module);

// Folds x [tokens, channels] (row-major) into stats.channel_min / channel_max[producer]: per
// column minimum and maximum, exact and order-independent; a column that ever sees a NaN stays
// NaN. Returns absmax_f32(x, tokens * channels) (max |x| of this call, NaN if any x is NaN),
// found in the same pass. Throws nothing; asserts that `channels` matches an existing entry's size.
float update_channel_range(ActivationStats& stats, const std::string& producer, const float* x,
                          int64_t tokens, int64_t channels);

// Adds one sample's routed-token counts of `moe_block` to stats.routed_tokens.
void add_routed_tokens(ActivationStats& stats, const std::string& moe_block, const int64_t* counts,
                       int64_t num_experts);

// Per-sample max folded into an EMA (see above). on_linear_input arrives once per (layer,
// sample, module) in sample order, so each call is one observation.
class EmaObserver : public Observer {
 public:
  explicit EmaObserver(float c) : c_(c) {}
  void on_linear_input(const std::string& module, const float* x, int64_t tokens, int64_t in) override;
  void on_shared_linear_input(const std::string& producer, const std::vector<std::string>& modules,
                              const float* x, int64_t tokens, int64_t in) override;
  void on_kv(const std::string& attn, const float* k, const float* v, int64_t tokens, int64_t kv_dim) override;
  void on_moe_routing(const std::string& moe_block, const int64_t* tokens_per_expert, int64_t num_experts,
                      int64_t tokens) override;
  const ActivationStats& stats() const { return stats_; }

 private:
  void fold(std::map<std::string, float>& m, const std::string& k, float cur);
  ActivationStats stats_;
  float c_;
};

}  // namespace qt::calib
