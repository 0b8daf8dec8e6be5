// Run-time ISA choice of libquant/cpu_isa.h.
#include "libquant/cpu_isa.h"
#include "libquant/error.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "libquant/kernels/cpu_fast_avx2.h"
#include "libquant/kernels/gemm_avx512.h"
#include "libquant/kernels/gemm_onednn.h"

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

std::string bf16_kernels_id() {
  return bf16_backend() == Bf16Backend::Onednn ? "onednn-" + kernels::onednn::impl_name() : "own";
}

std::string gemm_path_name(bool bf16) {
  if (!bf16) return isa_name(active_isa());
  // The own kernels (also attention's, gemm.h): AVX512-BF16, else emulated with AVX2 + FMA or scalar.
  const std::string own = bf16_hardware() ? "avx512-bf16" : active_isa() != Isa::Scalar ? "avx2-bf16" : "scalar-bf16";
  const std::string kernels = bf16_kernels_id();  // "own" or the Linears' oneDNN implementation
  return kernels == "own" ? own : kernels + "+" + own;
}

namespace {

// Linux's arch_prctl codes for extended state permission (asm/prctl.h, Linux 5.16) and the XSAVE
// component number of AMX tile data (asm/fpu/types.h: XFEATURE_XTILEDATA).
constexpr int kArchReqXcompPerm = 0x1023;
constexpr unsigned long kXfeatureXtiledata = 18;

AmxStatus detect_amx() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 24)) || !(d & (1u << 22)))
    return {false, "the CPU has no AMX-BF16"};
  // OSXSAVE (leaf 1 ECX bit 27), then XCR0's tile configuration and tile data bits (17, 18).
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return {false, "the OS has not enabled XSAVE"};
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if ((lo & (3u << 17)) != (3u << 17)) return {false, "the OS has not enabled AMX tile state (XCR0 bits 17-18)"};
  std::string refused = request_amx_tile_data();
  if (!refused.empty()) return {false, refused};
  return {true, "granted"};
}

// -1: no test override; else the Bf16Backend value.
std::atomic<int> g_bf16_backend_test{-1};

Bf16Backend default_bf16_backend() {
  const char* v = std::getenv("QTOOL_BF16_GEMM");
  const std::string want = v ? v : "auto";
  // The request comes first in every case: oneDNN's AMX kernels need the permission.
  const bool amx = amx_status().usable;
  if (want == "own" || !kernels::onednn::available()) return Bf16Backend::Own;
  if (want == "onednn") return Bf16Backend::Onednn;
  return amx ? Bf16Backend::Onednn : Bf16Backend::Own;
}

}  // namespace

std::string request_amx_tile_data() {
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0) return "";
  const int e = errno;
  return std::string("Linux refused AMX tile data (arch_prctl ARCH_REQ_XCOMP_PERM): ") + std::strerror(e);
}

const AmxStatus& amx_status() {
  static const AmxStatus s = detect_amx();
  return s;
}

Bf16Backend bf16_backend() {
  static const Bf16Backend d = default_bf16_backend();
  const int t = g_bf16_backend_test.load(std::memory_order_relaxed);
  return t < 0 ? d : static_cast<Bf16Backend>(t);
}

void bf16_backend_for_tests(const Bf16Backend* choice) {
  QT_ASSERT(!choice || *choice == Bf16Backend::Own || kernels::onednn::available());
  g_bf16_backend_test.store(choice ? static_cast<int>(*choice) : -1, std::memory_order_relaxed);
}

void isa_cap_for_tests(Isa cap) { g_test_cap.store(static_cast<int>(cap), std::memory_order_relaxed); }

}  // namespace qt
