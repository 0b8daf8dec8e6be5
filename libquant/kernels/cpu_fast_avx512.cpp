// AVX-512 F micro-kernels of cpu_fast's f32 path (cpu_fast_avx512.h): avx2::f32_tile and
// avx2::gemv with one zmm per 16-column panel row. FP8 codes decode exactly as in the AVX2 body
// (the F16C trick, KERNELS.md §6.2: 16-bit pattern, then vcvtph2ps on 16 lanes at once).
#include "libquant/kernels/cpu_fast_avx512.h"

#include <immintrin.h>

#include "libquant/kernels/cpu_fast_avx2.h"

#define QT_AVX512 __attribute__((target("avx512f,avx2,f16c")))

namespace qt::kernels::avx512 {
namespace {

using avx2::kMR;

// Named accumulators (an array of __m512 would live in memory). Rows >= R are compiled out.
#define QT_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)

template <int R>
QT_AVX512 void f32_tile_r(const float* A, const float* B, int64_t kn, float* C, bool acc) {
#define QT_DECL(r) __m512 c##r = _mm512_setzero_ps();
  QT_ROWS(QT_DECL)
#undef QT_DECL
  if (acc) {
#define QT_LOAD(r) if constexpr (r < R) c##r = _mm512_loadu_ps(C + 16 * r);
    QT_ROWS(QT_LOAD)
#undef QT_LOAD
  }
  for (int64_t k = 0; k < kn; ++k) {
    const __m512 b = _mm512_loadu_ps(B + 16 * k);
#define QT_FMA(r) if constexpr (r < R) c##r = _mm512_fmadd_ps(_mm512_set1_ps(A[kMR * k + r]), b, c##r);
    QT_ROWS(QT_FMA)
#undef QT_FMA
  }
#define QT_STORE(r) if constexpr (r < R) _mm512_storeu_ps(C + 16 * r, c##r);
  QT_ROWS(QT_STORE)
#undef QT_STORE
}

// 16 codes -> 16 f32 (FP8: value * 2^-8, the 2^8 folded into the scales; int8: exact).
template <bool FP8>
QT_AVX512 inline __m512 decode16(const uint8_t* src) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
  if constexpr (FP8) {
    const __m256i w = _mm256_cvtepu8_epi16(raw);
    const __m256i h = _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(w, _mm256_set1_epi16(0x80)), 8),
                                      _mm256_slli_epi16(_mm256_and_si256(w, _mm256_set1_epi16(0x7F)), 7));
    return _mm512_cvtph_ps(h);
  } else {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(raw));
  }
}

template <int NP, bool FP8>
QT_AVX512 void gemv_r(const float* A, const uint8_t* B, int64_t pstride, int64_t kn, float* C, bool acc) {
#define QT_PANELS(X) X(0) X(1) X(2) X(3)
#define QT_DECL(p) __m512 c##p = _mm512_setzero_ps();
  QT_PANELS(QT_DECL)
#undef QT_DECL
  if (acc) {
#define QT_LOAD(p) if constexpr (p < NP) c##p = _mm512_loadu_ps(C + 16 * p);
    QT_PANELS(QT_LOAD)
#undef QT_LOAD
  }
  for (int64_t k = 0; k < kn; ++k) {
    const __m512 a = _mm512_set1_ps(A[kMR * k]);
#define QT_STEP(p) if constexpr (p < NP) c##p = _mm512_fmadd_ps(a, decode16<FP8>(B + p * pstride + 16 * k), c##p);
    QT_PANELS(QT_STEP)
#undef QT_STEP
  }
#define QT_STORE(p) if constexpr (p < NP) _mm512_storeu_ps(C + 16 * p, c##p);
  QT_PANELS(QT_STORE)
#undef QT_STORE
#undef QT_PANELS
}

}  // namespace

QT_AVX512 void fast_f32_tile(int rows, const float* A, const float* B, int64_t kn, float* C, bool acc) {
  switch (rows) {
    case 1: f32_tile_r<1>(A, B, kn, C, acc); break;
    case 2: f32_tile_r<2>(A, B, kn, C, acc); break;
    case 3: f32_tile_r<3>(A, B, kn, C, acc); break;
    case 4: f32_tile_r<4>(A, B, kn, C, acc); break;
    case 5: f32_tile_r<5>(A, B, kn, C, acc); break;
    default: f32_tile_r<6>(A, B, kn, C, acc); break;
  }
}

QT_AVX512 void fast_gemv(int npanels, bool fp8, const float* A, const uint8_t* B, int64_t pstride, int64_t kn,
                         float* C, bool acc) {
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

}  // namespace qt::kernels::avx512
