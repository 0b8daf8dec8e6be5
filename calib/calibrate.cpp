#include "calib/calibrate.h"

#include "calib/forward.h"
#include "calib/model_config.h"
#include "calib/observers.h"
#include "formats/checkpoint.h"
#include "formats/model_folder.h"
#include "libquant/error.h"

namespace qt::calib {
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
  fo.moe_all_experts = opts.moe_all_experts;
  fo.lm_head_tied = cfg.lm_head_tied(ck.find("lm_head.weight") != nullptr);
  fo.source = model.dir();
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
