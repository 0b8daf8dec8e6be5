// AVX2 micro-kernels of cpu_fast. Every function that uses AVX2 carries the target attribute
// itself (no -mavx2 for the file, no #pragma GCC target): inline library code instantiated here
// stays baseline x86-64, so nothing compiled for AVX2 can leak into the rest of the binary via
// COMDAT folding. Only raw pointers cross the boundary.
#include "libquant/kernels/cpu_fast_avx2.h"

#include <cpuid.h>
#include <immintrin.h>

#define QT_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace qt::kernels::avx2 {

bool cpu_ok() {
  __builtin_cpu_init();
  // libgcc's checks include the OS's XSAVE support for the AVX register state. F16C is read from
  // CPUID leaf 1 (ECX bit 29) directly: clang before 16 rejects __builtin_cpu_supports("f16c").
  unsigned a = 0, b = 0, c = 0, d = 0;
  const bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
}

QT_AVX2 void decode_fp8_panel(const uint8_t* src, int64_t kn, float* dst) {
  const __m256i sign = _mm256_set1_epi16(0x80), mag = _mm256_set1_epi16(0x7F);
  for (int64_t k = 0; k < kn; ++k) {
    const __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 16 * k)));
    // f16 bits: sign to bit 15, exponent+mantissa (7 bits) to bits 13..7 -- e4m3 * 2^-8.
    const __m256i h = _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(b, sign), 8),
                                      _mm256_slli_epi16(_mm256_and_si256(b, mag), 7));
    _mm256_storeu_ps(dst + 16 * k, _mm256_cvtph_ps(_mm256_castsi256_si128(h)));
    _mm256_storeu_ps(dst + 16 * k + 8, _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)));
  }
}

QT_AVX2 void decode_int_panel(const uint8_t* src, int64_t kn, float* dst) {
  for (int64_t k = 0; k < kn; ++k) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 16 * k));
    _mm256_storeu_ps(dst + 16 * k, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)));
    _mm256_storeu_ps(dst + 16 * k + 8,
                     _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8))));
  }
}

// The accumulators are named variables, not arrays: GCC 12 keeps an array of __m256 in memory and
// stores it back on every k step (measured: 3x slower). Rows >= R are compiled out.
#define QT_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)

