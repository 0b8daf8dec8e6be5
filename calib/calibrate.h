// Calibration: run the model over token samples and collect the activation statistics that
// static input scales and KV-cache scales are made from (libquant/activation_stats.h) with the
// observer the options name (calib/observers.h). Saving and loading them: calib/stats_file.h.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "calib/hidden_store.h"
#include "libquant/activation_stats.h"
#include "libquant/gemm.h"

namespace qt {
class ModelFolder;
}

namespace qt::calib {

struct CalibrateOptions {
  // "static_minmax": max |x| over every calibration token (llm-compressor's rule for static
  //   activations since 0.11; order-independent).
  // "minmax": per-sample max |x| folded into an exponential moving average
  //   amax = amax * (1 - c) + cur * c (llm-compressor >= 0.9 formula, here in f32), c = ema_c,
  //   the first sample initialising it. Depends on sample order (fixed by --seed).
  std::string observer = "static_minmax";
  float ema_c = 0.01f;
  int num_threads = 0;
  GemmPrecision precision = GemmPrecision::F32;  // the forward's Linears (calib/forward.h)
  std::function<void(int64_t layer, int64_t num_layers)> on_layer_done;
  HiddenSpill hidden_spill;  // see ForwardOptions::hidden_spill
  // Mixture-of-experts policy (ForwardOptions::moe_all_experts): true = "all", false = "routed".
  bool moe_all_experts = true;
};

struct CalibrationRun {
  ActivationStats stats;
  int64_t samples = 0, tokens = 0;
  double seconds = 0;
  uint64_t hidden_bytes = 0;   // the hidden states of all samples
  bool hidden_spilled = false; // ...kept in a temporary file
};

// The checks made before any calibration forward (calibrate() and run_gptq() call it first), so
// that a bad input is named in seconds instead of after most of the calibration: config.json's
// num_hidden_layers agrees with the checkpoint, and every tensor the forward will load
// (forward_weights()) is present, has the shape config.json implies, a decodable dtype, and only
// values that are finite in f32 (a NaN, an Inf, or an F64 value beyond the f32 range is named
// with its file, tensor and first element index). One streaming read of those tensors: the
// forward then finds them in the page cache. Throws InputError.
void check_calibration_inputs(const ModelFolder& model, int num_threads = 0);

// Runs the model of `model` layer by layer over `samples` (token ids) on the CPU.
CalibrationRun calibrate(const ModelFolder& model, const std::vector<std::vector<int32_t>>& samples,
                         const CalibrateOptions& opts);

}  // namespace qt::calib
