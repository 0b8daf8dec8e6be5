// `qtool quantize MODEL -o OUT --scheme NAME`: plan, preflight, then the streaming pipeline.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>

#include "formats/model_folder.h"
#include "formats/quant_plan.h"
#include "formats/quantize_pipeline.h"
#include "libquant/error.h"
#include "libquant/schemes.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace qt {
namespace {

struct Opts {
  std::string model, out, scheme = "fp8-dynamic", format = "compressed-tensors", max_shard = "5GB";
  std::string kv_cache = "none";
  std::vector<std::string> ignore, targets;
  bool dry_run = false, json = false, allow_nonfinite = false, overwrite = false, no_hash = false;
  int threads = 0;
};

std::string scheme_help() {
  std::string s = "Quantization scheme:";
  for (const auto& sc : all_schemes()) s += std::string("\n  ") + sc.name + ": " + sc.summary;
  return s;
}

int run_quantize_cmd(const Opts& o) {
  const Scheme* scheme = find_scheme(o.scheme);
  if (!scheme)
    throw InputError(InputError::Kind::Usage, "", "", "unknown scheme '" + o.scheme + "'", scheme_names());
  if (o.threads > 0) {
#ifdef _OPENMP
    omp_set_num_threads(o.threads);
#endif
  }
  PlanOptions po;
  po.scheme = scheme;
  po.format = o.format == "legacy-fp8" ? OutputFormat::LegacyFp8 : OutputFormat::CompressedTensors;
  po.ignore = o.ignore;
  po.targets = o.targets;
  po.kv_cache_fp8 = o.kv_cache == "fp8";
  if (scheme->needs_calibration || po.kv_cache_fp8)
    throw InputError(InputError::Kind::Unsupported, "", "",
                     std::string("scheme ") + scheme->name + (po.kv_cache_fp8 ? " with --kv-cache fp8" : "") +
                         " needs calibration statistics, and the calibration engine is not in this build yet",
                     "a data-free scheme (fp8-dynamic, fp8-block, int8-dynamic, w8a16, w4a16, fp8-w8a16)");

  ModelFolder model = ModelFolder::open(o.model);
  const auto& cfg = model.config();
  if (cfg.contains("quantization_config") || cfg.contains("compression_config"))
    throw InputError(InputError::Kind::Unsupported, model.dir() + "/config.json", "",
                     "the model is already quantized (config.json has a quantization_config); quantize an unquantized BF16/F16/F32 checkpoint");

  QuantPlan plan = build_quant_plan(model.checkpoint().tensors(), po, model.dir());
  QuantizeJob job;
  job.output_dir = o.out;
  job.max_shard_bytes = parse_size(o.max_shard, "--max-shard-size");
  job.allow_nonfinite = o.allow_nonfinite;
  job.overwrite = o.overwrite;
  job.hash_inputs = !o.no_hash;
  job.command_line = command_line();
  preflight_output(model, plan, job);
  for (const auto& w : plan.warnings) spdlog::warn("warning: {}", w);

  if (o.dry_run) {
    if (o.json) {
      nlohmann::json j;
      j["scheme"] = scheme->name;
      j["input_bytes"] = plan.input_bytes;
      j["output_bytes"] = plan.output_bytes;
      j["ignore"] = plan.ignore_written;
      j["warnings"] = plan.warnings;
      nlohmann::json t = nlohmann::json::array();
      for (const auto& d : plan.decisions)
        t.push_back({{"tensor", d.name}, {"quantize", d.quantize}, {"action", d.reason}});
      j["tensors"] = t;
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      for (const auto& d : plan.decisions)
        std::printf("%-60s %s\n", d.name.c_str(), d.quantize ? ("quantize: " + d.reason).c_str() : d.reason.c_str());
      std::printf("\n%zu of %zu tensors quantized with %s; %s -> %s; ignore: %zu modules\n",
                  plan.quantized_modules.size(), plan.decisions.size(), scheme->name,
                  human_bytes(plan.input_bytes).c_str(), human_bytes(plan.output_bytes).c_str(),
                  plan.ignore_written.size());
      std::printf("dry run: nothing written\n");
    }
    return 0;
  }

  ProgressBar bar("quantize", plan.decisions.size());
  job.on_tensor = [&](const TensorProgress& p) {
    bar.clear();
    spdlog::info("[{}/{}] {} {} {} -> {}  {} -> {}", p.index, p.total, p.decision->name, p.shape,
                 p.from_dtype, p.to_dtype, human_bytes(p.in_bytes), human_bytes(p.out_bytes));
    bar.update(p.index);
  };
  const auto t0 = std::chrono::steady_clock::now();
  QuantizeSummary s = run_quantize(model, plan, job);
  bar.finish();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (o.json) {
    nlohmann::json j;
    j["output"] = o.out;
    j["scheme"] = scheme->name;
    j["tensors"] = s.tensors_total;
    j["quantized"] = s.tensors_quantized;
    j["shards"] = s.shards;
    j["input_bytes"] = s.input_bytes;
    j["output_bytes"] = s.output_bytes;
    j["zero_groups"] = s.zero_groups;
    j["seconds"] = secs;
    j["files"] = s.output_files;
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    spdlog::info("done: {} of {} tensors quantized ({}), {} -> {} in {} shard(s), {:.1f} s ({:.0f} MB/s); wrote {}",
                 s.tensors_quantized, s.tensors_total, scheme->name, human_bytes(s.input_bytes),
                 human_bytes(s.output_bytes), s.shards, secs, secs > 0 ? s.input_bytes / secs / 1e6 : 0.0, o.out);
    if (s.zero_groups)
      spdlog::info("note: {} all-zero scale groups got the dtype's epsilon as scale", s.zero_groups);
  }
  return 0;
}

}  // namespace

