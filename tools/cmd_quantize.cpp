// `qtool quantize MODEL -o OUT --scheme NAME`: options -> calib::quantize_model (calib/quantize.h),
// then the log lines, progress bars and the summary (text or --json).
#include <CLI/CLI.hpp>

#include <chrono>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>

#include "calib/moe_coverage.h"
#include "calib/quantize.h"
#include "calib/stats_merge.h"
#include "libquant/error.h"
#include "libquant/gptq.h"
#include "libquant/schemes.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace qt {
namespace {

struct Opts {
  std::string model, out, scheme = "fp8-dynamic", format = "compressed-tensors", max_shard = "5GB";
  std::string kv_cache = "none";
  // Calibration (static schemes, --kv-cache fp8).
  std::string dataset, stats_out, observer = "static_minmax";
  std::vector<std::string> stats_in;
  int64_t num_samples = 64, seq_len = 512;
  uint64_t seed = 0;
  std::vector<std::string> ignore, targets;
  bool dry_run = false, json = false, allow_nonfinite = false, overwrite = false, no_hash = false;
  bool smoothquant = false;
  double smoothing_strength = 0.8;  // llm-compressor W8A8 examples; its modifier default is 0.5
  std::string smoothquant_mappings = "all";
  bool smoothquant_moe_norm = false;
  std::string calib_memory = "4GiB";
  std::string calib_precision = "f32";
  std::string moe_calibration = "all";
  int64_t moe_min_tokens = calib::kDefaultMoeMinTokens;
  std::string moe_fallback = "error";
  int threads = 0;
  std::string like, calib_shard;
  bool no_drift = false, check_scales = false;
  std::vector<std::string> set_by_user;  // options given on the command line (for --like's conflicts)
  int64_t group_size = 0;
  std::string algorithm = "rtn", actorder = "static";
  double dampening_frac = 0.01;
  int64_t gptq_block_size = 128;
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
  r.group_size = o.group_size;
  r.algorithm = o.algorithm == "gptq" ? calib::WeightAlgorithm::Gptq : calib::WeightAlgorithm::Rtn;
  if (o.actorder == "group" || o.actorder == "dynamic")
    throw InputError(InputError::Kind::Usage, "", "",
                     "--actorder " + o.actorder + " is not supported: llm-compressor 0.14 refuses it too (deprecated; it "
                     "writes a g_idx tensor that makes vLLM reorder activations at run time)", "static, weight or none");
  r.gptq.actorder = *parse_actorder(o.actorder);
  r.gptq.dampening_frac = o.dampening_frac;
  r.gptq.block_size = o.gptq_block_size;
  if (r.algorithm == calib::WeightAlgorithm::Rtn && (o.actorder != "static" || o.dampening_frac != 0.01 ||
                                                    o.gptq_block_size != 128))
    throw InputError(InputError::Kind::Usage, "", "",
                     "--actorder, --dampening-frac and --gptq-block-size apply to --algorithm gptq only");
  r.dataset = o.dataset;
  r.stats_in = o.stats_in;
  r.stats_out = o.stats_out;
  r.observer = o.observer;
  r.num_samples = o.num_samples;
  r.seq_len = o.seq_len;
  r.seed = o.seed;
  r.calib_memory_bytes = parse_size(o.calib_memory, "--calib-memory");
  r.calib_memory_text = o.calib_memory;
  if (!parse_precision(o.calib_precision, r.calib_precision))
    throw InputError(InputError::Kind::Usage, "", "", "unknown --calib-precision '" + o.calib_precision + "'", "f32 or bf16");
  r.moe_calibration = o.moe_calibration;
  r.moe_min_tokens = o.moe_min_tokens;
  calib::parse_moe_fallback(o.moe_fallback, r.moe_fallback);  // CLI11 checked the name
  r.smoothquant = o.smoothquant;
  r.smoothing_strength = o.smoothing_strength;
  r.smoothing_mappings = o.smoothquant_mappings == "norms" ? calib::SmoothingMappings::Norms : calib::SmoothingMappings::All;
  r.smoothquant_moe_norm = o.smoothquant_moe_norm;
  r.max_shard_bytes = parse_size(o.max_shard, "--max-shard-size");
  r.allow_nonfinite = o.allow_nonfinite;
  r.overwrite = o.overwrite;
  r.hash_inputs = !o.no_hash;
  r.dry_run = o.dry_run;
  r.command_line = command_line();
  r.threads = o.threads;
  r.like = o.like;
  if (!o.calib_shard.empty()) {
    const auto [k, n] = calib::parse_shard_spec(o.calib_shard);
    r.calib_shard_index = k;
    r.calib_shard_count = n;
  } else if (o.out.empty()) {
    throw InputError(InputError::Kind::Usage, "", "", "--output is required (only a --calib-shard run writes no output folder)");
  }
  r.drift = !o.no_drift;
  r.check_scales = o.check_scales;
  if (!o.like.empty() && !o.set_by_user.empty())
    throw InputError(InputError::Kind::Usage, "", "",
                     "--like takes the scheme, format, targets, group size, KV-cache scales and SmoothQuant factors "
                     "from " + o.like + " and runs no calibration (calibration options need --check-scales); drop " +
                         o.set_by_user[0]);
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
  // --check-scales: the scales that no longer cover are warnings (stderr), with --json too.
  if (!out.scale_checks.empty()) {
    size_t short_of = 0;
    for (const auto& k : out.scale_checks)
      if (k.ratio > 1.0) {
        ++short_of;
        spdlog::warn("check-scales: {} = {:.6g} no longer covers the model's activations: they need {:.6g} ({:.3g}x)",
                     k.tensor, k.quant_scale, k.needed_scale, k.ratio);
      }
    spdlog::info("check-scales: {} of {} static scales of {} no longer cover the model's activations{}", short_of,
                 out.scale_checks.size(), out.like, short_of ? " (they clip; recalibrate)" : "");
  }
  if (o.json) {
    nlohmann::json j;
    j["output"] = o.out;
    j["scheme"] = scheme;
    if (o.group_size) j["group_size"] = o.group_size;
    j["tensors"] = s.tensors_total;
    j["quantized"] = s.tensors_quantized;
    j["shards"] = s.shards;
    j["input_bytes"] = s.input_bytes;
    j["output_bytes"] = s.output_bytes;
    j["zero_groups"] = s.zero_groups;
    j["seconds"] = out.seconds;
    if (c.tokens > 0) j["calibration"] = {{"seconds", c.seconds}, {"samples", c.samples}, {"tokens", c.tokens}};
    if (out.gptq.modules > 0) j["algorithm"] = "gptq";
    if (out.gptq.modules > 0)
      j["gptq"] = {{"seconds", out.gptq.seconds},
                   {"forward_seconds", out.gptq.forward_seconds},
                   {"hessian_seconds", out.gptq.hessian_seconds},
                   {"solve_seconds", out.gptq.solve_seconds},
                   {"update_seconds", out.gptq.update_seconds},
                   {"samples", out.gptq.samples},
                   {"tokens", out.gptq.tokens},
                   {"modules", out.gptq.modules},
                   {"dead_columns", out.gptq.dead_columns},
                   {"peak_hessian_bytes", out.gptq.peak_hessian_bytes},
                   {"rtn_fallback", out.gptq.rtn_fallback},
                   {"dampening_frac", o.dampening_frac},
                   {"block_size", o.gptq_block_size},
                   {"actorder", o.actorder}};
    if (!out.moe_coverage.empty())
      j["moe"] = {{"calibration", out.moe_calibration},
                  {"min_tokens", out.moe_min_tokens},
                  {"fallback", calib::moe_fallback_name(out.moe_fallback)},
                  {"layers", calib::coverage_json(out.moe_coverage)}};
    if (out.smoothing)
      j["smoothquant"] = {{"alpha", out.smoothing->alpha}, {"mappings", o.smoothquant_mappings},
                          {"smoothed_layers", out.smoothing->mappings.size()},
                          {"min_factor", out.smoothing->min_factor}, {"max_factor", out.smoothing->max_factor},
                          {"max_range_reduction", out.smoothing->max_range_reduction}};
    if (out.smoothing && out.smoothing->moe_norm) j["smoothquant"]["moe_norm"] = true;
    j["files"] = s.output_files;
    if (!out.like.empty()) {
      j["like"] = out.like;
      nlohmann::json d = nlohmann::json::array();
      for (const auto& l : out.drift)
        d.push_back({{"module", l.module}, {"rel_l2", l.rel_l2}, {"max_abs", l.max_abs}, {"clipped", l.clipped},
                     {"elements", l.elements}, {"amax_new", l.amax_new}, {"amax_quant", l.amax_quant}});
      j["drift"] = d;
      if (!out.scale_checks.empty()) {
        nlohmann::json c = nlohmann::json::array();
        for (const auto& k : out.scale_checks)
          c.push_back({{"tensor", k.tensor}, {"quant_scale", k.quant_scale}, {"needed_scale", k.needed_scale},
                       {"ratio", k.ratio}, {"covered", k.ratio <= 1.0}});
        j["check_scales"] = c;
      }
    }
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  if (!out.drift.empty()) {
    // One line per module: NEW against QUANT's dequantized weight (calib/like.h).
    const calib::LayerDrift* worst = &out.drift[0];
    int64_t clipping = 0;
    for (const auto& l : out.drift) {
      spdlog::info("drift: {} rel_l2 {:.4g} max_abs {:.4g} amax {:.4g} -> {:.4g} clipped {}/{}", l.module, l.rel_l2,
                   l.max_abs, l.amax_quant, l.amax_new, l.clipped, l.elements);
      if (l.rel_l2 > worst->rel_l2) worst = &l;
      clipping += l.clipped > 0;
    }
    spdlog::info("drift: largest in {} (rel_l2 {:.4g}); {} of {} modules have weights beyond the range of {}'s weight scale",
                 worst->module, worst->rel_l2, clipping, out.drift.size(), out.like);
  }
  const double secs = out.seconds;
  spdlog::info("done: {} of {} tensors quantized ({}), {} -> {} in {} shard(s), {:.1f} s ({:.0f} MB/s); wrote {}",
               s.tensors_quantized, s.tensors_total, scheme, human_bytes(s.input_bytes), human_bytes(s.output_bytes),
               s.shards, secs, secs > 0 ? s.input_bytes / secs / 1e6 : 0.0, o.out);
  if (c.tokens > 0 && out.like.empty())
    spdlog::info("calibration took {:.1f} s ({} samples, {} tokens, {:.0f} tokens/s) before quantization", c.seconds,
                 c.samples, c.tokens, c.seconds > 0 ? c.tokens / c.seconds : 0.0);
  if (out.gptq.modules > 0)
    spdlog::info("gptq took {:.1f} s before writing: forward {:.1f} s, Hessians {:.1f} s, factorization {:.1f} s, "
                 "column updates {:.1f} s ({} modules, {} samples, {} tokens; dampening_frac {}, block_size {}, actorder {})",
                 out.gptq.seconds, out.gptq.forward_seconds, out.gptq.hessian_seconds, out.gptq.solve_seconds,
                 out.gptq.update_seconds, out.gptq.modules, out.gptq.samples, out.gptq.tokens, o.dampening_frac,
                 o.gptq_block_size, o.actorder);
  if (s.zero_groups) spdlog::info("note: {} all-zero scale groups got the dtype's epsilon as scale", s.zero_groups);
}

int run_quantize_cmd(const Opts& o) {
  const calib::QuantizeRequest req = make_request(o);
  ProgressBar calib_bar("calibrate", 1), bar("quantize", 1);
  calib::QuantizeEvents ev;
  ev.info = [&](const std::string& l) { calib_bar.clear(); bar.clear(); spdlog::info("{}", l); };
  ev.warn = [&](const std::string& l) { calib_bar.clear(); bar.clear(); spdlog::warn("{}", l); };
  ev.error = [&](const std::string& l) { calib_bar.clear(); bar.clear(); spdlog::error("{}", l); };
  const auto t0 = std::chrono::steady_clock::now();
  ev.on_calib_layer = [&](int64_t layer, int64_t n) {
    calib_bar.clear();
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (layer + 1 < n)
      spdlog::info("calibration: layer {}/{} done, {:.1f} s, ETA {:.0f} s", layer + 1, n, el,
                   el / static_cast<double>(layer + 1) * static_cast<double>(n - layer - 1));
    else
      spdlog::info("calibration: layer {}/{} done, {:.1f} s", layer + 1, n, el);
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
  if (out.shard_only) {
    if (o.json) {
      nlohmann::json j;
      j["statistics"] = o.stats_out;
      j["shard"] = {{"index", req.calib_shard_index}, {"count", req.calib_shard_count}, {"first", out.shard_first},
                    {"end", out.shard_end}, {"selection_samples", out.shard_selection}};
      j["calibration"] = {{"seconds", out.calibration.seconds}, {"samples", out.calibration.samples},
                          {"tokens", out.calibration.tokens}};
      std::printf("%s\n", j.dump(2).c_str());
    }
    return 0;
  }
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
  sub->add_option("-o,--output", o->out, "Output folder (must not exist, or be empty); required except with --calib-shard");
  std::vector<std::string> names;
  for (const auto& s : all_schemes()) names.push_back(s.name);
  sub->add_option("-s,--scheme", o->scheme, scheme_help())->capture_default_str()->check(one_of(names, "scheme"));
  sub->add_option("--format", o->format, "Output format: compressed-tensors, or legacy-fp8 (AutoFP8 layout; per-tensor FP8 schemes)")
      ->capture_default_str()->check(CLI::IsMember({"compressed-tensors", "legacy-fp8"}));
  sub->add_option("--ignore", o->ignore, "Keep these modules unquantized: exact names or re:REGEX (repeatable)");
  sub->add_option("--targets", o->targets, "Quantize only these modules: exact names or re:REGEX (default: decoder Linear layers)");
  sub->add_option("--group-size", o->group_size,
                  "Input columns per weight scale for group schemes (w4a16): 32, 64 or 128 (default: the "
                  "scheme's, 128); a smaller group fits hidden sizes such as 576 and costs one scale per group")
      ->check(CLI::IsMember({32, 64, 128}));
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
                  "default; in a mixture-of-experts layer input_layernorm -> q/k/v only); all: also up_proj -> "
                  "down_proj (and Qwen2-MoE's shared_expert up_proj -> down_proj)")
      ->capture_default_str()->check(CLI::IsMember({"all", "norms"}))->needs(sq);
  sub->add_flag("--smoothquant-moe-norm", o->smoothquant_moe_norm,
                "Mixture-of-experts models: also smooth post_attention_layernorm into every Linear it feeds (router, "
                "every expert's gate/up, the shared expert's gate/up and shared_expert_gate); off by default, as in "
                "llm-compressor, whose MoE mappings smooth only the attention side")
      ->needs(sq);
  sub->add_option("--max-shard-size", o->max_shard, "Largest output shard")->capture_default_str();
  auto* gp = sub->add_option_group("algorithm", "How weights are rounded");
  gp->add_option("--algorithm", o->algorithm,
                 "rtn: round-to-nearest, data-free, byte-identical to compressed-tensors; gptq: GPTQ with the "
                 "arithmetic of llm-compressor 0.14's GPTQModifier, layer by layer on the calibration text "
                 "(integer weights: w4a16, w8a16, int8-dynamic, int8-static; static input scales, --kv-cache fp8 "
                 "and --smoothquant are observed and applied layer by layer in the same pass, as llm-compressor "
                 "does)")
      ->capture_default_str()->check(CLI::IsMember({"rtn", "gptq"}));
  gp->add_option("--dampening-frac", o->dampening_frac,
                 "GPTQ: fraction of the Hessian's mean diagonal added to its diagonal (llm-compressor's dampening_frac)")
      ->capture_default_str();
  gp->add_option("--gptq-block-size", o->gptq_block_size,
                 "GPTQ: columns per block of lazy updates (llm-compressor's block_size)")
      ->capture_default_str();
  gp->add_option("--actorder", o->actorder,
                 "GPTQ: column order; static (llm-compressor's default, an alias of weight): by descending Hessian "
                 "diagonal, scales and format unchanged (no g_idx); none: in order")
      ->capture_default_str()->check(CLI::IsMember({"static", "weight", "none", "group", "dynamic"}));
  auto* cal = sub->add_option_group("calibration", "Static schemes, --kv-cache fp8, --smoothquant and --algorithm gptq run the model on calibration text");
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
  cal->add_option("--calib-precision", o->calib_precision,
                  "Precision of the calibration forward's matrix products: f32 (exact reference) or bf16 (bf16 "
                  "weights and activations, f32 sums; ~1.7x faster than f32 on AVX512-BF16 CPUs, AMX through oneDNN; "
                  "emulated elsewhere, ~3x slower than f32 with AVX2)")
      ->capture_default_str()->check(CLI::IsMember({"f32", "bf16"}));
  cal->add_option("--moe-calibration", o->moe_calibration,
                  "Mixture-of-experts models: all (every token through every expert for the statistics; only routed "
                  "outputs continue) or routed (only the tokens the router sends; experts under --moe-min-tokens are "
                  "refused, or take --moe-fallback)")
      ->capture_default_str()->check(CLI::IsMember({"all", "routed"}));
  cal->add_option("--moe-min-tokens", o->moe_min_tokens,
                  "--moe-calibration routed: fewest routed calibration tokens an expert may be calibrated on")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cal->add_option("--moe-fallback", o->moe_fallback,
                  "--moe-calibration routed, an expert under --moe-min-tokens (or with no token): error (refuse the run) "
                  "or layer-max (its w13 and w2 input statistics become the maximum over the layer's experts that met "
                  "the minimum; an error when none did)")
      ->capture_default_str()->check(CLI::IsMember(std::vector<std::string>(std::begin(calib::kMoeFallbackNames),
                                                                            std::end(calib::kMoeFallbackNames))));
  cal->add_option("--save-stats", o->stats_out, "Save the activation statistics (zstd) for reuse with --stats");
  cal->add_option("--stats", o->stats_in,
                  "Use saved statistics instead of calibrating (refused if from another model). Repeated (--stats A --stats "
                  "B ...): the N shard files of a --calib-shard run, merged exactly as `qtool stats merge` does")
      ->expected(1)
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cal->add_option("--calib-shard", o->calib_shard,
                  "K/N: calibrate only on part K (0-based) of N of the sample selection and save the statistics with "
                  "--save-stats; nothing else is written. Merge the N files with `qtool stats merge` (static_minmax only)");
  sub->add_option("-j,--threads", o->threads, "Threads (0 = all cores)")->capture_default_str();
  sub->add_flag("--dry-run", o->dry_run, "Plan and preflight only: print what would be done, write nothing");
  sub->add_flag("--json", o->json, "Machine-readable summary on stdout");
  sub->add_flag("--allow-nonfinite", o->allow_nonfinite, "Quantize weights containing NaN/Inf instead of refusing");
  sub->add_flag("--overwrite", o->overwrite, "Replace an existing output folder (only after success)");
  sub->add_flag("--no-hash", o->no_hash, "Skip the sha256 of input shards in the manifest");
  auto* lk = sub->add_option("--like", o->like,
                  "Quantize with the recipe of this quantized checkpoint (scheme, format, quantized modules, static "
                  "input and KV-cache scales, SmoothQuant factors); no calibration. MODEL must have the same "
                  "architecture and tensors");
  sub->add_flag("--no-drift", o->no_drift, "With --like: skip the per-layer drift report (MODEL's weights against "
                                           "the checkpoint's dequantized ones)")->needs(lk);
  sub->add_flag("--check-scales", o->check_scales,
                "With --like: after writing, calibrate MODEL briefly (--dataset, --num-samples, --seq-len, --seed) and "
                "report which static input / KV-cache scales of the checkpoint no longer cover MODEL's activations")
      ->needs(lk);
  sub->callback([&run, o, sub] {
    // Options --like decides itself.
    o->set_by_user.clear();
    // The recipe (QUANT's) and the calibration that made its scales; the calibration options in
    // the second list only shape --check-scales' short calibration, so they need it.
    static constexpr const char* kRecipe[] = {
        "--scheme", "--format", "--ignore", "--targets", "--group-size", "--kv-cache", "--smoothquant",
        "--smoothing-strength", "--smoothquant-mappings", "--smoothquant-moe-norm", "--algorithm",
        "--dampening-frac", "--gptq-block-size", "--actorder", "--observer", "--stats", "--save-stats",
        "--calib-shard", "--moe-min-tokens", "--moe-fallback"};
    static constexpr const char* kCheckScales[] = {"--dataset", "--num-samples", "--seq-len", "--seed",
                                                   "--calib-precision", "--calib-memory", "--moe-calibration"};
    for (const char* opt : kRecipe)
      if (sub->count(opt) > 0) o->set_by_user.push_back(opt);
    for (const char* opt : kCheckScales)
      if (sub->count(opt) > 0 && !o->check_scales) o->set_by_user.push_back(opt);
    run = [o] { return run_quantize_cmd(*o); };
  });
}

}  // namespace qt
