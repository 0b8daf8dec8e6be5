// AVX-512 F body of libquant/drift_rows.h: lane l of the 16-lane accumulators is partial sum l of
// the reference, so the sums come out in the reference's order. The last block (< 16 elements)
// runs masked: its missing lanes add +0, which leaves a partial sum unchanged (a partial sum is
// never -0: it starts at +0 and adds squares).
#include <immintrin.h>

#include "libquant/kernels/drift_rows_isa.h"

#define QT_AVX512 __attribute__((target("avx512f")))

namespace qt::drift_rows_avx512 {
namespace {

// Values of 16 E4M3 codes (bytes) exactly as f32_from_e4m3fn: exponent field e > 0 moves to
// e + 120 with the 3 mantissa bits on top of f32's; e == 0 is m * 2^-9 (an exact product);
// magnitude 0x7F is a NaN; the sign bit is or-ed in.
QT_AVX512 inline __m512 e4m3_values(__m128i bytes) {
  const __m512i c = _mm512_cvtepu8_epi32(bytes);
  const __m512i m7 = _mm512_and_si512(c, _mm512_set1_epi32(0x7F));
  const __m512i sign = _mm512_slli_epi32(_mm512_and_si512(c, _mm512_set1_epi32(0x80)), 24);
  __m512i v = _mm512_add_epi32(_mm512_slli_epi32(m7, 20), _mm512_set1_epi32(120 << 23));
  const __m512 sub = _mm512_mul_ps(_mm512_cvtepi32_ps(m7), _mm512_set1_ps(0.001953125f));  // 2^-9
  v = _mm512_mask_blend_epi32(_mm512_cmplt_epu32_mask(m7, _mm512_set1_epi32(8)), v, _mm512_castps_si512(sub));
  v = _mm512_mask_blend_epi32(_mm512_cmpeq_epi32_mask(m7, _mm512_set1_epi32(0x7F)), v, _mm512_set1_epi32(0x7FC00000));
  return _mm512_castsi512_ps(_mm512_or_si512(v, sign));
}

}  // namespace

QT_AVX512 DriftGroup drift_group_bf16(const uint8_t* w, const uint8_t* codes, bool fp8, int64_t n, float s,
                                      float lim_s) {
  const __m512 vs = _mm512_set1_ps(s), vlim = _mm512_set1_ps(lim_s);
  const __m512i absmask = _mm512_set1_epi32(0x7FFFFFFF);
  __m512 d2 = _mm512_setzero_ps(), r2 = _mm512_setzero_ps();
  __m512 md = _mm512_setzero_ps(), an = _mm512_setzero_ps(), aq = _mm512_setzero_ps();
  int64_t clipped = 0;
  for (int64_t j = 0; j < n; j += 16) {
    const int64_t left = n - j;
    const __mmask16 k = left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
    __m256i h;
    __m128i cb;
    if (left >= 16) {
      h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 2 * j));
      cb = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + j));
    } else {  // copy the tail into zeroed buffers (no read past the end)
      alignas(32) uint8_t hb[32] = {}, cbuf[16] = {};
      __builtin_memcpy(hb, w + 2 * j, static_cast<size_t>(2 * left));
      __builtin_memcpy(cbuf, codes + j, static_cast<size_t>(left));
      h = _mm256_load_si256(reinterpret_cast<const __m256i*>(hb));
      cb = _mm_load_si128(reinterpret_cast<const __m128i*>(cbuf));
    }
    const __m512 a = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    const __m512 c = fp8 ? e4m3_values(cb) : _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(cb));
    const __m512 deq = _mm512_mul_ps(c, vs);
    const __m512 d = _mm512_sub_ps(a, deq);
    d2 = _mm512_mask_add_ps(d2, k, d2, _mm512_mul_ps(d, d));
    r2 = _mm512_mask_add_ps(r2, k, r2, _mm512_mul_ps(deq, deq));
    const __m512 ad = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(d), absmask));
    const __m512 aa = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), absmask));
    const __m512 aqv = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(deq), absmask));
    // max(x, m) returns m when either is NaN: a NaN element is skipped, as in the reference.
    md = _mm512_mask_max_ps(md, k, ad, md);
    an = _mm512_mask_max_ps(an, k, aa, an);
    aq = _mm512_mask_max_ps(aq, k, aqv, aq);
    clipped += __builtin_popcount(static_cast<unsigned>(_mm512_mask_cmp_ps_mask(k, aa, vlim, _CMP_GT_OQ)));
  }
  alignas(64) float dl[16], rl[16], ml[16], al[16], ql[16];
  _mm512_store_ps(dl, d2);
  _mm512_store_ps(rl, r2);
  _mm512_store_ps(ml, md);
  _mm512_store_ps(al, an);
  _mm512_store_ps(ql, aq);
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

}  // namespace qt::drift_rows_avx512
