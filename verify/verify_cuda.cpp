// `qtool verify --device cuda` (verify_cuda.h). The GPU work is in libquant/kernels/cuda; this
// file walks the checkpoint, compares against cpu_ref and assembles the report. In a build without
// CUDA every path that needs the GPU throws the stub's "built without CUDA" error.
#include "verify/verify_cuda.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <optional>

#include "formats/checkpoint.h"
#include "formats/ct_config.h"
#include "formats/model_folder.h"
#include "formats/quantized_linear.h"
#include "libquant/error.h"
#include "libquant/kernels/act_quant.h"
#include "libquant/kernels/registry.h"

namespace qt::verify {
namespace {

namespace gpu = kernels::gpu;
using kernels::ActType;
using kernels::Kernel;
using kernels::LinearDescriptor;
using Kind = InputError::Kind;
using Clock = std::chrono::steady_clock;

// Exact integer dot products of the INT8 codes: acc[m, n] = sum_k a[m, k] w[n, k] (int64).
std::vector<int64_t> exact_int8_dots(const kernels::QuantizedActivations& qa, const uint8_t* w, int64_t N) {
  const int64_t M = qa.M, K = qa.K;
  std::vector<int64_t> out(static_cast<size_t>(M * N));
#pragma omp parallel for schedule(static)
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      int64_t s = 0;
      for (int64_t k = 0; k < K; ++k)
        s += static_cast<int64_t>(static_cast<int8_t>(qa.codes[static_cast<size_t>(m * K + k)])) *
             static_cast<int8_t>(w[n * K + k]);
      out[static_cast<size_t>(m * N + n)] = s;
    }
  return out;
}

}  // namespace

void compare_with_reference(const float* y, const float* y_ref, const float* S, int64_t count, int64_t K,
                            bool fast_accum, CudaAccuracy& a) {
  a.bit_exact = std::memcmp(y, y_ref, static_cast<size_t>(count) * sizeof(float)) == 0;
  double num = 0, den = 0;
  bool nan = false;
  a.max_abs_diff = 0;
  a.max_bound_ratio = 0;
  for (int64_t i = 0; i < count; ++i) {
    const double d = static_cast<double>(y[i]) - static_cast<double>(y_ref[i]);
    if (std::isnan(d)) nan = true;
    a.max_abs_diff = std::max(a.max_abs_diff, std::fabs(d));
    num += d * d;
    den += static_cast<double>(y_ref[i]) * y_ref[i];
    if (!a.required_exact && S)
      a.max_bound_ratio =
          std::max(a.max_bound_ratio, std::fabs(d) / gpu::fp8_error_bound(S[i], y_ref[i], K, fast_accum));
  }
  a.rel_l2 = den > 0 ? std::sqrt(num / den) : (num > 0 ? std::numeric_limits<double>::infinity() : 0.0);
  if (nan) {
    a.ok = false;
    a.max_abs_diff = a.rel_l2 = a.max_bound_ratio = std::numeric_limits<double>::quiet_NaN();
    return;
  }
  if (a.required_exact) a.ok = a.bit_exact && a.acc_exact;
  else a.ok = a.max_bound_ratio <= 1.0 && a.rel_l2 <= gpu::fp8_max_rel_l2(fast_accum);
}

void add_speedups(std::vector<CudaBenchRow>& rows) {
  std::map<std::tuple<int64_t, int64_t, int64_t, bool>, double> bf16;
  for (const auto& r : rows)
    if (r.kernel == gpu::kernel_name(gpu::GemmKind::Bf16) && r.error.empty() && r.tflops > 0)
      bf16[{r.M, r.N, r.K, r.peak}] = r.tflops;
  for (auto& r : rows) {
    auto it = bf16.find({r.M, r.N, r.K, r.peak});
    r.speedup_bf16 = (it != bf16.end() && r.error.empty()) ? r.tflops / it->second : 0.0;
  }
}

