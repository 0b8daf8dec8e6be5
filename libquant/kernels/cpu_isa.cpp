// Run-time ISA choice of libquant/cpu_isa.h.
#include "libquant/cpu_isa.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "libquant/kernels/cpu_fast_avx2.h"
#include "libquant/kernels/gemm_avx512.h"

namespace qt {
namespace {

Isa detect() {
  if (kernels::avx512::cpu_ok() && kernels::avx2::cpu_ok()) return Isa::Avx512;
  if (kernels::avx2::cpu_ok()) return Isa::Avx2;
  return Isa::Scalar;
}

Isa env_cap() {
  const char* v = std::getenv("QTOOL_ISA");
  if (!v || !*v) return Isa::Avx512;
  if (std::strcmp(v, "scalar") == 0) return Isa::Scalar;
  if (std::strcmp(v, "avx2") == 0) return Isa::Avx2;
  return Isa::Avx512;
}

std::atomic<int> g_test_cap{static_cast<int>(Isa::Avx512)};

}  // namespace

Isa cpu_isa() {
  static const Isa isa = detect();
  return isa;
}

Isa active_isa() {
  static const Isa env = env_cap();
  int a = static_cast<int>(cpu_isa());
  if (static_cast<int>(env) < a) a = static_cast<int>(env);
  const int t = g_test_cap.load(std::memory_order_relaxed);
  return static_cast<Isa>(t < a ? t : a);
}

bool bf16_hardware() {
  static const bool ok = kernels::avx512::bf16_ok();
  return ok && active_isa() == Isa::Avx512;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "scalar";
  }
}

const char* gemm_path_name(bool bf16) {
  if (bf16) return bf16_hardware() ? "avx512-bf16" : "scalar-bf16";
  return isa_name(active_isa());
}

void isa_cap_for_tests(Isa cap) { g_test_cap.store(static_cast<int>(cap), std::memory_order_relaxed); }

}  // namespace qt
