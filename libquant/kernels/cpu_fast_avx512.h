// AVX-512 F bodies of cpu_fast's f32 path (internal; defined in cpu_fast_avx512.cpp, every
// function with its own target attribute, like cpu_fast_avx2.cpp). The same layouts and the same
// arithmetic as avx2::f32_tile and avx2::gemv (cpu_fast_avx2.h): one zmm register holds a whole
// 16-column panel row where AVX2 uses two ymm, and every output is still one f32 FMA chain in
// increasing k, so the results are bit-identical to the AVX2 bodies (tests/test_kernels.cpp).
// Call only when active_isa() is Isa::Avx512 (libquant/cpu_isa.h).
#pragma once

#include <cstdint>

namespace qt::kernels::avx512 {

// avx2::f32_tile: C[r][j] (=|+=) sum_{k < kn} A[k][r] * B[k][j], A packed [k][6], rows 1..6.
void fast_f32_tile(int rows, const float* A, const float* B, int64_t kn, float* C, bool accumulate);
// avx2::gemv: one row against npanels (1..4) panels, codes decoded in registers.
void fast_gemv(int npanels, bool fp8, const float* A, const uint8_t* B, int64_t pstride, int64_t kn, float* C,
               bool accumulate);

}  // namespace qt::kernels::avx512
