#include "calib/gptq.h"

#include <chrono>
#include <memory>
#include <set>

#include "calib/calibrate.h"
#include "calib/forward.h"
#include "calib/model_config.h"
#include "calib/observers.h"
#include "formats/checkpoint.h"
#include "formats/model_folder.h"
#include "libquant/error.h"

namespace qt::calib {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Accumulates the Hessians of the current layer's quantized Linears. A shared input (q/k/v,
// gate/up) is one Hessian, keyed by its producer (the norm); an own input is keyed by the module.
class HessianObserver : public Observer {
 public:
  HessianObserver(std::set<std::string> targets, int threads) : targets_(std::move(targets)), threads_(threads) {}

  void on_linear_input(const std::string& module, const float* x, int64_t tokens, int64_t in) override {
    if (targets_.count(module)) add(module, {module}, x, tokens, in);
  }
  void on_shared_linear_input(const std::string& producer, const std::vector<std::string>& modules, const float* x,
                              int64_t tokens, int64_t in) override {
    std::vector<std::string> wanted;
    for (const auto& m : modules)
      if (targets_.count(m)) wanted.push_back(m);
    if (!wanted.empty()) add(producer, wanted, x, tokens, in);
  }

  // The Hessian of `module`'s input, or null if it saw none.
  Hessian* of(const std::string& module) const {
    auto k = key_of_.find(module);
    if (k == key_of_.end()) return nullptr;
    return hessians_.at(k->second).get();
  }
  uint64_t bytes() const {
    uint64_t b = 0;
    for (const auto& [k, h] : hessians_) b += h->bytes();
    return b;
  }
  void clear() { hessians_.clear(), key_of_.clear(); }
  double seconds = 0;

 private:
  void add(const std::string& key, const std::vector<std::string>& modules, const float* x, int64_t tokens, int64_t in) {
    const auto t0 = Clock::now();
    auto& h = hessians_[key];
    if (!h) h = std::make_unique<Hessian>(in);
    for (const auto& m : modules) key_of_[m] = key;
    h->add_sample(x, tokens, threads_);
    seconds += since(t0);
  }
  std::set<std::string> targets_;
  int threads_;
  std::map<std::string, std::unique_ptr<Hessian>> hessians_;
  std::map<std::string, std::string> key_of_;
};

// Hands every observation to each of its observers in turn (the Hessians and the activation
// statistics of the same pass).
class TeeObserver : public Observer {
 public:
  explicit TeeObserver(std::vector<Observer*> obs) : obs_(std::move(obs)) {}
  void on_linear_input(const std::string& m, const float* x, int64_t t, int64_t in) override {
    for (Observer* o : obs_) o->on_linear_input(m, x, t, in);
  }
  void on_shared_linear_input(const std::string& p, const std::vector<std::string>& ms, const float* x, int64_t t,
                              int64_t in) override {
    for (Observer* o : obs_) o->on_shared_linear_input(p, ms, x, t, in);
  }
  void on_kv(const std::string& a, const float* k, const float* v, int64_t t, int64_t d) override {
    for (Observer* o : obs_) o->on_kv(a, k, v, t, d);
  }

 private:
  std::vector<Observer*> obs_;
};

}  // namespace

ScratchFiles gptq_scratch_files(const ModelFolder& model, const QuantPlan& plan, int64_t tokens,
                                const GptqRunOptions& opts) {
  ScratchFiles s;
  s.owner = "GPTQ's temporary files";
  s.during_write_what = "quantized weights";
  s.before_write_what = "hidden states";
  if (!opts.weights_spill_dir.empty()) {
    const bool int4 = plan.options.effective_scheme().weights.type == QuantType::Int4;
    const std::set<std::string> modules(plan.quantized_modules.begin(), plan.quantized_modules.end());
    for (const OutputTensor& o : plan.outputs)
      if (o.kind == OutputTensor::Kind::WeightScale && modules.count(o.source.substr(0, o.source.rfind('.'))))
        s.during_write += o.nbytes;
    for (const std::string& m : plan.quantized_modules) {
      const TensorView* t = model.checkpoint().find(m + ".weight");
      QT_ASSERT(t != nullptr);
      s.during_write += int4 ? (t->numel() + 1) / 2 : t->numel();
    }
  }
  const ModelConfig cfg = ModelConfig::from_json(model.config(), model.config_path());
  const uint64_t hidden = static_cast<uint64_t>(tokens) * static_cast<uint64_t>(cfg.hidden_size) * sizeof(float);
  if (!opts.hidden_spill.dir.empty() && hidden > opts.hidden_spill.above_bytes) s.before_write = hidden;
  return s;
}

