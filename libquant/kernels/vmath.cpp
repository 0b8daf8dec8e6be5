// Scalar twins and run-time dispatch of vmath.h (libquant/cpu_isa.h picks AVX-512, AVX2 or
// scalar). The scalar code spells every FMA with std::fma and is compiled for baseline x86-64 (no
// contraction possible), so it rounds exactly like the AVX2 body in vmath_avx2.cpp and the
// AVX-512 body in vmath_avx512.cpp.
#include "libquant/vmath.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "libquant/cpu_isa.h"
#include "libquant/kernels/vmath_avx2.h"
#include "libquant/kernels/vmath_avx512.h"

namespace qt {
namespace {

std::atomic<bool> g_force_scalar{false};

Isa vmath_isa() { return g_force_scalar.load(std::memory_order_relaxed) ? Isa::Scalar : active_isa(); }

float exp_scalar(float x) {
  using namespace vmath_const;
  if (x != x) return x;
  if (x > kExpHi) return INFINITY;
  if (x < kExpLo) return 0.0f;
  const float n = std::nearbyint(x * kLog2e);
  float r = std::fma(n, -kC1, x);
  r = std::fma(n, -kC2, r);
  float p = kP0;
  p = std::fma(p, r, kP1);
  p = std::fma(p, r, kP2);
  p = std::fma(p, r, kP3);
  p = std::fma(p, r, kP4);
  p = std::fma(p, r, kP5);
  const float r2 = r * r;
  const float e = std::fma(p, r2, r) + 1.0f;
  // 2^n as a float: n in [-126, 128] after the clamps; 2^128 is built as 2^127 * 2.
  const int32_t ni = static_cast<int32_t>(n);
  const int32_t half = ni / 2;
  uint32_t b1 = static_cast<uint32_t>(half + 127) << 23, b2 = static_cast<uint32_t>(ni - half + 127) << 23;
  float s1, s2;
  std::memcpy(&s1, &b1, 4);
  std::memcpy(&s2, &b2, 4);
  return (e * s1) * s2;
}

}  // namespace

void vmath_force_scalar(bool on) { g_force_scalar.store(on, std::memory_order_relaxed); }

void exp_f32(const float* x, float* y, int64_t n) {
  switch (vmath_isa()) {
    case Isa::Avx512: return vmath_avx512::exp_f32(x, y, n);
    case Isa::Avx2: return vmath_avx2::exp_f32(x, y, n);
    default: break;
  }
  for (int64_t i = 0; i < n; ++i) y[i] = exp_scalar(x[i]);
}

void silu_mul_f32(const float* g, const float* u, float* out, int64_t n) {
  switch (vmath_isa()) {
    case Isa::Avx512: return vmath_avx512::silu_mul_f32(g, u, out, n);
    case Isa::Avx2: return vmath_avx2::silu_mul_f32(g, u, out, n);
    default: break;
  }
  for (int64_t i = 0; i < n; ++i) {
    const float z = g[i];
    out[i] = (z / (1.0f + exp_scalar(-z))) * u[i];
  }
}

void softmax_exp_f32(float* x, int64_t n, float scale) {
  switch (vmath_isa()) {
    case Isa::Avx512: return vmath_avx512::softmax_exp_f32(x, n, scale);
    case Isa::Avx2: return vmath_avx2::softmax_exp_f32(x, n, scale);
    default: break;
  }
  float m = -INFINITY;
  for (int64_t i = 0; i < n; ++i) {
    x[i] *= scale;
    m = std::max(m, x[i]);
  }
  for (int64_t i = 0; i < n; ++i) x[i] = exp_scalar(x[i] - m);
}

void div_f32(float* x, int64_t n, float d) {
  switch (vmath_isa()) {
    case Isa::Avx512: return vmath_avx512::div_f32(x, n, d);
    case Isa::Avx2: return vmath_avx2::div_f32(x, n, d);
    default: break;
  }
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] / d;
}

}  // namespace qt
