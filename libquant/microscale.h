// Microscaling weight formats, byte-exact with compressed-tensors 0.20 (libquant/NUMERICS.md
// section "FP4 and MX"): NVFP4 (FP4 E2M1 codes, groups of 16, FP8 E4M3 group scales under one
// FP32 global scale per tensor) and MX (FP4 E2M1 or FP8 E4M3 codes, groups of 32, E8M0
// power-of-two scales stored as biased uint8 exponents).
//
// Everything here is a pure scalar reference; quantize_microscale() runs it over a 2-D weight.
#pragma once

#include <cstdint>
#include <vector>

#include "libquant/dtype.h"
#include "libquant/quantize.h"
#include "libquant/tensor_view.h"

namespace qt {

// ---- FP4 E2M1 ------------------------------------------------------------------------------
// A code is 4 bits: bit 3 the sign, bits 0-2 an index into {0, 0.5, 1, 1.5, 2, 3, 4, 6}.
float f32_from_e2m1(uint8_t code);  // exact; code & 0xF
// compressed-tensors' rounding of a value already clamped to [-6, 6] (cast_to_fp4 on the CPU):
// |x| <= 0.25 -> 0, < 0.75 -> 0.5, <= 1.25 -> 1, < 1.75 -> 1.5, <= 2.5 -> 2, < 3.5 -> 3,
// <= 5 -> 4, else 6 (ties go to the even mantissa: 0.25->0, 0.75->1, 1.25->1, 1.75->2, 2.5->2,
// 3.5->4, 5->4). The result is |.| * sign(x) with sign(+-0) = 0, so the sign bit is set exactly
// when x < 0 (-0.1 -> code 8, -0.0 -> code 0). NaN is not handled (weights are refused first).
uint8_t e2m1_from_f32(float x);
// Two codes per byte along the row: element 2j in the low nibble, 2j+1 in the high nibble.
// `cols` must be even. Result [rows, cols/2] bytes.
std::vector<uint8_t> pack_e2m1(const uint8_t* codes, int64_t rows, int64_t cols);
std::vector<uint8_t> unpack_e2m1(const uint8_t* packed, int64_t rows, int64_t cols);

// ---- E8M0 ----------------------------------------------------------------------------------
// A biased power-of-two exponent: value 2^(e - 127); 255 is NaN (OCP MX v1.0).
float f32_from_e8m0(uint8_t e);
// compressed-tensors' MX exponent for a group max `amax` held in model dtype M (exact in M):
// p = amax with 2^(m-2) added to its bit pattern (m = mantissa bits of M) and the mantissa
// cleared -- i.e. rounded up to the next power of two when amax's significand is >= 1.75, else
// down -- then E = clamp(127 + log2(p) - offset, 0, 255), offset 2 for FP4 and 8 for FP8 elements;
// p = 0 gives E = 0. This is the exponent before the scale is formed in M (mx_scale_in_dtype).
uint8_t mx_exponent(float amax, DType M, QuantType elem);
// The scale compressed-tensors quantizes with: M(2^(E-127)), or 1.0 when that underflows to 0
// in M (fp16 below 2^-24: ct replaces a zero scale by the uint8 "eps" 1).
float mx_scale_in_dtype(uint8_t E, DType M);
// The stored uint8: 127 + log2(scale) of that scale (E itself unless the 1.0 fallback applied);
// 255 (E8M0 NaN) for a non-finite scale.
uint8_t mx_stored_exponent(float scale_in_dtype);

// ---- NVFP4 scales ---------------------------------------------------------------------------
// Global scale from the tensor's (or fused group's) max |w| held in M: a = max(amax, tiny(M)),
// gs = M(M(1 / a) * 2688) (PyTorch evaluates `2688 / t` as t.reciprocal() * 2688 in M), as f32;
// a non-finite result (an all-zero tensor) becomes 1.0. 2688 = 448 (FP8 max) * 6 (FP4 max).
float nvfp4_global_scale(float amax, DType M);
// Group scale as its FP8 E4M3 code: e4m3( clamp( f32(gs * M(amax_g / 6)), +-448 ) ), a zero
// code replaced by 0.125 (0x20).
uint8_t nvfp4_group_scale(float group_amax, float global_scale, DType M);

// ---- the weight quantizer --------------------------------------------------------------------
// For args with a microscale `scale_format` (NVFP4 or MX). Codes one per byte: E2M1 codes (0..15)
// for FP4, F8_E4M3 bytes for MXFP8. scale_bytes: F8_E4M3 [out, in/16] for NVFP4, U8 [out, in/32]
// for MX. `global_scale` set for NVFP4 (from opts.group_amax_override when given: the max |w| of
// the fused q/k/v or gate/up set, as llm-compressor's fused observers use).
QuantizedWeight quantize_microscale(const TensorView& w, const QuantArgs& args,
                                    const QuantizeOptions& opts);

// Dequantizes codes (one per byte, unpacked) to f32: NVFP4 f32(code) * (f32(scale) / gs), the
// effective scale the quantizer divided by; MX f32(code) * 2^(E-127), exact.
void dequantize_microscale(const uint8_t* codes, const std::vector<int64_t>& shape,
                           const uint8_t* scales, const QuantArgs& args, float global_scale,
                           float* out);

}  // namespace qt