// A's element (k, r) is at ar + k * step with ar = A + r (packed [k][6], step 6) or
// A + r * lda (row-major rows, step 1).
template <int R, bool ROWS>
QT_AVX2 static void f32_tile_r(const float* A, int64_t lda, const float* B, int64_t kn, float* C, bool acc) {
  constexpr int64_t step = ROWS ? 1 : kMR;
#define QT_DECL(r) __m256 c##r##0 = _mm256_setzero_ps(), c##r##1 = _mm256_setzero_ps(); \
  const float* a##r = ROWS ? A + (r < R ? r : 0) * lda : A + r; (void)a##r;
  QT_ROWS(QT_DECL)
#undef QT_DECL
  if (acc) {
#define QT_LOAD(r) if constexpr (r < R) { c##r##0 = _mm256_loadu_ps(C + 16 * r); c##r##1 = _mm256_loadu_ps(C + 16 * r + 8); }
    QT_ROWS(QT_LOAD)
#undef QT_LOAD
  }
  for (int64_t k = 0; k < kn; ++k) {
    const __m256 b0 = _mm256_loadu_ps(B + 16 * k), b1 = _mm256_loadu_ps(B + 16 * k + 8);
#define QT_FMA(r)                                              \
  if constexpr (r < R) {                                       \
    const __m256 a = _mm256_broadcast_ss(a##r + step * k);     \
    c##r##0 = _mm256_fmadd_ps(a, b0, c##r##0);                 \
    c##r##1 = _mm256_fmadd_ps(a, b1, c##r##1);                 \
  }
    QT_ROWS(QT_FMA)
#undef QT_FMA
  }
#define QT_STORE(r) if constexpr (r < R) { _mm256_storeu_ps(C + 16 * r, c##r##0); _mm256_storeu_ps(C + 16 * r + 8, c##r##1); }
  QT_ROWS(QT_STORE)
#undef QT_STORE
}

// One row of X against NP panels at once, decoding the codes in registers (no f32 panel in
// memory). 8*NP/2 independent FMA chains hide the FMA latency that limits a one-row tile to two
// chains; each output is still one FMA chain in increasing k, so the result is bit-identical to
// decode_*_panel + f32_tile.
template <int NP, bool FP8>
QT_AVX2 static void gemv_r(const float* A, const uint8_t* B, int64_t pstride, int64_t kn, float* C,
                           bool acc) {
  const __m256i sign = _mm256_set1_epi16(0x80), mag = _mm256_set1_epi16(0x7F);
#define QT_PANELS(X) X(0) X(1) X(2) X(3)
#define QT_DECL(p) __m256 c##p##0 = _mm256_setzero_ps(), c##p##1 = _mm256_setzero_ps();
  QT_PANELS(QT_DECL)
#undef QT_DECL
  if (acc) {
#define QT_LOAD(p) if constexpr (p < NP) { c##p##0 = _mm256_loadu_ps(C + 16 * p); c##p##1 = _mm256_loadu_ps(C + 16 * p + 8); }
    QT_PANELS(QT_LOAD)
#undef QT_LOAD
  }
  for (int64_t k = 0; k < kn; ++k) {
    const __m256 a = _mm256_broadcast_ss(A + kMR * k);
#define QT_STEP(p)                                                                              \
  if constexpr (p < NP) {                                                                       \
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(B + p * pstride + 16 * k)); \
    __m256 b0, b1;                                                                              \
    if constexpr (FP8) {                                                                        \
      const __m256i w = _mm256_cvtepu8_epi16(raw);                                              \
      const __m256i h = _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(w, sign), 8),        \
                                        _mm256_slli_epi16(_mm256_and_si256(w, mag), 7));        \
      b0 = _mm256_cvtph_ps(_mm256_castsi256_si128(h));                                          \
      b1 = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));                                     \
    } else {                                                                                    \
      b0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(raw));                                       \
      b1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(raw, 8)));                    \
    }                                                                                           \
    c##p##0 = _mm256_fmadd_ps(a, b0, c##p##0);                                                  \
    c##p##1 = _mm256_fmadd_ps(a, b1, c##p##1);                                                  \
  }
    QT_PANELS(QT_STEP)
#undef QT_STEP
  }
#define QT_STORE(p) if constexpr (p < NP) { _mm256_storeu_ps(C + 16 * p, c##p##0); _mm256_storeu_ps(C + 16 * p + 8, c##p##1); }
  QT_PANELS(QT_STORE)
#undef QT_STORE
#undef QT_PANELS
}

QT_AVX2 void gemv(int npanels, bool fp8, const float* A, const uint8_t* B, int64_t pstride,
                  int64_t kn, float* C, bool acc) {
  switch (npanels * 2 + (fp8 ? 1 : 0)) {
    case 2: gemv_r<1, false>(A, B, pstride, kn, C, acc); break;
    case 3: gemv_r<1, true>(A, B, pstride, kn, C, acc); break;
    case 4: gemv_r<2, false>(A, B, pstride, kn, C, acc); break;
    case 5: gemv_r<2, true>(A, B, pstride, kn, C, acc); break;
    case 6: gemv_r<3, false>(A, B, pstride, kn, C, acc); break;
    case 7: gemv_r<3, true>(A, B, pstride, kn, C, acc); break;
    case 8: gemv_r<4, false>(A, B, pstride, kn, C, acc); break;
    default: gemv_r<4, true>(A, B, pstride, kn, C, acc); break;
  }
}

QT_AVX2 void f32_tile(int rows, const float* A, const float* B, int64_t kn, float* C, bool acc) {
  switch (rows) {
    case 1: f32_tile_r<1, false>(A, 0, B, kn, C, acc); break;
    case 2: f32_tile_r<2, false>(A, 0, B, kn, C, acc); break;
    case 3: f32_tile_r<3, false>(A, 0, B, kn, C, acc); break;
    case 4: f32_tile_r<4, false>(A, 0, B, kn, C, acc); break;
    case 5: f32_tile_r<5, false>(A, 0, B, kn, C, acc); break;
    default: f32_tile_r<6, false>(A, 0, B, kn, C, acc); break;
  }
}

