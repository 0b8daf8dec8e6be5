// `qtool inspect PATH`: what is in a checkpoint (headers only unless --scales / --tensor).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "formats/checkpoint.h"
#include "verify/inspect.h"
#include "formats/model_folder.h"
#include "libquant/error.h"
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
  const json j = verify::tensor_detail(ck, r, o.tensor, o.path);
  if (o.json_out) { std::printf("%s\n", j.dump(2).c_str()); return 0; }
  std::printf("tensor   %s\ndtype    %s\nshape    %s\nbytes    %s\nfile     %s\n", j["name"].get<std::string>().c_str(),
              j["dtype"].get<std::string>().c_str(), shape_string(j["shape"].get<std::vector<int64_t>>()).c_str(),
              human_bytes(j["bytes"].get<uint64_t>()).c_str(), j["file"].get<std::string>().c_str());
  if (const json& s = j["stats"]; s.is_object()) {
    char a[32], b[32], c[32], d[32], e[32];
    std::printf("min %s  max %s  mean %s  std %s  absmax %s\nnan %llu  inf %llu  zero %llu\n",
                fmt_num(s["min"].get<double>(), a, 32), fmt_num(s["max"].get<double>(), b, 32),
                fmt_num(s["mean"].get<double>(), c, 32), fmt_num(s["std"].get<double>(), d, 32),
                fmt_num(s["absmax"].get<double>(), e, 32), (unsigned long long)s["nan"].get<uint64_t>(),
                (unsigned long long)s["inf"].get<uint64_t>(), (unsigned long long)s["zero"].get<uint64_t>());
    std::printf("first    ");
    for (float v : s["first"]) std::printf("%.6g ", v);
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

  const json scales = o.scales ? verify::scale_summary(ck, r) : json::array();
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
