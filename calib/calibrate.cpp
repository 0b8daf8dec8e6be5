#include "calib/calibrate.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "calib/forward.h"
#include "calib/model_config.h"
#include "calib/observers.h"
#include "formats/checkpoint.h"
#include "formats/model_folder.h"
#include "libquant/error.h"

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

}  // namespace

CalibrationRun calibrate(const ModelFolder& model, const std::vector<std::vector<int32_t>>& samples,
                         const CalibrateOptions& opts) {
  const ModelConfig cfg = ModelConfig::from_json(model.config(), model.config_path());
  const Checkpoint& ck = model.checkpoint();
  check_layer_count(cfg, ck, model.config_path());
  // Every weight is checked as it is loaded: a NaN or Inf is named here (tensor, file, element)
  // instead of surfacing later as a missing or infinite statistic; the largest |w| of each
  // tensor is kept to name the likely culprit when a layer overflows f32.
  WeightProvider decode = make_view_weight_provider([&ck](const std::string& n) { return ck.find(n); }, model.dir());
  std::map<std::string, float> max_abs;
  WeightProvider weights = [&](const std::string& name, std::vector<float>& out, std::vector<int64_t>& shape) {
    decode(name, out, shape);
    float m = 0.0f;
    for (size_t i = 0; i < out.size(); ++i) {
      if (!std::isfinite(out[i])) {
        const TensorView* tv = ck.find(name);
        throw InputError(InputError::Kind::BadValue, tv ? tv->file : model.dir(), name,
                         "weight element " + std::to_string(i) + " is " +
                             (std::isnan(out[i]) ? "NaN" : out[i] > 0 ? "+Inf" : "-Inf") +
                             "; calibration needs finite weights");
      }
      m = std::max(m, std::fabs(out[i]));
    }
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
