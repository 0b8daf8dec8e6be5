// AVX2 bodies of libquant/quant_rows.h, 8 elements per step: the AVX-512 bodies
// (quant_rows_avx512.cpp) on 8 lanes, step for step. The tail (< 8 elements) runs the scalar twin.
#include <immintrin.h>

#include <cstring>

#include "libquant/kernels/quant_rows_isa.h"
#include "libquant/quant_rows.h"
#include "libquant/quantize.h"

#define QT_AVX2 __attribute__((target("avx2")))

namespace qt::quant_rows_avx2 {

QT_AVX2 uint16_t absmax_bits16(const uint8_t* x, int64_t n, uint16_t special, int64_t* first_special) {
  *first_special = -1;
  const __m256i lowmask = _mm256_set1_epi32(0x7FFF), vspecial = _mm256_set1_epi32(special);
  __m256i vmax = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x + 2 * i));
    const __m256i u = _mm256_and_si256(_mm256_cvtepu16_epi32(h), lowmask);
    if (*first_special < 0) {
      // u >= special  <=>  max(u, special) == u (unsigned).
      const __m256i ge = _mm256_cmpeq_epi32(_mm256_max_epu32(u, vspecial), u);
      const int m = _mm256_movemask_ps(_mm256_castsi256_ps(ge));
      if (m) *first_special = i + __builtin_ctz(static_cast<unsigned>(m));
    }
    vmax = _mm256_max_epu32(vmax, u);
  }
  alignas(32) uint32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), vmax);
  uint32_t m = 0;
  for (uint32_t v : lanes) m = v > m ? v : m;
  if (i < n) {
    int64_t tail_special = -1;
    const uint16_t t = absmax_bits16_ref(x + 2 * i, n - i, special, &tail_special);
    if (*first_special < 0 && tail_special >= 0) *first_special = i + tail_special;
    m = t > m ? t : m;
  }
  return static_cast<uint16_t>(m);
}

QT_AVX2 void quantize_bf16_row(const uint8_t* x, int64_t n, float scale, const uint8_t* table, uint8_t* codes) {
  const __m256 vs = _mm256_set1_ps(scale);
  const __m256i round_bias = _mm256_set1_epi32(0x7FFF), one = _mm256_set1_epi32(1);
  const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u)), qnan = _mm256_set1_epi32(0x7FC0);
  alignas(32) uint32_t idx[8];
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x + 2 * i));
    const __m256 f = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    const __m256 q = _mm256_div_ps(f, vs);
    const __m256i qi = _mm256_castps_si256(q);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(qi, 16), one);
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(qi, round_bias), lsb), 16);
    const __m256 nan = _mm256_cmp_ps(q, q, _CMP_UNORD_Q);
    const __m256i nanbits = _mm256_or_si256(_mm256_srli_epi32(_mm256_and_si256(qi, sign), 16), qnan);
    r = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(r), _mm256_castsi256_ps(nanbits), nan));
    _mm256_store_si256(reinterpret_cast<__m256i*>(idx), r);
    for (int k = 0; k < 8; ++k) codes[i + k] = table[idx[k]];
  }
  if (i < n) quantize_bf16_row_ref(x + 2 * i, n - i, scale, table, codes + i);
}

namespace {

// The AVX-512 helpers of quant_rows_avx512.cpp on 8 lanes (AVX2 has no unsigned 32-bit compare:
// the magnitudes compared here are below 2^31, so the signed compares give the same answers).
QT_AVX2 inline __m256i bf16_rne_bits(__m256 q) {
  const __m256i qi = _mm256_castps_si256(q);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(qi, 16), _mm256_set1_epi32(1));
  const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(qi, _mm256_set1_epi32(0x7FFF)), lsb), 16);
  const __m256 nan = _mm256_cmp_ps(q, q, _CMP_UNORD_Q);
  const __m256i nanbits = _mm256_or_si256(
      _mm256_srli_epi32(_mm256_and_si256(qi, _mm256_set1_epi32(static_cast<int>(0x80000000u))), 16),
      _mm256_set1_epi32(0x7FC0));
  return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(r), _mm256_castsi256_ps(nanbits), nan));
}

QT_AVX2 inline __m256i blend32(__m256i a, __m256i b, __m256i mask) {
  return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b), _mm256_castsi256_ps(mask)));
}

QT_AVX2 inline __m256i e4m3_of_clamped(__m256i tb) {
  const __m256i sign = _mm256_and_si256(_mm256_srli_epi32(tb, 24), _mm256_set1_epi32(0x80));
  const __m256i a0 = _mm256_and_si256(tb, _mm256_set1_epi32(0x7FFFFFFF));
  const __m256i nan = _mm256_cmpgt_epi32(a0, _mm256_set1_epi32(0x7F800000));
  const __m256i a = _mm256_min_epi32(a0, _mm256_set1_epi32(0x43E00000));
  const __m256i sub = _mm256_cmpgt_epi32(_mm256_set1_epi32(0x3C800000), a);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(a, 20), _mm256_set1_epi32(1));
  __m256i c = _mm256_srli_epi32(
      _mm256_add_epi32(_mm256_sub_epi32(a, _mm256_set1_epi32(120 << 23)), _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFFF))), 20);
  const __m256 magic = _mm256_add_ps(_mm256_castsi256_ps(a), _mm256_set1_ps(16384.0f));
  const __m256i cs = _mm256_sub_epi32(_mm256_castps_si256(magic), _mm256_set1_epi32(141 << 23));
  c = blend32(c, cs, sub);
  c = blend32(c, _mm256_set1_epi32(0x7F), nan);
  return _mm256_or_si256(c, sign);
}

