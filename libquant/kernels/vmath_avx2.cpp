// AVX2+FMA bodies of vmath.h. Every function carries the target attribute itself (the file is
// compiled for baseline x86-64, like libquant/kernels/cpu_fast_avx2.cpp). Eight lanes at a time;
// the tail (< 8 elements) goes through a zero-padded vector so it takes the same path and gives
// the same bits as the body and as the scalar twin.
#include <immintrin.h>

#include <cstring>

#include "libquant/kernels/vmath_avx2.h"

#define QT_AVX2 __attribute__((target("avx2,fma")))

namespace qt::vmath_avx2 {
namespace {

using namespace vmath_const;

QT_AVX2 inline __m256 exp8(__m256 x) {
  const __m256 nan_mask = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
  const __m256 hi_mask = _mm256_cmp_ps(x, _mm256_set1_ps(kExpHi), _CMP_GT_OQ);
  const __m256 lo_mask = _mm256_cmp_ps(x, _mm256_set1_ps(kExpLo), _CMP_LT_OQ);
  // Clamp so the lanes that are overridden below still compute finite garbage.
  const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(kExpLo)), _mm256_set1_ps(kExpHi));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(kLog2e)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-kC1), xc);
  r = _mm256_fmadd_ps(n, _mm256_set1_ps(-kC2), r);
  __m256 p = _mm256_set1_ps(kP0);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP1));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP2));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP3));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP4));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP5));
  const __m256 r2 = _mm256_mul_ps(r, r);
  const __m256 e = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0f));
  // 2^n in two exact halves (n may be 128).
  const __m256i ni = _mm256_cvtps_epi32(n);  // n is integral: exact
  // h = trunc(n / 2), as C++ int division in the scalar twin: floor (arithmetic shift) plus 1
  // for negative odd n.
  const __m256i odd_neg = _mm256_and_si256(_mm256_and_si256(ni, _mm256_set1_epi32(1)),
                                           _mm256_srai_epi32(ni, 31));
  const __m256i h = _mm256_add_epi32(_mm256_srai_epi32(ni, 1), odd_neg);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, bias), 23));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, h), bias), 23));
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(e, s1), s2);
  y = _mm256_blendv_ps(y, _mm256_set1_ps(__builtin_inff()), hi_mask);
  y = _mm256_blendv_ps(y, _mm256_setzero_ps(), lo_mask);
  y = _mm256_blendv_ps(y, x, nan_mask);
  return y;
}

QT_AVX2 inline __m256 silu_mul8(__m256 z, __m256 u) {
  const __m256 neg = _mm256_xor_ps(z, _mm256_set1_ps(-0.0f));
  const __m256 d = _mm256_add_ps(_mm256_set1_ps(1.0f), exp8(neg));
  return _mm256_mul_ps(_mm256_div_ps(z, d), u);
}

}  // namespace

QT_AVX2 void exp_f32(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, exp8(_mm256_loadu_ps(x + i)));
  if (i < n) {
    float buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    std::memcpy(buf, x + i, sizeof(float) * static_cast<size_t>(n - i));
    _mm256_storeu_ps(buf, exp8(_mm256_loadu_ps(buf)));
    std::memcpy(y + i, buf, sizeof(float) * static_cast<size_t>(n - i));
  }
}

QT_AVX2 void silu_mul_f32(const float* g, const float* u, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, silu_mul8(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i)));
  if (i < n) {
    float bg[8] = {0, 0, 0, 0, 0, 0, 0, 0}, bu[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    std::memcpy(bg, g + i, sizeof(float) * static_cast<size_t>(n - i));
    std::memcpy(bu, u + i, sizeof(float) * static_cast<size_t>(n - i));
    _mm256_storeu_ps(bg, silu_mul8(_mm256_loadu_ps(bg), _mm256_loadu_ps(bu)));
    std::memcpy(out + i, bg, sizeof(float) * static_cast<size_t>(n - i));
  }
}

// Lane l of m keeps the largest of the elements l, l + 8, ... (_mm256_max_ps(t, m) returns m when
// t is NaN, as std::max(m, t) does); the tail's products and maxima are scalar (the same f32
// multiply), then the lanes are folded: the max of the same numbers, up to a tied zero's sign.
QT_AVX2 void softmax_exp_f32(float* x, int64_t n, float scale) {
  if (n <= 0) return;
  const __m256 sc = _mm256_set1_ps(scale);
  __m256 m = _mm256_set1_ps(-__builtin_inff());
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 t = _mm256_mul_ps(_mm256_loadu_ps(x + i), sc);
    _mm256_storeu_ps(x + i, t);
    m = _mm256_max_ps(t, m);
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, m);
  float mx = lanes[0];
  for (int l = 1; l < 8; ++l) mx = lanes[l] > mx ? lanes[l] : mx;
  for (int64_t j = i; j < n; ++j) {
    x[j] *= scale;
    mx = x[j] > mx ? x[j] : mx;
  }
  const __m256 mv = _mm256_set1_ps(mx);
  for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv)));
  if (i < n) {
    float buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t j = i; j < n; ++j) buf[j - i] = x[j] - mx;
    _mm256_storeu_ps(buf, exp8(_mm256_loadu_ps(buf)));
    std::memcpy(x + i, buf, sizeof(float) * static_cast<size_t>(n - i));
  }
}

QT_AVX2 void div_f32(float* x, int64_t n, float d) {
  const __m256 dv = _mm256_set1_ps(d);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_div_ps(_mm256_loadu_ps(x + i), dv));
  for (; i < n; ++i) x[i] = x[i] / d;
}

}  // namespace qt::vmath_avx2
