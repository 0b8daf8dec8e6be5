#include "calib/quantize.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "calib/calibrate.h"
#include "calib/dataset.h"
#include "calib/gptq.h"
#include "calib/stats_file.h"
#include "calib/tokenizer/tokenizer.h"
#include "formats/model_folder.h"
#include "formats/output_folder.h"
#include "libquant/error.h"
#include "libquant/parallel.h"

namespace qt::calib {
namespace {

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

std::string human_size(uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024.0 && u < 4) v /= 1024.0, ++u;
  return u == 0 ? fmt::format("{} B", b) : fmt::format("{:.1f} {}", v, units[u]);
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

// Calibration statistics: loaded from --stats, reused from an interrupted run, or measured by
// running the model on the calibration text (--dataset, or the built-in set); saved with
// --save-stats and (until OUT is published) at `resume`.
ActivationStats obtain_stats(const ModelFolder& model, const QuantizeRequest& r, const QuantizeEvents& ev,
                             CalibrationCost& cost, const std::string& resume, StatsProvenance& prov) {
  const std::string fp = model_fingerprint(model);
  if (!r.stats_in.empty()) {
    ActivationStats s = load_stats(r.stats_in, fp, &prov);
    say(ev.info, fmt::format("calibration: loaded {} ({} samples x {} tokens from {}, observer {})", r.stats_in,
                             prov.num_samples, prov.seq_len, prov.data_source, prov.observer));
    return s;
  }
  CalibrationText text;
  const auto samples = calibration_samples(model, r, ev, text);
  int64_t tokens = 0;
  for (const auto& s : samples) tokens += static_cast<int64_t>(s.size());
  std::error_code ec;
  if (std::filesystem::exists(resume, ec)) {
    // Reused only when it is exactly what this run would compute: same model, same text, same
    // samples, same observer. Anything else is recomputed (and the file replaced).
    try {
      ActivationStats s = load_stats(resume, fp, &prov);
      if (prov.data_sha256 == text.sha256 && prov.seq_len == r.seq_len && prov.seed == r.seed &&
          prov.observer == r.observer && prov.num_samples == static_cast<int64_t>(samples.size()) &&
          prov.tokens == tokens) {
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
      say(ev.warn, fmt::format("warning: ignoring {} from an interrupted run: {}", resume, e.problem()));
    }
  }
  say(ev.info, fmt::format("calibration: {} samples, {} tokens from {} (observer {})", samples.size(), tokens,
                           text.source, r.observer));
  CalibrateOptions co;
  co.observer = r.observer;
  co.num_threads = r.threads;
  // Hidden states above --calib-memory go to a temporary file beside OUT (where the output's
  // disk space is checked anyway).
  co.hidden_spill.dir = std::filesystem::path(canonical_or_abs(r.output)).parent_path().string();
  co.hidden_spill.above_bytes = r.calib_memory_bytes;
  co.on_layer_done = ev.on_calib_layer;
  CalibrationRun run = calibrate(model, samples, co);
  if (run.hidden_spilled)
    say(ev.info, fmt::format("calibration: hidden states ({}) kept in a temporary file in {} (above --calib-memory {})",
                             human_size(run.hidden_bytes), co.hidden_spill.dir, r.calib_memory_text));
  cost = {run.seconds, run.samples, run.tokens};
  prov = StatsProvenance{};
  say(ev.info, fmt::format("calibration: {:.1f} s, {:.0f} tokens/s", run.seconds,
                           run.seconds > 0 ? run.tokens / run.seconds : 0.0));
  prov.model_fingerprint = fp;
  prov.data_source = text.source;
  prov.data_sha256 = text.sha256;
  prov.observer = r.observer;
  prov.num_samples = run.samples;
  prov.seq_len = r.seq_len;
  prov.tokens = run.tokens;
  prov.seed = r.seed;
  save_stats(resume, run.stats, prov);  // removed once OUT is published
  if (!r.stats_out.empty()) {
    save_stats(r.stats_out, run.stats, prov);
    say(ev.info, fmt::format("calibration: statistics saved to {}", r.stats_out));
  }
  maybe_inject_fault("after-calibration");
  return run.stats;
}

}  // namespace

std::string resume_stats_path(const std::string& output) {
  // The same absolute path the partial folder is named from ("-o ." or "-o dir/" included).
  return canonical_or_abs(output) + ".qtool-stats.zst";
}

QuantizeOutcome quantize_model(const QuantizeRequest& r, const QuantizeEvents& ev) {
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
      refuse(std::string("needs integer weights (w4a16, w8a16, int8-dynamic); ") + scheme->name + " has " +
             describe_args(scheme->weights) + " weights, which qtool rounds to nearest (GPTQ's error feedback "
             "is implemented for integer codes)");
    if (scheme->needs_calibration)
      refuse(std::string("with ") + scheme->name + " is not supported yet: its static input scales would have to be "
             "observed in the same layer-by-layer pass; use int8-dynamic, or --algorithm rtn");
    if (r.kv_cache_fp8) refuse("with --kv-cache fp8 is not supported yet (the KV scales would need the same pass)");
    if (r.smoothquant) refuse("with --smoothquant is not supported yet");
    if (!r.stats_in.empty() || !r.stats_out.empty())
      refuse("runs the model itself: --stats and --save-stats (activation statistics) do not apply");
    if (!(r.gptq.dampening_frac >= 0.0 && r.gptq.dampening_frac < 1.0))
      refuse("--dampening-frac must be in [0, 1), got " + fmt::format("{}", r.gptq.dampening_frac));
    if (r.gptq.block_size < 1) refuse("--gptq-block-size must be at least 1");
  }
  const bool needs_stats = scheme->needs_calibration || r.kv_cache_fp8 || !r.stats_out.empty() || r.smoothquant;

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
  QuantizeJob job;
  job.output_dir = r.output;
  job.max_shard_bytes = r.max_shard_bytes;
  job.allow_nonfinite = r.allow_nonfinite;
  job.overwrite = r.overwrite;
  job.hash_inputs = r.hash_inputs;
  job.command_line = r.command_line;
  job.on_tensor = ev.on_tensor;
  preflight_output(model, plan, job);
  for (const auto& w : plan.warnings) say(ev.warn, "warning: " + w);

