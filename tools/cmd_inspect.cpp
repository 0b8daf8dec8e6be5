// `qtool inspect PATH`: what is in a checkpoint (headers only unless --scales / --tensor).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "formats/checkpoint.h"
#include "formats/quantized_linear.h"
#include "verify/inspect.h"
#include "formats/model_folder.h"
#include "libquant/error.h"
#include "libquant/float_formats.h"
#include "libquant/microscale.h"
#include "libquant/pack.h"
#include "libquant/quantize.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace qt {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct Opts {
  std::string path, tensor;
  bool scales = false, json_out = false, all_modules = false, tensors = false;
};

json load_config_near(const std::string& path) {
  fs::path p(path);
  fs::path cfg = fs::is_directory(p) ? p / "config.json" : p.parent_path() / "config.json";
  if (!fs::exists(cfg)) return json(nullptr);
  return read_json_file(cfg.string());
}

const char* fmt_num(double v, char* buf, size_t n) { std::snprintf(buf, n, "%.6g", v); return buf; }

int print_tensor(const Checkpoint& ck, const verify::InspectReport& r, const Opts& o) {
  const TensorView* t = ck.find(o.tensor);
  if (!t) throw InputError(InputError::Kind::Missing, o.path, o.tensor, "no such tensor in the checkpoint");
  verify::TensorStats s;
  json j;
  j["name"] = t->name;
  j["dtype"] = std::string(dtype_name(t->dtype));
  j["shape"] = t->shape;
  j["bytes"] = t->bytes.size();
  j["file"] = t->file;
  if (verify::tensor_stats(*t, s, 8)) j["stats"] = verify::stats_to_json(s);
  else j["stats"] = nullptr;

  // A quantized weight: also show dequantized values (scale * code).
  auto ends = [](const std::string& a, const std::string& b) { return a.size() >= b.size() && a.compare(a.size() - b.size(), b.size(), b) == 0; };
  std::string module;
  if (ends(t->name, ".weight_packed")) module = t->name.substr(0, t->name.size() - 14);
  else if (ends(t->name, ".weight") && (t->dtype == DType::F8_E4M3 || t->dtype == DType::I8)) module = t->name.substr(0, t->name.size() - 7);
  if (!module.empty()) {
    const TensorView* sc = ck.find(module + ".weight_scale");
    auto g = group_for_module(r.quant, module);
    if (sc && g && (*g)->weights && (*g)->weights->microscale()) {
      // NVFP4 / MX: FP4 codes two per byte (or FP8 codes), FP8 or E8M0 group scales.
      const QuantArgs a = *(*g)->weights;
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
    } else if (sc && g && (*g)->weights && dtype_is_float(sc->dtype)) {
      const QuantArgs a = *(*g)->weights;
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
  }
  if (o.json_out) { std::printf("%s\n", j.dump(2).c_str()); return 0; }
  std::printf("tensor   %s\ndtype    %s\nshape    %s\nbytes    %s\nfile     %s\n", t->name.c_str(),
              std::string(dtype_name(t->dtype)).c_str(), shape_string(t->shape).c_str(),
              human_bytes(t->bytes.size()).c_str(), t->file.c_str());
  if (j["stats"].is_object()) {
    char a[32], b[32], c[32], d[32], e[32];
    std::printf("min %s  max %s  mean %s  std %s  absmax %s\nnan %llu  inf %llu  zero %llu\n",
                fmt_num(s.min, a, 32), fmt_num(s.max, b, 32), fmt_num(s.mean, c, 32), fmt_num(s.std, d, 32),
                fmt_num(s.absmax, e, 32), (unsigned long long)s.nan, (unsigned long long)s.inf, (unsigned long long)s.zero);
    std::printf("first    ");
    for (float v : s.first) std::printf("%.6g ", v);
    std::printf("\n");
  }
  if (j.contains("codes_first")) {
    std::printf("codes    ");
    for (float v : j["codes_first"]) std::printf("%.6g ", v);
    std::printf("(decoded; logical shape %s)\n", shape_string(j["logical_shape"].get<std::vector<int64_t>>()).c_str());
  }
  if (j.contains("dequantized_first")) {
    std::printf("scheme   %s\ndequant  ", j["scheme"].get<std::string>().c_str());
    for (float v : j["dequantized_first"]) std::printf("%.6g ", v);
    std::printf("\n");
  }
  return 0;
}

int run_inspect(const Opts& o) {
  Checkpoint ck = Checkpoint::open(o.path);
  json cfg = load_config_near(o.path);
  verify::InspectReport r = verify::inspect_checkpoint(ck, cfg, o.path);
  if (!o.tensor.empty()) return print_tensor(ck, r, o);
  if (o.tensors) {
    const auto rows = verify::tensor_locations(ck);
    if (o.json_out) {
      std::printf("%s\n", json{{"path", o.path}, {"tensors", verify::tensor_locations_to_json(rows)}}.dump(2).c_str());
      return 0;
    }
    std::printf("%-60s %-8s %-16s %-28s %14s %12s\n", "tensor", "dtype", "shape", "shard", "offset", "bytes");
    for (const auto& t : rows)
      std::printf("%-60s %-8s %-16s %-28s %14llu %12llu\n", t.name.c_str(), t.dtype.c_str(),
                  shape_string(t.shape).c_str(), t.shard.c_str(), (unsigned long long)t.offset,
                  (unsigned long long)t.bytes);
    return 0;
  }

  json scales = json::array();
  if (o.scales) {
    for (const auto& t : ck.tensors()) {
      const std::string& n = t.name;
      bool is_scale = n.size() > 6 && (n.find("_scale") != std::string::npos);
      if (!is_scale) continue;
      verify::TensorStats s;
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
      if (verify::tensor_stats(decoded, s, t.numel() <= 16 ? 16 : 0)) {
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
  }
  if (o.json_out) {
    json j = verify::report_to_json(r);
    if (o.scales) j["scales"] = scales;
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("path           %s\n", r.path.c_str());
  if (!r.architecture.empty())
    std::printf("architecture   %s (model_type %s, torch_dtype %s)\n", r.architecture.c_str(), r.model_type.c_str(), r.torch_dtype.c_str());
  if (cfg.is_object()) {
    auto f = [&](const char* k) { return cfg.contains(k) ? cfg[k].dump() : std::string("-"); };
    std::printf("config         hidden %s, layers %s, heads %s, kv heads %s, intermediate %s, vocab %s, tied embeddings %s\n",
                f("hidden_size").c_str(), f("num_hidden_layers").c_str(), f("num_attention_heads").c_str(),
                f("num_key_value_heads").c_str(), f("intermediate_size").c_str(), f("vocab_size").c_str(),
                f("tie_word_embeddings").c_str());
  }
  std::printf("parameters     %.3f M in %zu tensors, %s, %zu shard(s)\n", r.parameters / 1e6, r.num_tensors,
              human_bytes(r.total_bytes).c_str(), r.shards.size());
  for (const auto& [dt, b] : r.bytes_per_dtype)
    std::printf("  %-12s %6llu tensors  %s\n", dt.c_str(), (unsigned long long)r.tensors_per_dtype[dt], human_bytes(b).c_str());
  if (r.quant.method.empty()) {
    std::printf("quantization   none\n");
  } else {
    std::printf("quantization   %s%s%s\n", r.quant.method.c_str(), r.quant.format.empty() ? "" : ", format ",
                r.quant.format.c_str());
    for (const auto& g : r.quant.groups) {
      std::string targets;
      for (const auto& t : g.targets) targets += (targets.empty() ? "" : ",") + t;
      std::printf("  %-12s %s: weights %s; activations %s\n", g.name.c_str(), targets.c_str(), g.weights_text.c_str(),
                  g.input_text.c_str());
    }
    std::string ig;
    for (const auto& s : r.quant.ignore) ig += (ig.empty() ? "" : ", ") + s;
    std::printf("  ignore       %s\n", ig.empty() ? "(none)" : ig.c_str());
    std::printf("  kv cache     %s\n", r.quant.kv_cache ? r.quant.kv_cache_text.c_str() : "not quantized");
    if (!r.smoothing.empty()) std::printf("  smoothing    SmoothQuant, %s\n", r.smoothing.c_str());
    if (!r.algorithm.empty()) std::printf("  rounding     %s\n", r.algorithm.c_str());
  }
  std::printf("coverage       %zu Linear modules quantized, %zu in high precision\n", r.quantized_modules, r.high_precision_modules);
  size_t shown = 0;
  for (const auto& m : r.modules) {
    if (!o.all_modules && shown >= 12) { std::printf("  ... (%zu more; --all to list every module)\n", r.modules.size() - shown); break; }
    std::printf("  %-50s %-14s %-14s %s\n", m.module.c_str(), shape_string(m.shape).c_str(), m.weight_dtype.c_str(),
                m.quantized ? ("quantized (" + m.group + ")").c_str() : "high precision");
    ++shown;
  }
  if (!r.moe.empty()) {
    std::printf("experts        %zu MoE layers; static input scales per layer (vLLM uses the maximum over the experts)\n",
                r.moe.size());
    for (const auto& b : r.moe) {
      std::printf("  %-40s %lld experts, w13 %.6g..%.6g (%.3gx), w2 %.6g..%.6g (%.3gx)", b.block.c_str(),
                  static_cast<long long>(b.experts), b.w13_min, b.w13_max, b.w13_min > 0 ? b.w13_max / b.w13_min : 0.0,
                  b.w2_min, b.w2_max, b.w2_min > 0 ? b.w2_max / b.w2_min : 0.0);
      if (!b.routed_tokens.empty()) {
        std::vector<int64_t> s = b.routed_tokens;
        std::sort(s.begin(), s.end());
        const long long zero = std::count(s.begin(), s.end(), int64_t{0});
        const size_t n = s.size();
        const double med = n % 2 ? static_cast<double>(s[n / 2]) : (static_cast<double>(s[n / 2 - 1]) + s[n / 2]) / 2.0;
        std::printf(", routed calibration tokens min %lld / median %g / max %lld, %lld experts with none",
                    static_cast<long long>(s.front()), med, static_cast<long long>(s.back()), zero);
      }
      if (!b.fallback_experts.empty()) {
        std::string list;
        for (int64_t e : b.fallback_experts) list += (list.empty() ? "" : ",") + std::to_string(e);
        std::printf("; expert(s) %s under --moe-min-tokens took the layer maximum (--moe-fallback layer-max)", list.c_str());
      }
      std::printf("\n");
    }
  }
  if (o.scales) {
    std::printf("scales         %zu tensors\n", scales.size());
    for (const auto& e : scales) {
      std::printf("  %-56s %-5s %-12s", e["name"].get<std::string>().c_str(), e["dtype"].get<std::string>().c_str(),
                  e["shape"].dump().c_str());
      if (e.contains("values")) std::printf(" = %s", e["values"].dump().c_str());
      else if (e.contains("min")) std::printf(" min %.6g max %.6g zero %llu nan %llu inf %llu", e["min"].get<double>(),
                                              e["max"].get<double>(), (unsigned long long)e["zero"].get<uint64_t>(),
                                              (unsigned long long)e["nan"].get<uint64_t>(), (unsigned long long)e["inf"].get<uint64_t>());
      std::printf("\n");
    }
  }
  if (r.findings.empty()) std::printf("findings       none\n");
  else {
    std::printf("findings       %zu\n", r.findings.size());
    for (const auto& f : r.findings) std::printf("  %-7s %s: %s\n", f.severity.c_str(), f.where.c_str(), f.message.c_str());
  }
  return 0;
}

}  // namespace

void register_inspect(CLI::App& app, RunFn& run) {
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("inspect", "Show what is in a checkpoint: config, dtypes, quantization, coverage, scales");
  sub->add_option("PATH", o->path, "Model folder, one .safetensors file, or a model.safetensors.index.json")->required();
  sub->add_flag("--scales", o->scales, "List every scale tensor with min/max and zero/NaN/Inf counts (reads scale data)");
  sub->add_flag("--tensors", o->tensors, "List every tensor: name, dtype, shape, shard, byte offset and size (headers only)");
  sub->add_option("--tensor", o->tensor, "Statistics and first values of one tensor (dequantized too, for quantized weights)");
  sub->add_flag("--all", o->all_modules, "List every Linear module in the coverage table");
  sub->add_flag("--json", o->json_out, "Machine-readable output");
  sub->callback([&run, o] { run = [o] { return run_inspect(*o); }; });
}

}  // namespace qt
