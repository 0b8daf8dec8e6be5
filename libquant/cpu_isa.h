// Which instruction-set path the forward pass's kernels (gemm.h, vmath.h) run on this CPU, picked
// at run time from the CPU's features, best first:
//   avx512  AVX-512 F: the f32 GEMM micro-kernel with 12 x 16 tiles and 16-lane vmath;
//   avx2    AVX2 + FMA (+ F16C): the 6 x 16 micro-kernel and 8-lane vmath;
//   scalar  baseline x86-64 (std::fma).
// All three compute the same IEEE operations in the same order for f32 (gemm.h, vmath.h): the path
// changes speed, not bits. The bf16 GEMM (gemm.h Precision::BF16) has two back ends:
//   own     vdpbf16ps where the CPU has AVX512-BF16 ("avx512-bf16"), its bit-identical emulation
//           with AVX2 + FMA ("avx2-bf16") or in scalar code ("scalar-bf16") elsewhere: one
//           documented summation order on every CPU;
//   onednn  oneDNN's matmul ("onednn-" + oneDNN's implementation name, e.g.
//           "onednn-brg:avx512_core_amx_bf16"): AMX-BF16 tiles where the CPU has them, oneDNN's own
//           summation order (gemm.h, kernels/gemm_onednn.h).
// By default the bf16 GEMM uses oneDNN where this build has it and the CPU has AMX-BF16 that Linux
// lets the process use (amx_status()), and the own kernel everywhere else. QTOOL_BF16_GEMM=own |
// onednn | auto (read once) overrides that for comparisons (onednn where oneDNN is not built in,
// or has no bf16 matmul for this CPU, as on AVX2-only CPUs: own). The environment variable QTOOL_ISA (scalar | avx2 | avx512), read once, caps the own
// kernels' choice (for comparisons on one machine); a value above what the CPU has changes nothing.
#pragma once

#include <string>

namespace qt {

enum class Isa { Scalar = 0, Avx2 = 1, Avx512 = 2 };

// The best path this CPU supports (ignores the cap).
Isa cpu_isa();
// The path in use: min(cpu_isa(), cap from QTOOL_ISA or isa_cap_for_tests).
Isa active_isa();
// Whether the bf16 GEMM runs on AVX512-BF16 hardware (else the bit-identical scalar emulation);
// false when the cap is below avx512.
bool bf16_hardware();
const char* isa_name(Isa isa);
// "avx512", "avx2" or "scalar" for f32; "avx512-bf16", "avx2-bf16", "scalar-bf16" or, where the Linears go to
// oneDNN, "onednn-<implementation>+" and the own kernel that runs attention's products (e.g.
// "onednn-brg:avx512_core_amx_bf16+avx512-bf16") for bf16 (the manifest's calibration.forward.isa).
std::string gemm_path_name(bool bf16);
// Whose bits a bf16 forward gives: "own" (the documented vdpbf16ps chain: the same bits on every
// CPU, AVX512-BF16 or emulated) or "onednn-<implementation>" (that machine's; gemm.h). Statistics
// files record it (calib_kernels) so that a resumed run reuses only what it would compute itself.
std::string bf16_kernels_id();

// AMX-BF16 tiles (Intel Xeon from Sapphire Rapids on). Linux (5.16 and later) gives a process the
// 8 KiB of tile state only on request, arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA); a tile
// instruction before that kills the process (SIGILL). amx_status() checks the CPU (CPUID leaf 7:
// AMX-TILE and AMX-BF16), the OS (XCR0 bits 17 and 18) and makes the request, once per process;
// `detail` says what it found ("granted", or why not, in one sentence).
struct AmxStatus {
  bool usable = false;
  std::string detail;
};
const AmxStatus& amx_status();
// The request itself: "" when Linux grants tile data to this process, else why not (with the
// errno text). amx_status() calls it only on a CPU with AMX; tests call it anywhere.
std::string request_amx_tile_data();

enum class Bf16Backend { Own, Onednn };
// The bf16 GEMM back end linear_packed uses for weights packed from now on (see the top).
Bf16Backend bf16_backend();
// Test hook: force a back end (Onednn only where kernels::onednn::available()) or go back to the default (nullptr);
// process wide, not while GEMMs run.
void bf16_backend_for_tests(const Bf16Backend* choice);

// Test hook: cap the path process wide (nullptr-like Isa::Avx512 = no cap beyond QTOOL_ISA); not
// for use while GEMMs are running.
void isa_cap_for_tests(Isa cap);

}  // namespace qt
