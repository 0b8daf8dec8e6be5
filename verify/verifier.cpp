// The verifier: runs the checks of verify.h in order over one quantized folder (and its
// reference) and fills the VerifyReport.
#include "verify/verify.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <set>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "calib/model_config.h"
#include "calib/smoothing.h"
#include "calib/tokenizer/tokenizer.h"
#include "formats/checkpoint.h"
#include "formats/model_folder.h"
#include "libquant/cpu_isa.h"
#include "libquant/error.h"
#include "libquant/float_formats.h"
#include "libquant/kernels/act_quant.h"
#include "libquant/quantize.h"
#include "verify/inspect.h"
#include "verify/moe_served.h"

namespace qt::verify {

using Kind = InputError::Kind;
using Clock = std::chrono::steady_clock;
using kernels::ActScheme;
using kernels::ActType;
using kernels::Kernel;
using kernels::LinearDescriptor;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

namespace {
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
}  // namespace

namespace {

// Everything verify needs about one quantized Linear.
struct LayerCtx {
  const QuantizedLinearEntry* e = nullptr;
  const Kernel* chosen = nullptr;
  bool loadable = true;       // load_quantized_linear succeeded and scales are usable
  float static_scale = 0.0f;  // StaticTensor (input_scale) or NVFP4 activations (input_global_scale)
  bool checked = false;
  // SmoothQuant, against the reference (empty when not smoothed or no reference): the deployed
  // input is x * input_ratio (per input channel; g'/g for a smoothed norm, 1/s after a smoothed
  // up_proj) and the deployed output is y * output_ratio (per output channel; up_proj's 1/s).
  std::shared_ptr<const std::vector<double>> input_ratio, output_ratio;
};

class Verifier {
 public:
  explicit Verifier(const VerifyOptions& o) : o_(o) {}

  VerifyReport run(bool full) {
    const auto t0 = Clock::now();
    open();
    structure();
    choose_kernels();
    if (full) {
      open_reference();
      init_layers();
      model_level();
      for (size_t i = 0; i < ctx_.size(); ++i)
        if (!ctx_[i].checked) {
          const LinearDescriptor& d = ctx_[i].e->desc;
          const int64_t M = std::max<int64_t>(o_.gemm_tokens, 1);
          const std::vector<float> X = synthetic_activations(M, d.K, o_.seed + i);
          check_layer(i, X.data(), M, "synthetic");
        }
      if (o_.bench) bench();
      summarize();
    } else {
      r_.pass = true;
      for (const auto& f : r_.findings)
        if (f.severity == "error") r_.pass = false;
    }
    r_.seconds = since(t0);
    return std::move(r_);
  }

 private:
  void progress(const std::string& s) {
    if (o_.on_progress) o_.on_progress(s);
  }
  void finding(const std::string& sev, const std::string& where, const std::string& msg) {
    r_.findings.push_back({sev, where, msg});
  }

  void open() {
    qm_.emplace(ModelFolder::open(o_.quant_dir));
    r_.quant_dir = o_.quant_dir;
    r_.reference_dir = o_.reference_dir;
    q_ = parse_quant_info(qm_->config(), qm_->config_path());
    if (!q_.unknown_format.empty())
      throw InputError(Kind::BadFile, qm_->config_path(), "",
                       "quantization_config format '" + q_.unknown_format +
                           "' is not a compressed-tensors format; vLLM cannot load it");
    if (q_.method.empty())
      throw InputError(Kind::Usage, qm_->config_path(), "",
                       "the model is not quantized (config.json has no quantization_config); verify takes the "
                       "quantized folder first and the original with --reference");
    r_.quant_method = q_.method;
    r_.format = q_.format;
    for (const auto& g : q_.groups) r_.groups.push_back(g.name + ": weights " + g.weights_text + "; activations " + g.input_text);
    for (const Kernel* k : kernels::Registry::builtin().kernels())
      r_.registry.push_back({std::string(k->name()), std::string(k->summary()), k->priority()});
    r_.cpu_isa = isa_name(active_isa());
  }