std::vector<TargetCheck> evaluate_targets(const std::vector<CudaBenchRow>& rows) {
  const std::string bf16(gpu::kernel_name(gpu::GemmKind::Bf16)), t(gpu::kernel_name(gpu::GemmKind::Fp8Tensor)),
      ct(gpu::kernel_name(gpu::GemmKind::Fp8ChannelToken));
  auto find = [&](const std::string& k, const std::string& variant, int64_t M, int64_t N, int64_t K, bool peak) -> const CudaBenchRow* {
    for (const auto& r : rows)
      if (r.kernel == k && r.variant == variant && r.M == M && r.N == N && r.K == K && r.peak == peak && r.error.empty() &&
          r.tflops > 0)
        return &r;
    return nullptr;
  };
  auto shape = [](int64_t M, int64_t N, int64_t K) {
    return "M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K);
  };
  std::vector<TargetCheck> out;
  {
    TargetCheck c{"fp8_peak_vs_bf16", "FP8 per-tensor (fast accum) at least 1.7x BF16 at 8192^3", false, false, 0, 1.7, ""};
    const auto* f = find(t, "fast accum", gpu::kPeakSize, gpu::kPeakSize, gpu::kPeakSize, true);
    const auto* b = find(bf16, "", gpu::kPeakSize, gpu::kPeakSize, gpu::kPeakSize, true);
    if (f && b) {
      c.measured = true;
      c.value = f->tflops / b->tflops;
      c.met = c.value >= c.threshold;
      c.detail = fmt("%.0f", f->tflops) + " vs " + fmt("%.0f", b->tflops) + " TFLOP/s";
    }
    out.push_back(c);
  }
  // Model shapes (not peak) at M = 4096.
  std::vector<std::pair<int64_t, int64_t>> shapes;
  for (const auto& r : rows)
    if (!r.peak && r.M == 4096 && std::find(shapes.begin(), shapes.end(), std::make_pair(r.N, r.K)) == shapes.end())
      shapes.emplace_back(r.N, r.K);
  {
    TargetCheck c{"fp8_m4096_vs_bf16", "FP8 per-tensor (fast accum) at least 1.7x BF16 at M=4096 for every layer shape",
                  false, false, 0, 1.7, ""};
    bool all = !shapes.empty();
    double worst = std::numeric_limits<double>::infinity();
    for (auto [N, K] : shapes) {
      const auto* f = find(t, "fast accum", 4096, N, K, false);
      const auto* b = find(bf16, "", 4096, N, K, false);
      if (!f || !b) {
        all = false;
        continue;
      }
      if (f->tflops / b->tflops < worst) {
        worst = f->tflops / b->tflops;
        c.detail = "worst at " + shape(4096, N, K);
      }
    }
    if (all) {
      c.measured = true;
      c.value = worst;
      c.met = worst >= c.threshold;
    }
    out.push_back(c);
  }
  {
    TargetCheck c{"channel_token_vs_tensor",
                  "FP8 per-channel x per-token within 10% of FP8 per-tensor (fast accum) at 8192^3 and at M=4096",
                  false, false, 0, 0.9, ""};
    std::vector<std::tuple<int64_t, int64_t, int64_t, bool>> cells;
    cells.emplace_back(gpu::kPeakSize, gpu::kPeakSize, gpu::kPeakSize, true);
    for (auto [N, K] : shapes) cells.emplace_back(4096, N, K, false);
    bool all = true;
    double worst = std::numeric_limits<double>::infinity();
    for (auto [M, N, K, peak] : cells) {
      const auto* a = find(ct, "fast accum", M, N, K, peak);
      const auto* b = find(t, "fast accum", M, N, K, peak);
      if (!a || !b) {
        all = false;
        continue;
      }
      if (a->tflops / b->tflops < worst) {
        worst = a->tflops / b->tflops;
        c.detail = "worst at " + shape(M, N, K);
      }
    }
    if (all) {
      c.measured = true;
      c.value = worst;
      c.met = worst >= c.threshold;
    }
    out.push_back(c);
  }
  return out;
}

std::pair<int64_t, int64_t> parse_shape(const std::string& text) {
  const size_t x = text.find('x');
  auto bad = [&] { return InputError(Kind::Usage, "", "", "--bench-shape '" + text + "' is not NxK (e.g. 4096x14336)"); };
  if (x == std::string::npos || x == 0 || x + 1 == text.size()) throw bad();
  int64_t v[2];
  const std::string parts[2] = {text.substr(0, x), text.substr(x + 1)};
  for (int i = 0; i < 2; ++i) {
    if (parts[i].find_first_not_of("0123456789") != std::string::npos || parts[i].size() > 9) throw bad();
    v[i] = std::stoll(parts[i]);
    if (v[i] < 1) throw bad();
  }
  return {v[0], v[1]};
}

