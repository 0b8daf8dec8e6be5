// AVX-512 micro-kernels of the forward pass's GEMM (gemm_avx512.h). As in cpu_fast_avx2.cpp,
// every function that uses AVX-512 carries the target attribute itself and only raw pointers
// cross the boundary, so no AVX-512 code can leak into the baseline x86-64 rest of the binary.
#include "libquant/kernels/gemm_avx512.h"

#include <immintrin.h>

#include <cstring>
#include <type_traits>

#define QT_AVX512 __attribute__((target("avx512f")))
#define QT_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

namespace qt::kernels::avx512 {

bool cpu_ok() {
  __builtin_cpu_init();
  // libgcc's check includes the OS's XSAVE support for the opmask and ZMM state.
  return __builtin_cpu_supports("avx512f");
}

bool bf16_ok() {
  __builtin_cpu_init();
  return cpu_ok() && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512bf16");
}

// Accumulators as named variables (an array of __m512 would live in memory, as with AVX2).
#define QT_ROWS12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

// Calls f(std::integral_constant<int, R>{}) for R = rows, 1 <= rows <= Max (larger: Max): the
// row count becomes a template argument of the micro-kernel (its accumulators stay registers).
template <int Max, int R = 1, typename F>
static void with_rows(int rows, F&& f) {
  if constexpr (R == Max) f(std::integral_constant<int, R>{});
  else if (rows == R) f(std::integral_constant<int, R>{});
  else with_rows<Max, R + 1>(rows, f);
}

template <int R>
QT_AVX512 static void f32_tile_r(const float* A, int64_t lda, const float* B, int64_t kn, float* C, bool acc) {
#define QT_DECL(r) __m512 c##r = _mm512_setzero_ps(); const float* a##r = A + (r < R ? r : 0) * lda; (void)a##r;
  QT_ROWS12(QT_DECL)
#undef QT_DECL
  if (acc) {
#define QT_LOAD(r) if constexpr (r < R) c##r = _mm512_loadu_ps(C + 16 * r);
    QT_ROWS12(QT_LOAD)
#undef QT_LOAD
  }
  for (int64_t k = 0; k < kn; ++k) {
    const __m512 b = _mm512_loadu_ps(B + 16 * k);
#define QT_FMA(r) if constexpr (r < R) c##r = _mm512_fmadd_ps(_mm512_set1_ps(a##r[k]), b, c##r);
    QT_ROWS12(QT_FMA)
#undef QT_FMA
  }
#define QT_STORE(r) if constexpr (r < R) _mm512_storeu_ps(C + 16 * r, c##r);
  QT_ROWS12(QT_STORE)
#undef QT_STORE
}

QT_AVX512 void f32_tile_rows(int rows, const float* A, int64_t lda, const float* B, int64_t kn, float* C,
                             bool acc) {
  with_rows<12>(rows, [&](auto r) { f32_tile_r<decltype(r)::value>(A, lda, B, kn, C, acc); });
}

template <int R>
QT_AVX512 static void f32_tile2_r(const float* A, int64_t lda, const float* B0, const float* B1, int64_t kn, float* C0,
                                  float* C1, bool acc) {
#define QT_ROWS6(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define QT_DECL(r) __m512 c##r = _mm512_setzero_ps(), d##r = _mm512_setzero_ps(); \
  const float* a##r = A + (r < R ? r : 0) * lda; (void)a##r;
  QT_ROWS6(QT_DECL)
#undef QT_DECL
  if (acc) {
#define QT_LOAD(r) if constexpr (r < R) { c##r = _mm512_loadu_ps(C0 + 16 * r); d##r = _mm512_loadu_ps(C1 + 16 * r); }
    QT_ROWS6(QT_LOAD)
#undef QT_LOAD
  }
  for (int64_t k = 0; k < kn; ++k) {
    const __m512 b0 = _mm512_loadu_ps(B0 + 16 * k);
    const __m512 b1 = _mm512_loadu_ps(B1 + 16 * k);
#define QT_FMA(r)                                   \
  if constexpr (r < R) {                            \
    const __m512 av = _mm512_set1_ps(a##r[k]);      \
    c##r = _mm512_fmadd_ps(av, b0, c##r);           \
    d##r = _mm512_fmadd_ps(av, b1, d##r);           \
  }
    QT_ROWS6(QT_FMA)
#undef QT_FMA
  }
#define QT_STORE(r) if constexpr (r < R) { _mm512_storeu_ps(C0 + 16 * r, c##r); _mm512_storeu_ps(C1 + 16 * r, d##r); }
  QT_ROWS6(QT_STORE)
#undef QT_STORE
#undef QT_ROWS6
}

QT_AVX512 void f32_tile2_rows(int rows, const float* A, int64_t lda, const float* B0, const float* B1, int64_t kn,
                              float* C0, float* C1, bool acc) {
  with_rows<6>(rows, [&](auto r) { f32_tile2_r<decltype(r)::value>(A, lda, B0, B1, kn, C0, C1, acc); });
}

template <int R>
QT_AVX512BF16 static void bf16_tile_r(const uint16_t* A, int64_t lda, const uint16_t* B, int64_t kpn, float* C,
                                      bool acc) {
#define QT_DECL(r) __m512 c##r = _mm512_setzero_ps(); const uint16_t* a##r = A + (r < R ? r : 0) * lda; (void)a##r;
  QT_ROWS12(QT_DECL)
#undef QT_DECL
  if (acc) {
#define QT_LOAD(r) if constexpr (r < R) c##r = _mm512_loadu_ps(C + 16 * r);
    QT_ROWS12(QT_LOAD)
#undef QT_LOAD
  }
  for (int64_t p = 0; p < kpn; ++p) {
    const __m512bh b = (__m512bh)_mm512_loadu_si512(B + 32 * p);
    // (a[2p], a[2p+1]) of row r as one 32-bit lane, broadcast.
#define QT_DP(r)                                                                           \
  if constexpr (r < R) {                                                                   \
    int32_t pair;                                                                          \
    std::memcpy(&pair, a##r + 2 * p, sizeof pair);                                         \
    c##r = _mm512_dpbf16_ps(c##r, (__m512bh)_mm512_set1_epi32(pair), b);                   \
  }
    QT_ROWS12(QT_DP)
#undef QT_DP
  }
#define QT_STORE(r) if constexpr (r < R) _mm512_storeu_ps(C + 16 * r, c##r);
  QT_ROWS12(QT_STORE)
#undef QT_STORE
}

QT_AVX512BF16 void bf16_tile_rows(int rows, const uint16_t* A, int64_t lda, const uint16_t* B, int64_t kpn,
                                  float* C, bool acc) {
  with_rows<12>(rows, [&](auto r) { bf16_tile_r<decltype(r)::value>(A, lda, B, kpn, C, acc); });
}

template <int R>
QT_AVX512BF16 static void bf16_tile2_r(const uint16_t* A, int64_t lda, const uint16_t* B0, const uint16_t* B1,
                                       int64_t kpn, float* C0, float* C1, bool acc) {
#define QT_ROWS6(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define QT_DECL(r) __m512 c##r = _mm512_setzero_ps(), d##r = _mm512_setzero_ps(); \
  const uint16_t* a##r = A + (r < R ? r : 0) * lda; (void)a##r;
  QT_ROWS6(QT_DECL)
#undef QT_DECL
  if (acc) {
#define QT_LOAD(r) if constexpr (r < R) { c##r = _mm512_loadu_ps(C0 + 16 * r); d##r = _mm512_loadu_ps(C1 + 16 * r); }
    QT_ROWS6(QT_LOAD)
#undef QT_LOAD
  }
  for (int64_t p = 0; p < kpn; ++p) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(B0 + 32 * p);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(B1 + 32 * p);
#define QT_DP(r)                                                  \
  if constexpr (r < R) {                                          \
    int32_t pair;                                                 \
    std::memcpy(&pair, a##r + 2 * p, sizeof pair);                \
    const __m512bh av = (__m512bh)_mm512_set1_epi32(pair);        \
    c##r = _mm512_dpbf16_ps(c##r, av, b0);                        \
    d##r = _mm512_dpbf16_ps(d##r, av, b1);                        \
  }
    QT_ROWS6(QT_DP)
#undef QT_DP
  }
#define QT_STORE(r) if constexpr (r < R) { _mm512_storeu_ps(C0 + 16 * r, c##r); _mm512_storeu_ps(C1 + 16 * r, d##r); }
  QT_ROWS6(QT_STORE)
#undef QT_STORE
#undef QT_ROWS6
}

QT_AVX512BF16 void bf16_tile2_rows(int rows, const uint16_t* A, int64_t lda, const uint16_t* B0, const uint16_t* B1,
                                   int64_t kpn, float* C0, float* C1, bool acc) {
  with_rows<6>(rows, [&](auto r) { bf16_tile2_r<decltype(r)::value>(A, lda, B0, B1, kpn, C0, C1, acc); });
}

QT_AVX512BF16 void f32_to_bf16(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    // cvtne2ps2bf16(a, b): the low 16 results from b, the high 16 from a.
    const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
    _mm512_storeu_si512(y + i, (__m512i)v);
  }
  for (; i < n; i += 16) {
    const int64_t m = n - i < 16 ? n - i : 16;
    const __mmask16 k = static_cast<__mmask16>((1u << m) - 1u);
    const __m256bh v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(k, x + i));
    _mm256_mask_storeu_epi16(y + i, k, (__m256i)v);
  }
}

}  // namespace qt::kernels::avx512
