#include "verify/inspect.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <cstring>
#include <set>

#include "formats/checkpoint.h"
#include "formats/safetensors.h"
#include "libquant/error.h"
#include "formats/model_folder.h"
#include "formats/quantized_linear.h"
#include "calib/smoothing.h"
#include "formats/manifest.h"
#include "calib/quant_plan.h"
#include "libquant/float_formats.h"
#include "libquant/quantize.h"
#include "libquant/pack.h"
#include "libquant/microscale.h"

namespace qt::verify {
using nlohmann::json;

namespace {
std::string strip(const std::string& s, const std::string& suf) { return s.substr(0, s.size() - suf.size()); }

// Expected scale shape for args and a weight [out, in]; empty optional if the strategy stores none.
std::vector<std::vector<int64_t>> expected_scale_shapes(const QuantArgs& a, int64_t out, int64_t in) {
  switch (a.strategy) {
    case Strategy::Tensor: return {{1}, {}};
    case Strategy::Channel: return {{out, 1}};
    case Strategy::Group: return a.group_size > 0 ? std::vector<std::vector<int64_t>>{{out, (in + a.group_size - 1) / a.group_size}}
                                                  : std::vector<std::vector<int64_t>>{};
    case Strategy::Block:
      if (a.block_rows <= 0 || a.block_cols <= 0) return {};
      return {{(out + a.block_rows - 1) / a.block_rows, (in + a.block_cols - 1) / a.block_cols}};
    case Strategy::Token: return {};
  }
  return {};
}
}  // namespace

InspectReport inspect_checkpoint(const Checkpoint& ckpt, const json& config, const std::string& path) {
  InspectReport r;
  r.path = path;
  r.config = config;
  if (config.is_object()) {
    if (config.contains("architectures") && config["architectures"].is_array() && !config["architectures"].empty())
      r.architecture = config["architectures"][0].get<std::string>();
    r.model_type = config.value("model_type", std::string());
    r.torch_dtype = config.contains("torch_dtype") && config["torch_dtype"].is_string()
                        ? config["torch_dtype"].get<std::string>()
                        : config.value("dtype", std::string());
    std::error_code ec;
    r.quant = parse_quant_info(config, std::filesystem::is_directory(path, ec)
                                           ? (std::filesystem::path(path) / "config.json").string()
                                           : path);
  }
  for (const auto& s : ckpt.shard_paths()) r.shards.push_back(s);
  {
    std::error_code ec;
    const std::filesystem::path side = std::filesystem::path(path) / calib::kSmoothingFactorsFile;
    if (std::filesystem::is_directory(path, ec) && std::filesystem::exists(side, ec)) {
      try {
        const json sj = read_json_file(side.string());
        char buf[96];
        std::snprintf(buf, sizeof buf, "alpha %g, %zu smoothed layers (%s)", sj.at("alpha").get<double>(),
                      sj.at("mappings").size(), calib::kSmoothingFactorsFile);
        r.smoothing = buf;
      } catch (const std::exception& e) {
        r.findings.push_back({"warning", calib::kSmoothingFactorsFile, std::string("unreadable smoothing factors: ") + e.what()});
      }
    }
  }

  {
    std::error_code ec;
    const std::filesystem::path man = std::filesystem::path(path) / kManifestFile;
    if (std::filesystem::is_directory(path, ec) && std::filesystem::exists(man, ec)) {
      try {
        const json mj = read_json_file(man.string());
        if (mj.value("algorithm", std::string("rtn")) == "gptq" && mj.contains("gptq")) {
          const json& g = mj.at("gptq");
          char buf[192];
          std::snprintf(buf, sizeof buf, "GPTQ (dampening_frac %g, block_size %lld, actorder %s; %lld samples, %lld tokens)",
                        g.at("dampening_frac").get<double>(), static_cast<long long>(g.at("block_size").get<int64_t>()),
                        g.at("actorder").get<std::string>().c_str(), static_cast<long long>(g.at("samples").get<int64_t>()),
                        static_cast<long long>(g.at("tokens").get<int64_t>()));
          r.algorithm = buf;
        }
      } catch (const std::exception& e) {
        r.findings.push_back({"warning", kManifestFile, std::string("unreadable manifest: ") + e.what()});
      }
    }
  }

  std::map<std::string, const TensorView*> by_name;
  for (const auto& t : ckpt.tensors()) {
    by_name[t.name] = &t;
    const std::string dn(dtype_name(t.dtype));
    r.bytes_per_dtype[dn] += t.bytes.size();
    r.tensors_per_dtype[dn] += 1;
    r.total_bytes += t.bytes.size();
    r.num_tensors++;
    uint64_t n = t.numel();
    if (t.name.ends_with(".weight_packed") && t.dtype == DType::I32) {
      // Logical elements: 32 / bits per word; bits from the config when known, else 4.
      int bits = 4;
      auto g = group_for_module(r.quant, strip(t.name, ".weight_packed"));
      if (g && (*g)->weights) bits = (*g)->weights->num_bits();
      n = n * static_cast<uint64_t>(32 / bits);
    } else if (t.name.ends_with(".weight_packed") && t.dtype == DType::U8) {
      n *= 2;  // two FP4 codes per byte
    }
    if (t.name.ends_with("_scale") || t.name.ends_with(".weight_shape") || t.name.ends_with("_zero_point") ||
        t.name.ends_with(".weight_g_idx"))
      continue;  // quantization metadata, not parameters
    r.parameters += n;
  }

  const bool quantized_ckpt = !r.quant.method.empty();
  for (const auto& p : r.quant.problems) r.findings.push_back({"error", "config", p});
  if (quantized_ckpt && r.quant.method != "compressed-tensors" && r.quant.method != "fp8")
    r.findings.push_back({"warning", "config", "quant_method '" + r.quant.method + "' is not one qtool reads in detail"});

  // Modules: X.weight (2-D) or X.weight_packed.
  std::set<std::string> modules;
  for (const auto& [name, t] : by_name) {
    if (name.ends_with(".weight_packed")) modules.insert(strip(name, ".weight_packed"));
    else if (calib::is_linear_weight_name(name, t->shape)) modules.insert(strip(name, ".weight"));
  }
  std::map<std::string, bool> q_of;
  for (const auto& m : modules) {
    ModuleCoverage c;
    c.module = m;
    const TensorView* w = by_name.count(m + ".weight") ? by_name[m + ".weight"] : nullptr;
    const TensorView* wp = by_name.count(m + ".weight_packed") ? by_name[m + ".weight_packed"] : nullptr;
    const TensorView* ws = by_name.count(m + ".weight_scale") ? by_name[m + ".weight_scale"]
                           : by_name.count(m + ".weight_scale_inv") ? by_name[m + ".weight_scale_inv"] : nullptr;
    const TensorView* is = by_name.count(m + ".input_scale") ? by_name[m + ".input_scale"] : nullptr;
    const bool low_dtype = w && (w->dtype == DType::F8_E4M3 || w->dtype == DType::I8 || w->dtype == DType::F8_E5M2);
    c.quantized = wp != nullptr || low_dtype || ws != nullptr;
    if (wp && wp->dtype == DType::U8) {
      c.weight_dtype = "U8 (FP4 packed)";
      c.shape = wp->shape;
      if (c.shape.size() == 2) c.shape[1] *= 2;
    } else if (wp) {
      c.weight_dtype = "I32 (packed)";
      c.shape = wp->shape;
      if (by_name.count(m + ".weight_shape"))
        if (auto ws = weight_shape_value(by_name[m + ".weight_shape"])) c.shape = *ws;
    } else if (w) {
      c.weight_dtype = std::string(dtype_name(w->dtype));
      c.shape = w->shape;
    }
    auto g = group_for_module(r.quant, m);
    if (g) {
      c.group = (*g)->name;
      c.scheme_text = "weights " + (*g)->weights_text + "; input " + (*g)->input_text;
    }
    // Findings.
    if (c.quantized && !ws)
      r.findings.push_back({"error", m, "quantized weight without weight_scale"});
    if (c.quantized && (m == "lm_head" || m.ends_with(".lm_head")))
      r.findings.push_back({"error", m, "lm_head is quantized; vLLM cannot load a quantized lm_head"});
    if (quantized_ckpt && c.quantized && !g)
      r.findings.push_back({"error", m, "stored quantized but not covered by any config group (or listed in ignore): vLLM will fail to load its scales"});
    if (quantized_ckpt && !c.quantized && g)
      r.findings.push_back({"error", m, "stored in " + c.weight_dtype + " but a config group targets it: vLLM would cast it to the quantized dtype without scaling; add it to ignore"});
    if (g && (*g)->input) {
      const bool dyn = (*g)->input->dynamic;
      if (dyn && is) r.findings.push_back({"warning", m + ".input_scale", "input_scale present under a dynamic activation scheme (ignored by vLLM)"});
      if (!dyn && c.quantized && !is) r.findings.push_back({"error", m, "static activation scheme but no input_scale"});
      if ((*g)->input->scale_format == ScaleFormat::Nvfp4 && c.quantized && !by_name.count(m + ".input_global_scale"))
        r.findings.push_back({"error", m, "NVFP4 activations but no input_global_scale (vLLM needs the calibrated "
                                          "global input scale)"});
    }
    if (g && (*g)->weights && ws && c.shape.size() == 2) {
      auto exp = expected_scale_shapes(*(*g)->weights, c.shape[0], c.shape[1]);
      bool ok = exp.empty();
      for (const auto& e : exp) ok = ok || e == ws->shape;
      if (!ok)
        r.findings.push_back({"error", ws->name, "scale shape " + shape_string(ws->shape) + " does not match " +
                                                      (*g)->weights_text + " (expected " + shape_string(exp[0]) + ")"});
    }
    q_of[m] = c.quantized;
    (c.quantized ? r.quantized_modules : r.high_precision_modules)++;
    r.modules.push_back(c);
  }
  for (const auto& [m, q] : q_of)
    for (const auto& sib : calib::fused_siblings(m))
      if (q_of.count(sib) && q_of[sib] != q && m < sib)
        r.findings.push_back({"error", m, "fused with " + sib + " but stored differently (vLLM refuses mixed schemes in one fused layer)"});
  // NVFP4: vLLM runs q/k/v (gate/up) as one matrix with one weight_global_scale; members written
  // with different global scales dequantize wrongly (llm-compressor fuses them; NUMERICS.md §10.3).
  // Reads the 4-byte scalars only.
  // The same holds for NVFP4's input_global_scale (vLLM takes the set's largest).
  auto global_scale_of = [&](const std::string& m, const char* which) -> std::optional<float> {
    auto it = by_name.find(m + "." + which);
    if (it == by_name.end() || it->second->dtype != DType::F32 || it->second->numel() != 1) return std::nullopt;
    float v;
    std::memcpy(&v, it->second->bytes.data(), 4);
    return v;
  };
  std::set<std::string> seen_sets;
  for (const auto& [m, q] : q_of) {
    const auto set = calib::fused_siblings(m);
    if (set.empty() || !seen_sets.insert(set.front()).second) continue;
    for (const char* which : {"weight_global_scale", "input_global_scale"}) {
      std::string listing;
      std::optional<float> first;
      bool differ = false;
      for (const auto& member : set) {
        const auto g = global_scale_of(member, which);
        if (!g) continue;
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.9g", *g);
        listing += (listing.empty() ? "" : ", ") + member.substr(member.rfind('.') + 1) + " " + buf;
        if (first && *first != *g) differ = true;
        if (!first) first = g;
      }
      if (!differ) continue;
      if (which[0] == 'w')
        r.findings.push_back({"error", set.front() + ".weight_global_scale",
                              "weight_global_scale differs across the fused set (" + listing +
                                  "): vLLM keeps one global scale per fused layer, so the others dequantize "
                                  "wrongly (quantize the set with one shared global scale)"});
      else
        r.findings.push_back({"error", set.front() + ".input_global_scale",
                              "input_global_scale differs across the fused set (" + listing +
                                  "): vLLM quantizes the shared input once with the largest, which clips the "
                                  "activations the smaller ones were calibrated for"});
    }
  }

  // Mixture of experts: the spread of the experts' static input scales per block (one scalar
  // per expert projection is read).
  std::map<std::string, MoeBlockScales> blocks;
  std::map<std::string, std::set<std::string>> block_experts;
  for (const auto& m : modules) {
    const auto pos = m.rfind(".experts.");
    if (pos == std::string::npos || !by_name.count(m + ".input_scale")) continue;
    const TensorView* t = by_name[m + ".input_scale"];
    float v = NAN;
    if (t->numel() != 1 || !decode_to_f32(t->dtype, t->bytes.data(), 1, &v)) continue;
    const std::string block = m.substr(0, pos);
    const std::string rest = m.substr(pos + 9);  // "N.proj"
    const std::string proj = rest.substr(rest.find('.') + 1);
    const bool w2 = proj == "down_proj" || proj == "w2";
    MoeBlockScales& b = blocks[block];
    b.block = block;
    block_experts[block].insert(rest.substr(0, rest.find('.')));
    double& lo = w2 ? b.w2_min : b.w13_min;
    double& hi = w2 ? b.w2_max : b.w13_max;
    lo = (lo == 0 || v < lo) ? v : lo;
    hi = std::max(hi, static_cast<double>(v));
  }
  json moe_manifest;
  {
    std::error_code ec;
    const std::filesystem::path mf = std::filesystem::path(path) / "qtool_manifest.json";
    if (!blocks.empty() && std::filesystem::is_directory(path, ec) && std::filesystem::exists(mf, ec)) {
      try {
        const json mj = read_json_file(mf.string());
        if (mj.contains("moe")) moe_manifest = mj.at("moe").at("layers");
      } catch (const std::exception&) {
      }
    }
  }
  for (auto& [name, b] : blocks) {
    b.experts = static_cast<int64_t>(block_experts[name].size());
    if (moe_manifest.is_object() && moe_manifest.contains(name)) {
      const json& mb = moe_manifest.at(name);
      b.routed_tokens = mb.at("routed_tokens").get<std::vector<int64_t>>();
      if (mb.contains("fallback_experts")) b.fallback_experts = mb.at("fallback_experts").get<std::vector<int64_t>>();
    }
    if (b.w13_max > b.w13_min || b.w2_max > b.w2_min)
      r.findings.push_back({"warning", name, "the experts' input scales differ; vLLM's fused-MoE kernels use the maximum over the experts (w13 " +
                                                 std::to_string(b.w13_max) + ", w2 " + std::to_string(b.w2_max) + ")"});
    r.moe.push_back(b);
  }
  return r;
}


bool tensor_stats(const TensorView& t, TensorStats& s, size_t first_n) {
  const uint64_t n = t.numel();
  std::vector<float> v(static_cast<size_t>(n));
  if (n && !decode_to_f32(t.dtype, t.bytes.data(), n, v.data())) return false;
  s = {};
  s.numel = n;
  double sum = 0, sum2 = 0;
  bool first = true;
  for (float x : v) {
    if (std::isnan(x)) { s.nan++; continue; }
    if (std::isinf(x)) { s.inf++; continue; }
    if (x == 0.0f) s.zero++;
    if (x < 0.0f) s.negative++;
    if (first) { s.min = s.max = x; first = false; }
    s.min = std::min<double>(s.min, x);
    s.max = std::max<double>(s.max, x);
    s.absmax = std::max<double>(s.absmax, std::fabs(x));
    sum += x;
    sum2 += double(x) * x;
  }
  const uint64_t finite = n - s.nan - s.inf;
  if (finite) {
    s.mean = sum / double(finite);
    s.std = std::sqrt(std::max(0.0, sum2 / double(finite) - s.mean * s.mean));
  }
  for (size_t i = 0; i < std::min<uint64_t>(first_n, n); ++i) s.first.push_back(v[i]);
  return true;
}

json stats_to_json(const TensorStats& s) {
  json j;
  j["numel"] = s.numel; j["min"] = s.min; j["max"] = s.max; j["mean"] = s.mean; j["std"] = s.std;
  j["absmax"] = s.absmax; j["nan"] = s.nan; j["inf"] = s.inf; j["zero"] = s.zero;
  j["first"] = s.first;
  return j;
}

json tensor_detail(const Checkpoint& ck, const InspectReport& r, const std::string& name, const std::string& path) {
  const TensorView* t = ck.find(name);
  if (!t) throw InputError(InputError::Kind::Missing, path, name, "no such tensor in the checkpoint");
  TensorStats s;
  json j;
  j["name"] = t->name;
  j["dtype"] = std::string(dtype_name(t->dtype));
  j["shape"] = t->shape;
  j["bytes"] = t->bytes.size();
  j["file"] = t->file;
  if (tensor_stats(*t, s, 8)) j["stats"] = stats_to_json(s);
  else j["stats"] = nullptr;

  // A quantized weight: also its first codes and dequantized values (scale * code).
  std::string module;
  if (t->name.ends_with(".weight_packed")) module = strip(t->name, ".weight_packed");
  else if (t->name.ends_with(".weight") && (t->dtype == DType::F8_E4M3 || t->dtype == DType::I8))
    module = strip(t->name, ".weight");
  if (module.empty()) return j;
  const TensorView* sc = ck.find(module + ".weight_scale");
  auto g = group_for_module(r.quant, module);
  if (!sc || !g || !(*g)->weights) return j;
  const QuantArgs a = *(*g)->weights;
  if (a.microscale()) {
    // NVFP4 / MX: FP4 codes two per byte (or FP8 codes), FP8 or E8M0 group scales.
    const bool fp4 = a.type == QuantType::Float4E2M1;
    std::vector<int64_t> shape = t->shape;
    if (fp4 && shape.size() == 2) shape[1] *= 2;
    float gs = 1.0f;
    if (const TensorView* gt = ck.find(module + ".weight_global_scale"); gt && gt->dtype == DType::F32 && gt->numel() == 1)
      std::memcpy(&gs, gt->bytes.data(), 4);
    if (shape.size() == 2 && shape[1] % a.group_size == 0 &&
        sc->numel() == static_cast<uint64_t>(shape[0] * (shape[1] / a.group_size))) {
      std::vector<uint8_t> codes = fp4 ? unpack_e2m1(t->bytes.data(), shape[0], shape[1])
                                       : std::vector<uint8_t>(t->bytes.begin(), t->bytes.end());
      std::vector<float> deq(codes.size());
      dequantize_microscale(codes.data(), shape, sc->bytes.data(), a, gs, deq.data());
      deq.resize(std::min<size_t>(deq.size(), 8));
      j["dequantized_first"] = deq;
      std::vector<float> cv;
      for (size_t i = 0; i < std::min<size_t>(codes.size(), 8); ++i)
        cv.push_back(fp4 ? f32_from_e2m1(codes[i]) : f32_from_e4m3fn(codes[i]));
      j["codes_first"] = cv;
      j["logical_shape"] = shape;
      j["scheme"] = (*g)->weights_text;
    }
  } else if (dtype_is_float(sc->dtype)) {
    std::vector<int64_t> shape = t->shape;
    std::vector<uint8_t> codes;
    DType cd = t->dtype;
    if (t->dtype == DType::I32) {  // packed
      if (auto ws = weight_shape_value(ck.find(module + ".weight_shape"))) shape = *ws;
      auto u = unpack_int_codes(reinterpret_cast<const int32_t*>(t->bytes.data()), shape[0], shape[1], a.num_bits());
      codes.assign(reinterpret_cast<const uint8_t*>(u.data()), reinterpret_cast<const uint8_t*>(u.data()) + u.size());
      cd = DType::I8;
    } else {
      codes.assign(t->bytes.begin(), t->bytes.end());
    }
    if (shape.size() == 2) {
      std::vector<float> deq(static_cast<size_t>(shape[0] * shape[1]));
      dequantize(codes.data(), cd, shape, sc->bytes.data(), sc->dtype, scale_grid(shape, a), deq.data());
      deq.resize(std::min<size_t>(deq.size(), 8));
      j["dequantized_first"] = deq;
      j["scheme"] = (*g)->weights_text;
    }
  }
  return j;
}

json scale_summary(const Checkpoint& ck, InspectReport& r) {
  json scales = json::array();
  for (const auto& t : ck.tensors()) {
    const std::string& n = t.name;
    if (n.size() <= 6 || n.find("_scale") == std::string::npos) continue;
    TensorStats s;
    json e{{"name", n}, {"dtype", std::string(dtype_name(t.dtype))}, {"shape", t.shape}};
    // MX scales are U8 biased exponents (E8M0): summarise the powers of two they stand for.
    std::vector<float> e8m0;
    TensorView decoded = t;
    if (t.dtype == DType::U8 && n.ends_with(".weight_scale")) {
      for (uint8_t b : t.bytes) e8m0.push_back(f32_from_e8m0(b));
      decoded.dtype = DType::F32;
      decoded.bytes = {reinterpret_cast<const uint8_t*>(e8m0.data()), e8m0.size() * 4};
      e["encoding"] = "E8M0 (2^(byte-127))";
    }
    if (tensor_stats(decoded, s, t.numel() <= 16 ? 16 : 0)) {
      e["min"] = s.min; e["max"] = s.max; e["zero"] = s.zero; e["nan"] = s.nan; e["inf"] = s.inf;
      if (t.numel() <= 16) e["values"] = s.first;
      if (s.nan || s.inf || s.zero)
        r.findings.push_back({"error", n, "scale has " + std::to_string(s.zero) + " zero, " + std::to_string(s.nan) +
                                              " NaN, " + std::to_string(s.inf) + " Inf values"});
      if (s.negative)
        r.findings.push_back({"error", n, "scale has " + std::to_string(s.negative) +
                                              " negative values; a quantization scale is positive (a negative one "
                                              "flips the sign of what it scales)"});
    }
    scales.push_back(e);
  }
  return scales;
}

json report_to_json(const InspectReport& r) {
  json j;
  j["path"] = r.path;
  j["architecture"] = r.architecture;
  j["model_type"] = r.model_type;
  j["torch_dtype"] = r.torch_dtype;
  j["parameters"] = r.parameters;
  j["total_bytes"] = r.total_bytes;
  j["tensors"] = r.num_tensors;
  j["bytes_per_dtype"] = r.bytes_per_dtype;
  j["tensors_per_dtype"] = r.tensors_per_dtype;
  j["shards"] = r.shards;
  json q;
  q["method"] = r.quant.method.empty() ? json(nullptr) : json(r.quant.method);
  q["format"] = r.quant.format;
  q["status"] = r.quant.status;
  q["ignore"] = r.quant.ignore;
  q["kv_cache"] = r.quant.kv_cache ? json(r.quant.kv_cache_text) : json(nullptr);
  q["smoothing"] = r.smoothing.empty() ? json(nullptr) : json(r.smoothing);
  if (!r.algorithm.empty()) q["algorithm"] = r.algorithm;
  json groups = json::array();
  for (const auto& g : r.quant.groups)
    groups.push_back({{"name", g.name}, {"targets", g.targets}, {"weights", g.weights_text},
                      {"input_activations", g.input_text}, {"format", g.format}});
  q["groups"] = groups;
  j["quantization"] = q;
  json mods = json::array();
  for (const auto& m : r.modules)
    mods.push_back({{"module", m.module}, {"weight_dtype", m.weight_dtype}, {"shape", m.shape},
                    {"quantized", m.quantized}, {"group", m.group}});
  j["modules"] = mods;
  json moe = json::array();
  for (const auto& b : r.moe)
    moe.push_back({{"block", b.block}, {"experts", b.experts},
                   {"input_scale_w13", {{"min", b.w13_min}, {"max", b.w13_max}}},
                   {"input_scale_w2", {{"min", b.w2_min}, {"max", b.w2_max}}},
                   {"routed_tokens", b.routed_tokens.empty() ? json(nullptr) : json(b.routed_tokens)},
                   {"fallback_experts", b.fallback_experts}});
  if (!r.moe.empty()) j["moe"] = moe;  // dense checkpoints: no key (their JSON is unchanged)
  j["quantized_modules"] = r.quantized_modules;
  j["high_precision_modules"] = r.high_precision_modules;
  json f = json::array();
  for (const auto& x : r.findings) f.push_back({{"severity", x.severity}, {"where", x.where}, {"message", x.message}});
  j["findings"] = f;
  return j;
}

std::vector<TensorLocation> tensor_locations(const Checkpoint& ckpt) {
  std::vector<TensorLocation> rows;
  rows.reserve(ckpt.tensors().size());
  for (const auto& t : ckpt.tensors()) {
    const auto shard = ckpt.shard_of(t.name);
    QT_ASSERT(shard.has_value());
    const SafetensorsFile& f = ckpt.shard(*shard);
    rows.push_back({t.name, std::string(dtype_name(t.dtype)), t.shape,
                    std::filesystem::path(t.file).filename().string(), f.file_offset(t), t.bytes.size()});
  }
  return rows;
}

nlohmann::json tensor_locations_to_json(const std::vector<TensorLocation>& rows) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& r : rows)
    a.push_back({{"name", r.name}, {"dtype", r.dtype}, {"shape", r.shape}, {"shard", r.shard},
                 {"offset", r.offset}, {"bytes", r.bytes}});
  return a;
}

}  // namespace qt::verify
