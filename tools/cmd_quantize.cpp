// `qtool quantize MODEL -o OUT --scheme NAME`: plan, preflight, then the streaming pipeline.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <cstdio>

#include "calib/calibrate.h"
#include "calib/dataset.h"
#include "calib/tokenizer/tokenizer.h"
#include "formats/model_folder.h"
#include "formats/output_folder.h"
#include "calib/quant_plan.h"
#include "calib/quantize_pipeline.h"
#include "calib/smoothing.h"
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
  // Calibration (static schemes, --kv-cache fp8).
  std::string dataset, stats_in, stats_out, observer = "static_minmax";
  int64_t num_samples = 64, seq_len = 512;
  uint64_t seed = 0;
  std::vector<std::string> ignore, targets;
  bool dry_run = false, json = false, allow_nonfinite = false, overwrite = false, no_hash = false;
  bool smoothquant = false;
  double smoothing_strength = 0.8;  // llm-compressor W8A8 examples; its modifier default is 0.5
  std::string smoothquant_mappings = "all";
  std::string calib_memory = "4GiB";
  int threads = 0;
};

std::string scheme_help() {
  std::string s = "Quantization scheme:";
  for (const auto& sc : all_schemes()) s += std::string("\n  ") + sc.name + ": " + sc.summary;
  return s;
}

// Calibration statistics: loaded from --stats, or measured by running the model on the
// calibration text (--dataset, or the built-in set); saved with --save-stats.
// What calibration cost, for the summary (zero when statistics were loaded with --stats).
struct CalibrationCost {
  double seconds = 0;
  int64_t samples = 0, tokens = 0;
};

// Where a run keeps its calibration statistics until it has published OUT: next to OUT, like
// the partial folder. A run that dies after calibrating (killed, out of disk, a bad tensor) leaves
// them there, and the next run of the same command with the same calibration settings reuses
// them instead of calibrating again (calibration is the long part of a static-scheme run).
std::string resume_stats_path(const std::string& out) {
  // The same absolute path the partial folder is named from ("-o ." or "-o dir/" included).
  return canonical_or_abs(out) + ".qtool-stats.zst";
}

// Test hook (documented in qtool-quantize(1) ENVIRONMENT): QTOOL_FAULT_INJECT=after-calibration
// ends the process right after the statistics are saved, with no cleanup, as a kill would
// (_Exit: no destructors, no atexit handlers, no core file).
void maybe_inject_fault(const char* point) {
  const char* v = std::getenv("QTOOL_FAULT_INJECT");
  if (v && std::string(v) == point) {
    std::fprintf(stderr, "qtool: QTOOL_FAULT_INJECT=%s: exiting as if killed\n", point);
    std::fflush(stderr);
    std::_Exit(137);
  }
}

