#include "formats/ct_config.h"

#include <algorithm>

#include "libquant/error.h"

namespace qt {

using nlohmann::json;

json quant_args_json(const QuantArgs& a, const std::string& observer) {
  json j;
  j["num_bits"] = a.num_bits();
  j["type"] = a.is_float() ? "float" : "int";
  j["symmetric"] = true;
  j["group_size"] = a.strategy == Strategy::Group ? json(a.group_size) : json(nullptr);
  const char* strat = "tensor";
  switch (a.strategy) {
    case Strategy::Tensor: strat = "tensor"; break;
    case Strategy::Channel: strat = "channel"; break;
    case Strategy::Group: strat = a.scale_format == ScaleFormat::Nvfp4 ? "tensor_group" : "group"; break;
    case Strategy::Block: strat = "block"; break;
    case Strategy::Token: strat = "token"; break;
  }
  j["strategy"] = strat;
  j["block_structure"] = a.strategy == Strategy::Block
                             ? json::array({a.block_rows, a.block_cols}) : json(nullptr);
  // NVFP4 activations are "local" dynamic: group scales at run time, a static global scale
  // from calibration (so the observer that calibrated it is named too, as compressed-tensors does).
  const bool local = a.dynamic && a.scale_format == ScaleFormat::Nvfp4;
  j["dynamic"] = local ? json("local") : json(a.dynamic);
  j["actorder"] = nullptr;
  j["observer"] = a.dynamic && !local ? json(nullptr) : json(observer);
  j["observer_kwargs"] = json::object();
  // The FP4 / MX presets set scale_dtype (compressed-tensors >= 0.13 reads it, and needs
  // "torch.uint8" to recognise MX scales); every older scheme keeps the old key set.
  if (a.scale_format == ScaleFormat::Nvfp4) j["scale_dtype"] = "torch.float8_e4m3fn";
  else if (a.scale_format == ScaleFormat::E8M0) j["scale_dtype"] = "torch.uint8";
  return j;
}

json make_ct_group(const QuantArgs& weights, const std::optional<QuantArgs>& input,
                   const std::string& input_observer, CtFormat format) {
  json group;
  group["targets"] = json::array({"Linear"});
  group["weights"] = quant_args_json(weights, "minmax");
  group["input_activations"] = input ? quant_args_json(*input, input_observer) : json(nullptr);
  group["output_activations"] = nullptr;
  group["format"] = std::string(ct_format_name(format));
  return group;
}

json make_ct_quant_config(const Scheme& scheme, const CtWriteOptions& opts) {
  const json group = make_ct_group(scheme.weights, scheme.input, opts.activation_observer, scheme.format);

  json q;
  q["quant_method"] = "compressed-tensors";
  q["format"] = std::string(ct_format_name(scheme.format));
  q["quantization_status"] = "compressed";
  q["global_compression_ratio"] = nullptr;
  q["config_groups"] = json{{"group_0", group}};
  q["ignore"] = opts.ignore;
  if (opts.kv_cache_fp8) {
    QuantArgs kv{QuantType::Float8E4M3, Strategy::Tensor, 0, 0, 0, false};
    q["kv_cache_scheme"] = quant_args_json(kv, opts.activation_observer);
  } else {
    q["kv_cache_scheme"] = nullptr;
  }
  q["sparsity_config"] = json::object();
  q["transform_config"] = json::object();
  return q;
}

json make_legacy_fp8_config(const Scheme& scheme, const CtWriteOptions& opts) {
  QT_ASSERT(scheme.legacy_fp8);
  json q;
  q["quant_method"] = "fp8";
  q["activation_scheme"] = (scheme.input && !scheme.input->dynamic) ? "static" : "dynamic";
  q["ignored_layers"] = opts.ignore;
  if (opts.kv_cache_fp8) q["kv_cache_scheme"] = "static";
  return q;
}

namespace {

std::optional<QuantArgs> parse_args(const json& j, std::string& text, bool& symmetric,
                                    std::vector<std::string>& problems, const std::string& where) {
  if (!j.is_object()) { text = "none"; return std::nullopt; }
  const int bits = j.value("num_bits", 8);
  std::string type = j.value("type", std::string("int"));
  for (auto& c : type) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  symmetric = j.value("symmetric", true);
  const json gs = j.contains("group_size") ? j["group_size"] : json(nullptr);
  std::string strategy = j.contains("strategy") && j["strategy"].is_string()
                             ? j["strategy"].get<std::string>() : std::string();
  if (strategy.empty()) {  // compressed-tensors inference rule
    if (gs.is_number_integer() && gs.get<int64_t>() > 0) strategy = "group";
    else if (gs.is_number_integer() && gs.get<int64_t>() == -1) strategy = "channel";
    else strategy = "tensor";
  }
  bool dynamic = false;
  if (j.contains("dynamic")) {
    if (j["dynamic"].is_boolean()) dynamic = j["dynamic"].get<bool>();
    else if (j["dynamic"].is_string()) dynamic = true;  // "local" (NVFP4)
  }
  QuantArgs a;
  a.dynamic = dynamic;
  const std::string scale_dtype = j.contains("scale_dtype") && j["scale_dtype"].is_string()
                                      ? j["scale_dtype"].get<std::string>() : std::string();
  if (strategy == "tensor_group") a.scale_format = ScaleFormat::Nvfp4;
  else if (scale_dtype == "torch.uint8" && type == "float") a.scale_format = ScaleFormat::E8M0;
  if (type == "float" && bits == 8) a.type = QuantType::Float8E4M3;
  else if (type == "float" && bits == 4) a.type = QuantType::Float4E2M1;
  else if (type == "int" && bits == 8) a.type = QuantType::Int8;
  else if (type == "int" && bits == 4) a.type = QuantType::Int4;
  else {
    text = type + std::to_string(bits) + " " + strategy + (dynamic ? " dynamic" : "") +
           " (not a qtool scheme)";
    return std::nullopt;
  }
  if (strategy == "tensor") a.strategy = Strategy::Tensor;
  else if (strategy == "channel") a.strategy = Strategy::Channel;
  else if (strategy == "group" || strategy == "tensor_group") {
    a.strategy = Strategy::Group;
    a.group_size = gs.is_number_integer() ? gs.get<int64_t>() : 0;
    if (a.group_size <= 0) problems.push_back(where + ": group strategy without a positive group_size");
  } else if (strategy == "block") {
    a.strategy = Strategy::Block;
    const json& bsj = j.contains("block_structure") ? j["block_structure"] : json(nullptr);
    if (bsj.is_array() && bsj.size() == 2 && bsj[0].is_number_integer() && bsj[1].is_number_integer()) {
      a.block_rows = bsj[0].get<int64_t>();
      a.block_cols = bsj[1].get<int64_t>();
    } else if (bsj.is_string()) {  // compressed-tensors <= 0.10 wrote "128x128"
      const std::string s = bsj.get<std::string>();
      const auto x = s.find('x');
      try {
        a.block_rows = std::stoll(s.substr(0, x));
        a.block_cols = std::stoll(s.substr(x + 1));
      } catch (...) { problems.push_back(where + ": unreadable block_structure '" + s + "'"); }
    } else {
      problems.push_back(where + ": block strategy without block_structure");
    }
  } else if (strategy == "token") {
    a.strategy = Strategy::Token;
    if (!dynamic) problems.push_back(where + ": strategy token requires dynamic: true");
  } else {
    text = type + std::to_string(bits) + " " + strategy + " (not a qtool scheme)";
    return std::nullopt;
  }
  text = describe_args(a) + (symmetric ? "" : " asymmetric");
  return a;
}

}  // namespace

const std::vector<std::string> kCtFormats = {
    "dense",           "sparse-bitmask",  "sparse-24-bitmask",    "int-quantized",        "float-quantized",
    "naive-quantized", "pack-quantized",  "marlin-24",            "mixed-precision",      "nvfp4-pack-quantized",
    "mxfp4-pack-quantized", "mxfp6-pack-quantized", "mxfp8-quantized"};

namespace {
void check_format(const std::string& format, const std::string& where, QuantInfo& info) {
  if (format.empty() || std::find(kCtFormats.begin(), kCtFormats.end(), format) != kCtFormats.end()) return;
  std::string list;
  for (const auto& f : kCtFormats) list += (list.empty() ? "" : ", ") + f;
  info.problems.push_back(where + " '" + format + "' is not a compressed-tensors format (" + list + ")");
  if (info.unknown_format.empty()) info.unknown_format = format;
}

// Adds a problem for each `re:` pattern in `list` that PCRE2 cannot compile.
void check_patterns(const std::vector<std::string>& list, const std::string& setting,
                    std::vector<std::string>& problems) {
  for (const auto& p : list)
    if (p.rfind("re:", 0) == 0)
      if (std::string why = regex_problem(p.substr(3)); !why.empty())
        problems.push_back(setting + " '" + p + "' is not a valid regular expression: " + why);
}
}  // namespace

QuantInfo parse_quant_info(const json& config, const std::string& source) {
  QuantInfo info;
  info.source = source;
  const json* qc = nullptr;
  if (config.contains("quantization_config") && config["quantization_config"].is_object())
    qc = &config["quantization_config"];
  else if (config.contains("compression_config") && config["compression_config"].is_object() &&
           config["compression_config"].contains("quantization_config"))
    qc = &config["compression_config"]["quantization_config"];
  if (!qc) return info;

  info.method = qc->value("quant_method", std::string("(missing quant_method)"));
  if (info.method == "fp8") {
    info.legacy_activation_scheme = qc->value("activation_scheme", std::string());
    if (info.legacy_activation_scheme != "static" && info.legacy_activation_scheme != "dynamic")
      info.problems.push_back("quant_method fp8 needs activation_scheme \"static\" or \"dynamic\" (vLLM refuses to load without it)");
    QuantGroup g;
    g.name = "fp8";
    g.targets = {"Linear"};
    QuantArgs w{QuantType::Float8E4M3, Strategy::Tensor, 0, 0, 0, false};
    if (qc->contains("weight_block_size") && (*qc)["weight_block_size"].is_array() &&
        (*qc)["weight_block_size"].size() == 2) {
      w.strategy = Strategy::Block;
      w.block_rows = (*qc)["weight_block_size"][0].get<int64_t>();
      w.block_cols = (*qc)["weight_block_size"][1].get<int64_t>();
    }
    g.weights = w;
    g.weights_text = describe_args(w);
    QuantArgs in{QuantType::Float8E4M3,
                 info.legacy_activation_scheme == "static" ? Strategy::Tensor : Strategy::Token, 0,
                 0, 0, info.legacy_activation_scheme != "static"};
    g.input = in;
    g.input_text = describe_args(in);
    g.format = "fp8";
    info.groups.push_back(g);
    const json& ig = qc->contains("ignored_layers") ? (*qc)["ignored_layers"]
                     : qc->contains("modules_to_not_convert") ? (*qc)["modules_to_not_convert"]
                                                              : json::array();
    if (ig.is_array())
      for (const auto& s : ig) if (s.is_string()) info.ignore.push_back(s.get<std::string>());
    check_patterns(info.ignore, "ignored_layers", info.problems);
    if (qc->contains("kv_cache_scheme") && !(*qc)["kv_cache_scheme"].is_null()) {
      info.kv_cache = QuantArgs{QuantType::Float8E4M3, Strategy::Tensor, 0, 0, 0, false};
      info.kv_cache_text = "FP8 E4M3 per-tensor (legacy \"static\")";
    }
    return info;
  }
  if (info.method != "compressed-tensors") return info;

  info.format = qc->contains("format") && (*qc)["format"].is_string()
                    ? (*qc)["format"].get<std::string>() : std::string();
  if (info.format.empty())
    info.problems.push_back("no global `format`: vLLM finds no W8A8 scheme without it");
  check_format(info.format, "format", info);
  info.status = qc->value("quantization_status", std::string());
  if (info.status != "compressed")
    info.problems.push_back("quantization_status is '" + info.status +
                            "', not 'compressed': transformers expects fake-quantized dense weights");
  if (qc->contains("ignore") && (*qc)["ignore"].is_array())
    for (const auto& s : (*qc)["ignore"]) if (s.is_string()) info.ignore.push_back(s.get<std::string>());
  check_patterns(info.ignore, "ignore", info.problems);
  if (qc->contains("config_groups") && (*qc)["config_groups"].is_object()) {
    for (const auto& [name, gj] : (*qc)["config_groups"].items()) {
      QuantGroup g;
      g.name = name;
      if (gj.is_array()) {  // preset shorthand: {"W8A8": ["Linear"]}
        info.problems.push_back("group '" + name + "' uses preset shorthand; vLLM does not expand presets");
        continue;
      }
      if (gj.contains("targets") && gj["targets"].is_array())
        for (const auto& t : gj["targets"]) if (t.is_string()) g.targets.push_back(t.get<std::string>());
      check_patterns(g.targets, "config group '" + name + "' targets", info.problems);
      const std::string where = "group '" + name + "'";
      g.weights = parse_args(gj.value("weights", json(nullptr)), g.weights_text,
                             g.weights_symmetric, info.problems, where + " weights");
      if (!gj.contains("weights") || gj["weights"].is_null())
        info.problems.push_back(where + " has null weights; vLLM requires weights args");
      g.input = parse_args(gj.value("input_activations", json(nullptr)), g.input_text,
                           g.input_symmetric, info.problems, where + " input_activations");
      g.format = gj.contains("format") && gj["format"].is_string() ? gj["format"].get<std::string>()
                                                                   : info.format;
      if (g.format != info.format) check_format(g.format, "config group '" + name + "' format", info);
      info.groups.push_back(g);
    }
  }
  if (qc->contains("kv_cache_scheme") && qc->at("kv_cache_scheme").is_object()) {
    bool sym = true;
    info.kv_cache = parse_args((*qc)["kv_cache_scheme"], info.kv_cache_text, sym, info.problems,
                               "kv_cache_scheme");
  }
  return info;
}

bool target_matches(const std::string& target, const std::string& module, bool is_linear,
                    const PatternSource& src) {
  if (target.rfind("re:", 0) == 0) return regex_match_start(target.substr(3), module, src);
  if (target == module) return true;
  // Class targets: vLLM's case-insensitive substring rule ("Linear" covers QKVParallelLinear...).
  if (is_linear && target == "Linear") return true;
  return false;
}

std::optional<const QuantGroup*> group_for_module(const QuantInfo& q, const std::string& module) {
  const std::string file = q.source.empty() ? std::string("config.json") : q.source;
  const PatternSource ignore_src{InputError::Kind::BadFile, file,
                                 q.method == "fp8" ? "quantization_config.ignored_layers"
                                                   : "quantization_config.ignore"};
  for (const auto& ig : q.ignore)
    if (target_matches(ig, module, true, ignore_src)) return std::nullopt;
  for (const auto& g : q.groups) {
    const PatternSource src{InputError::Kind::BadFile, file, "config group '" + g.name + "' targets"};
    for (const auto& t : g.targets)
      if (target_matches(t, module, true, src)) return &g;
  }
  return std::nullopt;
}

}  // namespace qt
