#include "calib/smoothing.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <optional>

#include "calib/model_config.h"
#include "formats/model_folder.h"
#include "libquant/error.h"
#include "libquant/smoothquant.h"

namespace qt::calib {

namespace {

const TensorView& need(const ModelFolder& model, const std::string& name) {
  const TensorView* t = model.checkpoint().find(name);
  if (!t) throw InputError(InputError::Kind::Unsupported, model.dir(), name, "SmoothQuant: tensor not found");
  if (t->dtype != DType::F32 && t->dtype != DType::F16 && t->dtype != DType::BF16)
    throw InputError(InputError::Kind::Unsupported, t->file, name, "SmoothQuant: weight dtype not supported",
                     "F32, F16 or BF16", std::string(dtype_name(t->dtype)));
  return *t;
}


}  // namespace

bool is_moe_layer(const Checkpoint& ck, const std::string& layer_prefix) {
  return ck.find(layer_prefix + "mlp.gate.weight") != nullptr ||
         ck.find(layer_prefix + "block_sparse_moe.gate.weight") != nullptr;
}

bool absorbs_only(const std::string& linear) {
  const auto p = linear.rfind('.');
  const std::string last = p == std::string::npos ? linear : linear.substr(p + 1);
  return last == "gate" || last == "shared_expert_gate";
}

std::vector<SmoothingMapping> smoothing_mappings(const ModelFolder& model, SmoothingMappings which, bool moe_norm) {
  std::vector<SmoothingMapping> out;
  const Checkpoint& ck = model.checkpoint();
  std::optional<ModelConfig> cfg;  // the MoE layout (calib/architectures.cpp), read at the first MoE layer
  auto require = [&](const std::string& norm, const std::string& lin) {
    if (!ck.find(lin + ".weight"))
      throw InputError(InputError::Kind::Unsupported, model.dir(), lin + ".weight",
                       "SmoothQuant: " + norm + " feeds this Linear, which the checkpoint lacks (every consumer of a "
                       "smoothed norm must absorb its factors)");
    return lin;
  };
  for (int64_t l = 0;; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    if (!ck.find(p + "input_layernorm.weight") && !ck.find(p + "post_attention_layernorm.weight")) break;
    struct Group {
      std::string smooth;
      bool linear;
      std::string stats;
      std::vector<std::string> balance;
    };
    std::vector<Group> groups = {
        {"input_layernorm", false, "input_layernorm", {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}},
        {"post_attention_layernorm", false, "post_attention_layernorm", {"mlp.gate_proj", "mlp.up_proj"}}};
    if (which == SmoothingMappings::All) groups.push_back({"mlp.up_proj", true, "mlp.down_proj", {"mlp.down_proj"}});
    // A mixture-of-experts layer (a router `mlp.gate` / `block_sparse_moe.gate`): the attention
    // side as llm-compressor's Mixtral / Qwen-MoE mappings; post_attention_layernorm only with
    // moe_norm, into every one of its consumers; the shared expert's up -> down with All.
    std::optional<SmoothingMapping> moe_map;
    if (is_moe_layer(ck, p)) {
      groups.resize(1);
      const bool shared = ck.find(p + "mlp.shared_expert.up_proj.weight") != nullptr;
      if (moe_norm && ck.find(p + "post_attention_layernorm.weight")) {
        if (!cfg) cfg.emplace(ModelConfig::from_json(model.config(), model.config_path()));
        const std::string norm = p + "post_attention_layernorm";
        SmoothingMapping m{norm, false, norm, {}};
        const std::string blk = cfg->moe_block(l);
        m.balance.push_back(require(norm, blk + ".gate"));
        for (int64_t e = 0; e < cfg->moe.num_experts; ++e) {
          m.balance.push_back(require(norm, cfg->expert_module(l, e) + "." + cfg->moe.gate_proj));
          m.balance.push_back(require(norm, cfg->expert_module(l, e) + "." + cfg->moe.up_proj));
        }
        if (shared)
          for (const char* lin : {".shared_expert.gate_proj", ".shared_expert.up_proj", ".shared_expert_gate"})
            m.balance.push_back(require(norm, blk + lin));
        moe_map = std::move(m);
      }
      if (which == SmoothingMappings::All && shared)
        groups.push_back({"mlp.shared_expert.up_proj", true, "mlp.shared_expert.down_proj", {"mlp.shared_expert.down_proj"}});
    }
    for (const auto& g : groups) {
      if (!ck.find(p + g.smooth + ".weight")) continue;
      SmoothingMapping m{p + g.smooth, g.linear, p + g.stats, {}};
      for (const auto& lin : g.balance) {
        if (!ck.find(p + lin + ".weight"))
          throw InputError(InputError::Kind::Unsupported, model.dir(), p + lin + ".weight",
                           "SmoothQuant: " + p + g.smooth + " feeds no such Linear (only dense Llama-family layers are supported)");
        m.balance.push_back(p + lin);
      }
      out.push_back(std::move(m));
      if (g.smooth == "input_layernorm" && moe_map) out.push_back(std::move(*moe_map));  // norms before mlp
    }
  }
  return out;
}

SmoothingPlan begin_smoothing_plan(double alpha, SmoothingMappings which, bool moe_norm) {
  if (!(alpha > 0.0 && alpha <= 1.0))
    throw InputError(InputError::Kind::Usage, "", "", "SmoothQuant strength must be in (0, 1]", "0 < alpha <= 1",
                     std::to_string(alpha));
  SmoothingPlan plan;
  plan.alpha = alpha;
  plan.which = which;
  plan.moe_norm = moe_norm;
  plan.min_factor = INFINITY;
  plan.max_factor = 0;
  return plan;
}

void add_smoothing_mapping(const ModelFolder& model, const SmoothingMapping& m, const ActivationStats& stats,
                           SmoothingPlan& plan) {
  {
    auto mn = stats.channel_min.find(m.stats_key), mx = stats.channel_max.find(m.stats_key);
    if (mn == stats.channel_min.end() || mx == stats.channel_max.end())
      throw InputError(InputError::Kind::Usage, model.dir(), m.stats_key,
                       "no per-channel activation range for SmoothQuant (statistics saved by a qtool without "
                       "SmoothQuant support?): calibrate again instead of --stats");
    const TensorView& sw = need(model, m.smooth + ".weight");
    // The smoothed channels: a norm's elements, or the smoothed Linear's output rows.
    const size_t C = static_cast<size_t>(sw.shape.empty() ? 0 : sw.shape[0]);
    if (m.smooth_is_linear ? sw.shape.size() != 2 : sw.shape.size() != 1)
      throw InputError(InputError::Kind::BadFile, sw.file, sw.name,
                       std::string("SmoothQuant smooths a ") + (m.smooth_is_linear ? "Linear" : "norm") +
                           " here, but this tensor is not " + (m.smooth_is_linear ? "2-D" : "1-D"),
                       m.smooth_is_linear ? "[out, in]" : "[channels]", shape_string(sw.shape));
    // Each list compared on its own: the message names the one that is wrong and its length.
    for (const auto* side : {&mn, &mx})
      if ((*side)->second.size() != C)
        throw InputError(InputError::Kind::BadFile, model.dir(), m.stats_key,
                         std::string(side == &mn ? "channel_min" : "channel_max") +
                             " statistics do not match " + m.smooth + ".weight",
                         std::to_string(C) + " channels", std::to_string((*side)->second.size()));
    for (size_t j = 0; j < C; ++j) {
      if (!std::isfinite(mn->second[j]) || !std::isfinite(mx->second[j]))
        throw InputError(InputError::Kind::BadValue, model.dir(), m.stats_key,
                         "non-finite activation statistic in channel " + std::to_string(j));
      if (mn->second[j] > mx->second[j])  // only a damaged or hand-made statistics file does this
        throw InputError(InputError::Kind::BadValue, model.dir(), m.stats_key,
                         "activation statistic of channel " + std::to_string(j) + " has min > max");
    }
    std::vector<float> colmax(C, 0.0f);
    DType M = sw.dtype;
    for (const auto& lin : m.balance) {
      const TensorView& w = need(model, lin + ".weight");
      if (!accumulate_column_absmax(w, colmax))
        throw InputError(InputError::Kind::BadFile, w.file, w.name, "SmoothQuant: weight shape does not match " + m.smooth,
                         "[*, " + std::to_string(C) + "]", shape_string(w.shape));
      M = w.dtype;  // the model dtype: that of its Linear weights (hidden states follow it)
    }
    for (size_t j = 0; j < C; ++j)
      if (!std::isfinite(colmax[j]))
        throw InputError(InputError::Kind::BadValue, model.dir(), m.balance[0] + ".weight",
                         "non-finite weight in input column " + std::to_string(j) + " of a SmoothQuant group");
    std::vector<float> s = smoothing_scales(mn->second, mx->second, colmax, plan.alpha, M);
    for (size_t j = 0; j < C; ++j)
      if (!std::isfinite(s[j]))
        throw InputError(InputError::Kind::BadValue, model.dir(), m.smooth,
                         "SmoothQuant factor of channel " + std::to_string(j) + " is not finite (activation range " +
                             std::to_string(mn->second[j]) + " .. " + std::to_string(mx->second[j]) + ")");
    for (float v : s) {
      plan.min_factor = std::min(plan.min_factor, v);
      plan.max_factor = std::max(plan.max_factor, v);
    }
    float amax;
    if (m.smooth_is_linear) {
      amax = divided_input_absmax(mn->second, mx->second, s);
    } else {
      // From the norm weight exactly as it will be written.
      const std::vector<uint8_t> gs_bytes = divide_norm_weight(sw, s);
      TensorView smoothed = sw;
      smoothed.bytes = gs_bytes;
      amax = smoothed_input_absmax(mn->second, mx->second, decode_tensor_f32(sw), decode_tensor_f32(smoothed));
    }
    // The unsmoothed plain absmax, for the ratio by which smoothing shrinks the input range.
    float plain = 0;
    for (size_t j = 0; j < C; ++j) plain = std::max({plain, std::fabs(mn->second[j]), std::fabs(mx->second[j])});
    for (const auto& lin : m.balance) {
      plan.column_factors[lin + ".weight"] = m.smooth;
      if (absorbs_only(lin)) continue;  // a router: never quantized, no input scale
      auto it = stats.input_absmax.find(lin);
      if (amax > 0) plan.max_range_reduction = std::max(plan.max_range_reduction, plain / amax);
      if (stats.observer == "static_minmax" || it == stats.input_absmax.end() || plain == 0) {
        plan.stats.input_absmax[lin] = amax;  // the observer's own rule: max over every token
      } else {
        // A moving-average observer's value, shrunk as the plain maximum is (in double).
        plan.stats.input_absmax[lin] = static_cast<float>(static_cast<double>(it->second) * amax / plain);
      }
    }
    plan.divide_factors[m.smooth + ".weight"] = m.smooth;
    // A bias of the smoothed layer scales with its output (llm-compressor: bias.div_(scales)):
    // up_proj's with mlp_bias; RMSNorms have none.
    if (const TensorView* bias = model.checkpoint().find(m.smooth + ".bias")) {
      if (bias->shape != std::vector<int64_t>{static_cast<int64_t>(C)})
        throw InputError(InputError::Kind::BadFile, bias->file, bias->name, "bias does not match its weight's outputs",
                         "[" + std::to_string(C) + "]", shape_string(bias->shape));
      need(model, bias->name);  // dtype check
      plan.divide_factors[bias->name] = m.smooth;
    }
    plan.factors[m.smooth] = std::move(s);
  }
  plan.mappings.push_back(m);
}

SmoothingPlan plan_smoothing(const ModelFolder& model, const ActivationStats& stats, double alpha, SmoothingMappings which,
                             bool moe_norm) {
  SmoothingPlan plan = begin_smoothing_plan(alpha, which, moe_norm);
  plan.stats = stats;
  for (const SmoothingMapping& m : smoothing_mappings(model, which, moe_norm)) add_smoothing_mapping(model, m, stats, plan);
  if (plan.mappings.empty()) plan.min_factor = 0;
  return plan;
}

std::vector<uint8_t> SmoothingPlan::smoothed_bytes(const TensorView& t) const {
  std::vector<uint8_t> out;
  TensorView cur = t;
  if (auto it = column_factors.find(t.name); it != column_factors.end()) {
    out = scale_weight_columns(cur, factors.at(it->second));
    cur.bytes = out;
  }
  if (auto it = divide_factors.find(t.name); it != divide_factors.end()) {
    const auto& s = factors.at(it->second);
    std::vector<uint8_t> next = cur.shape.size() == 1 ? divide_norm_weight(cur, s) : divide_weight_rows(cur, s);
    out = std::move(next);
  }
  return out;
}

std::string smoothing_factors_json(const SmoothingPlan& plan) {
  nlohmann::json j;
  j["format"] = "qtool-smoothing-factors";
  j["version"] = 1;
  j["alpha"] = plan.alpha;
  j["mappings_set"] = plan.which == SmoothingMappings::All ? "all" : "norms";
  if (plan.moe_norm) j["moe_norm"] = true;  // absent otherwise: dense models' files keep their bytes
  nlohmann::json ms = nlohmann::json::array();
  for (const auto& m : plan.mappings)
    ms.push_back({{"smooth", m.smooth}, {"balance", m.balance}, {"factors", plan.factors.at(m.smooth)}});
  j["mappings"] = ms;
  return j.dump() + "\n";
}

SmoothingPlan smoothing_plan_from_file(const ModelFolder& model, const std::string& path, const ActivationStats& stats) {
  const nlohmann::json j = read_json_file(path);
  if (!j.is_object() || j.value("format", "") != "qtool-smoothing-factors" || !j.contains("mappings") ||
      !j["mappings"].is_array())
    throw InputError(InputError::Kind::BadFile, path, "", "not a qtool smoothing factors file (format qtool-smoothing-factors)");
  SmoothingPlan plan;
  plan.stats = stats;
  plan.min_factor = INFINITY;
  plan.max_factor = 0;
  try {
    plan.alpha = j.at("alpha").get<double>();
    plan.which = j.value("mappings_set", "all") == "norms" ? SmoothingMappings::Norms : SmoothingMappings::All;
    plan.moe_norm = j.value("moe_norm", false);
    for (const auto& mj : j["mappings"]) {
      SmoothingMapping m;
      m.smooth = mj.at("smooth").get<std::string>();
      m.balance = mj.at("balance").get<std::vector<std::string>>();
      std::vector<float> s = mj.at("factors").get<std::vector<float>>();
      const TensorView* sw = model.checkpoint().find(m.smooth + ".weight");
      if (!sw)
        throw InputError(InputError::Kind::Unsupported, path, m.smooth,
                         "the model has no " + m.smooth + ".weight to smooth with these factors");
      need(model, sw->name);
      m.smooth_is_linear = sw->shape.size() == 2;
      m.stats_key = m.smooth_is_linear ? (m.balance.empty() ? m.smooth : m.balance[0]) : m.smooth;
      if (sw->shape.empty() || static_cast<size_t>(sw->shape[0]) != s.size())
        throw InputError(InputError::Kind::Unsupported, path, m.smooth,
                         "factor count does not match " + sw->name + " " + shape_string(sw->shape),
                         std::to_string(sw->shape.empty() ? 0 : sw->shape[0]), std::to_string(s.size()));
      for (size_t c = 0; c < s.size(); ++c)
        if (!std::isfinite(s[c]) || !(s[c] > 0))
          throw InputError(InputError::Kind::BadValue, path, m.smooth,
                           "smoothing factor of channel " + std::to_string(c) + " is not a finite positive number");
      for (const auto& lin : m.balance) {
        const TensorView& w = need(model, lin + ".weight");
        if (w.shape.size() != 2 || static_cast<size_t>(w.shape[1]) != s.size())
          throw InputError(InputError::Kind::Unsupported, path, lin,
                           "balance Linear's input size does not match the factors of " + m.smooth,
                           "[*, " + std::to_string(s.size()) + "]", shape_string(w.shape));
        plan.column_factors[lin + ".weight"] = m.smooth;
      }
      plan.divide_factors[m.smooth + ".weight"] = m.smooth;
      if (const TensorView* bias = model.checkpoint().find(m.smooth + ".bias")) {
        if (bias->shape != std::vector<int64_t>{static_cast<int64_t>(s.size())})
          throw InputError(InputError::Kind::BadFile, bias->file, bias->name, "bias does not match its weight's outputs",
                           "[" + std::to_string(s.size()) + "]", shape_string(bias->shape));
        need(model, bias->name);
        plan.divide_factors[bias->name] = m.smooth;
      }
      for (float v : s) {
        plan.min_factor = std::min(plan.min_factor, v);
        plan.max_factor = std::max(plan.max_factor, v);
      }
      plan.factors[m.smooth] = std::move(s);
      plan.mappings.push_back(std::move(m));
    }
  } catch (const nlohmann::json::exception& e) {
    throw InputError(InputError::Kind::BadFile, path, "", std::string("malformed smoothing factors: ") + e.what());
  }
  if (plan.mappings.empty()) plan.min_factor = 0;
  return plan;
}

ActivationStats smoothed_input_stats(const ModelFolder& model, const SmoothingPlan& plan, const ActivationStats& raw) {
  ActivationStats out = raw;
  for (const SmoothingMapping& m : plan.mappings) {
    auto mn = raw.channel_min.find(m.stats_key), mx = raw.channel_max.find(m.stats_key);
    if (mn == raw.channel_min.end() || mx == raw.channel_max.end())
      throw InputError(InputError::Kind::Usage, model.dir(), m.stats_key, "no per-channel activation range for SmoothQuant");
    const std::vector<float>& s = plan.factors.at(m.smooth);
    if (mn->second.size() != s.size() || mx->second.size() != s.size())
      throw InputError(InputError::Kind::BadFile, model.dir(), m.stats_key, "per-channel statistics do not match the factors",
                       std::to_string(s.size()) + " channels", std::to_string(mn->second.size()));
    float amax;
    if (m.smooth_is_linear) {
      amax = divided_input_absmax(mn->second, mx->second, s);
    } else {
      const TensorView& sw = need(model, m.smooth + ".weight");
      const std::vector<uint8_t> gs_bytes = divide_norm_weight(sw, s);
      TensorView smoothed = sw;
      smoothed.bytes = gs_bytes;
      amax = smoothed_input_absmax(mn->second, mx->second, decode_tensor_f32(sw), decode_tensor_f32(smoothed));
    }
    for (const auto& lin : m.balance)
      if (!absorbs_only(lin)) out.input_absmax[lin] = amax;
  }
  return out;
}

}  // namespace qt::calib
