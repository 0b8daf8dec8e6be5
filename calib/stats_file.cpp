#include "calib/stats_file.h"

#include <zstd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "formats/atomic_file.h"
#include "formats/checkpoint.h"
#include "formats/input_file.h"
#include "formats/json_util.h"
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

std::vector<std::string> split_calib_kernels(const std::string& calib_kernels) {
  std::vector<std::string> ids;
  for (size_t b = 0; !calib_kernels.empty() && b <= calib_kernels.size();) {
    const size_t e = std::min(calib_kernels.find(',', b), calib_kernels.size());
    ids.push_back(calib_kernels.substr(b, e - b));
    b = e + 1;
  }
  return ids;
}

nlohmann::json stats_json(const ActivationStats& stats, const StatsProvenance& p) {
  nlohmann::json j;
  j["format"] = "qtool-activation-stats";
  j["version"] = 1;
  j["model_fingerprint"] = p.model_fingerprint;
  j["data"] = {{"source", p.data_source}, {"sha256", p.data_sha256}, {"num_samples", p.num_samples},
               {"seq_len", p.seq_len}, {"tokens", p.tokens}, {"seed", p.seed}};
  j["observer"] = stats.observer;
  if (p.calib_precision != "f32") j["calib_precision"] = p.calib_precision;
  if (p.calib_precision == "bf16" && !p.calib_kernels.empty()) j["calib_kernels"] = p.calib_kernels;
  j["input_absmax"] = stats.input_absmax;
  j["k_absmax"] = stats.k_absmax;
  j["v_absmax"] = stats.v_absmax;
  j["channel_min"] = stats.channel_min;
  if (!stats.routed_tokens.empty()) j["routed_tokens"] = stats.routed_tokens;
  if (!stats.moe_calibration.empty()) j["moe_calibration"] = stats.moe_calibration;
  j["channel_max"] = stats.channel_max;
  return j;
}

void save_stats(const std::string& path, const ActivationStats& stats, const StatsProvenance& p) {
  write_stats_json(path, stats_json(stats, p));
}

void write_stats_json(const std::string& path, const nlohmann::json& j) {
  const std::string text = j.dump(1);
  std::string out(ZSTD_compressBound(text.size()), '\0');
  const size_t n = ZSTD_compress(out.data(), out.size(), text.data(), text.size(), 9);
  QT_ASSERT(!ZSTD_isError(n));
  out.resize(n);
  write_file_atomic(path, out);
}

namespace {

using nlohmann::json;
using Kind = InputError::Kind;

// Checks a statistics file's content against the format (man/qtool-files.5) and, when `model`
// is given, against the model's modules and channel counts. Every message names the key.
class StatsReader {
 public:
  StatsReader(const std::string& path, const ModelFolder* model) : path_(path), model_(model) {}

  [[noreturn]] void bad(const std::string& what) const { throw InputError(Kind::BadFile, path_, "", what); }

  const json& member(const json& j, const char* key, json::value_t want, const char* want_name,
                     const std::string& where = "") const {
    const std::string k = where.empty() ? key : where + "." + key;
    if (!j.contains(key)) bad("'" + k + "' is missing");
    const json& v = j.at(key);
    const bool ok = want == json::value_t::number_unsigned ? v.is_number_unsigned() : v.type() == want;
    if (!ok) bad("'" + k + "' is " + article(json_type_name(v)) + ", not " + want_name);
    return v;
  }

  // A float statistic: a JSON number that is finite in f32.
  float number(const json& v, const std::string& where) const {
    if (!v.is_number()) bad(where + " is " + article(json_type_name(v)) + ", not a number");
    const double d = v.get<double>();
    if (!std::isfinite(d) || std::fabs(d) > static_cast<double>(std::numeric_limits<float>::max()))
      bad(where + " is " + fmt::format("{}", d) + ", not a finite f32 value");
    return static_cast<float>(d);
  }

