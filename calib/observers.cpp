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
  // 16 lanes per chunk of 4096 values (each chunk one task): branch-free max and NaN flags the
  // compiler vectorises; a maximum is exact, so the lanes and chunks may combine in any order.
  constexpr int64_t kChunk = 4096, kLanes = 16;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  float m = 0.0f;
  bool nan = false;
#pragma omp parallel for schedule(static) reduction(max : m) reduction(|| : nan) if (n >= (int64_t{1} << 16))
  for (int64_t ch = 0; ch < chunks; ++ch) {
    const int64_t b = ch * kChunk, e = std::min(n, b + kChunk);
    float lm[kLanes] = {};
    int32_t ln[kLanes] = {};
    int64_t i = b;
    for (; i + kLanes <= e; i += kLanes)
      for (int64_t j = 0; j < kLanes; ++j) {
        const float a = std::fabs(x[i + j]);
        lm[j] = a > lm[j] ? a : lm[j];
        ln[j] |= a != a ? 1 : 0;
      }
    for (; i < e; ++i) {
      const float a = std::fabs(x[i]);
      lm[0] = a > lm[0] ? a : lm[0];
      ln[0] |= a != a ? 1 : 0;
    }
    for (int64_t j = 0; j < kLanes; ++j) {
      m = lm[j] > m ? lm[j] : m;
      nan = nan || ln[j] != 0;
    }
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
  // contiguous channels with branch-free min/max into local arrays (no aliasing with x, so the
  // compiler vectorises them). A NaN loses every such comparison, so NaN columns are flagged
  // separately (rare) and set to NaN afterwards. The same pass keeps each column's max |x| of
  // this call (the absmax, one read of x for both).
  constexpr int64_t kBlock = 64;
  const int64_t nblocks = (channels + kBlock - 1) / kBlock;
  float* pmn = mn.data();
  float* pmx = mx.data();
  std::vector<float> col_abs(static_cast<size_t>(nblocks * kBlock), 0.0f);
  std::vector<char> block_nan(static_cast<size_t>(nblocks), 0);
#pragma omp parallel for schedule(static) if (tokens * channels >= (int64_t{1} << 16))
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t c0 = b * kBlock, n = std::min(channels, c0 + kBlock) - c0;
    alignas(64) float lmn[kBlock], lmx[kBlock], lab[kBlock];
    alignas(64) int32_t lnan[kBlock];
    for (int64_t c = 0; c < kBlock; ++c) {
      lmn[c] = c < n ? pmn[c0 + c] : 0.0f;
      lmx[c] = c < n ? pmx[c0 + c] : 0.0f;
      lab[c] = 0.0f;
      lnan[c] = 0;
    }
    auto fold_row = [&](const float* row, int64_t m) {
      for (int64_t c = 0; c < m; ++c) {
        const float v = row[c];
        const float a = std::fabs(v);
        lmn[c] = v < lmn[c] ? v : lmn[c];
        lmx[c] = v > lmx[c] ? v : lmx[c];
        lab[c] = a > lab[c] ? a : lab[c];
        lnan[c] |= v != v ? 1 : 0;
      }
    };
    if (n == kBlock) for (int64_t t = 0; t < tokens; ++t) fold_row(x + t * channels + c0, kBlock);
    else for (int64_t t = 0; t < tokens; ++t) fold_row(x + t * channels + c0, n);
    bool nan = false;
    for (int64_t c = 0; c < n; ++c) {
      pmn[c0 + c] = lmn[c];
      pmx[c0 + c] = lmx[c];
      col_abs[static_cast<size_t>(c0 + c)] = lab[c];
      nan |= lnan[c] != 0;
    }
    if (nan) {
      block_nan[static_cast<size_t>(b)] = 1;
      for (int64_t c = 0; c < n; ++c)
        if (lnan[c]) pmn[c0 + c] = pmx[c0 + c] = std::numeric_limits<float>::quiet_NaN();
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
