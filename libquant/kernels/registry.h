// The kernel registry (libquant/kernels/KERNELS.md §1, after vLLM's choose_mp_linear_kernel /
// choose_scaled_mm_linear_kernel): every built-in kernel in one static table, ordered by
// priority; select() returns the best kernel that can implement a descriptor together with the
// reason every other kernel gave (printed by `qtool verify --list-kernels`).
//
// The table is a function-local static built on first use (thread-safe, no dependence on the
// order of global constructors).
//
// One Registry class, one registry per device: Registry::builtin() holds the CPU kernels, and
// kernels::gpu::cuda_registry() (gpu.h) the CUDA ones (empty in a build without CUDA). They are
// kept apart on purpose: a CPU kernel runs on host memory and a GPU kernel on device buffers, so
// a single table could hand a GPU kernel to the CPU check (or the reverse) whenever it ranks
// higher. `qtool verify --device` picks the registry; within one, selection is by priority and
// can_implement, as vLLM's kernel choice is.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "libquant/kernels/kernel.h"

namespace qt::kernels {

// The CPU kernels (always compiled; cpu_fast reports "no AVX2" from can_implement on older CPUs).
const Kernel& cpu_ref_kernel();       // "cpu_ref": scalar float64 oracle
const Kernel& cpu_portable_kernel();  // "cpu_portable": blocked plain C++
const Kernel& cpu_fast_kernel();      // "cpu_fast": AVX2 + FMA + F16C + OpenMP

struct Candidate {
  const Kernel* kernel = nullptr;
  std::string reason;  // "" = can implement; otherwise why not (or "disabled", "not forced")
};

struct Selection {
  const Kernel* chosen = nullptr;  // nullptr when no kernel can implement the descriptor
  std::vector<Candidate> rejected; // every other kernel, in priority order, with its reason
  // "no kernel can run N=.. K=..; cpu_fast: ...; cpu_ref: ..." when chosen is nullptr, else "".
  std::string error;
};

struct SelectOptions {
  std::string force;                  // only this kernel may be chosen (QTOOL_FORCE_KERNEL)
  std::vector<std::string> disabled;  // never choose these (QTOOL_DISABLED_KERNELS)
};

class Registry {
 public:
  // The built-in kernels.
  static const Registry& builtin();
  // A registry over `kernels` (not owned; tests use this to register fakes). Sorted by
  // priority, highest first; ties keep the given order.
  explicit Registry(std::vector<const Kernel*> kernels);

  // All kernels, highest priority first.
  std::span<const Kernel* const> kernels() const { return kernels_; }
  // nullptr if no kernel has that name.
  const Kernel* find(std::string_view name) const;
  // Every kernel in priority order with its can_implement reason ("" = yes).
  std::vector<Candidate> candidates(const LinearDescriptor& d) const;
  // The highest-priority kernel that can implement `d` and is allowed by `opt`. An unknown name
  // in opt.force is reported in Selection::error.
  Selection select(const LinearDescriptor& d, const SelectOptions& opt = {}) const;

 private:
  std::vector<const Kernel*> kernels_;
};

}  // namespace qt::kernels