CudaVerifyReport verify_cuda(const CudaVerifyOptions& o) {
  const auto t0 = Clock::now();
  auto progress = [&](const std::string& s) {
    if (o.on_progress) o.on_progress(s);
  };
  CudaVerifyReport r;
  r.built_with_cuda = gpu::built_with_cuda();
  r.device = gpu::device_info();
  if (!o.list_only) gpu::require_device();  // exit 5 before any work, naming what is missing
  r.quant_dir = o.quant_dir;
  const ModelFolder mf = ModelFolder::open(o.quant_dir);
  const QuantInfo q = parse_quant_info(mf.config(), mf.config_path());
  if (q.method.empty())
    throw InputError(Kind::Usage, mf.config_path(), "",
                     "the model is not quantized (config.json has no quantization_config); verify takes the quantized folder");
  r.quant_method = q.method;
  const Checkpoint& ck = mf.checkpoint();
  std::vector<std::string> skipped;
  const std::vector<QuantizedLinearEntry> entries = find_quantized_linears(ck, q, &skipped);
  for (const auto& s : skipped) r.notes.push_back("skipped " + s);

  const kernels::Registry& reg = gpu::cuda_registry();
  for (const Kernel* k : reg.kernels()) r.registry.push_back({std::string(k->name()), std::string(k->summary()), k->priority()});

  // Step 2: the registry's choice per descriptor group.
  std::vector<const Kernel*> chosen(entries.size());
  std::map<std::string, size_t> group_of;
  for (size_t i = 0; i < entries.size(); ++i) {
    const LinearDescriptor& d = entries[i].desc;
    const kernels::Selection sel = reg.select(d, o.select);
    chosen[i] = sel.chosen;
    const std::string key = d.describe();
    auto it = group_of.find(key);
    if (it == group_of.end()) {
      it = group_of.emplace(key, r.kernels.size()).first;
      r.kernels.push_back(make_kernel_group(reg, d, sel));
    }
    r.kernels[it->second].modules.push_back(entries[i].module);
  }
  if (o.list_only) {
    r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    return r;
  }

  // Step 3: accuracy.
  const Kernel& ref = kernels::cpu_ref_kernel();
  size_t ran = 0;
  const int64_t M = std::max<int64_t>(o.check_tokens, 1);
  for (size_t i = 0; i < entries.size(); ++i) {
    const QuantizedLinearEntry& e = entries[i];
    const LinearDescriptor& d = e.desc;
    std::vector<const gpu::CudaKernel*> ks;
    for (const Kernel* k : reg.kernels())
      if (k->can_implement(d).empty()) ks.push_back(static_cast<const gpu::CudaKernel*>(k));
    if (ks.empty() || !ref.can_implement(d).empty()) continue;
    ++ran;
    LoadedLinear l;
    std::vector<float> X = synthetic_activations(M, d.K, o.seed + i);
    std::vector<float> yref(static_cast<size_t>(M * d.N)), S;
    try {
      l = load_quantized_linear(ck, e);
      auto p = ref.pack(d, l.ref);
      ref.run(*p, X.data(), M, yref.data());
      if (d.act_type == ActType::Float8E4M3) {
        // S = sum |sx sw a b|: cpu_ref on |X| and |W| (E4M3 |code| = code & 0x7F; the activation
        // scales of |X| equal those of X, and |e4m3(x/s)| = e4m3(|x|/s) since RNE is symmetric).
        std::vector<uint8_t> wabs(l.ref.codes, l.ref.codes + d.N * d.K);
        for (auto& c : wabs) c &= 0x7F;
        kernels::QuantizedWeightRef wa = l.ref;
        wa.codes = wabs.data();
        std::vector<float> xa(X.size());
        for (size_t j = 0; j < X.size(); ++j) xa[j] = std::fabs(X[j]);
        S.resize(yref.size());
        auto pa = ref.pack(d, wa);
        ref.run(*pa, xa.data(), M, S.data());
      }
    } catch (const InputError& err) {
      CudaAccuracy a;
      a.module = e.module;
      a.kernel = "cpu_ref";
      a.error = err.problem();
      r.accuracy.push_back(a);
      continue;
    }
    for (const gpu::CudaKernel* k : ks) {
      const bool int8 = k->kind() == gpu::GemmKind::Int8;
      std::vector<bool> modes = int8 ? std::vector<bool>{false} : std::vector<bool>{false, true};
      bool exact_ran = false;
      for (bool fast : modes) {
        CudaAccuracy a;
        a.module = e.module;
        a.kernel = std::string(k->name());
        a.mode = int8 ? "int32 + f64 dequant" : (fast ? "fast accum" : "exact accum");
        a.M = M;
        a.N = d.N;
        a.K = d.K;
        a.required_exact = int8;
        try {
          auto p = k->pack(d, l.ref);
          std::vector<float> y(yref.size());
          if (int8) {
            std::vector<int32_t> acc(yref.size());
            k->run_int32(*p, X.data(), M, acc.data());
            // Same quantized activations as every kernel: quantize_activations is deterministic.
            const auto qa = kernels::quantize_activations(d, X.data(), M, kernels::static_input_scale(d, l.ref));
            const std::vector<int64_t> exact = exact_int8_dots(qa, l.ref.codes, d.N);
            a.acc_exact = true;
            for (size_t j = 0; j < exact.size(); ++j) a.acc_exact = a.acc_exact && exact[j] == acc[j];
          }
          try {
            k->run_with(*p, X.data(), M, y.data(), fast);
          } catch (const InputError& err) {
            if (!fast || !exact_ran) throw;
            a.unsupported = true;  // see CudaAccuracy::unsupported
            a.error = err.problem();
          }
          if (!a.unsupported) {
            compare_with_reference(y.data(), yref.data(), S.empty() ? nullptr : S.data(), M * d.N, d.K, fast, a);
            exact_ran = exact_ran || !fast;
          } else {
            a.ok = true;
          }
        } catch (const InputError& err) {
          a.error = err.problem();
          a.ok = false;
        }
        if (!a.ok)
          r.failures.push_back(e.module + ": " + a.kernel + " (" + a.mode + ") disagrees with cpu_ref" +
                               (!a.error.empty() ? ": " + a.error
                                : a.required_exact ? std::string(a.acc_exact ? "" : "; int32 accumulators differ") +
                                                         "; max |diff| " + fmt("%.3g", a.max_abs_diff)
                                                   : "; rel L2 " + fmt("%.3g", a.rel_l2) + ", " +
                                                         fmt("%.3g", a.max_bound_ratio) + " x the bound"));
        r.accuracy.push_back(std::move(a));
      }
    }
    progress("gpu check " + std::to_string(i + 1) + "/" + std::to_string(entries.size()) + " " + e.module);
  }
  if (ran == 0) {
    std::string why = r.kernels.empty() ? "no quantized Linear layer" : r.kernels[0].error;
    r.failures.push_back("no layer could run on the GPU: " + why);
  }

  // Step 4: throughput.
  if (o.bench) {
    std::vector<gpu::LayerShape> layers;
    for (const auto& e : entries) layers.push_back({e.desc.N, e.desc.K, {e.module}});
    std::vector<gpu::LayerShape> shapes = gpu::distinct_shapes(layers);
    for (auto [N, K] : o.extra_shapes) shapes.push_back({N, K, {}});
    shapes = gpu::distinct_shapes(shapes);
    std::map<std::string, std::string> chosen_of;
    for (size_t i = 0; i < entries.size(); ++i)
      if (chosen[i]) chosen_of[entries[i].module] = std::string(chosen[i]->name());
    struct Job {
      int64_t N, K;
      std::vector<int64_t> Ms;
      bool peak;
      const gpu::LayerShape* shape;
    };
    std::vector<Job> jobs;
    for (const auto& s : shapes) jobs.push_back({s.N, s.K, o.bench_m, false, &s});
    if (o.peak) jobs.push_back({gpu::kPeakSize, gpu::kPeakSize, {gpu::kPeakSize}, true, nullptr});
    for (const Job& j : jobs) {
      std::vector<std::string> deployed;
      if (j.shape)
        for (const auto& m : j.shape->modules)
          if (auto it = chosen_of.find(m); it != chosen_of.end() &&
                                           std::find(deployed.begin(), deployed.end(), it->second) == deployed.end())
            deployed.push_back(it->second);
      for (gpu::GemmKind k : gpu::all_gemm_kinds()) {
        progress("gpu bench N=" + std::to_string(j.N) + " K=" + std::to_string(j.K) + " " + std::string(gpu::kernel_name(k)));
        for (const gpu::BenchCell& c : gpu::bench_gemm(k, j.N, j.K, j.Ms, o.bench_config)) {
          CudaBenchRow b;
          b.M = c.M;
          b.N = c.N;
          b.K = c.K;
          b.kernel = std::string(gpu::kernel_name(c.kind));
          b.variant = c.variant;
          b.us = c.seconds * 1e6;
          b.us_min = c.seconds_min * 1e6;
          b.tflops = c.tflops;
          b.sets = c.sets;
          b.algo = c.algo;
          b.error = c.error;
          b.peak = j.peak;
          if (j.shape) b.modules = j.shape->modules;
          b.deployed = deployed;
          r.bench.push_back(std::move(b));
        }
      }
    }
    add_speedups(r.bench);
    r.targets = evaluate_targets(r.bench);
  }

  r.pass = r.failures.empty();
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return r;
}