QT_AVX2 inline __m256i int_of_clamped(__m256i tb, __m256 lo, __m256 hi) {
  const __m256 t = _mm256_castsi256_ps(tb);
  const __m256 nan = _mm256_cmp_ps(t, t, _CMP_UNORD_Q);
  const __m256 c = _mm256_min_ps(_mm256_max_ps(t, lo), hi);
  const __m256i v = _mm256_cvttps_epi32(_mm256_round_ps(c, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  return _mm256_andnot_si256(_mm256_castps_si256(nan), v);
}

}  // namespace

QT_AVX2 void quantize_bf16_row_cast(const uint8_t* x, int64_t n, float scale, QuantType t, uint8_t* codes) {
  const __m256 vs = _mm256_set1_ps(scale);
  const bool fp8 = t == QuantType::Float8E4M3;
  const __m256 lo = _mm256_set1_ps(t == QuantType::Int4 ? -8.0f : -128.0f);
  const __m256 hi = _mm256_set1_ps(t == QuantType::Int4 ? 7.0f : 127.0f);
  // Byte 0 of each 32-bit lane to bytes 0-3 of its 128-bit half; then dwords 0 and 4 together.
  const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  const __m256i join = _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x + 2 * i));
    const __m256 f = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    const __m256i tb = _mm256_slli_epi32(bf16_rne_bits(_mm256_div_ps(f, vs)), 16);
    const __m256i c = fp8 ? e4m3_of_clamped(tb) : int_of_clamped(tb, lo, hi);
    const __m256i b = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(c, pick), join);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(codes + i), _mm256_castsi256_si128(b));
  }
  if (i < n) quantize_bf16_row_ref(x + 2 * i, n - i, scale, code_table(DType::BF16, t), codes + i);
}

QT_AVX2 void e2m1_codes_bf16_row(const uint8_t* x, int64_t n, float divisor, uint8_t* codes) {
  // The AVX-512 body's threshold count on 8 lanes: a compare gives all-ones (-1) in the lanes
  // where |q| is NOT below the threshold (unordered-true, so a NaN counts all seven), and
  // subtracting the mask adds one there.
  const __m256 vd = _mm256_set1_ps(divisor);
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256i eight = _mm256_set1_epi32(8);
  const __m256 t025 = _mm256_set1_ps(0.25f), t075 = _mm256_set1_ps(0.75f), t125 = _mm256_set1_ps(1.25f);
  const __m256 t175 = _mm256_set1_ps(1.75f), t250 = _mm256_set1_ps(2.5f), t350 = _mm256_set1_ps(3.5f);
  const __m256 t500 = _mm256_set1_ps(5.0f);
  const __m256 zero = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x + 2 * i));
    const __m256 f = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    const __m256 q = _mm256_div_ps(f, vd);
    const __m256 a = _mm256_and_ps(q, absmask);
    __m256i idx = _mm256_setzero_si256();
    idx = _mm256_sub_epi32(idx, _mm256_castps_si256(_mm256_cmp_ps(a, t025, _CMP_NLE_UQ)));
    idx = _mm256_sub_epi32(idx, _mm256_castps_si256(_mm256_cmp_ps(a, t075, _CMP_NLT_UQ)));
    idx = _mm256_sub_epi32(idx, _mm256_castps_si256(_mm256_cmp_ps(a, t125, _CMP_NLE_UQ)));
    idx = _mm256_sub_epi32(idx, _mm256_castps_si256(_mm256_cmp_ps(a, t175, _CMP_NLT_UQ)));
    idx = _mm256_sub_epi32(idx, _mm256_castps_si256(_mm256_cmp_ps(a, t250, _CMP_NLE_UQ)));
    idx = _mm256_sub_epi32(idx, _mm256_castps_si256(_mm256_cmp_ps(a, t350, _CMP_NLT_UQ)));
    idx = _mm256_sub_epi32(idx, _mm256_castps_si256(_mm256_cmp_ps(a, t500, _CMP_NLE_UQ)));
    idx = _mm256_or_si256(idx, _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(q, zero, _CMP_LT_OQ)), eight));
    // 8 lanes of 0..15 to 8 bytes: 32 -> 16 -> 8 bits (no saturation can act).
    const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(idx), _mm256_extracti128_si256(idx, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(codes + i), _mm_packus_epi16(w, w));
  }
  if (i < n) e2m1_codes_bf16_row_ref(x + 2 * i, n - i, divisor, codes + i);
}

}  // namespace qt::quant_rows_avx2
