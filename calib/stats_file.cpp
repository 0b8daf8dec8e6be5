#include "calib/stats_file.h"

#include <zstd.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "formats/atomic_file.h"
#include "formats/checkpoint.h"
#include "formats/model_folder.h"
#include "formats/sha256.h"
#include "libquant/error.h"

namespace qt::calib {

std::string model_fingerprint(const ModelFolder& model) {
  Sha256 h;
  const std::string cfg = model.config().dump();
  h.update(cfg.data(), cfg.size());
  for (const TensorView& t : model.checkpoint().tensors()) {
    std::string head = t.name + "|" + std::string(dtype_name(t.dtype)) + "|" + shape_string(t.shape) + "|";
    h.update(head.data(), head.size());
    const uint64_t n = t.bytes.size(), win = 4096;
    for (int k = 0; k < 16 && n > 0; ++k) {
      const uint64_t off = n <= win ? 0 : (n - win) * static_cast<uint64_t>(k) / 15;
      h.update(t.bytes.data() + off, std::min(win, n - off));
      if (n <= win) break;
    }
  }
  return h.hex();
}

void save_stats(const std::string& path, const ActivationStats& stats, const StatsProvenance& p) {
  nlohmann::json j;
  j["format"] = "qtool-activation-stats";
  j["version"] = 1;
  j["model_fingerprint"] = p.model_fingerprint;
  j["data"] = {{"source", p.data_source}, {"sha256", p.data_sha256}, {"num_samples", p.num_samples},
               {"seq_len", p.seq_len}, {"tokens", p.tokens}, {"seed", p.seed}};
  j["observer"] = stats.observer;
  j["input_absmax"] = stats.input_absmax;
  j["k_absmax"] = stats.k_absmax;
  j["v_absmax"] = stats.v_absmax;
  j["channel_min"] = stats.channel_min;
  if (!stats.routed_tokens.empty()) j["routed_tokens"] = stats.routed_tokens;
  if (!stats.moe_calibration.empty()) j["moe_calibration"] = stats.moe_calibration;
  j["channel_max"] = stats.channel_max;
  const std::string text = j.dump(1);
  std::string out(ZSTD_compressBound(text.size()), '\0');
  const size_t n = ZSTD_compress(out.data(), out.size(), text.data(), text.size(), 9);
  QT_ASSERT(!ZSTD_isError(n));
  out.resize(n);
  write_file_atomic(path, out);
}

ActivationStats load_stats(const std::string& path, const std::string& expected, StatsProvenance* prov) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw InputError(InputError::Kind::Missing, path, "", "cannot open the statistics file");
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string raw = ss.str();
  const unsigned long long size = ZSTD_getFrameContentSize(raw.data(), raw.size());
  if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size > (1ull << 31))
    throw InputError(InputError::Kind::BadFile, path, "", "not a qtool statistics file (zstd frame expected)");
  std::string text(size, '\0');
  const size_t n = ZSTD_decompress(text.data(), text.size(), raw.data(), raw.size());
  if (ZSTD_isError(n)) throw InputError(InputError::Kind::BadFile, path, "", std::string("corrupt: ") + ZSTD_getErrorName(n));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(InputError::Kind::BadFile, path, "", std::string("invalid JSON: ") + e.what());
  }
  if (j.value("format", "") != "qtool-activation-stats")
    throw InputError(InputError::Kind::BadFile, path, "", "not a qtool statistics file");
  const std::string fp = j.value("model_fingerprint", "");
  if (fp != expected)
    throw InputError(InputError::Kind::Usage, path, "",
                     "statistics were gathered on a different model (fingerprint mismatch)", expected, fp);
  ActivationStats s;
  try {
    s.observer = j.value("observer", "static_minmax");
    s.input_absmax = j.at("input_absmax").get<std::map<std::string, float>>();
    s.k_absmax = j.at("k_absmax").get<std::map<std::string, float>>();
    s.v_absmax = j.at("v_absmax").get<std::map<std::string, float>>();
    // Absent from files written before SmoothQuant support: then empty, and --smoothquant says so.
    if (j.contains("moe_calibration")) s.moe_calibration = j.at("moe_calibration").get<std::string>();
    if (j.contains("routed_tokens")) s.routed_tokens = j.at("routed_tokens").get<std::map<std::string, std::vector<int64_t>>>();
    if (j.contains("channel_min")) s.channel_min = j.at("channel_min").get<std::map<std::string, std::vector<float>>>();
    if (j.contains("channel_max")) s.channel_max = j.at("channel_max").get<std::map<std::string, std::vector<float>>>();
    if (prov) {
      const auto& d = j.at("data");
      prov->model_fingerprint = fp;
      prov->data_source = d.value("source", "");
      prov->data_sha256 = d.value("sha256", "");
      prov->num_samples = d.value("num_samples", 0);
      prov->seq_len = d.value("seq_len", 0);
      prov->tokens = d.value("tokens", 0);
      prov->seed = d.value("seed", 0ull);
      prov->observer = s.observer;
    }
  } catch (const nlohmann::json::exception& e) {
    throw InputError(InputError::Kind::BadFile, path, "", std::string("malformed statistics: ") + e.what());
  }
  return s;
}

}  // namespace qt::calib
