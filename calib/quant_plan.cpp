#include "calib/quant_plan.h"

#include <algorithm>
#include <map>
#include <set>

#include "formats/ct_config.h"
#include "libquant/error.h"
#include "libquant/quantize.h"

namespace qt::calib {
namespace {

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}
bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
std::string last_component(const std::string& module) {
  auto p = module.rfind('.');
  return p == std::string::npos ? module : module.substr(p + 1);
}
std::string parent_of(const std::string& module) {
  auto p = module.rfind('.');
  return p == std::string::npos ? std::string() : module.substr(0, p);
}

}  // namespace

bool is_linear_weight_name(const std::string& name, const std::vector<int64_t>& shape) {
  if (shape.size() != 2 || !ends_with(name, ".weight")) return false;
  const std::string module = name.substr(0, name.size() - 7);
  const std::string last = last_component(module);
  if (contains(last, "embed") || last == "wte" || last == "wpe" || contains(last, "norm") ||
      last.rfind("ln", 0) == 0)
    return false;
  return true;
}

bool is_default_target(const std::string& module) {
  if (module == "lm_head" || ends_with(module, ".lm_head")) return false;
  // Only decoder layers.
  if (!(contains(module, ".layers.") || contains(module, ".h.") || contains(module, ".blocks.")))
    return false;
  // Vision towers and multimodal projectors stay in high precision.
  for (const char* v : {"vision", "visual", "multi_modal_projector", "mm_projector", "image_newline"})
    if (contains(module, v)) return false;
  // MoE routers (vLLM keeps them unquantized as ReplicatedLinear).
  const std::string last = last_component(module);
  if (last == "gate" || last == "router" || last == "shared_expert_gate" || last == "gate_up_router")
    return false;
  return true;
}

bool is_expert_module(const std::string& module) {
  return contains(module, ".experts.");
}

std::vector<std::string> fused_siblings(const std::string& module) {
  const std::string last = last_component(module), parent = parent_of(module);
  auto group = [&](std::initializer_list<const char*> names) {
    std::vector<std::string> v;
    for (const char* n : names) v.push_back(parent.empty() ? n : parent + "." + n);
    return v;
  };
  if (last == "q_proj" || last == "k_proj" || last == "v_proj") return group({"q_proj", "k_proj", "v_proj"});
  if (last == "gate_proj" || last == "up_proj") return group({"gate_proj", "up_proj"});
  if (last == "w1" || last == "w3") return group({"w1", "w3"});
  return {};
}

