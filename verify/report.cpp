#include "verify/report.h"

#include <cmath>

namespace qt::verify {

KernelGroup make_kernel_group(const kernels::Registry& reg, const kernels::LinearDescriptor& d,
                              const kernels::Selection& sel) {
  KernelGroup g;
  g.descriptor = d.describe();
  g.chosen = sel.chosen ? std::string(sel.chosen->name()) : "";
  g.error = sel.error;
  // Every kernel in priority order: the chosen one with "" and each other with its reason.
  for (const kernels::Kernel* k : reg.kernels()) {
    if (k == sel.chosen) {
      g.candidates.emplace_back(std::string(k->name()), "");
      continue;
    }
    for (const auto& c : sel.rejected)
      if (c.kernel == k) g.candidates.emplace_back(std::string(k->name()), c.reason);
  }
  return g;
}

namespace {
nlohmann::json num(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }
}  // namespace

nlohmann::json verify_report_to_json(const VerifyReport& r) {
  using nlohmann::json;
  json j;
  j["quant_dir"] = r.quant_dir;
  j["reference_dir"] = r.reference_dir.empty() ? json(nullptr) : json(r.reference_dir);
  j["smoothed_layers"] = r.smoothed_layers;
  if (!r.moe_served.empty()) j["moe_served"] = r.moe_served;  // dense checkpoints: no key
  j["quant_method"] = r.quant_method;
  j["format"] = r.format;
  j["groups"] = r.groups;
  j["pass"] = r.pass;
  j["failures"] = r.failures;
  j["hints"] = r.hints;
  json f = json::array();
  for (const auto& x : r.findings) f.push_back({{"severity", x.severity}, {"where", x.where}, {"message", x.message}});
  j["findings"] = f;
  json reg = json::array();
  for (const auto& k : r.registry) reg.push_back({{"name", k.name}, {"summary", k.summary}, {"priority", k.priority}});
  j["registry"] = reg;
  j["cpu_isa"] = r.cpu_isa;
  json ks = json::array();
  for (const auto& g : r.kernels) {
    json c = json::array();
    for (const auto& [name, why] : g.candidates) c.push_back({{"kernel", name}, {"chosen", why.empty()}, {"reason", why}});
    ks.push_back({{"descriptor", g.descriptor}, {"modules", g.modules}, {"chosen", g.chosen.empty() ? json(nullptr) : json(g.chosen)},
                  {"candidates", c}, {"error", g.error}});
  }
  j["kernels"] = ks;
  json ls = json::array();
  for (const auto& L : r.layers) {
    json l;
    l["module"] = L.module;
    l["N"] = L.N;
    l["K"] = L.K;
    l["descriptor"] = L.descriptor;
    l["kernel"] = L.kernel.empty() ? json(nullptr) : json(L.kernel);
    l["gates"] = {{"min_sqnr_db", L.gates.min_sqnr_db}, {"max_gemm_err", L.gates.max_gemm_err}, {"basis", L.gates.basis}};
    if (L.weight) {
      l["weight"] = {{"sqnr_db", num(L.weight->sqnr_db)}, {"identical", std::isinf(L.weight->sqnr_db)},
                     {"cosine", num(L.weight->cosine)}, {"max_abs", num(L.weight->max_abs)},
                     {"max_rel", num(L.weight->max_rel)}, {"rel_l2", num(L.weight->rel_l2)}};
    } else {
      l["weight"] = nullptr;
    }
    l["activations"] = L.activations;
    l["gemm_tokens"] = L.gemm_tokens;
    l["gemm_err"] = num(L.gemm_err);
    l["act_err"] = num(L.act_err);
    json a = json::array();
    for (const auto& x : L.agreement)
      a.push_back({{"kernel", x.kernel}, {"bit_exact", x.bit_exact}, {"required_exact", x.required_exact},
                   {"max_abs_diff", num(x.max_abs_diff)}, {"max_bound_ratio", num(x.max_bound_ratio)}, {"ok", x.ok},
                   {"error", x.error}});
    l["agreement"] = a;
    l["pass"] = L.pass;
    l["failures"] = L.failures;
    ls.push_back(l);
  }
  j["layers"] = ls;
  const ModelReport& m = r.model;
  j["model"] = {{"ran", m.ran},
                {"skipped", m.skipped},
                {"notes", m.notes},
                {"against", m.against},
                {"text_source", m.text_source},
                {"samples", m.metrics.samples},
                {"tokens", m.metrics.tokens},
                {"predicted", m.metrics.predicted},
                {"ppl_ref", num(m.metrics.ppl_ref)},
                {"ppl_quant", num(m.metrics.ppl_quant)},
                {"kl_mean", m.compared && m.ran ? num(m.metrics.kl_mean) : json(nullptr)},
                {"kl_p99", m.compared && m.ran ? num(m.metrics.kl_p99) : json(nullptr)},
                {"kl_max", m.compared && m.ran ? num(m.metrics.kl_max) : json(nullptr)},
                {"top1", m.compared && m.ran ? num(m.metrics.top1) : json(nullptr)},
                {"compared", m.compared},
                {"gated", m.gated},
                {"gates", {{"max_kl", m.gates.max_kl}, {"min_top1", m.gates.min_top1}, {"basis", m.gates.basis}}},
                {"seconds", m.seconds},
                {"pass", m.pass},
                {"failures", m.failures}};
  json b = json::array();
  for (const auto& x : r.bench)
    b.push_back({{"descriptor", x.descriptor}, {"kernel", x.kernel}, {"modules", x.modules}, {"M", x.M}, {"N", x.N}, {"K", x.K},
                 {"kernel_gflops_best", x.kernel_gflops_best}, {"kernel_gflops_median", x.kernel_gflops_median},
                 {"eigen_f32_gflops_best", x.eigen_gflops_best}, {"eigen_f32_gflops_median", x.eigen_gflops_median}});
  j["bench"] = {{"threads", r.bench_threads}, {"rows", b}};
  j["seconds"] = r.seconds;
  return j;
}

}  // namespace qt::verify
