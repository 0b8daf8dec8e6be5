#include "calib/calibrate.h"

#include <zstd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "calib/forward.h"
#include "calib/model_config.h"
#include "formats/atomic_file.h"
#include "formats/checkpoint.h"
#include "formats/model_folder.h"
#include "formats/sha256.h"
#include "libquant/error.h"

namespace qt::calib {
namespace {

// Per-sample max folded into an EMA (see CalibrateOptions::observer). on_linear_input arrives
// once per (layer, sample, module) in sample order, so each call is one observation.
class EmaObserver : public Observer {
 public:
  explicit EmaObserver(float c) : c_(c) {}
  void on_linear_input(const std::string& module, const float* x, int64_t tokens, int64_t in) override {
    fold(stats_.input_absmax, module, absmax_f32(x, tokens * in));
    if (wants_channel_range(module)) update_channel_range(stats_, module, x, tokens, in);
  }
  // SmoothQuant's per-channel range is a plain min/max whatever the observer (llm-compressor's
  // SmoothQuantModifier keeps its own running min/max too).
  void on_shared_linear_input(const std::string& producer, const std::vector<std::string>& modules,
                              const float* x, int64_t tokens, int64_t in) override {
    update_channel_range(stats_, producer, x, tokens, in);
    Observer::on_shared_linear_input(producer, modules, x, tokens, in);
  }
  void on_kv(const std::string& attn, const float* k, const float* v, int64_t tokens, int64_t kv_dim) override {
    fold(stats_.k_absmax, attn, absmax_f32(k, tokens * kv_dim));
    fold(stats_.v_absmax, attn, absmax_f32(v, tokens * kv_dim));
  }
  ActivationStats stats_;

 private:
  void fold(std::map<std::string, float>& m, const std::string& k, float cur) {
    auto it = m.find(k);
    if (it == m.end()) m[k] = cur;
    else it->second = it->second * (1.0f - c_) + cur * c_;
  }
  float c_;
};

}  // namespace

CalibrationRun calibrate(const ModelFolder& model, const std::vector<std::vector<int32_t>>& samples,
                         const CalibrateOptions& opts) {
  const ModelConfig cfg = ModelConfig::from_json(model.config(), model.config_path());
  const Checkpoint& ck = model.checkpoint();
  WeightProvider weights = make_view_weight_provider(
      [&ck](const std::string& n) { return ck.find(n); }, model.dir());
  ForwardOptions fo;
  AbsMaxObserver absmax;
  EmaObserver ema(opts.ema_c);
  if (opts.observer == "static_minmax") fo.observer = &absmax;
  else if (opts.observer == "minmax") fo.observer = &ema;
  else
    throw InputError(InputError::Kind::Usage, "", "", "unknown observer '" + opts.observer + "'",
                     "static_minmax or minmax");
  fo.num_threads = opts.num_threads;
  fo.on_layer_done = opts.on_layer_done;
  fo.hidden_spill = opts.hidden_spill;
  fo.lm_head_tied = cfg.lm_head_tied(ck.find("lm_head.weight") != nullptr);
  fo.source = model.dir();
  ForwardStats fs = run_forward(cfg, weights, samples, fo);
  CalibrationRun r;
  r.stats = opts.observer == "static_minmax" ? absmax.stats() : ema.stats_;
  r.stats.observer = opts.observer;
  r.samples = fs.samples;
  r.tokens = fs.tokens;
  r.seconds = fs.seconds;
  r.hidden_bytes = fs.hidden_bytes;
  r.hidden_spilled = fs.hidden_spilled;
  return r;
}

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
