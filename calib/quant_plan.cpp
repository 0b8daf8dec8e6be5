#include "calib/quant_plan.h"

#include <algorithm>
#include <map>
#include <set>

#include "formats/ct_config.h"
#include "libquant/error.h"
#include "libquant/quantize.h"

namespace qt::calib {
namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
std::string last_component(const std::string& module) {
  auto p = module.rfind('.');
  return p == std::string::npos ? module : module.substr(p + 1);
}
std::string parent_of(const std::string& module) {
  auto p = module.rfind('.');
  return p == std::string::npos ? std::string() : module.substr(0, p);
}

// Names that are Linear projections in every architecture that uses them: a `.weight` of such a
// module that is not 2-D is a broken checkpoint, not some other kind of layer.
bool is_projection_name(const std::string& last) {
  static const std::set<std::string> names = {
      "q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "gate_proj", "up_proj", "down_proj", "gate_up_proj",
      "w1", "w2", "w3", "out_proj", "fc1", "fc2", "c_attn", "c_proj", "c_fc", "query_key_value",
      "dense_h_to_4h", "dense_4h_to_h"};
  return names.count(last) != 0;
}

}  // namespace

bool is_linear_weight_name(const std::string& name, const std::vector<int64_t>& shape) {
  if (shape.size() != 2 || !name.ends_with(".weight")) return false;
  const std::string module = name.substr(0, name.size() - 7);
  const std::string last = last_component(module);
  if (contains(last, "embed") || last == "wte" || last == "wpe" || contains(last, "norm") ||
      last.rfind("ln", 0) == 0)
    return false;
  return true;
}

