// The whole `qtool quantize` flow as one library call: open the model, build and check the plan
// (preflight), obtain calibration statistics when the scheme needs them (from --stats, from a
// run that died after calibrating, or by running the model), plan SmoothQuant, then run the
// streaming pipeline (calib/quantize_pipeline.h). The CLI (tools/cmd_quantize.cpp) only turns
// options into a QuantizeRequest and prints what the events and the outcome say.
//
// Statistics reuse ("a run that dies is not lost"): as soon as calibration ends, the statistics
// are saved to resume_stats_path(OUT) (beside OUT, like the partial folder) and removed once OUT
// is published. A later run of the same command with the same calibration settings (same model
// fingerprint, text sha256, samples, tokens, seq-len, seed, observer, precision) reuses them instead of
// calibrating again; any other settings recalibrate and replace the file.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "calib/like.h"
#include "calib/moe_coverage.h"
#include "calib/quant_plan.h"
#include "calib/quantize_pipeline.h"
#include "calib/smoothing.h"
#include "libquant/activation_stats.h"
#include "libquant/gptq.h"
#include "libquant/gemm.h"

namespace qt::calib {

// How weights are rounded: round-to-nearest (data-free, byte-identical to compressed-tensors), or
// GPTQ (calib/gptq.h: calibration text, layer by layer, llm-compressor 0.14's GPTQModifier).
enum class WeightAlgorithm { Rtn, Gptq };

struct QuantizeRequest {
  std::string model;                 // input model folder
  std::string output;                // OUT
  const Scheme* scheme = nullptr;   // ignored with `like`
  // --like QUANT (calib/like.h): scheme, format, targets, static scales, KV scales and SmoothQuant
  // factors all come from QUANT, and nothing is calibrated; the options that would choose them
  // must be left at their defaults (the CLI refuses them).
  std::string like;
  bool drift = true;                 // with `like`: the per-layer drift report
  bool check_scales = false;         // with `like`: calibrate NEW briefly (dataset, num_samples,
                                     // seq_len, seed below) and compare with QUANT's static scales
  OutputFormat format = OutputFormat::CompressedTensors;
  std::vector<std::string> ignore, targets;  // exact names or "re:" patterns
  bool kv_cache_fp8 = false;
  int64_t group_size = 0;            // --group-size (32, 64, 128; group schemes only); 0 = the scheme's

  // Calibration (static schemes, --kv-cache fp8, --smoothquant, --save-stats).
  std::string dataset;               // "" = the built-in text
  // --stats: use these instead of calibrating. One complete statistics file, or the N shard files
  // of a --calib-shard run, merged exactly on load (calib/stats_merge.h).
  std::vector<std::string> stats_in;
  std::string stats_out;             // --save-stats
  std::string observer = "static_minmax";
  // --calib-shard K/N (calib/stats_merge.h): calibrate on shard K (0-based) of N of the sample
  // selection, save the statistics to stats_out, write nothing else (output may be empty).
  int64_t calib_shard_index = 0, calib_shard_count = 0;  // count 0: not sharded
  // The forward's Linears in f32 (exact reference) or bf16 (bf16 products, f32 sums; calib/forward.h).
  GemmPrecision calib_precision = GemmPrecision::F32;
  int64_t num_samples = 64, seq_len = 512;
  uint64_t seed = 0;
  uint64_t calib_memory_bytes = uint64_t{4} << 30;  // hidden states above this go to a file
  std::string calib_memory_text = "4GiB";           // as the user wrote it (for messages)
  // Mixture-of-experts models (calib/moe_coverage.h): "all" runs every calibration token through
  // every expert for the statistics; "routed" only the tokens the router sends, refusing experts
  // with fewer than moe_min_tokens of them, unless moe_fallback is LayerMax (such an expert
  // takes the layer's maximum over the experts that met the minimum: apply_layer_max_fallback).
  std::string moe_calibration = "all";
  int64_t moe_min_tokens = 8;  // kDefaultMoeMinTokens
  MoeFallback moe_fallback = MoeFallback::Error;

