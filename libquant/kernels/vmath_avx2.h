// Internal to libquant/kernels/vmath.cpp: the constants of exp_f32 (shared by the scalar twin and the AVX2
// body so they cannot drift apart) and the AVX2+FMA bodies (vmath_avx2.cpp; call only when
// qt::kernels::avx2::cpu_ok()).
#pragma once

#include <cstdint>

namespace qt {

namespace vmath_const {
inline constexpr float kExpHi = 88.72283172607421875f;  // largest x with exp(x) finite in f32
inline constexpr float kExpLo = -87.33654022216797f;   // ln(FLT_MIN): below, exp_f32 gives 0
inline constexpr float kLog2e = 1.44269502162933349609375f;
// ln 2 split so that n * kC1 is exact for |n| <= 2^9 (kC1 has 9 significant bits).
inline constexpr float kC1 = 0.693359375f;
inline constexpr float kC2 = -2.12194440e-4f;
// Minimax polynomial for (e^r - 1 - r) / r^2 on |r| <= ln2/2 (Cephes expf).
inline constexpr float kP0 = 1.9875691500e-4f;
inline constexpr float kP1 = 1.3981999507e-3f;
inline constexpr float kP2 = 8.3334519073e-3f;
inline constexpr float kP3 = 4.1665795894e-2f;
inline constexpr float kP4 = 1.6666665459e-1f;
inline constexpr float kP5 = 5.0000001201e-1f;
}  // namespace vmath_const

namespace vmath_avx2 {
void exp_f32(const float* x, float* y, int64_t n);
void silu_mul_f32(const float* g, const float* u, float* out, int64_t n);
void softmax_exp_f32(float* x, int64_t n, float scale);
void div_f32(float* x, int64_t n, float d);
}  // namespace vmath_avx2

}  // namespace qt
