// The f32 GEMM of the calibration forward pass: y[T, N] = x[T, K] . W[N, K]^T (+ b), with W
// packed once per layer and reused for every calibration sample.
//
// Numerics (the contract the tests check bit for bit):
//   y[t][n] = fl(b[n] + acc)  when a bias is given, else acc, where
//   acc = fma(x[t][K-1], W[n][K-1], ... fma(x[t][1], W[n][1], fma(x[t][0], W[n][0], 0.0f)))
// i.e. one f32 fused multiply-add chain per output, k in increasing order, rounded to f32 at
// every step. The AVX-512 micro-kernel (libquant/kernels/gemm_avx512.h, 6 x 32 tiles over two panels), the AVX2
// one (cpu_fast_avx2.h f32_tile, 6 x 16) and the scalar fallback (std::fma) compute exactly that
// chain, so the result does not depend on the CPU's ISA path (cpu_isa.h), SIMD width, the cache
// blocking, the task partition or the thread count -- only on the inputs.
// (PyTorch/MKL sum K in blocks; results differ from theirs by normal f32 rounding, ~sqrt(K) ulp.)
//
// bf16 precision (PackedLinear::precision == GemmPrecision::BF16, pack_linear's last argument):
// W and x are rounded to bf16 (round to nearest even; f32 subnormals become zero, as the
// AVX512-BF16 conversion does), products are exact in f32 and accumulated in f32 over k pairs:
//   acc = 0; for p = 0, 1, ...: acc = ftz(fma(x[2p+1], W[2p+1], acc)); acc = ftz(fma(x[2p], W[2p], acc))
// (an odd K gets a zero pair partner), then the bias and residual as above. That is vdpbf16ps's
// documented arithmetic (with subnormal inputs flushed too); the AVX512-BF16 kernel, its AVX2 + FMA
// emulation (kernels/cpu_fast_avx2.h) and the scalar emulation give the same bits
// (tests), again at any thread count. It differs from the f32 chain by the rounding of x (and of
// W, exact for bf16 checkpoints). Derivation: |bf16(x) bf16(w) - x w| <= (2 * 2^-8 + 2^-16) |x w|
// (unit roundoff 2^-8 each), and each f32 chain is within K 2^-24 sum |terms| of its exact sum, so
//   |y_bf16 - y_f32| <= (2^-7 + 2^-16 + 2.01 K 2^-24) sum_k |x_k W_k| + K 2^-126   (tests check).
//
// bf16 through oneDNN (cpu_isa.h Bf16Backend::Onednn, the default only on CPUs with AMX-BF16): the
// same bf16 operands and exact products, summed in f32 in oneDNN's order instead of the chain
// above, so the bound above holds (the 2.01 K 2^-24 term covers any summation order), and the
// result is within 2 K 2^-24 sum_k |x_k W_k| of the own kernel's. Identical at any thread count on
// one machine, not across CPUs (libquant/kernels/gemm_onednn.h says how).
//
// Layout of PackedLinear::panels: the N output rows of W (the concatenation of `parts`) are cut
// into panels of 16 consecutive rows; panel p holds [K][16] floats (W[16p + j][k] at k*16 + j),
// zero-padded past N. That is the B operand of f32_tile read with unit stride.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace qt {
namespace kernels::onednn {
struct Weights;
}

enum class GemmPrecision { F32, BF16 };
// "f32" / "bf16" (the --calib-precision values), and back (false for anything else).
const char* precision_name(GemmPrecision p);
bool parse_precision(const std::string& name, GemmPrecision& out);

