// Which instruction-set path the forward pass's kernels (gemm.h, vmath.h) run on this CPU, picked
// at run time from the CPU's features, best first:
//   avx512  AVX-512 F: the f32 GEMM micro-kernel with 12 x 16 tiles and 16-lane vmath;
//   avx2    AVX2 + FMA (+ F16C): the 6 x 16 micro-kernel and 8-lane vmath;
//   scalar  baseline x86-64 (std::fma).
// All three compute the same IEEE operations in the same order for f32 (gemm.h, vmath.h): the path
// changes speed, not bits. The bf16 GEMM (gemm.h Precision::BF16) runs vdpbf16ps where the CPU has
// AVX512-BF16 ("avx512-bf16") and its scalar emulation elsewhere ("scalar-bf16").
// The environment variable QTOOL_ISA (scalar | avx2 | avx512), read once, caps the choice (for
// comparisons on one machine); a value above what the CPU has changes nothing.
#pragma once

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
// "avx512", "avx2" or "scalar" for f32, "avx512-bf16" or "scalar-bf16" for bf16.
const char* gemm_path_name(bool bf16);

// Test hook: cap the path process wide (nullptr-like Isa::Avx512 = no cap beyond QTOOL_ISA); not
// for use while GEMMs are running.
void isa_cap_for_tests(Isa cap);

}  // namespace qt