bool is_default_target(const std::string& module) {
  if (module == "lm_head" || module.ends_with(".lm_head")) return false;
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

Scheme PlanOptions::effective_scheme() const {
  QT_ASSERT(scheme != nullptr);
  Scheme s = *scheme;
  if (group_size > 0) {
    QT_ASSERT(s.weights.strategy == Strategy::Group);
    s.weights.group_size = group_size;
  }
  return s;
}

QuantPlan build_quant_plan(const std::vector<TensorView>& tensors, const PlanOptions& opts,
                           const std::string& model_path) {
  QT_ASSERT(opts.scheme != nullptr);
  const Scheme scheme = opts.effective_scheme();
  QuantPlan plan;
  plan.options = opts;

  if (opts.format == OutputFormat::LegacyFp8 && !scheme.legacy_fp8)
    throw InputError(InputError::Kind::Usage, "", "",
                     std::string("--format legacy-fp8 needs a per-tensor FP8 scheme (fp8-static); '") +
                         scheme.name + "' is not one");

  // An invalid pattern is reported as such before any matching (not as "matches no module").
  const PatternSource ignore_src{InputError::Kind::Usage, "", "--ignore"};
  const PatternSource targets_src{InputError::Kind::Usage, "", "--targets"};
  for (const auto* list : {&opts.ignore, &opts.targets})
    for (const auto& p : *list)
      if (p.rfind("re:", 0) == 0)
        if (std::string why = regex_problem(p.substr(3)); !why.empty())
          throw InputError(InputError::Kind::Usage, "", "",
                           std::string(list == &opts.ignore ? "--ignore" : "--targets") + " '" + p +
                               "' is not a valid regular expression: " + why);

  // Which patterns matched anything (typo protection).
  std::vector<int> ignore_hits(opts.ignore.size(), 0), target_hits(opts.targets.size(), 0);
  std::set<std::string> modules_present;
  for (const auto& t : tensors)
    if (is_linear_weight_name(t.name, t.shape)) modules_present.insert(t.name.substr(0, t.name.size() - 7));

  std::map<std::string, bool> decided;  // module -> quantize

  for (const auto& t : tensors) {
    TensorDecision d;
    d.name = t.name;
    plan.input_bytes += t.bytes.size();
    if (is_linear_weight_name(t.name, t.shape)) {
      d.linear_like = true;
      d.module = t.name.substr(0, t.name.size() - 7);
      bool target = false;
      if (opts.target_set) {
        target = opts.target_set->count(d.module) > 0;
      } else if (opts.targets.empty()) {
        target = is_default_target(d.module);
      } else {
        for (size_t i = 0; i < opts.targets.size(); ++i)
          if (target_matches(opts.targets[i], d.module, false, targets_src)) { target = true; ++target_hits[i]; }
      }
      bool ignored = false;
      for (size_t i = 0; i < opts.ignore.size(); ++i)
        if (target_matches(opts.ignore[i], d.module, false, ignore_src)) { ignored = true; ++ignore_hits[i]; }
      if (target && !ignored && !(t.dtype == DType::BF16 || t.dtype == DType::F16 || t.dtype == DType::F32)) {
        plan.warnings.push_back(t.name + ": stored as " + std::string(dtype_name(t.dtype)) +
                                ", not BF16/F16/F32; left unquantized");
        target = false;
      }
      d.quantize = target && !ignored;
      if (d.quantize) {
        if (std::string why = check_weight_shape(t.shape, scheme.weights); !why.empty()) {
          // A smaller group that divides the input dimension is the usual fix (SmolLM2: 576).
          std::string hint;
          if (scheme.weights.strategy == Strategy::Group && t.shape.size() == 2)
            for (int64_t g : kGroupSizes)
              if (g < scheme.weights.group_size && t.shape[1] % g == 0) {
                hint = "--group-size " + std::to_string(g) + " fits it, or ";
                break;
              }
          throw InputError(InputError::Kind::Unsupported, model_path, t.name,
                           std::string("scheme ") + scheme.name + " cannot quantize it: " + why + " (" + hint +
                               "add --ignore " + d.module + " to keep it in " +
                               std::string(dtype_short_name(t.dtype)) + ")");
        }
        d.reason = describe_args(scheme.weights);
      } else {
        d.reason = ignored ? "ignored (--ignore)" : target ? "kept" : "not a target (kept in high precision)";
      }
      decided[d.module] = d.quantize;
    } else if (t.name.ends_with(".weight") && t.shape.size() != 2 &&
               is_projection_name(last_component(t.name.substr(0, t.name.size() - 7)))) {
      // A Linear projection whose weight is 1-D or 3-D: left as is, it would sit unquantized
      // next to its quantized siblings (q/k/v, gate/up) while vLLM expects it quantized. Refused
      // unless --ignore names it (then it is copied like any other kept tensor).
      const std::string module = t.name.substr(0, t.name.size() - 7);
      bool target = false, ignored = false;
      if (opts.targets.empty()) {
        target = is_default_target(module);
      } else {
        for (size_t i = 0; i < opts.targets.size(); ++i)
          if (target_matches(opts.targets[i], module, false, targets_src)) { target = true; ++target_hits[i]; }
      }
      for (size_t i = 0; i < opts.ignore.size(); ++i)
        if (target_matches(opts.ignore[i], module, false, ignore_src)) { ignored = true; ++ignore_hits[i]; }
      if (target && !ignored)
        throw InputError(InputError::Kind::BadFile, t.file, t.name,
                         "a Linear weight must be 2-D [out_features, in_features], but this one has shape " +
                             shape_string(t.shape) + "; qtool will not leave it unquantized beside the rest of its "
                             "layer (vLLM would expect it quantized)");
      d.reason = "kept";
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
  // "Linear" as every `.weight` not ending in "norm", and must not expect them quantized
  // (llm-compressor writes Linear names only; measured: compressed-tensors 0.20's model-free
  // dequantizer refuses such a checkpoint -- tests/python/test_ct_decompress.py).
  std::set<std::string> ignore_set;
  for (const auto& d : plan.decisions)
    if (d.linear_like && !d.quantize) ignore_set.insert(d.module);
  for (const auto& t : tensors)
    if (t.shape.size() == 2 && t.name.ends_with(".weight")) {
      const std::string m = t.name.substr(0, t.name.size() - 7);
      if (!decided.count(m) && !m.ends_with("norm")) ignore_set.insert(m);
    }
  ignore_set.insert("lm_head");
  plan.ignore_written.assign(ignore_set.begin(), ignore_set.end());

  // Outputs, in input order.
  const bool legacy = opts.format == OutputFormat::LegacyFp8;
  const bool packed = scheme.format == CtFormat::PackQuantized;
  const bool static_input = scheme.input && !scheme.input->dynamic;
  // NVFP4 activations: dynamic group scales under one static FP32 global scale per Linear
  // (`input_global_scale`, F32 [1], whatever the model dtype), from calibration.
  const bool input_global = scheme.input && scheme.input->scale_format == ScaleFormat::Nvfp4;
  // Scales are stored in the dtype of the tensor they belong to (compressed-tensors creates each
  // Linear's weight_scale / input_scale in that Linear's weight dtype, and an attention's
  // k_scale / v_scale in the dtype of its first parameter, q_proj's weight), so a model that
  // mixes BF16, F16 and F32 layers gets per-module scale dtypes. Legacy fp8 stores F32 scalars.
  std::map<std::string, DType> dtype_of;
  for (const auto& t : tensors) dtype_of[t.name] = t.dtype;
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
    const DType sdt = legacy ? DType::F32 : t.dtype;
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
    const bool fp4 = scheme.weights.type == QuantType::Float4E2M1;
    if (packed) {
      add({d.module + ".weight_packed", DType::I32,
           {t.shape[0], (t.shape[1] * scheme.weights.num_bits() + 31) / 32}, 0,
           OutputTensor::Kind::PackedWeight, t.name, d.module});
    } else if (fp4) {  // nvfp4- / mxfp4-pack-quantized: two E2M1 codes per byte
      add({d.module + ".weight_packed", DType::U8, {t.shape[0], t.shape[1] / 2}, 0,
           OutputTensor::Kind::PackedWeight, t.name, d.module});
    } else {
      add({d.module + ".weight", scheme.weights.is_float() ? DType::F8_E4M3 : DType::I8, t.shape, 0,
           OutputTensor::Kind::QuantWeight, t.name, d.module});
    }
    const DType wsdt = scheme.weights.scale_format == ScaleFormat::Nvfp4 ? DType::F8_E4M3
                       : scheme.weights.scale_format == ScaleFormat::E8M0 ? DType::U8 : sdt;
    add({d.module + ".weight_scale", wsdt, sshape, 0, OutputTensor::Kind::WeightScale, t.name, d.module});
    if (scheme.weights.scale_format == ScaleFormat::Nvfp4)
      add({d.module + ".weight_global_scale", DType::F32, {1}, 0, OutputTensor::Kind::GlobalScale, t.name,
           d.module});
    if (packed)
      add({d.module + ".weight_shape", DType::I64, {2}, 0, OutputTensor::Kind::WeightShape, t.name, d.module});
    if (input_global)
      add({d.module + ".input_global_scale", DType::F32, {1}, 0, OutputTensor::Kind::InputScale, t.name, d.module});
    if (static_input)
      add({d.module + ".input_scale", sdt, legacy ? std::vector<int64_t>{} : std::vector<int64_t>{1}, 0,
           OutputTensor::Kind::InputScale, t.name, d.module});
    // KV-cache scales live on the attention module; emit them after its v_proj.
    if (last_component(d.module) == "v_proj") {
      const std::string attn = parent_of(d.module);
      if (attn_seen.insert(attn).second) {
        plan.attention_modules.push_back(attn);
        const auto q = dtype_of.find(attn + ".q_proj.weight");
        const DType kv_dt = legacy ? DType::F32 : q != dtype_of.end() ? q->second : t.dtype;
        if (opts.kv_cache_fp8)
          for (const char* kv : {"k_scale", "v_scale"})
            add({attn + "." + kv, kv_dt, legacy ? std::vector<int64_t>{} : std::vector<int64_t>{1}, 0,
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