struct PackedLinear {
  GemmPrecision precision = GemmPrecision::F32;
  int64_t out = 0;             // N: output features (sum of the parts' rows; I for a GLU pair)
  int64_t in = 0;              // K: input features
  // A gated pair from pack_glu: panels alternate gate rows [16p, 16p+16) and up rows [16p,
  // 16p+16) (2 * ceil(I/16) panels) and linear_packed outputs silu(gate) * up, I columns.
  bool glu = false;
  std::vector<float> panels;   // ceil(N/16) * K * 16 floats (GLU: 2 * ceil(I/16) * K * 16); F32 only
  // BF16 only: the same panels with k pairs side by side, [ceil(K/2)][16][2] bf16 bits each.
  std::vector<uint16_t> panels_bf16;
  // BF16 packed while bf16_backend() was Onednn: the same columns (panel order, zero slots included)
  // in oneDNN's blocked layout instead of panels_bf16.
  std::shared_ptr<kernels::onednn::Weights> onednn;
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
PackedLinear pack_linear(const std::vector<WeightPart>& parts, int64_t in, int threads = 0,
                         GemmPrecision precision = GemmPrecision::F32);

// The same into `p`, reusing its buffers' memory (a forward pass packs every layer's Linears into
// the same PackedLinears: pages are touched once per run, not once per layer).
void pack_linear_into(PackedLinear& p, const std::vector<WeightPart>& parts, int64_t in, int threads = 0,
                      GemmPrecision precision = GemmPrecision::F32);

// The MLP's gate and up projections (each row-major [I, in]) packed as one GLU pair (see
// PackedLinear::glu): one GEMM then gives m = silu(gate(x) + bg) * (up(x) + bu) without writing
// gate and up out -- bit-identical to computing them separately and applying vmath.h's
// silu_mul_f32 (the bias is I gate values then I up values).
PackedLinear pack_glu(const float* gate, const float* up, int64_t I, int64_t in, int threads = 0,
                      GemmPrecision precision = GemmPrecision::F32);
void pack_glu_into(PackedLinear& p, const float* gate, const float* up, int64_t I, int64_t in, int threads = 0,
                   GemmPrecision precision = GemmPrecision::F32);

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
// Its bf16 twin (the attention's products at bf16 precision, always the own kernel, whatever
// bf16_backend() says): C[r][j] (=|+=) the vdpbf16ps chain above over k pairs p < kpn of
// A[r * lda + 2p + {1, 0}] (bf16 bits, row-major, lda even) and B[(p * 16 + j) * 2 + {1, 0}] (a
// [kpn][16][2] pair panel, pack_linear's bf16 layout); rows 1..kTileRows. AVX512-BF16 where the
// CPU has it, else the AVX2 + FMA or the scalar emulation: the same bits.
void gemm_tile_bf16(int rows, const uint16_t* A, int64_t lda, const uint16_t* B, int64_t kpn, float* C,
                    bool accumulate);

// The scalar reference of linear_packed on the unpacked W[N, K] (tests): the same FMA chain.
void linear_ref(const float* x, int64_t T, const float* w, int64_t N, int64_t K, const float* bias,
                float* y, int64_t ldy);
// The same for bf16 precision (the emulated vdpbf16ps chain above).
void linear_ref_bf16(const float* x, int64_t T, const float* w, int64_t N, int64_t K, const float* bias,
                     float* y, int64_t ldy);
// dst[i] = bf16_round(src[i]) for i < n (AVX512-BF16's conversion where present: the same bits).
void bf16_round_row(const float* src, uint16_t* dst, int64_t n);
// bf16 bits of x rounded to nearest even (subnormals to signed zero, NaN stays a quiet NaN), and
// back (exact).
uint16_t bf16_round(float x);
float bf16_to_f32(uint16_t b);

// Whether linear_packed runs a SIMD micro-kernel (AVX2 or AVX-512) on this CPU (else the scalar
// fallback); libquant/cpu_isa.h says which.
bool linear_uses_avx2();
// Test hook: make linear_packed use the scalar fallback (f32 and bf16) even where SIMD is
// available (process wide; not for concurrent use with running GEMMs).
void linear_force_scalar(bool on);

}  // namespace qt
