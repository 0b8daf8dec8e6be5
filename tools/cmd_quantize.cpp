// `qtool quantize MODEL -o OUT --scheme NAME`: options -> calib::quantize_model (calib/quantize.h),
// then the log lines, progress bars and the summary (text or --json).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>

#include "calib/moe_coverage.h"
#include "calib/quantize.h"
#include "libquant/error.h"
#include "libquant/schemes.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

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
  std::string moe_calibration = "all";
  int64_t moe_min_tokens = calib::kDefaultMoeMinTokens;
  int threads = 0;
};

std::string scheme_help() {
  std::string s = "Quantization scheme:";
  for (const auto& sc : all_schemes()) s += std::string("\n  ") + sc.name + ": " + sc.summary;
  return s;
}

calib::QuantizeRequest make_request(const Opts& o) {
  calib::QuantizeRequest r;
  r.model = o.model;
  r.output = o.out;
  r.scheme = find_scheme(o.scheme);
  if (!r.scheme)
    throw InputError(InputError::Kind::Usage, "", "", "unknown scheme '" + o.scheme + "'", scheme_names());
  r.format = o.format == "legacy-fp8" ? OutputFormat::LegacyFp8 : OutputFormat::CompressedTensors;
  r.ignore = o.ignore;
  r.targets = o.targets;
  r.kv_cache_fp8 = o.kv_cache == "fp8";
  r.dataset = o.dataset;
  r.stats_in = o.stats_in;
  r.stats_out = o.stats_out;
  r.observer = o.observer;
  r.num_samples = o.num_samples;
  r.seq_len = o.seq_len;
  r.seed = o.seed;
  r.calib_memory_bytes = parse_size(o.calib_memory, "--calib-memory");
  r.calib_memory_text = o.calib_memory;
  r.moe_calibration = o.moe_calibration;
  r.moe_min_tokens = o.moe_min_tokens;
  r.smoothquant = o.smoothquant;
  r.smoothing_strength = o.smoothing_strength;
  r.smoothing_mappings = o.smoothquant_mappings == "norms" ? calib::SmoothingMappings::Norms : calib::SmoothingMappings::All;
  r.max_shard_bytes = parse_size(o.max_shard, "--max-shard-size");
  r.allow_nonfinite = o.allow_nonfinite;
  r.overwrite = o.overwrite;
  r.hash_inputs = !o.no_hash;
  r.dry_run = o.dry_run;
  r.command_line = command_line();
  r.threads = o.threads;
  return r;
}

