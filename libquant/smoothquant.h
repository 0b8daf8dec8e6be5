// SmoothQuant (Xiao et al., "SmoothQuant", arXiv 2211.10438): move activation outliers into the
// weights before quantizing. For a norm whose output x feeds Linears W_1..W_n (q/k/v after
// input_layernorm, gate/up after post_attention_layernorm), a per-channel factor s_j rescales
//   norm weight  g_j  -> g_j / s_j           (so the Linears now see x_j / s_j)
//   each W_i[:, j]    -> W_i[:, j] * s_j     (so every product x W^T is unchanged)
// which flattens the channels with large activations at the cost of slightly harder weights.
//
// The numbers follow llm-compressor's SmoothQuantModifier (modifiers/smoothquant/base.py,
// checked against the package's own output: testdata/smoothquant/), step by step, where M is
// the model dtype (the dtype of its hidden states and weights) and every "M(...)" is a rounding
// to M, round-to-nearest-even, as a PyTorch op on M tensors computes in f32 and rounds:
//   act_j  = M(M(max_j) - M(min_j))             range of the norm output over calibration tokens
//   wt_j   = 2 * max_i max_r |W_i[r, j]|         exact in M
//   s_j    = M(M(act_j^alpha) / M(wt_j^(1-alpha)))   x^0.5 is sqrtf (torch special-cases 0.5),
//                                                     other exponents powf, both in f32
//   s_j    = act_j                 where wt_j == 0   (torch.where(wt > 0, s, act))
//   s_j    = max(s_j, 1e-5f)       now f32: torch.maximum with a float32 tensor promotes
// then W' = M(f32(W) * s) and g' = M(f32(g) / s), one f32 multiply / divide each.
// The min/max come from qtool's f32 forward pass (calib/), so for bf16/f16 models they are
// rounded to M first, standing in for the M-typed hidden states of PyTorch's forward.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "libquant/dtype.h"
#include "libquant/tensor_view.h"

namespace qt {

// llm-compressor's floor on a smoothing factor (MINIMUM_SMOOTHING_SCALE), as f32.
inline constexpr float kMinSmoothingScale = 1e-5f;

// The per-channel factors s (f32, one per channel) from the norm output's per-channel min / max
// (f32), the balance Linears' per-input-column absmax (already the max over all of them: see
// accumulate_column_absmax; NOT yet doubled), alpha in (0, 1] as the user typed it (a Python
// float: the exponents are f32(alpha) and f32(1 - alpha), 1 - alpha computed in double, as
// torch.pow receives them) and the model dtype (F32, F16, BF16). All spans have the same length.
// Inputs must be finite with min <= max (the caller checks: bad statistics are a bad-input error
// there). A factor can still be Inf for extreme inputs; the caller checks the result.
std::vector<float> smoothing_scales(std::span<const float> ch_min, std::span<const float> ch_max,
                                    std::span<const float> weight_col_absmax, double alpha, DType model_dtype);

// colmax[j] = max(colmax[j], max_r |W[r, j]|) for a 2-D F32/F16/BF16 weight [rows, cols];
// colmax must have cols entries (start at 0). Exact; NaN in W makes the column NaN. Parallel
// over row blocks, result independent of the thread count. Returns false for another dtype or
// a shape that is not 2-D with cols == colmax.size().
bool accumulate_column_absmax(const TensorView& w, std::span<float> colmax);

// The smoothed weight W'[r, j] = M(f32(W[r, j]) * s[j]) as raw little-endian bytes of w.dtype
// (F32/F16/BF16, 2-D, s.size() == cols; asserted). Thread-count independent. Throws
// InputError(BadValue) naming the tensor when a finite weight overflows to Inf in M (an extreme
// factor; e.g. f16, whose largest value is 65504). The same holds for the three below.
std::vector<uint8_t> scale_weight_columns(const TensorView& w, std::span<const float> s);

// The smoothed norm weight g'[j] = M(f32(g[j]) / s[j]) as raw bytes of g.dtype (1-D; asserted).
std::vector<uint8_t> divide_norm_weight(const TensorView& g, std::span<const float> s);

// A Linear as the smoothed layer (up_proj -> down_proj): its output channel r is divided,
// W'[r, c] = M(f32(W[r, c]) / s[r]) (torch: weight.div_(scales.view(-1, 1))), as raw bytes of
// w.dtype (2-D, s.size() == rows; asserted). Thread-count independent.
std::vector<uint8_t> divide_weight_rows(const TensorView& w, std::span<const float> s);

// max |x'| of the smoothed norm output, where the deployed model computes x'_j = n_j * g'_j
// for the normalised value n_j whose product with g_j had range [min_j, max_j]:
//   max_j max(|min_j|, |max_j|) * |g'_j / g_j|     (0 for a channel with g_j == 0: x_j == 0)
// in double, rounded to f32 at the end. This is the static input absmax of the balance Linears
// after smoothing; g and g_smoothed are the norm weights decoded to f32.
float smoothed_input_absmax(std::span<const float> ch_min, std::span<const float> ch_max,
                            std::span<const float> g, std::span<const float> g_smoothed);

// max_j max(|min_j|, |max_j|) / s_j in double, rounded to f32: the input absmax of a Linear whose
// input channels were divided by s (down_proj after up_proj's rows were).
float divided_input_absmax(std::span<const float> ch_min, std::span<const float> ch_max, std::span<const float> s);

}  // namespace qt
