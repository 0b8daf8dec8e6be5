// `qtool verify QUANT_DIR [--reference ORIG_DIR]`: is a quantized checkpoint right, and how much
// did it lose (verify/verify.h does the work; this file parses options and prints the report).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "verify/verify.h"
#include "verify/verify_cuda.h"
#include "formats/input_file.h"
#include "libquant/error.h"
#include "libquant/parallel.h"
#include "tools/commands.h"
#include "tools/exit_codes.h"

namespace qt {
namespace {

using nlohmann::json;

struct Opts {
  std::string quant, reference, text_file, token_ids, force_kernel;
  std::vector<std::string> disabled;
  bool list = false, json_out = false, no_bench = false, no_model = false;
  std::optional<double> min_sqnr, max_gemm_err, max_kl, min_top1;
  int64_t max_tokens = 512, seq_len = 128, gemm_tokens = 64;
  uint64_t seed = 0;
  double bench_seconds = 0.2;
  int threads = 0;
  // --device cuda (verify/verify_cuda.h)
  std::string device = "cpu";
  bool bench = false, no_peak = false;
  std::vector<int64_t> bench_m;
  std::vector<std::string> bench_shapes;
  int bench_repeats = 25;
};

std::string read_file_text(const std::string& path) { return read_input_file(path); }

// --token-ids: `qtool tokenize` output ({"ids": [...]}), a flat array of ids (cut into samples of
// --seq-len), or an array of samples (arrays of ids).
std::vector<std::vector<int32_t>> read_token_ids(const std::string& path, int64_t max_tokens, int64_t seq_len) {
  json j;
  try {
    j = json::parse(read_file_text(path));
  } catch (const json::parse_error& e) {
    throw InputError(InputError::Kind::BadFile, path, "", std::string("invalid JSON: ") + e.what());
  }
  if (j.is_object() && j.contains("ids")) j = j["ids"];
  auto bad = [&](const std::string& why) {
    return InputError(InputError::Kind::BadFile, path, "", why,
                      "{\"ids\": [...]}, an array of token ids, or an array of arrays of token ids");
  };
  auto ids_of = [&](const json& a) {
    std::vector<int32_t> v;
    for (const auto& x : a) {
      if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > INT32_MAX) throw bad("not a token id: " + x.dump());
      v.push_back(x.get<int32_t>());
    }
    return v;
  };
  if (!j.is_array() || j.empty()) throw bad("no token ids");
  if (j[0].is_array()) {
    std::vector<std::vector<int32_t>> out;
    int64_t total = 0;
    for (const auto& s : j) {
      if (!s.is_array()) throw bad("mixed arrays and ids");
      for (auto& c : verify::chunk_ids(ids_of(s), max_tokens - total, seq_len)) {
        total += static_cast<int64_t>(c.size());
        out.push_back(std::move(c));
      }
      if (total >= max_tokens) break;
    }
    return out;
  }
  return verify::chunk_ids(ids_of(j), max_tokens, seq_len);
}

std::string g(double v, const char* f = "%.4g") {
  if (std::isnan(v)) return "-";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

// One descriptor group: its layers (the first four) and every kernel's verdict.
void print_kernel_group(const verify::KernelGroup& gr, int name_width) {
  std::printf("\n  %s\n", gr.descriptor.c_str());
  std::printf("    layers (%zu): ", gr.modules.size());
  for (size_t i = 0; i < gr.modules.size() && i < 4; ++i) std::printf("%s%s", i ? ", " : "", gr.modules[i].c_str());
  if (gr.modules.size() > 4) std::printf(", ... (%zu more)", gr.modules.size() - 4);
  std::printf("\n");
  for (const auto& [name, why] : gr.candidates)
    std::printf("    %-*s %s\n", name_width, name.c_str(), why.empty() ? "CHOSEN" : ("not chosen: " + why).c_str());
  if (!gr.error.empty()) std::printf("    error: %s\n", gr.error.c_str());
}

// The last lines of a report: PASS, or FAIL with the first 20 failures and any hints.
void print_result(bool pass, double seconds, const std::vector<std::string>& failures,
                  const std::vector<std::string>& hints) {
  if (pass) {
    std::printf("result      PASS (%.1f s)\n", seconds);
    return;
  }
  std::printf("result      FAIL: %zu check(s) failed\n", failures.size());
  for (size_t i = 0; i < failures.size() && i < 20; ++i) std::printf("  - %s\n", failures[i].c_str());
  if (failures.size() > 20) std::printf("  ... (%zu more; --json lists all)\n", failures.size() - 20);
  for (const auto& h : hints) std::printf("hint        %s\n", h.c_str());
}

void print_kernels(const verify::VerifyReport& r) {
  std::printf("kernels (highest priority first; CPU path %s):\n", r.cpu_isa.c_str());
  for (const auto& k : r.registry) std::printf("  %-13s priority %3d  %s\n", k.name.c_str(), k.priority, k.summary.c_str());
  std::printf("\n%zu quantized layers in %zu descriptor group(s):\n", [&] {
    size_t n = 0;
    for (const auto& gr : r.kernels) n += gr.modules.size();
    return n;
  }(), r.kernels.size());
  for (const auto& gr : r.kernels) print_kernel_group(gr, 13);
  if (!r.findings.empty()) {
    std::printf("\nfindings:\n");
    for (const auto& f : r.findings) std::printf("  %-7s %s: %s\n", f.severity.c_str(), f.where.c_str(), f.message.c_str());
  }
}

void print_layer_table(const std::vector<const verify::LayerReport*>& rows, bool has_ref) {
  if (has_ref)
    std::printf("    %-44s %8s %9s %9s %9s %9s %9s  %s\n", "module", "SQNR dB", "cosine", "max abs", "max rel", "GEMM err",
                "act err", "kernel");
  else
    std::printf("    %-44s %9s  %s\n", "module", "GEMM err", "kernel");
  for (const auto* L : rows) {
    const char* fail = L->pass ? "" : "  FAIL";
    const char* kernel = L->kernel.empty() ? "-" : L->kernel.c_str();
    if (!has_ref) {
      std::printf("    %-44s %9s  %s%s\n", L->module.c_str(), g(L->gemm_err, "%.3g").c_str(), kernel, fail);
      continue;
    }
    const bool w = L->weight.has_value();
    std::printf("    %-44s %8s %9s %9s %9s %9s %9s  %s%s\n", L->module.c_str(), w ? g(L->weight->sqnr_db, "%.2f").c_str() : "-",
                w ? g(L->weight->cosine, "%.6f").c_str() : "-", w ? g(L->weight->max_abs, "%.3g").c_str() : "-",
                w ? g(L->weight->max_rel, "%.3g").c_str() : "-", g(L->gemm_err, "%.3g").c_str(), g(L->act_err, "%.3g").c_str(),
                kernel, fail);
  }
}

void print_report(const verify::VerifyReport& r) {
  const bool has_ref = !r.reference_dir.empty();
  std::printf("verify      %s (%s%s%s)\n", r.quant_dir.c_str(), r.quant_method.c_str(), r.format.empty() ? "" : ", ",
              r.format.c_str());
  std::printf("reference   %s\n", has_ref ? r.reference_dir.c_str() : "none (structure and activation-quantization error only; pass --reference ORIG_DIR for weight and model-level loss)");
  for (const auto& gr : r.groups) std::printf("scheme      %s\n", gr.c_str());
  if (!r.moe_served.empty()) std::printf("experts     %s\n", r.moe_served.c_str());
  if (!r.smoothed_layers.empty())
    std::printf("smoothing   %zu smoothed layers (SmoothQuant) vs the reference: the Linears they feed are checked on "
                "x/s against x W_ref^T\n", r.smoothed_layers.size());

  size_t errors = 0, warnings = 0;
  for (const auto& f : r.findings) (f.severity == "error" ? errors : warnings)++;
  std::printf("structure   %s\n", r.findings.empty() ? "ok (config, scales, shapes, codes)"
                                                      : (std::to_string(errors) + " error(s), " + std::to_string(warnings) + " warning(s)").c_str());
  for (const auto& f : r.findings) std::printf("  %-7s %s: %s\n", f.severity.c_str(), f.where.c_str(), f.message.c_str());

  std::map<std::string, size_t> chosen;
  for (const auto& L : r.layers) chosen[L.kernel.empty() ? "none" : L.kernel]++;
  std::string ks;
  for (const auto& [k, n] : chosen) ks += (ks.empty() ? "" : ", ") + k + " x" + std::to_string(n);
  std::printf("kernels     %zu layers in %zu descriptor group(s): %s (--list-kernels for the reasons)\n", r.layers.size(),
              r.kernels.size(), ks.c_str());

  size_t failed = 0, text = 0;
  size_t agree_total = 0, agree_ok = 0, exact_required = 0, exact_ok = 0;
  double worst_ratio = 0;
  for (const auto& L : r.layers) {
    failed += !L.pass;
    text += L.activations == "text";
    for (const auto& a : L.agreement) {
      agree_total++, agree_ok += a.ok;
      if (a.required_exact) exact_required++, exact_ok += a.bit_exact;
      else worst_ratio = std::max(worst_ratio, a.max_bound_ratio);
    }
  }
  const int64_t gt = r.layers.empty() ? 0 : r.layers[0].gemm_tokens;
  std::printf("layers      %zu checked, %zu failed; GEMM check on %lld tokens of %s\n", r.layers.size(), failed,
              static_cast<long long>(gt),
              text == r.layers.size() ? "model activations (held-out text)"
              : text == 0             ? "synthetic activations (N(0,1), outlier channels x20)"
                                      : "model activations (synthetic where a layer was not reached)");
  std::vector<const verify::LayerReport*> rows;
  for (const auto& L : r.layers) rows.push_back(&L);
  const size_t show = std::min<size_t>(rows.size(), 5);
  if (has_ref) {
    std::sort(rows.begin(), rows.end(), [](auto* a, auto* b) {
      const double x = a->weight ? a->weight->sqnr_db : INFINITY, y = b->weight ? b->weight->sqnr_db : INFINITY;
      return x < y;
    });
    std::printf("  worst %zu by weight SQNR:\n", show);
    print_layer_table({rows.begin(), rows.begin() + static_cast<std::ptrdiff_t>(show)}, true);
  }
  std::sort(rows.begin(), rows.end(), [](auto* a, auto* b) {
    const double x = std::isnan(a->gemm_err) ? INFINITY : a->gemm_err, y = std::isnan(b->gemm_err) ? INFINITY : b->gemm_err;
    return x > y;
  });
  std::printf("  worst %zu by GEMM error (relative L2 vs float64%s):\n", show, has_ref ? " with the reference weights" : " with the dequantized weights");
  print_layer_table({rows.begin(), rows.begin() + static_cast<std::ptrdiff_t>(show)}, has_ref);
  std::string detail;
  if (exact_required) detail = std::to_string(exact_ok) + "/" + std::to_string(exact_required) + " INT8 bit-exact";
  if (agree_total > exact_required)
    detail += (detail.empty() ? "" : "; ") + std::to_string(agree_total - exact_required) +
              " f32-accumulating within the error bound, worst at " + g(worst_ratio, "%.3g") + " x the bound";
  std::printf("  kernel agreement with cpu_ref: %zu/%zu ok (%s)\n", agree_ok, agree_total, detail.c_str());

  const auto& m = r.model;
  if (!m.ran) {
    std::printf("model       not run: %s\n", m.skipped.c_str());
  } else {
    std::printf("model       %lld tokens (%lld samples) of %s, against the %s (%.1f s)\n",
                static_cast<long long>(m.metrics.tokens), static_cast<long long>(m.metrics.samples), m.text_source.c_str(),
                m.against.c_str(), m.seconds);
    if (m.compared) {
      std::printf("            perplexity %s -> %s (%+.2f%%); KL mean %s, p99 %s, max %s nats; top-1 agreement %.2f%%%s\n",
                  g(m.metrics.ppl_ref, "%.3f").c_str(), g(m.metrics.ppl_quant, "%.3f").c_str(),
                  100.0 * (m.metrics.ppl_quant / m.metrics.ppl_ref - 1.0), g(m.metrics.kl_mean, "%.3g").c_str(),
                  g(m.metrics.kl_p99, "%.3g").c_str(), g(m.metrics.kl_max, "%.3g").c_str(), 100.0 * m.metrics.top1,
                  m.gated ? "" : " (not gated without --reference)");
    } else {
      std::printf("            perplexity %s (weight-only scheme and no reference: nothing to compare against)\n",
                  g(m.metrics.ppl_quant, "%.3f").c_str());
    }
    for (const auto& n : m.notes) std::printf("            note: %s\n", n.c_str());
  }

  if (!r.bench.empty()) {
    std::printf("throughput  GFLOP/s best / median, %d thread(s); Eigen f32 = Eigen GEMM on the dequantized f32 weights (as built)\n",
                r.bench_threads);
    std::printf("    %6s %6s %4s  %-13s %17s %17s  %s\n", "N", "K", "M", "kernel", "kernel", "Eigen f32", "layers");
    for (const auto& b : r.bench) {
      std::string mods = std::to_string(b.modules.size()) + " (" + (b.modules.empty() ? "" : b.modules[0]) + (b.modules.size() > 1 ? ", ...)" : ")");
      std::printf("    %6lld %6lld %4lld  %-13s %8s / %-6s %8s / %-6s  %s\n", static_cast<long long>(b.N),
                  static_cast<long long>(b.K), static_cast<long long>(b.M), b.kernel.c_str(),
                  g(b.kernel_gflops_best, "%.1f").c_str(), g(b.kernel_gflops_median, "%.1f").c_str(),
                  g(b.eigen_gflops_best, "%.1f").c_str(), g(b.eigen_gflops_median, "%.1f").c_str(), mods.c_str());
    }
  }

  std::map<std::string, std::string> gates;
  for (const auto& L : r.layers)
    gates[L.gates.basis] = (has_ref ? "weight SQNR >= " + g(L.gates.min_sqnr_db) + " dB, " : std::string()) +
                           "GEMM err <= " + g(L.gates.max_gemm_err);
  for (const auto& [basis, text] : gates) std::printf("gates       %s (%s)\n", text.c_str(), basis.c_str());
  if (m.gated)
    std::printf("gates       mean KL <= %s, top-1 >= %s (%s)\n", g(m.gates.max_kl).c_str(), g(m.gates.min_top1).c_str(), m.gates.basis.c_str());
  print_result(r.pass, r.seconds, r.failures, r.hints);
}

// ---- --device cuda ----------------------------------------------------------------------

void print_cuda_kernels(const verify::CudaVerifyReport& r) {
  std::printf("device      %s\n", r.device.describe().c_str());
  std::printf("GPU kernels (highest priority first):\n");
  for (const auto& k : r.registry) std::printf("  %-23s priority %3d  %s\n", k.name.c_str(), k.priority, k.summary.c_str());
  std::printf("\n%zu descriptor group(s):\n", r.kernels.size());
  for (const auto& gr : r.kernels) print_kernel_group(gr, 23);
}

void print_cuda_report(const verify::CudaVerifyReport& r) {
  std::printf("verify      %s (%s) on the GPU\n", r.quant_dir.c_str(), r.quant_method.c_str());
  std::printf("device      %s\n", r.device.describe().c_str());
  for (const auto& gr : r.kernels)
    std::printf("kernels     %zu layer(s) %s -> %s\n", gr.modules.size(), gr.descriptor.c_str(),
                gr.chosen.empty() ? ("none: " + gr.error).c_str() : gr.chosen.c_str());
  for (const auto& n : r.notes) std::printf("note        %s\n", n.c_str());
  // Accuracy: one line per (kernel, mode) with the worst layer.
  struct Agg {
    size_t n = 0, ok = 0, exact = 0;
    double rel = 0, ratio = 0, maxabs = 0;
    std::string worst;
  };
  std::map<std::pair<std::string, std::string>, Agg> agg;
  for (const auto& a : r.accuracy) {
    Agg& x = agg[{a.kernel, a.mode}];
    if (a.unsupported) {
      std::printf("note        %s (%s) on %s: not supported by cuBLASLt here: %s\n", a.kernel.c_str(), a.mode.c_str(),
                  a.module.c_str(), a.error.c_str());
      continue;
    }
    x.n++, x.ok += a.ok, x.exact += a.bit_exact;
    const double rel = std::isnan(a.rel_l2) ? INFINITY : a.rel_l2;
    if (rel >= x.rel) x.rel = rel, x.worst = a.module;
    x.ratio = std::max(x.ratio, std::isnan(a.max_bound_ratio) ? INFINITY : a.max_bound_ratio);
    x.maxabs = std::max(x.maxabs, std::isnan(a.max_abs_diff) ? INFINITY : a.max_abs_diff);
  }
  const int64_t rows = r.accuracy.empty() ? 0 : r.accuracy[0].M;
  std::printf("accuracy    GPU vs cpu_ref on the same quantized inputs (%lld synthetic token(s) per layer)\n",
              static_cast<long long>(rows));
  std::printf("    %-23s %-20s %7s %10s %10s %10s %10s  %s\n", "kernel", "mode", "ok", "bit-exact", "max|diff|", "rel L2",
              "x bound", "worst layer");
  for (const auto& [key, x] : agg)
    std::printf("    %-23s %-20s %3zu/%-3zu %4zu/%-5zu %10s %10s %10s  %s\n", key.first.c_str(), key.second.c_str(), x.ok, x.n,
                x.exact, x.n, g(x.maxabs, "%.3g").c_str(), g(x.rel, "%.3g").c_str(),
                key.second.rfind("int32", 0) == 0 ? "exact" : g(x.ratio, "%.3g").c_str(), x.worst.c_str());
  if (!r.bench.empty()) {
    std::printf("throughput  median of repeats, CUDA events, operands rotated past L2; TFLOP/s = 2MNK/t; x BF16 = vs cuda_bf16 at the same shape\n");
    std::printf("    %6s %6s %5s  %-23s %-13s %10s %9s %7s  %s\n", "N", "K", "M", "kernel", "variant", "us", "TFLOP/s", "x BF16",
                "notes");
    for (const auto& b : r.bench) {
      std::string note = b.peak ? "peak" : "";
      if (!b.deployed.empty() && std::find(b.deployed.begin(), b.deployed.end(), b.kernel) != b.deployed.end())
        note += std::string(note.empty() ? "" : ", ") + "deployed";
      if (!b.error.empty()) {
        std::printf("    %6lld %6lld %5lld  %-23s %-13s %10s %9s %7s  n/a: %s\n", static_cast<long long>(b.N),
                    static_cast<long long>(b.K), static_cast<long long>(b.M), b.kernel.c_str(), b.variant.c_str(), "-", "-", "-",
                    b.error.c_str());
        continue;
      }
      std::printf("    %6lld %6lld %5lld  %-23s %-13s %10s %9s %7s  %s\n", static_cast<long long>(b.N), static_cast<long long>(b.K),
                  static_cast<long long>(b.M), b.kernel.c_str(), b.variant.c_str(), g(b.us, "%.2f").c_str(),
                  g(b.tflops, "%.1f").c_str(), b.speedup_bf16 > 0 ? g(b.speedup_bf16, "%.2f").c_str() : "-", note.c_str());
    }
    for (const auto& t : r.targets)
      std::printf("target      %s: %s%s\n", t.description.c_str(),
                  !t.measured ? "not measured" : ((t.met ? "met, " : "NOT met, ") + g(t.value, "%.3f") + " (threshold " +
                                                  g(t.threshold, "%.2f") + ")").c_str(),
                  t.detail.empty() ? "" : ("; " + t.detail).c_str());
  }
  print_result(r.pass, r.seconds, r.failures, {});
}

int run_verify_cuda(const Opts& o) {
  verify::CudaVerifyOptions co;
  co.quant_dir = o.quant;
  co.list_only = o.list;
  co.check_tokens = o.gemm_tokens;
  co.seed = o.seed;
  co.bench = o.bench;
  if (!o.bench_m.empty()) co.bench_m = o.bench_m;
  for (int64_t m : co.bench_m)
    if (m < 1) throw InputError(InputError::Kind::Usage, "", "", "--bench-m values must be at least 1");
  co.peak = !o.no_peak;
  for (const auto& s : o.bench_shapes) co.extra_shapes.push_back(verify::parse_shape(s));
  if (o.bench_repeats < 1) throw InputError(InputError::Kind::Usage, "", "", "--bench-repeats must be at least 1");
  co.bench_config.repeats = o.bench_repeats;
  co.select.force = o.force_kernel;
  co.select.disabled = o.disabled;
  co.on_progress = [](const std::string& s) { spdlog::info("{}", s); };
  const verify::CudaVerifyReport r = verify::verify_cuda(co);
  if (o.json_out) std::printf("%s\n", verify::cuda_report_to_json(r).dump(2).c_str());
  else if (o.list) print_cuda_kernels(r);
  else print_cuda_report(r);
  return o.list || r.pass ? kExitOk : kExitCheckFailed;
}

int run_verify(const Opts& o) {
  set_default_threads(o.threads);
  if (o.max_tokens < 2) throw InputError(InputError::Kind::Usage, "", "", "--max-tokens must be at least 2");
  if (o.seq_len < 2) throw InputError(InputError::Kind::Usage, "", "", "--seq-len must be at least 2");
  if (o.gemm_tokens < 1) throw InputError(InputError::Kind::Usage, "", "", "--gemm-tokens must be at least 1");
  if (o.device == "cuda") return run_verify_cuda(o);
  verify::VerifyOptions vo;
  vo.quant_dir = o.quant;
  vo.reference_dir = o.reference;
  vo.model_eval = !o.no_model;
  vo.max_tokens = o.max_tokens;
  vo.seq_len = o.seq_len;
  vo.gemm_tokens = o.gemm_tokens;
  vo.seed = o.seed;
  vo.bench = !o.no_bench;
  vo.bench_seconds = o.bench_seconds;
  vo.gates = {o.min_sqnr, o.max_gemm_err, o.max_kl, o.min_top1};
  vo.select.force = o.force_kernel;
  vo.select.disabled = o.disabled;
  vo.num_threads = o.threads;
  vo.on_progress = [](const std::string& s) { spdlog::info("{}", s); };
  if (!o.token_ids.empty()) {
    vo.samples = read_token_ids(o.token_ids, o.max_tokens, o.seq_len);
    vo.text_source = o.token_ids;
  } else if (!o.text_file.empty()) {
    vo.text = read_file_text(o.text_file);
    if (vo.text.empty()) throw InputError(InputError::Kind::BadFile, o.text_file, "", "the text file is empty");
    vo.text_source = o.text_file;
  }
  if (o.list) {
    const verify::VerifyReport r = verify::list_kernels(vo);
    if (o.json_out) {
      json j = verify::verify_report_to_json(r);
      std::printf("%s\n", json{{"registry", j["registry"]}, {"cpu_isa", j["cpu_isa"]}, {"kernels", j["kernels"]}, {"findings", j["findings"]}}.dump(2).c_str());
    } else {
      print_kernels(r);
    }
    return kExitOk;
  }
  const verify::VerifyReport r = verify::verify_checkpoint(vo);
  if (o.json_out) std::printf("%s\n", verify::verify_report_to_json(r).dump(2).c_str());
  else print_report(r);
  return r.pass ? kExitOk : kExitCheckFailed;
}

}  // namespace

void register_verify(CLI::App& app, RunFn& run) {
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("verify", "Check a quantized checkpoint before deploying: structure, kernels, per-layer and model-level error, throughput");
  sub->add_option("QUANT_DIR", o->quant, "Quantized model folder")->required();
  sub->add_option("-r,--reference", o->reference, "Original (unquantized) model folder: enables weight SQNR, GEMM error against the original weights, KL/top-1 gates");
  sub->add_flag("--list-kernels", o->list, "Only list the kernels and why each was or was not chosen for each layer group");
  sub->add_flag("--json", o->json_out, "Machine-readable report on stdout");
  sub->add_option("--min-sqnr", o->min_sqnr, "Gate: minimum weight SQNR per layer in dB (default per scheme)");
  sub->add_option("--max-gemm-err", o->max_gemm_err, "Gate: maximum relative GEMM error per layer (default per scheme)");
  sub->add_option("--max-kl", o->max_kl, "Gate: maximum mean KL divergence per token, nats (default per scheme)");
  sub->add_option("--min-top1", o->min_top1, "Gate: minimum top-1 agreement, 0..1 (default per scheme)");
  sub->add_option("--text-file", o->text_file, "Held-out text for the model-level check (default: built-in English paragraphs)");
  sub->add_option("--token-ids", o->token_ids, "Token ids instead of text: JSON {\"ids\": [...]} (qtool tokenize output), [ids] or [[ids], ...]");
  sub->add_option("--max-tokens", o->max_tokens, "Tokens evaluated at the model level")->capture_default_str();
  sub->add_option("--seq-len", o->seq_len, "Tokens per sequence at the model level")->capture_default_str();
  sub->add_option("--gemm-tokens", o->gemm_tokens, "Activation rows per layer in the GEMM check")->capture_default_str();
  sub->add_option("--seed", o->seed, "Seed of the synthetic activations")->capture_default_str();
  sub->add_flag("--no-model", o->no_model, "Skip the model-level check (GEMM checks then use synthetic activations)");
  sub->add_flag("--no-bench", o->no_bench, "Skip the throughput measurement");
  sub->add_option("--bench-seconds", o->bench_seconds, "Timed seconds per throughput cell")->capture_default_str();
  sub->add_option("--force-kernel", o->force_kernel, "Select only this kernel (like QTOOL_FORCE_KERNEL)");
  sub->add_option("--disable-kernel", o->disabled, "Never select this kernel (repeatable)");
  sub->add_option("-j,--threads", o->threads, "Threads (0 = all cores)")->capture_default_str();
  sub->add_option("--device", o->device, "Where the GEMMs run: cpu (the full verification) or cuda (GPU kernels vs the CPU reference, and --bench throughput)")
      ->capture_default_str()->check(CLI::IsMember({"cpu", "cuda"}));
  sub->add_flag("--bench", o->bench, "With --device cuda: measure GPU throughput (every layer shape at --bench-m tokens, and 8192^3)");
  sub->add_option("--bench-m", o->bench_m, "With --device cuda --bench: token counts M (default 1 16 128 1024 4096)");
  sub->add_option("--bench-shape", o->bench_shapes, "With --device cuda --bench: an extra weight shape NxK (repeatable), e.g. 28672x4096");
  sub->add_flag("--no-peak", o->no_peak, "With --device cuda --bench: skip the 8192^3 problem");
  sub->add_option("--bench-repeats", o->bench_repeats, "With --device cuda --bench: timed repeats per cell (median reported)")->capture_default_str();
  sub->callback([&run, o] { run = [o] { return run_verify(*o); }; });
}

}  // namespace qt