  if (r.smoothquant) {
    // Before calibration: an architecture without the mappings fails in seconds, not after it.
    out.smoothing_layers = smoothing_mappings(model, r.smoothing_mappings).size();
    if (out.smoothing_layers == 0)
      throw InputError(InputError::Kind::Unsupported, model.dir(), "",
                       "--smoothquant: no input_layernorm / post_attention_layernorm feeding Linears found");
  }
  if (r.dry_run) {
    out.dry_run = true;
    return out;
  }

  const std::string resume = resume_stats_path(r.output);
  // After calibration, a failure keeps the statistics (see resume_stats_path); say where.
  const bool calibrating = needs_stats && r.stats_in.empty();
  auto note_kept = [&] {
    if (calibrating) say(ev.error, fmt::format("calibration statistics are kept in {}: the same command reuses them", resume));
  };
  ActivationStats stats;
  if (needs_stats) {
    StatsProvenance prov;
    stats = obtain_stats(model, r, ev, out.calibration, resume, prov);
    job.stats = &stats;
    // The calibration as it really was (the sample count may be smaller than --num-samples).
    job.manifest_extra["calibration"] = {{"samples", prov.num_samples}, {"samples_requested", r.num_samples},
                                         {"tokens", prov.tokens}, {"seq_len", prov.seq_len}, {"seed", prov.seed},
                                         {"data_source", prov.data_source}, {"data_sha256", prov.data_sha256},
                                         {"statistics", r.stats_in.empty() ? "calibrated" : r.stats_in}};
    if (r.smoothquant) {
      try {
        out.smoothing = plan_smoothing(model, stats, r.smoothing_strength, r.smoothing_mappings);
      } catch (const InputError&) {
        note_kept();
        throw;
      }
      const SmoothingPlan& sp = *out.smoothing;
      job.smoothing = &sp;
      job.stats = &sp.stats;
      say(ev.info, fmt::format("smoothquant: alpha {}, mappings {} ({} smoothed layers), factors in [{:.3g}, {:.3g}], "
                               "largest input range cut {:.2f}x",
                               sp.alpha, r.smoothing_mappings == SmoothingMappings::Norms ? "norms" : "all",
                               sp.mappings.size(), sp.min_factor, sp.max_factor, sp.max_range_reduction));
    }
  }

  GptqRun gptq_run;
  if (gptq) {
    CalibrationText text;
    const auto samples = calibration_samples(model, r, ev, text);
    int64_t tokens = 0;
    for (const auto& s : samples) tokens += static_cast<int64_t>(s.size());
    say(ev.info, fmt::format("gptq: {} samples, {} tokens from {}; dampening_frac {}, block_size {}, actorder {}",
                             samples.size(), tokens, text.source, r.gptq.dampening_frac, r.gptq.block_size,
                             actorder_name(r.gptq.actorder)));
    GptqRunOptions go;
    go.gptq = r.gptq;
    go.num_threads = r.threads;
    go.hidden_spill.dir = std::filesystem::path(canonical_or_abs(r.output)).parent_path().string();
    go.hidden_spill.above_bytes = r.calib_memory_bytes;
    go.on_layer_done = ev.on_calib_layer;
    gptq_run = run_gptq(model, plan, samples, go);
    if (gptq_run.hidden_spilled)
      say(ev.info, fmt::format("gptq: hidden states ({}) kept in a temporary file in {} (above --calib-memory {})",
                               human_size(gptq_run.hidden_bytes), go.hidden_spill.dir, r.calib_memory_text));
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
                             human_size(g.peak_hessian_bytes)));
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