QT_AVX2 void f32_tile_rows(int rows, const float* A, int64_t lda, const float* B, int64_t kn, float* C,
                           bool acc) {
  switch (rows) {
    case 1: f32_tile_r<1, true>(A, lda, B, kn, C, acc); break;
    case 2: f32_tile_r<2, true>(A, lda, B, kn, C, acc); break;
    case 3: f32_tile_r<3, true>(A, lda, B, kn, C, acc); break;
    case 4: f32_tile_r<4, true>(A, lda, B, kn, C, acc); break;
    case 5: f32_tile_r<5, true>(A, lda, B, kn, C, acc); break;
    default: f32_tile_r<6, true>(A, lda, B, kn, C, acc); break;
  }
}

// x with every lane whose exponent bits are zero (zero or subnormal) replaced by its signed zero.
QT_AVX2 static inline __m256 ftz8(__m256 x) {
  const __m256i u = _mm256_castps_si256(x);
  const __m256i tiny = _mm256_cmpeq_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7F800000)), _mm256_setzero_si256());
  return _mm256_castsi256_ps(_mm256_andnot_si256(_mm256_and_si256(tiny, _mm256_set1_epi32(0x7FFFFFFF)), u));
}

// One bf16 value of a pair as f32, flushed when subnormal (scalar; broadcast by the caller).
static inline float bf16_half(uint32_t bits) {
  if ((bits & 0x7F800000u) == 0) bits &= 0x80000000u;
  float f;
  __builtin_memcpy(&f, &bits, sizeof f);
  return f;
}

template <int R>
QT_AVX2 static void bf16_tile_r(const uint16_t* A, int64_t lda, const uint16_t* B, int64_t kpn, float* C, bool acc) {
#define QT_DECL(r)                                                                          \
  __m256 c##r##0 = _mm256_setzero_ps(), c##r##1 = _mm256_setzero_ps();                      \
  if (r < R && acc) c##r##0 = _mm256_loadu_ps(C + 16 * r), c##r##1 = _mm256_loadu_ps(C + 16 * r + 8);
  QT_ROWS(QT_DECL)
#undef QT_DECL
  const __m256i hi = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
  for (int64_t p = 0; p < kpn; ++p) {
    // Columns 0-7 and 8-15: one 32-bit word per column holds its pair (b[2p] low, b[2p+1] high).
    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(B + 32 * p));
    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(B + 32 * p + 16));
    const __m256 b10 = ftz8(_mm256_castsi256_ps(_mm256_and_si256(w0, hi)));
    const __m256 b11 = ftz8(_mm256_castsi256_ps(_mm256_and_si256(w1, hi)));
    const __m256 b00 = ftz8(_mm256_castsi256_ps(_mm256_slli_epi32(w0, 16)));
    const __m256 b01 = ftz8(_mm256_castsi256_ps(_mm256_slli_epi32(w1, 16)));
#define QT_STEP(r)                                                                            \
  if constexpr (r < R) {                                                                      \
    uint32_t pair;                                                                            \
    __builtin_memcpy(&pair, A + r * lda + 2 * p, sizeof pair);                                \
    const __m256 a1 = _mm256_set1_ps(bf16_half(pair & 0xFFFF0000u));                         \
    const __m256 a0 = _mm256_set1_ps(bf16_half(pair << 16));                                  \
    c##r##0 = ftz8(_mm256_fmadd_ps(a0, b00, ftz8(_mm256_fmadd_ps(a1, b10, c##r##0))));        \
    c##r##1 = ftz8(_mm256_fmadd_ps(a0, b01, ftz8(_mm256_fmadd_ps(a1, b11, c##r##1))));        \
  }
    QT_ROWS(QT_STEP)
#undef QT_STEP
  }
#define QT_STORE(r) if constexpr (r < R) { _mm256_storeu_ps(C + 16 * r, c##r##0); _mm256_storeu_ps(C + 16 * r + 8, c##r##1); }
  QT_ROWS(QT_STORE)
#undef QT_STORE
}

QT_AVX2 void bf16_tile_rows(int rows, const uint16_t* A, int64_t lda, const uint16_t* B, int64_t kpn, float* C,
                            bool acc) {
  switch (rows) {
    case 1: bf16_tile_r<1>(A, lda, B, kpn, C, acc); break;
    case 2: bf16_tile_r<2>(A, lda, B, kpn, C, acc); break;
    case 3: bf16_tile_r<3>(A, lda, B, kpn, C, acc); break;
    case 4: bf16_tile_r<4>(A, lda, B, kpn, C, acc); break;
    case 5: bf16_tile_r<5>(A, lda, B, kpn, C, acc); break;
    default: bf16_tile_r<6>(A, lda, B, kpn, C, acc); break;
  }
}

