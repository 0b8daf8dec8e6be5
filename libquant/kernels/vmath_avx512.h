// Internal to libquant/kernels/vmath.cpp: the AVX-512 F bodies of vmath.h (vmath_avx512.cpp; call
// only when qt::kernels::avx512::cpu_ok()). Same constants (vmath_avx2.h vmath_const) and the same
// IEEE operations in the same order as the AVX2 bodies and the scalar twins, 16 lanes at a time:
// identical bits.
#pragma once

#include <cstdint>

namespace qt::vmath_avx512 {
void exp_f32(const float* x, float* y, int64_t n);
void silu_mul_f32(const float* g, const float* u, float* out, int64_t n);
void softmax_exp_f32(float* x, int64_t n, float scale);
void div_f32(float* x, int64_t n, float d);
}  // namespace qt::vmath_avx512