void register_quantize(CLI::App& app, RunFn& run) {
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("quantize", "Quantize a Hugging Face checkpoint into a vLLM-loadable one");
  sub->add_option("MODEL", o->model, "Input model folder (config.json + safetensors)")->required();
  sub->add_option("-o,--output", o->out, "Output folder (must not exist, or be empty)")->required();
  std::vector<std::string> names;
  for (const auto& s : all_schemes()) names.push_back(s.name);
  sub->add_option("-s,--scheme", o->scheme, scheme_help())->capture_default_str()->check(CLI::IsMember(names));
  sub->add_option("--format", o->format, "Output format: compressed-tensors, or legacy-fp8 (AutoFP8 layout; per-tensor FP8 schemes)")
      ->capture_default_str()->check(CLI::IsMember({"compressed-tensors", "legacy-fp8"}));
  sub->add_option("--ignore", o->ignore, "Keep these modules unquantized: exact names or re:REGEX (repeatable)");
  sub->add_option("--targets", o->targets, "Quantize only these modules: exact names or re:REGEX (default: decoder Linear layers)");
  sub->add_option("--kv-cache", o->kv_cache, "KV-cache scales: none or fp8 (needs calibration)")
      ->capture_default_str()->check(CLI::IsMember({"none", "fp8"}));
  sub->add_option("--max-shard-size", o->max_shard, "Largest output shard")->capture_default_str();
  sub->add_option("-j,--threads", o->threads, "Threads (0 = all cores)")->capture_default_str();
  sub->add_flag("--dry-run", o->dry_run, "Plan and preflight only: print what would be done, write nothing");
  sub->add_flag("--json", o->json, "Machine-readable summary on stdout");
  sub->add_flag("--allow-nonfinite", o->allow_nonfinite, "Quantize weights containing NaN/Inf instead of refusing");
  sub->add_flag("--overwrite", o->overwrite, "Replace an existing output folder (only after success)");
  sub->add_flag("--no-hash", o->no_hash, "Skip the sha256 of input shards in the manifest");
  sub->callback([&run, o] { run = [o] { return run_quantize_cmd(*o); }; });
}

}  // namespace qt