QuantPlan build_quant_plan(const std::vector<TensorView>& tensors, const PlanOptions& opts,
                           const std::string& model_path) {
  QT_ASSERT(opts.scheme != nullptr);
  const Scheme& scheme = *opts.scheme;
  QuantPlan plan;
  plan.options = opts;

  if (opts.format == OutputFormat::LegacyFp8 && !scheme.legacy_fp8)
    throw InputError(InputError::Kind::Usage, "", "",
                     std::string("--format legacy-fp8 needs a per-tensor FP8 scheme (fp8-static); '") +
                         scheme.name + "' is not one");

  // Which patterns matched anything (typo protection).
  std::vector<int> ignore_hits(opts.ignore.size(), 0), target_hits(opts.targets.size(), 0);
  std::set<std::string> modules_present;
  for (const auto& t : tensors)
    if (is_linear_weight_name(t.name, t.shape)) modules_present.insert(t.name.substr(0, t.name.size() - 7));

  std::map<std::string, bool> decided;  // module -> quantize
  DType model_dtype = DType::BF16;
  bool have_dtype = false;

  for (const auto& t : tensors) {
    TensorDecision d;
    d.name = t.name;
    plan.input_bytes += t.bytes.size();
    if (is_linear_weight_name(t.name, t.shape)) {
      d.linear_like = true;
      d.module = t.name.substr(0, t.name.size() - 7);
      bool target = false;
      if (opts.targets.empty()) {
        target = is_default_target(d.module);
      } else {
        for (size_t i = 0; i < opts.targets.size(); ++i)
          if (target_matches(opts.targets[i], d.module, false)) { target = true; ++target_hits[i]; }
      }
      bool ignored = false;
      for (size_t i = 0; i < opts.ignore.size(); ++i)
        if (target_matches(opts.ignore[i], d.module, false)) { ignored = true; ++ignore_hits[i]; }
      if (target && !ignored && !(t.dtype == DType::BF16 || t.dtype == DType::F16 || t.dtype == DType::F32)) {
        plan.warnings.push_back(t.name + ": stored as " + std::string(dtype_name(t.dtype)) +
                                ", not BF16/F16/F32; left unquantized");
        target = false;
      }
      d.quantize = target && !ignored;
      if (d.quantize) {
        if (std::string why = check_weight_shape(t.shape, scheme.weights); !why.empty())
          throw InputError(InputError::Kind::Unsupported, model_path, t.name,
                           std::string("scheme ") + scheme.name + " cannot quantize it: " + why +
                               " (add --ignore " + d.module + " to keep it in " +
                               std::string(dtype_short_name(t.dtype)) + ")");
        if (!have_dtype) { model_dtype = t.dtype; have_dtype = true; }
        d.reason = describe_args(scheme.weights);
      } else {
        d.reason = ignored ? "ignored (--ignore)" : target ? "kept" : "not a target (kept in high precision)";
      }
      decided[d.module] = d.quantize;
    } else {
      d.reason = "kept";
    }
    plan.decisions.push_back(d);
  }
  for (size_t i = 0; i < opts.ignore.size(); ++i)
    if (!ignore_hits[i])
      throw InputError(InputError::Kind::Usage, model_path, "",
                       "--ignore '" + opts.ignore[i] + "' matches no Linear module");
  for (size_t i = 0; i < opts.targets.size(); ++i)
    if (!target_hits[i])
      throw InputError(InputError::Kind::Usage, model_path, "",
                       "--targets '" + opts.targets[i] + "' matches no Linear module");

  // Fused groups: all members quantized or none (vLLM: "Found different quantization schemes").
  for (const auto& [module, q] : decided) {
    for (const auto& sib : fused_siblings(module)) {
      auto it = decided.find(sib);
      if (it != decided.end() && it->second != q)
        throw InputError(InputError::Kind::Usage, model_path, "",
                         "'" + module + "' is " + (q ? "quantized" : "left unquantized") + " but '" +
                             sib + "' is " + (it->second ? "quantized" : "left unquantized") +
                             "; vLLM fuses them and refuses different schemes for the shards of one layer");
    }
  }
  if (plan.decisions.empty() || std::none_of(plan.decisions.begin(), plan.decisions.end(),
                                             [](const TensorDecision& d) { return d.quantize; }))
    throw InputError(InputError::Kind::Usage, model_path, "",
                     "no Linear weight to quantize (check --targets / --ignore, or the checkpoint's tensor names)");

  // Ignore list: every Linear-like module left unquantized, plus lm_head (tied or not). Other
  // 2-D `.weight` tensors (embeddings) are listed too: vLLM and transformers match the "Linear"
  // target by class and never touch them, but compressed-tensors' model-free matcher treats
  // "Linear" as every `.weight` not ending in "norm", and must not expect them quantized.
  std::set<std::string> ignore_set;
  for (const auto& d : plan.decisions)
    if (d.linear_like && !d.quantize) ignore_set.insert(d.module);
  for (const auto& t : tensors)
    if (t.shape.size() == 2 && ends_with(t.name, ".weight")) {
      const std::string m = t.name.substr(0, t.name.size() - 7);
      if (!decided.count(m) && !ends_with(m, "norm")) ignore_set.insert(m);
    }
  ignore_set.insert("lm_head");
  plan.ignore_written.assign(ignore_set.begin(), ignore_set.end());

  // Outputs, in input order.
  const bool legacy = opts.format == OutputFormat::LegacyFp8;
  const bool packed = scheme.format == CtFormat::PackQuantized;
  const bool static_input = scheme.input && !scheme.input->dynamic;
  const DType scale_dtype_ct = model_dtype;
  auto add = [&](OutputTensor o) {
    o.nbytes = *dtype_nbytes(o.dtype, [&] { uint64_t n = 1; for (auto s : o.shape) n *= s; return n; }());
    plan.output_bytes += o.nbytes;
    plan.outputs.push_back(std::move(o));
  };
  std::set<std::string> attn_seen;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    const auto& d = plan.decisions[i];
    if (!d.quantize) {
      add({t.name, t.dtype, t.shape, 0, OutputTensor::Kind::Copy, t.name, ""});
      continue;
    }
    plan.quantized_modules.push_back(d.module);
    const DType sdt = legacy ? DType::F32 : scale_dtype_ct;
    std::vector<int64_t> sshape;
    switch (scheme.weights.strategy) {
      case Strategy::Tensor: sshape = legacy ? std::vector<int64_t>{} : std::vector<int64_t>{1}; break;
      case Strategy::Channel: sshape = {t.shape[0], 1}; break;
      case Strategy::Group: sshape = {t.shape[0], t.shape[1] / scheme.weights.group_size}; break;
      case Strategy::Block:
        sshape = {(t.shape[0] + scheme.weights.block_rows - 1) / scheme.weights.block_rows,
                  (t.shape[1] + scheme.weights.block_cols - 1) / scheme.weights.block_cols};
        break;
      case Strategy::Token: QT_ASSERT(false);
    }
    if (packed) {
      add({d.module + ".weight_packed", DType::I32,
           {t.shape[0], (t.shape[1] * scheme.weights.num_bits() + 31) / 32}, 0,
           OutputTensor::Kind::PackedWeight, t.name, d.module});
    } else {
      add({d.module + ".weight", scheme.weights.is_float() ? DType::F8_E4M3 : DType::I8, t.shape, 0,
           OutputTensor::Kind::QuantWeight, t.name, d.module});
    }
    add({d.module + ".weight_scale", sdt, sshape, 0, OutputTensor::Kind::WeightScale, t.name, d.module});
    if (packed)
      add({d.module + ".weight_shape", DType::I64, {2}, 0, OutputTensor::Kind::WeightShape, t.name, d.module});
    if (static_input)
      add({d.module + ".input_scale", sdt, legacy ? std::vector<int64_t>{} : std::vector<int64_t>{1}, 0,
           OutputTensor::Kind::InputScale, t.name, d.module});
    // KV-cache scales live on the attention module; emit them after its v_proj.
    if (last_component(d.module) == "v_proj") {
      const std::string attn = parent_of(d.module);
      if (attn_seen.insert(attn).second) {
        plan.attention_modules.push_back(attn);
        if (opts.kv_cache_fp8)
          for (const char* kv : {"k_scale", "v_scale"})
            add({attn + "." + kv, sdt, legacy ? std::vector<int64_t>{} : std::vector<int64_t>{1}, 0,
                 OutputTensor::Kind::KvScale, "", attn});
      }
    }
  }
  // vLLM's fused-MoE INT8 kernels (CompressedTensorsW8A8Int8MoEMethod) take per-channel weights
  // with dynamic per-token activations only and refuse static input scales: an int8-static
  // checkpoint with quantized experts would not load.
  if (static_input && !scheme.weights.is_float())
    for (const auto& m : plan.quantized_modules)
      if (is_expert_module(m))
        throw InputError(InputError::Kind::Unsupported, model_path, m + ".weight",
                         std::string(scheme.name) + " quantizes mixture-of-experts experts with static INT8 input "
                         "scales, which vLLM's fused-MoE INT8 kernels refuse (they take dynamic per-token "
                         "activations only); use int8-dynamic or fp8-static, or keep the experts unquantized "
                         "with --ignore 're:.*\\.experts\\..*'");
  if (opts.kv_cache_fp8 && plan.attention_modules.empty())
    throw InputError(InputError::Kind::Unsupported, model_path, "",
                     "--kv-cache fp8: no quantized attention v_proj found to attach k_scale/v_scale to");
  // Marlin shape constraints for the weight-only schemes (vLLM verify_marlin_supports_shape).
  if (packed || scheme.format == CtFormat::NaiveQuantized)
    for (size_t i = 0; i < tensors.size(); ++i)
      if (plan.decisions[i].quantize && (tensors[i].shape[0] % 64 != 0 || tensors[i].shape[1] % 128 != 0))
        plan.warnings.push_back(tensors[i].name + " " + shape_string(tensors[i].shape) +
                                ": vLLM's Marlin kernel needs out % 64 == 0 and in % 128 == 0 per tensor-parallel shard");
  return plan;
}

}  // namespace qt::calib
