// AVX2 body of libquant/drift_rows.h: the AVX-512 body with each 16-lane accumulator held as two
// 8-lane halves (lanes 0-7 and 8-15), step for step, so the sums come out in the reference's
// order. The last block's missing lanes are zeroed before they are added (+0 leaves a partial sum
// unchanged) and left out of the count.
#include <immintrin.h>

#include "libquant/kernels/drift_rows_isa.h"

#define QT_AVX2 __attribute__((target("avx2")))

namespace qt::drift_rows_avx2 {
namespace {

QT_AVX2 inline __m256 e4m3_values(__m128i bytes8) {  // the low 8 bytes
  const __m256i c = _mm256_cvtepu8_epi32(bytes8);
  const __m256i m7 = _mm256_and_si256(c, _mm256_set1_epi32(0x7F));
  const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(c, _mm256_set1_epi32(0x80)), 24);
  const __m256 normal = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_slli_epi32(m7, 20), _mm256_set1_epi32(120 << 23)));
  const __m256 sub = _mm256_mul_ps(_mm256_cvtepi32_ps(m7), _mm256_set1_ps(0.001953125f));  // 2^-9
  __m256 v = _mm256_blendv_ps(normal, sub, _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(8), m7)));
  v = _mm256_blendv_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FC00000)),
                       _mm256_castsi256_ps(_mm256_cmpeq_epi32(m7, _mm256_set1_epi32(0x7F))));
  return _mm256_or_ps(v, _mm256_castsi256_ps(sign));
}

struct Acc {  // zeroed by the caller (a constructor would not be compiled for AVX2)
  __m256 d2, r2, md, an, aq;
};

// 8 elements into one half; `valid` all-ones in the lanes that hold elements.
QT_AVX2 inline int64_t step(Acc& x, __m128i h8, __m128i c8, bool fp8, __m256 vs, __m256 vlim, __m256 valid) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256 a = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h8), 16));
  const __m256 c = fp8 ? e4m3_values(c8) : _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c8));
  const __m256 deq = _mm256_mul_ps(c, vs);
  const __m256 d = _mm256_sub_ps(a, deq);
  x.d2 = _mm256_add_ps(x.d2, _mm256_and_ps(_mm256_mul_ps(d, d), valid));
  x.r2 = _mm256_add_ps(x.r2, _mm256_and_ps(_mm256_mul_ps(deq, deq), valid));
  const __m256 ad = _mm256_and_ps(_mm256_and_ps(d, absmask), valid);
  const __m256 aa = _mm256_and_ps(_mm256_and_ps(a, absmask), valid);
  const __m256 aqv = _mm256_and_ps(_mm256_and_ps(deq, absmask), valid);
  x.md = _mm256_max_ps(ad, x.md);  // NaN skipped (max returns its second operand)
  x.an = _mm256_max_ps(aa, x.an);
  x.aq = _mm256_max_ps(aqv, x.aq);
  const __m256 gt = _mm256_and_ps(_mm256_cmp_ps(aa, vlim, _CMP_GT_OQ), valid);
  return __builtin_popcount(static_cast<unsigned>(_mm256_movemask_ps(gt)));
}

}  // namespace

QT_AVX2 DriftGroup drift_group_bf16(const uint8_t* w, const uint8_t* codes, bool fp8, int64_t n, float s,
                                    float lim_s) {
  const __m256 vs = _mm256_set1_ps(s), vlim = _mm256_set1_ps(lim_s);
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  Acc lo, hi;
  lo.d2 = lo.r2 = lo.md = lo.an = lo.aq = _mm256_setzero_ps();
  hi = lo;
  int64_t clipped = 0;
  for (int64_t j = 0; j < n; j += 16) {
    const int64_t left = n - j;
    alignas(32) uint8_t hb[32] = {}, cbuf[16] = {};
    const uint8_t *hp = w + 2 * j, *cp = codes + j;
    if (left < 16) {  // copy the tail into zeroed buffers (no read past the end)
      __builtin_memcpy(hb, hp, static_cast<size_t>(2 * left));
      __builtin_memcpy(cbuf, cp, static_cast<size_t>(left));
      hp = hb, cp = cbuf;
    }
    const int lim_lo = left >= 8 ? 8 : static_cast<int>(left), lim_hi = left >= 16 ? 8 : static_cast<int>(left > 8 ? left - 8 : 0);
    const __m256 vlo = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(lim_lo), iota));
    const __m256 vhi = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(lim_hi), iota));
    const __m128i h0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(hp));
    const __m128i h1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(hp + 16));
    const __m128i c0 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(cp));
    const __m128i c1 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(cp + 8));
    clipped += step(lo, h0, c0, fp8, vs, vlim, vlo);
    clipped += step(hi, h1, c1, fp8, vs, vlim, vhi);
  }
  alignas(32) float dl[16], rl[16], ml[16], al[16], ql[16];
  _mm256_store_ps(dl, lo.d2), _mm256_store_ps(dl + 8, hi.d2);
  _mm256_store_ps(rl, lo.r2), _mm256_store_ps(rl + 8, hi.r2);
  _mm256_store_ps(ml, lo.md), _mm256_store_ps(ml + 8, hi.md);
  _mm256_store_ps(al, lo.an), _mm256_store_ps(al + 8, hi.an);
  _mm256_store_ps(ql, lo.aq), _mm256_store_ps(ql + 8, hi.aq);
  DriftGroup g;
  for (int h = 8; h >= 1; h /= 2)
    for (int l = 0; l < h; ++l) dl[l] += dl[l + h], rl[l] += rl[l + h];
  g.d2 = dl[0], g.r2 = rl[0];
  for (int l = 0; l < 16; ++l) {
    g.max_d = ml[l] > g.max_d ? ml[l] : g.max_d;
    g.amax_new = al[l] > g.amax_new ? al[l] : g.amax_new;
    g.amax_quant = ql[l] > g.amax_quant ? ql[l] : g.amax_quant;
  }
  g.clipped = clipped;
  return g;
}

}  // namespace qt::drift_rows_avx2