template <int R>
QT_AVX2 static void i8_tile_r(const int16_t* A, const int8_t* B, int64_t kpn, int32_t* C) {
#define QT_DECL(r) __m256i c##r##0 = _mm256_setzero_si256(), c##r##1 = _mm256_setzero_si256();
  QT_ROWS(QT_DECL)
#undef QT_DECL
  for (int64_t kp = 0; kp < kpn; ++kp) {
    // 16 bytes = 8 columns x 2 consecutive k, sign-extended to 16 int16.
    const __m256i b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(B + 32 * kp)));
    const __m256i b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(B + 32 * kp + 16)));
    // (a[k], a[k+1]) of row r as one 32-bit lane, broadcast; vpmaddwd then gives
    // a[k]*b[k] + a[k+1]*b[k+1] per column, exact in int32 (|.| <= 2^15).
#define QT_MADD(r)                                                                  \
  if constexpr (r < R) {                                                            \
    int32_t pair;                                                                   \
    __builtin_memcpy(&pair, A + 2 * (kMR * kp + r), sizeof pair);                   \
    const __m256i a = _mm256_set1_epi32(pair);                                      \
    c##r##0 = _mm256_add_epi32(c##r##0, _mm256_madd_epi16(a, b0));                 \
    c##r##1 = _mm256_add_epi32(c##r##1, _mm256_madd_epi16(a, b1));                 \
  }
    QT_ROWS(QT_MADD)
#undef QT_MADD
  }
#define QT_STORE(r)                                                                 \
  if constexpr (r < R) {                                                            \
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(C + 16 * r), c##r##0);           \
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(C + 16 * r + 8), c##r##1);       \
  }
  QT_ROWS(QT_STORE)
#undef QT_STORE
}

QT_AVX2 void i8_tile(int rows, const int16_t* A, const int8_t* B, int64_t kpn, int32_t* C) {
  switch (rows) {
    case 1: i8_tile_r<1>(A, B, kpn, C); break;
    case 2: i8_tile_r<2>(A, B, kpn, C); break;
    case 3: i8_tile_r<3>(A, B, kpn, C); break;
    case 4: i8_tile_r<4>(A, B, kpn, C); break;
    case 5: i8_tile_r<5>(A, B, kpn, C); break;
    default: i8_tile_r<6>(A, B, kpn, C); break;
  }
}

// Four doubles of one accumulator row: Cd += (dot * sx) * sw, two separate multiplies and one
// add (no FMA), the exact operation order of detail::epilogue_term.
QT_AVX2 static inline void epi4(__m256d dot, __m256d sx, const double* sw, double* cd) {
  const __m256d t = _mm256_mul_pd(_mm256_mul_pd(dot, sx), _mm256_loadu_pd(sw));
  _mm256_storeu_pd(cd, _mm256_add_pd(_mm256_loadu_pd(cd), t));
}

QT_AVX2 void epilogue_f32(int rows, const float* acc, const double* sx, int64_t sx_stride,
                          const double* sw, double* Cd) {
  for (int r = 0; r < rows; ++r) {
    const __m256d s = _mm256_set1_pd(sx[r * sx_stride]);
    for (int j = 0; j < 16; j += 4)
      epi4(_mm256_cvtps_pd(_mm_loadu_ps(acc + 16 * r + j)), s, sw + j, Cd + 16 * r + j);
  }
}

QT_AVX2 void epilogue_i32(int rows, const int32_t* acc, const double* sx, int64_t sx_stride,
                          const double* sw, double* Cd) {
  for (int r = 0; r < rows; ++r) {
    const __m256d s = _mm256_set1_pd(sx[r * sx_stride]);
    for (int j = 0; j < 16; j += 4)
      epi4(_mm256_cvtepi32_pd(_mm_loadu_si128(reinterpret_cast<const __m128i*>(acc + 16 * r + j))),
           s, sw + j, Cd + 16 * r + j);
  }
}

}  // namespace qt::kernels::avx2
