#include "calib/quantize.h"

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "calib/calibrate.h"
#include "calib/dataset.h"
#include "calib/model_config.h"
#include "calib/moe_coverage.h"
#include "calib/stats_file.h"
#include "calib/tokenizer/tokenizer.h"
#include "formats/checkpoint.h"
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
  const Tokenizer tok = Tokenizer::from_dir(model.dir());
  const CalibrationText text = r.dataset.empty() ? builtin_calibration_text() : load_calibration_text(r.dataset);
  const auto samples = make_samples(tok, text, r.num_samples, r.seq_len, r.seed);
  int64_t tokens = 0;
  for (const auto& s : samples) tokens += static_cast<int64_t>(s.size());
  if (static_cast<int64_t>(samples.size()) < r.num_samples)
    say(ev.warn, fmt::format("warning: --num-samples {} asked for, but the calibration text ({}) gives only {} samples of at most {} tokens "
                             "(documents cut into chunks of --seq-len, chunks under 16 tokens dropped); using {}. "
                             "A larger --dataset or a smaller --seq-len gives more",
                             r.num_samples, text.source, samples.size(), r.seq_len, samples.size()));
  std::error_code ec;
  if (std::filesystem::exists(resume, ec)) {
    // Reused only when it is exactly what this run would compute: same model, same text, same
    // samples, same observer. Anything else is recomputed (and the file replaced).
    try {
      ActivationStats s = load_stats(resume, fp, &prov);
      if (prov.data_sha256 == text.sha256 && prov.seq_len == r.seq_len && prov.seed == r.seed &&
          prov.observer == r.observer && prov.num_samples == static_cast<int64_t>(samples.size()) &&
          prov.tokens == tokens && (s.routed_tokens.empty() || s.moe_calibration == r.moe_calibration)) {
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
  co.moe_all_experts = r.moe_calibration != "routed";
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
    if (is_moe_layer(model.checkpoint(), "model.layers.0.") || is_moe_layer(model.checkpoint(), "model.layers.1."))
      say(ev.warn, "warning: --smoothquant on a mixture-of-experts model smooths only the attention side "
                   "(input_layernorm -> q/k/v_proj) of its MoE layers, as llm-compressor's MoE mappings do: "
                   "post_attention_layernorm feeds the router and every expert, which one set of factors cannot "
                   "balance per expert; the experts are quantized unsmoothed");
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
    if (!stats.routed_tokens.empty()) {
      // Mixture of experts: say how calibration covered the experts, and refuse what the
      // routed policy cannot stand behind (after the statistics are saved: a lower
      // --moe-min-tokens or --stats reuses them).
      const auto cov = moe_coverage(stats);
      const std::string policy = stats.moe_calibration.empty() ? r.moe_calibration : stats.moe_calibration;
      out.moe_coverage = cov;
      out.moe_calibration = policy;
      say(ev.info, "moe: policy " + policy + ", " + coverage_summary(cov));
      for (const auto& c : cov) say(ev.info, "moe: " + coverage_line(c));
      say(ev.info, "moe: each layer's experts share one w13 and one w2 input scale, the maximum over its experts, as vLLM's fused-MoE kernels use them");
      if (policy == "routed") {
        try {
          check_routed_coverage(cov, r.moe_min_tokens, model.dir());
        } catch (const InputError&) {
          note_kept();
          throw;
        }
      }
      job.manifest_extra["moe"] = {{"calibration", policy},
                                   {"min_tokens", r.moe_min_tokens},
                                   {"input_scales", "one per layer for w13 (gate/up) and one for w2 (down): the maximum over the layer's experts, as vLLM's fused-MoE kernels use them"},
                                   {"layers", coverage_json(cov)}};
    }
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