  // name -> absolute maximum: finite and not negative (0 is what an all-zero input gives; the
  // quantize step refuses it where a scale is made from it).
  std::map<std::string, float> absmax_map(const json& j, const char* key, const char* module_suffix) const {
    const json& m = member(j, key, json::value_t::object, "an object");
    std::map<std::string, float> out;
    for (const auto& [name, v] : m.items()) {
      const std::string where = std::string(key) + " '" + printable(name) + "'";
      const float f = number(v, where);
      if (f < 0.0f) bad(where + " is " + fmt::format("{}", f) + "; an absolute maximum cannot be negative");
      if (model_ && !model_->checkpoint().find(name + module_suffix))
        bad(where + " names no module of the model (no tensor '" + printable(name + module_suffix) + "')");
      out.emplace(name, f);
    }
    return out;
  }

  std::map<std::string, std::vector<float>> channel_map(const json& j, const char* key) const {
    std::map<std::string, std::vector<float>> out;
    if (!j.contains(key)) return out;  // files written before SmoothQuant support
    const json& m = member(j, key, json::value_t::object, "an object");
    for (const auto& [name, v] : m.items()) {
      const std::string where = std::string(key) + " '" + printable(name) + "'";
      if (!v.is_array()) bad(where + " is " + article(json_type_name(v)) + ", not an array");
      std::vector<float> c;
      c.reserve(v.size());
      for (size_t i = 0; i < v.size(); ++i) c.push_back(number(v[i], where + " [" + std::to_string(i) + "]"));
      if (model_) {
        // A norm's output (X.weight is 1-D: its length) or a Linear's input (X.weight is 2-D:
        // its in_features).
        const TensorView* t = model_->checkpoint().find(name + ".weight");
        if (!t || t->shape.empty() || t->shape.size() > 2)
          bad(where + " names no norm or Linear of the model (no 1-D or 2-D tensor '" + printable(name) + ".weight')");
        const int64_t want = t->shape.back();
        if (static_cast<int64_t>(c.size()) != want)
          bad(where + " has " + std::to_string(c.size()) + " channels; the model's " + printable(name) +
              ".weight has " + std::to_string(want));
      }
      out.emplace(name, std::move(c));
    }
    return out;
  }

 private:
  static std::string article(const std::string& type) {
    if (type == "null") return type;
    return (type == "integer" || type == "object" || type == "array" ? "an " : "a ") + type;
  }
  std::string path_;
  const ModelFolder* model_;
};

}  // namespace

nlohmann::json read_stats_json(const std::string& path) {
  const std::string raw = read_input_file(path);  // refuses FIFOs and devices, names the file
  const unsigned long long size = ZSTD_getFrameContentSize(raw.data(), raw.size());
  if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size > (1ull << 31))
    throw InputError(Kind::BadFile, path, "", "not a qtool statistics file (zstd frame expected)");
  std::string text(size, '\0');
  const size_t n = ZSTD_decompress(text.data(), text.size(), raw.data(), raw.size());
  if (ZSTD_isError(n)) throw InputError(Kind::BadFile, path, "", std::string("corrupt: ") + ZSTD_getErrorName(n));
  text.resize(n);
  JsonParseOptions jo;
  jo.what = "statistics file";
  return parse_json_strict(text, path, jo);
}

