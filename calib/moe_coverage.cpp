#include "calib/moe_coverage.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <set>
#include <tuple>

#include "libquant/error.h"

namespace qt::calib {
namespace {

std::string last_component(const std::string& m) {
  const auto p = m.rfind('.');
  return p == std::string::npos ? m : m.substr(p + 1);
}

// max / min over the experts' statistics of one role; 0 when one is missing or not positive.
double spread(const ActivationStats& s, const std::string& block, size_t experts, bool w13) {
  double lo = INFINITY, hi = 0;
  const std::string prefix = block + ".experts.";
  for (size_t e = 0; e < experts; ++e) {
    float v = -1;
    for (auto it = s.input_absmax.lower_bound(prefix + std::to_string(e) + ".");
         it != s.input_absmax.end() && it->first.rfind(prefix + std::to_string(e) + ".", 0) == 0; ++it) {
      const std::string l = last_component(it->first);
      const bool is13 = l == "gate_proj" || l == "up_proj" || l == "w1" || l == "w3";
      const bool is2 = l == "down_proj" || l == "w2";
      if ((w13 && is13) || (!w13 && is2)) v = std::max(v, it->second);
    }
    if (!(v > 0) || !std::isfinite(v)) return 0;
    lo = std::min(lo, static_cast<double>(v));
    hi = std::max(hi, static_cast<double>(v));
  }
  return experts == 0 ? 0 : hi / lo;
}

}  // namespace

std::vector<MoeBlockCoverage> moe_coverage(const ActivationStats& stats) {
  std::vector<MoeBlockCoverage> out;
  for (const auto& [block, tokens] : stats.routed_tokens) {
    MoeBlockCoverage c;
    c.block = block;
    c.tokens = tokens;
    if (!tokens.empty()) {
      std::vector<int64_t> s = tokens;
      std::sort(s.begin(), s.end());
      c.min = s.front();
      c.max = s.back();
      const size_t n = s.size();
      c.median = n % 2 ? static_cast<double>(s[n / 2]) : (static_cast<double>(s[n / 2 - 1]) + s[n / 2]) / 2.0;
    }
    for (size_t e = 0; e < tokens.size(); ++e)
      if (tokens[e] == 0) c.zero_experts.push_back(static_cast<int64_t>(e));
    c.w13_spread = spread(stats, block, tokens.size(), true);
    c.w2_spread = spread(stats, block, tokens.size(), false);
    out.push_back(std::move(c));
  }
  // Numeric layer order ("layers.2" before "layers.10") for reports.
  auto layer_of = [](const std::string& b) {
    const auto p = b.find("layers.");
    return p == std::string::npos ? 0L : std::strtol(b.c_str() + p + 7, nullptr, 10);
  };
  std::stable_sort(out.begin(), out.end(),
                   [&](const MoeBlockCoverage& a, const MoeBlockCoverage& b) { return layer_of(a.block) < layer_of(b.block); });
  return out;
}

void check_routed_coverage(const std::vector<MoeBlockCoverage>& cov, int64_t min_tokens,
                           const std::string& model_path) {
  std::string list;
  int64_t n = 0;
  for (const auto& c : cov) {
    std::string experts;
    for (size_t e = 0; e < c.tokens.size(); ++e)
      if (c.tokens[e] < min_tokens) {
        experts += fmt::format("{}{} ({} token{})", experts.empty() ? "" : ", ", e, c.tokens[e],
                               c.tokens[e] == 1 ? "" : "s");
        ++n;
      }
    if (!experts.empty()) list += fmt::format("{}{} expert {}", list.empty() ? "" : "; ", c.block, experts);
  }
  if (n == 0) return;
  throw InputError(InputError::Kind::BadValue, model_path, "",
                   fmt::format("--moe-calibration routed: {} expert{} saw fewer than --moe-min-tokens {} routed calibration "
                               "tokens: {}. Their input scales would rest on too few tokens; use --moe-calibration all "
                               "(every token through every expert, the default), more calibration samples, a lower "
                               "--moe-min-tokens, or --moe-fallback layer-max (such an expert takes the layer's maximum "
                               "over the experts that met the minimum)",
                               n, n == 1 ? "" : "s", min_tokens, list));
}

const char* moe_fallback_name(MoeFallback f) { return kMoeFallbackNames[f == MoeFallback::Error ? 0 : 1]; }

bool parse_moe_fallback(const std::string& name, MoeFallback& out) {
  if (name == kMoeFallbackNames[0]) out = MoeFallback::Error;
  else if (name == kMoeFallbackNames[1]) out = MoeFallback::LayerMax;
  else return false;
  return true;
}

void apply_layer_max_fallback(ActivationStats& stats, std::vector<MoeBlockCoverage>& cov, int64_t min_tokens,
                              const std::string& model_path) {
  const int64_t need = std::max<int64_t>(min_tokens, 1);
  for (MoeBlockCoverage& c : cov) {
    c.fallback_experts.clear();
    c.fallback_w13 = c.fallback_w2 = 0;
    c.fallback_sources = 0;
    std::vector<bool> falls(c.tokens.size(), false);
    for (size_t e = 0; e < c.tokens.size(); ++e)
      if (c.tokens[e] < need) {
        falls[e] = true;
        c.fallback_experts.push_back(static_cast<int64_t>(e));
      }
    if (c.fallback_experts.empty()) continue;
    c.fallback_sources = static_cast<int64_t>(c.tokens.size() - c.fallback_experts.size());
    if (c.fallback_sources == 0)
      throw InputError(InputError::Kind::BadValue, model_path, "",
                       fmt::format("--moe-fallback layer-max: no expert of {} saw --moe-min-tokens {} routed calibration "
                                   "tokens (the most any saw: {}), so the layer has no maximum to fall back on; use "
                                   "--moe-calibration all, more calibration samples, or a lower --moe-min-tokens",
                                   c.block, need, c.max));
    // The block's expert statistics: "<block>.experts.<e>.<proj>", contiguous in the sorted map.
    const std::string prefix = c.block + ".experts.";
    std::set<std::string> w13_names, w2_names;
    float w13 = -1, w2 = -1;
    bool w13_bad = false, w2_bad = false;
    for (auto it = stats.input_absmax.lower_bound(prefix);
         it != stats.input_absmax.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
      const std::string rest = it->first.substr(prefix.size());  // "<e>.<proj>"
      const auto dot = rest.find('.');
      if (dot == std::string::npos) continue;
      const std::string proj = rest.substr(dot + 1);
      char* end = nullptr;
      const long e = std::strtol(rest.c_str(), &end, 10);
      if (end != rest.c_str() + dot || e < 0 || static_cast<size_t>(e) >= c.tokens.size()) continue;
      const bool is13 = proj == "gate_proj" || proj == "up_proj" || proj == "w1" || proj == "w3";
      const bool is2 = proj == "down_proj" || proj == "w2";
      if (!is13 && !is2) continue;
      (is13 ? w13_names : w2_names).insert(proj);
      if (falls[static_cast<size_t>(e)]) continue;
      const float v = it->second;
      if (!(v > 0) || !std::isfinite(v)) (is13 ? w13_bad : w2_bad) = true;
      float& m = is13 ? w13 : w2;
      m = std::max(m, v);
    }
    for (const auto& [bad, role, v] : {std::tuple{w13_bad, "w13", w13}, std::tuple{w2_bad, "w2", w2}})
      if (bad || (v >= 0 && !(v > 0)))
        throw InputError(InputError::Kind::BadValue, model_path, "",
                         fmt::format("--moe-fallback layer-max: a {} input statistic of the experts of {} that met "
                                     "--moe-min-tokens is zero, negative or not finite; it cannot serve as the layer's "
                                     "maximum",
                                     role, c.block));
    for (int64_t e : c.fallback_experts) {
      const std::string p = prefix + std::to_string(e) + ".";
      if (w13 > 0)
        for (const auto& n : w13_names) stats.input_absmax[p + n] = w13;
      if (w2 > 0)
        for (const auto& n : w2_names) stats.input_absmax[p + n] = w2;
    }
    c.fallback_w13 = std::max(w13, 0.0f);
    c.fallback_w2 = std::max(w2, 0.0f);
  }
}

std::string fallback_line(const MoeBlockCoverage& c, int64_t min_tokens) {
  if (c.fallback_experts.empty()) return "";
  std::string experts;
  for (int64_t e : c.fallback_experts)
    experts += fmt::format("{}{} ({} token{})", experts.empty() ? "" : ", ", e, c.tokens[static_cast<size_t>(e)],
                           c.tokens[static_cast<size_t>(e)] == 1 ? "" : "s");
  return fmt::format("{}: expert{} {} under --moe-min-tokens {} take{} the layer maximum over its {} expert{} that met "
                     "it: w13 input max|x| {:g}, w2 {:g}",
                     c.block, c.fallback_experts.size() == 1 ? "" : "s", experts, std::max<int64_t>(min_tokens, 1),
                     c.fallback_experts.size() == 1 ? "s" : "", c.fallback_sources, c.fallback_sources == 1 ? "" : "s",
                     c.fallback_w13, c.fallback_w2);
}

std::string coverage_line(const MoeBlockCoverage& c) {
  std::string zero;
  for (int64_t e : c.zero_experts) zero += (zero.empty() ? "" : ",") + std::to_string(e);
  return fmt::format("{}: {} experts, routed tokens per expert min {} / median {:g} / max {}{}; input max|x| "
                     "spread across experts w13 {:.3g}x, w2 {:.3g}x",
                     c.block, c.tokens.size(), c.min, c.median, c.max,
                     zero.empty() ? "" : fmt::format(", none routed to expert(s) {}", zero), c.w13_spread, c.w2_spread);
}

std::string coverage_summary(const std::vector<MoeBlockCoverage>& cov) {
  if (cov.empty()) return "no MoE layer";
  std::vector<int64_t> all;
  int64_t zero = 0, zero_layers = 0;
  for (const auto& c : cov) {
    all.insert(all.end(), c.tokens.begin(), c.tokens.end());
    zero += static_cast<int64_t>(c.zero_experts.size());
    zero_layers += c.zero_experts.empty() ? 0 : 1;
  }
  std::sort(all.begin(), all.end());
  const size_t n = all.size();
  const double med = n == 0 ? 0 : n % 2 ? static_cast<double>(all[n / 2]) : (static_cast<double>(all[n / 2 - 1]) + all[n / 2]) / 2.0;
  return fmt::format("{} MoE layer{} x {} experts, routed calibration tokens per expert min {} / median {:g} / max {}, {}",
                     cov.size(), cov.size() == 1 ? "" : "s", cov.front().tokens.size(), n ? all.front() : 0, med,
                     n ? all.back() : 0,
                     zero == 0 ? std::string("every expert saw tokens")
                               : fmt::format("{} expert{} in {} layer{} saw none", zero, zero == 1 ? "" : "s", zero_layers,
                                             zero_layers == 1 ? "" : "s"));
}

nlohmann::json coverage_json(const std::vector<MoeBlockCoverage>& cov) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& c : cov)
    j[c.block] = {{"routed_tokens", c.tokens},
                  {"min", c.min},
                  {"median", c.median},
                  {"max", c.max},
                  {"experts_without_tokens", c.zero_experts},
                  {"input_absmax_spread", {{"w13", c.w13_spread}, {"w2", c.w2_spread}}},
                  {"fallback_experts", c.fallback_experts}};
  for (const auto& c : cov)
    if (!c.fallback_experts.empty())
      j[c.block]["fallback_input_absmax"] = {{"w13", c.fallback_w13}, {"w2", c.fallback_w2}};
  return j;
}

}  // namespace qt::calib