nlohmann::json cuda_report_to_json(const CudaVerifyReport& r) {
  using nlohmann::json;
  auto num = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };
  const auto& d = r.device;
  json j;
  j["device"] = {{"built_with_cuda", r.built_with_cuda},
                 {"usable", d.usable},
                 {"error", d.error},
                 {"name", d.name},
                 {"compute_capability", std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor)},
                 {"sm_count", d.sm_count},
                 {"l2_bytes", d.l2_bytes},
                 {"memory_bytes", d.memory_bytes},
                 {"clock_khz", d.clock_khz},
                 {"driver_version", d.driver_version},
                 {"runtime_version", d.runtime_version},
                 {"cublaslt_version", d.cublaslt_version},
                 {"cublaslt_path", d.cublaslt_path}};
  j["quant_dir"] = r.quant_dir;
  j["quant_method"] = r.quant_method;
  json reg = json::array();
  for (const auto& k : r.registry) reg.push_back({{"name", k.name}, {"summary", k.summary}, {"priority", k.priority}});
  j["registry"] = reg;
  json groups = json::array();
  for (const auto& g : r.kernels) {
    json c = json::array();
    for (const auto& [name, why] : g.candidates) c.push_back({{"kernel", name}, {"chosen", why.empty()}, {"reason", why}});
    groups.push_back({{"descriptor", g.descriptor}, {"modules", g.modules}, {"chosen", g.chosen}, {"candidates", c}, {"error", g.error}});
  }
  j["kernels"] = groups;
  j["notes"] = r.notes;
  json acc = json::array();
  for (const auto& a : r.accuracy)
    acc.push_back({{"module", a.module}, {"kernel", a.kernel}, {"mode", a.mode}, {"M", a.M}, {"N", a.N}, {"K", a.K},
                   {"required_exact", a.required_exact}, {"acc_exact", a.acc_exact}, {"bit_exact", a.bit_exact},
                   {"max_abs_diff", num(a.max_abs_diff)}, {"rel_l2", num(a.rel_l2)},
                   {"max_bound_ratio", num(a.max_bound_ratio)}, {"ok", a.ok}, {"unsupported", a.unsupported},
                   {"error", a.error}});
  j["accuracy"] = acc;
  json bench = json::array();
  for (const auto& b : r.bench)
    bench.push_back({{"M", b.M}, {"N", b.N}, {"K", b.K}, {"kernel", b.kernel}, {"variant", b.variant}, {"us", num(b.us)},
                     {"us_min", num(b.us_min)}, {"tflops", num(b.tflops)}, {"speedup_bf16", num(b.speedup_bf16)},
                     {"sets", b.sets}, {"algo", b.algo}, {"error", b.error}, {"peak", b.peak}, {"modules", b.modules},
                     {"deployed", b.deployed}});
  j["bench"] = bench;
  json targets = json::array();
  for (const auto& t : r.targets)
    targets.push_back({{"name", t.name}, {"description", t.description}, {"measured", t.measured}, {"met", t.met},
                       {"value", num(t.value)}, {"threshold", t.threshold}, {"detail", t.detail}});
  j["targets"] = targets;
  j["pass"] = r.pass;
  j["failures"] = r.failures;
  j["seconds"] = r.seconds;
  return j;
}

}  // namespace qt::verify
