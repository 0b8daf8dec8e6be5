#include "verify/moe_served.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "calib/quant_plan.h"
#include "formats/checkpoint.h"
#include "libquant/float_formats.h"
#include "libquant/tensor_view.h"

namespace qt::verify {

namespace {

// "model.layers.0.mlp.experts.3.gate_proj" -> block "model.layers.0.mlp", projection "gate_proj";
// false for modules outside an experts list.
bool split_expert(const std::string& module, std::string& block, std::string& proj) {
  const auto pos = module.rfind(".experts.");
  if (pos == std::string::npos) return false;
  const std::string rest = module.substr(pos + 9);
  const auto dot = rest.find('.');
  if (dot == std::string::npos) return false;
  block = module.substr(0, pos);
  proj = rest.substr(dot + 1);
  return true;
}

bool is_w13(const std::string& proj) { return proj == "gate_proj" || proj == "up_proj" || proj == "w1" || proj == "w3"; }
bool is_w2(const std::string& proj) { return proj == "down_proj" || proj == "w2"; }

// The value of a one-element scale tensor; NaN when absent, not one element, or unreadable.
float scalar_of(const Checkpoint& ck, const std::string& name) {
  const TensorView* t = ck.find(name);
  if (!t || t->numel() != 1) return std::nanf("");
  try {
    return decode_tensor_f32(*t)[0];
  } catch (const InputError&) {
    return std::nanf("");
  }
}

bool usable(float s) { return std::isfinite(s) && s > 0.0f; }

// Per-tensor FP8 weights (one E4M3 code per byte, one scale).
bool per_tensor_fp8(const Checkpoint& ck, const QuantizedLinearEntry& e) {
  if (e.packed || e.fp4_packed) return false;
  const TensorView* w = ck.find(e.weight_tensor);
  const TensorView* s = ck.find(e.scale_tensor);
  return w && s && w->dtype == DType::F8_E4M3 && s->numel() == 1;
}

}  // namespace

std::string MoeServedSummary::describe() const {
  if (blocks == 0) return "";
  char buf[320];
  std::snprintf(buf, sizeof buf,
                "%lld MoE block(s) as vLLM's fused-MoE method loads them: %lld expert input scale(s) raised to their "
                "block's maximum (largest spread %.3g), %lld expert gate/up weight(s) requantized to the pair's larger scale",
                static_cast<long long>(blocks), static_cast<long long>(input_scales_raised), max_input_spread,
                static_cast<long long>(weights_requantized));
  return buf;
}

MoeServedSummary apply_vllm_moe_rules(const Checkpoint& ck, std::vector<QuantizedLinearEntry>& entries) {
  MoeServedSummary sum;
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < entries.size(); ++i) index[entries[i].module] = i;
  // Static input scales: the largest per (block, w13|w2); ties keep the first in checkpoint order.
  struct Group {
    std::vector<size_t> members;
    float max = 0.0f, min = 0.0f;
    std::string max_tensor;
    bool all_usable = true;
  };
  std::map<std::string, Group> groups;
  std::map<std::string, bool> blocks;
  for (size_t i = 0; i < entries.size(); ++i) {
    std::string block, proj;
    if (!split_expert(entries[i].module, block, proj) || !(is_w13(proj) || is_w2(proj))) continue;
    blocks[block] = true;
    if (entries[i].input_scale_tensor.empty()) continue;
    Group& g = groups[block + (is_w13(proj) ? " w13" : " w2")];
    const float s = scalar_of(ck, entries[i].input_scale_tensor);
    g.members.push_back(i);
    if (!usable(s)) {
      g.all_usable = false;
      continue;
    }
    if (g.max_tensor.empty() || s > g.max) g.max = s, g.max_tensor = entries[i].input_scale_tensor;
    if (g.min == 0.0f || s < g.min) g.min = s;
  }
  sum.blocks = static_cast<int64_t>(blocks.size());
  for (auto& [key, g] : groups) {
    if (!g.all_usable || g.max_tensor.empty()) continue;  // the structure check fails the checkpoint
    sum.max_input_spread = std::max(sum.max_input_spread, static_cast<double>(g.max) / static_cast<double>(g.min));
    const DType dt = ck.find(g.max_tensor)->dtype;
    for (size_t i : g.members) {
      QuantizedLinearEntry& e = entries[i];
      if (e.input_scale_tensor == g.max_tensor) continue;
      if (scalar_of(ck, e.input_scale_tensor) != g.max) ++sum.input_scales_raised;
      // The kernels read the scale in the dtype the descriptor names: keep them consistent.
      if (ck.find(e.input_scale_tensor)->dtype != dt) continue;
      e.input_scale_tensor = g.max_tensor;
    }
  }
  // Per-tensor FP8 gate/up of one expert: both to the larger weight scale.
  for (size_t i = 0; i < entries.size(); ++i) {
    QuantizedLinearEntry& e = entries[i];
    std::string block, proj;
    if (!split_expert(e.module, block, proj) || !is_w13(proj) || !per_tensor_fp8(ck, e)) continue;
    std::string best = e.scale_tensor;
    float best_v = scalar_of(ck, best);
    if (!usable(best_v)) continue;
    for (const std::string& sib : calib::fused_siblings(e.module)) {
      auto it = index.find(sib);
      if (it == index.end() || !per_tensor_fp8(ck, entries[it->second])) continue;
      const float v = scalar_of(ck, entries[it->second].scale_tensor);
      if (usable(v) && v > best_v) best_v = v, best = entries[it->second].scale_tensor;
    }
    // vLLM requantizes every shard, also the one whose scale is the larger (its f16 round trip
    // can move codes whose value is an f16 subnormal).
    e.served_scale_tensor = best;
    ++sum.weights_requantized;
  }
  return sum;
}

uint8_t requantize_e4m3_code(uint8_t code, float own, float common) {
  // Dequantize in float16 as vLLM's per_tensor_dequantize (codes cast to f16, times the f32
  // scale, rounded to f16), then quantize with the common scale: f32 division, clamp, E4M3 RNE.
  const float dq = f32_from_f16(f16_from_f32(f32_from_e4m3fn(code) * own));
  const float q = std::clamp(dq / common, -448.0f, 448.0f);
  return e4m3fn_from_f32_sat(q);
}

LoadedLinear load_served_linear(const Checkpoint& ck, const QuantizedLinearEntry& e) {
  LoadedLinear l = load_quantized_linear(ck, e);
  if (e.served_scale_tensor.empty()) return l;
  const TensorView* common = ck.find(e.served_scale_tensor);
  const float own_v = scalar_of(ck, e.scale_tensor), common_v = scalar_of(ck, e.served_scale_tensor);
  if (!common || !usable(own_v) || !usable(common_v)) return l;
  const size_t n = static_cast<size_t>(e.desc.N * e.desc.K);
  std::vector<uint8_t> codes(n);
  for (size_t j = 0; j < n; ++j) codes[j] = requantize_e4m3_code(l.ref.codes[j], own_v, common_v);
  l.unpacked = std::move(codes);
  l.ref.codes = l.unpacked.data();
  l.ref.scales = common->bytes.data();
  l.ref.scale_dtype = common->dtype;
  return l;
}

}  // namespace qt::verify
