#include "calib/calibrate.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include "calib/forward.h"
#include "calib/model_config.h"
#include "calib/observers.h"
#include "formats/checkpoint.h"
#include "formats/model_folder.h"
#include "libquant/error.h"
#include "libquant/float_formats.h"
#include "libquant/parallel.h"

namespace qt::calib {
namespace {

// num_hidden_layers must agree with the checkpoint: fewer layers in the config would leave the
// checkpoint's last layers uncalibrated (and reported much later as "no calibration statistic").
void check_layer_count(const ModelConfig& cfg, const Checkpoint& ck, const std::string& config_path) {
  int64_t layers = 0;
  const std::string prefix = "model.layers.";
  for (const TensorView& t : ck.tensors()) {
    if (t.name.rfind(prefix, 0) != 0) continue;
    const size_t dot = t.name.find('.', prefix.size());
    const std::string idx = t.name.substr(prefix.size(), dot == std::string::npos ? std::string::npos : dot - prefix.size());
    if (idx.empty() || idx.size() > 9 || idx.find_first_not_of("0123456789") != std::string::npos) continue;
    layers = std::max<int64_t>(layers, std::stoll(idx) + 1);
  }
  if (layers == 0)
    throw InputError(InputError::Kind::BadFile, config_path, "",
                     "num_hidden_layers is " + std::to_string(cfg.num_layers) +
                         ", but the checkpoint has no model.layers.* tensors");
  if (layers != cfg.num_layers)
    throw InputError(InputError::Kind::BadFile, config_path, "",
                     "num_hidden_layers is " + std::to_string(cfg.num_layers) + ", but the checkpoint has " +
                         std::to_string(layers) + " layers (model.layers.0 .. model.layers." +
                         std::to_string(layers - 1) + ")");
}

std::string nonfinite_text(const TensorView& tv, int64_t i) {
  float f = 0.0f;
  const uint64_t elem = tv.bytes.size() / tv.numel();
  decode_to_f32(tv.dtype, tv.bytes.data() + static_cast<uint64_t>(i) * elem, 1, &f);
  std::string what;
  if (std::isnan(f)) what = "NaN";
  else if (tv.dtype == DType::F64) {
    double d = 0.0;
    std::memcpy(&d, tv.bytes.data() + static_cast<uint64_t>(i) * 8, 8);
    what = std::isfinite(d) ? fmt::format("{:g}, beyond the f32 range the forward pass computes in", d)
                            : (d > 0 ? "+Inf" : "-Inf");
  } else what = f > 0 ? "+Inf" : "-Inf";
  return "weight element " + std::to_string(i) + " is " + what + "; calibration needs finite weights";
}

}  // namespace

void check_calibration_inputs(const ModelFolder& model, int num_threads) {
  const ModelConfig cfg = ModelConfig::from_json(model.config(), model.config_path());
  const Checkpoint& ck = model.checkpoint();
  check_layer_count(cfg, ck, model.config_path());
  std::set<std::string> seen;
  for (const WeightSpec& w : forward_weights(cfg)) {
    if (!seen.insert(w.name).second) continue;
    const TensorView* tv = ck.find(w.name);
    check_weight_view(tv, w.name, model.dir(), w.shape);
    const uint64_t n = tv->numel();
    if (n == 0) continue;
    const uint64_t elem = tv->bytes.size() / n;
    // Chunks scanned in parallel; the smallest bad index over all chunks is the first one.
    constexpr uint64_t kChunk = 1u << 20;
    const int64_t chunks = static_cast<int64_t>((n + kChunk - 1) / kChunk);
    int64_t first = -1;
    const int threads = resolve_threads(num_threads);
#pragma omp parallel for schedule(static) num_threads(threads) if (chunks > 1)
    for (int64_t c = 0; c < chunks; ++c) {
      const uint64_t b = static_cast<uint64_t>(c) * kChunk, m = std::min<uint64_t>(kChunk, n - b);
      const int64_t i = first_nonfinite_f32(tv->dtype, tv->bytes.data() + b * elem, m);
      if (i >= 0) {
#pragma omp critical
        if (first < 0 || static_cast<int64_t>(b) + i < first) first = static_cast<int64_t>(b) + i;
      }
    }
    if (first >= 0) throw InputError(InputError::Kind::BadValue, tv->file, w.name, nonfinite_text(*tv, first));
  }
}

CalibrationRun calibrate(const ModelFolder& model, const std::vector<std::vector<int32_t>>& samples,
                         const CalibrateOptions& opts) {
  const ModelConfig cfg = ModelConfig::from_json(model.config(), model.config_path());
  const Checkpoint& ck = model.checkpoint();
  // Every weight the forward loads is known finite from here on (a NaN or Inf is named with its
  // file, tensor and element instead of surfacing later as a missing or infinite statistic);
  // the largest |w| of each tensor is kept as it is loaded to name the likely culprit when a
  // layer overflows f32.
  check_calibration_inputs(model, opts.num_threads);
  WeightProvider decode = make_view_weight_provider([&ck](const std::string& n) { return ck.find(n); }, model.dir());
  std::map<std::string, float> max_abs;
  WeightProvider weights = [&](const std::string& name, std::vector<float>& out, std::vector<int64_t>& shape) {
    decode(name, out, shape);
    float m = 0.0f;
    for (float x : out) m = std::max(m, std::fabs(x));
    max_abs[name] = m;
  };
  ForwardOptions fo;
  AbsMaxObserver absmax;
  EmaObserver ema(opts.ema_c);
  if (opts.observer == "static_minmax") fo.observer = &absmax;
  else if (opts.observer == "minmax") fo.observer = &ema;
  else
    throw InputError(InputError::Kind::Usage, "", "", "unknown observer '" + opts.observer + "'",
                     "static_minmax or minmax");
  fo.num_threads = opts.num_threads;
  fo.precision = opts.precision;
  fo.on_layer_done = opts.on_layer_done;
  fo.hidden_spill = opts.hidden_spill;
  fo.moe_all_experts = opts.moe_all_experts;
  fo.lm_head_tied = cfg.lm_head_tied(ck.find("lm_head.weight") != nullptr);
  fo.source = model.dir();
  fo.check_finite = true;
  fo.explain_overflow = [&max_abs](int64_t l) {
    const std::string prefix = "model.layers." + std::to_string(l) + ".";
    const std::pair<const std::string, float>* top = nullptr;
    for (const auto& e : max_abs)
      if (e.first.rfind(prefix, 0) == 0 && (!top || e.second > top->second)) top = &e;
    if (!top) return std::string();
    return "; its largest weight is " + fmt::format("{:g}", top->second) + " in " + top->first +
           " (f32 arithmetic overflows on weights that large)";
  };
  ForwardStats fs = run_forward(cfg, weights, samples, fo);
  CalibrationRun r;
  r.stats = opts.observer == "static_minmax" ? absmax.stats() : ema.stats();
  r.stats.observer = opts.observer;
  if (cfg.is_moe()) r.stats.moe_calibration = opts.moe_all_experts ? "all" : "routed";
  r.samples = fs.samples;
  r.tokens = fs.tokens;
  r.seconds = fs.seconds;
  r.hidden_bytes = fs.hidden_bytes;
  r.hidden_spilled = fs.hidden_spilled;
  return r;
}

}  // namespace qt::calib
