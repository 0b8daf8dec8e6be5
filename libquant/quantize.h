// Weight quantization, byte-exact with compressed-tensors (>= 0.17) for bf16, fp16 and fp32
// models (libquant/NUMERICS.md §3 'Weight quantization', §4 'Scale groups and scale shapes').
//
// For every scale group g of a 2-D weight W [out, in] stored in model dtype M:
//   1. amax_g = max |w| over the group, on the stored values (exact in f32).
//   2. scale_g = M( f32(amax_g) / D )  -- one f32 true division (PyTorch CPU), rounded RNE to M.
//      D = 448 (FP8 E4M3), 127.5 (INT8), 7.5 (INT4): half the code range, (qmax - qmin) / 2.
//   3. scale_g == 0 (all-zero group) -> torch.finfo(M).eps (bf16 2^-7, fp16 2^-10, fp32 2^-23).
//   4. every element: t = M( f32(w) / f32(scale_g) )  -- f32 division, rounded RNE to M (this
//      intermediate rounding is what PyTorch does for an M tensor and changes ~3% of FP8 codes);
//      t = clamp(t, qmin, qmax) (bounds are exact in M);
//      FP8: code = e4m3fn_rne(t);  INT: code = round-half-even(t).
//   5. the stored weight_scale is scale_g in dtype M.
// No zero point is added (symmetric, as compressed-tensors' model-free path): an exact -0.0
// weight keeps its sign (FP8 byte 0x80).
//
// Weights must be finite: quantize_weight throws InputError(BadValue) naming the tensor and the
// first NaN/Inf position unless `allow_nonfinite` is set (then NaN/Inf propagate as PyTorch would).
#pragma once

#include <cstdint>
#include <vector>

#include "libquant/tensor_view.h"
#include "libquant/dtype.h"
#include "libquant/schemes.h"

namespace qt {

// One quantized weight, ready to be written.
struct QuantizedWeight {
  // Codes, one per element, row-major [out, in]: F8_E4M3 bytes, or I8 values (INT4 codes are
  // held one per int8 here; pack_int_codes() packs them).
  DType code_dtype = DType::F8_E4M3;
  std::vector<int64_t> shape;
  std::vector<uint8_t> codes;
  // Scales in the model dtype, little-endian bytes, shape per strategy (libquant/NUMERICS.md §4):
  // Tensor [1], Channel [out,1], Group [out, in/g], Block [ceil(out/br), ceil(in/bc)].
  DType scale_dtype = DType::BF16;
  std::vector<int64_t> scale_shape;
  std::vector<uint8_t> scale_bytes;
  // NVFP4 only: the FP32 global scale (weight_global_scale) the group scales are relative to.
  bool has_global_scale = false;
  float global_scale = 0;
  // Statistics for logs and reports.
  float amax = 0;            // max |w| over the tensor
  int64_t zero_groups = 0;   // groups whose scale fell back to eps
};

struct QuantizeOptions {
  bool allow_nonfinite = false;
  // Overrides the tensor's max |w| used for Strategy::Tensor (e.g. the max over a fused q/k/v
  // group); 0 = use the tensor's own. Has no effect for other strategies.
  float tensor_amax_override = 0;
  // NVFP4: max |w| over the fused set (q/k/v, gate/up) the global scale is derived from, when it
  // is larger than the tensor's own; 0 = the tensor's own (llm-compressor fuses the observers).
  float group_amax_override = 0;
};

// Shape requirements of `args` for a weight of shape `shape`; empty string if fine, else why not
// (e.g. "input dimension 320 is not a multiple of the group size 128").
std::string check_weight_shape(const std::vector<int64_t>& shape, const QuantArgs& args);

// The scale divisor D of the args (448, 127.5, 7.5).
float scale_divisor(QuantType t);
// Largest code magnitude as a float in the model dtype (448, 127, 7) and smallest (-448,-128,-8).
float code_max(QuantType t);
float code_min(QuantType t);

// Scale for one group maximum, exactly as compressed-tensors computes it (steps 2-3 above).
float scale_from_amax(float amax, QuantType t, DType model_dtype);
// Code for one element given its (model-dtype) scale (step 4).
uint8_t quantize_element(float w, float scale, QuantType t, DType model_dtype);

// For a 16-bit model dtype M (BF16/F16): a 65536-entry table mapping the bits of a quotient
// already rounded to M to its code (clamp + cast), built once from quantize_element.
const uint8_t* code_table(DType M, QuantType t);

// Quantizes a 2-D floating weight (BF16, F16 or F32). Deterministic at any thread count.
QuantizedWeight quantize_weight(const TensorView& w, const QuantArgs& args,
                                const QuantizeOptions& opts = {});

// max |x| of a floating tensor (BF16/F16/F32/F64), throwing on NaN/Inf unless allowed.
float tensor_absmax(const TensorView& t, bool allow_nonfinite = false);

// Which elements share a scale: element (i, j) of a 2-D weight uses scale
// (i / rows_per, j / cols_per) of a [ceil(out/rows_per), ceil(in/cols_per)] grid.
struct ScaleGrid {
  int64_t rows_per = 1;
  int64_t cols_per = 1;
};
ScaleGrid scale_grid(const std::vector<int64_t>& shape, const QuantArgs& args);

// Dequantizes codes with their scales to f32: x = f32(code) * f32(scale) (one f32 multiply).
// `codes_dtype` F8_E4M3 or I8 (INT4 unpacked, one per byte); scales as stored, row-major.
void dequantize(const uint8_t* codes, DType codes_dtype, const std::vector<int64_t>& shape,
                const uint8_t* scales, DType scale_dtype, const ScaleGrid& grid, float* out);
// Like dequantize() but rounds each product to the scale dtype, as compressed-tensors'
// decompression does (q.to(scale.dtype) * scale, result in the scale dtype).
void dequantize_ct(const uint8_t* codes, DType codes_dtype, const std::vector<int64_t>& shape,
                   const uint8_t* scales, DType scale_dtype, const ScaleGrid& grid, float* out);

}  // namespace qt