  // Step 1: findings that need no GEMM.
  void structure() {
    const Checkpoint& ck = qm_->checkpoint();
    InspectReport ins = inspect_checkpoint(ck, qm_->config(), o_.quant_dir);
    for (const auto& f : ins.findings) finding(f.severity, f.where, f.message);
    std::vector<std::string> skipped;
    entries_ = find_quantized_linears(ck, q_, &skipped);
    for (const auto& s : skipped) finding("error", s.substr(0, s.find(':')), "cannot be verified: " + s.substr(s.find(':') + 2));
    if (entries_.empty()) finding("error", "checkpoint", "no quantized Linear layer that qtool can verify");
    ctx_.resize(entries_.size());
    for (size_t i = 0; i < entries_.size(); ++i) {
      LayerCtx& c = ctx_[i];
      const QuantizedLinearEntry& e = entries_[i];
      c.e = &e;
      // Scales: finite and > 0 (a zero or negative scale is never written by a quantizer: an
      // all-zero group gets the dtype's epsilon).
      for (const std::string& name : {e.scale_tensor, e.input_scale_tensor}) {
        if (name.empty()) continue;
        const TensorView* t = ck.find(name);
        if (!t) continue;
        std::vector<float> v;
        try {
          v = decode_tensor_f32(*t);
        } catch (const InputError& err) {
          finding("error", name, err.problem());
          c.loadable = false;
          continue;
        }
        uint64_t nan = 0, inf = 0, zero = 0, neg = 0;
        for (float x : v) nan += std::isnan(x), inf += std::isinf(x), zero += x == 0.0f, neg += x < 0.0f;
        if (nan || inf || zero || neg) {
          finding("error", name, "scale has " + std::to_string(zero) + " zero, " + std::to_string(neg) + " negative, " +
                                     std::to_string(nan) + " NaN and " + std::to_string(inf) + " Inf values (of " +
                                     std::to_string(v.size()) + ")");
          c.loadable = false;
        }
      }
      try {
        (void)load_quantized_linear(ck, e);
      } catch (const InputError& err) {
        finding("error", e.module, err.problem() + (err.expected().empty() ? "" : " (expected " + err.expected() + ", got " + err.got() + ")"));
        c.loadable = false;
      }
      if (c.loadable && e.desc.needs_static_act_scale()) {
        const std::string why = read_input_scale(ck, e, c.static_scale);
        if (!why.empty()) {
          finding("error", e.input_scale_tensor, "static input scale " + why);
          c.loadable = false;
        }
      }
    }
    // Mixture of experts: from here on every check uses the scales and codes vLLM's fused-MoE
    // method computes with (the stored ones were checked above).
    const MoeServedSummary moe = apply_vllm_moe_rules(ck, entries_);
    r_.moe_served = moe.describe();
    for (LayerCtx& c : ctx_)
      if (c.loadable && c.e->desc.act_scheme == ActScheme::StaticTensor) (void)read_input_scale(ck, *c.e, c.static_scale);
  }

  // Step 2: the registry's choice, grouped by identical descriptors.
  void choose_kernels() {
    const auto& reg = kernels::Registry::builtin();
    std::map<std::string, size_t> group_of;
    for (size_t i = 0; i < ctx_.size(); ++i) {
      const LinearDescriptor& d = ctx_[i].e->desc;
      const kernels::Selection sel = reg.select(d, o_.select);
      ctx_[i].chosen = sel.chosen;
      const std::string key = d.describe();
      auto it = group_of.find(key);
      if (it == group_of.end()) {
        it = group_of.emplace(key, r_.kernels.size()).first;
        r_.kernels.push_back(make_kernel_group(reg, d, sel));
      }
      r_.kernels[it->second].modules.push_back(ctx_[i].e->module);
      if (!sel.chosen) finding("error", ctx_[i].e->module, sel.error);
    }
  }