ActivationStats obtain_stats(const ModelFolder& model, const Opts& o, CalibrationCost& cost, const std::string& resume) {
  const std::string fp = calib::model_fingerprint(model);
  if (!o.stats_in.empty()) {
    calib::StatsProvenance prov;
    ActivationStats s = calib::load_stats(o.stats_in, fp, &prov);
    spdlog::info("calibration: loaded {} ({} samples x {} tokens from {}, observer {})", o.stats_in,
                 prov.num_samples, prov.seq_len, prov.data_source, prov.observer);
    return s;
  }
  const Tokenizer tok = Tokenizer::from_dir(model.dir());
  const calib::CalibrationText text =
      o.dataset.empty() ? calib::builtin_calibration_text() : calib::load_calibration_text(o.dataset);
  const auto samples = calib::make_samples(tok, text, o.num_samples, o.seq_len, o.seed);
  int64_t tokens = 0;
  for (const auto& s : samples) tokens += static_cast<int64_t>(s.size());
  std::error_code ec;
  if (std::filesystem::exists(resume, ec)) {
    // Reused only when it is exactly what this run would compute: same model, same text, same
    // samples, same observer. Anything else is recomputed (and the file replaced).
    try {
      calib::StatsProvenance prov;
      ActivationStats s = calib::load_stats(resume, fp, &prov);
      if (prov.data_sha256 == text.sha256 && prov.seq_len == o.seq_len && prov.seed == o.seed &&
          prov.observer == o.observer && prov.num_samples == static_cast<int64_t>(samples.size()) &&
          prov.tokens == tokens) {
        spdlog::info("calibration: reusing the statistics an interrupted run saved in {} ({} samples, {} tokens)",
                     resume, prov.num_samples, prov.tokens);
        if (!o.stats_out.empty()) {
          calib::save_stats(o.stats_out, s, prov);
          spdlog::info("calibration: statistics saved to {}", o.stats_out);
        }
        return s;
      }
      spdlog::warn("warning: {} (from an interrupted run) was made with other calibration settings; calibrating again",
                   resume);
    } catch (const InputError& e) {
      spdlog::warn("warning: ignoring {} from an interrupted run: {}", resume, e.problem());
    }
  }
  spdlog::info("calibration: {} samples, {} tokens from {} (observer {})", samples.size(), tokens,
               text.source, o.observer);
  calib::CalibrateOptions co;
  co.observer = o.observer;
  co.num_threads = o.threads;
  // Hidden states above --calib-memory go to a temporary file beside OUT (where the output's
  // disk space is checked anyway).
  co.hidden_spill.dir = std::filesystem::path(canonical_or_abs(o.out)).parent_path().string();
  co.hidden_spill.above_bytes = parse_size(o.calib_memory, "--calib-memory");
  ProgressBar bar("calibrate", 1);
  co.on_layer_done = [&](int64_t layer, int64_t n) {
    bar.clear();
    spdlog::info("calibration: layer {}/{} done", layer + 1, n);
    bar = ProgressBar("calibrate", static_cast<uint64_t>(n));
    bar.update(static_cast<uint64_t>(layer + 1));
  };
  calib::CalibrationRun run = calib::calibrate(model, samples, co);
  bar.finish();
  if (run.hidden_spilled)
    spdlog::info("calibration: hidden states ({}) kept in a temporary file in {} (above --calib-memory {})",
                 human_bytes(run.hidden_bytes), co.hidden_spill.dir, o.calib_memory);
  cost = {run.seconds, run.samples, run.tokens};
  spdlog::info("calibration: {:.1f} s, {:.0f} tokens/s", run.seconds, run.seconds > 0 ? run.tokens / run.seconds : 0.0);
  calib::StatsProvenance prov;
  prov.model_fingerprint = fp;
  prov.data_source = text.source;
  prov.data_sha256 = text.sha256;
  prov.observer = o.observer;
  prov.num_samples = run.samples;
  prov.seq_len = o.seq_len;
  prov.tokens = run.tokens;
  prov.seed = o.seed;
  calib::save_stats(resume, run.stats, prov);  // removed once OUT is published
  if (!o.stats_out.empty()) {
    calib::save_stats(o.stats_out, run.stats, prov);
    spdlog::info("calibration: statistics saved to {}", o.stats_out);
  }
  maybe_inject_fault("after-calibration");
  return run.stats;
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
  calib::PlanOptions po;
  po.scheme = scheme;
  po.format = o.format == "legacy-fp8" ? OutputFormat::LegacyFp8 : OutputFormat::CompressedTensors;
  po.ignore = o.ignore;
  po.targets = o.targets;
  po.kv_cache_fp8 = o.kv_cache == "fp8";
  if (o.smoothquant && scheme->input && scheme->weights.type == QuantType::Float8E4M3 &&
      scheme->weights.strategy == Strategy::Tensor)
    spdlog::warn("warning: --smoothquant with {}: one FP8 scale per weight tensor must also cover the factors' range; on "
                 "SmolLM2-135M it made fp8-static worse (mean KL 0.035 -> 0.057, bench/RESULTS.md). It is meant "
                 "for INT8; check with qtool verify --reference", scheme->name);
  if (o.smoothquant && !scheme->input)
    throw InputError(InputError::Kind::Usage, "", "",
                     std::string("--smoothquant needs a scheme that quantizes activations; ") + scheme->name +
                         " is weight-only (smoothing would only make its weights harder to quantize)");
  const bool needs_stats = scheme->needs_calibration || po.kv_cache_fp8 || !o.stats_out.empty() || o.smoothquant;

  ModelFolder model = ModelFolder::open(o.model);
  const auto& cfg = model.config();
  if (cfg.contains("quantization_config") || cfg.contains("compression_config"))
    throw InputError(InputError::Kind::Unsupported, model.dir() + "/config.json", "",
                     "the model is already quantized (config.json has a quantization_config); quantize an unquantized BF16/F16/F32 checkpoint");

  calib::QuantPlan plan = build_quant_plan(model.checkpoint().tensors(), po, model.dir());
  calib::QuantizeJob job;
  job.output_dir = o.out;
  job.max_shard_bytes = parse_size(o.max_shard, "--max-shard-size");
  job.allow_nonfinite = o.allow_nonfinite;
  job.overwrite = o.overwrite;
  job.hash_inputs = !o.no_hash;
  job.command_line = command_line();
  calib::preflight_output(model, plan, job);
  for (const auto& w : plan.warnings) spdlog::warn("warning: {}", w);

  ActivationStats stats;
  CalibrationCost calib_cost;
  calib::SmoothingPlan smoothing;
  const calib::SmoothingMappings sq_which = o.smoothquant_mappings == "norms" ? calib::SmoothingMappings::Norms : calib::SmoothingMappings::All;
  if (o.smoothquant) {
    // Before calibration: an architecture without the mappings fails in seconds, not after it.
    const auto mappings = calib::smoothing_mappings(model, sq_which);
    if (mappings.empty())
      throw InputError(InputError::Kind::Unsupported, model.dir(), "",
                       "--smoothquant: no input_layernorm / post_attention_layernorm feeding Linears found");
  }
  const std::string resume = resume_stats_path(o.out);
  // After calibration, a failure keeps the statistics (see resume_stats_path); say where.
  auto note_kept = [&] {
    if (needs_stats && o.stats_in.empty())
      spdlog::error("calibration statistics are kept in {}: the same command reuses them", resume);
  };
  if (needs_stats && !o.dry_run) {
    stats = obtain_stats(model, o, calib_cost, resume);
    job.stats = &stats;
    if (o.smoothquant) {
      try {
        smoothing = calib::plan_smoothing(model, stats, o.smoothing_strength, sq_which);
      } catch (const InputError&) {
        note_kept();
        throw;
      }
      job.smoothing = &smoothing;
      job.stats = &smoothing.stats;
      spdlog::info("smoothquant: alpha {}, mappings {} ({} smoothed layers), factors in [{:.3g}, {:.3g}], "
                   "largest input range cut {:.2f}x",
                   smoothing.alpha, o.smoothquant_mappings, smoothing.mappings.size(), smoothing.min_factor,
                   smoothing.max_factor, smoothing.max_range_reduction);
    }
  }

  if (o.dry_run) {
    if (o.json) {
      nlohmann::json j;
      j["scheme"] = scheme->name;
      j["input_bytes"] = plan.input_bytes;
      j["output_bytes"] = plan.output_bytes;
      j["ignore"] = plan.ignore_written;
      j["warnings"] = plan.warnings;
      if (o.smoothquant)
        j["smoothquant"] = {{"alpha", o.smoothing_strength}, {"mappings", o.smoothquant_mappings},
                            {"smoothed_layers", calib::smoothing_mappings(model, sq_which).size()}};
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
      if (o.smoothquant)
        std::printf("smoothquant: alpha %g, mappings %s, %zu smoothed layers (factors computed after calibration)\n",
                    static_cast<double>(o.smoothing_strength), o.smoothquant_mappings.c_str(),
                    calib::smoothing_mappings(model, sq_which).size());
      std::printf("dry run: nothing written\n");
    }
    return 0;
  }

  ProgressBar bar("quantize", plan.decisions.size());
  job.on_tensor = [&](const calib::TensorProgress& p) {
    bar.clear();
    spdlog::info("[{}/{}] {} {} {} -> {}  {} -> {}{}", p.index, p.total, p.decision->name, p.shape,
                 p.from_dtype, p.to_dtype, human_bytes(p.in_bytes), human_bytes(p.out_bytes),
                 p.smoothed ? "  (smoothed)" : "");
    bar.update(p.index);
  };
  const auto t0 = std::chrono::steady_clock::now();
  calib::QuantizeSummary s;
  try {
    s = calib::run_quantize(model, plan, job);
  } catch (const InputError&) {
    bar.clear();
    note_kept();
    throw;
  }
  bar.finish();
  if (needs_stats && o.stats_in.empty()) {
    std::error_code ec;
    std::filesystem::remove(resume, ec);
  }
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
    if (calib_cost.tokens > 0)
      j["calibration"] = {{"seconds", calib_cost.seconds}, {"samples", calib_cost.samples}, {"tokens", calib_cost.tokens}};
    if (job.smoothing)
      j["smoothquant"] = {{"alpha", smoothing.alpha}, {"mappings", o.smoothquant_mappings},
                          {"smoothed_layers", smoothing.mappings.size()},
                          {"min_factor", smoothing.min_factor}, {"max_factor", smoothing.max_factor},
                          {"max_range_reduction", smoothing.max_range_reduction}};
    j["files"] = s.output_files;
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    spdlog::info("done: {} of {} tensors quantized ({}), {} -> {} in {} shard(s), {:.1f} s ({:.0f} MB/s); wrote {}",
                 s.tensors_quantized, s.tensors_total, scheme->name, human_bytes(s.input_bytes),
                 human_bytes(s.output_bytes), s.shards, secs, secs > 0 ? s.input_bytes / secs / 1e6 : 0.0, o.out);
    if (calib_cost.tokens > 0)
      spdlog::info("calibration took {:.1f} s ({} samples, {} tokens, {:.0f} tokens/s) before quantization",
                   calib_cost.seconds, calib_cost.samples, calib_cost.tokens,
                   calib_cost.seconds > 0 ? calib_cost.tokens / calib_cost.seconds : 0.0);
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
  sub->add_option("--kv-cache", o->kv_cache, "KV-cache scales: none, or fp8 (calibrated k_scale/v_scale per attention layer)")
      ->capture_default_str()->check(CLI::IsMember({"none", "fp8"}));
  auto* sq = sub->add_flag("--smoothquant", o->smoothquant,
                "SmoothQuant: move activation outliers into the weights before quantizing; needs calibration; "
                "schemes with quantized activations only");
  sub->add_option("--smoothing-strength", o->smoothing_strength,
                  "SmoothQuant alpha in (0, 1]: s_j = range_j^alpha / (2 max|W_j|)^(1-alpha) (llm-compressor's "
                  "smoothing_strength; 0.8 as in its W8A8 examples, its own default is 0.5)")
      ->capture_default_str()->check(CLI::Range(1e-6, 1.0))->needs(sq);
  sub->add_option("--smoothquant-mappings", o->smoothquant_mappings,
                  "norms: input_layernorm -> q/k/v and post_attention_layernorm -> gate/up (llm-compressor's "
                  "default); all: also up_proj -> down_proj")
      ->capture_default_str()->check(CLI::IsMember({"all", "norms"}))->needs(sq);
  sub->add_option("--max-shard-size", o->max_shard, "Largest output shard")->capture_default_str();
  auto* cal = sub->add_option_group("calibration", "Static schemes and --kv-cache fp8 run the model on calibration text");
  cal->add_option("--dataset", o->dataset, "Calibration text: .txt, .jsonl (\"text\" or chat \"messages\"), optionally .zst (default: the built-in set)");
  cal->add_option("--num-samples", o->num_samples, "Calibration samples")->capture_default_str()->check(CLI::PositiveNumber);
  cal->add_option("--seq-len", o->seq_len, "Tokens per sample (at most)")->capture_default_str()->check(CLI::PositiveNumber);
  cal->add_option("--seed", o->seed, "Sample selection seed")->capture_default_str();
  cal->add_option("--observer", o->observer, "static_minmax (max over all tokens) or minmax (moving average, c=0.01)")
      ->capture_default_str()->check(CLI::IsMember({"static_minmax", "minmax"}));
  cal->add_option("--calib-memory", o->calib_memory,
                  "Hidden states of all samples (samples x tokens x hidden x 4 B) above this size are kept in a "
                  "temporary file next to OUT instead of RAM")
      ->capture_default_str();
  cal->add_option("--save-stats", o->stats_out, "Save the activation statistics (zstd) for reuse with --stats");
  cal->add_option("--stats", o->stats_in, "Use saved statistics instead of calibrating (refused if from another model)");
  sub->add_option("-j,--threads", o->threads, "Threads (0 = all cores)")->capture_default_str();
  sub->add_flag("--dry-run", o->dry_run, "Plan and preflight only: print what would be done, write nothing");
  sub->add_flag("--json", o->json, "Machine-readable summary on stdout");
  sub->add_flag("--allow-nonfinite", o->allow_nonfinite, "Quantize weights containing NaN/Inf instead of refusing");
  sub->add_flag("--overwrite", o->overwrite, "Replace an existing output folder (only after success)");
  sub->add_flag("--no-hash", o->no_hash, "Skip the sha256 of input shards in the manifest");
  sub->callback([&run, o] { run = [o] { return run_quantize_cmd(*o); }; });
}

}  // namespace qt
