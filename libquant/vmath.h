// Vectorised elementwise math of the forward pass: exp and the softmax row steps (attention) and
// SiLU-times-up (MLP), with an AVX-512 or AVX2+FMA body picked at run time (libquant/cpu_isa.h)
// and a scalar twin that performs the same IEEE operations in the same order, so both give the
// same bits (tests check) and results do not depend on the CPU.
//
// exp_f32 (Cephes-style range reduction + degree-5 polynomial, every step an f32 FMA or
// multiply, round-to-nearest-even):
//   n = nearbyint(x * log2(e));  r = fma(n, -C1, x);  r = fma(n, -C2, r)   (C1 + C2 = ln 2)
//   p = Horner(P0..P5)(r);  e^r ~ fma(p, r*r, r) + 1;  result = that * 2^n
// Accuracy: within 2 ulp of the exact value (test: every float on a sweep of [-87, 88]).
// Edge rules: x > 88.7228317 -> +inf; x < -87.33654 -> 0 (libm would give a subnormal below
// 1.2e-38: invisible next to a softmax sum >= 1 or silu's 1 + e^-z); NaN -> NaN.
#pragma once

#include <cstdint>

namespace qt {

// y[i] = exp_f32(x[i]) for i < n; x and y may be the same buffer.
void exp_f32(const float* x, float* y, int64_t n);

// out[i] = (g[i] / (1 + exp_f32(-g[i]))) * u[i]   (transformers' silu(gate) * up; f32 divide and
// multiply, in this order). out may alias g or u.
void silu_mul_f32(const float* g, const float* u, float* out, int64_t n);

// The elementwise steps of one softmax row (calib/forward.cpp's attention; the row's sum stays
// with the caller, in its own order). Each value is the f32 operations written here, in this
// order, whatever the vector width:
// softmax_exp_f32: t[i] = x[i] * scale (rounded to f32), m = the largest t[i], then
//   x[i] = exp_f32(t[i] - m). A NaN t[i] is passed over by the max (as std::max(m, t) does);
//   where +0 and -0 tie for the largest, m may be either: t - m then differs only in the sign of
//   a zero, and exp_f32 of either zero is 1, so x is the same. n >= 1 (n <= 0: nothing).
void softmax_exp_f32(float* x, int64_t n, float scale);
// div_f32: x[i] = x[i] / d, a true f32 division (not a multiply by 1 / d).
void div_f32(float* x, int64_t n, float d);

// Test hook: use the scalar twin even where AVX2 / AVX-512 is available (process wide).
void vmath_force_scalar(bool on);

}  // namespace qt
