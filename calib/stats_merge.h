// Calibration on several machines: statistics of disjoint parts ("shards") of one sample
// selection, saved separately (`qtool quantize --calib-shard K/N --save-stats`), merged exactly
// into the statistics a single run over the whole selection gives (`qtool stats merge`).
//
// Why exact: with the static_minmax observer every statistic is a maximum (input absmax, K / V
// absmax) or a per-channel minimum / maximum over tokens, and each sample's activations depend on
// that sample alone (the forward pass computes every output with one FMA chain in a fixed order,
// whatever the number of samples); so the maximum over shards of the shards' maxima is the
// maximum over all tokens, bit for bit. The moving-average `minmax` observer depends on the order
// of every sample before it and is refused.
//
// The split: make_samples() gives the same selection on every machine (same text, samples,
// seq-len, seed); shard K of N (0-based) takes samples [K*S/N, (K+1)*S/N) of the S selected.
// A shard file is an ordinary statistics file (calib/stats_file.h; num_samples and tokens are the
// shard's own) with one more key, "shard": {index, count, first, end, selection_samples,
// selection_sha256}, the last a sha256 over the whole selection's token ids (man/qtool-files.5).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "calib/stats_file.h"
#include "libquant/activation_stats.h"

namespace qt::calib {

struct StatsShard {
  int64_t index = 0, count = 0;          // K of N, 0-based
  int64_t first = 0, end = 0;            // samples [first, end) of the selection
  int64_t selection_samples = 0;         // S
  std::string selection_sha256;          // over every selected sample (sample_selection_sha256)
};

// sha256 over the selection: for each sample its length (u64 LE) then its ids (i32 LE).
std::string sample_selection_sha256(const std::vector<std::vector<int32_t>>& samples);

// Shard K of N of S samples: [K*S/N, (K+1)*S/N). Throws InputError(Usage) when K >= N, N < 1 or
// N > S (a shard would be empty).
StatsShard make_shard(int64_t index, int64_t count, const std::vector<std::vector<int32_t>>& samples);

// Parses "K/N" (0 <= K < N). Throws InputError(Usage) quoting the text.
std::pair<int64_t, int64_t> parse_shard_spec(const std::string& text);

// save_stats() plus the "shard" key.
void save_shard_stats(const std::string& path, const ActivationStats& stats, const StatsProvenance& prov,
                      const StatsShard& shard);
// The "shard" key of a statistics file; nullopt for a file written without --calib-shard.
// Throws what load_stats throws for a file that is not a statistics file.
std::optional<StatsShard> read_shard_info(const std::string& path);

struct MergedStats {
  ActivationStats stats;
  StatsProvenance prov;     // num_samples and tokens summed: what the single run records
  int64_t shards = 0;
};

// Merges the shard files `paths` (any order). Refuses, naming the file: a file without shard
// information, files of another model (fingerprint), another sample selection (text sha256,
// seq-len, seed, selection sha256 or N), an observer other than static_minmax, two files of the
// same shard (overlap), a shard missing, statistics with different modules or channel counts.
// With `expected_fingerprint` (quantize --stats A B ...), every file must be of that model; with
// `model`, every file is also checked against the model's modules and channel counts (load_stats).
MergedStats merge_stats_files(const std::vector<std::string>& paths, const std::string& expected_fingerprint = "",
                              const ModelFolder* model = nullptr);
// merge_stats_files, then the result saved to `out` (a complete statistics file for --stats,
// without shard information). Throws what both throw (InputError(Io) for the write).
MergedStats merge_stats_to_file(const std::vector<std::string>& paths, const std::string& out);

}  // namespace qt::calib
