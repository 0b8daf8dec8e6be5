// GPTQ (Frantar et al. 2022, arXiv 2210.17323) for integer weight schemes, with the arithmetic of
// llm-compressor 0.14's GPTQModifier (libquant/NUMERICS.md, section "GPTQ", states every step
// and where qtool differs). The calibration side -- which inputs feed which Hessian, the
// layer-by-layer order -- is calib/gptq.h; this file is the numerics of one weight matrix.
//
// In short, for a weight W [out, in] with the Hessian H = (2/N) sum_samples X^T X of its input:
//   1. scales: exactly round-to-nearest's (quantize_weight), computed on the stored weight before
//      any update -- llm-compressor's weight observer runs once, before GPTQ;
//   2. activation order (static = weight): columns permuted by descending diag(H) (stable); each
//      column keeps its own group's scale, so no g_idx is written;
//   3. dead columns (diag(H) == 0): H[j][j] = 1, W[:, j] = 0;
//   4. damp = dampening_frac * mean(diag(H)) added to the diagonal; Hinv = the upper Cholesky
//      factor of H^-1 (f64; a failed factorization falls back to round-to-nearest, as theirs),
//      computed without forming H^-1 (upper_cholesky_of_inverse below);
//   5. blocks of block_size columns; in a block, column by column: q = dtype(code * scale) with
//      code = rint(clamp(w / scale)), err = (w - q) / Hinv[i][i], the rest of the block's columns
//      W[:, j] -= err * Hinv[i][j] (f32, product and difference each rounded); after the block
//      W[:, rest] -= Err . Hinv[block, rest] (f32 GEMM, libquant/gemm.h).
// Rows are independent, so the work is split over fixed row chunks: the result does not depend
// on the thread count.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "libquant/quantize.h"
#include "libquant/schemes.h"
#include "libquant/tensor_view.h"

namespace qt {

// llm-compressor's `actorder`. Static is its default and an alias of Weight (compressed-tensors
// ActivationOrdering aliases "static" -> "weight"); both reorder columns during GPTQ only and
// change nothing in the checkpoint's format. Group ("dynamic") is refused by llm-compressor 0.14.
enum class ActOrder { None, Static, Weight };
std::optional<ActOrder> parse_actorder(std::string_view s);  // "static", "weight", "none"
const char* actorder_name(ActOrder a);

struct GptqOptions {
  double dampening_frac = 0.01;  // llm-compressor's default
  int64_t block_size = 128;      // llm-compressor's default
  ActOrder actorder = ActOrder::Static;
};

// The Hessian of one Linear input (shared by the Linears that read the same input, q/k/v and
// gate/up): sum over samples of 2 X^T X, in f64, and the number of samples (llm-compressor
// divides by it: one sample = one sequence). Each sample's X^T X is packed f32 GEMMs (gemm.h:
// an FMA chain over the sample's tokens) of its lower triangle only, added into the f64 sum; the
// upper half is the exact mirror (the same chain with the factors swapped).
class Hessian {
 public:
  explicit Hessian(int64_t columns);
  // x: one sample's input, row-major [tokens, columns].
  void add_sample(const float* x, int64_t tokens, int threads = 0);
  int64_t columns() const { return n_; }
  int64_t samples() const { return samples_; }
  // (2/N) sum X^T X, row-major [columns, columns].
  std::vector<double> normalized() const;
  // The same, scaled in place and moved out (no copy); the Hessian is empty afterwards.
  std::vector<double> release_normalized();
  uint64_t bytes() const { return sum_.size() * sizeof(double); }

 private:
  int64_t n_ = 0, samples_ = 0;
  std::vector<double> sum_;  // sum of X^T X (times 2 when normalized)
  std::vector<float> xt_, g_;  // scratch: X^T and one sample's product
};

// U with U^T U = H^-1, U upper triangular (the upper Cholesky factor of the inverse), for a
// symmetric positive definite H [n, n] (row-major, f64),
// written to `out` [n, n] as f32 (below the diagonal: 0). H is overwritten. Returns false when H
// is not positive definite (a pivot <= 0 or NaN).
// How, without forming H^-1: with J the order-reversing permutation, J H J = L L^T (lower
// Cholesky) gives H^-1 = J L^-T L^-1 J = (J L^-1 J)^T (J L^-1 J), and J L^-1 J is upper
// triangular, so U = J L^-1 J (unique, since its diagonal is positive). Cost n^3/3 (Cholesky) +
// n^3/3 (triangular inverse) instead of ~8n^3/3 for factor, inverse, factor. Both steps are
// blocked in fixed tiles of 128 (Eigen single-threaded inside a tile; OpenMP over tiles), so the
// result does not depend on the thread count.
bool upper_cholesky_of_inverse(std::vector<double>& H, int64_t n, float* out, int threads = 0);

// The part of GPTQ that depends only on the Hessian and the options, shared by the Linears that
// read the same input (q/k/v, gate/up): the column order, the dead columns and Hinv.
struct GptqFactor {
  int64_t columns = 0;
  std::vector<int64_t> perm;   // position i of the GPTQ order -> original column
  std::vector<uint8_t> dead;   // by position: diag(H) == 0 (no input reached the column)
  std::vector<float> hinv;     // upper Cholesky factor of the dampened, permuted H^-1 [n, n] f32
  int64_t dead_columns = 0;
  bool rtn_fallback = false;   // the dampened H was not positive definite: hinv = identity
  double seconds = 0;
  uint64_t bytes() const { return hinv.size() * sizeof(float); }
};

// Steps 2-4 above for the normalized Hessian H [n, n] (consumed).
GptqFactor gptq_factor(std::vector<double> H, int64_t n, const GptqOptions& opts, int threads = 0);

struct GptqResult {
  QuantizedWeight q;            // codes and scales as the checkpoint stores them
  std::vector<float> dequant;   // dtype(code * scale) as f32 [out, in]: what later layers compute with
  double loss = 0;              // sum over rows and columns of err^2 / 2 (llm-compressor's "loss")
  int64_t dead_columns = 0;     // diag(H) == 0
  bool rtn_fallback = false;    // the dampened H was not positive definite: round-to-nearest
  double solve_seconds = 0;     // factorization (dampen, Cholesky, inverse, Cholesky)
  double update_seconds = 0;    // the column loop and block updates
};

// GPTQ of one stored weight (BF16/F16/F32 [out, in]) with the integer args `args` (Channel or
// Group strategy; Int8 or Int4) and the Hessian `H` of its input (H.columns() == in).
// Throws InputError like quantize_weight (NaN/Inf, shape), and Unsupported for FP8 or other
// strategies.
GptqResult gptq_quantize(const TensorView& w, const QuantArgs& args, const Hessian& H,
                         const GptqOptions& opts, int threads = 0);
// The same with the factor computed beforehand (gptq_factor of H with the same options); the
// result's solve_seconds is 0 (the factor's time is the caller's to count, once).
GptqResult gptq_quantize(const TensorView& w, const QuantArgs& args, const GptqFactor& f,
                         const GptqOptions& opts, int threads = 0);

}  // namespace qt
