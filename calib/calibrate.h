// Calibration: run the model over token samples and collect the activation statistics that
// static input scales and KV-cache scales are made from (libquant/activation_stats.h), and save
// / load them with provenance so one calibration run serves several schemes.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "calib/hidden_store.h"
#include "libquant/activation_stats.h"

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
  std::function<void(int64_t layer, int64_t num_layers)> on_layer_done;
  HiddenSpill hidden_spill;  // see ForwardOptions::hidden_spill
};

struct CalibrationRun {
  ActivationStats stats;
  int64_t samples = 0, tokens = 0;
  double seconds = 0;
  uint64_t hidden_bytes = 0;   // the hidden states of all samples
  bool hidden_spilled = false; // ...kept in a temporary file
};

// Runs the model of `model` layer by layer over `samples` (token ids) on the CPU.
CalibrationRun calibrate(const ModelFolder& model, const std::vector<std::vector<int32_t>>& samples,
                         const CalibrateOptions& opts);

// A fingerprint of a model for matching stats to it: sha256 over config.json (as parsed), every
// tensor's name/dtype/shape, and 16 evenly spaced 4 KiB windows of each tensor's bytes. Cheap
// (no full read) yet different for any retrained or differently shaped model.
std::string model_fingerprint(const ModelFolder& model);

// Provenance stored with saved statistics.
struct StatsProvenance {
  std::string model_fingerprint, data_source, data_sha256, observer;
  int64_t num_samples = 0, seq_len = 0, tokens = 0;
  uint64_t seed = 0;
};

// Writes `stats` + provenance as zstd-compressed JSON (atomically). Throws InputError(Io).
void save_stats(const std::string& path, const ActivationStats& stats, const StatsProvenance& prov);
// Reads a stats file; refuses one whose model fingerprint differs from `expected_fingerprint`
// (InputError(Usage) naming both). Returns the provenance through `prov`.
ActivationStats load_stats(const std::string& path, const std::string& expected_fingerprint,
                           StatsProvenance* prov = nullptr);

}  // namespace qt::calib
