// The numerics of the per-layer checks: weights and activations exactly as a kernel consumes them,
// the float64 oracle GEMM, the bound two f32-accumulating kernels must agree within, synthetic
// activations, and the timing helper of the throughput table.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "formats/quantized_linear.h"
#include "libquant/float_formats.h"
#include "libquant/kernels/descriptor.h"

namespace qt {
class Checkpoint;
}

namespace qt::verify {

// Synthetic activations X[M, K] (row-major f32): N(0, 1) (Box-Muller on splitmix64 streams) with
// `outliers` input channels (chosen by the stream, distinct) multiplied by 20, like the outlier
// channels of real LLM activations. Same seed -> same values with the same binary and libm
// (std::log / std::cos may differ by an ulp between C libraries; sqrt is exact).
std::vector<float> synthetic_activations(int64_t M, int64_t K, uint64_t seed, int64_t outliers = -1);

// Upper bound on |Y_kernel - Y_cpu_ref| for one output element of an f32-accumulating kernel (FP8
// codes decoded to f32, weight-only layers): a segment dot product of L terms summed in f32
// errs by at most gamma_{2L} * sum |a b| (Higham, Accuracy and Stability, 3.1), so over K terms
//   bound = 2 (K + 2) 2^-24 S + 2^-23 |y_ref| + 2^-149,   S = sum_k |x_q(k) w(k)|
// where x_q are the (dequantized) activations the GEMM consumed and w the dequantized weights;
// the last two terms cover both sides' final f32 rounding. INT8 x INT8 kernels accumulate
// exactly in integers and must agree bit for bit instead.
double kernel_agreement_bound(double S, float y_ref, int64_t K);

// How one non-reference kernel compared with cpu_ref on the same X.
struct KernelAgreement {
  std::string kernel;
  bool bit_exact = false;      // every output bit identical
  bool required_exact = false; // INT8 x INT8 (W8A8): must be bit_exact
  double max_abs_diff = 0;     // max |y - y_ref|
  double max_bound_ratio = 0;  // max |y - y_ref| / bound (f32 kernels; <= 1 is within bound)
  bool ok = false;
  std::string error;           // pack/run refused (InputError message), "" otherwise
};

// ---- helpers of the verifier -------------------------------------------------------------

// printf-style formatting of one number ("%g", "%.2f"...).
std::string fmt(const char* f, double v);

// Value of one weight code (exact in f32).
inline float code_value(DType code_dtype, uint8_t c) {
  return code_dtype == DType::F8_E4M3 ? f32_from_e4m3fn(c) : static_cast<float>(static_cast<int8_t>(c));
}

// One static input scale as f32, or an error message when it is unusable ("" when usable).
std::string read_input_scale(const Checkpoint& ck, const QuantizedLinearEntry& e, float& out);

// The float64 oracle: Y[M, N] = X[M, K] . W^T, with W produced 64 rows at a time by `rows`
// (f64, row-major [r, K]). Each block is one Eigen f64 product (f64 rounding, ~1e-16 relative,
// is far below every error measured against it). Blocks are independent and fixed in size, so
// the result does not depend on the thread count.
std::vector<double> oracle_gemm(const std::vector<double>& X, int64_t M, int64_t K, int64_t N,
                                const std::function<void(int64_t n0, int64_t r, double* out)>& rows);

// A quantized layer's weight, exactly: w(n, k) = f64(code) * f64(scale) (both exact in f64, so
// is the product: <= 8-bit code times a <= 24-bit scale).
struct ExactWeight {
  const LoadedLinear* l = nullptr;
  int64_t N = 0, K = 0, scale_cols = 0;
  std::vector<float> scales;  // decoded, row-major on the grid
  // Rows [n0, n0 + r) into out[r, K] (|w| when `absolute`).
  void rows(int64_t n0, int64_t r, double* out, bool absolute = false) const;
};
ExactWeight exact_weight(const LoadedLinear& l, const kernels::LinearDescriptor& d);

// The layer's weight dequantized to f32 as the forward pass uses it (qt::dequantize).
std::vector<float> dequantize_f32(const LoadedLinear& l, const kernels::LinearDescriptor& d);

// The activations a quantizing GEMM consumes, dequantized exactly in f64 (code * scale), or X
// itself for weight-only layers. [M, K].
std::vector<double> consumed_activations(const kernels::LinearDescriptor& d, const float* X, int64_t M,
                                         float static_scale);

// f32 Eigen GEMM Y[M, N] = X W^T on the dequantized weight (the baseline of the throughput
// table): 128-row blocks of W, parallel over blocks like the forward pass's linear().
void eigen_gemm_f32(const float* X, int64_t M, int64_t K, const float* W, int64_t N, float* Y);

// Best and median GFLOP/s of `f` (`flop` per call): one warm-up call, then calls until
// `seconds` have passed and at least 3 were made (at most 10000).
template <typename F>
std::pair<double, double> time_gflops(F&& f, double flop, double seconds) {
  using Clock = std::chrono::steady_clock;
  f();
  std::vector<double> t;
  double total = 0;
  while ((total < seconds || t.size() < 3) && t.size() < 10000) {
    const auto t0 = Clock::now();
    f();
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    t.push_back(dt);
    total += dt;
  }
  std::sort(t.begin(), t.end());
  const double best = t.front(), med = t[t.size() / 2];
  return {best > 0 ? flop / best / 1e9 : 0.0, med > 0 ? flop / med / 1e9 : 0.0};
}

}  // namespace qt::verify