GptqRun run_gptq(const ModelFolder& model, const QuantPlan& plan, const std::vector<std::vector<int32_t>>& samples,
                 const GptqRunOptions& opts) {
  const auto t_start = Clock::now();
  check_calibration_inputs(model, opts.num_threads);
  const ModelConfig cfg = ModelConfig::from_json(model.config(), model.config_path());
  const Checkpoint& ck = model.checkpoint();
  const QuantArgs args = plan.options.effective_scheme().weights;
  const std::set<std::string> targets(plan.quantized_modules.begin(), plan.quantized_modules.end());

  GptqRun run;
  run.weights = QuantizedStore(opts.weights_spill_dir);
  HessianObserver hess(targets, opts.num_threads);
  // The activation statistics of the same observation passes (static input scales, KV scales,
  // SmoothQuant's channel ranges): what each layer's inputs are once the layers before it are
  // quantized (and smoothed), the layer itself still as stored -- when llm-compressor's
  // observers see them (libquant/NUMERICS.md, GPTQ).
  AbsMaxObserver absmax;
  EmaObserver ema(opts.ema_c);
  Observer* stats_obs = nullptr;
  if (opts.observer == "static_minmax") stats_obs = &absmax;
  else if (opts.observer == "minmax") stats_obs = &ema;
  else if (!opts.observer.empty())
    throw InputError(InputError::Kind::Usage, "", "", "unknown observer '" + opts.observer + "'",
                     "static_minmax or minmax", opts.observer);
  auto stats_now = [&] {
    ActivationStats st = stats_obs == &ema ? ema.stats() : absmax.stats();
    st.observer = opts.observer;
    return st;
  };
  TeeObserver tee({&hess, stats_obs});
  std::vector<SmoothingMapping> mappings;
  std::set<std::string> linear_smoothed;  // smoothed Linears (up_proj of the "all" mappings)
  if (opts.smoothing) {
    if (!stats_obs)
      throw InputError(InputError::Kind::Usage, "", "", "GPTQ with SmoothQuant needs an observer for its channel ranges");
    run.smoothing = begin_smoothing_plan(opts.smoothing->alpha, opts.smoothing->which);
    mappings = smoothing_mappings(model, opts.smoothing->which);
    for (const auto& m : mappings)
      if (m.smooth_is_linear) linear_smoothed.insert(m.smooth);
    // The forward pass holds no bias to rewrite: a smoothed Linear with one (up_proj with
    // mlp_bias, mappings "all") is refused rather than written inconsistently.
    for (const auto& m : mappings)
      if (const TensorView* b = ck.find(m.smooth + ".bias"))
        throw InputError(InputError::Kind::Unsupported, model.dir(), b->name,
                         "--smoothquant with --algorithm gptq cannot smooth a Linear with a bias (" + m.smooth +
                             " -> " + m.balance[0] + "); use --smoothing-mappings norms");
  }
  ForwardOptions fo;
  fo.observer = stats_obs ? static_cast<Observer*>(&tee) : &hess;
  fo.num_threads = opts.num_threads;
  fo.on_layer_done = opts.on_layer_done;
  fo.hidden_spill = opts.hidden_spill;
  fo.lm_head_tied = cfg.lm_head_tied(ck.find("lm_head.weight") != nullptr);
  fo.source = model.dir();
  fo.rewrite_layer = [&](int64_t layer, const std::vector<LayerLinear>& linears, const std::vector<LayerNorm>& norms) {
    run.peak_hessian_bytes = std::max(run.peak_hessian_bytes, hess.bytes());
    // SmoothQuant first, as llm-compressor's SmoothQuantModifier acts at the end of a layer's
    // calibration pass before GPTQModifier does: this layer's factors from the channel ranges just
    // observed, then the layer's weights smoothed (balance Linears' columns multiplied, norms and
    // up_proj's rows divided). GPTQ then quantizes the smoothed weights (their round-to-nearest
    // scales), with the Hessians of the inputs as observed, i.e. before smoothing (theirs too).
    std::map<std::string, std::vector<uint8_t>> smoothed;  // tensor -> smoothed bytes
    if (run.smoothing) {
      const std::string p = "model.layers." + std::to_string(layer) + ".";
      const ActivationStats st = stats_now();
      for (const SmoothingMapping& m : mappings)
        if (m.smooth.rfind(p, 0) == 0) add_smoothing_mapping(model, m, st, *run.smoothing);
      auto smooth = [&](const std::string& tensor) {
        const TensorView* tv = ck.find(tensor);
        if (!tv) return;
        std::vector<uint8_t> b = run.smoothing->smoothed_bytes(*tv);
        if (!b.empty()) smoothed[tensor] = std::move(b);
      };
      for (const LayerLinear& l : linears) smooth(l.module + ".weight");
      for (const LayerNorm& n : norms) smooth(n.module + ".weight");
      auto decoded = [&](const std::string& tensor) {
        TensorView t = *ck.find(tensor);
        t.bytes = smoothed.at(tensor);
        return decode_tensor_f32(t);
      };
      for (const LayerNorm& n : norms)
        if (smoothed.count(n.module + ".weight")) *n.weight = decoded(n.module + ".weight");
      // Linears that stay unquantized (--ignore) compute with their smoothed weights.
      for (const LayerLinear& l : linears)
        if (!targets.count(l.module) && smoothed.count(l.module + ".weight")) *l.weight = decoded(l.module + ".weight");
    }
    // One factor per Hessian (q/k/v share one, gate/up another): computed for the first of its
    // modules (the Hessian's memory becomes the factor's), freed after the last.
    std::map<const Hessian*, int> users;
    for (const LayerLinear& l : linears) {
      if (!targets.count(l.module)) continue;
      const Hessian* h = hess.of(l.module);
      if (!h || h->samples() == 0)
        throw InputError(InputError::Kind::BadValue, model.dir(), l.module + ".weight",
                         "GPTQ: the module saw no calibration tokens");
      ++users[h];
    }
    std::map<const Hessian*, GptqFactor> factors;
    for (const LayerLinear& l : linears) {
      if (!targets.count(l.module)) continue;
      Hessian* h = hess.of(l.module);
      const TensorView* tv = ck.find(l.module + ".weight");
      QT_ASSERT(tv != nullptr);
      auto f = factors.find(h);
      if (f == factors.end()) {
        const int64_t n = h->columns();
        // With SmoothQuant: the Hessian of the input as observed, before this layer's smoothing
        // (llm-compressor's; libquant/NUMERICS.md 9.7) -- except after qtool's own up_proj ->
        // down_proj mapping, which llm-compressor does not have: there down_proj gets the
        // Hessian of its smoothed input, diag(1/s) H diag(1/s) (the observed one ruined
        // SmolLM2's down_proj: bench/RESULTS.md).
        std::vector<double> Hn = h->release_normalized();
        if (run.smoothing) {
          auto cf = run.smoothing->column_factors.find(l.module + ".weight");
          if (cf != run.smoothing->column_factors.end() && linear_smoothed.count(cf->second)) {
            const std::vector<float>& sv = run.smoothing->factors.at(cf->second);
            QT_ASSERT(static_cast<int64_t>(sv.size()) == n);
            for (int64_t i = 0; i < n; ++i)
              for (int64_t j = 0; j < n; ++j)
                Hn[static_cast<size_t>(i * n + j)] /= static_cast<double>(sv[static_cast<size_t>(i)]) * sv[static_cast<size_t>(j)];
          }
        }
        f = factors.emplace(h, gptq_factor(std::move(Hn), n, opts.gptq, opts.num_threads)).first;
        run.solve_seconds += f->second.seconds;
      }
      TensorView w = *tv;
      if (auto sm = smoothed.find(l.module + ".weight"); sm != smoothed.end()) w.bytes = sm->second;
      GptqResult g = gptq_quantize(w, args, f->second, opts.gptq, opts.num_threads);
      if (--users[h] == 0) factors.erase(f);
      run.update_seconds += g.update_seconds;
      run.dead_columns += g.dead_columns;
      run.loss[l.module] = g.loss;
      if (g.rtn_fallback) run.rtn_fallback.push_back(l.module);
      QT_ASSERT(l.weight->size() == g.dequant.size());
      *l.weight = std::move(g.dequant);
      run.weights.put(l.module, std::move(g.q));
    }
    hess.clear();
  };
  ForwardStats fs = run_forward(cfg, make_view_weight_provider([&ck](const std::string& n) { return ck.find(n); }, model.dir()),
                                samples, fo);
  for (const auto& m : plan.quantized_modules)
    if (!run.weights.contains(m))
      throw InputError(InputError::Kind::Unsupported, model.dir(), m + ".weight",
                       "GPTQ: the forward pass never reached this module (only decoder-layer Linears can be quantized with "
                       "--algorithm gptq; use --ignore to keep it)");
  if (stats_obs) run.stats = stats_now();
  if (run.smoothing) {
    // The plan's statistics: the pass's, with the balance Linears' input_absmax as smoothed.
    SmoothingPlan& sp = *run.smoothing;
    ActivationStats full = run.stats;
    for (const auto& [k, v] : sp.stats.input_absmax) full.input_absmax[k] = v;
    sp.stats = std::move(full);
    if (sp.mappings.empty()) sp.min_factor = 0;
  }
  run.samples = fs.samples;
  run.tokens = fs.tokens;
  run.hessian_seconds = hess.seconds;
  run.seconds = since(t_start);
  run.forward_seconds = fs.seconds - fs.rewrite_seconds - hess.seconds;
  run.hidden_bytes = fs.hidden_bytes;
  run.hidden_spilled = fs.hidden_spilled;
  return run;
}

}  // namespace qt::calib
