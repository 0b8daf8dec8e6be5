#include "calib/observers.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string_view>

#include "libquant/error.h"

namespace qt::calib {

namespace {
void update_max(std::map<std::string, float>& m, const std::string& key, float v) {
  auto [it, inserted] = m.emplace(key, v);
  if (!inserted && (v > it->second || v != v)) it->second = v;
}
}  // namespace

// Parallel (the observer runs on the caller's thread while the other threads would idle).
float absmax_f32(const float* x, int64_t n) {
  float m = 0.0f;
  bool nan = false;
#pragma omp parallel for schedule(static) reduction(max : m) reduction(|| : nan) if (n >= (int64_t{1} << 16))
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    nan = nan || (a != a);
    m = a > m ? a : m;
  }
  return nan ? std::numeric_limits<float>::quiet_NaN() : m;
}

bool wants_channel_range(const std::string& module) {
  for (const std::string_view k : {std::string_view(".mlp.down_proj"), std::string_view(".mlp.shared_expert.down_proj")})
    if (module.size() > k.size() && module.compare(module.size() - k.size(), k.size(), k) == 0) return true;
  return false;
}

float update_channel_range(ActivationStats& stats, const std::string& producer, const float* x,
                           int64_t tokens, int64_t channels) {
  auto& mn = stats.channel_min[producer];
  auto& mx = stats.channel_max[producer];
  const size_t C = static_cast<size_t>(channels);
  if (mn.empty()) {
    mn.assign(C, std::numeric_limits<float>::infinity());
    mx.assign(C, -std::numeric_limits<float>::infinity());
  }
  QT_ASSERT(mn.size() == C && mx.size() == C);
  // Columns are split into fixed 64-channel blocks, one task each (every column is owned by one
  // task: the result cannot depend on the thread count); within a block, row by row over
  // contiguous channels with branch-free min/max the compiler vectorises. A NaN loses every such
  // comparison, so NaN columns are found separately (rare) and set to NaN afterwards. The same
  // pass keeps each column's max |x| of this call (the absmax, one read of x for both).
  constexpr int64_t kBlock = 64;
  const int64_t nblocks = (channels + kBlock - 1) / kBlock;
  float* pmn = mn.data();
  float* pmx = mx.data();
  std::vector<float> col_abs(static_cast<size_t>(nblocks * kBlock), 0.0f);
  std::vector<char> block_nan(static_cast<size_t>(nblocks), 0);
#pragma omp parallel for schedule(static) if (tokens * channels >= (int64_t{1} << 16))
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t c0 = b * kBlock, c1 = std::min(channels, c0 + kBlock);
    float* ab = col_abs.data() + c0;
    bool nan = false;
    for (int64_t t = 0; t < tokens; ++t) {
      const float* row = x + t * channels;
      for (int64_t c = c0; c < c1; ++c) {
        const float v = row[c];
        const float a = std::fabs(v);
        pmn[c] = v < pmn[c] ? v : pmn[c];
        pmx[c] = v > pmx[c] ? v : pmx[c];
        ab[c - c0] = a > ab[c - c0] ? a : ab[c - c0];
        nan |= v != v;
      }
    }
    if (nan) {
      block_nan[static_cast<size_t>(b)] = 1;
      for (int64_t t = 0; t < tokens; ++t)
        for (int64_t c = c0; c < c1; ++c)
          if (x[t * channels + c] != x[t * channels + c]) pmn[c] = pmx[c] = std::numeric_limits<float>::quiet_NaN();
    }
  }
  float m = 0.0f;
  for (int64_t b = 0; b < nblocks; ++b)
    if (block_nan[static_cast<size_t>(b)]) return std::numeric_limits<float>::quiet_NaN();
  for (const float a : col_abs) m = a > m ? a : m;
  return m;
}

void AbsMaxObserver::on_shared_linear_input(const std::string& producer, const std::vector<std::string>& modules,
                                            const float* x, int64_t tokens, int64_t in_features) {
  const float m = update_channel_range(stats_, producer, x, tokens, in_features);  // = absmax_f32(x)
  for (const auto& module : modules) update_max(stats_.input_absmax, module, m);
}

void AbsMaxObserver::on_linear_input(const std::string& module, const float* x, int64_t tokens,
                                     int64_t in_features) {
  const float m = wants_channel_range(module) ? update_channel_range(stats_, module, x, tokens, in_features)
                                              : absmax_f32(x, tokens * in_features);
  update_max(stats_.input_absmax, module, m);
}

void AbsMaxObserver::on_kv(const std::string& attn_module, const float* k, const float* v,
                           int64_t tokens, int64_t kv_dim) {
  update_max(stats_.k_absmax, attn_module, absmax_f32(k, tokens * kv_dim));
  update_max(stats_.v_absmax, attn_module, absmax_f32(v, tokens * kv_dim));
}

void EmaObserver::on_linear_input(const std::string& module, const float* x, int64_t tokens, int64_t in) {
    fold(stats_.input_absmax, module, absmax_f32(x, tokens * in));
  if (wants_channel_range(module)) update_channel_range(stats_, module, x, tokens, in);
}

// SmoothQuant's per-channel range is a plain min/max whatever the observer (llm-compressor's
// SmoothQuantModifier keeps its own running min/max too).
void EmaObserver::on_shared_linear_input(const std::string& producer, const std::vector<std::string>& modules,
                                         const float* x, int64_t tokens, int64_t in) {
  update_channel_range(stats_, producer, x, tokens, in);
  Observer::on_shared_linear_input(producer, modules, x, tokens, in);
}

void EmaObserver::on_kv(const std::string& attn, const float* k, const float* v, int64_t tokens, int64_t kv_dim) {
  fold(stats_.k_absmax, attn, absmax_f32(k, tokens * kv_dim));
  fold(stats_.v_absmax, attn, absmax_f32(v, tokens * kv_dim));
}

void add_routed_tokens(ActivationStats& stats, const std::string& moe_block, const int64_t* counts,
                       int64_t num_experts) {
  auto& v = stats.routed_tokens[moe_block];
  if (v.empty()) v.assign(static_cast<size_t>(num_experts), 0);
  QT_ASSERT(static_cast<int64_t>(v.size()) == num_experts);
  for (int64_t e = 0; e < num_experts; ++e) v[static_cast<size_t>(e)] += counts[e];
}

void AbsMaxObserver::on_moe_routing(const std::string& moe_block, const int64_t* counts, int64_t num_experts,
                                    int64_t tokens) {
  (void)tokens;
  add_routed_tokens(stats_, moe_block, counts, num_experts);
}

void EmaObserver::on_moe_routing(const std::string& moe_block, const int64_t* counts, int64_t num_experts,
                                 int64_t tokens) {
  (void)tokens;
  add_routed_tokens(stats_, moe_block, counts, num_experts);
}

void EmaObserver::fold(std::map<std::string, float>& m, const std::string& k, float cur) {
  auto it = m.find(k);
  if (it == m.end()) m[k] = cur;
  else it->second = it->second * (1.0f - c_) + cur * c_;
}

}  // namespace qt::calib
