// AVX-512 F bodies of vmath.h: exp8/silu_mul8 of vmath_avx2.cpp on 16 lanes, step for step
// (round to nearest integer, the two-step reduction, the Horner chain, 2^n in two exact halves,
// the edge overrides), so every lane rounds as the scalar twin does. The tail (< 16 elements) is a
// masked load of zeros past n, computed the same way, and a masked store.
#include <immintrin.h>

#include "libquant/kernels/vmath_avx2.h"
#include "libquant/kernels/vmath_avx512.h"

#define QT_AVX512 __attribute__((target("avx512f")))

namespace qt::vmath_avx512 {
namespace {

using namespace vmath_const;

QT_AVX512 inline __m512 exp16(__m512 x) {
  const __mmask16 nan_mask = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  const __mmask16 hi_mask = _mm512_cmp_ps_mask(x, _mm512_set1_ps(kExpHi), _CMP_GT_OQ);
  const __mmask16 lo_mask = _mm512_cmp_ps_mask(x, _mm512_set1_ps(kExpLo), _CMP_LT_OQ);
  const __m512 xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(kExpLo)), _mm512_set1_ps(kExpHi));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(kLog2e)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-kC1), xc);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(-kC2), r);
  __m512 p = _mm512_set1_ps(kP0);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP1));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP2));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP3));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP4));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP5));
  const __m512 r2 = _mm512_mul_ps(r, r);
  const __m512 e = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0f));
  const __m512i ni = _mm512_cvtps_epi32(n);  // n is integral: exact
  // h = trunc(n / 2) as the scalar twin's int division: floor (arithmetic shift) + 1 for odd n < 0.
  const __m512i odd_neg = _mm512_and_si512(_mm512_and_si512(ni, _mm512_set1_epi32(1)), _mm512_srai_epi32(ni, 31));
  const __m512i h = _mm512_add_epi32(_mm512_srai_epi32(ni, 1), odd_neg);
  const __m512i bias = _mm512_set1_epi32(127);
  const __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(h, bias), 23));
  const __m512 s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_sub_epi32(ni, h), bias), 23));
  __m512 y = _mm512_mul_ps(_mm512_mul_ps(e, s1), s2);
  y = _mm512_mask_blend_ps(hi_mask, y, _mm512_set1_ps(__builtin_inff()));
  y = _mm512_mask_blend_ps(lo_mask, y, _mm512_setzero_ps());
  y = _mm512_mask_blend_ps(nan_mask, y, x);
  return y;
}

QT_AVX512 inline __m512 silu_mul16(__m512 z, __m512 u) {
  const __m512 neg = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(z), _mm512_set1_epi32(INT32_MIN)));
  const __m512 d = _mm512_add_ps(_mm512_set1_ps(1.0f), exp16(neg));
  return _mm512_mul_ps(_mm512_div_ps(z, d), u);
}

QT_AVX512 inline __mmask16 tail_mask(int64_t m) { return static_cast<__mmask16>((1u << m) - 1u); }

}  // namespace

QT_AVX512 void exp_f32(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, exp16(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 k = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, k, exp16(_mm512_maskz_loadu_ps(k, x + i)));
  }
}

QT_AVX512 void silu_mul_f32(const float* g, const float* u, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(out + i, silu_mul16(_mm512_loadu_ps(g + i), _mm512_loadu_ps(u + i)));
  if (i < n) {
    const __mmask16 k = tail_mask(n - i);
    _mm512_mask_storeu_ps(out + i, k, silu_mul16(_mm512_maskz_loadu_ps(k, g + i), _mm512_maskz_loadu_ps(k, u + i)));
  }
}

// Lane l of m keeps the largest of the elements l, l + 16, ... (_mm512_max_ps(t, m) returns m
// when t is NaN, as std::max(m, t) does), then the 16 lanes are folded; the max of the same set of
// numbers whatever the order, up to the sign of a tied zero (vmath.h).
QT_AVX512 void softmax_exp_f32(float* x, int64_t n, float scale) {
  if (n <= 0) return;
  const __m512 sc = _mm512_set1_ps(scale);
  __m512 m = _mm512_set1_ps(-__builtin_inff());
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 t = _mm512_mul_ps(_mm512_loadu_ps(x + i), sc);
    _mm512_storeu_ps(x + i, t);
    m = _mm512_max_ps(t, m);
  }
  if (i < n) {
    const __mmask16 k = tail_mask(n - i);
    const __m512 t = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), sc);
    _mm512_mask_storeu_ps(x + i, k, t);
    m = _mm512_mask_max_ps(m, k, t, m);
  }
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, m);
  float mx = lanes[0];
  for (int l = 1; l < 16; ++l) mx = lanes[l] > mx ? lanes[l] : mx;
  const __m512 mv = _mm512_set1_ps(mx);
  for (i = 0; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), mv)));
  if (i < n) {
    const __mmask16 k = tail_mask(n - i);
    _mm512_mask_storeu_ps(x + i, k, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), mv)));
  }
}

QT_AVX512 void div_f32(float* x, int64_t n, float d) {
  const __m512 dv = _mm512_set1_ps(d);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_div_ps(_mm512_loadu_ps(x + i), dv));
  if (i < n) {
    const __mmask16 k = tail_mask(n - i);
    _mm512_mask_storeu_ps(x + i, k, _mm512_div_ps(_mm512_maskz_loadu_ps(k, x + i), dv));
  }
}

}  // namespace qt::vmath_avx512
