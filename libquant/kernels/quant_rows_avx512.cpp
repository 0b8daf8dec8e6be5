// AVX-512 F bodies of libquant/quant_rows.h, 16 elements per step (16-bit patterns widened to
// 32-bit lanes, so only AVX-512 F is needed). Per element the same operations as the scalar twin
// in quant_rows.cpp: integer max of the sign-cleared bits; widen bf16 -> f32 (shift), one f32
// division, bf16 nearest-even by the integer rounding of bf16_from_f32 (NaN -> signed 0x7FC0),
// table lookup. The tail (< 16 elements) runs the scalar twin.
#include <immintrin.h>

#include <cstring>

#include "libquant/kernels/quant_rows_isa.h"
#include "libquant/quant_rows.h"
#include "libquant/quantize.h"

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

namespace {

// bf16_from_f32 of 16 f32 quotients, in the low 16 bits of each lane (NaN -> signed 0x7FC0).
QT_AVX512 inline __m512i bf16_rne_bits(__m512 q) {
  const __m512i qi = _mm512_castps_si512(q);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(qi, 16), _mm512_set1_epi32(1));
  const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(qi, _mm512_set1_epi32(0x7FFF)), lsb), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(q, q, _CMP_UNORD_Q);
  const __m512i nanbits = _mm512_or_si512(
      _mm512_srli_epi32(_mm512_and_si512(qi, _mm512_set1_epi32(static_cast<int>(0x80000000u))), 16),
      _mm512_set1_epi32(0x7FC0));
  return _mm512_mask_blend_epi32(nan, r, nanbits);
}

// E4M3 code (low byte of each lane) of the bf16 values t (as f32 bits), clamped to +-448 first:
// e4m3fn_from_f32's three branches on the clamped magnitude, NaN -> 0x7F, sign or-ed in.
QT_AVX512 inline __m512i e4m3_of_clamped(__m512i tb) {
  const __m512i sign = _mm512_and_si512(_mm512_srli_epi32(tb, 24), _mm512_set1_epi32(0x80));
  const __m512i a0 = _mm512_and_si512(tb, _mm512_set1_epi32(0x7FFFFFFF));
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(a0, _mm512_set1_epi32(0x7F800000));
  const __m512i a = _mm512_min_epu32(a0, _mm512_set1_epi32(0x43E00000));  // |t| <= 448 (Inf too)
  const __mmask16 sub = _mm512_cmplt_epu32_mask(a, _mm512_set1_epi32(0x3C800000));  // < 2^-6
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(a, 20), _mm512_set1_epi32(1));
  __m512i c = _mm512_srli_epi32(
      _mm512_add_epi32(_mm512_sub_epi32(a, _mm512_set1_epi32(120 << 23)), _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFFF))), 20);
  const __m512 magic = _mm512_add_ps(_mm512_castsi512_ps(a), _mm512_set1_ps(16384.0f));
  const __m512i cs = _mm512_sub_epi32(_mm512_castps_si512(magic), _mm512_set1_epi32(141 << 23));
  c = _mm512_mask_blend_epi32(sub, c, cs);
  c = _mm512_mask_blend_epi32(nan, c, _mm512_set1_epi32(0x7F));
  return _mm512_or_si512(c, sign);
}

// Integer code (low byte of each lane) of the bf16 values t: clamp to [lo, hi], round half to
// even, NaN -> 0.
QT_AVX512 inline __m512i int_of_clamped(__m512i tb, __m512 lo, __m512 hi) {
  const __m512 t = _mm512_castsi512_ps(tb);
  const __mmask16 nan = _mm512_cmp_ps_mask(t, t, _CMP_UNORD_Q);
  const __m512 c = _mm512_min_ps(_mm512_max_ps(t, lo), hi);
  const __m512i v = _mm512_cvt_roundps_epi32(c, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm512_maskz_mov_epi32(static_cast<__mmask16>(~nan), v);
}

}  // namespace

QT_AVX512 void quantize_bf16_row_cast(const uint8_t* x, int64_t n, float scale, QuantType t, uint8_t* codes) {
  const __m512 vs = _mm512_set1_ps(scale);
  const bool fp8 = t == QuantType::Float8E4M3;
  const __m512 lo = _mm512_set1_ps(t == QuantType::Int4 ? -8.0f : -128.0f);
  const __m512 hi = _mm512_set1_ps(t == QuantType::Int4 ? 7.0f : 127.0f);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 2 * i));
    const __m512 f = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    const __m512i tb = _mm512_slli_epi32(bf16_rne_bits(_mm512_div_ps(f, vs)), 16);
    const __m512i c = fp8 ? e4m3_of_clamped(tb) : int_of_clamped(tb, lo, hi);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i), _mm512_cvtepi32_epi8(c));
  }
  if (i < n) quantize_bf16_row_ref(x + 2 * i, n - i, scale, code_table(DType::BF16, t), codes + i);
}

QT_AVX512 void e2m1_codes_bf16_row(const uint8_t* x, int64_t n, float divisor, uint8_t* codes) {
  // e2m1_from_f32's chain: magnitude index = number of thresholds that |q| is NOT below (<= for
  // the ties that round down to an even code, < for those that round up). The "not" predicates
  // are unordered-true, so a NaN counts all seven: index 7, as the scalar chain falls through.
  const __m512 vd = _mm512_set1_ps(divisor);
  const __m512i absmask = _mm512_set1_epi32(0x7FFFFFFF), one = _mm512_set1_epi32(1);
  const __m512i eight = _mm512_set1_epi32(8);
  const __m512 t025 = _mm512_set1_ps(0.25f), t075 = _mm512_set1_ps(0.75f), t125 = _mm512_set1_ps(1.25f);
  const __m512 t175 = _mm512_set1_ps(1.75f), t250 = _mm512_set1_ps(2.5f), t350 = _mm512_set1_ps(3.5f);
  const __m512 t500 = _mm512_set1_ps(5.0f);
  const __m512 zero = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 2 * i));
    const __m512 f = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    const __m512 q = _mm512_div_ps(f, vd);
    const __m512 a = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(q), absmask));
    __m512i idx = _mm512_setzero_si512();
    idx = _mm512_mask_add_epi32(idx, _mm512_cmp_ps_mask(a, t025, _CMP_NLE_UQ), idx, one);
    idx = _mm512_mask_add_epi32(idx, _mm512_cmp_ps_mask(a, t075, _CMP_NLT_UQ), idx, one);
    idx = _mm512_mask_add_epi32(idx, _mm512_cmp_ps_mask(a, t125, _CMP_NLE_UQ), idx, one);
    idx = _mm512_mask_add_epi32(idx, _mm512_cmp_ps_mask(a, t175, _CMP_NLT_UQ), idx, one);
    idx = _mm512_mask_add_epi32(idx, _mm512_cmp_ps_mask(a, t250, _CMP_NLE_UQ), idx, one);
    idx = _mm512_mask_add_epi32(idx, _mm512_cmp_ps_mask(a, t350, _CMP_NLT_UQ), idx, one);
    idx = _mm512_mask_add_epi32(idx, _mm512_cmp_ps_mask(a, t500, _CMP_NLE_UQ), idx, one);
    idx = _mm512_mask_or_epi32(idx, _mm512_cmp_ps_mask(q, zero, _CMP_LT_OQ), idx, eight);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i), _mm512_cvtepi32_epi8(idx));
  }
  if (i < n) e2m1_codes_bf16_row_ref(x + 2 * i, n - i, divisor, codes + i);
}

}  // namespace qt::quant_rows_avx512
