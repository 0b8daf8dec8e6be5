#include "calib/quantize.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>

#include "calib/calibrate.h"
#include "calib/dataset.h"
#include "calib/gptq.h"
#include "calib/model_config.h"
#include "calib/moe_coverage.h"
#include "calib/stats_file.h"
#include "calib/stats_merge.h"
#include "calib/tokenizer/tokenizer.h"
#include "formats/checkpoint.h"
#include "formats/model_folder.h"
#include "formats/output_folder.h"
#include "formats/run_cleanup.h"
#include "libquant/cpu_isa.h"
#include "libquant/error.h"
#include "libquant/float_formats.h"
#include "libquant/quantize.h"
#include "libquant/parallel.h"

namespace qt::calib {
namespace {

// The output side of a run as the request asks for it (the same for --like and a normal run).
QuantizeJob job_for(const QuantizeRequest& r, const QuantizeEvents& ev) {
  QuantizeJob job;
  job.output_dir = r.output;
  job.max_shard_bytes = r.max_shard_bytes;
  job.allow_nonfinite = r.allow_nonfinite;
  job.overwrite = r.overwrite;
  job.hash_inputs = r.hash_inputs;
  job.command_line = r.command_line;
  job.on_tensor = ev.on_tensor;
  return job;
}

void say(const std::function<void(const std::string&)>& f, const std::string& line) {
  if (f) f(line);
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

// The calibration samples (token ids) of --dataset (or the built-in text), --num-samples,
// --seq-len and --seed; warns when the text gives fewer samples than asked.
std::vector<std::vector<int32_t>> calibration_samples(const ModelFolder& model, const QuantizeRequest& r,
                                                      const QuantizeEvents& ev, CalibrationText& text) {
  const Tokenizer tok = Tokenizer::from_dir(model.dir());
  text = r.dataset.empty() ? builtin_calibration_text() : load_calibration_text(r.dataset);
  auto samples = make_samples(tok, text, r.num_samples, r.seq_len, r.seed);
  if (static_cast<int64_t>(samples.size()) < r.num_samples)
    say(ev.warn, fmt::format("warning: --num-samples {} asked for, but the calibration text ({}) gives only {} samples of at most {} tokens "
                             "(documents cut into chunks of --seq-len, chunks under 16 tokens dropped); using {}. "
                             "A larger --dataset or a smaller --seq-len gives more",
                             r.num_samples, text.source, samples.size(), r.seq_len, samples.size()));
  return samples;
}

// The calibration settings of a request, the same for a whole run and for one --calib-shard
// part; hidden states above --calib-memory spill into the folder that will hold `beside`.
// Warns (once per run: every calibrating mode calls this once) when bf16 would be emulated.
CalibrateOptions calibrate_options(const QuantizeRequest& r, const QuantizeEvents& ev, const std::string& beside) {
  if (r.calib_precision == GemmPrecision::BF16 && !bf16_hardware())
    say(ev.warn, active_isa() != Isa::Scalar
                     ? "warning: --calib-precision bf16: this CPU has no AVX512-BF16, so its bf16 products are emulated "
                       "with AVX2 (the same bits, but ~3x slower than f32: bench/RESULTS.md); --calib-precision f32 "
                       "is the fast path here"
                     : "warning: --calib-precision bf16: this CPU has neither AVX512-BF16 nor AVX2, so its bf16 "
                       "products are emulated in scalar code (the same bits, but two orders of magnitude slower than "
                       "f32: bench/RESULTS.md); --calib-precision f32 is the fast path here");
  CalibrateOptions co;
  co.observer = r.observer;
  co.num_threads = r.threads;
  co.precision = r.calib_precision;
  co.hidden_spill.dir = std::filesystem::path(canonical_or_abs(beside)).parent_path().string();
  co.hidden_spill.above_bytes = r.calib_memory_bytes;
  co.on_layer_done = ev.on_calib_layer;
  co.moe_all_experts = r.moe_calibration != "routed";
  return co;
}

// What a statistics file records about the calibration run that made it.
StatsProvenance provenance_of(const std::string& fingerprint, const CalibrationText& text, const QuantizeRequest& r,
                              const CalibrationRun& run) {
  StatsProvenance p;
  p.model_fingerprint = fingerprint;
  p.data_source = text.source;
  p.data_sha256 = text.sha256;
  p.observer = r.observer;
  p.calib_precision = precision_name(r.calib_precision);
  if (r.calib_precision == GemmPrecision::BF16) p.calib_kernels = bf16_kernels_id();
  p.num_samples = run.samples;
  p.seq_len = r.seq_len;
  p.tokens = run.tokens;
  p.seed = r.seed;
  return p;
}

// Calibration statistics: loaded from --stats, reused from an interrupted run, or measured by
// running the model on the calibration text (--dataset, or the built-in set); saved with
// --save-stats and (until OUT is published) at `resume`.
ActivationStats obtain_stats(const ModelFolder& model, const QuantizeRequest& r, const QuantizeEvents& ev,
                             CalibrationCost& cost, const std::string& resume, StatsProvenance& prov) {
  const std::string fp = model_fingerprint(model);
  if (r.stats_in.size() == 1) {
    ActivationStats s = load_stats(r.stats_in[0], fp, &prov, &model);
    say(ev.info, fmt::format("calibration: loaded {} ({} samples x {} tokens from {}, observer {})", r.stats_in[0],
                             prov.num_samples, prov.seq_len, prov.data_source, prov.observer));
    return s;
  }
  if (r.stats_in.size() > 1) {
    // The shard files of a --calib-shard run: merged exactly, as `qtool stats merge` does.
    MergedStats m = merge_stats_files(r.stats_in, fp, &model);
    prov = m.prov;
    say(ev.info, fmt::format("calibration: merged {} shard files ({} samples x {} tokens from {}, observer {})",
                             m.shards, prov.num_samples, prov.seq_len, prov.data_source, prov.observer));
    return std::move(m.stats);
  }
  CalibrationText text;
  const auto samples = calibration_samples(model, r, ev, text);
  int64_t tokens = 0;
  for (const auto& s : samples) tokens += static_cast<int64_t>(s.size());
  std::error_code ec;
  if (std::filesystem::exists(resume, ec)) {
    // Reused only when it is exactly what this run would compute: same model, same text, same
    // samples, same observer, same precision (bf16: same kernels' bits). Anything else is
    // recomputed (and the file replaced).
    try {
      ActivationStats s = load_stats(resume, fp, &prov, &model);
      if (prov.data_sha256 == text.sha256 && prov.seq_len == r.seq_len && prov.seed == r.seed &&
          prov.observer == r.observer && prov.calib_precision == precision_name(r.calib_precision) &&
          (r.calib_precision != GemmPrecision::BF16 || prov.calib_kernels == bf16_kernels_id()) &&
          prov.num_samples == static_cast<int64_t>(samples.size()) && prov.tokens == tokens &&
          (s.routed_tokens.empty() || s.moe_calibration == r.moe_calibration)) {
        say(ev.info, fmt::format("calibration: reusing the statistics an interrupted run saved in {} ({} samples, {} tokens)",
                                 resume, prov.num_samples, prov.tokens));
        if (!r.stats_out.empty()) {
          save_stats(r.stats_out, s, prov);
          say(ev.info, fmt::format("calibration: statistics saved to {}", r.stats_out));
        }
        return s;
      }
      say(ev.warn, fmt::format("warning: {} (from an interrupted run) was made with other calibration settings; calibrating again",
                               resume));
    } catch (const InputError& e) {
      // Unreadable or invalid: as if absent (it is replaced once calibration is done).
      say(ev.warn, fmt::format("warning: ignoring {} from an interrupted run ({}); calibrating again", resume, e.problem()));
    }
  }
  say(ev.info, fmt::format("calibration: {} samples, {} tokens from {} (observer {}, {} forward on {})", samples.size(),
                           tokens, text.source, r.observer, precision_name(r.calib_precision),
                           gemm_path_name(r.calib_precision == GemmPrecision::BF16)));
  // Hidden states above --calib-memory go to a temporary file beside OUT (where the output's
  // disk space is checked anyway).
  const CalibrateOptions co = calibrate_options(r, ev, r.output);
  CalibrationRun run = calibrate(model, samples, co);
  if (run.hidden_spilled)
    say(ev.info, fmt::format("calibration: hidden states ({}) kept in a temporary file in {} (above --calib-memory {})",
                             human_bytes(run.hidden_bytes), co.hidden_spill.dir, r.calib_memory_text));
  cost = {run.seconds, run.samples, run.tokens};
  say(ev.info, fmt::format("calibration: {:.1f} s, {:.0f} tokens/s", run.seconds,
                           run.seconds > 0 ? run.tokens / run.seconds : 0.0));
  prov = provenance_of(fp, text, r, run);
  save_stats(resume, run.stats, prov);  // removed once OUT is published
  if (!r.stats_out.empty()) {
    save_stats(r.stats_out, run.stats, prov);
    say(ev.info, fmt::format("calibration: statistics saved to {}", r.stats_out));
  }
  maybe_inject_fault("after-calibration");
  return run.stats;
}

// --calib-shard K/N: the same selection as a single run, shard K of it calibrated and saved with
// its shard information; nothing else is written (calib/stats_merge.h).
void calibrate_shard(const ModelFolder& model, const QuantizeRequest& r, const QuantizeEvents& ev, QuantizeOutcome& out) {
  if (r.observer != "static_minmax")
    throw InputError(InputError::Kind::Usage, "", "",
                     "--calib-shard: the moving-average observer '" + r.observer +
                         "' depends on every sample before it, so its shards cannot be merged; use static_minmax");
  if (r.stats_out.empty())
    throw InputError(InputError::Kind::Usage, "", "", "--calib-shard needs --save-stats FILE (the shard's statistics)");
  if (!r.stats_in.empty())
    throw InputError(InputError::Kind::Usage, "", "", "--calib-shard calibrates; it cannot take --stats");
  const Tokenizer tok = Tokenizer::from_dir(model.dir());
  const CalibrationText text = r.dataset.empty() ? builtin_calibration_text() : load_calibration_text(r.dataset);
  const auto samples = make_samples(tok, text, r.num_samples, r.seq_len, r.seed);
  const StatsShard sh = make_shard(r.calib_shard_index, r.calib_shard_count, samples);
  const std::vector<std::vector<int32_t>> part(samples.begin() + sh.first, samples.begin() + sh.end);
  int64_t tokens = 0;
  for (const auto& s : part) tokens += static_cast<int64_t>(s.size());
  say(ev.info, fmt::format("calibration shard {}/{}: samples {}..{} of {} ({} tokens) from {} (observer {})", sh.index,
                           sh.count, sh.first, sh.end - 1, samples.size(), tokens, text.source, r.observer));
  CalibrationRun run = calibrate(model, part, calibrate_options(r, ev, r.stats_out));
  out.calibration = {run.seconds, run.samples, run.tokens};
  save_shard_stats(r.stats_out, run.stats, provenance_of(model_fingerprint(model), text, r, run), sh);
  say(ev.info, fmt::format("calibration shard {}/{}: {:.1f} s; statistics saved to {} (merge all {} with qtool stats merge)",
                           sh.index, sh.count, run.seconds, r.stats_out, sh.count));
  out.shard_only = true;
  out.shard_first = sh.first;
  out.shard_end = sh.end;
  out.shard_selection = sh.selection_samples;
}

// --like --check-scales: a short calibration of NEW (smoothed statistics when QUANT's factors
// were applied), each static scale it asks for against the one QUANT fixed.
std::vector<ScaleCheck> check_static_scales(const ModelFolder& model, const QuantizeRequest& r, const QuantizeEvents& ev,
                                            const QuantPlan& plan, const QuantizeJob& job, QuantizeOutcome& out) {
  const Tokenizer tok = Tokenizer::from_dir(model.dir());
  const CalibrationText text = r.dataset.empty() ? builtin_calibration_text() : load_calibration_text(r.dataset);
  const auto samples = make_samples(tok, text, r.num_samples, r.seq_len, r.seed);
  // --calib-precision, --calib-memory and --moe-calibration as the user gave them; the observer is
  // the range the activations need, whatever QUANT's.
  CalibrateOptions co = calibrate_options(r, ev, r.output);
  co.observer = "static_minmax";
  const CalibrationRun run = calibrate(model, samples, co);
  out.calibration = {run.seconds, run.samples, run.tokens};
  say(ev.info, fmt::format("check-scales: {} samples, {} tokens from {} in {:.1f} s", run.samples, run.tokens, text.source,
                           run.seconds));
  const ActivationStats st = job.smoothing ? smoothed_input_stats(model, *job.smoothing, run.stats) : run.stats;
  // The pipeline's rule for the dtype scales are computed in: that of the weight scales.
  DType model_dtype = DType::BF16;
  for (const auto& o : plan.outputs)
    if (o.kind == OutputTensor::Kind::WeightScale) { model_dtype = o.dtype; break; }
  std::vector<ScaleCheck> checks;
  for (const OutputTensor& o : plan.outputs) {
    if (o.kind != OutputTensor::Kind::InputScale && o.kind != OutputTensor::Kind::KvScale) continue;
    ScaleCheck c;
    c.tensor = o.name;
    const auto& bytes = job.fixed_scales.at(o.name);
    const bool ok = decode_to_f32(o.dtype, bytes.data(), 1, &c.quant_scale);
    QT_ASSERT(ok);
    if (o.kind == OutputTensor::Kind::InputScale && plan.options.scheme->input->scale_format == ScaleFormat::Nvfp4) {
      c.needed_scale = nvfp4_input_global_scale(st, o.module, model_dtype, model.dir());
    } else if (o.kind == OutputTensor::Kind::InputScale) {
      c.needed_scale = static_input_scale(st, o.module, plan.options.scheme->input->type, model_dtype, model.dir());
    } else {
      const bool is_k = o.name.size() >= 8 && o.name.compare(o.name.size() - 8, 8, ".k_scale") == 0;
      const auto& m = is_k ? st.k_absmax : st.v_absmax;
      auto it = m.find(o.module);
      if (it == m.end() || !(it->second > 0) || !std::isfinite(it->second))
        throw InputError(InputError::Kind::BadValue, model.dir(), o.name, "check-scales: no usable calibration statistic");
      c.needed_scale = scale_from_amax(it->second, QuantType::Float8E4M3, model_dtype);
    }
    // A global scale is inverse to the range (2688 / amax): a smaller needed one means clipping.
    const bool inverse = o.kind == OutputTensor::Kind::InputScale &&
                         plan.options.scheme->input->scale_format == ScaleFormat::Nvfp4;
    c.ratio = inverse ? static_cast<double>(c.quant_scale) / c.needed_scale
                      : static_cast<double>(c.needed_scale) / c.quant_scale;
    checks.push_back(c);
  }
  return checks;
}

// --like QUANT: the recipe, the fit check, QUANT's static scales and smoothing factors, then the
// pipeline; no calibration (calib/like.h).
QuantizeOutcome quantize_like(const QuantizeRequest& r, const QuantizeEvents& ev) {
  if (r.threads > 0) set_default_threads(r.threads);
  ModelFolder model = ModelFolder::open(r.model);
  const auto& cfg = model.config();
  if (cfg.contains("quantization_config") || cfg.contains("compression_config"))
    throw InputError(InputError::Kind::Unsupported, model.dir() + "/config.json", "",
                     "the model is already quantized (config.json has a quantization_config); quantize an unquantized "
                     "BF16/F16/F32 checkpoint");
  ModelFolder quant = ModelFolder::open(r.like);
  const LikeRecipe recipe = read_like_recipe(quant);
  check_like_fit(model, quant, recipe);
  say(ev.info, fmt::format("like {}: scheme {}{}{}{}, {} quantized modules", quant.dir(), recipe.scheme->name,
                           recipe.format == OutputFormat::LegacyFp8 ? " (legacy-fp8)" : "",
                           recipe.kv_cache_fp8 ? ", kv-cache fp8" : "",
                           recipe.smoothing_file.empty() ? "" : ", SmoothQuant factors", recipe.quantized_modules.size()));

  if (recipe.algorithm != "rtn")
    say(ev.warn, fmt::format("warning: {}'s weights were made by {} (its qtool_manifest.json); --like rounds to "
                             "nearest, with its scales and recipe. For {} weights, quantize MODEL with --scheme {} "
                             "--algorithm {} (a calibration pass)",
                             quant.dir(), recipe.algorithm, recipe.algorithm, recipe.scheme->name, recipe.algorithm));

  PlanOptions po;
  po.scheme = recipe.scheme;
  po.format = recipe.format;
  po.group_size = recipe.group_size;
  const std::set<std::string> modules(recipe.quantized_modules.begin(), recipe.quantized_modules.end());
  po.target_set = &modules;  // exactly the modules QUANT quantized
  po.kv_cache_fp8 = recipe.kv_cache_fp8;
  QuantizeOutcome out;
  out.like = quant.dir();
  out.plan = build_quant_plan(model.checkpoint().tensors(), po, model.dir());
  const QuantPlan& plan = out.plan;
  if (plan.quantized_modules.size() != recipe.quantized_modules.size())
    throw InputError(InputError::Kind::Unsupported, model.dir(), "",
                     "--like: the plan quantizes " + std::to_string(plan.quantized_modules.size()) + " modules, " +
                         quant.dir() + " " + std::to_string(recipe.quantized_modules.size()));
  QuantizeJob job = job_for(r, ev);
  // QUANT's static scales, byte for byte, checked against what the plan writes.
  for (const OutputTensor& o : plan.outputs) {
    if (o.kind != OutputTensor::Kind::InputScale && o.kind != OutputTensor::Kind::KvScale) continue;
    const TensorView* t = quant.checkpoint().find(o.name);
    if (!t)
      throw InputError(InputError::Kind::Missing, quant.dir(), o.name, "--like: the scheme needs this static scale, which the checkpoint lacks");
    if (t->dtype != o.dtype || t->bytes.size() != o.nbytes)
      throw InputError(InputError::Kind::Unsupported, t->file, o.name, "--like: scale stored unlike the model's dtype",
                       std::string(dtype_name(o.dtype)) + " " + shape_string(o.shape),
                       std::string(dtype_name(t->dtype)) + " " + shape_string(t->shape));
    job.fixed_scales[o.name].assign(t->bytes.begin(), t->bytes.end());
  }
  preflight_output(model, plan, job);
  for (const auto& w : plan.warnings) say(ev.warn, "warning: " + w);
  ActivationStats stats;  // no statistics: only the observer the config names
  stats.observer = recipe.observer;
  job.stats = &stats;
  if (!recipe.smoothing_file.empty()) {
    out.smoothing = smoothing_plan_from_file(model, recipe.smoothing_file, stats);
    out.smoothing_layers = out.smoothing->mappings.size();
    job.smoothing = &*out.smoothing;
    job.stats = &out.smoothing->stats;
  }
  job.manifest_extra["like"] = {{"checkpoint", canonical_or_abs(quant.dir())},
                                {"scheme", recipe.scheme->name},
                                {"static_scales", job.fixed_scales.size()},
                                {"smoothing_factors", recipe.smoothing_file.empty() ? "" : kSmoothingFactorsFile}};
  if (r.dry_run) {
    out.dry_run = true;
    return out;
  }
  if (r.drift)
    job.on_quantized = [&](const TensorDecision& d, const TensorView& w, const QuantizedWeight&) {
      out.drift.push_back(weight_drift(quant, recipe, d.module, w));
    };
  const auto t0 = std::chrono::steady_clock::now();
  out.summary = run_quantize(model, plan, job);
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (r.check_scales && !job.fixed_scales.empty()) out.scale_checks = check_static_scales(model, r, ev, plan, job, out);
  return out;
}

}  // namespace

std::string resume_stats_path(const std::string& output) {
  // The same absolute path the partial folder is named from ("-o ." or "-o dir/" included).
  return canonical_or_abs(output) + ".qtool-stats.zst";
}

QuantizeOutcome quantize_model(const QuantizeRequest& r, const QuantizeEvents& ev) {
  if (!r.like.empty()) return quantize_like(r, ev);
  const Scheme* scheme = r.scheme;
  QT_ASSERT(scheme != nullptr);
  if (r.threads > 0) set_default_threads(r.threads);
  if (r.smoothquant && scheme->input && scheme->weights.type == QuantType::Float8E4M3 &&
      scheme->weights.strategy == Strategy::Tensor)
    say(ev.warn, fmt::format("warning: --smoothquant with {}: one FP8 scale per weight tensor must also cover the factors' "
                             "range; on SmolLM2-135M it made fp8-static worse (mean KL 0.035 -> 0.057, bench/RESULTS.md). "
                             "It is meant for INT8; check with qtool verify --reference",
                             scheme->name));
  if (r.smoothquant && !scheme->input)
    throw InputError(InputError::Kind::Usage, "", "",
                     std::string("--smoothquant needs a scheme that quantizes activations; ") + scheme->name +
                         " is weight-only (smoothing would only make its weights harder to quantize)");
  if (r.group_size != 0) {
    if (scheme->weights.strategy != Strategy::Group)
      throw InputError(InputError::Kind::Usage, "", "",
                       std::string("--group-size applies to schemes with group-wise weight scales (w4a16); ") +
                           scheme->name + " has " + describe_args(scheme->weights) + " weights");
    if (std::find(std::begin(kGroupSizes), std::end(kGroupSizes), r.group_size) == std::end(kGroupSizes))
      throw InputError(InputError::Kind::Usage, "", "", "--group-size " + std::to_string(r.group_size) +
                       " is not supported", "32, 64 or 128 (the group sizes vLLM's WNA16 kernels run)");
  }
  const bool gptq = r.algorithm == WeightAlgorithm::Gptq;
  if (gptq) {
    auto refuse = [&](const std::string& why) {
      throw InputError(InputError::Kind::Usage, "", "", "--algorithm gptq " + why);
    };
    if (scheme->weights.is_float())
      refuse(std::string("needs integer weights (w4a16, w8a16, int8-dynamic, int8-static); ") + scheme->name + " has " +
             describe_args(scheme->weights) + " weights, which qtool rounds to nearest (GPTQ's error feedback "
             "is implemented for integer codes)");
    if (!r.stats_in.empty() || !r.stats_out.empty())
      refuse("observes the activations in its own layer-by-layer pass (each layer on the outputs of the quantized "
             "layers before it): --stats and --save-stats (statistics of the unquantized model) do not apply");
    if (r.calib_shard_count > 0) refuse("runs the whole calibration in one pass: --calib-shard does not apply");
    if (!(r.gptq.dampening_frac >= 0.0 && r.gptq.dampening_frac < 1.0))
      refuse("--dampening-frac must be in [0, 1), got " + fmt::format("{}", r.gptq.dampening_frac));
    if (r.gptq.block_size < 1) refuse("--gptq-block-size must be at least 1");
  }
  const bool needs_stats = scheme->needs_calibration || r.kv_cache_fp8 || !r.stats_out.empty() || r.smoothquant;
  if (r.moe_calibration != "all" && r.moe_calibration != "routed")
    throw InputError(InputError::Kind::Usage, "", "", "--moe-calibration must be all or routed", "all or routed",
                     r.moe_calibration);
  if (r.moe_min_tokens < 0)
    throw InputError(InputError::Kind::Usage, "", "", "--moe-min-tokens must not be negative", ">= 0",
                     std::to_string(r.moe_min_tokens));

  ModelFolder model = ModelFolder::open(r.model);
  const auto& cfg = model.config();
  if (cfg.contains("quantization_config") || cfg.contains("compression_config"))
    throw InputError(InputError::Kind::Unsupported, model.dir() + "/config.json", "",
                     "the model is already quantized (config.json has a quantization_config); quantize an unquantized "
                     "BF16/F16/F32 checkpoint");

  PlanOptions po;
  po.scheme = scheme;
  po.format = r.format;
  po.ignore = r.ignore;
  po.targets = r.targets;
  po.kv_cache_fp8 = r.kv_cache_fp8;
  po.group_size = r.group_size;
  QuantizeOutcome out;
  out.plan = build_quant_plan(model.checkpoint().tensors(), po, model.dir());
  const QuantPlan& plan = out.plan;
  if (r.calib_shard_count > 0) {
    if (!r.dry_run) calibrate_shard(model, r, ev, out);
    out.dry_run = r.dry_run;
    return out;
  }
  QuantizeJob job = job_for(r, ev);
  preflight_output(model, plan, job);
  if (!r.stats_out.empty())  // written right after calibration: checked before it
    check_writable_folder(std::filesystem::path(canonical_or_abs(r.stats_out)).parent_path().string(),
                          "the --save-stats location");
  for (const auto& w : plan.warnings) say(ev.warn, "warning: " + w);

  if (r.smoothquant) {
    // Before calibration: an architecture without the mappings fails in seconds, not after it.
    out.smoothing_layers = smoothing_mappings(model, r.smoothing_mappings, r.smoothquant_moe_norm).size();
    const bool moe = ModelConfig::from_json(model.config(), model.config_path()).is_moe();
    if (r.smoothquant_moe_norm && !moe)
      throw InputError(InputError::Kind::Usage, model.config_path(), "",
                       "--smoothquant-moe-norm applies to mixture-of-experts models; this one has no MoE layer");
    if (moe && !r.smoothquant_moe_norm)
      say(ev.warn, "warning: --smoothquant on a mixture-of-experts model smooths the attention side "
                   "(input_layernorm -> q/k/v_proj) of its MoE layers, as llm-compressor's MoE mappings do, and "
                   "leaves post_attention_layernorm alone: it feeds the router and every expert, so one factor per "
                   "channel serves all experts (llm-compressor omits it for that reason); --smoothquant-moe-norm "
                   "smooths it into all of them. Routed experts' up_proj -> down_proj pairs are not smoothed");
    else if (moe)
      say(ev.info, "smoothquant: MoE layers' post_attention_layernorm smoothed into the router, every expert's "
                   "gate/up and the shared expert's gate/up and gate (all absorb the factors; ranges over all "
                   "calibration tokens); routed experts' up_proj -> down_proj pairs are not smoothed");
    if (out.smoothing_layers == 0)
      throw InputError(InputError::Kind::Unsupported, model.dir(), "",
                       "--smoothquant: no input_layernorm / post_attention_layernorm feeding Linears found");
  }
  if (r.dry_run) {
    out.dry_run = true;
    return out;
  }
  // The claim on OUT, from now to the publish (formats/output_folder.h): a second run on the same
  // OUT fails here, before calibrating, and so does an output location that is not writable.
  const OutputLock lock = OutputLock::acquire(r.output);
  job.lock = &lock;
  for (const auto& n : lock.notes()) say(ev.info, n);

  const std::string resume = resume_stats_path(r.output);
  // After calibration, a failure keeps the statistics (see resume_stats_path); say where.
  const bool calibrating = needs_stats && r.stats_in.empty();
  // An interrupt (formats/run_cleanup.h) keeps them too, and says so.
  const cleanup::KeptOnInterrupt kept_on_interrupt =
      calibrating ? cleanup::KeptOnInterrupt(resume, "calibration statistics: the same command reuses them")
                  : cleanup::KeptOnInterrupt();
  auto note_kept = [&] {
    if (calibrating) say(ev.error, fmt::format("calibration statistics are kept in {}: the same command reuses them", resume));
  };
  ActivationStats stats;
  if (needs_stats && !gptq) {
    StatsProvenance prov;
    stats = obtain_stats(model, r, ev, out.calibration, resume, prov);
    job.stats = &stats;
    // The calibration as it really was (the sample count may be smaller than --num-samples).
    job.manifest_extra["calibration"] = {{"samples", prov.num_samples}, {"samples_requested", r.num_samples},
                                         {"tokens", prov.tokens}, {"seq_len", prov.seq_len}, {"seed", prov.seed},
                                         {"data_source", prov.data_source}, {"data_sha256", prov.data_sha256},
                                         {"statistics", r.stats_in.empty() ? nlohmann::json("calibrated")
                                                                       : r.stats_in.size() == 1 ? nlohmann::json(r.stats_in[0])
                                                                                                : nlohmann::json(r.stats_in)}};
    // The forward's compute precision and the kernels' ISA path (libquant/cpu_isa.h): results are
    // reproducible per precision; the ISA path changes no bit (recorded for the reader).
    if (r.stats_in.empty())
      job.manifest_extra["calibration"]["forward"] = {
          {"precision", prov.calib_precision},
          {"isa", gemm_path_name(prov.calib_precision == "bf16")}};
    if (!stats.routed_tokens.empty()) {
      // Mixture of experts: say how calibration covered the experts, and refuse what the
      // routed policy cannot stand behind (after the statistics are saved: a lower
      // --moe-min-tokens or --stats reuses them).
      auto cov = moe_coverage(stats);
      const std::string policy = stats.moe_calibration.empty() ? r.moe_calibration : stats.moe_calibration;
      say(ev.info, "moe: policy " + policy + ", " + coverage_summary(cov));
      for (const auto& c : cov) say(ev.info, "moe: " + coverage_line(c));
      say(ev.info, "moe: each layer's experts share one w13 and one w2 input scale, the maximum over its experts, as vLLM's fused-MoE kernels use them");
      if (policy == "routed") {
        try {
          if (r.moe_fallback == MoeFallback::LayerMax) {
            apply_layer_max_fallback(stats, cov, r.moe_min_tokens, model.dir());  // the saved statistics stay raw
            for (const auto& c : cov)
              if (!c.fallback_experts.empty()) say(ev.info, "moe: --moe-fallback layer-max: " + fallback_line(c, r.moe_min_tokens));
          } else {
            check_routed_coverage(cov, r.moe_min_tokens, model.dir());
          }
        } catch (const InputError&) {
          note_kept();
          throw;
        }
      } else if (r.moe_fallback == MoeFallback::LayerMax) {
        say(ev.info, "moe: --moe-fallback layer-max has nothing to do: under --moe-calibration all every expert sees every token");
      }
      out.moe_coverage = cov;
      out.moe_calibration = policy;
      out.moe_fallback = r.moe_fallback;
      out.moe_min_tokens = r.moe_min_tokens;
      job.manifest_extra["moe"] = {{"calibration", policy},
                                   {"min_tokens", r.moe_min_tokens},
                                   {"fallback", moe_fallback_name(r.moe_fallback)},
                                   {"input_scales", "one per layer for w13 (gate/up) and one for w2 (down): the maximum over the layer's experts, as vLLM's fused-MoE kernels use them"},
                                   {"layers", coverage_json(cov)}};
    }
    if (r.smoothquant) {
      try {
        out.smoothing = plan_smoothing(model, stats, r.smoothing_strength, r.smoothing_mappings, r.smoothquant_moe_norm);
      } catch (const InputError&) {
        note_kept();
        throw;
      }
      const SmoothingPlan& sp = *out.smoothing;
      job.smoothing = &sp;
      job.stats = &sp.stats;
      say(ev.info, fmt::format("smoothquant: alpha {}, mappings {} ({} smoothed layers), factors in [{:.3g}, {:.3g}], "
                               "largest input range cut {:.2f}x",
                               sp.alpha,
                               std::string(r.smoothing_mappings == SmoothingMappings::Norms ? "norms" : "all") +
                                   (sp.moe_norm ? " + moe-norm" : ""),
                               sp.mappings.size(), sp.min_factor, sp.max_factor, sp.max_range_reduction));
    }
  }

  GptqRun gptq_run;
  if (gptq) {
    // The GPTQ forward rewrites dense layers only (calib/forward.h rewrite_layer); a mixture-of-
    // experts model would leave its experts round-to-nearest while claiming GPTQ: refused.
    if (ModelConfig::from_json(model.config(), model.config_path()).is_moe())
      throw InputError(InputError::Kind::Unsupported, model.config_path(), "",
                       "--algorithm gptq does not support mixture-of-experts models yet (the experts would be "
                       "rounded to nearest); use --algorithm rtn");
    CalibrationText text;
    const auto samples = calibration_samples(model, r, ev, text);
    int64_t tokens = 0;
    for (const auto& s : samples) tokens += static_cast<int64_t>(s.size());
    say(ev.info, fmt::format("gptq: {} samples, {} tokens from {}; dampening_frac {}, block_size {}, actorder {}",
                             samples.size(), tokens, text.source, r.gptq.dampening_frac, r.gptq.block_size,
                             actorder_name(r.gptq.actorder)));
    GptqRunOptions go;
    go.gptq = r.gptq;
    // Static input scales, KV scales and SmoothQuant's ranges come from the same pass: each layer
    // observed on the outputs of the quantized layers before it, itself still unquantized, as
    // llm-compressor's observers see it (libquant/NUMERICS.md 9.8).
    if (needs_stats) go.observer = r.observer;
    if (r.smoothquant) go.smoothing = GptqSmoothing{r.smoothing_strength, r.smoothing_mappings};
    go.num_threads = r.threads;
    go.hidden_spill.dir = std::filesystem::path(canonical_or_abs(r.output)).parent_path().string();
    go.hidden_spill.above_bytes = r.calib_memory_bytes;
    go.weights_spill_dir = go.hidden_spill.dir;
    go.on_layer_done = ev.on_calib_layer;
    // Free space for OUT and GPTQ's temporary files beside it, now that the token count is known
    // (preflight_output counted the output alone).
    check_free_space(go.hidden_spill.dir, free_disk_bytes(go.hidden_spill.dir), plan.output_bytes,
                     gptq_scratch_files(model, plan, tokens, go));
    gptq_run = run_gptq(model, plan, samples, go);
    if (gptq_run.hidden_spilled)
      say(ev.info, fmt::format("gptq: hidden states ({}) kept in a temporary file in {} (above --calib-memory {})",
                               human_bytes(gptq_run.hidden_bytes), go.hidden_spill.dir, r.calib_memory_text));
    for (const auto& m : gptq_run.rtn_fallback)
      say(ev.warn, fmt::format("warning: gptq: the Hessian of {} is not positive definite even after dampening; "
                               "{} was rounded to nearest (a larger --dampening-frac or more --num-samples may help)", m, m));
    GptqCost& g = out.gptq;
    g.seconds = gptq_run.seconds;
    g.forward_seconds = gptq_run.forward_seconds;
    g.hessian_seconds = gptq_run.hessian_seconds;
    g.solve_seconds = gptq_run.solve_seconds;
    g.update_seconds = gptq_run.update_seconds;
    g.samples = gptq_run.samples;
    g.tokens = gptq_run.tokens;
    g.modules = static_cast<int64_t>(gptq_run.weights.size());
    g.dead_columns = gptq_run.dead_columns;
    g.peak_hessian_bytes = gptq_run.peak_hessian_bytes;
    g.rtn_fallback = gptq_run.rtn_fallback;
    say(ev.info, fmt::format("gptq: {:.1f} s (forward {:.1f} s, Hessians {:.1f} s, factorization {:.1f} s, column updates "
                             "{:.1f} s); peak Hessian memory {}",
                             g.seconds, g.forward_seconds, g.hessian_seconds, g.solve_seconds, g.update_seconds,
                             human_bytes(g.peak_hessian_bytes)));
    if (needs_stats) {
      stats = std::move(gptq_run.stats);
      job.stats = &stats;
      job.manifest_extra["calibration"] = {
          {"samples", gptq_run.samples}, {"samples_requested", r.num_samples}, {"tokens", gptq_run.tokens},
          {"seq_len", r.seq_len}, {"seed", r.seed}, {"data_source", text.source}, {"data_sha256", text.sha256},
          {"statistics", "observed in the GPTQ pass (each layer on the outputs of the quantized layers before it)"},
          {"forward", {{"precision", "f32"}, {"isa", gemm_path_name(false)}}}};
    }
    if (gptq_run.smoothing) {
      out.smoothing = std::move(gptq_run.smoothing);
      const SmoothingPlan& sp = *out.smoothing;
      job.smoothing = &sp;
      job.stats = &sp.stats;
      say(ev.info, fmt::format("smoothquant: alpha {}, mappings {} ({} smoothed layers, layer by layer in the GPTQ pass), "
                               "factors in [{:.3g}, {:.3g}], largest input range cut {:.2f}x",
                               sp.alpha, r.smoothing_mappings == SmoothingMappings::Norms ? "norms" : "all",
                               sp.mappings.size(), sp.min_factor, sp.max_factor, sp.max_range_reduction));
    }
    job.precomputed = &gptq_run.weights;
    job.manifest_extra["algorithm"] = "gptq";
    job.manifest_extra["gptq"] = {
        {"dampening_frac", r.gptq.dampening_frac}, {"block_size", r.gptq.block_size},
        {"actorder", actorder_name(r.gptq.actorder)}, {"samples", gptq_run.samples},
        {"samples_requested", r.num_samples}, {"tokens", gptq_run.tokens}, {"seq_len", r.seq_len}, {"seed", r.seed},
        {"data_source", text.source}, {"data_sha256", text.sha256}, {"dead_columns", gptq_run.dead_columns},
        {"rtn_fallback", gptq_run.rtn_fallback},
        {"method", "llm-compressor 0.14 GPTQModifier arithmetic: H = 2/N sum X^T X per input (q/k/v and gate/up "
                   "share one), round-to-nearest scales, dead columns zeroed, damping on the diagonal, upper Cholesky "
                   "of H^-1 (f64), block-wise column updates (f32); sequential: layer l+1 calibrated on the outputs "
                   "of the quantized layers before it"}};
  }

  const auto t0 = std::chrono::steady_clock::now();
  try {
    out.summary = run_quantize(model, plan, job);
  } catch (const InputError&) {
    note_kept();
    throw;
  }
  if (calibrating) {
    std::error_code ec;
    std::filesystem::remove(resume, ec);
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace qt::calib
