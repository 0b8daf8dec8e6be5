// AVX-512 F bodies of libquant/quant_rows.h, 16 elements per step (16-bit patterns widened to
// 32-bit lanes, so only AVX-512 F is needed). Per element the same operations as the scalar twin
// in quant_rows.cpp: integer max of the sign-cleared bits; widen bf16 -> f32 (shift), one f32
// division, bf16 nearest-even by the integer rounding of bf16_from_f32 (NaN -> signed 0x7FC0),
// table lookup. The tail (< 16 elements) runs the scalar twin.
#include <immintrin.h>

#include <cstring>

#include "libquant/kernels/quant_rows_isa.h"
#include "libquant/quant_rows.h"

#define QT_AVX512 __attribute__((target("avx512f")))

namespace qt::quant_rows_avx512 {

QT_AVX512 uint16_t absmax_bits16(const uint8_t* x, int64_t n, uint16_t special, int64_t* first_special) {
  *first_special = -1;
  const __m512i lowmask = _mm512_set1_epi32(0x7FFF), vspecial = _mm512_set1_epi32(special);
  __m512i vmax = _mm512_setzero_si512();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 2 * i));
    const __m512i u = _mm512_and_si512(_mm512_cvtepu16_epi32(h), lowmask);
    if (*first_special < 0) {
      const __mmask16 m = _mm512_cmpge_epu32_mask(u, vspecial);
      if (m) *first_special = i + __builtin_ctz(static_cast<unsigned>(m));
    }
    vmax = _mm512_max_epu32(vmax, u);
  }
  uint32_t m = _mm512_reduce_max_epu32(vmax);
  if (i < n) {
    int64_t tail_special = -1;
    const uint16_t t = absmax_bits16_ref(x + 2 * i, n - i, special, &tail_special);
    if (*first_special < 0 && tail_special >= 0) *first_special = i + tail_special;
    m = t > m ? t : m;
  }
  return static_cast<uint16_t>(m);
}

QT_AVX512 void quantize_bf16_row(const uint8_t* x, int64_t n, float scale, const uint8_t* table, uint8_t* codes) {
  const __m512 vs = _mm512_set1_ps(scale);
  const __m512i round_bias = _mm512_set1_epi32(0x7FFF), one = _mm512_set1_epi32(1);
  const __m512i sign = _mm512_set1_epi32(static_cast<int>(0x80000000u)), qnan = _mm512_set1_epi32(0x7FC0);
  alignas(64) uint32_t idx[16];
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 2 * i));
    const __m512 f = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    const __m512 q = _mm512_div_ps(f, vs);
    const __m512i qi = _mm512_castps_si512(q);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(qi, 16), one);
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(qi, round_bias), lsb), 16);
    const __mmask16 nan = _mm512_cmp_ps_mask(q, q, _CMP_UNORD_Q);
    const __m512i nanbits = _mm512_or_si512(_mm512_srli_epi32(_mm512_and_si512(qi, sign), 16), qnan);
    r = _mm512_mask_blend_epi32(nan, r, nanbits);
    _mm512_store_si512(reinterpret_cast<__m512i*>(idx), r);
    for (int k = 0; k < 16; ++k) codes[i + k] = table[idx[k]];
  }
  if (i < n) quantize_bf16_row_ref(x + 2 * i, n - i, scale, table, codes + i);
}

}  // namespace qt::quant_rows_avx512