ActivationStats load_stats(const std::string& path, const std::string& expected, StatsProvenance* prov,
                           const ModelFolder* model) {
  const json j = read_stats_json(path);
  const StatsReader rd(path, model);
  if (!j.is_object())
    rd.bad("not a qtool statistics file (the JSON is " + std::string(j.is_array() || j.is_object() ? "an " : "a ") +
           json_type_name(j) + ", not an object)");
  if (!j.contains("format") || j["format"] != "qtool-activation-stats")
    rd.bad("not a qtool statistics file (no \"format\": \"qtool-activation-stats\")");
  const json& version = rd.member(j, "version", json::value_t::number_unsigned, "an integer");
  if (version.get<uint64_t>() != 1)
    rd.bad("statistics file version " + version.dump() + " is not one this qtool reads (1)");
  const std::string fp = rd.member(j, "model_fingerprint", json::value_t::string, "a string").get<std::string>();
  if (fp != expected)
    throw InputError(Kind::Usage, path, "", "statistics were gathered on a different model (fingerprint mismatch)",
                     expected, fp);
  ActivationStats s;
  if (j.contains("observer"))  // absent from the first files: static_minmax
    s.observer = rd.member(j, "observer", json::value_t::string, "a string").get<std::string>();
  if (s.observer.empty()) rd.bad("'observer' is empty");
  s.input_absmax = rd.absmax_map(j, "input_absmax", ".weight");
  s.k_absmax = rd.absmax_map(j, "k_absmax", ".k_proj.weight");
  s.v_absmax = rd.absmax_map(j, "v_absmax", ".v_proj.weight");
  s.channel_min = rd.channel_map(j, "channel_min");
  s.channel_max = rd.channel_map(j, "channel_max");
  for (const auto& [name, mn] : s.channel_min) {
    const auto it = s.channel_max.find(name);
    if (it == s.channel_max.end()) rd.bad("channel_min '" + printable(name) + "' has no channel_max");
    if (it->second.size() != mn.size())
      rd.bad("channel_min '" + printable(name) + "' has " + std::to_string(mn.size()) + " channels, channel_max " +
             std::to_string(it->second.size()));
    for (size_t i = 0; i < mn.size(); ++i)
      if (mn[i] > it->second[i])
        rd.bad("channel " + std::to_string(i) + " of '" + printable(name) + "': channel_min " + fmt::format("{}", mn[i]) +
               " is above channel_max " + fmt::format("{}", it->second[i]));
  if (j.contains("moe_calibration")) {
    s.moe_calibration = rd.member(j, "moe_calibration", json::value_t::string, "a string").get<std::string>();
    if (s.moe_calibration != "all" && s.moe_calibration != "routed")
      rd.bad("'moe_calibration' is '" + printable(s.moe_calibration) + "', not all or routed");
  }
  if (j.contains("routed_tokens")) {
    const json& rt = rd.member(j, "routed_tokens", json::value_t::object, "an object");
    for (const auto& [block, counts] : rt.items()) {
      if (!counts.is_array()) rd.bad("'routed_tokens." + printable(block) + "' is not a list");
      std::vector<int64_t> v;
      for (const auto& c : counts) {
        if (!c.is_number_unsigned()) rd.bad("'routed_tokens." + printable(block) + "' holds a value that is not a non-negative integer");
        v.push_back(static_cast<int64_t>(c.get<uint64_t>()));
      }
      s.routed_tokens[block] = std::move(v);
    }
  }
  }
  for (const auto& [name, mx] : s.channel_max)
    if (!s.channel_min.count(name)) rd.bad("channel_max '" + printable(name) + "' has no channel_min");
  const json& d = rd.member(j, "data", json::value_t::object, "an object");
  StatsProvenance p;
  p.model_fingerprint = fp;
  p.data_source = rd.member(d, "source", json::value_t::string, "a string", "data").get<std::string>();
  p.data_sha256 = rd.member(d, "sha256", json::value_t::string, "a string", "data").get<std::string>();
  auto count = [&](const char* key) {
    const uint64_t v = rd.member(d, key, json::value_t::number_unsigned, "a non-negative integer", "data").get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) rd.bad(std::string("'data.") + key + "' is too large");
    return static_cast<int64_t>(v);
  };
  p.num_samples = count("num_samples");
  p.seq_len = count("seq_len");
  p.tokens = count("tokens");
  p.seed = rd.member(d, "seed", json::value_t::number_unsigned, "a non-negative integer", "data").get<uint64_t>();
  p.observer = s.observer;
  if (j.contains("calib_precision")) {  // absent: f32 (written only for bf16)
    p.calib_precision = rd.member(j, "calib_precision", json::value_t::string, "a string").get<std::string>();
    if (p.calib_precision != "f32" && p.calib_precision != "bf16")
      rd.bad("'calib_precision' is '" + printable(p.calib_precision) + "', not f32 or bf16");
  }
  if (j.contains("calib_kernels")) {  // bf16 only: "own" or "onednn-<implementation>", comma-separated
    p.calib_kernels = rd.member(j, "calib_kernels", json::value_t::string, "a string").get<std::string>();
    bool ok = p.calib_precision == "bf16" && !p.calib_kernels.empty();
    for (const std::string& id : split_calib_kernels(p.calib_kernels))
      ok = ok && (id == "own" || (id.size() > 7 && id.compare(0, 7, "onednn-") == 0));
    if (!ok)
      rd.bad("'calib_kernels' is '" + printable(p.calib_kernels) +
             "', not a comma-separated list of 'own' and 'onednn-<implementation>' of a bf16 file");
  }
  if (prov) *prov = p;
  return s;
}

}  // namespace qt::calib
