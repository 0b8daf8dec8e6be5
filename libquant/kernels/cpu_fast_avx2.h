// AVX2 building blocks of cpu_fast (internal). Defined in cpu_fast_avx2.cpp, where every function
// carries __attribute__((target("avx2,fma,f16c"))), so the rest of the build needs no -mavx2.
// Call them only after cpu_fast_cpu_ok() returned true.
//
// Layouts (all row-major, no alignment required):
//   weight panel    16 output columns side by side: f32 path [k][16] codes (one byte each);
//                   INT8 path [k/2][16][2] codes (two consecutive k of a column together, the
//                   operand order of vpmaddwd)
//   activation tile 6 rows side by side: f32 path [k][6] floats; INT8 path [k/2][6][2] int16
//   accumulators    [rows][16]
#pragma once

#include <cstdint>

namespace qt::kernels::avx2 {

inline constexpr int kMR = 6;   // rows of X per micro-kernel call
inline constexpr int kNR = 16;  // weight columns per panel

// True if this CPU (and OS) supports AVX2, FMA and F16C.
bool cpu_ok();

// kn rows of 16 E4M3 codes -> f32 value * 2^-8, exactly (F16C trick, libquant/kernels/KERNELS.md
// §6.2): the bits ((b & 0x80) << 8) | ((b & 0x7F) << 7) are the f16 encoding of e4m3(b) * 2^-8 for
// normals and subnormals alike; vcvtph2ps widens exactly. Callers fold the 2^8 into the scale.
void decode_fp8_panel(const uint8_t* src, int64_t kn, float* dst);
// kn rows of 16 int8 codes -> f32, exactly.
void decode_int_panel(const uint8_t* src, int64_t kn, float* dst);

// C[r][j] (=|+=) sum_{k < kn} A[k][r] * B[k][j] for r < rows (1..6), j < 16; f32 FMA, k in
// increasing order (each step one fused multiply-add rounded to f32).
void f32_tile(int rows, const float* A, const float* B, int64_t kn, float* C, bool accumulate);
// The same with A row-major: A[r * lda + k] (no packing; the calibration forward's GEMM).
// Bit-identical to f32_tile on the same values.
void f32_tile_rows(int rows, const float* A, int64_t lda, const float* B, int64_t kn, float* C,
                   bool accumulate);
// One row (M = 1, the decode case): C[p*16 + j] (=|+=) sum_{k < kn} A[k*6] * w_p[k][j] for
// npanels (1..4) panels starting at B with `pstride` bytes between panels, codes decoded in
// registers (FP8 via the F16C trick, else int8). Bit-identical to decode + f32_tile with rows = 1.
void gemv(int npanels, bool fp8, const float* A, const uint8_t* B, int64_t pstride, int64_t kn,
          float* C, bool accumulate);
inline constexpr int kGemvPanels = 4;
// The bf16 GEMM's vdpbf16ps chain (libquant/gemm.h) emulated with AVX2 + FMA, for CPUs without
// AVX512-BF16: C[r][j] (=|+=), per k pair p < kpn, c = ftz(fma(a[2p+1], b[2p+1], c)) then
// c = ftz(fma(a[2p], b[2p], c)), with a = A[r * lda + ...] and b = B[(p * 16 + j) * 2 + ...] bf16
// bits widened exactly, subnormal inputs and results flushed to signed zero; rows 1..6.
// Bit-identical to gemm_f32.cpp's scalar emulation and to the AVX512-BF16 kernel.
void bf16_tile_rows(int rows, const uint16_t* A, int64_t lda, const uint16_t* B, int64_t kpn, float* C,
                    bool accumulate);
// C[r][j] = sum_{kp < kpn} A[kp][r][0]*B[kp][j][0] + A[kp][r][1]*B[kp][j][1] in int32
// (vpmovsxbw + vpmaddwd: exact for all int8 values including -128).
void i8_tile(int rows, const int16_t* A, const int8_t* B, int64_t kpn, int32_t* C);

// Cd[r][j] += (double(acc[r][j]) * sx[r * sx_stride]) * sw[j]   (f64, in this order; r < rows)
void epilogue_f32(int rows, const float* acc, const double* sx, int64_t sx_stride,
                  const double* sw, double* Cd);
void epilogue_i32(int rows, const int32_t* acc, const double* sx, int64_t sx_stride,
                  const double* sw, double* Cd);

}  // namespace qt::kernels::avx2
