// The f32 GEMM of the calibration forward pass: y[T, N] = x[T, K] . W[N, K]^T (+ b), with W
// packed once per layer and reused for every calibration sample.
//
// Numerics (the contract the tests check bit for bit):
//   y[t][n] = fl(b[n] + acc)  when a bias is given, else acc, where
//   acc = fma(x[t][K-1], W[n][K-1], ... fma(x[t][1], W[n][1], fma(x[t][0], W[n][0], 0.0f)))
// i.e. one f32 fused multiply-add chain per output, k in increasing order, rounded to f32 at
// every step. The AVX2 micro-kernel (libquant/kernels/cpu_fast_avx2.h f32_tile) and the scalar
// fallback (std::fma) compute exactly that chain, so the result does not depend on the CPU's SIMD
// width, the cache blocking, the task partition or the thread count -- only on the inputs.
// (PyTorch/MKL sum K in blocks; results differ from theirs by normal f32 rounding, ~sqrt(K) ulp.)
//
// Layout of PackedLinear::panels: the N output rows of W (the concatenation of `parts`) are cut
// into panels of 16 consecutive rows; panel p holds [K][16] floats (W[16p + j][k] at k*16 + j),
// zero-padded past N. That is the B operand of f32_tile read with unit stride.
#pragma once

#include <cstdint>
#include <vector>

namespace qt {

struct PackedLinear {
  int64_t out = 0;             // N: output features (sum of the parts' rows; I for a GLU pair)
  int64_t in = 0;              // K: input features
  // A gated pair from pack_glu: panels alternate gate rows [16p, 16p+16) and up rows [16p,
  // 16p+16) (2 * ceil(I/16) panels) and linear_packed outputs silu(gate) * up, I columns.
  bool glu = false;
  std::vector<float> panels;   // ceil(N/16) * K * 16 floats (GLU: 2 * ceil(I/16) * K * 16)
};

// One row-major [rows, in] weight matrix (not owned; read during pack_linear only).
// `ld` is the distance between rows in floats (0: `in`, i.e. contiguous rows) -- e.g. one head's
// keys inside a [T, kv_heads * D] buffer.
struct WeightPart {
  const float* w = nullptr;
  int64_t rows = 0;
  int64_t ld = 0;
};

// Packs the row-wise concatenation of `parts` (all with `in` columns) -- e.g. q/k/v or gate/up,
// so that one GEMM computes them side by side: output columns [0, rows0) are part 0, etc.
// Parallel over panels (OpenMP, `threads`, 0 = default); the result is independent of it.
PackedLinear pack_linear(const std::vector<WeightPart>& parts, int64_t in, int threads = 0);

// The MLP's gate and up projections (each row-major [I, in]) packed as one GLU pair (see
// PackedLinear::glu): one GEMM then gives m = silu(gate(x) + bg) * (up(x) + bu) without writing
// gate and up out -- bit-identical to computing them separately and applying vmath.h's
// silu_mul_f32 (the bias is I gate values then I up values).
PackedLinear pack_glu(const float* gate, const float* up, int64_t I, int64_t in, int threads = 0);

// Where a GEMM's output columns go: `cols` consecutive columns into y (row stride ldy >= cols).
struct OutputColumns {
  float* y = nullptr;
  int64_t ldy = 0;
  int64_t cols = 0;
};

// r[t][n] = x[t * K + k] . W (see the numerics above), for t < T, n < N, stored through `outs`:
// the first outs[0].cols columns to outs[0], the next to outs[1], ... (the cols must sum to N) --
// e.g. a fused q/k/v GEMM straight into separate q, k and v buffers. `bias` (N floats; 2N for a
// GLU pair) may be null. A GLU pair writes silu(gate) * up and takes no add_to_output. add_to_output: y = fl(y + r) (a residual connection folded into the GEMM, rounding as
// `h = h + linear(x)` does); else y = r. Parallel over fixed (rows x columns) tasks with
// `threads` OpenMP threads (0 = default); forks only when the product is large enough.
void linear_packed(const float* x, int64_t T, const PackedLinear& W, const float* bias,
                   const std::vector<OutputColumns>& outs, bool add_to_output, int threads = 0);
// One output y[T, ldy] (ldy >= N), overwritten.
void linear_packed(const float* x, int64_t T, const PackedLinear& W, const float* bias, float* y,
                   int64_t ldy, int threads = 0);

// The micro-kernel linear_packed is built on, for other packed products (the attention's
// Q K^T and P V): C[r][j] (=|+=) sum_{k < kn} A[r * lda + k] * B[k * 16 + j] for r < rows
// (1..kTileRows), j < kTileCols; C is [rows][16], contiguous. The same FMA chain as above, k
// ascending from C's value (accumulate) or from 0; AVX2 or the scalar twin, as linear_packed.
inline constexpr int kTileRows = 6;
inline constexpr int kTileCols = 16;
void gemm_tile(int rows, const float* A, int64_t lda, const float* B, int64_t kn, float* C, bool accumulate);

// The scalar reference of linear_packed on the unpacked W[N, K] (tests): the same FMA chain.
void linear_ref(const float* x, int64_t T, const float* w, int64_t N, int64_t K, const float* bias,
                float* y, int64_t ldy);

// Whether linear_packed runs the AVX2 micro-kernel on this CPU (else the scalar fallback).
bool linear_uses_avx2();
// Test hook: make linear_packed use the scalar fallback even where AVX2 is available (process
// wide; not for concurrent use with running GEMMs).
void linear_force_scalar(bool on);

}  // namespace qt
