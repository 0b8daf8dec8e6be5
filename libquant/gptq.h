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
//      factor of H^-1 (f64; a failed factorization falls back to round-to-nearest, as theirs);
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
// divides by it: one sample = one sequence). Each sample's X^T X is one packed f32 GEMM
// (gemm.h: an FMA chain over the sample's tokens) added into the f64 sum.
class Hessian {
 public:
  explicit Hessian(int64_t columns);
  // x: one sample's input, row-major [tokens, columns].
  void add_sample(const float* x, int64_t tokens, int threads = 0);
  int64_t columns() const { return n_; }
  int64_t samples() const { return samples_; }
  // (2/N) sum X^T X, row-major [columns, columns].
  std::vector<double> normalized() const;
  uint64_t bytes() const { return sum_.size() * sizeof(double); }

 private:
  int64_t n_ = 0, samples_ = 0;
  std::vector<double> sum_;  // sum of X^T X (times 2 when normalized)
  std::vector<float> xt_, g_;  // scratch: X^T and one sample's product
};

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

}  // namespace qt
