#include "libquant/kernels/registry.h"

#include <algorithm>

namespace qt::kernels {

Registry::Registry(std::vector<const Kernel*> kernels) : kernels_(std::move(kernels)) {
  std::stable_sort(kernels_.begin(), kernels_.end(),
                   [](const Kernel* a, const Kernel* b) { return a->priority() > b->priority(); });
}

const Registry& Registry::builtin() {
  // Function-local static: built on first use, after every kernel object it points to exists
  // (each *_kernel() returns its own function-local static).
  static const Registry r({&cpu_fast_kernel(), &cpu_portable_kernel(), &cpu_ref_kernel()});
  return r;
}

const Kernel* Registry::find(std::string_view name) const {
  for (const Kernel* k : kernels_)
    if (k->name() == name) return k;
  return nullptr;
}

std::vector<Candidate> Registry::candidates(const LinearDescriptor& d) const {
  std::vector<Candidate> out;
  for (const Kernel* k : kernels_) out.push_back({k, k->can_implement(d)});
  return out;
}

Selection Registry::select(const LinearDescriptor& d, const SelectOptions& opt) const {
  Selection s;
  if (!opt.force.empty() && !find(opt.force)) {
    std::string names;
    for (const Kernel* k : kernels_) names += (names.empty() ? "" : ", ") + std::string(k->name());
    s.error = "unknown kernel '" + opt.force + "' (known: " + names + ")";
    for (const Kernel* k : kernels_) s.rejected.push_back({k, "not forced"});
    return s;
  }
  for (const Kernel* k : kernels_) {
    std::string why;
    if (std::find(opt.disabled.begin(), opt.disabled.end(), k->name()) != opt.disabled.end())
      why = "disabled";
    else if (!opt.force.empty() && k->name() != opt.force)
      why = "not forced (forced kernel: " + opt.force + ")";
    else
      why = k->can_implement(d);
    if (why.empty() && !s.chosen) {
      s.chosen = k;  // the first (highest-priority) kernel that can run it
      continue;
    }
    s.rejected.push_back({k, why.empty() ? "lower priority" : why});
  }
  if (!s.chosen) {
    s.error = "no kernel can run " + d.describe();
    for (const Candidate& c : s.rejected) s.error += "; " + std::string(c.kernel->name()) + ": " + c.reason;
  }
  return s;
}

}  // namespace qt::kernels
