// Statistics files (`--save-stats` / `--stats`, and the resume file beside OUT): activation
// statistics with their provenance, zstd-compressed JSON, so that one calibration run serves
// several schemes and a run that dies after calibrating is not lost. The format is specified in
// man/qtool-files.5.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "libquant/activation_stats.h"

namespace qt {
class ModelFolder;
}

namespace qt::calib {

// A fingerprint of a model for matching stats to it: sha256 over config.json (as parsed), every
// tensor's name/dtype/shape, and 16 evenly spaced 4 KiB windows of each tensor's bytes. Cheap
// (no full read) yet different for any retrained or differently shaped model.
std::string model_fingerprint(const ModelFolder& model);

// Provenance stored with saved statistics.
struct StatsProvenance {
  std::string model_fingerprint, data_source, data_sha256, observer;
  // The forward's GEMM precision, "f32" or "bf16" (--calib-precision); stored only when bf16, so
  // f32 statistics files keep their bytes.
  std::string calib_precision = "f32";
  // bf16 only: whose bits (cpu_isa.h bf16_kernels_id(): "own" or "onednn-<implementation>"; merged
  // shards made by several: their ids in shard order, comma-separated). Empty for f32 and for files
  // written before it was recorded (such a bf16 file is not reused by a resumed run).
  std::string calib_kernels;
  int64_t num_samples = 0, seq_len = 0, tokens = 0;
  uint64_t seed = 0;
};

// The ids of a calib_kernels value ("own,onednn-x" -> {"own", "onednn-x"}; "" -> {}).
std::vector<std::string> split_calib_kernels(const std::string& calib_kernels);

// Writes `stats` + provenance as zstd-compressed JSON (atomically). Throws InputError(Io).
void save_stats(const std::string& path, const ActivationStats& stats, const StatsProvenance& prov);
// The two halves of save_stats, for writers that add keys (calib/stats_merge.h's "shard"): the
// file's JSON, and writing a JSON as a statistics file.
nlohmann::json stats_json(const ActivationStats& stats, const StatsProvenance& prov);
void write_stats_json(const std::string& path, const nlohmann::json& j);
// A statistics file's JSON, not yet checked against the format: read (regular files only),
// zstd-decompressed, parsed strictly. InputError naming the file otherwise. load_stats validates.
nlohmann::json read_stats_json(const std::string& path);
// Reads a stats file; refuses one whose model fingerprint differs from `expected_fingerprint`
// (InputError(Usage) naming both). Returns the provenance through `prov`. Everything else is
// validated too, each problem an InputError(BadFile) naming the file and the key: the JSON shape
// (man/qtool-files.5), every statistic a finite f32, absolute maxima not negative, channel_min
// <= channel_max with the same keys and lengths; with `model`, every key names a module of the
// model and every channel list has the length the model's tensors give.
ActivationStats load_stats(const std::string& path, const std::string& expected_fingerprint,
                           StatsProvenance* prov = nullptr, const ModelFolder* model = nullptr);

}  // namespace qt::calib