  // --algorithm gptq and its parameters (--dampening-frac, --gptq-block-size, --actorder). GPTQ
  // uses the calibration settings above (--dataset, --num-samples, --seq-len, --seed).
  WeightAlgorithm algorithm = WeightAlgorithm::Rtn;
  GptqOptions gptq;

  // SmoothQuant.
  bool smoothquant = false;
  double smoothing_strength = 0.8;
  SmoothingMappings smoothing_mappings = SmoothingMappings::All;
  // --smoothquant-moe-norm: MoE layers' post_attention_layernorm smoothed into every consumer
  // (router, experts' gate/up, shared expert gate/up and gate; calib/smoothing.h).
  bool smoothquant_moe_norm = false;

  uint64_t max_shard_bytes = 5'000'000'000;
  bool allow_nonfinite = false, overwrite = false, hash_inputs = true;
  bool dry_run = false;              // plan and preflight only; nothing is calibrated or written
  std::string command_line;          // recorded in the manifest
  int threads = 0;                   // 0 = the OpenMP default
};

// What the flow reports while it runs (every callback may be empty).
struct QuantizeEvents {
  std::function<void(const std::string&)> info;   // one log line
  std::function<void(const std::string&)> warn;   // "warning: ..." lines
  std::function<void(const std::string&)> error;  // said just before an InputError propagates
  std::function<void(int64_t layer, int64_t num_layers)> on_calib_layer;  // layer done (0-based)
  std::function<void(const TensorProgress&)> on_tensor;                   // tensor written
};

// What calibration cost (zero tokens when statistics were loaded or reused).
struct CalibrationCost {
  double seconds = 0;
  int64_t samples = 0, tokens = 0;
};

// What GPTQ cost and found (zero unless --algorithm gptq ran).
struct GptqCost {
  double seconds = 0, forward_seconds = 0, hessian_seconds = 0, solve_seconds = 0, update_seconds = 0;
  int64_t samples = 0, tokens = 0, modules = 0, dead_columns = 0;
  uint64_t peak_hessian_bytes = 0;
  std::vector<std::string> rtn_fallback;
};

struct QuantizeOutcome {
  QuantPlan plan;
  bool dry_run = false;
  QuantizeSummary summary;                 // empty for a dry run
  CalibrationCost calibration;
  GptqCost gptq;
  std::optional<SmoothingPlan> smoothing;  // after calibration (not for a dry run)
  size_t smoothing_layers = 0;             // mappings found (also for a dry run)
  std::vector<MoeBlockCoverage> moe_coverage;  // mixture-of-experts models: per MoE block
  std::string moe_calibration;                 // the policy the statistics were made with
  MoeFallback moe_fallback = MoeFallback::Error;  // as requested (acts under `routed` only)
  int64_t moe_min_tokens = 0;                  // as requested
  double seconds = 0;                      // the pipeline (writing), not calibration
  std::string like;                        // --like: QUANT's folder
  bool shard_only = false;                 // --calib-shard: statistics saved, nothing else written
  int64_t shard_first = 0, shard_end = 0, shard_selection = 0;  // its samples [first, end) of selection
  std::vector<LayerDrift> drift;           // --like: per quantized module, plan order
  std::vector<ScaleCheck> scale_checks;    // --like --check-scales: every static scale, plan order
};

// Runs the flow. Throws InputError (Usage for impossible options, Unsupported for an already
// quantized model or an architecture without what the options need, and whatever planning,
// calibration and the pipeline throw). Nothing named OUT exists unless it returns.
QuantizeOutcome quantize_model(const QuantizeRequest& req, const QuantizeEvents& ev = {});

// Where a run keeps its calibration statistics until OUT is published: `<abs(OUT)>.qtool-stats.zst`.
std::string resume_stats_path(const std::string& output);

}  // namespace qt::calib
