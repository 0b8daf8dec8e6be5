// AVX-512 building blocks of the forward pass's GEMM (libquant/gemm.h; internal to libquant).
// Defined in gemm_avx512.cpp, where every function carries its own target attribute (no
// -mavx512f for the file), like cpu_fast_avx2.cpp. Call the f32 functions only after cpu_ok(),
// the bf16 ones only after bf16_ok().
//
// f32: the same 16-column panels as the AVX2 kernel ([k][16] floats, gemm.h), one zmm register
// per tile row (16 lanes = one panel row), up to kMR = 12 rows per call. Every output is one f32
// FMA chain, k ascending, exactly as the AVX2 kernel and the scalar std::fma twin compute it, so
// the three give the same bits (KERNELS.md §6.3).
//
// bf16: panels of 16 columns with consecutive k pairs side by side, [k/2][16][2] bf16 (K padded
// to even with zeros), the operand order of vdpbf16ps; activations bf16 row-major (lda in bf16
// elements, even). One vdpbf16ps step per k pair: c += a[2p+1] * b[2p+1], then c += a[2p] * b[2p]
// (products of two bf16 are exact in f32; each addition rounds to nearest even; denormal inputs
// and outputs are flushed to zero) -- bf16_dot_ref in gemm_bf16.cpp is the scalar twin.
#pragma once

#include <cstdint>

namespace qt::kernels::avx512 {

inline constexpr int kMR = 12;  // rows of A per f32/bf16 micro-kernel call
inline constexpr int kNR = 16;  // panel columns (one zmm of f32)

// AVX-512 F (and the OS's ZMM state): the f32 micro-kernel and vmath's 16-lane bodies.
bool cpu_ok();
// AVX-512 F + BW + VL + BF16: the bf16 micro-kernel and the f32 -> bf16 conversion.
bool bf16_ok();

// C[r][j] (=|+=) sum_{k < kn} A[r * lda + k] * B[k * 16 + j], r < rows (1..12), j < 16; C is
// [rows][16], contiguous. Bit-identical to avx2::f32_tile_rows on the same values.
void f32_tile_rows(int rows, const float* A, int64_t lda, const float* B, int64_t kn, float* C,
                   bool accumulate);

// C[r][j] (=|+=) the vdpbf16ps chain over k pairs p < kpn of A[r * lda + 2p + {1, 0}] and
// B[(p * 16 + j) * 2 + {1, 0}]; rows 1..12.
void bf16_tile_rows(int rows, const uint16_t* A, int64_t lda, const uint16_t* B, int64_t kpn, float* C,
                    bool accumulate);
// Two panels at once, rows 1..6: C0 from B0 and C1 from B1 (each [rows][16], contiguous),
// each output's chain f32_tile_rows' exactly (same bits): a step loads 2 + rows values for
// 2 x rows FMAs instead of 1 + rows for rows.
void f32_tile2_rows(int rows, const float* A, int64_t lda, const float* B0, const float* B1, int64_t kn, float* C0,
                    float* C1, bool accumulate);

// The same for two panels at once, rows 1..6: C0 from B0 and C1 from B1 (each [rows][16],
// contiguous). Each output's chain is bf16_tile_rows' exactly (same bits); one broadcast of a row's
// k pair feeds two vdpbf16ps instead of one, so a step loads 2 + rows values for 2 x rows products.
void bf16_tile2_rows(int rows, const uint16_t* A, int64_t lda, const uint16_t* B0, const uint16_t* B1, int64_t kpn,
                     float* C0, float* C1, bool accumulate);

// y[i] = bf16(x[i]), round to nearest even (vcvtne2ps2bf16; NaN stays NaN).
void f32_to_bf16(const float* x, uint16_t* y, int64_t n);

}  // namespace qt::kernels::avx512