void print_dry_run(const Opts& o, const calib::QuantizeOutcome& out) {
  const calib::QuantPlan& plan = out.plan;
  if (o.json) {
    nlohmann::json j;
    j["scheme"] = plan.options.scheme->name;
    j["input_bytes"] = plan.input_bytes;
    j["output_bytes"] = plan.output_bytes;
    j["ignore"] = plan.ignore_written;
    j["warnings"] = plan.warnings;
    if (o.smoothquant)
      j["smoothquant"] = {{"alpha", o.smoothing_strength}, {"mappings", o.smoothquant_mappings},
                          {"smoothed_layers", out.smoothing_layers}};
    nlohmann::json t = nlohmann::json::array();
    for (const auto& d : plan.decisions) t.push_back({{"tensor", d.name}, {"quantize", d.quantize}, {"action", d.reason}});
    j["tensors"] = t;
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  for (const auto& d : plan.decisions)
    std::printf("%-60s %s\n", d.name.c_str(), d.quantize ? ("quantize: " + d.reason).c_str() : d.reason.c_str());
  std::printf("\n%zu of %zu tensors quantized with %s; %s -> %s; ignore: %zu modules\n", plan.quantized_modules.size(),
              plan.decisions.size(), plan.options.scheme->name, human_bytes(plan.input_bytes).c_str(),
              human_bytes(plan.output_bytes).c_str(), plan.ignore_written.size());
  if (o.smoothquant)
    std::printf("smoothquant: alpha %g, mappings %s, %zu smoothed layers (factors computed after calibration)\n",
                static_cast<double>(o.smoothing_strength), o.smoothquant_mappings.c_str(), out.smoothing_layers);
  std::printf("dry run: nothing written\n");
}

void print_summary(const Opts& o, const calib::QuantizeOutcome& out) {
  const calib::QuantizeSummary& s = out.summary;
  const calib::CalibrationCost& c = out.calibration;
  const char* scheme = out.plan.options.scheme->name;
  if (o.json) {
    nlohmann::json j;
    j["output"] = o.out;
    j["scheme"] = scheme;
    j["tensors"] = s.tensors_total;
    j["quantized"] = s.tensors_quantized;
    j["shards"] = s.shards;
    j["input_bytes"] = s.input_bytes;
    j["output_bytes"] = s.output_bytes;
    j["zero_groups"] = s.zero_groups;
    j["seconds"] = out.seconds;
    if (c.tokens > 0) j["calibration"] = {{"seconds", c.seconds}, {"samples", c.samples}, {"tokens", c.tokens}};
    if (!out.moe_coverage.empty())
      j["moe"] = {{"calibration", out.moe_calibration}, {"layers", calib::coverage_json(out.moe_coverage)}};
    if (out.smoothing)
      j["smoothquant"] = {{"alpha", out.smoothing->alpha}, {"mappings", o.smoothquant_mappings},
                          {"smoothed_layers", out.smoothing->mappings.size()},
                          {"min_factor", out.smoothing->min_factor}, {"max_factor", out.smoothing->max_factor},
                          {"max_range_reduction", out.smoothing->max_range_reduction}};
    j["files"] = s.output_files;
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  const double secs = out.seconds;
  spdlog::info("done: {} of {} tensors quantized ({}), {} -> {} in {} shard(s), {:.1f} s ({:.0f} MB/s); wrote {}",
               s.tensors_quantized, s.tensors_total, scheme, human_bytes(s.input_bytes), human_bytes(s.output_bytes),
               s.shards, secs, secs > 0 ? s.input_bytes / secs / 1e6 : 0.0, o.out);
  if (c.tokens > 0)
    spdlog::info("calibration took {:.1f} s ({} samples, {} tokens, {:.0f} tokens/s) before quantization", c.seconds,
                 c.samples, c.tokens, c.seconds > 0 ? c.tokens / c.seconds : 0.0);
  if (s.zero_groups) spdlog::info("note: {} all-zero scale groups got the dtype's epsilon as scale", s.zero_groups);
}

int run_quantize_cmd(const Opts& o) {
  const calib::QuantizeRequest req = make_request(o);
  ProgressBar calib_bar("calibrate", 1), bar("quantize", 1);
  calib::QuantizeEvents ev;
  ev.info = [&](const std::string& l) { calib_bar.clear(); bar.clear(); spdlog::info("{}", l); };
  ev.warn = [&](const std::string& l) { calib_bar.clear(); bar.clear(); spdlog::warn("{}", l); };
  ev.error = [&](const std::string& l) { calib_bar.clear(); bar.clear(); spdlog::error("{}", l); };
  ev.on_calib_layer = [&](int64_t layer, int64_t n) {
    calib_bar.clear();
    spdlog::info("calibration: layer {}/{} done", layer + 1, n);
    calib_bar = ProgressBar("calibrate", static_cast<uint64_t>(n));
    calib_bar.update(static_cast<uint64_t>(layer + 1));
  };
  ev.on_tensor = [&](const calib::TensorProgress& p) {
    if (p.index == 1) {
      calib_bar.finish();
      bar = ProgressBar("quantize", p.total);
    }
    bar.clear();
    spdlog::info("[{}/{}] {} {} {} -> {}  {} -> {}{}", p.index, p.total, p.decision->name, p.shape, p.from_dtype,
                 p.to_dtype, human_bytes(p.in_bytes), human_bytes(p.out_bytes), p.smoothed ? "  (smoothed)" : "");
    bar.update(p.index);
  };
  const calib::QuantizeOutcome out = calib::quantize_model(req, ev);
  calib_bar.finish();
  bar.finish();
  if (out.dry_run)
    print_dry_run(o, out);
  else
    print_summary(o, out);
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
  sub->add_option("-s,--scheme", o->scheme, scheme_help())->capture_default_str()->check(one_of(names, "scheme"));
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
  cal->add_option("--moe-calibration", o->moe_calibration,
                  "Mixture-of-experts models: all (every token through every expert for the statistics; only routed "
                  "outputs continue) or routed (only the tokens the router sends; experts under --moe-min-tokens are refused)")
      ->capture_default_str()->check(CLI::IsMember({"all", "routed"}));
  cal->add_option("--moe-min-tokens", o->moe_min_tokens,
                  "--moe-calibration routed: fewest routed calibration tokens an expert may be calibrated on")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
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
