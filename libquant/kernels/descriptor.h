// What one quantized linear layer computes, independent of any kernel (libquant/kernels/KERNELS.md
// §1, after vLLM RFC #8913: the checkpoint format is decoupled from the kernel that runs it).
//
//   Y[M, N] = dequant(quant_act(X[M, K])) . dequant(W[N, K])^T
//
// M (tokens) is known only at run time; N (out features) and K (in features) are fixed by the
// weight. A kernel looks only at this descriptor to decide whether it can run the layer
// (Kernel::can_implement) and never at checkpoint names or file formats.
//
// Scale granularity along K ("segments"). Every scale used by Y[m, n] is constant over a run of
// consecutive k; the longest such run is the *segment* (k_segment()). With per-channel weights
// and per-token activations the segment is all of K; with 128x128 weight blocks and per-group-128
// activations it is 128. Every kernel computes
//   Y[m, n] = sum over segments s of  sx(m, s) * sw(n, s) * sum_{k in s} a[m, k] * b[n, k]
// where a are the activation codes (or X itself for weight-only layers) and b the weight codes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "libquant/dtype.h"
#include "libquant/quantize.h"
#include "libquant/schemes.h"

namespace qt::kernels {

// Element type of the activations entering the GEMM.
enum class ActType : uint8_t {
  None,        // not quantized: the GEMM consumes X as given (weight-only "W*A16" layers)
  Float8E4M3,  // OCP e4m3fn codes
  Int8,        // signed codes in [-128, 127]
};

// How the activation scale is obtained (vLLM's activation QuantKey, KERNELS.md §1).
enum class ActScheme : uint8_t {
  None,           // ActType::None
  StaticTensor,   // one calibrated scale stored in the checkpoint (`input_scale`, shape [1])
  DynamicTensor,  // one scale for the whole X, computed at run time (amax / qmax)
  DynamicToken,   // one scale per row of X, computed at run time
  DynamicGroup,   // one scale per `act_group` consecutive columns of each row, at run time
};

struct LinearDescriptor {
  int64_t N = 0;  // output features (weight rows)
  int64_t K = 0;  // input features (weight columns)

  // Weights. Codes are F8_E4M3 (Float8E4M3), I8 (Int8) or one int4 value per byte (Int4).
  QuantType weight_type = QuantType::Float8E4M3;
  Strategy weight_strategy = Strategy::Channel;  // Tensor, Channel, Group or Block
  int64_t weight_group = 0;                      // Strategy::Group: columns per scale
  int64_t block_rows = 0, block_cols = 0;        // Strategy::Block: scale tile (rows x cols)
  bool weight_zero_points = false;               // asymmetric weights (never produced by qtool)
  DType weight_scale_dtype = DType::BF16;        // as stored (BF16, F16 or F32)
  // NVFP4 / MXFP4 layers reach the kernels as FP8 codes (every E2M1 value is an E4M3 value) with
  // F32 group scales; this flag keeps that fact for gates and descriptions.
  bool weight_fp4_values = false;

  // Activations.
  ActType act_type = ActType::None;
  ActScheme act_scheme = ActScheme::None;
  int64_t act_group = 0;                 // ActScheme::DynamicGroup: columns per scale
  bool act_zero_points = false;          // asymmetric activations (never produced by qtool)
  DType input_scale_dtype = DType::F32;  // ActScheme::StaticTensor (and NVFP4): stored scale dtype
  // Microscaled activations (ActScheme::DynamicGroup, libquant/NUMERICS.md §10.5, §10.6):
  //   Nvfp4: FP4 E2M1 values per group of 16 with FP8 E4M3 group scales under the layer's static
  //          F32 `input_global_scale` (passed where a static input scale goes);
  //   E8M0:  MX, FP8 E4M3 values per group of 32 with power-of-two scales.
  // As for FP4 weights, the kernels see FP8 codes (every E2M1 value is an E4M3 value) and one
  // effective F32 scale per group (act_type is Float8E4M3); act_fp4_values keeps the fact.
  ScaleFormat act_scale_format = ScaleFormat::ModelDtype;
  bool act_fp4_values = false;

  bool weight_only() const { return act_type == ActType::None; }
  // The layer reads one stored activation scalar: `input_scale` (static per-tensor) or NVFP4's
  // `input_global_scale`.
  bool needs_static_act_scale() const {
    return act_scheme == ActScheme::StaticTensor || act_scale_format == ScaleFormat::Nvfp4;
  }

  // Which scale element (i, j) of the weight uses, as for qt::dequantize(): scale
  // (i / rows_per, j / cols_per) of a [ceil(N/rows_per), ceil(K/cols_per)] row-major grid.
  ScaleGrid weight_grid() const;
  int64_t weight_scale_rows() const;  // ceil(N / rows_per)
  int64_t weight_scale_cols() const;  // ceil(K / cols_per)

  // Columns per weight scale along K (K for tensor/channel) and per activation scale along K
  // (K unless DynamicGroup).
  int64_t weight_k_span() const;
  int64_t act_k_span() const;
  // Segment length (see the file comment): min of the two spans if the smaller divides the
  // larger, else 0 (the scale grids are not nested; no kernel can run it).
  int64_t k_segment() const;
  // Number of segments, ceil(K / k_segment()); 0 when k_segment() is 0.
  int64_t num_segments() const;

  // One line for logs and `qtool verify --list-kernels`, e.g.
  // "N=4096 K=4096; weights FP8 E4M3 per-channel (BF16 scales); activations FP8 dynamic per-token".
  std::string describe() const;
};

// The descriptor of a layer quantized with `weights` (and `input`, nullopt = weight-only) whose
// weight is [N, K]. Mapping of the activation args (compressed-tensors QuantizationArgs):
//   Strategy::Tensor static -> StaticTensor, Tensor dynamic -> DynamicTensor,
//   Strategy::Token -> DynamicToken, Strategy::Group -> DynamicGroup (group_size) -- per-token and
//   per-group scales exist only dynamically, so `dynamic` is not consulted for them.
// Throws InputError(Unsupported) for args that describe no GEMM at all: INT4 activations,
// per-channel or block activations, per-token weights, N or K < 1.
LinearDescriptor descriptor_from_args(const QuantArgs& weights,
                                      const std::optional<QuantArgs>& input, int64_t N, int64_t K,
                                      DType weight_scale_dtype = DType::BF16,
                                      DType input_scale_dtype = DType::F32);

std::string_view act_type_name(ActType t);      // "none", "FP8 E4M3", "INT8"
std::string_view act_scheme_name(ActScheme s);  // "static per-tensor", "dynamic per-token", ...

}  // namespace qt::kernels
