#include "calib/stats_merge.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "calib/stats_file.h"
#include "formats/sha256.h"
#include "libquant/error.h"

namespace qt::calib {
namespace {
using nlohmann::json;
using Kind = InputError::Kind;

// The raw JSON with its format marker checked (read_stats_json: calib/stats_file.h); each file is
// also fully validated through load_stats before its values are merged.
json read_marked_stats_json(const std::string& path) {
  json j = read_stats_json(path);
  if (!j.is_object() || j.value("format", "") != "qtool-activation-stats")
    throw InputError(Kind::BadFile, path, "", "not a qtool statistics file");
  return j;
}

// Max / min that keep a NaN (a NaN statistic must reach the check that refuses it).
float merge_max(float a, float b) { return std::isnan(a) || std::isnan(b) ? NAN : std::max(a, b); }
float merge_min(float a, float b) { return std::isnan(a) || std::isnan(b) ? NAN : std::min(a, b); }

void merge_scalars(std::map<std::string, float>& into, const std::map<std::string, float>& from, const char* what,
                   const std::string& path) {
  if (into.size() != from.size())
    throw InputError(Kind::Usage, path, "", std::string(what) + ": another set of modules than the first file",
                     std::to_string(into.size()) + " modules", std::to_string(from.size()));
  for (const auto& [k, v] : from) {
    auto it = into.find(k);
    if (it == into.end())
      throw InputError(Kind::Usage, path, k, std::string(what) + ": a module the first file lacks");
    it->second = merge_max(it->second, v);
  }
}

void merge_channels(std::map<std::string, std::vector<float>>& into, const std::map<std::string, std::vector<float>>& from,
                    bool is_min, const char* what, const std::string& path) {
  if (into.size() != from.size())
    throw InputError(Kind::Usage, path, "", std::string(what) + ": another set of modules than the first file",
                     std::to_string(into.size()) + " modules", std::to_string(from.size()));
  for (const auto& [k, v] : from) {
    auto it = into.find(k);
    if (it == into.end()) throw InputError(Kind::Usage, path, k, std::string(what) + ": a module the first file lacks");
    if (it->second.size() != v.size())
      throw InputError(Kind::Usage, path, k, std::string(what) + ": another channel count than the first file",
                       std::to_string(it->second.size()), std::to_string(v.size()));
    for (size_t c = 0; c < v.size(); ++c)
      it->second[c] = is_min ? merge_min(it->second[c], v[c]) : merge_max(it->second[c], v[c]);
  }
}

}  // namespace

std::string sample_selection_sha256(const std::vector<std::vector<int32_t>>& samples) {
  Sha256 h;
  for (const auto& s : samples) {
    uint8_t len[8];
    const uint64_t n = s.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
    h.update(len, 8);
    for (int32_t id : s) {
      const uint32_t u = static_cast<uint32_t>(id);
      const uint8_t b[4] = {static_cast<uint8_t>(u), static_cast<uint8_t>(u >> 8), static_cast<uint8_t>(u >> 16),
                            static_cast<uint8_t>(u >> 24)};
      h.update(b, 4);
    }
  }
  return h.hex();
}

std::pair<int64_t, int64_t> parse_shard_spec(const std::string& text) {
  const auto slash = text.find('/');
  auto bad = [&] {
    return InputError(Kind::Usage, "", "", "--calib-shard '" + text + "': expected K/N with 0 <= K < N (e.g. 0/8)");
  };
  if (slash == std::string::npos || slash == 0 || slash + 1 == text.size()) throw bad();
  for (size_t i = 0; i < text.size(); ++i)
    if (i != slash && !std::isdigit(static_cast<unsigned char>(text[i]))) throw bad();
  if (slash > 9 || text.size() - slash - 1 > 9) throw bad();
  const int64_t k = std::stoll(text.substr(0, slash)), n = std::stoll(text.substr(slash + 1));
  if (n < 1 || k >= n) throw bad();
  return {k, n};
}

StatsShard make_shard(int64_t index, int64_t count, const std::vector<std::vector<int32_t>>& samples) {
  const int64_t S = static_cast<int64_t>(samples.size());
  if (count < 1 || index < 0 || index >= count)
    throw InputError(Kind::Usage, "", "", "--calib-shard: K must be in [0, N)", "0 <= K < N",
                     std::to_string(index) + "/" + std::to_string(count));
  if (count > S)
    throw InputError(Kind::Usage, "", "",
                     "--calib-shard: " + std::to_string(S) + " samples cannot be split " + std::to_string(count) +
                         " ways (a shard would be empty); use fewer shards or more --num-samples");
  StatsShard s;
  s.index = index;
  s.count = count;
  s.first = index * S / count;
  s.end = (index + 1) * S / count;
  s.selection_samples = S;
  s.selection_sha256 = sample_selection_sha256(samples);
  return s;
}

void save_shard_stats(const std::string& path, const ActivationStats& stats, const StatsProvenance& prov,
                      const StatsShard& sh) {
  json j = stats_json(stats, prov);
  j["shard"] = {{"index", sh.index}, {"count", sh.count}, {"first", sh.first}, {"end", sh.end},
                {"selection_samples", sh.selection_samples}, {"selection_sha256", sh.selection_sha256}};
  write_stats_json(path, j);
}

std::optional<StatsShard> read_shard_info(const std::string& path) {
  const json j = read_marked_stats_json(path);
  if (!j.contains("shard")) return std::nullopt;
  const json& s = j["shard"];
  StatsShard sh;
  try {
    sh.index = s.at("index").get<int64_t>();
    sh.count = s.at("count").get<int64_t>();
    sh.first = s.at("first").get<int64_t>();
    sh.end = s.at("end").get<int64_t>();
    sh.selection_samples = s.at("selection_samples").get<int64_t>();
    sh.selection_sha256 = s.at("selection_sha256").get<std::string>();
  } catch (const json::exception& e) {
    throw InputError(Kind::BadFile, path, "", std::string("malformed 'shard': ") + e.what());
  }
  if (sh.count < 1 || sh.index < 0 || sh.index >= sh.count || sh.first < 0 || sh.end <= sh.first ||
      sh.end > sh.selection_samples)
    throw InputError(Kind::BadFile, path, "", "malformed 'shard': index, count or sample range out of range");
  return sh;
}

MergedStats merge_stats_files(const std::vector<std::string>& paths, const std::string& expected_fingerprint,
                              const ModelFolder* model) {
  if (paths.empty()) throw InputError(Kind::Usage, "", "", "stats merge: no statistics files given");
  struct Part {
    std::string path;
    StatsShard shard;
    StatsProvenance prov;
    ActivationStats stats;
  };
  std::vector<Part> parts;
  std::string fp = expected_fingerprint;
  for (const auto& p : paths) {
    Part part;
    part.path = p;
    auto sh = read_shard_info(p);
    if (!sh)
      throw InputError(Kind::Usage, p, "",
                       "not a calibration shard (saved without --calib-shard): a complete statistics file is used as it is");
    part.shard = *sh;
    if (fp.empty()) fp = read_marked_stats_json(p).value("model_fingerprint", "");
    part.stats = load_stats(p, fp, &part.prov, model);  // refuses another model, naming this file
    parts.push_back(std::move(part));
  }
  const Part& a = parts[0];
  for (const Part& b : parts) {
    if (b.stats.observer != "static_minmax")
      throw InputError(Kind::Usage, b.path, "",
                       "observer '" + b.stats.observer +
                           "' cannot be merged (a moving average depends on every sample before it); only static_minmax");
    auto differs = [&](const char* what, const std::string& x, const std::string& y) {
      if (x != y)
        throw InputError(Kind::Usage, b.path, "",
                         std::string("another sample selection than ") + a.path + " (" + what + " differs)", x, y);
    };
    differs("calibration text sha256", a.prov.data_sha256, b.prov.data_sha256);
    differs("seq-len", std::to_string(a.prov.seq_len), std::to_string(b.prov.seq_len));
    differs("seed", std::to_string(a.prov.seed), std::to_string(b.prov.seed));
    differs("selected samples", std::to_string(a.shard.selection_samples), std::to_string(b.shard.selection_samples));
    differs("selection sha256", a.shard.selection_sha256, b.shard.selection_sha256);
    differs("shard count N", std::to_string(a.shard.count), std::to_string(b.shard.count));
    if (b.prov.calib_precision != a.prov.calib_precision)
      throw InputError(Kind::Usage, b.path, "",
                       "calibrated at another --calib-precision than " + a.path + " (its statistics would mix precisions)",
                       a.prov.calib_precision, b.prov.calib_precision);
  }
  std::sort(parts.begin(), parts.end(), [](const Part& x, const Part& y) { return x.shard.index < y.shard.index; });
  const int64_t N = parts[0].shard.count;
  std::map<int64_t, const Part*> by_index;
  for (const Part& p : parts) {
    auto [it, fresh] = by_index.emplace(p.shard.index, &p);
    if (!fresh)
      throw InputError(Kind::Usage, p.path, "",
                       "shard " + std::to_string(p.shard.index) + "/" + std::to_string(N) + " is also in " + it->second->path +
                           " (overlapping parts)");
  }
  for (int64_t k = 0; k < N; ++k)
    if (!by_index.count(k))
      throw InputError(Kind::Usage, "", "",
                       "shard " + std::to_string(k) + "/" + std::to_string(N) + " is missing (" +
                           std::to_string(parts.size()) + " of " + std::to_string(N) + " shard files given)");
  MergedStats m;
  m.stats = parts[0].stats;
  m.prov = parts[0].prov;
  m.prov.num_samples = 0;
  m.prov.tokens = 0;
  int64_t next = 0;
  for (const Part& p : parts) {
    if (p.shard.first != next)
      throw InputError(Kind::Usage, p.path, "", "shard sample ranges do not tile the selection",
                       "first sample " + std::to_string(next), std::to_string(p.shard.first));
    next = p.shard.end;
    if (&p != &parts[0]) {
      merge_scalars(m.stats.input_absmax, p.stats.input_absmax, "input_absmax", p.path);
      merge_scalars(m.stats.k_absmax, p.stats.k_absmax, "k_absmax", p.path);
      merge_scalars(m.stats.v_absmax, p.stats.v_absmax, "v_absmax", p.path);
      merge_channels(m.stats.channel_min, p.stats.channel_min, true, "channel_min", p.path);
      merge_channels(m.stats.channel_max, p.stats.channel_max, false, "channel_max", p.path);
    }
    m.prov.num_samples += p.prov.num_samples;
    m.prov.tokens += p.prov.tokens;
  }
  if (next != parts[0].shard.selection_samples)
    throw InputError(Kind::Usage, parts.back().path, "", "shard sample ranges do not cover the selection",
                     std::to_string(parts[0].shard.selection_samples) + " samples", std::to_string(next));
  // bf16 shards computed by other kernels (e.g. oneDNN on an AMX machine, the own kernel
  // elsewhere): each shard's maxima stand; the merged file names every kernel once, in shard
  // order (unknown, i.e. empty, when a shard's file does not say).
  std::vector<std::string> kernels;
  for (const Part& p : parts) {
    if (p.prov.calib_kernels.empty()) {
      kernels.clear();
      break;
    }
    for (const std::string& id : split_calib_kernels(p.prov.calib_kernels))
      if (std::find(kernels.begin(), kernels.end(), id) == kernels.end()) kernels.push_back(id);
  }
  m.prov.calib_kernels.clear();
  for (const auto& k : kernels) m.prov.calib_kernels += (m.prov.calib_kernels.empty() ? "" : ",") + k;
  m.shards = N;
  return m;
}

MergedStats merge_stats_to_file(const std::vector<std::string>& paths, const std::string& out) {
  MergedStats m = merge_stats_files(paths);
  save_stats(out, m.stats, m.prov);
  return m;
}

}  // namespace qt::calib