  void open_reference() {
    if (o_.reference_dir.empty()) return;
    rm_.emplace(ModelFolder::open(o_.reference_dir));
    const auto& rc = rm_->config();
    if (rc.contains("quantization_config") || rc.contains("compression_config"))
      throw InputError(Kind::Usage, rm_->config_path(), "",
                       "the reference model is itself quantized; pass the original (unquantized) model folder");
    for (const char* k : {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"}) {
      const auto a = qm_->config().value(k, nlohmann::json()), b = rc.value(k, nlohmann::json());
      if (a != b)
        throw InputError(Kind::Usage, rm_->config_path(), "",
                         std::string("the reference is a different model: ") + k + " differs from " + qm_->config_path(),
                         a.dump(), b.dump());
    }
    for (const auto& e : entries_) {
      const TensorView* t = rm_->checkpoint().find(e.module + ".weight");
      if (!t)
        throw InputError(Kind::Missing, o_.reference_dir, e.module + ".weight",
                         "the reference checkpoint lacks this quantized layer's weight");
      if (t->shape != std::vector<int64_t>{e.desc.N, e.desc.K})
        throw InputError(Kind::Usage, t->file, t->name, "the reference weight's shape differs from the quantized layer's",
                         shape_string({e.desc.N, e.desc.K}), shape_string(t->shape));
      if (!dtype_is_float(t->dtype) || t->dtype == DType::F8_E4M3 || t->dtype == DType::F8_E5M2)
        throw InputError(Kind::Usage, t->file, t->name, "the reference weight is not in a high-precision float dtype",
                         "BF16, F16 or F32", std::string(dtype_name(t->dtype)));
    }
    detect_smoothing();
  }

  // SmoothQuant leaves the model's function unchanged but moves per-channel factors from a norm
  // (or up_proj) into the Linears it feeds; against the (unsmoothed) reference they must be undone.
  void detect_smoothing() {
    // Which norm feeds which Linear: the same table quantize smooths by (calib/smoothing.h),
    // read off the reference, MoE layers' post_attention_layernorm -> experts included (a norm
    // that was not smoothed shows ratio 1 and is skipped below). A layout it does not know has no
    // norm mappings.
    std::map<std::string, std::string> norm_of;
    try {
      for (const auto& m : calib::smoothing_mappings(*rm_, calib::SmoothingMappings::Norms, /*moe_norm=*/true))
        for (const auto& b : m.balance) norm_of[b] = m.smooth;
    } catch (const InputError&) {
      norm_of.clear();
    }
    std::map<std::string, std::shared_ptr<const std::vector<double>>> ratio_of;
    for (auto& c : ctx_) {
      auto nit = norm_of.find(c.e->module);
      if (nit == norm_of.end()) continue;
      const std::string& norm = nit->second;
      auto it = ratio_of.find(norm);
      if (it == ratio_of.end()) {
        std::shared_ptr<const std::vector<double>> r;
        const TensorView* gq = qm_->checkpoint().find(norm + ".weight");
        const TensorView* gr = rm_->checkpoint().find(norm + ".weight");
        if (gq && gr && gq->numel() == gr->numel() &&
            !(gq->dtype == gr->dtype && std::equal(gq->bytes.begin(), gq->bytes.end(), gr->bytes.begin(), gr->bytes.end()))) {
          const std::vector<float> a = decode_tensor_f32(*gq), b = decode_tensor_f32(*gr);
          auto v = std::make_shared<std::vector<double>>(a.size());
          bool differs = false;  // the same values stored in another dtype are not smoothing
          // A channel whose reference weight is 0 carries 0 either way: ratio 1.
          for (size_t j = 0; j < a.size(); ++j) {
            (*v)[j] = b[j] == 0.0f ? 1.0 : static_cast<double>(a[j]) / static_cast<double>(b[j]);
            differs = differs || (*v)[j] != 1.0;
          }
          if (differs) {
            r = v;
            r_.smoothed_layers.push_back(norm);
          }
        }
        it = ratio_of.emplace(norm, r).first;
      }
      if (it->second && it->second->size() != static_cast<size_t>(c.e->desc.K))
        throw InputError(Kind::BadFile, qm_->dir(), norm + ".weight",
                         "the norm's width differs from the input width of " + c.e->module,
                         std::to_string(c.e->desc.K), std::to_string(it->second->size()));
      c.input_ratio = it->second;
    }
    // up_proj -> down_proj factors from qtool_smoothing.json (a sidecar the checkpoint carries).
    const std::filesystem::path side = std::filesystem::path(o_.quant_dir) / calib::kSmoothingFactorsFile;
    std::error_code ec;
    if (!std::filesystem::exists(side, ec)) return;
    nlohmann::json j;
    try {
      j = read_json_file(side.string());
      if (j.value("format", "") != "qtool-smoothing-factors")
        throw InputError(Kind::BadFile, side.string(), "", "not a qtool smoothing factors file",
                         "\"format\": \"qtool-smoothing-factors\"", j.value("format", "(none)"));
      std::map<std::string, size_t> index;
      for (size_t i = 0; i < ctx_.size(); ++i) index[ctx_[i].e->module] = i;
      for (const auto& m : j.at("mappings")) {
        const std::string smooth = m.at("smooth").get<std::string>();
        if (smooth.size() < 8 || smooth.compare(smooth.size() - 8, 8, ".up_proj") != 0) continue;  // norms: detected above
        const std::vector<float> f = m.at("factors").get<std::vector<float>>();
        auto inv = std::make_shared<std::vector<double>>(f.size());
        for (size_t k = 0; k < f.size(); ++k) {
          if (!(f[k] > 0.0f) || !std::isfinite(f[k]))
            throw InputError(Kind::BadFile, side.string(), smooth, "smoothing factor " + std::to_string(k) + " is not a positive finite number");
          (*inv)[k] = 1.0 / static_cast<double>(f[k]);
        }
        auto up = index.find(smooth);
        if (up != index.end()) {
          if (static_cast<size_t>(ctx_[up->second].e->desc.N) != f.size())
            throw InputError(Kind::BadFile, side.string(), smooth, "smoothing factors do not match the layer's output width",
                             std::to_string(ctx_[up->second].e->desc.N), std::to_string(f.size()));
          ctx_[up->second].output_ratio = inv;
        }
        for (const auto& b : m.at("balance")) {
          auto d = index.find(b.get<std::string>());
          if (d == index.end()) continue;
          if (static_cast<size_t>(ctx_[d->second].e->desc.K) != f.size())
            throw InputError(Kind::BadFile, side.string(), d->first, "smoothing factors do not match the layer's input width",
                             std::to_string(ctx_[d->second].e->desc.K), std::to_string(f.size()));
          ctx_[d->second].input_ratio = inv;
        }
        r_.smoothed_layers.push_back(smooth + " (" + calib::kSmoothingFactorsFile + ")");
      }
    } catch (const nlohmann::json::exception& e) {
      throw InputError(Kind::BadFile, side.string(), "", std::string("malformed smoothing factors: ") + e.what());
    }
  }

  void init_layers() {
    r_.layers.resize(ctx_.size());
    for (size_t i = 0; i < ctx_.size(); ++i) {
      LayerReport& L = r_.layers[i];
      const QuantizedLinearEntry& e = *ctx_[i].e;
      L.module = e.module;
      L.descriptor = e.desc.describe();
      L.kernel = ctx_[i].chosen ? std::string(ctx_[i].chosen->name()) : "";
      L.N = e.desc.N;
      L.K = e.desc.K;
      L.gates = apply_overrides(default_gates(e.desc), o_.gates);
      L.gemm_err = L.act_err = kNaN;
    }
  }

  // Steps 3-4 for one layer on X[M, K].
  void check_layer(size_t i, const float* X, int64_t M, const char* source) {
    LayerCtx& c = ctx_[i];
    LayerReport& L = r_.layers[i];
    c.checked = true;
    L.activations = source;
    L.gemm_tokens = M;
    const QuantizedLinearEntry& e = *c.e;
    const LinearDescriptor& d = e.desc;
    if (!c.loadable) {
      L.failures.push_back("not checked: the layer's tensors are unusable (see findings)");
      return;
    }
    const Checkpoint& ck = qm_->checkpoint();
    const LoadedLinear l = load_served_linear(ck, e);
    const std::vector<float> wd = dequantize_f32(l, d);
    std::vector<float> wr;
    if (rm_) {
      const TensorView* t = rm_->checkpoint().find(e.module + ".weight");
      wr = decode_tensor_f32(*t);
      if (c.input_ratio || c.output_ratio) {
        // Against the smoothed reference W_ref[n, k] * out[n] / in[k] (a column whose input ratio
        // is 0 is dropped by the deployed model: compared with 0; the GEMM error still sees it).
        std::vector<float> ws(wr.size());
        for (int64_t n = 0; n < d.N; ++n) {
          const double o = c.output_ratio ? (*c.output_ratio)[static_cast<size_t>(n)] : 1.0;
          for (int64_t k = 0; k < d.K; ++k) {
            const size_t j = static_cast<size_t>(n * d.K + k);
            const double in = c.input_ratio ? (*c.input_ratio)[static_cast<size_t>(k)] : 1.0;
            ws[j] = in == 0.0 ? 0.0f : static_cast<float>(static_cast<double>(wr[j]) * o / in);
          }
        }
        L.weight = compare(ws.data(), wd.data(), d.N * d.K);
      } else {
        L.weight = compare(wr.data(), wd.data(), d.N * d.K);
      }
    }
    const ExactWeight ew = exact_weight(l, d);
    // What the deployed Linear receives: x * input_ratio under SmoothQuant (the reference run
    // captured x from the unsmoothed model), x itself otherwise. The reference product stays
    // x W_ref^T; a smoothed output is mapped back (y / output_ratio) before comparing with it.
    const float* Xref = X;
    std::vector<float> xs;
    if (c.input_ratio) {
      xs.resize(static_cast<size_t>(M * d.K));
      const auto& r = *c.input_ratio;
      for (int64_t m = 0; m < M; ++m)
        for (int64_t k = 0; k < d.K; ++k) {
          const size_t j = static_cast<size_t>(m * d.K + k);
          xs[j] = static_cast<float>(static_cast<double>(X[j]) * r[static_cast<size_t>(k)]);
        }
      X = xs.data();
    }

    // The selected kernel exactly as deployed.
    std::vector<float> yk(static_cast<size_t>(M * d.N));
    if (c.chosen) {
      try {
        auto p = c.chosen->pack(d, l.ref);
        c.chosen->run(*p, X, M, yk.data());
      } catch (const InputError& err) {
        L.failures.push_back(std::string(c.chosen->name()) + " refused the layer: " + err.problem());
        c.chosen = nullptr;
      }
    }
    if (c.chosen) {
      std::vector<double> xd(X, X + M * d.K);
      const std::vector<double> yd = oracle_gemm(xd, M, d.K, d.N, [&](int64_t n0, int64_t r, double* out) { ew.rows(n0, r, out); });
      L.act_err = compare(yd.data(), yk.data(), M * d.N).rel_l2;
      if (rm_) {
        if (Xref != X) xd.assign(Xref, Xref + M * d.K);
        const std::vector<double> yr = oracle_gemm(xd, M, d.K, d.N, [&](int64_t n0, int64_t r, double* out) {
          for (int64_t j = 0; j < r * d.K; ++j) out[j] = static_cast<double>(wr[static_cast<size_t>(n0 * d.K + j)]);
        });
        if (c.output_ratio) {
          // Back to the reference's output space; f32 is ample for an error measured in 1e-3s.
          std::vector<float> yb(yk.size());
          for (int64_t m = 0; m < M; ++m)
            for (int64_t n = 0; n < d.N; ++n) {
              const size_t j = static_cast<size_t>(m * d.N + n);
              yb[j] = static_cast<float>(static_cast<double>(yk[j]) / (*c.output_ratio)[static_cast<size_t>(n)]);
            }
          L.gemm_err = compare(yr.data(), yb.data(), M * d.N).rel_l2;
        } else {
          L.gemm_err = compare(yr.data(), yk.data(), M * d.N).rel_l2;
        }
      } else {
        L.gemm_err = L.act_err;
      }
    }
    agreement(c, L, l, ew, X, std::min(M, std::max<int64_t>(o_.agree_tokens, 1)));

    // Gates.
    if (L.weight && !(L.weight->sqnr_db >= L.gates.min_sqnr_db))
      L.failures.push_back("weight SQNR " + fmt("%.2f", L.weight->sqnr_db) + " dB < " + fmt("%.2f", L.gates.min_sqnr_db) + " dB");
    if (!std::isnan(L.gemm_err) && !(L.gemm_err <= L.gates.max_gemm_err))
      L.failures.push_back("GEMM error " + fmt("%.4g", L.gemm_err) + " > " + fmt("%.4g", L.gates.max_gemm_err));
    for (const auto& a : L.agreement)
      if (!a.ok)
        L.failures.push_back(a.kernel + " disagrees with cpu_ref" +
                             (!a.error.empty() ? ": " + a.error
                              : a.required_exact ? " (INT8 must be bit-exact; max |diff| " + fmt("%.3g", a.max_abs_diff) + ")"
                                                 : " (" + fmt("%.3g", a.max_bound_ratio) + " x the error bound)"));
    // Numbered in the order the checks happen (layers are checked as the forward pass reaches
    // them, not in ctx_ order), so the log counts up.
    ++layers_checked_;
    progress("layer check " + std::to_string(layers_checked_) + "/" + std::to_string(ctx_.size()) + " " + e.module +
             (L.weight ? ": SQNR " + fmt("%.2f", L.weight->sqnr_db) + " dB" : std::string(":")) +
             " GEMM err " + fmt("%.3g", L.gemm_err) + " (" + source + " activations)" +
             (L.failures.empty() ? "" : " FAIL"));
  }

  // Every implementable kernel against cpu_ref on the first Ma rows of X.
  void agreement(const LayerCtx& c, LayerReport& L, const LoadedLinear& l, const ExactWeight& ew, const float* X, int64_t Ma) {
    const auto& reg = kernels::Registry::builtin();
    const Kernel* ref = reg.find("cpu_ref");
    const LinearDescriptor& d = c.e->desc;
    if (!ref || !ref->can_implement(d).empty()) return;
    std::vector<float> yref(static_cast<size_t>(Ma * d.N));
    try {
      auto p = ref->pack(d, l.ref);
      ref->run(*p, X, Ma, yref.data());
    } catch (const InputError& err) {
      L.agreement.push_back({"cpu_ref", false, false, 0, 0, false, err.problem()});
      return;
    }
    std::vector<double> S;  // sum_k |x_q w| per output, for the f32 bound (computed on demand)
    for (const Kernel* k : reg.kernels()) {
      if (k == ref || !k->can_implement(d).empty()) continue;
      KernelAgreement a;
      a.kernel = std::string(k->name());
      a.required_exact = d.act_type == ActType::Int8;
      std::vector<float> y(yref.size());
      try {
        auto p = k->pack(d, l.ref);
        k->run(*p, X, Ma, y.data());
      } catch (const InputError& err) {
        a.error = err.problem();
        L.agreement.push_back(a);
        continue;
      }
      a.bit_exact = std::memcmp(y.data(), yref.data(), y.size() * sizeof(float)) == 0;
      for (size_t j = 0; j < y.size(); ++j)
        a.max_abs_diff = std::max(a.max_abs_diff, std::fabs(static_cast<double>(y[j]) - yref[j]));
      if (a.required_exact) {
        a.ok = a.bit_exact;
      } else {
        if (S.empty()) {
          const std::vector<double> xq = consumed_activations(d, X, Ma, c.static_scale);
          std::vector<double> xa(xq.size());
          for (size_t j = 0; j < xq.size(); ++j) xa[j] = std::fabs(xq[j]);
          S = oracle_gemm(xa, Ma, d.K, d.N, [&](int64_t n0, int64_t r, double* out) { ew.rows(n0, r, out, true); });
        }
        for (size_t j = 0; j < y.size(); ++j) {
          const double err = std::fabs(static_cast<double>(y[j]) - yref[j]);
          a.max_bound_ratio = std::max(a.max_bound_ratio, err / kernel_agreement_bound(S[j], yref[j], d.K));
        }
        a.ok = a.max_bound_ratio <= 1.0;
      }
      L.agreement.push_back(a);
    }
  }

  // Captures the first gemm_tokens input rows of every quantized Linear during the reference
  // run and checks the layer as soon as it has them.
  class Capture : public calib::Observer {
   public:
    Capture(Verifier& v) : v_(v) {
      for (size_t i = 0; i < v.ctx_.size(); ++i) index_[v.ctx_[i].e->module] = i;
      rows_.assign(v.ctx_.size(), 0);
      buf_.resize(v.ctx_.size());
    }
    void on_linear_input(const std::string& module, const float* x, int64_t tokens, int64_t in) override {
      auto it = index_.find(module);
      if (it == index_.end()) return;
      const size_t i = it->second;
      const int64_t want = std::max<int64_t>(v_.o_.gemm_tokens, 1);
      if (v_.ctx_[i].checked || rows_[i] >= want || in != v_.ctx_[i].e->desc.K) return;
      const int64_t take = std::min(tokens, want - rows_[i]);
      buf_[i].insert(buf_[i].end(), x, x + take * in);
      rows_[i] += take;
      if (rows_[i] == want) flush(i);
    }
    void flush(size_t i) {
      if (rows_[i] > 0 && !v_.ctx_[i].checked) v_.check_layer(i, buf_[i].data(), rows_[i], "text");
      std::vector<float>().swap(buf_[i]);
    }
    void flush_all() {
      for (size_t i = 0; i < buf_.size(); ++i) flush(i);
    }

   private:
    Verifier& v_;
    std::map<std::string, size_t> index_;
    std::vector<int64_t> rows_;
    std::vector<std::vector<float>> buf_;
  };

  std::vector<std::vector<int32_t>> token_samples(std::string& source) {
    if (!o_.samples.empty()) {
      source = o_.text_source;
      return o_.samples;
    }
    std::error_code ec;
    const std::filesystem::path dir(o_.quant_dir);
    if (!std::filesystem::exists(dir / "tokenizer.json", ec)) {
      r_.model.skipped = "no tokenizer.json in " + o_.quant_dir + " (pass --token-ids)";
      return {};
    }
    std::optional<calib::Tokenizer> tok;
    try {
      tok.emplace(calib::Tokenizer::from_dir(dir));
    } catch (const InputError& err) {
      r_.model.skipped = std::string("the tokenizer cannot be used: ") + err.what() + " (pass --token-ids)";
      return {};
    }
    const std::string& text = o_.text.empty() ? builtin_heldout_text() : o_.text;
    source = o_.text.empty() ? "built-in held-out text" : o_.text_source;
    const std::vector<int32_t> ids = tok->encode(text, true);
    return heldout_samples(ids, tok->special_prefix(), tok->special_suffix(), o_.max_tokens, o_.seq_len);
  }

  // Step 5.
  void model_level() {
    ModelReport& mr = r_.model;
    bool any_act = false;
    for (const auto& c : ctx_) any_act = any_act || !c.e->desc.weight_only();
    mr.against = rm_ ? "reference" : "dequantized weights without activation quantization";
    mr.compared = rm_ || any_act;
    mr.gated = bool(rm_);
    // Model gates: the loosest default over the layer types present, unless overridden.
    GateValues g{0, 0, 0, 1, ""};
    for (const auto& c : ctx_) {
      const GateValues d = default_gates(c.e->desc);
      if (d.max_kl >= g.max_kl) g.max_kl = d.max_kl, g.basis = d.basis;
      g.min_top1 = std::min(g.min_top1, d.min_top1);
    }
    mr.gates = apply_overrides(g, o_.gates);
    if (!o_.model_eval) {
      mr.skipped = "disabled (--no-model)";
      return;
    }
    bool usable = true;
    for (const auto& c : ctx_) usable = usable && c.loadable;
    if (!usable || ctx_.empty()) {
      mr.skipped = "the checkpoint has unusable layers (see findings)";
      return;
    }
    std::optional<calib::ModelConfig> cfg;
    try {
      cfg.emplace(calib::ModelConfig::from_json(qm_->config(), qm_->config_path()));
    } catch (const InputError& err) {
      mr.skipped = std::string("the forward pass cannot run this model: ") + err.what();
      return;
    }
    std::vector<std::vector<int32_t>> samples = token_samples(mr.text_source);
    if (samples.empty()) {
      if (mr.skipped.empty()) mr.skipped = "no tokens to evaluate";
      return;
    }
    // Ids the model cannot embed are the caller's mistake (e.g. --token-ids made with another
    // tokenizer), not a property of the checkpoint: refuse rather than fail a gate.
    for (const auto& smp : samples)
      for (int32_t id : smp)
        if (id < 0 || id >= cfg->vocab_size)
          throw InputError(Kind::BadValue, mr.text_source, "", "token id " + std::to_string(id) + " is outside the model's vocabulary",
                           "ids in [0, " + std::to_string(cfg->vocab_size) + ")", std::to_string(id));
    const auto t0 = Clock::now();
    LogitComparator cmp(samples);
    const Checkpoint& qck = qm_->checkpoint();
    calib::ForwardOptions fo;
    fo.num_threads = o_.num_threads;
    Capture cap(*this);
    fo.observer = &cap;
    try {
      // Reference run (captures each layer's input for the GEMM check).
      fo.on_logits = [&](size_t s, int64_t t, const float* l, int64_t n, int64_t V) { cmp.add_reference(s, t, l, n, V); };
      // Model-level progress with an ETA over both runs (reference, then quantized): 2n steps.
      const int64_t runs = mr.compared ? 2 : 1;
      auto model_progress = [&, runs](const char* what, int64_t run, int64_t l, int64_t n) {
        const double el = since(t0);
        const int64_t done = run * n + l + 1, total = runs * n;
        progress("model: " + std::string(what) + " run, layer " + std::to_string(l + 1) + "/" + std::to_string(n) +
                 ", " + fmt("%.1f", el) + " s" +
                 (done < total ? ", ETA " + fmt("%.0f", el / static_cast<double>(done) * static_cast<double>(total - done)) + " s"
                               : std::string()));
      };
      fo.on_layer_done = [&](int64_t l, int64_t n) { model_progress("reference", 0, l, n); };
      if (rm_) {
        const Checkpoint& rck = rm_->checkpoint();
        fo.source = o_.reference_dir;
        fo.lm_head_tied = cfg->lm_head_tied(rck.find("lm_head.weight") != nullptr);
        calib::run_forward(*cfg, calib::make_view_weight_provider([&rck](const std::string& n) { return rck.find(n); }, o_.reference_dir),
                    samples, fo);
      } else {
        fo.source = o_.quant_dir;
        fo.lm_head_tied = cfg->lm_head_tied(qck.find("lm_head.weight") != nullptr);
        calib::run_forward(*cfg, make_dequantizing_provider(qck, entries_, o_.quant_dir), samples, fo);
      }
      cap.flush_all();
      fo.observer = nullptr;
      if (mr.compared) {
        fo.on_logits = [&](size_t s, int64_t t, const float* l, int64_t n, int64_t V) { cmp.add_quantized(s, t, l, n, V); };
        fo.on_layer_done = [&](int64_t l, int64_t n) { model_progress("quantized", 1, l, n); };
        fo.source = o_.quant_dir;
        fo.lm_head_tied = cfg->lm_head_tied(qck.find("lm_head.weight") != nullptr);
        fo.transform = make_fake_quant_transform(qck, entries_);
        calib::run_forward(*cfg, make_dequantizing_provider(qck, entries_, o_.quant_dir), samples, fo);
        mr.metrics = cmp.finish();
      } else {
        mr.metrics.samples = static_cast<int64_t>(samples.size());
        for (const auto& s : samples) mr.metrics.tokens += static_cast<int64_t>(s.size()), mr.metrics.predicted += static_cast<int64_t>(s.size()) - 1;
        mr.metrics.ppl_ref = mr.metrics.ppl_quant = cmp.reference_perplexity();
        mr.metrics.kl_mean = mr.metrics.kl_p99 = mr.metrics.kl_max = mr.metrics.top1 = kNaN;
      }
    } catch (const InputError& err) {
      mr.ran = false;
      mr.skipped = std::string("the forward pass failed: ") + err.what();
      mr.pass = false;
      mr.failures.push_back(mr.skipped);
      return;
    }
    mr.ran = true;
    mr.seconds = since(t0);
    if (mr.gated) {
      if (!(mr.metrics.kl_mean <= mr.gates.max_kl))
        mr.failures.push_back("mean KL " + fmt("%.4g", mr.metrics.kl_mean) + " > " + fmt("%.4g", mr.gates.max_kl));
      // Top-1 agreement only means something when the reference predicts confidently. A
      // reference whose perplexity is above half its vocabulary (an untrained or random model,
      // like `qtool tiny-model`) has near-tied logits that any rounding flips; gate on KL alone.
      if (mr.metrics.ppl_ref > 0.5 * static_cast<double>(cfg->vocab_size))
        mr.notes.push_back("top-1 gate not applied: the reference is near-uniform (perplexity " +
                           fmt("%.1f", mr.metrics.ppl_ref) + " over a vocabulary of " +
                           std::to_string(cfg->vocab_size) + ")");
      else if (!(mr.metrics.top1 >= mr.gates.min_top1))
        mr.failures.push_back("top-1 agreement " + fmt("%.4f", mr.metrics.top1) + " < " + fmt("%.4f", mr.gates.min_top1));
    }
    mr.pass = mr.failures.empty();
  }

  // Step 6: one row per (distinct descriptor, M).
  void bench() {
#ifdef _OPENMP
    r_.bench_threads = omp_get_max_threads();
#else
    r_.bench_threads = 1;
#endif
    std::map<std::string, bool> done;
    for (size_t i = 0; i < ctx_.size(); ++i) {
      const LayerCtx& c = ctx_[i];
      if (!c.chosen || !c.loadable) continue;
      const LinearDescriptor& d = c.e->desc;
      const std::string key = d.describe();
      if (done[key]) continue;
      done[key] = true;
      progress("throughput: " + key);
      const LoadedLinear l = load_served_linear(qm_->checkpoint(), *c.e);
      std::unique_ptr<kernels::PackedWeights> p;
      try {
        p = c.chosen->pack(d, l.ref);
      } catch (const InputError&) {
        continue;  // already reported by the GEMM check
      }
      const std::vector<float> wd = dequantize_f32(l, d);
      std::vector<std::string> mods;
      for (const auto& g : r_.kernels)
        if (g.descriptor == key) mods = g.modules;
      for (int64_t M : o_.bench_m) {
        const std::vector<float> X = synthetic_activations(M, d.K, o_.seed + 1000003u * static_cast<uint64_t>(M));
        std::vector<float> Y(static_cast<size_t>(M * d.N));
        const double flop = 2.0 * static_cast<double>(M) * static_cast<double>(d.N) * static_cast<double>(d.K);
        BenchRow row;
        row.descriptor = key;
        row.kernel = std::string(c.chosen->name());
        row.modules = mods;
        row.M = M, row.N = d.N, row.K = d.K;
        std::tie(row.kernel_gflops_best, row.kernel_gflops_median) =
            time_gflops([&] { c.chosen->run(*p, X.data(), M, Y.data()); }, flop, o_.bench_seconds);
        std::tie(row.eigen_gflops_best, row.eigen_gflops_median) =
            time_gflops([&] { eigen_gemm_f32(X.data(), M, d.K, wd.data(), d.N, Y.data()); }, flop, o_.bench_seconds);
        r_.bench.push_back(row);
      }
    }
  }

  void summarize() {
    for (const auto& f : r_.findings)
      if (f.severity == "error") r_.failures.push_back("structure: " + f.where + ": " + f.message);
    for (auto& L : r_.layers) {
      if (L.kernel.empty() && L.failures.empty()) L.failures.push_back("no kernel can run this layer");
      L.pass = L.failures.empty();
      for (const auto& f : L.failures) r_.failures.push_back(L.module + ": " + f);
    }
    for (const auto& f : r_.model.failures) r_.failures.push_back("model: " + f);
    r_.pass = r_.failures.empty();
    bool int8_act = false;
    for (const auto& c : ctx_) int8_act = int8_act || c.e->desc.act_type == ActType::Int8;
    std::error_code ec;
    const bool smoothed = !r_.smoothed_layers.empty() ||
                          std::filesystem::exists(std::filesystem::path(o_.quant_dir) / calib::kSmoothingFactorsFile, ec);
    if (!r_.pass && int8_act && !smoothed)
      r_.hints.push_back("INT8 activations and no SmoothQuant: quantize again with --smoothquant (on SmolLM2-135M it "
                         "took int8-static from +177 % to +4.7 % perplexity, bench/RESULTS.md)");
  }

  const VerifyOptions& o_;
  VerifyReport r_;
  size_t layers_checked_ = 0;  // layer checks done so far (progress numbering)
  std::optional<ModelFolder> qm_, rm_;
  QuantInfo q_;
  std::vector<QuantizedLinearEntry> entries_;
  std::vector<LayerCtx> ctx_;
};

}  // namespace

VerifyReport verify_checkpoint(const VerifyOptions& opts) { return Verifier(opts).run(true); }
VerifyReport list_kernels(const VerifyOptions& opts) { return Verifier(opts).run(false); }

}  // namespace qt::verify
